//! The same import as `mobilenet_v2`, its weights read from the .onnx file at run time:
//! the baseline for the cost of compiling them in.

dnnfusion::dnn! {
    pub model MobileNetV2 = onnx("../../../shared/tools/peers/onnx/mobilenet_v2.onnx");
}

fn main() {
    let onnx = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/tools/peers/onnx/mobilenet_v2.onnx");
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/reference/mobilenet_v2");
    let read = |f: &str| std::fs::read(format!("{dir}/{f}")).expect("reference data");
    let model = MobileNetV2::from_onnx(&std::fs::read(onnx).expect("onnx file")).expect("weights");
    let input = dnnfusion::npy::read_f32(&read("input.npy")).expect("input.npy");
    let expected = dnnfusion::npy::read_f32(&read("output.npy")).expect("output.npy");
    let got = dnnfusion::ModelExt::infer_arrays(&model, &[input.view()]).expect("runs");
    let err = got[0].iter().zip(expected.iter()).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    println!("mobilenet_v2 (loaded at run time): max |ours - torch| = {err:.2e}");
}

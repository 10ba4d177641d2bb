//! torchvision `mobilenet_v2` imported from ONNX, its initializers compiled in
//! (`../shared/tools/peers/onnx/mobilenet_v2.onnx`, 3.5 M floats).

dnnfusion::dnn! {
    #[weights = "../../../shared/tools/peers/onnx/mobilenet_v2.onnx"]
    pub model MobileNetV2 = onnx("../../../shared/tools/peers/onnx/mobilenet_v2.onnx");
}

static MODEL: MobileNetV2<'static> = MobileNetV2::embedded();

fn main() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/reference/mobilenet_v2");
    let read = |f: &str| std::fs::read(format!("{dir}/{f}")).expect("reference data");
    let input = dnnfusion::npy::read_f32(&read("input.npy")).expect("input.npy");
    let expected = dnnfusion::npy::read_f32(&read("output.npy")).expect("output.npy");
    let got = dnnfusion::ModelExt::infer_arrays(&MODEL, &[input.view()]).expect("runs");
    let err = got[0].iter().zip(expected.iter()).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    println!("mobilenet_v2: {} floats compiled in, max |ours - torch| = {err:.2e}", MODEL.params().len());
}

//! ResNet-18 (torchvision, `../shared/tools/peers/onnx/resnet18.onnx`) imported at compile time.

dnnfusion::dnn! {
    pub model ResNet18 = onnx("../../../shared/tools/peers/onnx/resnet18.onnx");
}

fn main() {
    // loads the weights and runs once on zeros, so that rustc compiles `run` (a `main`
    // that only reads consts would leave the generated code out of the build)
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/tools/peers/onnx/resnet18.onnx");
    let model = ResNet18::from_onnx(&std::fs::read(file).expect("the .onnx file")).expect("weights");
    let zeros: Vec<Vec<f32>> = <ResNet18 as dnnfusion::Model>::INPUT_SHAPES
        .iter()
        .map(|s| vec![0.0; s.iter().product()])
        .collect();
    let inputs: Vec<&[f32]> = zeros.iter().map(Vec::as_slice).collect();
    let outputs = dnnfusion::runtime::infer(&model, &inputs).expect("runs");
    println!(
        "{}: {} ops, {} parameters, {} outputs",
        <ResNet18 as dnnfusion::Model>::NAME,
        <ResNet18 as dnnfusion::Model>::OP_COUNT,
        <ResNet18 as dnnfusion::Model>::PARAM_LEN,
        outputs.len()
    );
}

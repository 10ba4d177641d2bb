//! The GPT-2-style decoder of `models/families/gpt2.py` imported at compile time.

dnnfusion::dnn! {
    pub model Gpt2 = onnx("../../models/families/onnx/gpt2.onnx");
}

fn main() {
    // loads the weights and runs once on zeros, so that rustc compiles `run` (a `main`
    // that only reads consts would leave the generated code out of the build)
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/families/onnx/gpt2.onnx");
    let model = Gpt2::from_onnx(&std::fs::read(file).expect("the .onnx file")).expect("weights");
    let zeros: Vec<Vec<f32>> = <Gpt2 as dnnfusion::Model>::INPUT_SHAPES
        .iter()
        .map(|s| vec![0.0; s.iter().product()])
        .collect();
    let inputs: Vec<&[f32]> = zeros.iter().map(Vec::as_slice).collect();
    let outputs = dnnfusion::runtime::infer(&model, &inputs).expect("runs");
    println!(
        "{}: {} ops, {} parameters, {} outputs",
        <Gpt2 as dnnfusion::Model>::NAME,
        <Gpt2 as dnnfusion::Model>::OP_COUNT,
        <Gpt2 as dnnfusion::Model>::PARAM_LEN,
        outputs.len()
    );
}

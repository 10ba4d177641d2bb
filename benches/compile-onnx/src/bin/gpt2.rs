//! The GPT-2-style decoder of `models/families/gpt2.py` imported at compile time.

dnnfusion::dnn! {
    pub model Gpt2 = onnx("../../models/families/onnx/gpt2.onnx");
}

fn main() {
    println!(
        "{}: {} ops, {} parameters",
        <Gpt2 as dnnfusion::Model>::NAME,
        <Gpt2 as dnnfusion::Model>::OP_COUNT,
        <Gpt2 as dnnfusion::Model>::PARAM_LEN
    );
}

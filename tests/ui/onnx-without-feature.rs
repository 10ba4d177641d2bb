fn main() {}

// the `onnx` feature of `dnnfusion` is off here: the macro has no ONNX reader
dnnfusion::dnn! {
    pub model M = onnx("model.onnx", batch = 1);
}

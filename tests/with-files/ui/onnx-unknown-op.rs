use dnnfusion::dnn;

dnn! {
    model Imported = onnx("../onnx/unknown_op.onnx");
}

fn main() {}

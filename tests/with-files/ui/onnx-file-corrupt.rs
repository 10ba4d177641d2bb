use dnnfusion::dnn;

dnn! {
    model Imported = onnx("../onnx/corrupt.onnx");
}

fn main() {}

use dnnfusion::dnn;

dnn! {
    model Imported = onnx("../onnx/absent.onnx");
}

fn main() {}

use dnnfusion::dnn;

dnn! {
    model Imported = onnx("../onnx/bad_attribute.onnx");
}

fn main() {}

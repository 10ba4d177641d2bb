use dnnfusion::dnn;

dnn! {
    model Imported = onnx("../onnx/dynamic_dim.onnx");
}

fn main() {}

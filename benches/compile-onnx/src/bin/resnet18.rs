//! ResNet-18 (torchvision, `../shared/tools/peers/onnx/resnet18.onnx`) imported at compile time.

dnnfusion::dnn! {
    pub model ResNet18 = onnx("../../../shared/tools/peers/onnx/resnet18.onnx");
}

fn main() {
    println!(
        "{}: {} ops, {} parameters",
        <ResNet18 as dnnfusion::Model>::NAME,
        <ResNet18 as dnnfusion::Model>::OP_COUNT,
        <ResNet18 as dnnfusion::Model>::PARAM_LEN
    );
}

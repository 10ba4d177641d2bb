use dnnfusion::dnn;

dnn! {
    #[weights = "weights/missing_bias.safetensors"]
    model Tiny(x: [1, 4]) -> [1, 2] {
        let hidden = relu(x);
        linear(hidden, 2, key = "fc")
    }
}

fn main() {
    let _ = Tiny::embedded();
}

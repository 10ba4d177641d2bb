use dnnfusion::dnn;

dnn! {
    #[weights(lenet)]
    model Tiny(x: [1, 4]) -> [1, 2] {
        linear(x, 2, key = "fc")
    }
}

fn main() {}

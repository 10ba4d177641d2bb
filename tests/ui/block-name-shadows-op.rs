fn main() {}

dnnfusion::dnn! {
    block relu(x) {
        x
    }

    pub model M(x: [1, 4]) -> [1, 4] {
        x
    }
}

fn main() {}

dnnfusion::dnn! {
    pub model M(x: [1, 4]) -> [1, 4] {
        softmax(x, axes = -1)
    }
}

fn main() {}

dnnfusion::dnn! {
    pub model M(x: [4]) -> [4] {
        dropout(x, 0.1, training = true)
    }
}

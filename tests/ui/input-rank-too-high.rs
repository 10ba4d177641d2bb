fn main() {}

dnnfusion::dnn! {
    pub model M(x: [1, 1, 1, 1, 1, 1, 1, 1, 1]) -> [1, 1] {
        x
    }
}

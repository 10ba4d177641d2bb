fn main() {}

dnnfusion::dnn! {
    pub model M(x: [1, 3]) -> [3, 2] {
        reshape(x, [3, 2])
    }
}

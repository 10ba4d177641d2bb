fn main() {}

dnnfusion::dnn! {
    pub model M(x: [1, 4]) -> [1, 1] {
        slice(x, 1, 3, 2)
    }
}

fn main() {}

dnnfusion::dnn! {
    pub model M(x: [1, 2, 3]) -> [1, 1, 2] {
        permute(x, [0, 0, 1])
    }
}

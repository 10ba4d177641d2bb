fn main() {}

dnnfusion::dnn! {
    pub model M(x: [1, 1, 4, 4]) -> [1, 1, 8, 8] {
        resize(x, size = [8, 8], scale = 2)
    }
}

fn main() {}

dnnfusion::dnn! {
    pub model M(x: [1, 4]) -> [1, 1] {
        slice(x, 1, 0, 4, step = 0)
    }
}

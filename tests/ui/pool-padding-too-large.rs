fn main() {}

dnnfusion::dnn! {
    pub model M(x: [1, 1, 8, 8]) -> [1, 1, 4, 4] {
        max_pool2d(x, 2, padding = 2)
    }
}

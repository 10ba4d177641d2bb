fn main() {}

dnnfusion::dnn! {
    pub model M(x: [1, 4, 8, 8]) -> [1, 6, 8, 8] {
        let conv = conv2d(x, 6, kernel = 1, groups = 4);
        conv
    }
}

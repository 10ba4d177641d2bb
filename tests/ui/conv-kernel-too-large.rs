fn main() {}

dnnfusion::dnn! {
    pub model M(x: [1, 1, 5, 5]) -> [1, 4, 1, 1] {
        let conv = conv2d(x, 4, kernel = 7);
        conv
    }
}

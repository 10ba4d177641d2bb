fn main() {}

dnnfusion::dnn! {
    pub model M(x: [1, 1, 8, 8]) -> [1, 4, 4, 4] {
        let conv = conv2d(x, 4, kernel = 3, stride = 2, padding = "same");
        conv
    }
}

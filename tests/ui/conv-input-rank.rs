fn main() {}

dnnfusion::dnn! {
    pub model M(x: [1, 28, 28]) -> [1, 4, 26, 26] {
        let conv = conv2d(x, 4, kernel = 3);
        conv
    }
}

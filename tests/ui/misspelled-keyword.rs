fn main() {}

dnnfusion::dnn! {
    pub model M(x: [1, 3, 8, 8]) -> [1, 4, 6, 6] {
        let conv = conv2d(x, 4, kernal = 3);
        conv
    }
}

fn main() {}

dnnfusion::dnn! {
    pub model M(x: [1, 3, 8, 8]) -> [1, 16, 4, 4] {
        let conv = conv2d(x, 16, kernel = 3, padding = 1);
        max_pool2d(relu(cnov), 2)
    }
}

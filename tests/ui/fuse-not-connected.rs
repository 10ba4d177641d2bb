fn main() {}

dnnfusion::dnn! {
    pub model M(x: [2, 4], y: [2, 4]) -> [2, 4] {
        fuse {
            let a = relu(x);
            let b = sigmoid(y);
        }
        a + b
    }
}

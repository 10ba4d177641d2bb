fn main() {}

dnnfusion::dnn! {
    pub model M(a: [2, 3], b: [4, 5]) -> [2, 5] {
        matmul(a, b)
    }
}

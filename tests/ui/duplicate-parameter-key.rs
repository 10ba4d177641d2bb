fn main() {}

dnnfusion::dnn! {
    pub model M(x: [1, 4]) -> [1, 4] {
        let a = linear(x, 4, key = "fc");
        let b = linear(a, 4, key = "fc");
        b
    }
}

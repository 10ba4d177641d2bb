fn main() {}

dnnfusion::dnn! {
    pub model M(x: [1, 4]) -> [1, 8] {
        let fc = linear(x, "8");
        fc
    }
}

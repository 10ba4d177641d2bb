fn main() {}

dnnfusion::dnn! {
    pub model M(x: [1, 4]) -> [1, 4] {
        #[name = "fc"]
        let fc = linear(x, 4);
        fc
    }
}

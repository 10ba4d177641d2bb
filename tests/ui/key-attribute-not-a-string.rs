fn main() {}

dnnfusion::dnn! {
    pub model M(x: [1, 4]) -> [1, 4] {
        #[key = 3]
        let fc = linear(x, 4);
        fc
    }
}

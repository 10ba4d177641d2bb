fn main() {}

dnnfusion::dnn! {
    #[fusion(fast)]
    pub model M(x: [1, 4]) -> [1, 4] {
        relu(x)
    }
}

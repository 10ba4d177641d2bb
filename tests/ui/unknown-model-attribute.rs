fn main() {}

dnnfusion::dnn! {
    #[fusion(off)]
    pub model M(x: [1, 4]) -> [1, 4] {
        relu(x)
    }
}

fn main() {}

dnnfusion::dnn! {
    #[inline]
    pub model M(x: [1, 4]) -> [1, 4] {
        relu(x)
    }
}

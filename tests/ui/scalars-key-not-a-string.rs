fn main() {}

dnnfusion::dnn! {
    #[scalars(sqrt2 = 1.4142135)]
    pub model M(x: [1, 4]) -> [1, 4] {
        x / 1.4142135
    }
}

fn main() {}

dnnfusion::dnn! {
    pub model M(x: [1, 4]) -> [1, 7] {
        pad(x, [1, 2, 3])
    }
}

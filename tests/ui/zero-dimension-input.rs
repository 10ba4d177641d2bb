fn main() {}

dnnfusion::dnn! {
    pub model M(x: [1, 0]) -> [1, 4] {
        x
    }
}

fn main() {}

dnnfusion::dnn! {
    pub model M(x: [1, -2]) -> [1, 4] {
        x
    }
}

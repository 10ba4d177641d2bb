fn main() {}

dnnfusion::dnn! {
    pub model M(x: [1, 3], y: [1, 4]) -> [1, 3] {
        x + y
    }
}

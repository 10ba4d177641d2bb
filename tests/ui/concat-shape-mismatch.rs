fn main() {}

dnnfusion::dnn! {
    pub model M(a: [1, 2, 3], b: [1, 2, 4]) -> [1, 4, 3] {
        concat([a, b], axis = 1)
    }
}

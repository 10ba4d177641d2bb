fn main() {}

dnnfusion::dnn! {
    struct M(x: [1, 4]) -> [1, 4] {
        x
    }
}

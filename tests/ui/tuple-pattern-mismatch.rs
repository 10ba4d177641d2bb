fn main() {}

dnnfusion::dnn! {
    pub model M(x: [1, 3]) -> [1, 1] {
        let (a, b) = split(x, chunks = 3, axis = 1);
        a
    }
}

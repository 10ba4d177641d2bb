fn main() {}

dnnfusion::dnn! {
    pub model M(x: [1, 4]) -> [1, 1] {
        let (a, b, c) = split(x, chunks = 3, axis = 1);
        a
    }
}

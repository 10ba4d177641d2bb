fn main() {}

dnnfusion::dnn! {
    pub model M(x: [6]) -> [3] {
        let (a, b) = split(x, 2);
        a
    }
}

fn main() {}

dnnfusion::dnn! {
    pub model M(mask: [1, 4], a: [1, 4], b: [1, 3]) -> [1, 4] {
        where(mask, a, b)
    }
}

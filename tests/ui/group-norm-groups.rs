fn main() {}

dnnfusion::dnn! {
    pub model M(x: [1, 4, 2, 2]) -> [1, 4, 2, 2] {
        let gn = group_norm(x, 3);
        gn
    }
}

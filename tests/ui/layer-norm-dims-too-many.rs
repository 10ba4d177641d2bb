fn main() {}

dnnfusion::dnn! {
    pub model M(x: [1, 4]) -> [1, 4] {
        let ln = layer_norm(x, dims = 3);
        ln
    }
}

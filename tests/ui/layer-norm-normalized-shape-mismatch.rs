fn main() {}

dnnfusion::dnn! {
    pub model M(x: [1, 8, 384]) -> [1, 8, 384] {
        let ln = layer_norm(x, 256);
        ln
    }
}

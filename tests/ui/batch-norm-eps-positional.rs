fn main() {}

dnnfusion::dnn! {
    pub model M(x: [1, 3, 4, 4]) -> [1, 3, 4, 4] {
        // eps is keyword-only: `eps = 1e-3`
        let bn = batch_norm(x, 3, 1e-3);
        bn
    }
}

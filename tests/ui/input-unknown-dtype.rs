fn main() {}

dnnfusion::dnn! {
    pub model M(ids: u64[1, 4]) -> [1, 4, 2] {
        let emb = embedding(ids, 10, 2);
        emb
    }
}

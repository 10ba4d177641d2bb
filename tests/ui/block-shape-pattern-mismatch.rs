fn main() {}

dnnfusion::dnn! {
    block head(x: [B, 4]) {
        relu(x)
    }

    pub model M(x: [1, 3]) -> [1, 3] {
        let h = head(x);
        h
    }
}

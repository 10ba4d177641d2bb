fn main() {}

dnnfusion::dnn! {
    block join(a: [B, 4], b: [B, 4]) {
        a + b
    }

    pub model M(x: [1, 4], y: [2, 4]) -> [2, 4] {
        let j = join(x, y);
        j
    }
}

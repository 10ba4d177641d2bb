fn main() {}

dnnfusion::dnn! {
    pub model M(x: [1, 1, 8], w: [4, 8]) -> [1, 4, 4] {
        fuse {
            let e = expand(x, [1, 4, 8]);
            let y = matmul(e, transpose(w, 0, 1));
        }
        y
    }
}

fn main() {}

dnnfusion::dnn! {
    pub model M(x: [2, 4]) -> [2, 4] {
        fuse {}
        relu(x)
    }
}

fn main() {}

dnnfusion::dnn! {
    pub block layer(x) {
        x
    }

    pub model M(x: [1, 4]) -> [1, 4] {
        x
    }
}

fn main() {}

dnnfusion::dnn! {
    block layer(x, width) {
        let fc = linear(x, width);
        fc
    }

    pub model M(x: [1, 4]) -> [1, 4] {
        let l = layer(x);
        l
    }
}

fn main() {}

dnnfusion::dnn! {
    block layer(x, width = 4) {
        let fc = linear(x, width);
        fc
    }

    pub model M(x: [1, 4]) -> [1, 4] {
        let l = layer(x, 4, width = 4);
        l
    }
}

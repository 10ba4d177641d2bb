fn main() {}

dnnfusion::dnn! {
    block again(x) {
        again(x)
    }

    pub model M(x: [1, 4]) -> [1, 4] {
        let y = again(x);
        y
    }
}

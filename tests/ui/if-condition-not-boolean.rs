fn main() {}

dnnfusion::dnn! {
    block maybe(x: [N], n = 2) {
        let mut y = x;
        if n {
            y = y * 2.0;
        }
        y
    }
    pub model M(x: [4]) -> [4] {
        maybe(x)
    }
}

fn main() {}

dnnfusion::dnn! {
    pub model M(x: [1, 3, 8, 8]) -> [1, 4, 6, 6] {
        fuse {
            let a = conv2d(x, 4, kernel = 3, padding = 1);
            let b = conv2d(a, 4, kernel = 3);
        }
        b
    }
}

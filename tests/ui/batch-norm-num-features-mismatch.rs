fn main() {}

dnnfusion::dnn! {
    pub model M(x: [1, 3, 4, 4]) -> [1, 3, 4, 4] {
        // BatchNorm2d(4) on 3 channels
        let bn = batch_norm(x, 4);
        bn
    }
}

fn main() {}

dnnfusion::dnn! {
    #![rewrite(fast)]
    pub model M(x: [1, 4]) -> [1, 4] {
        relu(x)
    }
}

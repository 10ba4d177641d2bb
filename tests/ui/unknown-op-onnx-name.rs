fn main() {}

// ONNX's GlobalAveragePool in snake case, too far from `global_avg_pool2d` to be a typo:
// the hint gives this DSL's name for it
dnnfusion::dnn! {
    pub model M(x: [1, 4, 8, 8]) -> [1, 4, 1, 1] {
        global_average_pool(x)
    }
}

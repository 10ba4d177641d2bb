//! LeNet-5 with its weights (`models/reference/lenet`, 44,426 floats) compiled in.

dnnfusion::dnn! {
    #[weights = "../../models/reference/lenet/weights.safetensors"]
    pub model LeNet(input: [1, 1, 28, 28]) -> [1, 10] {
        let conv1 = conv2d(input, 6, kernel = 5);
        let p1 = max_pool2d(relu(conv1), 2);
        let conv2 = conv2d(p1, 16, kernel = 5);
        let p2 = max_pool2d(relu(conv2), 2);
        let fc1 = linear(flatten(p2), 120);
        let fc2 = linear(relu(fc1), 84);
        linear(relu(fc2), 10, key = "fc3")
    }
}

static MODEL: LeNet<'static> = LeNet::embedded();

fn main() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/reference/lenet");
    let read = |f: &str| std::fs::read(format!("{dir}/{f}")).expect("reference data");
    let input = dnnfusion::npy::read_f32(&read("input.npy")).expect("input.npy");
    let expected = dnnfusion::npy::read_f32(&read("output.npy")).expect("output.npy");
    let x: &[f32; 784] = input.as_slice().and_then(|s| s.try_into().ok()).expect("784 floats");
    let mut logits = [0.0f32; 10];
    let mut arena = vec![0.0f32; LeNet::ARENA_LEN];
    MODEL.run(x, &mut logits, (&mut arena[..]).try_into().expect("arena"));
    let err = logits.iter().zip(expected.iter()).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    println!("lenet: {} floats compiled in, max |ours - torch| = {err:.2e}", MODEL.params().len());
}

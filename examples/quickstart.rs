//! Declares LeNet-5 with `dnn!`, loads a PyTorch `state_dict` saved as safetensors, runs
//! the reference input through it and compares the logits with PyTorch's.
//!
//! The weights are PyTorch's default initialization after `torch.manual_seed(0)`
//! (untrained) and the input is `torch.randn` noise (seed 1), so the "prediction" is the
//! argmax of arbitrary logits: what the example shows is that the generated code computes
//! what PyTorch computes (`models/reference/lenet/meta.json` records the seeds).
//!
//! Run: `cargo run --release --example quickstart`

use dnnfusion::{dnn, npy};

dnn! {
    /// LeNet-5 on 28x28 digits.
    pub model LeNet(x: [1, 1, 28, 28]) -> [1, 10] {
        let conv1 = conv2d(x, 6, kernel = 5);           // owns conv1.weight, conv1.bias
        let p1 = max_pool2d(relu(conv1), 2);
        let conv2 = conv2d(p1, 16, kernel = 5);
        let p2 = max_pool2d(relu(conv2), 2);
        let fc1 = linear(flatten(p2), 120);
        let fc2 = linear(relu(fc1), 84);
        let fc3 = linear(relu(fc2), 10);
        fc3
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let weights = include_bytes!("../models/reference/lenet/weights.safetensors");
    let model = LeNet::from_safetensors(weights)?;

    let input = npy::read_f32(include_bytes!("../models/reference/lenet/input.npy"))?;
    let x: &[f32; 784] = input
        .as_slice()
        .ok_or("input is not contiguous")?
        .try_into()?;

    let mut logits = [0.0f32; 10];
    let mut arena = vec![0.0f32; LeNet::ARENA_LEN];
    model.run(x, &mut logits, arena.as_mut_slice().try_into()?);

    let (class, score) = logits
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        });
    println!(
        "model      : {} ({} ops, {} parameters, arena {} floats)",
        LeNet::NAME,
        LeNet::OP_COUNT,
        LeNet::PARAM_LEN,
        LeNet::ARENA_LEN
    );
    println!("logits     : {logits:?}");
    println!("argmax     : class {class} (logit {score:.4}; untrained weights, noise input)");

    let expected = npy::read_f32(include_bytes!("../models/reference/lenet/output.npy"))?;
    let max_err = expected
        .iter()
        .zip(&logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("PyTorch    : max |difference| = {max_err:.2e}");
    Ok(())
}

//! LeNet-5 on the Cortex-M4F: the declaration of `nostd/src/main.rs`, PyTorch's weights
//! and reference logits (models/reference/lenet/). Exit status: see [`board`].
#![no_std]
#![no_main]

use board::{EXIT_MISMATCH, EXIT_NPY, EXIT_OK};
use core::ptr::addr_of_mut;
use dnnfusion::dnn;
use dnnfusion::runtime::embedded::EmbeddedWeights;

dnn! {
    /// LeNet-5 on 28x28 digits (same declaration as examples/quickstart.rs).
    #[weights = "../../models/reference/lenet/weights.safetensors"]
    pub model LeNet(x: [1, 1, 28, 28]) -> [1, 10] {
        let conv1 = conv2d(x, 6, kernel = 5);
        let p1 = max_pool2d(relu(conv1), 2);
        let conv2 = conv2d(p1, 16, kernel = 5);
        let p2 = max_pool2d(relu(conv2), 2);
        let fc1 = linear(flatten(p2), 120);
        let fc2 = linear(relu(fc1), 84);
        let fc3 = linear(relu(fc2), 10);
        fc3
    }
}

/// The test image's .npy file (a 128-byte header, then 784 little-endian f32s), aligned
/// so that `run` reads the image where it lies, in flash. A camera would write its frame
/// into RAM instead: 784 floats, 3,136 B more than the RAM this program reports.
static INPUT_NPY: EmbeddedWeights<{ 128 + 784 * 4 }> = EmbeddedWeights(*include_bytes!(
    "../../../../models/reference/lenet/input.npy"
));
static OUTPUT_NPY: &[u8] = include_bytes!("../../../../models/reference/lenet/output.npy");

/// The model, its weights compiled in (flash): nothing is loaded at run time.
static MODEL: LeNet<'static> = LeNet::embedded();
/// The scratch arena `run` works in.
static mut ARENA: [f32; LeNet::ARENA_LEN] = [0.0; LeNet::ARENA_LEN];

fn lenet() -> i32 {
    // SAFETY: the program is single-threaded and `lenet` runs once, so this is the only
    // reference ever taken to ARENA: it cannot alias.
    let arena = unsafe { &mut *addr_of_mut!(ARENA) };
    let (Some(_), Some(expected)) = (
        board::Npy::parse(&INPUT_NPY.0, 784),
        board::Npy::parse(OUTPUT_NPY, 10),
    ) else {
        return EXIT_NPY;
    };
    // the image: the file's last 784 floats (`parse` checked that they are its data)
    let floats = INPUT_NPY.floats();
    let Some(Ok(x)) = floats
        .get(floats.len() - 784..)
        .map(<&[f32; 784]>::try_from)
    else {
        return EXIT_NPY;
    };
    let mut logits = [0.0f32; 10];
    let ticks = board::Ticks::start();
    MODEL.run(x, &mut logits, arena);
    let ticks = ticks.elapsed();
    let stack = board::stack_high_water();
    // the fused f32 kernels sum in another order than PyTorch: 1e-5 of the largest logit
    let ok = board::matches(&logits, &expected, 0, 1e-5);
    board::report("lenet", ok, ticks, 1, stack);
    if ok {
        EXIT_OK
    } else {
        EXIT_MISMATCH
    }
}

board::program!(lenet);

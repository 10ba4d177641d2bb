//! LeNet-5 on the Cortex-M4F: the declaration of `nostd/src/main.rs`, PyTorch's weights
//! and reference logits (models/reference/lenet/). Exit status: see [`board`].
#![no_std]
#![no_main]

use board::{EXIT_MISMATCH, EXIT_NPY, EXIT_OK};
use core::ptr::addr_of_mut;
use dnnfusion::dnn;

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

static INPUT_NPY: &[u8] = include_bytes!("../../../../models/reference/lenet/input.npy");
static OUTPUT_NPY: &[u8] = include_bytes!("../../../../models/reference/lenet/output.npy");

/// The model, its weights compiled in (flash): nothing is loaded at run time.
static MODEL: LeNet<'static> = LeNet::embedded();
/// The scratch arena `run` works in.
static mut ARENA: [f32; LeNet::ARENA_LEN] = [0.0; LeNet::ARENA_LEN];
/// The input image (where a camera would write it).
static mut INPUT: [f32; 784] = [0.0; 784];

fn lenet() -> i32 {
    // SAFETY: the program is single-threaded and `lenet` runs once, so these are the only
    // references ever taken to ARENA and INPUT: they cannot alias.
    let (arena, x) = unsafe { (&mut *addr_of_mut!(ARENA), &mut *addr_of_mut!(INPUT)) };
    let (Some(input), Some(expected)) = (
        board::Npy::parse(INPUT_NPY, 784),
        board::Npy::parse(OUTPUT_NPY, 10),
    ) else {
        return EXIT_NPY;
    };
    input.copy_to(x);
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

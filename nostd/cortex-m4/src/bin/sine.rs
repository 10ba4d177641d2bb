//! The sine MLP 1-16-16-1 on the Cortex-M4F (TensorFlow Lite Micro's "hello world"
//! shape), weights and numpy's float64 outputs from models/tinyml/gen.py
//! (models/reference/sine/): eight inferences, one input each. Exit status: see [`board`].
#![no_std]
#![no_main]

use board::{EXIT_MISMATCH, EXIT_NPY, EXIT_OK};
use core::ptr::addr_of_mut;
use dnnfusion::dnn;

dnn! {
    /// An MLP 1-16-16-1 with ReLU, fitted to sin(x) on [0, 2 pi].
    #[weights = "../../models/reference/sine/weights.safetensors"]
    pub model Sine(x: [1, 1]) -> [1, 1] {
        let fc1 = linear(x, 16);
        let fc2 = linear(relu(fc1), 16);
        let fc3 = linear(relu(fc2), 1);
        fc3
    }
}

static INPUT_NPY: &[u8] = include_bytes!("../../../../models/reference/sine/input.npy");
static OUTPUT_NPY: &[u8] = include_bytes!("../../../../models/reference/sine/output.npy");

/// Inputs in input.npy: one inference each.
const POINTS: usize = 8;

/// The model, its weights compiled in (flash): nothing is loaded at run time.
static MODEL: Sine<'static> = Sine::embedded();
/// The scratch arena `run` works in.
static mut ARENA: [f32; Sine::ARENA_LEN] = [0.0; Sine::ARENA_LEN];

fn sine() -> i32 {
    // SAFETY: the program is single-threaded and `sine` runs once, so this is the only
    // reference ever taken to ARENA: it cannot alias.
    let arena = unsafe { &mut *addr_of_mut!(ARENA) };
    let (Some(xs), Some(expected)) = (
        board::Npy::parse(INPUT_NPY, POINTS),
        board::Npy::parse(OUTPUT_NPY, POINTS),
    ) else {
        return EXIT_NPY;
    };
    let mut ys = [0.0f32; POINTS];
    let ticks = board::Ticks::start();
    for (i, y) in ys.iter_mut().enumerate() {
        let mut out = [0.0f32; 1];
        MODEL.run(&[xs.get(i)], &mut out, arena);
        *y = out[0];
    }
    let ticks = ticks.elapsed();
    let stack = board::stack_high_water();
    let ok = board::matches(&ys, &expected, 0, 1e-5);
    board::report("sine", ok, ticks, POINTS as u32, stack);
    if ok {
        EXIT_OK
    } else {
        EXIT_MISMATCH
    }
}

board::program!(sine);

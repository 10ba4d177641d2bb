//! Keyword spotting on the Cortex-M4F: TensorFlow Lite Micro's micro_speech "tiny_conv"
//! shape, seeded weights and numpy's float64 outputs from models/tinyml/gen.py
//! (models/reference/tinyconv/). Exit status: see [`board`].
#![no_std]
#![no_main]

use board::{EXIT_MISMATCH, EXIT_NPY, EXIT_OK};
use core::ptr::addr_of_mut;
use dnnfusion::dnn;

dnn! {
    /// A 49x40 spectrogram, an 8-filter 10x8 convolution with stride 2 and TensorFlow's
    /// "SAME" padding (4 rows above, 5 below, 3 columns each side: 25x20 out), ReLU, a
    /// fully connected layer to 4 classes, softmax.
    #[weights = "../../models/reference/tinyconv/weights.safetensors"]
    pub model TinyConv(x: [1, 1, 49, 40]) -> (logits: [1, 4], probs: [1, 4]) {
        let conv = conv2d(x, 8, kernel = [10, 8], stride = 2, padding = [4, 3, 5, 3]);
        let fc = linear(flatten(relu(conv)), 4);
        (fc, softmax(fc))
    }
}

static INPUT_NPY: &[u8] = include_bytes!("../../../../models/reference/tinyconv/input.npy");
static OUTPUT_NPY: &[u8] = include_bytes!("../../../../models/reference/tinyconv/output.npy");

/// The model, its weights compiled in (flash): nothing is loaded at run time.
static MODEL: TinyConv<'static> = TinyConv::embedded();
/// The scratch arena `run` works in.
static mut ARENA: [f32; TinyConv::ARENA_LEN] = [0.0; TinyConv::ARENA_LEN];
/// The input spectrogram (too large for a comfortable stack frame).
static mut INPUT: [f32; 49 * 40] = [0.0; 49 * 40];

fn tinyconv() -> i32 {
    // SAFETY: the program is single-threaded and `tinyconv` runs once, so these are the
    // only references ever taken to ARENA and INPUT: they cannot alias.
    let (arena, x) = unsafe { (&mut *addr_of_mut!(ARENA), &mut *addr_of_mut!(INPUT)) };
    // output.npy: the 4 logits, then the 4 probabilities
    let (Some(input), Some(expected)) = (
        board::Npy::parse(INPUT_NPY, 49 * 40),
        board::Npy::parse(OUTPUT_NPY, 8),
    ) else {
        return EXIT_NPY;
    };
    input.copy_to(x);
    let (mut logits, mut probs) = ([0.0f32; 4], [0.0f32; 4]);
    let ticks = board::Ticks::start();
    MODEL.run(x, &mut logits, &mut probs, arena);
    let ticks = ticks.elapsed();
    let stack = board::stack_high_water();
    let ok =
        board::matches(&logits, &expected, 0, 1e-5) && board::matches(&probs, &expected, 4, 1e-5);
    board::report("tinyconv", ok, ticks, 1, stack);
    if ok {
        EXIT_OK
    } else {
        EXIT_MISMATCH
    }
}

board::program!(tinyconv);

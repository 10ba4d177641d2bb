//! The f32-math probe: every elementwise op of the DSL, and the row-wise ops that use
//! exp, ln or sqrt, in one parameter-free model, checked element by element against
//! numpy's float64 values (models/reference/unary_probe/, models/tinyml/gen.py).
//! run.sh greps this program's symbols for software double-precision routines
//! (`__aeabi_d*`, `__adddf3`, ...): on a single-precision FPU none may be linked.
//!
//! It also calibrates the instruction count: a loop of exactly 2,000,001 instructions
//! must measure so, within one SysTick tick (40 instructions), when QEMU runs with
//! `-icount shift=0`. Exit status: see [`board`]; 6 when the calibration is off.
#![no_std]
#![no_main]

use board::{EXIT_MISMATCH, EXIT_NPY, EXIT_OK};
use core::ptr::addr_of_mut;
use dnnfusion::dnn;

dnn! {
    /// Each op on the same 64 inputs, flattened and concatenated in the order of
    /// `unary_probe` in models/tinyml/gen.py.
    pub model Probe(x: [1, 4, 4, 4]) -> [1, 2636] {
        let pos = abs(x) + 0.25;
        concat([
            flatten(neg(x)), flatten(abs(x)), flatten(exp(x)), flatten(log(pos)),
            flatten(sqrt(pos)), flatten(rsqrt(pos)), flatten(reciprocal(x)),
            flatten(square(x)), flatten(relu(x)), flatten(relu6(x)),
            flatten(leaky_relu(x, 0.1)), flatten(elu(x)), flatten(selu(x)),
            flatten(sigmoid(x)), flatten(tanh(x)), flatten(gelu(x)), flatten(gelu_tanh(x)),
            flatten(silu(x)), flatten(hard_sigmoid(x)), flatten(hard_swish(x)),
            flatten(mish(x)), flatten(softplus(x)), flatten(softsign(x)), flatten(celu(x)),
            flatten(thresholded_relu(x)), flatten(erf(x)), flatten(sin(x)),
            flatten(cos(x)), flatten(floor(x)), flatten(ceil(x)), flatten(round(x)),
            flatten(clip(x, min = -0.5, max = 1.0)), flatten(pow(pos, 1.5)),
            flatten(pow(pos, x)), flatten(x / pos), flatten(maximum(x, x * -0.5)),
            flatten(minimum(x, x * -0.5)),
            flatten(softmax(x)), flatten(log_softmax(x)), flatten(layer_norm(x, affine = false)),
            flatten(instance_norm(x)), flatten(reduce_l2(x, axes = [2, 3])),
            flatten(reduce_log_sum_exp(x, axes = [2, 3])),
            flatten(reduce_log_sum(pos, axes = [2, 3]))
        ], axis = 1)
    }
}

static INPUT_NPY: &[u8] = include_bytes!("../../../../models/reference/unary_probe/input.npy");
static OUTPUT_NPY: &[u8] = include_bytes!("../../../../models/reference/unary_probe/output.npy");

/// Exit status: the instruction count's calibration is off.
const EXIT_CALIBRATION: i32 = 6;

/// Outputs of the probe.
const OUT_LEN: usize = 2636;

static mut ARENA: [f32; Probe::ARENA_LEN] = [0.0; Probe::ARENA_LEN];
static mut OUTPUT: [f32; OUT_LEN] = [0.0; OUT_LEN];

/// Instructions from the first SysTick read to the second in [`calibrate`]: the load
/// that reads the counter is the first, 1,000,000 `subs` and 1,000,000 `bne`, and the
/// second load the last counted (the read happens as it executes).
const CALIBRATION_INSTRUCTIONS: u32 = 2_000_001;

/// Ticks of a loop of [`CALIBRATION_INSTRUCTIONS`] instructions, times
/// [`board::INSTRUCTIONS_PER_TICK`].
fn calibrate() -> u32 {
    const SYST_CVR: usize = 0xE000_E018;
    let _ = board::Ticks::start();
    let (before, after): (u32, u32);
    // SAFETY: reads the SysTick current-value register (no side effect) around a
    // register-only countdown loop; touches no other memory and no stack.
    unsafe {
        core::arch::asm!(
            "ldr {before}, [{cvr}]",
            "1: subs {n}, #1",
            "bne 1b",
            "ldr {after}, [{cvr}]",
            cvr = in(reg) SYST_CVR,
            n = inout(reg) 1_000_000u32 => _,
            before = out(reg) before,
            after = out(reg) after,
            options(nostack, readonly),
        );
    }
    (before.wrapping_sub(after) & 0x00FF_FFFF) * board::INSTRUCTIONS_PER_TICK
}

fn probe() -> i32 {
    // SAFETY: the program is single-threaded and `probe` runs once, so these are the
    // only references ever taken to ARENA and OUTPUT: they cannot alias.
    let (arena, out) = unsafe { (&mut *addr_of_mut!(ARENA), &mut *addr_of_mut!(OUTPUT)) };
    let model = Probe::from_params(dnnfusion::Params::borrowed(&[]));
    let Ok(model) = model else {
        return board::EXIT_LOAD;
    };
    let (Some(input), Some(expected)) = (
        board::Npy::parse(INPUT_NPY, 64),
        board::Npy::parse(OUTPUT_NPY, OUT_LEN),
    ) else {
        return EXIT_NPY;
    };
    let mut x = [0.0f32; 64];
    input.copy_to(&mut x);
    #[cfg(feature = "prove-double-caught")]
    if core::hint::black_box(f64::from(x[0])) * core::hint::black_box(1.5f64) > 1e300 {
        return EXIT_MISMATCH;
    }
    let ticks = board::Ticks::start();
    model.run(&x, out, arena);
    let ticks = ticks.elapsed();
    let stack = board::stack_high_water();
    // element by element: 1e-5 of max(1, |expected|) (a NaN is never close)
    let bad = out.iter().enumerate().position(|(i, y)| {
        let e = expected.get(i);
        let close = (y - e).abs() <= 1e-5 * e.abs().max(1.0);
        !close
    });
    board::report("probe", bad.is_none(), ticks, 1, stack);
    if let Some(i) = bad {
        board::Line::new()
            .str("probe: first mismatch at output ")
            .num(i as u32)
            .str(" (op ")
            .num((i / 64) as u32)
            .str(" of the list when below 2432)\n")
            .print();
        return EXIT_MISMATCH;
    }
    let counted = calibrate();
    board::Line::new()
        .str("probe: calibration loop of 2000001 instructions counted ")
        .num(counted)
        .str("\n")
        .print();
    if counted.abs_diff(CALIBRATION_INSTRUCTIONS) > board::INSTRUCTIONS_PER_TICK {
        return EXIT_CALIBRATION;
    }
    EXIT_OK
}

board::program!(probe);

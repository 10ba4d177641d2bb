//! A `dnn!` model whose one block is a loop nest (a broadcast, a scalar and a transpose
//! read as index arithmetic: 24 elements), and a control function. `tests/bounds_checks.rs`
//! builds this crate with `--emit asm` and checks that the model's code calls no
//! `panic_bounds_check` while the control's does.
#![no_std]

dnnfusion::dnn! {
    /// `transpose(relu(x * y + 1), 1, 2)`: one fused loop nest.
    pub model Probe(x: [2, 3, 4], y: [3, 4]) -> [2, 4, 3] {
        transpose(relu(x * y + 1.0), 1, 2)
    }
}

/// The model's `run` (and the block it calls), compiled in this crate.
#[no_mangle]
pub fn probe_run(
    model: &Probe<'_>,
    x: &[f32; 24],
    y: &[f32; 12],
    out: &mut [f32; 24],
    arena: &mut [f32; Probe::ARENA_LEN],
) {
    model.run(x, y, out, arena);
}

/// The control: an index the compiler cannot bound keeps its check, so the test's search
/// for `panic_bounds_check` is shown to find one.
#[no_mangle]
pub fn control_read(values: &[f32; 24], at: usize) -> f32 {
    values[at]
}

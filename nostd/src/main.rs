//! # no_std proof
//!
//! Proves that a `dnn!` model builds and runs with neither `std` nor an allocator: this
//! program is `#![no_std] #![no_main]`, depends on the `dnnfusion` facade with default
//! features off, loads real LeNet-5 weights with `from_safetensors_in` into a `static`
//! parameter buffer and runs the model out of a `static` arena.
//!
//! - Building proves it: if anything in the dependency graph linked `std`, the build would
//!   fail with `error[E0152]: found duplicate lang item panic_impl` (run.sh checks exactly
//!   that with the `prove-std-breaks` feature).
//! - Running checks the numbers: the 10 logits must match PyTorch's output.
//!
//! Exit status: 0 all logits match, 2 the weights did not load, 3 a bad .npy file,
//! 4 a logit differs, 101 panic.
//!
//! Run: `bash nostd/run.sh`, or
//! `cargo run --release --manifest-path nostd/Cargo.toml; echo $?` (x86_64 Linux only:
//! `_start` and the syscalls are written for it).
#![no_std]
#![no_main]

#[cfg(feature = "prove-std-breaks")]
extern crate std;

use core::arch::{asm, global_asm};
use core::ptr::addr_of_mut;
use dnnfusion::dnn;

dnn! {
    /// LeNet-5 on 28x28 digits (same declaration as examples/quickstart.rs).
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

static WEIGHTS: &[u8] = include_bytes!("../../models/reference/lenet/weights.safetensors");
static INPUT_NPY: &[u8] = include_bytes!("../../models/reference/lenet/input.npy");
static OUTPUT_NPY: &[u8] = include_bytes!("../../models/reference/lenet/output.npy");

/// The flat parameter buffer `from_safetensors_in` fills (in .bss, no allocator).
static mut PARAMS: [f32; LeNet::PARAM_LEN] = [0.0; LeNet::PARAM_LEN];
/// The scratch arena `run` works in.
static mut ARENA: [f32; LeNet::ARENA_LEN] = [0.0; LeNet::ARENA_LEN];

const EXIT_OK: i32 = 0;
const EXIT_LOAD: i32 = 2;
const EXIT_NPY: i32 = 3;
const EXIT_MISMATCH: i32 = 4;
const EXIT_PANIC: i32 = 101;

// Entry point. The kernel enters `_start` with rsp 16-byte aligned and no return
// address; clear the frame pointer, re-align (cheap insurance), and call `rust_main` so
// it sees the stack alignment the SysV ABI promises (SIMD spills rely on it).
global_asm!(
    ".globl _start",
    "_start:",
    "xor ebp, ebp",
    "and rsp, -16",
    "call {main}",
    "ud2",
    main = sym rust_main,
);

extern "C" fn rust_main() -> ! {
    // SAFETY: the program is single-threaded and `rust_main` runs once, so these are the
    // only references ever taken to PARAMS and ARENA: they cannot alias.
    let (params, arena) = unsafe { (&mut *addr_of_mut!(PARAMS), &mut *addr_of_mut!(ARENA)) };

    let model = match LeNet::from_safetensors_in(WEIGHTS, params) {
        Ok(model) => model,
        Err(_) => fail(EXIT_LOAD, "weights did not load\n"),
    };
    let mut x = [0.0f32; 784];
    let mut expected = [0.0f32; 10];
    if read_npy_f32(INPUT_NPY, &mut x).is_none() || read_npy_f32(OUTPUT_NPY, &mut expected).is_none() {
        fail(EXIT_NPY, "bad .npy file\n");
    }

    let mut logits = [0.0f32; 10];
    model.run(&x, &mut logits, arena);

    // Tolerance: 1e-5 * max(1, max |expected|), absolute on each logit. The fused f32
    // kernels sum in another order than PyTorch, so bit equality is not expected.
    let scale = expected.iter().fold(1.0f32, |m, e| m.max(e.abs()));
    let tol = 1e-5 * scale;
    // `all(d <= tol)` is false for a NaN, so a NaN counts as a mismatch.
    if !logits.iter().zip(&expected).all(|(y, e)| (y - e).abs() <= tol) {
        fail(EXIT_MISMATCH, "logits differ from PyTorch\n");
    }
    write_stderr("ok: LeNet logits match PyTorch (no_std, no alloc, static arena)\n");
    exit(EXIT_OK)
}

/// Reads a version-1 `.npy` file of little-endian f32 (`'<f4'`) with exactly
/// `out.len()` elements into `out`. `None` when it is anything else.
fn read_npy_f32(bytes: &[u8], out: &mut [f32]) -> Option<()> {
    // magic "\x93NUMPY", version 1.0, header length (u16 LE) at bytes 8..10
    if bytes.get(..8)? != b"\x93NUMPY\x01\x00" {
        return None;
    }
    let header_len = u16::from_le_bytes([*bytes.get(8)?, *bytes.get(9)?]) as usize;
    let header = bytes.get(10..10 + header_len)?;
    let data = &bytes[10 + header_len..];
    let has = |s: &[u8]| header.windows(s.len()).any(|w| w == s);
    if !has(b"'descr': '<f4'") || !has(b"'fortran_order': False") || data.len() != out.len() * 4 {
        return None;
    }
    for (v, chunk) in out.iter_mut().zip(data.chunks_exact(4)) {
        *v = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    Some(())
}

fn write_stderr(msg: &str) {
    // SAFETY: write(2, buf, len) only reads `len` bytes of a live &str; its result is
    // ignored (a diagnostic that cannot be written changes nothing). The syscall
    // clobbers rcx and r11, declared here.
    unsafe {
        asm!("syscall", inlateout("rax") 1usize => _, in("rdi") 2usize,
             in("rsi") msg.as_ptr(), in("rdx") msg.len(),
             lateout("rcx") _, lateout("r11") _, options(nostack));
    }
}

fn fail(code: i32, msg: &str) -> ! {
    write_stderr(msg);
    exit(code)
}

fn exit(code: i32) -> ! {
    // SAFETY: exit_group (231) ends every thread of the process and never returns.
    unsafe { asm!("syscall", in("rax") 231usize, in("rdi") code as usize, options(noreturn, nostack)) }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    fail(EXIT_PANIC, "panic\n")
}

// The prebuilt `core` was compiled with unwinding and refers to this symbol (the link
// fails without it); under panic = "abort" nothing ever calls it. (`_Unwind_Resume`
// would be needed too only once `alloc` code is linked.)
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}

//! # Board support for the Cortex-M4F proof (QEMU `mps2-an386`)
//!
//! Everything a bare-metal program needs besides the model, written here so that the
//! footprint is ours: no `cortex-m-rt`, no HAL.
//!
//! - the vector table (16 words: initial stack pointer, reset, 14 system exceptions; no
//!   device interrupts are used) and `Reset`, in `global_asm!`: copies `.data` from flash,
//!   zeroes `.bss`, paints the stack with [`STACK_PAINT`], enables the FPU (CPACR) and only
//!   then calls Rust code;
//! - semihosting ([`exit`], [`Line::print`]): `bkpt 0xAB`, which QEMU serves with
//!   `-semihosting-config enable=on,target=native`;
//! - measurements: [`Ticks`] (SysTick on the 25 MHz core clock: under `-icount shift=0`
//!   QEMU retires one instruction per virtual nanosecond, so one tick is exactly 40
//!   instructions) and [`stack_high_water`] (the deepest word of the painted stack that
//!   was overwritten);
//! - checking: [`Npy`] and [`matches`].
//!
//! A program defines `fn program() -> i32` through [`program!`]; its value becomes QEMU's
//! exit status. The panic handler and the fault handlers exit with their own codes.
#![no_std]

use core::arch::{asm, global_asm};

/// Exit status: the outputs match the reference.
pub const EXIT_OK: i32 = 0;
/// Exit status: the weights did not load.
pub const EXIT_LOAD: i32 = 2;
/// Exit status: a bad `.npy` file.
pub const EXIT_NPY: i32 = 3;
/// Exit status: an output differs from the reference.
pub const EXIT_MISMATCH: i32 = 4;
/// Exit status: a panic.
pub const EXIT_PANIC: i32 = 101;
/// Exit status: a fault exception (HardFault, MemManage, BusFault, UsageFault, NMI, ...).
pub const EXIT_FAULT: i32 = 102;

/// What `Reset` writes over the whole stack before `main` runs.
pub const STACK_PAINT: u32 = 0x5AA5_C3E1;

/// Frequency of the mps2-an386 core clock, which SysTick counts with CLKSOURCE = 1
/// (QEMU: `SYSCLK_FRQ` in hw/arm/mps2.c).
pub const CORE_CLOCK_HZ: u32 = 25_000_000;
/// Instructions per SysTick tick under `-icount shift=0` (one instruction per virtual
/// nanosecond, 40 ns per tick at 25 MHz).
pub const INSTRUCTIONS_PER_TICK: u32 = 1_000_000_000 / CORE_CLOCK_HZ;

// SAFETY: `Reset` runs first and alone (interrupts are never enabled); it writes only
// what the linker script gives it (.data from its load image, .bss, the stack between
// __stack_limit and SP, all word-aligned) and CPACR, and enters Rust code once RAM holds
// what Rust expects of statics and the FPU is on.
//
// Reset: runs from the reset vector with SP = __stack_top (the vector table's first word)
// and touches no stack until every word below SP is painted. Then the FPU is enabled
// (CPACR.CP10 and CP11 full access, then DSB and ISB as the architecture asks before the
// first FP instruction), and only then is Rust code called: any Rust function may use
// the FP registers.
global_asm!(
    ".section .text.Reset, \"ax\", %progbits",
    ".global Reset",
    ".type Reset, %function",
    ".thumb_func",
    "Reset:",
    // .data: copy its initial values from flash
    "    ldr r0, =__sdata",
    "    ldr r1, =__edata",
    "    ldr r2, =__sidata",
    "1:  cmp r0, r1",
    "    bhs 2f",
    "    ldr r3, [r2], #4",
    "    str r3, [r0], #4",
    "    b 1b",
    // .bss: zero
    "2:  ldr r0, =__sbss",
    "    ldr r1, =__ebss",
    "    movs r3, #0",
    "3:  cmp r0, r1",
    "    bhs 4f",
    "    str r3, [r0], #4",
    "    b 3b",
    // the stack, from its limit (the end of .bss) to SP: paint
    "4:  ldr r0, =__stack_limit",
    "    mov r1, sp",
    "    ldr r3, ={paint}",
    "5:  cmp r0, r1",
    "    bhs 6f",
    "    str r3, [r0], #4",
    "    b 5b",
    // the FPU: CPACR (0xE000ED88) |= 0xF << 20
    "6:  ldr r0, =0xE000ED88",
    "    ldr r1, [r0]",
    "    orr r1, r1, #0x00F00000",
    "    str r1, [r0]",
    "    dsb",
    "    isb",
    "    bl {start}",
    "    udf #0",
    ".ltorg",
    paint = const STACK_PAINT,
    start = sym start,
);

unsafe extern "C" {
    /// The reset handler above.
    fn Reset() -> !;
}

/// The reset vector (the vector table's second word; the linker script writes the first,
/// the initial stack pointer).
#[unsafe(link_section = ".vector_table.reset_vector")]
#[used]
static RESET_VECTOR: unsafe extern "C" fn() -> ! = Reset;

/// The 14 system exceptions after reset: NMI, HardFault, MemManage, BusFault, UsageFault,
/// four reserved words, SVCall, DebugMonitor, one reserved, PendSV, SysTick. Every fault
/// ends the run with [`EXIT_FAULT`]; nothing here raises the others.
#[unsafe(link_section = ".vector_table.exceptions")]
#[used]
static EXCEPTIONS: [Option<extern "C" fn() -> !>; 14] = [
    Some(fault), // NMI
    Some(fault), // HardFault
    Some(fault), // MemManage
    Some(fault), // BusFault
    Some(fault), // UsageFault
    None,
    None,
    None,
    None,
    Some(fault), // SVCall
    Some(fault), // DebugMonitor
    None,
    Some(fault), // PendSV
    Some(fault), // SysTick (its interrupt is never enabled)
];

extern "C" fn fault() -> ! {
    print_cstr(b"fault exception\n\0");
    exit(EXIT_FAULT)
}

unsafe extern "Rust" {
    /// The program's body, defined by [`program!`].
    fn __board_program() -> i32;
}

/// Called by `Reset` once RAM is set up and the FPU is on.
extern "C" fn start() -> ! {
    // SAFETY: `__board_program` is the safe `fn() -> i32` a program defines with
    // `program!` (the link fails without one); it is called once, here.
    let code = unsafe { __board_program() };
    exit(code)
}

/// Defines the program's body: `program!(body)` with `fn body() -> i32`, whose value
/// becomes the exit status.
#[macro_export]
macro_rules! program {
    ($body:path) => {
        #[unsafe(no_mangle)]
        fn __board_program() -> i32 {
            $body()
        }
    };
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // The message is ignored on purpose: formatting it would link core::fmt.
    print_cstr(b"panic\n\0");
    exit(EXIT_PANIC)
}

/// Semihosting call `op` with parameter `arg` (a value or the address of a block).
fn semihost(op: u32, arg: usize) -> usize {
    let ret: usize;
    // SAFETY: `bkpt 0xAB` is the semihosting trap, which QEMU serves (run.sh enables
    // it); the calls used here read at most the block or string `arg` points to, which
    // the callers keep alive across the call, and write no memory of the program.
    unsafe {
        asm!("bkpt 0xAB", inout("r0") op as usize => ret, in("r1") arg, options(nostack));
    }
    ret
}

/// Writes a NUL-terminated string to the host's console (SYS_WRITE0).
fn print_cstr(s: &[u8]) {
    const SYS_WRITE0: u32 = 0x04;
    if s.last() == Some(&0) {
        semihost(SYS_WRITE0, s.as_ptr() as usize);
    }
}

/// Ends the run: semihosting SYS_EXIT_EXTENDED with ADP_Stopped_ApplicationExit and
/// `code`, which QEMU returns as its exit status.
pub fn exit(code: i32) -> ! {
    const SYS_EXIT_EXTENDED: u32 = 0x20;
    const ADP_STOPPED_APPLICATION_EXIT: usize = 0x20026;
    let block = [ADP_STOPPED_APPLICATION_EXIT, code as usize];
    semihost(SYS_EXIT_EXTENDED, block.as_ptr() as usize);
    // Not reached under QEMU; on a debugger that ignores the call, stop here.
    loop {
        // SAFETY: `udf` raises UsageFault by design; nothing follows it.
        unsafe { asm!("udf #1", options(nomem, nostack)) };
    }
}

/// A line of text built without `core::fmt` (no formatting machinery is linked), printed
/// through semihosting SYS_WRITE0. Text past 127 bytes is dropped.
pub struct Line {
    buf: [u8; 128],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Self::new()
    }
}

impl Line {
    /// An empty line.
    pub const fn new() -> Self {
        Line {
            buf: [0; 128],
            len: 0,
        }
    }

    /// Appends `s`.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    fn bytes(&mut self, s: &[u8]) -> &mut Self {
        for &b in s {
            if self.len < self.buf.len() - 1 {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
        self
    }

    /// Appends `n` in decimal.
    pub fn num(&mut self, mut n: u32) -> &mut Self {
        let mut digits = [0u8; 10];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.bytes(&digits[i..])
    }

    /// Writes the line to the host's console.
    pub fn print(&mut self) {
        self.buf[self.len] = 0;
        print_cstr(&self.buf[..=self.len]);
    }
}

/// Time in SysTick ticks of the core clock (see [`INSTRUCTIONS_PER_TICK`]).
pub struct Ticks {
    start: u32,
}

const SYST_CSR: usize = 0xE000_E010;
const SYST_RVR: usize = 0xE000_E014;
const SYST_CVR: usize = 0xE000_E018;

fn systick_value() -> u32 {
    // SAFETY: SYST_CVR is the SysTick current-value register, present on every
    // Cortex-M4; reading it has no side effect.
    unsafe { core::ptr::read_volatile(SYST_CVR as *const u32) }
}

impl Ticks {
    /// Starts SysTick (24-bit, counting down from 0xFFFFFF on the core clock, no
    /// interrupt) and remembers its value.
    pub fn start() -> Ticks {
        // SAFETY: the SysTick registers exist on every Cortex-M4; writing RVR and CVR
        // and enabling the counter without its interrupt (TICKINT = 0) affects nothing
        // but the counter.
        unsafe {
            core::ptr::write_volatile(SYST_RVR as *mut u32, 0x00FF_FFFF);
            core::ptr::write_volatile(SYST_CVR as *mut u32, 0);
            core::ptr::write_volatile(SYST_CSR as *mut u32, 0b101); // ENABLE | CLKSOURCE
        }
        Ticks {
            start: systick_value(),
        }
    }

    /// Ticks since [`Ticks::start`] (modulo 2^24: at most 671 ms, 671 million
    /// instructions under `-icount shift=0`).
    pub fn elapsed(&self) -> u32 {
        self.start.wrapping_sub(systick_value()) & 0x00FF_FFFF
    }
}

/// Bytes of stack used so far: from the top of RAM down to the deepest word that no
/// longer holds [`STACK_PAINT`].
pub fn stack_high_water() -> u32 {
    unsafe extern "C" {
        static __stack_limit: u32;
        static __stack_top: u32;
    }
    let limit = core::ptr::addr_of!(__stack_limit) as usize;
    let top = core::ptr::addr_of!(__stack_top) as usize;
    let mut at = limit;
    // SAFETY: every address in limit..top is RAM the linker script gives the stack;
    // the words below the live frames are only read, volatile so that the reads are not
    // assumed to see what Rust wrote (Reset painted them).
    while at < top && unsafe { core::ptr::read_volatile(at as *const u32) } == STACK_PAINT {
        at += 4;
    }
    (top - at) as u32
}

/// Bytes of RAM given to `.data` and `.bss` (statics: the arena, parameter buffers).
pub fn static_ram() -> u32 {
    unsafe extern "C" {
        static __sdata: u32;
        static __ebss: u32;
    }
    (core::ptr::addr_of!(__ebss) as usize - core::ptr::addr_of!(__sdata) as usize) as u32
}

/// The data of a version-1 `.npy` file of little-endian f32 (`'<f4'`, C order), read in
/// place: values are decoded as they are asked for, so no copy loop (and no `memcpy`) is
/// linked unless a program copies.
pub struct Npy<'a> {
    data: &'a [u8],
}

impl<'a> Npy<'a> {
    /// The file's data when it holds exactly `len` f32s; `None` when it is anything else.
    pub fn parse(bytes: &'a [u8], len: usize) -> Option<Self> {
        // magic "\x93NUMPY", version 1.0, header length (u16 LE) at bytes 8..10
        if bytes.get(..8)? != b"\x93NUMPY\x01\x00" {
            return None;
        }
        let header_len = u16::from_le_bytes([*bytes.get(8)?, *bytes.get(9)?]) as usize;
        let header = bytes.get(10..10 + header_len)?;
        let data = bytes.get(10 + header_len..)?;
        let has = |s: &[u8]| header.windows(s.len()).any(|w| w == s);
        if !has(b"'descr': '<f4'") || !has(b"'fortran_order': False") || data.len() != len * 4 {
            return None;
        }
        Some(Npy { data })
    }

    /// Value `i` (0.0 past the end).
    pub fn get(&self, i: usize) -> f32 {
        match self.data.get(4 * i..4 * i + 4) {
            Some(b) => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            None => 0.0,
        }
    }

    /// Copies the values into `out` (as long as both are).
    pub fn copy_to(&self, out: &mut [f32]) {
        for (i, v) in out.iter_mut().enumerate() {
            *v = self.get(i);
        }
    }
}

/// True when every `got[i]` is within `rel * max(1, max |expected|)` of `expected[i]`
/// (a NaN never matches), `expected` from `first` on.
pub fn matches(got: &[f32], expected: &Npy<'_>, first: usize, rel: f32) -> bool {
    let mut scale = 1.0f32;
    for i in 0..got.len() {
        let e = expected.get(first + i).abs();
        if e > scale {
            scale = e;
        }
    }
    let tol = rel * scale;
    got.iter()
        .enumerate()
        .all(|(i, y)| (y - expected.get(first + i)).abs() <= tol)
}

/// Prints the run's figures as one line: `name: ok|MISMATCH, N instructions per
/// inference (..), stack S B, static R B`. `stack` is [`stack_high_water`] taken by the
/// caller right after the inferences (this function's own frame does not count).
pub fn report(name: &str, ok: bool, ticks: u32, inferences: u32, stack: u32) {
    let per = ticks.saturating_mul(INSTRUCTIONS_PER_TICK) / inferences.max(1);
    Line::new()
        .str(name)
        .str(if ok { ": ok" } else { ": MISMATCH" })
        .str(", instructions per inference ")
        .num(per)
        .str(" (exact under -icount shift=0), stack ")
        .num(stack)
        .str(" B, static ")
        .num(static_ram())
        .str(" B\n")
        .print();
}

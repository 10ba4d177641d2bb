//! The SIMD kernels (x86_64 AVX2 + FMA and AVX-512F, aarch64 NEON, through `core::arch`)
//! and the questions that pick them: [`avx2_fma`] and [`avx512`]. With feature `std` they
//! are answered at run time (`is_x86_feature_detected!`, which caches its answer); without
//! std at compile time (`-C target-feature=+avx2,+fma`, or a `-C target-cpu` that has
//! them). NEON is part of every aarch64 CPU, so [`neon`] is fixed at compile time. Every
//! kernel here has a portable counterpart in [`crate::kernels`], which other CPUs, and
//! miri, run; the two agree within rounding (a fused multiply-add rounds once).
//!
//! It also holds what CPUs without vector units run instead (see [`register_blocked`]):
//! the register-blocked scalar tiles of the matrix product and of the direct convolution
//! (sums in registers, operands read without a bounds check per multiply-add after one
//! check per tile), and the FPU's square root on hard-float ARM ([`sqrt_f32`]).
//!
//! This is the only module with `unsafe`: the vector loads and stores, each reading or
//! writing a range that a checked slice of exactly that length proves in bounds; the
//! scalar tiles' unchecked loads, each inside a slice cut once to the last index the
//! tile reads; and `vsqrt.f32`.

#[cfg(any(test, all(target_arch = "x86_64", feature = "std")))]
extern crate std;

#[cfg(test)]
std::thread_local! {
    /// Set by [`portable`]: this thread's kernels take the portable path.
    static FORCE_PORTABLE: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
}

#[cfg(test)]
std::thread_local! {
    /// Set by [`avx2_only`]: this thread's kernels do not take the AVX-512 paths.
    static FORCE_AVX2: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
}

#[cfg(test)]
std::thread_local! {
    /// Set by [`blocked`]: this thread's portable kernels take their register-blocked forms.
    static FORCE_BLOCKED: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
}

/// Runs `f` with the portable kernels in their register-blocked forms on this thread,
/// whatever the CPU (tests check both forms everywhere, and miri runs them).
#[cfg(test)]
pub fn blocked<R>(f: impl FnOnce() -> R) -> R {
    FORCE_BLOCKED.set(true);
    let result = f();
    FORCE_BLOCKED.set(false);
    result
}

/// True when the portable kernels take their register-blocked scalar forms: on CPUs
/// whose compilers do not vectorize the lane-parallel loops (32-bit ARM such as the
/// Cortex-M4F, RISC-V, ...: scalar FPUs with 16 to 32 registers), where a sum kept in
/// a stack array costs a load and a store per multiply-add. There the products run in
/// tiles of a few rows by a few columns whose sums stay in registers, and one load feeds
/// several multiply-adds. On x86_64 and aarch64 the lane-parallel loops vectorize (SSE,
/// NEON) and stay.
#[inline]
pub fn register_blocked() -> bool {
    #[cfg(test)]
    if FORCE_BLOCKED.get() {
        return true;
    }
    !cfg!(any(target_arch = "x86_64", target_arch = "aarch64"))
}

/// Runs `f` with the AVX-512 kernels off on this thread (tests compare every path).
#[cfg(test)]
pub fn avx2_only<R>(f: impl FnOnce() -> R) -> R {
    FORCE_AVX2.set(true);
    let result = f();
    FORCE_AVX2.set(false);
    result
}

/// Runs `f` with the SIMD kernels off on this thread (tests compare both paths).
#[cfg(test)]
pub fn portable<R>(f: impl FnOnce() -> R) -> R {
    FORCE_PORTABLE.set(true);
    let result = f();
    FORCE_PORTABLE.set(false);
    result
}

/// True when the AVX2 + FMA kernels may run on this CPU.
#[inline]
pub fn avx2_fma() -> bool {
    #[cfg(test)]
    if FORCE_PORTABLE.get() {
        return false;
    }
    #[cfg(all(target_arch = "x86_64", feature = "std"))]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(all(target_arch = "x86_64", feature = "std")))]
    {
        cfg!(all(
            target_arch = "x86_64",
            target_feature = "avx2",
            target_feature = "fma"
        ))
    }
}

/// One core's fused multiply-add peak, for benchmarks to quote kernels against in the
/// same run: `steps` rounds of 24 independent multiply-add chains in registers (zmm with
/// AVX-512F, else ymm with AVX2 and FMA), nothing read or written. Returns the
/// floating-point operations done (2 per multiply-add per lane), 0 on CPUs with neither.
pub fn fma_peak(steps: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        let lanes = if avx512() {
            16
        } else if avx2_fma() {
            8
        } else {
            return 0;
        };
        // SAFETY: the loop's ISA was just found on this CPU
        #[allow(unsafe_code)]
        let sum = unsafe {
            if lanes == 16 {
                fma_chains_avx512(steps)
            } else {
                fma_chains_avx2(steps)
            }
        };
        core::hint::black_box(sum);
        2 * FMA_CHAINS * lanes * steps
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = steps;
        0
    }
}

/// Independent chains of [`fma_peak`]: more than latency (4) x ports (2) needs.
const FMA_CHAINS: usize = 24;

/// [`fma_peak`]'s loop on zmm registers; returns a lane of the sums.
///
/// # Safety
///
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(unsafe_code)]
unsafe fn fma_chains_avx512(steps: usize) -> f32 {
    use core::arch::x86_64::*;
    let (scale, shift) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
    let mut sums = [_mm512_set1_ps(1.0); FMA_CHAINS];
    for _ in 0..steps {
        for sum in &mut sums {
            *sum = _mm512_fmadd_ps(*sum, scale, shift);
        }
    }
    let total = sums
        .iter()
        .fold(_mm512_setzero_ps(), |t, &s| _mm512_add_ps(t, s));
    _mm512_cvtss_f32(total)
}

/// [`fma_peak`]'s loop on ymm registers; returns a lane of the sums.
///
/// # Safety
///
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(unsafe_code)]
unsafe fn fma_chains_avx2(steps: usize) -> f32 {
    use core::arch::x86_64::*;
    let (scale, shift) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    // (twelve chains: the sixteen ymm registers hold no more beside the constants)
    let mut sums = [_mm256_set1_ps(1.0); FMA_CHAINS / 2];
    for _ in 0..2 * steps {
        for sum in &mut sums {
            *sum = _mm256_fmadd_ps(*sum, scale, shift);
        }
    }
    let total = sums
        .iter()
        .fold(_mm256_setzero_ps(), |t, &s| _mm256_add_ps(t, s));
    _mm256_cvtss_f32(total)
}

/// Square root of an f32, correctly rounded (IEEE 754), for [`crate::math::sqrt`].
///
/// On 32-bit ARM with the hard-float ABI (Cortex-M4F, M7, M33, R, A: every FPU of those
/// targets has `vsqrt.f32`), the FPU's instruction: libm's `sqrtf` computes it in software
/// there. Stable Rust does not report ARM's FPU features to `cfg` or let inline assembly
/// take an `s` register operand, so the value goes through a core register into `s15`,
/// declared clobbered (two `vmov`s around a 14-cycle instruction). Elsewhere, libm's
/// `sqrtf` (SSE's `sqrtss` on x86_64); under miri, std's (libm's is inline assembly).
#[inline(always)]
pub fn sqrt_f32(x: f32) -> f32 {
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    {
        let bits: u32;
        // SAFETY: `vsqrt.f32` exists on every FPU a hard-float ARM target has; the asm
        // reads and writes only the core register holding the operand and `s15`, which
        // is declared clobbered, and touches no memory.
        #[allow(unsafe_code)]
        unsafe {
            core::arch::asm!(
                "vmov s15, {0}",
                "vsqrt.f32 s15, s15",
                "vmov {0}, s15",
                inlateout(reg) x.to_bits() => bits,
                out("s15") _,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        f32::from_bits(bits)
    }
    // miri cannot run libm's `sqrtss` asm: the std method (an intrinsic miri knows)
    #[cfg(miri)]
    {
        x.sqrt()
    }
    #[cfg(not(any(miri, all(target_arch = "arm", target_abi = "eabihf"))))]
    {
        libm::sqrtf(x)
    }
}

/// `b` cut to the rows of four floats `b[k * ldb..k * ldb + 4]`, `k < rows`, that the
/// register-blocked tiles read ([`quad`] then reads each without a bounds check: one
/// check here, not one per multiply-add step). Panics when the last row is not inside
/// `b` (a precondition of the kernels).
#[inline(always)]
fn quad_rows(b: &[f32], ldb: usize, rows: usize) -> &[f32] {
    let need = match rows.checked_sub(1) {
        None => 0,
        Some(last) => last
            .checked_mul(ldb)
            .and_then(|v| v.checked_add(4))
            .unwrap_or(usize::MAX),
    };
    &b[..need]
}

/// `b[at..at + 4]`, without a bounds check.
///
/// # Safety
///
/// `at + 4 <= b.len()`: true for `b` from [`quad_rows`] and `at = k * ldb` with `k <
/// rows`, since then `at + 3 < (rows - 1) * ldb + 4 = b.len()` (that sum was computed
/// without overflow, or the cut panicked).
#[inline(always)]
#[allow(unsafe_code)]
unsafe fn quad(b: &[f32], at: usize) -> [f32; 4] {
    debug_assert!(at + 4 <= b.len());
    // SAFETY: the caller promises `at + 4 <= b.len()`.
    unsafe {
        [
            *b.get_unchecked(at),
            *b.get_unchecked(at + 1),
            *b.get_unchecked(at + 2),
            *b.get_unchecked(at + 3),
        ]
    }
}

/// The register-blocked portable tile (`kernels::MicroTile`) of three rows: twelve sums in
/// registers, and per step of `k` seven loads feed twelve multiply-adds. Each sum starts
/// from 0 and runs in order of `k`, so the results are those of the plain loop, bit for
/// bit. Written out, as are [`tile_2x4`] and [`tile_1x4`]: at opt-level "s" LLVM would
/// not unroll loops over rows and columns, and sums in an array would live in memory.
#[inline(always)]
pub(crate) fn tile_3x4([a0, a1, a2]: [&[f32]; 3], (b, ldb): (&[f32], usize)) -> [[f32; 4]; 3] {
    let kc = a0.len();
    let (a1, a2) = (&a1[..kc], &a2[..kc]);
    let b = quad_rows(b, ldb, kc);
    let [mut s00, mut s01, mut s02, mut s03] = [0.0f32; 4];
    let [mut s10, mut s11, mut s12, mut s13] = [0.0f32; 4];
    let [mut s20, mut s21, mut s22, mut s23] = [0.0f32; 4];
    let mut at = 0;
    for k in 0..kc {
        // SAFETY: `at = k * ldb` with `k < kc`, and `quad_rows` cut `b` to `kc` rows.
        #[allow(unsafe_code)]
        let [b0, b1, b2, b3] = unsafe { quad(b, at) };
        at += ldb;
        let x = a0[k];
        s00 += x * b0;
        s01 += x * b1;
        s02 += x * b2;
        s03 += x * b3;
        let x = a1[k];
        s10 += x * b0;
        s11 += x * b1;
        s12 += x * b2;
        s13 += x * b3;
        let x = a2[k];
        s20 += x * b0;
        s21 += x * b1;
        s22 += x * b2;
        s23 += x * b3;
    }
    [
        [s00, s01, s02, s03],
        [s10, s11, s12, s13],
        [s20, s21, s22, s23],
    ]
}

/// [`tile_3x4`] for two rows.
#[inline(always)]
pub(crate) fn tile_2x4([a0, a1]: [&[f32]; 2], (b, ldb): (&[f32], usize)) -> [[f32; 4]; 2] {
    let kc = a0.len();
    let a1 = &a1[..kc];
    let b = quad_rows(b, ldb, kc);
    let [mut s00, mut s01, mut s02, mut s03] = [0.0f32; 4];
    let [mut s10, mut s11, mut s12, mut s13] = [0.0f32; 4];
    let mut at = 0;
    for k in 0..kc {
        // SAFETY: `at = k * ldb` with `k < kc`, and `quad_rows` cut `b` to `kc` rows.
        #[allow(unsafe_code)]
        let [b0, b1, b2, b3] = unsafe { quad(b, at) };
        at += ldb;
        let x = a0[k];
        s00 += x * b0;
        s01 += x * b1;
        s02 += x * b2;
        s03 += x * b3;
        let x = a1[k];
        s10 += x * b0;
        s11 += x * b1;
        s12 += x * b2;
        s13 += x * b3;
    }
    [[s00, s01, s02, s03], [s10, s11, s12, s13]]
}

/// [`tile_3x4`] for one row.
#[inline(always)]
pub(crate) fn tile_1x4([a0]: [&[f32]; 1], (b, ldb): (&[f32], usize)) -> [[f32; 4]; 1] {
    let b = quad_rows(b, ldb, a0.len());
    let [mut s0, mut s1, mut s2, mut s3] = [0.0f32; 4];
    let mut at = 0;
    for &x in a0 {
        // SAFETY: `at = k * ldb` with `k < kc`, and `quad_rows` cut `b` to `kc` rows.
        #[allow(unsafe_code)]
        let [b0, b1, b2, b3] = unsafe { quad(b, at) };
        at += ldb;
        s0 += x * b0;
        s1 += x * b1;
        s2 += x * b2;
        s3 += x * b3;
    }
    [[s0, s1, s2, s3]]
}

/// Where [`conv_tile_4x4`] reads: input channels `c0..c0 + count` (packed as `count`
/// blocks of `rows` rows of `wp` floats), kernel rows `ky0..ky0 + rows` of `kh`, `kw`
/// taps a row, `dilation` and `stride` along the row.
pub(crate) struct ConvTile {
    /// first input channel of the packed rows
    pub c0: usize,
    /// input channels packed
    pub count: usize,
    /// first kernel row packed
    pub ky0: usize,
    /// kernel rows packed per channel
    pub rows: usize,
    /// kernel height
    pub kh: usize,
    /// kernel width
    pub kw: usize,
    /// floats per packed row
    pub wp: usize,
    /// horizontal dilation
    pub dilation: usize,
    /// horizontal stride
    pub stride: usize,
}

/// The register tile of `kernels::conv2d_blocked`: for four output channels (weights
/// `w[c]`, `[c_in / groups, kh, kw]` each) and four output columns from `ox0`, the sums
/// over the packed taps, `sums[c][j] = sum of w[c][(ic, ky, kx)] * packed[(ic - c0, ky -
/// ky0) row][(ox0 + j) * stride + kx * dilation]`, in sixteen registers: per tap, four
/// weight loads and four input loads feed sixteen multiply-adds. Each sum runs in order of
/// the taps from 0. The packed rows are checked once to hold the last value read, then
/// read without bounds checks.
#[inline(never)]
pub(crate) fn conv_tile_4x4(
    w: [&[f32]; 4],
    packed: &[f32],
    t: &ConvTile,
    ox0: usize,
) -> [[f32; 4]; 4] {
    let mut s = [[0.0f32; 4]; 4];
    if t.count == 0 || t.rows == 0 || t.kw == 0 {
        return s;
    }
    // the last input read: row (count - 1, rows - 1), column (ox0 + 3) * stride + (kw - 1)
    // * dilation; all arithmetic checked, so the cut proves every read in bounds
    let last = (t.count * t.rows - 1)
        .checked_mul(t.wp)
        .and_then(|v| v.checked_add(ox0.checked_add(3)?.checked_mul(t.stride)?))
        .and_then(|v| v.checked_add((t.kw - 1).checked_mul(t.dilation)?))
        .unwrap_or(usize::MAX);
    let packed = &packed[..last.saturating_add(1)];
    let [w0, w1, w2, w3] = w;
    let (sw, dw) = (t.stride, t.dilation);
    let [[mut s00, mut s01, mut s02, mut s03], [mut s10, mut s11, mut s12, mut s13], [mut s20, mut s21, mut s22, mut s23], [mut s30, mut s31, mut s32, mut s33]] =
        s;
    if t.rows == t.kh {
        // every kernel row (ky0 = 0): packed row q = ic * kh + ky reads weights q * kw
        // on, so one loop runs over all rows of all channels, its weights contiguous
        let span = t.count * t.kh * t.kw;
        let from = t.c0 * t.kh * t.kw;
        let rows = [
            &w0[from..from + span],
            &w1[from..from + span],
            &w2[from..from + span],
            &w3[from..from + span],
        ];
        let sums = if sw == 1 && dw == 1 {
            // the common case, in its own copy: constant offsets let the four input
            // loads share one address
            full_rows::<true>(rows, packed, t, ox0)
        } else {
            full_rows::<false>(rows, packed, t, ox0)
        };
        return sums;
    }
    for ic in 0..t.count {
        for r in 0..t.rows {
            let wat = ((t.c0 + ic) * t.kh + t.ky0 + r) * t.kw;
            let (r0, r1, r2, r3) = (
                &w0[wat..wat + t.kw],
                &w1[wat..wat + t.kw],
                &w2[wat..wat + t.kw],
                &w3[wat..wat + t.kw],
            );
            let mut at = (ic * t.rows + r) * t.wp + ox0 * sw;
            for kx in 0..t.kw {
                // SAFETY: `at = row * wp + ox0 * stride + kx * dilation` with row <= count *
                // rows - 1 and kx <= kw - 1, so `at + 3 * stride <= last < packed.len()`
                // (checked above).
                #[allow(unsafe_code)]
                let (x0, x1, x2, x3) = unsafe {
                    (
                        *packed.get_unchecked(at),
                        *packed.get_unchecked(at + sw),
                        *packed.get_unchecked(at + 2 * sw),
                        *packed.get_unchecked(at + 3 * sw),
                    )
                };
                at += dw;
                let a = r0[kx];
                s00 += a * x0;
                s01 += a * x1;
                s02 += a * x2;
                s03 += a * x3;
                let a = r1[kx];
                s10 += a * x0;
                s11 += a * x1;
                s12 += a * x2;
                s13 += a * x3;
                let a = r2[kx];
                s20 += a * x0;
                s21 += a * x1;
                s22 += a * x2;
                s23 += a * x3;
                let a = r3[kx];
                s30 += a * x0;
                s31 += a * x1;
                s32 += a * x2;
                s33 += a * x3;
            }
        }
    }
    s = [
        [s00, s01, s02, s03],
        [s10, s11, s12, s13],
        [s20, s21, s22, s23],
        [s30, s31, s32, s33],
    ];
    s
}

/// [`conv_tile_4x4`] when every kernel row is packed (`rows == kh`): one loop over the
/// packed rows of all channels, the weights `rows[c]` (`count * kh * kw` floats each)
/// contiguous. `UNIT`: stride and dilation 1 (the caller checked). Out of line: each
/// copy gets the registers to itself.
#[inline(never)]
fn full_rows<const UNIT: bool>(
    [r0, r1, r2, r3]: [&[f32]; 4],
    packed: &[f32],
    t: &ConvTile,
    ox0: usize,
) -> [[f32; 4]; 4] {
    let (sw, dw) = if UNIT { (1, 1) } else { (t.stride, t.dilation) };
    let [mut s00, mut s01, mut s02, mut s03] = [0.0f32; 4];
    let [mut s10, mut s11, mut s12, mut s13] = [0.0f32; 4];
    let [mut s20, mut s21, mut s22, mut s23] = [0.0f32; 4];
    let [mut s30, mut s31, mut s32, mut s33] = [0.0f32; 4];
    let span = t.count * t.kh * t.kw;
    let (r0, r1, r2, r3) = (&r0[..span], &r1[..span], &r2[..span], &r3[..span]);
    let mut wat = 0;
    let mut row = ox0 * sw;
    for _ in 0..t.count * t.kh {
        let mut at = row;
        for kx in 0..t.kw {
            // SAFETY: `at = q * wp + ox0 * stride + kx * dilation` for the packed row q <=
            // count * kh - 1 and kx <= kw - 1, so `at + 3 * stride <= last <
            // packed.len()` (checked by `conv_tile_4x4`, which cut `packed` there); `wat +
            // kx = q * kw + kx < count * kh * kw = span`, the length of the weight slices.
            #[allow(unsafe_code)]
            let (x0, x1, x2, x3, a0, a1, a2, a3) = unsafe {
                (
                    *packed.get_unchecked(at),
                    *packed.get_unchecked(at + sw),
                    *packed.get_unchecked(at + 2 * sw),
                    *packed.get_unchecked(at + 3 * sw),
                    *r0.get_unchecked(wat + kx),
                    *r1.get_unchecked(wat + kx),
                    *r2.get_unchecked(wat + kx),
                    *r3.get_unchecked(wat + kx),
                )
            };
            at += dw;
            s00 += a0 * x0;
            s01 += a0 * x1;
            s02 += a0 * x2;
            s03 += a0 * x3;
            s10 += a1 * x0;
            s11 += a1 * x1;
            s12 += a1 * x2;
            s13 += a1 * x3;
            s20 += a2 * x0;
            s21 += a2 * x1;
            s22 += a2 * x2;
            s23 += a2 * x3;
            s30 += a3 * x0;
            s31 += a3 * x1;
            s32 += a3 * x2;
            s33 += a3 * x3;
        }
        wat += t.kw;
        row += t.wp;
    }
    [
        [s00, s01, s02, s03],
        [s10, s11, s12, s13],
        [s20, s21, s22, s23],
        [s30, s31, s32, s33],
    ]
}

/// The register tile of `kernels::conv2d_blocked` for dilation 1 and stride `S` (1 or 2)
/// along the row: two output channels (weights `w[c]`, `[c_in / groups, kh, kw]` each) by
/// eight output columns from `ox0`, `sums[c][j] = sum of w[c][(ic, ky, kx)] *
/// packed[(ic - c0, ky - ky0) row][(ox0 + j) * S + kx]`, in sixteen registers. Per tap two
/// weights and eight inputs (`XSPAN = 7 * S + 1` floats from the first) feed sixteen
/// multiply-adds. At stride 1, rows of 3 and 5 taps are written out ([`row_taps_2x8`]):
/// the taps of a row share their inputs, so such a row loads 10 or 12 inputs instead of 24
/// or 40 (a scalar FPU's compiler at opt-level "s" unrolls no loop). Each sum runs in
/// order of the taps from 0. The packed rows are checked once to hold the last value read,
/// then read without bounds checks.
#[inline(never)]
pub(crate) fn conv_tile_2x8<const S: usize, const XSPAN: usize>(
    [w0, w1]: [&[f32]; 2],
    packed: &[f32],
    t: &ConvTile,
    ox0: usize,
) -> [[f32; 8]; 2] {
    debug_assert!(t.stride == S && t.dilation == 1 && XSPAN == 7 * S + 1);
    if t.count == 0 || t.rows == 0 || t.kw == 0 {
        return [[0.0; 8]; 2];
    }
    // the last input read: row (count - 1, rows - 1), column (ox0 + 7) * S + kw - 1; all
    // arithmetic checked, so the cut proves every read in bounds
    let last = (t.count * t.rows - 1)
        .checked_mul(t.wp)
        .and_then(|v| v.checked_add(ox0.checked_add(7)?.checked_mul(S)?))
        .and_then(|v| v.checked_add(t.kw - 1))
        .unwrap_or(usize::MAX);
    let packed = &packed[..last.saturating_add(1)];
    let w = [w0, w1];
    let [s00, s01, s02, s03, s04, s05, s06, s07, s10, s11, s12, s13, s14, s15, s16, s17] =
        match (S, t.kw) {
            (1, 3) => rows_2x8::<1, XSPAN, 3>(w, packed, t, ox0),
            (1, 5) => rows_2x8::<1, XSPAN, 5>(w, packed, t, ox0),
            _ => rows_2x8::<S, XSPAN, 0>(w, packed, t, ox0),
        };
    [
        [s00, s01, s02, s03, s04, s05, s06, s07],
        [s10, s11, s12, s13, s14, s15, s16, s17],
    ]
}

/// The loop of [`conv_tile_2x8`] over the packed rows, for rows of `KW` taps (3 or 5 at
/// stride 1, written out by [`row_taps_2x8`]) or of any length (`KW == 0`, a loop over the
/// taps). `packed` holds the last value the tile reads (its caller cut it there).
#[inline(always)]
fn rows_2x8<const S: usize, const XSPAN: usize, const KW: usize>(
    [w0, w1]: [&[f32]; 2],
    packed: &[f32],
    t: &ConvTile,
    ox0: usize,
) -> [f32; 16] {
    let kw = if KW > 0 { KW } else { t.kw };
    let mut s = [0.0f32; 16];
    for ic in 0..t.count {
        let from = ((t.c0 + ic) * t.kh + t.ky0) * kw;
        let (c0, c1) = (&w0[from..from + t.rows * kw], &w1[from..from + t.rows * kw]);
        // packed row (ic, r) starts at (ic * rows + r) * wp
        let mut at = ic * t.rows * t.wp + ox0 * S;
        // (not `zip`: at opt-level "s" its constructor stays a call per channel)
        let mut rows1 = c1.chunks_exact(kw);
        for r0 in c0.chunks_exact(kw) {
            let Some(r1) = rows1.next() else { break };
            // SAFETY: `at = row * wp + ox0 * S` with row <= count * rows - 1, so `at + 7 *
            // S + kw - 1 <= last < packed.len()` (the caller's cut): the `7 * S + kw`
            // floats from `at` lie in `packed`, and the rows `r0`, `r1` hold `kw` weights.
            #[allow(unsafe_code)]
            unsafe {
                let x = packed.as_ptr().add(at);
                match KW {
                    3 => row_taps_2x8::<3, 10>(&mut s, (r0, r1), x),
                    5 => row_taps_2x8::<5, 12>(&mut s, (r0, r1), x),
                    _ => {
                        for (kx, (&a0, &a1)) in r0.iter().zip(r1).enumerate() {
                            // with kx <= kw - 1: `at + kx + 7 * S <= last`
                            let x = x.add(kx).cast::<[f32; XSPAN]>().read();
                            tap_2x8!(s, a0, a1, x, 0, S);
                        }
                    }
                }
            }
            at += t.wp;
        }
    }
    s
}

/// One tap of [`conv_tile_2x8`]: weights `$a0`, `$a1` times the eight inputs `$x[$k + j *
/// $st]` into the sums `$s` (`[f32; 16]`, channel-major), at constant indices (so the sums
/// stay in registers).
macro_rules! tap_2x8 {
    ($s:ident, $a0:expr, $a1:expr, $x:ident, $k:expr, $st:expr) => {{
        let (a0, a1) = ($a0, $a1);
        $s[0] += a0 * $x[$k];
        $s[1] += a0 * $x[$k + $st];
        $s[2] += a0 * $x[$k + 2 * $st];
        $s[3] += a0 * $x[$k + 3 * $st];
        $s[4] += a0 * $x[$k + 4 * $st];
        $s[5] += a0 * $x[$k + 5 * $st];
        $s[6] += a0 * $x[$k + 6 * $st];
        $s[7] += a0 * $x[$k + 7 * $st];
        $s[8] += a1 * $x[$k];
        $s[9] += a1 * $x[$k + $st];
        $s[10] += a1 * $x[$k + 2 * $st];
        $s[11] += a1 * $x[$k + 3 * $st];
        $s[12] += a1 * $x[$k + 4 * $st];
        $s[13] += a1 * $x[$k + 5 * $st];
        $s[14] += a1 * $x[$k + 6 * $st];
        $s[15] += a1 * $x[$k + 7 * $st];
    }};
}
use tap_2x8;

/// A row of `KW` (3 or 5) taps of [`conv_tile_2x8`] at stride 1 written out: its `SPAN =
/// KW + 7` inputs loaded once, each tap reading eight of them from its offset.
///
/// # Safety
///
/// `x` must be valid for reads of `SPAN` floats; `w.0` and `w.1` hold at least `KW`.
#[inline(always)]
#[allow(unsafe_code)]
unsafe fn row_taps_2x8<const KW: usize, const SPAN: usize>(
    s: &mut [f32; 16],
    (w0, w1): (&[f32], &[f32]),
    x: *const f32,
) {
    debug_assert!(SPAN == KW + 7 && (KW == 3 || KW == 5));
    // SAFETY: the caller guarantees `SPAN` floats from `x`; `[f32; SPAN]` has the
    // alignment of `f32`.
    let x = unsafe { x.cast::<[f32; SPAN]>().read() };
    let (w0, w1) = (&w0[..KW], &w1[..KW]);
    tap_2x8!(s, w0[0], w1[0], x, 0, 1);
    tap_2x8!(s, w0[1], w1[1], x, 1, 1);
    tap_2x8!(s, w0[2], w1[2], x, 2, 1);
    if KW == 5 {
        tap_2x8!(s, w0[3], w1[3], x, 3, 1);
        tap_2x8!(s, w0[4], w1[4], x, 4, 1);
    }
}

/// The starts of tiles of `tile` covering `0..len` (`len >= tile`): every `tile`, and a
/// last one flush with the end, which overlaps the one before when `tile` does not divide
/// `len` (its values are computed twice, alike).
pub(crate) fn tile_starts(len: usize, tile: usize) -> impl Iterator<Item = usize> {
    let last = len.saturating_sub(tile);
    (0..last).step_by(tile.max(1)).chain(core::iter::once(last))
}

/// Output channels one register tile of [`conv2d_avx2`] computes (the tile code names
/// its four rows).
pub const CONV_OC: usize = 4;
/// Output columns one register tile computes (two vectors of eight).
const CONV_OX: usize = 16;

/// Floats of the stack buffer [`conv2d_avx2`] packs input rows into (32 KiB).
const PACK_LEN: usize = 8192;

/// True when [`conv2d_avx2`] can run `g`: unit horizontal stride, at least [`CONV_OC`]
/// output channels per group, rows at least half a tile ([`CONV_OX`] / 2) wide, and one
/// input channel's rows of one output row's window fit the pack buffer.
pub fn conv2d_avx2_fits(g: &crate::kernels::Conv2dGeom) -> bool {
    let reach = (g.kw - 1) * g.dilation_w;
    g.stride_w == 1
        && g.c_out / g.groups >= CONV_OC
        && g.ow >= CONV_OX / 2
        && g.kh * (g.ow.max(CONV_OX) + reach) <= PACK_LEN
}

/// [`crate::kernels::conv2d`] for geometries [`conv2d_avx2_fits`] accepts.
///
/// For each output row, the input rows its window reads are copied, zero padding
/// included, into a contiguous stack buffer, as many input channels at a time as fit
/// (input planes lie a power of two apart, so reading them in step would make the loads
/// collide in the cache). Output channels go in blocks of [`CONV_OC`], each row in
/// register tiles of [`CONV_OC`] channels by [`CONV_OX`] columns: per tap, two vector
/// loads feed eight fused multiply-adds, and the sums stay in registers until the tile is
/// stored (the first channel chunk starts from the bias, later ones from the stored sums).
/// When the row width is not a multiple of [`CONV_OX`], the last tile ends at the row's
/// end and overlaps the one before; a row narrower than a tile is computed by one tile
/// over zero-padded input, of which the row's columns are stored. Likewise when the
/// channel count is not a multiple of [`CONV_OC`], the last block ends at the last
/// channel and stores only the channels the block before did not.
///
/// # Safety
///
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(unsafe_code)]
pub unsafe fn conv2d_avx2(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    g: &crate::kernels::Conv2dGeom,
    epi: &(impl Fn(usize, &mut [f32]) + Sync),
) {
    use core::arch::x86_64::*;
    let (cin_g, cout_g) = (g.c_in / g.groups, g.c_out / g.groups);
    let plane = g.oh * g.ow;
    let in_plane = g.h * g.w;
    let taps = cin_g * g.kh * g.kw;
    // packed rows are at least a tile wide (zero beyond the input)
    let wp = g.ow.max(CONV_OX) + (g.kw - 1) * g.dilation_w;
    let last = g.ow.saturating_sub(CONV_OX);
    // the columns a tile at `ox` stores
    let width = |ox: usize| CONV_OX.min(g.ow - ox);
    let mut pack = [0.0f32; PACK_LEN];
    for n in 0..g.n {
        for grp in 0..g.groups {
            let first = grp * cout_g;
            let xg = &x[(n * g.c_in + grp * cin_g) * in_plane
                ..(n * g.c_in + (grp + 1) * cin_g) * in_plane];
            for oy in 0..g.oh {
                // the kernel rows whose input row oy * stride + ky * dilation - pad is inside
                let (ky0, ky1) = crate::kernels::valid_range(
                    g.kh,
                    g.h,
                    g.dilation_h,
                    g.pad_top,
                    oy * g.stride_h,
                );
                let rows = ky1 - ky0;
                let chunk = (PACK_LEN / (rows * wp).max(1)).clamp(1, cin_g.max(1));
                let mut c0 = 0;
                loop {
                    let c1 = (c0 + chunk).min(cin_g);
                    pack_window_rows(&mut pack, xg, g, (oy, ky0, rows), c0..c1, wp);
                    let blocks = tile_starts(cout_g, CONV_OC);
                    let mut done = 0usize; // channels of the group stored by earlier blocks
                    for block in blocks {
                        let oc0 = first + block;
                        let fresh = done.saturating_sub(block); // first channel to store
                        done = block + CONV_OC;
                        let row_base = |c: usize| (n * g.c_out + oc0 + c) * plane + oy * g.ow;
                        let weights: [&[f32]; CONV_OC] =
                            core::array::from_fn(|c| &w[(oc0 + c) * taps..(oc0 + c + 1) * taps]);
                        // what each tile starts from: the bias, or the sums so far (the
                        // last tile's taken now, before the tile it overlaps is stored)
                        let biases: [f32; CONV_OC] =
                            core::array::from_fn(|c| bias.map_or(0.0, |b| b[oc0 + c]));
                        let sums_at = |out: &[f32], c: usize, ox: usize| {
                            let mut t = [0.0; CONV_OX];
                            let at = row_base(c) + ox;
                            if width(ox) == CONV_OX {
                                t.copy_from_slice(&out[at..at + CONV_OX]);
                            } else {
                                t[..width(ox)].copy_from_slice(&out[at..at + width(ox)]);
                            }
                            t
                        };
                        let tail: [[f32; CONV_OX]; CONV_OC] = core::array::from_fn(|c| {
                            if c0 > 0 {
                                sums_at(out, c, last)
                            } else {
                                [biases[c]; CONV_OX]
                            }
                        });
                        let [w0, w1, w2, w3] = weights;
                        for ox in tile_starts(g.ow, CONV_OX) {
                            let init: [[f32; CONV_OX]; CONV_OC] = core::array::from_fn(|c| {
                                if ox == last {
                                    tail[c]
                                } else if c0 > 0 {
                                    sums_at(out, c, ox)
                                } else {
                                    [biases[c]; CONV_OX]
                                }
                            });
                            // SAFETY: each `init[c]` is an array of 16 floats: both 8-float
                            // loads read inside it.
                            let load = |c: usize| unsafe {
                                (
                                    _mm256_loadu_ps(init[c].as_ptr()),
                                    _mm256_loadu_ps(init[c].as_ptr().add(8)),
                                )
                            };
                            // eight accumulators, named so that they live in registers
                            let (mut a0, mut a1, mut a2, mut a3) =
                                (load(0), load(1), load(2), load(3));
                            for k in 0..c1 - c0 {
                                for r in 0..rows {
                                    let row = &pack[(k * rows + r) * wp..(k * rows + r + 1) * wp];
                                    let tap0 = ((c0 + k) * g.kh + ky0 + r) * g.kw;
                                    let (r0, r1, r2, r3) = (
                                        &w0[tap0..tap0 + g.kw],
                                        &w1[tap0..tap0 + g.kw],
                                        &w2[tap0..tap0 + g.kw],
                                        &w3[tap0..tap0 + g.kw],
                                    );
                                    for kx in 0..g.kw {
                                        let at = ox + kx * g.dilation_w;
                                        let xs = &row[at..at + CONV_OX];
                                        // SAFETY: `xs` holds exactly 16 floats (a checked
                                        // slice of that length): both 8-float loads read
                                        // inside it.
                                        let xv = unsafe {
                                            (
                                                _mm256_loadu_ps(xs.as_ptr()),
                                                _mm256_loadu_ps(xs.as_ptr().add(8)),
                                            )
                                        };
                                        a0 = madd(r0[kx], xv, a0);
                                        a1 = madd(r1[kx], xv, a1);
                                        a2 = madd(r2[kx], xv, a2);
                                        a3 = madd(r3[kx], xv, a3);
                                    }
                                }
                            }
                            let sums = [a0, a1, a2, a3];
                            for (c, (low, high)) in sums.into_iter().enumerate() {
                                if c < fresh {
                                    continue; // stored by the block before
                                }
                                let at = row_base(c) + ox;
                                if width(ox) == CONV_OX {
                                    let dst = &mut out[at..at + CONV_OX];
                                    // SAFETY: `dst` holds exactly 16 floats (a checked
                                    // slice of that length): both 8-float stores write
                                    // inside it.
                                    unsafe {
                                        _mm256_storeu_ps(dst.as_mut_ptr(), low);
                                        _mm256_storeu_ps(dst.as_mut_ptr().add(8), high);
                                    }
                                } else {
                                    let mut values = [0.0f32; CONV_OX];
                                    // SAFETY: `values` is an array of 16 floats: both
                                    // 8-float stores write inside it.
                                    unsafe {
                                        _mm256_storeu_ps(values.as_mut_ptr(), low);
                                        _mm256_storeu_ps(values.as_mut_ptr().add(8), high);
                                    }
                                    let w = width(ox);
                                    out[at..at + w].copy_from_slice(&values[..w]);
                                }
                            }
                        }
                    }
                    if c1 >= cin_g {
                        break;
                    }
                    c0 = c1;
                }
                for oc in first..first + cout_g {
                    let at = (n * g.c_out + oc) * plane + oy * g.ow;
                    epi(at, &mut out[at..at + g.ow]);
                }
            }
        }
    }
}

/// Output channels of the widest register tile of [`conv2d_few_avx512`].
const FEW_OC: usize = 8;

/// True when [`conv2d_few_avx512`] can run `g`: 1 to 15 output channels per group (where
/// the implicit GEMM's 16-row tiles run mostly empty), or 16 on rows of at most 8 columns
/// (two rows to a vector), at least one input channel per group and one output, unit
/// horizontal stride, and the window rows of one input channel for two output rows,
/// widened to whole vectors, fit the pack buffer.
pub fn conv2d_few_avx512_fits(g: &crate::kernels::Conv2dGeom) -> bool {
    let reach = g.kw.saturating_sub(1) * g.dilation_w;
    let wp = g.ow.div_ceil(16) * 16 + reach;
    let cout_g = g.c_out / g.groups.max(1);
    g.stride_w == 1
        && g.groups > 0
        && ((1..16).contains(&cout_g) || (cout_g == 16 && g.ow <= 8))
        && g.c_in / g.groups > 0
        && g.oh > 0
        && g.ow > 0
        && g.kh > 0
        && g.kw > 0
        && 2 * g.kh * wp <= PACK_LEN
}

/// [`crate::kernels::conv2d`] with few output channels per group, for geometries
/// [`conv2d_few_avx512_fits`] accepts, on AVX-512F.
///
/// For each output row, the input rows its window reads are copied, zero padding
/// included, into a stack buffer, rows widened to whole vectors (so every load is a plain
/// one), as many input channels at a time as fit. A register tile holds all of a block's
/// output channels (up to [`FEW_OC`]; LeNet's first convolution, 6 channels, is one
/// block) by two vectors of 16 columns: per tap, two loads and one broadcast per channel
/// feed two multiply-adds per channel, and the sums stay in registers until the tile is
/// stored. Against the AVX2 direct tiles (4 channels by 16 columns, tiles and channel
/// blocks overlapping at the edges) a 6-channel, 24-column row takes 12 vector
/// multiply-adds per tap instead of 32 (each of 8 lanes), and no tile's start values go
/// through the stack. The last vector of a row stores whole when the channel's plane has
/// room (its extra lanes land on the next row, computed after this one), masked at the
/// plane's end. When the channel count is not a multiple of the block, the last block
/// ends at the last channel and stores only the channels the block before did not.
/// Rows of at most 8 columns, and of 17 to 24, go two at a time through
/// [`conv2d_few_pairs`] instead (fewer lanes idle: one vector for two rows of 8, three for
/// two rows of 24).
///
/// # Safety
///
/// The CPU must support AVX-512F and FMA. The slices are checked (a short one panics).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub unsafe fn conv2d_few_avx512(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    g: &crate::kernels::Conv2dGeom,
    epi: &(impl Fn(usize, &mut [f32]) + Sync),
) {
    let cout_g = g.c_out / g.groups.max(1);
    // blocks of at most FEW_OC channels, as even as they come (12 -> two of 6)
    let oc = cout_g.div_ceil(cout_g.div_ceil(FEW_OC).max(1));
    let mut run = |pack: &mut [f32]| {
        // the kernel monomorphized for the block's channel count (`$q`: vectors per two rows)
        macro_rules! by_block {
            ($kernel:ident $(, $q:literal)?) => {
                match oc {
                    1 => $kernel::<1 $(, $q)?>(x, w, bias, out, g, pack, epi),
                    2 => $kernel::<2 $(, $q)?>(x, w, bias, out, g, pack, epi),
                    3 => $kernel::<3 $(, $q)?>(x, w, bias, out, g, pack, epi),
                    4 => $kernel::<4 $(, $q)?>(x, w, bias, out, g, pack, epi),
                    5 => $kernel::<5 $(, $q)?>(x, w, bias, out, g, pack, epi),
                    6 => $kernel::<6 $(, $q)?>(x, w, bias, out, g, pack, epi),
                    7 => $kernel::<7 $(, $q)?>(x, w, bias, out, g, pack, epi),
                    _ => $kernel::<FEW_OC $(, $q)?>(x, w, bias, out, g, pack, epi),
                }
            };
        }
        // SAFETY: AVX-512F and FMA (this function's contract)
        unsafe {
            if g.ow <= 8 {
                by_block!(conv2d_few_pairs, 1)
            } else if (17..=24).contains(&g.ow) {
                by_block!(conv2d_few_pairs, 3)
            } else {
                by_block!(conv2d_few_oc)
            }
        }
    };
    // a small buffer when the whole window fits it: the 32 KiB one is cleared per call
    let wp = g.ow.div_ceil(16) * 16 + g.kw.saturating_sub(1) * g.dilation_w;
    if (g.c_in / g.groups.max(1)) * 2 * g.kh * wp <= FEW_SMALL_PACK {
        run(&mut [0.0f32; FEW_SMALL_PACK]);
    } else {
        run(&mut [0.0f32; PACK_LEN]);
    }
}

/// Floats of the small pack buffer of [`conv2d_few_avx512`] (8 KiB: LeNet's second
/// convolution, six channels of two rows' windows, fits it).
const FEW_SMALL_PACK: usize = 2048;

/// One call of [`conv2d_few_avx512`]'s register tile: where its operands are.
#[cfg(target_arch = "x86_64")]
struct FewTile<'a> {
    /// the rows the tile reads: packed ones, or the input itself; input channel `k`'s
    /// kernel row `r` (of the first output row) starts at `start + k * channel + r * row`,
    /// and the second output row's (two rows to a vector) `second` floats after it
    from: &'a [f32],
    start: usize,
    channel: usize,
    row: usize,
    second: usize,
    rows: usize,
    /// input channels of the chunk, and the first one's index in the group
    channels: usize,
    c0: usize,
    /// the weights of the block's first channel on (`taps` per channel)
    weights: &'a [f32],
    taps: usize,
    /// the first kernel row inside the input
    ky0: usize,
}

/// The sums of `OC` channels by `V` vectors of 16 columns from column `16 * v`, starting
/// from `acc`.
///
/// # Safety
///
/// AVX-512F and FMA (the reads are checked against `t.from`, the weights against
/// `t.weights`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
#[allow(unsafe_code)]
unsafe fn few_tile<const OC: usize, const V: usize>(
    t: &FewTile<'_>,
    g: &crate::kernels::Conv2dGeom,
    v: usize,
    mut acc: [[core::arch::x86_64::__m512; V]; OC],
) -> [[core::arch::x86_64::__m512; V]; OC] {
    use core::arch::x86_64::*;
    // the floats read from a row's start, and the end of the last row's
    let reach = 16 * (v + V) + (g.kw - 1) * g.dilation_w;
    let end = (t.channels.max(1) - 1) * t.channel + (t.rows.max(1) - 1) * t.row + reach;
    assert!(t.channels == 0 || t.rows == 0 || t.start + end <= t.from.len());
    assert!(t.weights.len() >= OC * t.taps);
    let (from, weights) = (t.from.as_ptr(), t.weights.as_ptr());
    for k in 0..t.channels {
        for r in 0..t.rows {
            let row = from.wrapping_add(t.start + k * t.channel + r * t.row + 16 * v);
            let tap0 = ((t.c0 + k) * g.kh + t.ky0 + r) * g.kw;
            for kx in 0..g.kw {
                let at = row.wrapping_add(kx * g.dilation_w);
                let mut xs = [_mm512_setzero_ps(); V];
                for (j, xv) in xs.iter_mut().enumerate() {
                    // SAFETY: column 16 * (v + j) + kx * dilation + 15 of a row is below
                    // `reach`, and the last row's reach ends inside `from` (asserted)
                    *xv = unsafe { _mm512_loadu_ps(at.wrapping_add(16 * j)) };
                }
                for (c, sums) in acc.iter_mut().enumerate() {
                    // SAFETY: tap0 + kx < taps and c < OC: inside `weights` (asserted)
                    let wv = _mm512_set1_ps(unsafe { *weights.add(c * t.taps + tap0 + kx) });
                    for (sum, &xv) in sums.iter_mut().zip(&xs) {
                        *sum = _mm512_fmadd_ps(wv, xv, *sum);
                    }
                }
            }
        }
    }
    acc
}

/// The sums of `OC` channels for two output rows of at most `8 * Q` columns in `Q`
/// vectors, starting from `acc`: the two rows' chunks of 8 columns in order (the first
/// row's `Q`, then the second's), two to a vector; `t.rows` is `kh` (rows in the padding
/// are rows of zeros). With `Q = 1` a vector holds the first row in lanes 0-7 and the
/// second in lanes 8-15.
///
/// # Safety
///
/// AVX-512F and FMA (the reads are checked against `t.from`, the weights against
/// `t.weights`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
#[allow(unsafe_code)]
unsafe fn few_pairs_tile<const OC: usize, const Q: usize>(
    t: &FewTile<'_>,
    g: &crate::kernels::Conv2dGeom,
    mut acc: [[core::arch::x86_64::__m512; Q]; OC],
) -> [[core::arch::x86_64::__m512; Q]; OC] {
    use core::arch::x86_64::*;
    let reach = 8 * Q + (g.kw - 1) * g.dilation_w;
    let end = (t.channels.max(1) - 1) * t.channel + (g.kh - 1) * t.row + t.second + reach;
    assert!(t.rows == g.kh && (t.channels == 0 || t.start + end <= t.from.len()));
    assert!(t.weights.len() >= OC * t.taps);
    let (from, weights) = (t.from.as_ptr(), t.weights.as_ptr());
    // chunk `i` of the two rows: row `i / Q`, columns from `8 * (i % Q)`
    let chunk = |i: usize| (i / Q) * t.second + 8 * (i % Q);
    for k in 0..t.channels {
        for ky in 0..g.kh {
            let first = from.wrapping_add(t.start + k * t.channel + ky * t.row);
            let tap0 = ((t.c0 + k) * g.kh + ky) * g.kw;
            for kx in 0..g.kw {
                let at = first.wrapping_add(kx * g.dilation_w);
                let mut xs = [_mm512_setzero_ps(); Q];
                for (j, xv) in xs.iter_mut().enumerate() {
                    // SAFETY: 8 floats from column `8 * q + kx * dilation` (q < Q) of a
                    // row end within `reach`, and the last row's reach ends inside
                    // `from` (asserted)
                    *xv = unsafe {
                        let low =
                            _mm512_castps256_ps512(_mm256_loadu_ps(at.wrapping_add(chunk(2 * j))));
                        let high = _mm256_loadu_ps(at.wrapping_add(chunk(2 * j + 1)));
                        _mm512_castpd_ps(_mm512_insertf64x4::<1>(
                            _mm512_castps_pd(low),
                            _mm256_castps_pd(high),
                        ))
                    };
                }
                for (c, sums) in acc.iter_mut().enumerate() {
                    // SAFETY: tap0 + kx < taps and c < OC: inside `weights` (asserted)
                    let wv = _mm512_set1_ps(unsafe { *weights.add(c * t.taps + tap0 + kx) });
                    for (sum, &xv) in sums.iter_mut().zip(&xs) {
                        *sum = _mm512_fmadd_ps(wv, xv, *sum);
                    }
                }
            }
        }
    }
    acc
}

/// [`conv2d_few_avx512`] on two output rows at a time in `Q` vectors (rows of at most
/// `8 * Q` columns, cut into chunks of 8, two chunks to a vector), with register tiles of
/// `OC` channels: per tap and vector, two 8-float loads joined feed one multiply-add per
/// channel. `Q = 1`: rows of at most 8, two to a vector (LeNet's second convolution, rows
/// of 8: every lane used); `Q = 3`: rows of 17 to 24 columns in three vectors where one
/// row at a time takes four (LeNet's first, rows of 24: 25% fewer multiply-adds).
///
/// # Safety
///
/// AVX-512F and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(unsafe_code)]
unsafe fn conv2d_few_pairs<const OC: usize, const Q: usize>(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    g: &crate::kernels::Conv2dGeom,
    pack: &mut [f32],
    epi: &(impl Fn(usize, &mut [f32]) + Sync),
) {
    use core::arch::x86_64::*;
    assert!(conv2d_few_avx512_fits(g) && g.ow <= 8 * Q && Q % 2 == 1);
    let (cin_g, cout_g) = (g.c_in / g.groups, g.c_out / g.groups);
    let (plane, in_plane) = (g.oh * g.ow, g.h * g.w);
    let taps = cin_g * g.kh * g.kw;
    assert!(x.len() >= g.n * g.c_in * in_plane && out.len() >= g.n * g.c_out * plane);
    assert!(w.len() >= g.c_out * taps && bias.is_none_or(|b| b.len() >= g.c_out));
    let wp = 8 * Q + (g.kw - 1) * g.dilation_w;
    let per_channel = 2 * g.kh * wp;
    // where the second row starts in a tile's values (its first chunk's vector lane)
    let row2 = 8 * Q;
    assert!(per_channel <= pack.len());
    let chunk = (pack.len() / per_channel).clamp(1, cin_g.max(1));
    // no padding, and every kept output's window inside its row and the input
    let unpadded = g.pad_top == 0
        && g.pad_left == 0
        && g.ow + (g.kw - 1) * g.dilation_w <= g.w
        && (g.oh - 1) * g.stride_h + (g.kh - 1) * g.dilation_h < g.h;
    for n in 0..g.n {
        for grp in 0..g.groups {
            let first = grp * cout_g;
            let xg = &x[(n * g.c_in + grp * cin_g) * in_plane
                ..(n * g.c_in + (grp + 1) * cin_g) * in_plane];
            for oy in (0..g.oh).step_by(2) {
                let both = oy + 1 < g.oh;
                // the input's own rows where no window reaches into the padding and the
                // reads (8 * Q floats from each row's window start: past a short row,
                // lanes whose sums are not kept) stay inside the group's input
                let window = oy * g.stride_h * g.w;
                let second = g.stride_h * g.w;
                let end = (cin_g - 1) * in_plane + (g.kh - 1) * g.dilation_h * g.w + second + wp;
                let in_place = unpadded && window + end <= xg.len();
                let chunk = if in_place { cin_g.max(1) } else { chunk };
                let mut c0 = 0;
                loop {
                    let c1 = (c0 + chunk).min(cin_g);
                    // pack[((2k + half) * kh + ky) * wp + p] = x[c0 + k, iy, p - pad_left]
                    // for output row oy + half, 0 outside the input (all kh rows)
                    for k in 0..(c1 - c0) * usize::from(!in_place) {
                        for half in 0..2 {
                            for ky in 0..g.kh {
                                let at = ((2 * k + half) * g.kh + ky) * wp;
                                let dst = &mut pack[at..at + wp];
                                let iy = ((oy + half) * g.stride_h + ky * g.dilation_h)
                                    .checked_sub(g.pad_top)
                                    .filter(|&iy| iy < g.h && (half == 0 || both));
                                let Some(iy) = iy else {
                                    dst.fill(0.0);
                                    continue;
                                };
                                let src = &xg[(c0 + k) * in_plane + iy * g.w..][..g.w];
                                let start = g.pad_left.min(wp);
                                let len = g.w.min(wp - start);
                                dst[..start].fill(0.0);
                                dst[start..start + len].copy_from_slice(&src[..len]);
                                dst[start + len..].fill(0.0);
                            }
                        }
                    }
                    let mut done = 0usize; // channels of the group stored by earlier blocks
                    for block in tile_starts(cout_g, OC) {
                        let oc0 = first + block;
                        let fresh = done.saturating_sub(block); // first channel to store
                        done = block + OC;
                        let tile = if in_place {
                            FewTile {
                                from: xg,
                                start: window,
                                channel: in_plane,
                                row: g.dilation_h * g.w,
                                second,
                                rows: g.kh,
                                channels: c1 - c0,
                                c0,
                                weights: &w[oc0 * taps..(oc0 + OC) * taps],
                                taps,
                                ky0: 0,
                            }
                        } else {
                            FewTile {
                                from: pack,
                                start: 0,
                                channel: 2 * g.kh * wp,
                                row: wp,
                                second: g.kh * wp,
                                rows: g.kh,
                                channels: c1 - c0,
                                c0,
                                weights: &w[oc0 * taps..(oc0 + OC) * taps],
                                taps,
                                ky0: 0,
                            }
                        };
                        // the two rows of channel c
                        let rows_at = |c: usize| (n * g.c_out + oc0 + c) * plane + oy * g.ow;
                        let mut acc = [[_mm512_setzero_ps(); Q]; OC];
                        for (c, sums) in acc.iter_mut().enumerate() {
                            // the Q vectors' lanes in order: the first row from 0, the
                            // second from `row2`
                            let mut start = [[bias.map_or(0.0, |b| b[oc0 + c]); 16]; Q];
                            if c0 > 0 {
                                // the sums so far
                                let at = rows_at(c);
                                let lanes = start.as_flattened_mut();
                                lanes[..g.ow].copy_from_slice(&out[at..at + g.ow]);
                                if both {
                                    lanes[row2..row2 + g.ow]
                                        .copy_from_slice(&out[at + g.ow..at + 2 * g.ow]);
                                }
                            }
                            for (sum, lanes) in sums.iter_mut().zip(&start) {
                                // SAFETY: `lanes` holds 16 floats
                                *sum = unsafe { _mm512_loadu_ps(lanes.as_ptr()) };
                            }
                        }
                        // SAFETY: AVX-512F and FMA; the pack rows are `wp` wide
                        let acc = unsafe { few_pairs_tile::<OC, Q>(&tile, g, acc) };
                        for (c, sums) in acc.iter().enumerate().skip(fresh) {
                            let at = rows_at(c);
                            if both && g.ow == row2 {
                                // rows of exactly 8 * Q: the two rows are the vectors'
                                // lanes in order, stored whole
                                let rows = &mut out[at..at + 2 * g.ow];
                                for (lanes, &sum) in rows.chunks_exact_mut(16).zip(sums) {
                                    // SAFETY: `lanes` holds 16 floats
                                    unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), sum) };
                                }
                                continue;
                            }
                            let mut values = [[0.0f32; 16]; Q];
                            for (lanes, &sum) in values.iter_mut().zip(sums) {
                                // SAFETY: `lanes` holds 16 floats
                                unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), sum) };
                            }
                            let values = values.as_flattened();
                            out[at..at + g.ow].copy_from_slice(&values[..g.ow]);
                            if both {
                                out[at + g.ow..at + 2 * g.ow]
                                    .copy_from_slice(&values[row2..row2 + g.ow]);
                            }
                        }
                    }
                    if c1 >= cin_g {
                        break;
                    }
                    c0 = c1;
                }
                for oc in first..first + cout_g {
                    for row in oy..(oy + 2).min(g.oh) {
                        let at = (n * g.c_out + oc) * plane + row * g.ow;
                        epi(at, &mut out[at..at + g.ow]);
                    }
                }
            }
        }
    }
}

/// [`conv2d_few_avx512`] with register tiles of `OC` channels.
///
/// # Safety
///
/// AVX-512F and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(unsafe_code)]
unsafe fn conv2d_few_oc<const OC: usize>(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    g: &crate::kernels::Conv2dGeom,
    pack: &mut [f32],
    epi: &(impl Fn(usize, &mut [f32]) + Sync),
) {
    use core::arch::x86_64::*;
    assert!(conv2d_few_avx512_fits(g));
    let (cin_g, cout_g) = (g.c_in / g.groups, g.c_out / g.groups);
    let (plane, in_plane) = (g.oh * g.ow, g.h * g.w);
    let taps = cin_g * g.kh * g.kw;
    assert!(x.len() >= g.n * g.c_in * in_plane && out.len() >= g.n * g.c_out * plane);
    assert!(w.len() >= g.c_out * taps && bias.is_none_or(|b| b.len() >= g.c_out));
    let vectors = g.ow.div_ceil(16);
    let wp = vectors * 16 + (g.kw - 1) * g.dilation_w;
    // the lanes of the last vector inside the row
    let tail = (g.ow - 16 * (vectors - 1)) as u32;
    let tail_mask = (u32::MAX >> (32 - tail)) as u16;
    assert!(g.kh * wp <= pack.len());
    let unpadded_across = g.pad_left == 0 && g.ow + (g.kw - 1) * g.dilation_w <= g.w;
    for n in 0..g.n {
        for grp in 0..g.groups {
            let first = grp * cout_g;
            let xg = &x[(n * g.c_in + grp * cin_g) * in_plane
                ..(n * g.c_in + (grp + 1) * cin_g) * in_plane];
            for oy in 0..g.oh {
                let (ky0, ky1) = crate::kernels::valid_range(
                    g.kh,
                    g.h,
                    g.dilation_h,
                    g.pad_top,
                    oy * g.stride_h,
                );
                let rows = ky1 - ky0;
                // the input's own rows when the windows reach no padding across and the
                // reads (whole vectors from each row's start: past the row's end, lanes
                // whose sums are not kept) stay inside the group's input
                let start = (oy * g.stride_h + ky0 * g.dilation_h).saturating_sub(g.pad_top) * g.w;
                let end = (cin_g - 1) * in_plane
                    + rows.saturating_sub(1) * g.dilation_h * g.w
                    + 16 * vectors
                    + (g.kw - 1) * g.dilation_w;
                let in_place = unpadded_across && rows > 0 && start + end <= xg.len();
                let chunk = if in_place {
                    cin_g.max(1)
                } else {
                    (pack.len() / (rows * wp).max(1)).clamp(1, cin_g.max(1))
                };
                let mut c0 = 0;
                loop {
                    let c1 = (c0 + chunk).min(cin_g);
                    if !in_place {
                        pack_window_rows(pack, xg, g, (oy, ky0, rows), c0..c1, wp);
                    }
                    let mut done = 0usize; // channels of the group stored by earlier blocks
                    for block in tile_starts(cout_g, OC) {
                        let oc0 = first + block;
                        let fresh = done.saturating_sub(block); // first channel to store
                        done = block + OC;
                        let (from, start, channel, row) = if in_place {
                            (xg, start, in_plane, g.dilation_h * g.w)
                        } else {
                            (&*pack, 0, rows * wp, wp)
                        };
                        let tile = FewTile {
                            from,
                            start,
                            channel,
                            row,
                            second: 0,
                            rows,
                            channels: c1 - c0,
                            c0,
                            weights: &w[oc0 * taps..(oc0 + OC) * taps],
                            taps,
                            ky0,
                        };
                        // the channel's plane and where the row starts in it
                        let plane_of = |c: usize| (n * g.c_out + oc0 + c) * plane;
                        let row = oy * g.ow;
                        // what a vector starts from: the bias, or the sums so far
                        let start = |out: &[f32], c: usize, col: usize| {
                            if c0 == 0 {
                                return _mm512_set1_ps(bias.map_or(0.0, |b| b[oc0 + c]));
                            }
                            let at = plane_of(c) + row + col;
                            let lanes = g.ow - col;
                            if lanes >= 16 {
                                let src = &out[at..at + 16];
                                // SAFETY: `src` holds 16 floats
                                unsafe { _mm512_loadu_ps(src.as_ptr()) }
                            } else {
                                let src = &out[at..at + lanes];
                                // SAFETY: the mask enables the `lanes` floats of `src`
                                unsafe { _mm512_maskz_loadu_ps(tail_mask, src.as_ptr()) }
                            }
                        };
                        let store = |out: &mut [f32], c: usize, col: usize, sum: __m512| {
                            let (at, end) = (plane_of(c) + row + col, plane_of(c) + plane);
                            if at + 16 <= end {
                                let dst = &mut out[at..at + 16];
                                // SAFETY: `dst` holds 16 floats (past the row's end they
                                // are the next row's, computed after this one)
                                unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), sum) };
                            } else {
                                let dst = &mut out[at..end];
                                // SAFETY: the mask covers the floats of `dst` (the row's
                                // last, at the plane's end)
                                unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr(), tail_mask, sum) };
                            }
                        };
                        let mut v = 0;
                        while v < vectors {
                            if vectors - v >= 2 {
                                let mut acc = [[_mm512_setzero_ps(); 2]; OC];
                                for (c, sums) in acc.iter_mut().enumerate() {
                                    for (j, sum) in sums.iter_mut().enumerate() {
                                        *sum = start(out, c, 16 * (v + j));
                                    }
                                }
                                // SAFETY: AVX-512F and FMA; 16 * (v + 2) <= 16 * vectors
                                // and the pack rows are `wp` wide
                                let acc = unsafe { few_tile::<OC, 2>(&tile, g, v, acc) };
                                for (c, sums) in acc.iter().enumerate().skip(fresh) {
                                    for (j, &sum) in sums.iter().enumerate() {
                                        store(out, c, 16 * (v + j), sum);
                                    }
                                }
                                v += 2;
                            } else {
                                let mut acc = [[_mm512_setzero_ps(); 1]; OC];
                                for (c, sums) in acc.iter_mut().enumerate() {
                                    sums[0] = start(out, c, 16 * v);
                                }
                                // SAFETY: as above, one vector
                                let acc = unsafe { few_tile::<OC, 1>(&tile, g, v, acc) };
                                for (c, sums) in acc.iter().enumerate().skip(fresh) {
                                    store(out, c, 16 * v, sums[0]);
                                }
                                v += 1;
                            }
                        }
                    }
                    if c1 >= cin_g {
                        break;
                    }
                    c0 = c1;
                }
                for oc in first..first + cout_g {
                    let at = (n * g.c_out + oc) * plane + oy * g.ow;
                    epi(at, &mut out[at..at + g.ow]);
                }
            }
        }
    }
}

/// Copies the window rows of output row `oy` (kernel rows `ky0..ky0 + rows`, all inside
/// the input) of input channels `channels` of `xg` (one group's input) into `pack`:
/// `pack[(k * rows + r) * wp + p] = x[c0 + k, iy(ky0 + r), p - pad_left]`, 0 outside the
/// row.
fn pack_window_rows(
    pack: &mut [f32],
    xg: &[f32],
    g: &crate::kernels::Conv2dGeom,
    (oy, ky0, rows): (usize, usize, usize),
    channels: core::ops::Range<usize>,
    wp: usize,
) {
    let in_plane = g.h * g.w;
    for (k, c) in channels.enumerate() {
        for r in 0..rows {
            let iy = oy * g.stride_h + (ky0 + r) * g.dilation_h - g.pad_top;
            let at = c * in_plane + iy * g.w;
            let src = &xg[at..at + g.w];
            let dst = &mut pack[(k * rows + r) * wp..(k * rows + r + 1) * wp];
            let start = g.pad_left.min(wp);
            let len = g.w.min(wp - start);
            dst[..start].fill(0.0);
            dst[start..start + len].copy_from_slice(&src[..len]);
            dst[start + len..].fill(0.0);
        }
    }
}

/// `acc + w * x` on a pair of 8-float vectors, with one rounding per element.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn madd(
    w: f32,
    x: (core::arch::x86_64::__m256, core::arch::x86_64::__m256),
    acc: (core::arch::x86_64::__m256, core::arch::x86_64::__m256),
) -> (core::arch::x86_64::__m256, core::arch::x86_64::__m256) {
    use core::arch::x86_64::*;
    let v = _mm256_set1_ps(w);
    (
        _mm256_fmadd_ps(v, x.0, acc.0),
        _mm256_fmadd_ps(v, x.1, acc.1),
    )
}

/// Rows of one register tile of [`linear_avx2`].
const LIN_ROWS: usize = 3;
/// Outputs of one register tile of [`linear_avx2`].
const LIN_OUTS: usize = 4;

/// True when [`linear_avx2`] can compute `rows x out_features` outputs.
pub fn linear_avx2_fits(rows: usize, out_features: usize) -> bool {
    rows >= 1 && out_features >= 1
}

/// `x[rows, k] @ w[outs, k]^T` (PyTorch `Linear`, both operands contiguous along `k`) in
/// register tiles of [`LIN_ROWS`] rows by [`LIN_OUTS`] outputs: per step of eight along
/// `k`, seven vector loads feed twelve fused multiply-adds into twelve vector partial
/// sums, added across at the end (the last `k % 8` terms one by one). Each finished value
/// goes to `sink(row, output, value)`. Tiles at the edges end at the edge and overlap the
/// tiles before them; with fewer than [`LIN_ROWS`] rows (a
/// matrix-vector product) the tile repeats the last row, which costs nothing there: the
/// weights' loads, not the multiply-adds, set the pace. Likewise with fewer than
/// [`LIN_OUTS`] outputs (a regression head) it repeats the last output's weights (whose
/// value is given once).
///
/// # Safety
///
/// The CPU must support AVX2 and FMA, and [`linear_avx2_fits`]`(rows, outs)`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(unsafe_code)]
pub unsafe fn linear_avx2(
    x: &[f32],
    w: &[f32],
    (rows, k, outs): (usize, usize, usize),
    mut sink: impl FnMut(usize, usize, f32),
) {
    use core::arch::x86_64::*;
    let main = k / 8 * 8;
    // the row a tile's `r`-th row computes (the last one again past the end)
    let row_of = |r0: usize, r: usize| (r0 + r).min(rows - 1);
    for r0 in tile_starts(rows, LIN_ROWS) {
        let xr: [&[f32]; LIN_ROWS] =
            core::array::from_fn(|r| &x[row_of(r0, r) * k..(row_of(r0, r) + 1) * k]);
        for o0 in tile_starts(outs, LIN_OUTS) {
            let out_of = |o: usize| (o0 + o).min(outs - 1);
            let wr: [&[f32]; LIN_OUTS] =
                core::array::from_fn(|o| &w[out_of(o) * k..(out_of(o) + 1) * k]);
            let zero = (
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
            );
            // twelve accumulators (per output, one per row), named so that they live in
            // registers
            let (mut c0, mut c1, mut c2, mut c3) = (zero, zero, zero, zero);
            for i in (0..main).step_by(8) {
                // SAFETY: every slice loaded holds exactly 8 floats (a checked slice of
                // that length): each 8-float load reads inside one.
                let load = |s: &[f32]| unsafe { _mm256_loadu_ps(s[i..i + 8].as_ptr()) };
                let xv = (load(xr[0]), load(xr[1]), load(xr[2]));
                c0 = madd3(xv, load(wr[0]), c0);
                c1 = madd3(xv, load(wr[1]), c1);
                c2 = madd3(xv, load(wr[2]), c2);
                c3 = madd3(xv, load(wr[3]), c3);
            }
            let per_output = [c0, c1, c2, c3];
            for (o, c) in per_output.into_iter().enumerate().take(outs - o0) {
                for (r, v) in [c.0, c.1, c.2].into_iter().enumerate() {
                    let mut lanes = [0.0f32; 8];
                    // SAFETY: `lanes` is an array of 8 floats: the store writes inside it.
                    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
                    let mut sum = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
                        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
                    for (xv, wv) in xr[r][main..].iter().zip(&wr[o][main..]) {
                        sum += xv * wv;
                    }
                    sink(row_of(r0, r), o0 + o, sum);
                }
            }
        }
    }
}

/// Outputs one step of [`matvec_avx512`] computes: eight weight rows streamed at once.
const MATVEC_OUTS: usize = 8;

/// `x[k] @ w[outs, k]^T` (a matrix-vector product: a classifier, an MLP at batch 1) on
/// AVX-512F, the weights read row-major where they lie: eight rows at a time, per 16
/// floats along `k` one load of `x` and eight of the rows into eight vector sums (the
/// last `k % 16` through masked loads, nothing one by one), each then added across.
/// Every output's sum runs in the same order wherever its row falls in a step, so any
/// split of the outputs (threads) gives the same bits. Each finished value goes to
/// `sink(output, value)`; the last step overlaps the one before it (fewer than eight
/// outputs repeat the last row, and are given once).
///
/// # Safety
///
/// The CPU must support AVX-512F. The slices are checked (a short one panics).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(unsafe_code)]
pub unsafe fn matvec_avx512(
    x: &[f32],
    w: &[f32],
    (k, outs): (usize, usize),
    mut sink: impl FnMut(usize, f32),
) {
    use core::arch::x86_64::*;
    assert!(x.len() >= k && w.len() >= outs * k);
    if outs == 0 {
        return;
    }
    let main = k / 16 * 16;
    let tail = if k == main {
        0
    } else {
        (1u16 << (k - main)) - 1
    };
    for o0 in tile_starts(outs, MATVEC_OUTS) {
        let rows = matvec_rows(w, o0, (k, outs));
        let mut acc = [_mm512_setzero_ps(); MATVEC_OUTS];
        let xp = x.as_ptr();
        for i in (0..main).step_by(16) {
            // SAFETY: i + 16 <= main <= k: inside `x` and inside each row (`k` floats
            // from its start, rows below `outs`: inside `w`, asserted above)
            let xv = _mm512_loadu_ps(xp.add(i));
            for (a, row) in acc.iter_mut().zip(&rows) {
                *a = _mm512_fmadd_ps(_mm512_loadu_ps(row.add(i)), xv, *a);
            }
        }
        if tail != 0 {
            // SAFETY: the mask enables the `k - main` floats from `main`, inside `x` and
            // each row
            let xv = _mm512_maskz_loadu_ps(tail, xp.add(main));
            for (a, row) in acc.iter_mut().zip(&rows) {
                *a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, row.add(main)), xv, *a);
            }
        }
        for (o, a) in acc.iter().enumerate().take(outs - o0) {
            sink(o0 + o, _mm512_reduce_add_ps(*a));
        }
    }
}

/// The first floats of the weight rows of a matrix-vector step from output `o0` (the
/// last row again past `outs`).
fn matvec_rows(w: &[f32], o0: usize, (k, outs): (usize, usize)) -> [*const f32; MATVEC_OUTS] {
    core::array::from_fn(|o| w[(o0 + o).min(outs - 1) * k..].as_ptr())
}

/// [`matvec_avx512`] on AVX2 and FMA: eight weight rows at a time, per 8 floats along `k`
/// one load of `x` and eight of the rows into eight vector sums, each then added across
/// its lanes in a fixed order, the last `k % 8` products one by one after them. Each
/// output's sum runs in the same order wherever its row falls in a step (threads give the
/// same bits). Against the register tiles of [`linear_avx2`] for one row: LeNet's
/// classifier layers (400 -> 120 -> 84, in cache) 0.0052 -> 0.0025-0.0032 ms, mlp's
/// (784 -> 512 -> 256, from L3) 0.046 -> 0.027 (2026-12-06, medians).
///
/// # Safety
///
/// The CPU must support AVX2 and FMA. The slices are checked (a short one panics).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(unsafe_code)]
pub unsafe fn matvec_avx2(
    x: &[f32],
    w: &[f32],
    (k, outs): (usize, usize),
    mut sink: impl FnMut(usize, f32),
) {
    use core::arch::x86_64::*;
    assert!(x.len() >= k && w.len() >= outs * k);
    if outs == 0 {
        return;
    }
    let main = k / 8 * 8;
    for o0 in tile_starts(outs, MATVEC_OUTS) {
        let rows = matvec_rows(w, o0, (k, outs));
        let mut acc = [_mm256_setzero_ps(); MATVEC_OUTS];
        let xp = x.as_ptr();
        for i in (0..main).step_by(8) {
            // SAFETY: i + 8 <= main <= k: inside `x` and inside each row (`k` floats
            // from its start, rows below `outs`: inside `w`, asserted above)
            let xv = _mm256_loadu_ps(xp.add(i));
            for (a, row) in acc.iter_mut().zip(&rows) {
                *a = _mm256_fmadd_ps(_mm256_loadu_ps(row.add(i)), xv, *a);
            }
        }
        for (o, a) in acc.iter().enumerate().take(outs - o0) {
            let mut lanes = [0.0f32; 8];
            // SAFETY: `lanes` is an array of 8 floats: the store writes inside it
            _mm256_storeu_ps(lanes.as_mut_ptr(), *a);
            let mut sum = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
                + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
            let row = &w[(o0 + o) * k..(o0 + o + 1) * k];
            for (xv, wv) in x[main..k].iter().zip(&row[main..]) {
                sum += xv * wv;
            }
            sink(o0 + o, sum);
        }
    }
}

/// Panels [`matvec_panels_avx512`] reads at once.
const MATVEC_PANELS: usize = 4;

/// [`crate::kernels::matvec_panels`] on AVX-512F: four panels of sixteen outputs at once
/// (four streams; one panel at a time, one stream, ran mlp 3% slower), per step along `k`
/// one broadcast of `x` and one load of each panel's row, into two sums per panel
/// (`kk % 2`) added at the end. Each output's sums run in the same order whichever group
/// of panels it falls in.
///
/// # Safety
///
/// The CPU must support AVX-512F and FMA. The slices are checked (a short one panics).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(unsafe_code)]
pub unsafe fn matvec_panels_avx512(x: &[f32], panels: &[f32], out: &mut [f32], k: usize) {
    use core::arch::x86_64::*;
    const PANEL: usize = GEMM_NR;
    let count = out.len().div_ceil(PANEL);
    assert!(x.len() >= k && panels.len() >= count * k * PANEL);
    let xp = x.as_ptr();
    for (group, outs) in out.chunks_mut(MATVEC_PANELS * PANEL).enumerate() {
        let first = group * MATVEC_PANELS;
        let rows: [*const f32; MATVEC_PANELS] = core::array::from_fn(|q| {
            // (a group of fewer panels reads its last one again; those sums are dropped)
            let p = (first + q).min(count - 1);
            panels[p * k * PANEL..].as_ptr()
        });
        let (mut even, mut odd) = (
            [_mm512_setzero_ps(); MATVEC_PANELS],
            [_mm512_setzero_ps(); MATVEC_PANELS],
        );
        let step = |acc: &mut [__m512; MATVEC_PANELS], kk: usize| {
            // SAFETY: kk < k: inside `x` and inside each panel's `k` rows of 16 floats
            let xv = _mm512_set1_ps(unsafe { *xp.add(kk) });
            for (a, row) in acc.iter_mut().zip(&rows) {
                // SAFETY: as above
                *a = _mm512_fmadd_ps(xv, unsafe { _mm512_loadu_ps(row.add(kk * PANEL)) }, *a);
            }
        };
        for kk in (0..k / 2 * 2).step_by(2) {
            step(&mut even, kk);
            step(&mut odd, kk + 1);
        }
        if k % 2 == 1 {
            step(&mut even, k - 1);
        }
        for (q, part) in outs.chunks_mut(PANEL).enumerate() {
            let sum = _mm512_add_ps(even[q], odd[q]);
            let mask = (u32::MAX >> (32 - part.len())) as u16;
            // SAFETY: the mask covers the `part.len()` (1 to 16) floats of `part`
            _mm512_mask_storeu_ps(part.as_mut_ptr(), mask, sum);
        }
    }
}

/// [`crate::kernels::matvec_panels_here`] compiled for AVX2 and FMA.
///
/// # Safety
///
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(unsafe_code)]
pub unsafe fn matvec_panels_avx2(x: &[f32], panels: &[f32], out: &mut [f32], k: usize) {
    crate::kernels::matvec_panels_here(x, panels, out, k);
}

/// Three rows' `acc + x * w` against one weight vector.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn madd3(
    x: (
        core::arch::x86_64::__m256,
        core::arch::x86_64::__m256,
        core::arch::x86_64::__m256,
    ),
    w: core::arch::x86_64::__m256,
    acc: (
        core::arch::x86_64::__m256,
        core::arch::x86_64::__m256,
        core::arch::x86_64::__m256,
    ),
) -> (
    core::arch::x86_64::__m256,
    core::arch::x86_64::__m256,
    core::arch::x86_64::__m256,
) {
    use core::arch::x86_64::*;
    (
        _mm256_fmadd_ps(x.0, w, acc.0),
        _mm256_fmadd_ps(x.1, w, acc.1),
        _mm256_fmadd_ps(x.2, w, acc.2),
    )
}

/// The bounds a 6 x 16 register tile ([`gemm_tile_avx2`], `gemm_tile_neon`) reads and
/// writes within, checked once per tile (panics when a slice is short).
#[inline(always)]
#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "aarch64", target_feature = "neon")
))]
fn check_tile_operands(
    kc: usize,
    (a, a_row, a_k): (&[f32], usize, usize),
    rows: usize,
    (b, ldb): (&[f32], usize),
    (c, ldc): (&[f32], usize),
    init: Option<&[f32]>,
) {
    assert!((1..=GEMM_MR).contains(&rows) && kc > 0);
    assert!(a.len() > (rows - 1) * a_row + (kc - 1) * a_k);
    assert!(b.len() >= (kc - 1) * ldb + GEMM_NR);
    assert!(c.len() >= (rows - 1) * ldc + GEMM_NR);
    assert!(init.is_none_or(|s| s.len() >= rows));
}

/// Rows of the GEMM register tile ([`gemm_tile_avx2`]): six rows by [`GEMM_NR`] columns are
/// twelve accumulators of the sixteen ymm registers, leaving two for `b` and one for `a`.
pub const GEMM_MR: usize = 6;
/// Columns of the GEMM register tile (two vectors of eight).
pub const GEMM_NR: usize = 16;

/// One register tile of a matrix product: for `i < rows` (at most [`GEMM_MR`]) and
/// `j < GEMM_NR`,
/// `c[i * ldc + j] = start_i + sum over k < kc of a[i * a_row + k * a_k] * b[k * ldb + j]`,
/// where `start_i` is `init[i]` when `init` is given, else `c[i * ldc + j]` (accumulating
/// over blocks of `k`). `a` is a row-major block (`a_row` = its pitch, `a_k` = 1) or a
/// packed tile of interleaved rows (`a_row` = 1, `a_k` = [`GEMM_MR`]). Per step along `k`:
/// two vector loads of `b`, six broadcasts of `a`, twelve fused multiply-adds; the sums
/// stay in registers until the single store. Rows past `rows` repeat the last row's loads
/// and are not stored.
///
/// # Safety
///
/// The CPU must support AVX2 and FMA. The slices are checked (a short one panics).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(unsafe_code, clippy::too_many_arguments)]
pub unsafe fn gemm_tile_avx2(
    kc: usize,
    (a, a_row, a_k): (&[f32], usize, usize),
    rows: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    init: Option<&[f32]>,
) {
    use core::arch::x86_64::*;
    check_tile_operands(kc, (a, a_row, a_k), rows, (b, ldb), (c, ldc), init);
    let row = |i: usize| a.as_ptr().add(i.min(rows - 1) * a_row);
    let (r0, r1, r2, r3, r4, r5) = (row(0), row(1), row(2), row(3), row(4), row(5));
    let bp = b.as_ptr();
    let z = _mm256_setzero_ps();
    let (mut c00, mut c01, mut c10, mut c11, mut c20, mut c21) = (z, z, z, z, z, z);
    let (mut c30, mut c31, mut c40, mut c41, mut c50, mut c51) = (z, z, z, z, z, z);
    for k in 0..kc {
        // SAFETY: k < kc, so `b[k * ldb .. k * ldb + 16]` and `a[i * a_row + k * a_k]`
        // for i < rows are inside the slices (asserted above).
        let (bk, ak) = (bp.add(k * ldb), k * a_k);
        let b0 = _mm256_loadu_ps(bk);
        let b1 = _mm256_loadu_ps(bk.add(8));
        let x = _mm256_broadcast_ss(&*r0.add(ak));
        c00 = _mm256_fmadd_ps(x, b0, c00);
        c01 = _mm256_fmadd_ps(x, b1, c01);
        let x = _mm256_broadcast_ss(&*r1.add(ak));
        c10 = _mm256_fmadd_ps(x, b0, c10);
        c11 = _mm256_fmadd_ps(x, b1, c11);
        let x = _mm256_broadcast_ss(&*r2.add(ak));
        c20 = _mm256_fmadd_ps(x, b0, c20);
        c21 = _mm256_fmadd_ps(x, b1, c21);
        let x = _mm256_broadcast_ss(&*r3.add(ak));
        c30 = _mm256_fmadd_ps(x, b0, c30);
        c31 = _mm256_fmadd_ps(x, b1, c31);
        let x = _mm256_broadcast_ss(&*r4.add(ak));
        c40 = _mm256_fmadd_ps(x, b0, c40);
        c41 = _mm256_fmadd_ps(x, b1, c41);
        let x = _mm256_broadcast_ss(&*r5.add(ak));
        c50 = _mm256_fmadd_ps(x, b0, c50);
        c51 = _mm256_fmadd_ps(x, b1, c51);
    }
    let sums = [
        [c00, c01],
        [c10, c11],
        [c20, c21],
        [c30, c31],
        [c40, c41],
        [c50, c51],
    ];
    store_tile(sums, rows, c, ldc, init);
}

/// True when the NEON register tile ([`gemm_tile_neon`]) runs: on every aarch64 CPU, where
/// NEON is part of the base ISA (the `neon` target feature is on by default), so the
/// answer is fixed at compile time.
#[inline]
pub fn neon() -> bool {
    #[cfg(test)]
    if FORCE_PORTABLE.get() {
        return false;
    }
    cfg!(all(target_arch = "aarch64", target_feature = "neon"))
}

/// True when the matrix products run on vector register tiles: AVX2 and FMA on x86_64
/// (there exactly [`avx2_fma`], so a caller may take it as that answer), NEON on aarch64.
#[inline]
pub fn register_tiles() -> bool {
    avx2_fma() || neon()
}

/// [`gemm_tile_avx2`]'s contract on NEON: six rows by [`GEMM_NR`] columns are twenty-four
/// accumulators of the thirty-two 128-bit registers, leaving four for `b` and one for
/// `a`. Per step along `k`: four vector loads of `b`, six scalar loads of `a`, each
/// multiplied into four accumulators by lane (`fmla v.4s, v.4s, v.s[0]`), twenty-four
/// fused multiply-adds in all, where the portable loop (one row at a time, its sixteen
/// sums in four registers) loads `b` once per row and chains each accumulator's
/// multiply-adds back to back. Rows past `rows` repeat the last row's loads and are not
/// stored. The slices are checked (a short one panics).
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
#[allow(clippy::too_many_arguments)]
pub fn gemm_tile_neon(
    kc: usize,
    (a, a_row, a_k): (&[f32], usize, usize),
    rows: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    init: Option<&[f32]>,
) {
    check_tile_operands(kc, (a, a_row, a_k), rows, (b, ldb), (c, ldc), init);
    let bp = b.as_ptr();
    // SAFETY: for k < kc, `b[k * ldb..k * ldb + 16]` lies in `b` (asserted above)
    #[allow(unsafe_code)]
    let row_of_b = |k: usize| unsafe { bp.add(k * ldb) };
    gemm_tile_neon_rows(kc, (a, a_row, a_k), rows, row_of_b, (c, ldc), init);
}

/// [`gemm_tile_neon`] whose step `k` reads its sixteen columns of `b` at `b[base +
/// offsets[k]..]` instead of a packed panel (a convolution's patch row read straight from
/// the input band, where the panel's pixels are contiguous): the same sums without the
/// packing, one offset loaded per step. `kc` is `offsets`' length. The slices are checked
/// (a short one panics).
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
pub fn gemm_tile_neon_indirect(
    (a, a_row, a_k): (&[f32], usize, usize),
    rows: usize,
    b: &[f32],
    (offsets, base): (&RowOffsets<'_>, usize),
    c: &mut [f32],
    ldc: usize,
    init: Option<&[f32]>,
) {
    let kc = offsets.offsets.len();
    // (as a packed panel of one row, then the offsets' reach)
    check_tile_operands(
        kc,
        (a, a_row, a_k),
        rows,
        (&b[..GEMM_NR], 0),
        (c, ldc),
        init,
    );
    assert!(base + offsets.max + GEMM_NR <= b.len());
    let (bp, offs) = (b.as_ptr(), offsets.offsets);
    // SAFETY: every offset is at most `max`, and `b` holds `base + max + 16` floats
    // (asserted above)
    #[allow(unsafe_code)]
    let row_of_b = |k: usize| unsafe { bp.add(base + offs[k] as usize) };
    gemm_tile_neon_rows(kc, (a, a_row, a_k), rows, row_of_b, (c, ldc), init);
}

/// The loop of [`gemm_tile_neon`] and [`gemm_tile_neon_indirect`], on operands their
/// callers checked: step `k < kc` reads sixteen floats of `b` from `row_of_b(k)`.
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
#[inline(always)]
fn gemm_tile_neon_rows(
    kc: usize,
    (a, a_row, a_k): (&[f32], usize, usize),
    rows: usize,
    row_of_b: impl Fn(usize) -> *const f32,
    (c, ldc): (&mut [f32], usize),
    init: Option<&[f32]>,
) {
    use core::arch::aarch64::*;
    let starts: [*const f32; GEMM_MR] =
        core::array::from_fn(|i| a[i.min(rows - 1) * a_row..].as_ptr());
    #[allow(unsafe_code)]
    // SAFETY: NEON is enabled at compile time (this function's cfg). For k < kc the loads
    // read sixteen floats from `row_of_b(k)` and `a[i * a_row + k * a_k]` for i < rows
    // (rows past `rows` read row `rows - 1`), inside the slices as the callers asserted.
    let sums = unsafe {
        let mut acc = [[vdupq_n_f32(0.0); 4]; GEMM_MR];
        for k in 0..kc {
            let bk = row_of_b(k);
            let bv = [
                vld1q_f32(bk),
                vld1q_f32(bk.add(4)),
                vld1q_f32(bk.add(8)),
                vld1q_f32(bk.add(12)),
            ];
            for (sums, start) in acc.iter_mut().zip(starts) {
                let x = *start.add(k * a_k);
                for (sum, b) in sums.iter_mut().zip(bv) {
                    *sum = vfmaq_n_f32(*sum, b, x);
                }
            }
        }
        acc
    };
    for (i, vectors) in sums.iter().enumerate().take(rows) {
        let dst = &mut c[i * ldc..i * ldc + GEMM_NR];
        #[allow(unsafe_code)]
        // SAFETY: NEON is enabled at compile time; each access reads or writes four of
        // the sixteen floats of the checked slice `dst` (q < 4)
        unsafe {
            for (q, &sum) in vectors.iter().enumerate() {
                let at = dst.as_mut_ptr().add(4 * q);
                let start = match init {
                    Some(v) => vdupq_n_f32(v[i]),
                    None => vld1q_f32(at),
                };
                vst1q_f32(at, vaddq_f32(start, sum));
            }
        }
    }
}

/// Rows of the AVX-512 GEMM register tile ([`gemm_tile_avx512`]): sixteen rows of one
/// 16-float vector each are sixteen accumulators of the thirty-two zmm registers.
pub const GEMM_MR_AVX512: usize = 16;

/// Asks the cache for the lines of `data` (one prefetch per 64 bytes; a hint: nothing
/// is read, and off x86_64 nothing is done).
#[inline]
pub fn prefetch(data: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in data.chunks(16) {
        // SAFETY: SSE is part of x86_64; a prefetch reads nothing and cannot fault, and
        // the address is inside `data` anyway
        #[allow(unsafe_code)]
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T1 }>(
                line.as_ptr().cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

/// True when the AVX-512 register tile may run on this CPU (AVX-512F; asked at run time
/// with `std`, else fixed at compile time).
#[inline]
pub fn avx512() -> bool {
    #[cfg(test)]
    if FORCE_PORTABLE.get() || FORCE_AVX2.get() {
        return false;
    }
    #[cfg(all(target_arch = "x86_64", feature = "std"))]
    {
        std::is_x86_feature_detected!("avx512f") && avx2_fma()
    }
    #[cfg(not(all(target_arch = "x86_64", feature = "std")))]
    {
        cfg!(all(target_arch = "x86_64", target_feature = "avx512f")) && avx2_fma()
    }
}

/// [`gemm_tile_avx2`] on AVX-512F: up to [`GEMM_MR_AVX512`] rows (instead of six) by
/// [`GEMM_NR`] columns, one zmm accumulator per row. Per step along `k`: one vector load
/// of `b`, sixteen broadcasts of `a` folded into sixteen fused multiply-adds. Rows past
/// `rows` repeat the last row's loads and are not stored. The cache lines of `ahead` (the
/// next panel of `b`, or nothing) are asked for into L2 while the tile runs, spread over
/// its steps.
///
/// # Safety
///
/// The CPU must support AVX-512F. The slices are checked (a short one panics).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(unsafe_code, clippy::too_many_arguments)]
pub unsafe fn gemm_tile_avx512(
    kc: usize,
    a: (&[f32], usize, usize),
    rows: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    init: Option<&[f32]>,
    ahead: &[f32],
) {
    tile_avx512(kc, a, rows, (b, ldb), (c, ldc, GEMM_NR), init, ahead);
}

/// [`gemm_tile_avx512`] along a strip: the same rows of `a` against the `cols / 16`
/// whole panels of `b` side by side (panel `j` at `b[16 * j..]`, pitch `ldb`, read in
/// place), into `c[.., 16 * j..]`, in one call. A 1x1 convolution over few input
/// channels (mobilenet_v2's 16 -> 96 on 112x112: 16 steps per tile) spent a third of its
/// time in the calls, checks and operand set-up around each tile.
///
/// # Safety
///
/// The CPU must support AVX-512F. The slices are checked (a short one panics).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(unsafe_code)]
pub unsafe fn gemm_strip_avx512(
    kc: usize,
    a: (&[f32], usize, usize),
    rows: usize,
    (b, ldb): (&[f32], usize),
    (c, ldc, cols): (&mut [f32], usize, usize),
    init: Option<&[f32]>,
) {
    assert!(cols.is_multiple_of(GEMM_NR));
    for j in (0..cols).step_by(GEMM_NR) {
        tile_avx512(
            kc,
            a,
            rows,
            (&b[j..], ldb),
            (&mut c[j..], ldc, GEMM_NR),
            init,
            &[],
        );
    }
}

/// Rows of [`gemm_wide_avx512`]'s register tile: half of an interleaved 16-row tile.
#[cfg(target_arch = "x86_64")]
pub const WIDE_ROWS: usize = 8;

/// Packed panels of 16 columns [`gemm_wide_avx512`]'s register tile spans.
#[cfg(target_arch = "x86_64")]
pub const WIDE_PANELS: usize = 3;

/// An 8 x 48 register tile for large products: rows `a[k * 16 + r]` (`r` below 8: half of
/// an interleaved 16-row tile) by three panels `b[j][k * ldb + col]`, into
/// `c[r * ldc + 16 * j + col]` for the first `rows` rows: the sums over the `kc` steps
/// added to `init[r]`, or to `c` itself when `init` is `None`, as [`gemm_tile_avx512`]
/// does. Per step along `k`: three vector loads and eight broadcasts for 24 fused
/// multiply-adds (the 16 x 16 tile makes 17 loads for 16), so the multiply-adds, not the
/// loads, set its pace. The cache lines of `ahead` (the next panels' block, or nothing)
/// are asked for into L2 meanwhile, spread over the steps.
///
/// # Safety
///
/// The CPU must support AVX-512F. The slices are checked (a short one panics).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(unsafe_code)]
pub unsafe fn gemm_wide_avx512(
    kc: usize,
    a: &[f32],
    (b, ldb): ([&[f32]; WIDE_PANELS], usize),
    (c, ldc, rows): (&mut [f32], usize, usize),
    init: Option<&[f32]>,
    ahead: &[f32],
) {
    use core::arch::x86_64::*;
    assert!(kc > 0 && (1..=WIDE_ROWS).contains(&rows));
    assert!(a.len() >= (kc - 1) * GEMM_NR + WIDE_ROWS);
    assert!(b
        .iter()
        .all(|panel| panel.len() >= (kc - 1) * ldb + GEMM_NR));
    assert!(c.len() >= (rows - 1) * ldc + WIDE_PANELS * GEMM_NR);
    assert!(init.is_none_or(|v| v.len() >= rows));
    let mut sums = [[_mm512_setzero_ps(); WIDE_PANELS]; WIDE_ROWS];
    let c = c.as_mut_ptr();
    let (a, b) = (a.as_ptr(), b.map(|panel| panel.as_ptr()));
    // a line of `ahead` asked for every `every` steps
    let lines = ahead.len().div_ceil(16);
    let every = kc
        .checked_div(lines)
        .map_or(usize::MAX, |steps| steps.max(1));
    let mut line = 0;
    for k in 0..kc {
        if k % every == 0 && line < lines {
            // SAFETY: `line * 16 < ahead.len()`: inside `ahead`; a prefetch reads nothing
            // and cannot fault
            _mm_prefetch::<_MM_HINT_T1>(ahead.as_ptr().add(line * 16).cast());
            line += 1;
        }
        let mut columns = [_mm512_setzero_ps(); WIDE_PANELS];
        for (v, panel) in columns.iter_mut().zip(b) {
            // SAFETY: step `k < kc`: inside each panel (asserted)
            *v = _mm512_loadu_ps(panel.add(k * ldb));
        }
        for (r, row) in sums.iter_mut().enumerate() {
            // SAFETY: `k * 16 + r` with `r < 8`: inside `a` (asserted)
            let x = _mm512_set1_ps(*a.add(k * GEMM_NR + r));
            for (sum, v) in row.iter_mut().zip(&columns) {
                *sum = _mm512_fmadd_ps(x, *v, *sum);
            }
        }
    }
    for (r, row) in sums.iter().enumerate().take(rows) {
        for (j, sum) in row.iter().enumerate() {
            // SAFETY: row `r < rows`, columns below 48: inside `c` (asserted)
            let at = c.add(r * ldc + j * GEMM_NR);
            let start = init.map_or_else(|| _mm512_loadu_ps(at), |v| _mm512_set1_ps(v[r]));
            _mm512_storeu_ps(at, _mm512_add_ps(start, *sum));
        }
    }
}

/// A transposed convolution whose 2x2 kernel has stride 2 (no padding or dilation, each
/// output pixel reached by one tap: U-Nets' upsampling) on `R` output channels and `16 *
/// P` pixels of one input row (the first `cols`), its sums written straight to the output:
/// channel `r`'s tap `(ky, kx)` of input column `j` lands on `out[r * plane + ky * ow + 2 *
/// j + kx]`. `w[k * m + 4 * r + tap]` is the weight of input channel `k` (the layout
/// ONNX and PyTorch give it, read in place), `x[k * in_plane + j]` its pixel; each sum
/// starts from `bias[r]`. Per step along `k`: `P` vector loads of pixels and `4 * R`
/// broadcasts of weights for `4 * R * P` multiply-adds (3 and 2: 14 loads for 24); then
/// the two taps of each output row are interleaved in registers (`vpermt2ps`) and stored
/// once, where the GEMM-and-scatter path ([`crate::kernels::conv_transpose2d`]'s
/// portable one) stores its products, fills the output with the bias and adds each
/// product to it.
///
/// # Safety
///
/// The CPU must support AVX-512F. The slices are checked (a short one panics).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(unsafe_code)]
pub unsafe fn transpose2x2_avx512<const R: usize, const P: usize>(
    (w, m): (&[f32], usize),
    (x, in_plane): (&[f32], usize),
    depth: usize,
    bias: [f32; R],
    cols: usize,
    (out, ow, plane): (&mut [f32], usize, usize),
) {
    use core::arch::x86_64::*;
    assert!(depth > 0 && cols > 16 * (P - 1) && cols <= 16 * P && 4 * R <= m);
    assert!(w.len() >= (depth - 1) * m + 4 * R);
    assert!(x.len() >= (depth - 1) * in_plane + cols);
    assert!(out.len() >= (R - 1) * plane + ow + 2 * cols);
    let full = cols == 16 * P;
    let last = lanes_inside(0, cols - 16 * (P - 1), 16) as __mmask16;
    let mut sums = [[[_mm512_setzero_ps(); P]; 4]; R];
    for (sum, &b) in sums.iter_mut().zip(&bias) {
        *sum = [[_mm512_set1_ps(b); P]; 4];
    }
    let (w, x) = (w.as_ptr(), x.as_ptr());
    // SAFETY: every step is below `depth`: inside `w` and `x` (asserted); the last vector
    // of pixels is masked to `cols` unless full
    if full {
        transpose2x2_sums::<R, P, false>(&mut sums, depth, (w, m), (x, in_plane), last);
    } else {
        transpose2x2_sums::<R, P, true>(&mut sums, depth, (w, m), (x, in_plane), last);
    }
    let low = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    let high = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    let o = out.as_mut_ptr();
    for (r, taps) in sums.iter().enumerate() {
        for ky in 0..2 {
            let (left, right) = (&taps[2 * ky], &taps[2 * ky + 1]);
            for p in 0..P {
                let at = r * plane + ky * ow + 32 * p;
                let pairs = [
                    _mm512_permutex2var_ps(left[p], low, right[p]),
                    _mm512_permutex2var_ps(left[p], high, right[p]),
                ];
                // the outputs of this vector's pixels inside `cols` (all 32 unless last)
                let outputs = 2 * (cols - 16 * p).min(16);
                for (half, v) in pairs.into_iter().enumerate() {
                    let lanes = lanes_inside(16 * half as isize, outputs, 16) as __mmask16;
                    // SAFETY: output `at + 16 * half + l` for lane `l` of `lanes` is below
                    // `(R - 1) * plane + ow + 2 * cols`, inside `out` (asserted)
                    if lanes == 0xffff {
                        _mm512_storeu_ps(o.add(at + 16 * half), v);
                    } else if lanes != 0 {
                        _mm512_mask_storeu_ps(o.add(at + 16 * half), lanes, v);
                    }
                }
            }
        }
    }
}

/// The steps along `k` of [`transpose2x2_avx512`], added into `sums` (`[channel][tap]
/// [vector]`); the last vector of pixels loaded through `last` when `MASKED`.
///
/// # Safety
///
/// AVX-512F; steps `0..depth` inside `w` (`k * m + 4 * R`) and `x` (`k * in_plane + 16 *
/// P`, or the lanes of `last` in the last vector when `MASKED`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
#[allow(unsafe_code)]
unsafe fn transpose2x2_sums<const R: usize, const P: usize, const MASKED: bool>(
    sums: &mut [[[core::arch::x86_64::__m512; P]; 4]; R],
    depth: usize,
    (w, m): (*const f32, usize),
    (x, in_plane): (*const f32, usize),
    last: core::arch::x86_64::__mmask16,
) {
    use core::arch::x86_64::*;
    for k in 0..depth {
        let mut pixels = [_mm512_setzero_ps(); P];
        for (p, v) in pixels.iter_mut().enumerate() {
            // SAFETY: inside `x` (the caller's contract)
            let at = x.add(k * in_plane + 16 * p);
            *v = if MASKED && p == P - 1 {
                _mm512_maskz_loadu_ps(last, at)
            } else {
                _mm512_loadu_ps(at)
            };
        }
        for (r, taps) in sums.iter_mut().enumerate() {
            for (tap, row) in taps.iter_mut().enumerate() {
                // SAFETY: inside `w` (the caller's contract)
                let weight = _mm512_set1_ps(*w.add(k * m + 4 * r + tap));
                for (s, v) in row.iter_mut().zip(&pixels) {
                    *s = _mm512_fmadd_ps(weight, *v, *s);
                }
            }
        }
    }
}

/// Output channels by pixels, the other way round from [`gemm_tile_avx512`]: `T`
/// interleaved weight tiles (16 output channels each, `tiles[t][k * 16 + i]` is channel
/// `16 * t + i` at step `k`) against `P` pixels (`b[k * ldb + p]`), one accumulator per
/// tile and pixel holding its 16 channels. Per step along `k`: `T` vector loads of
/// weights and `P` broadcasts of inputs for `T * P` multiply-adds (4 and 7: 11 loads for
/// 28, where the 16 x 16 tile makes 17 for 16). The product runs the whole `depth`, in
/// blocks of `block` steps whose sums add up one after another onto `start` (16 floats
/// per tile: a bias or zeros), as the 16 x 16 tile's blocks do, so the bits are the same;
/// then each of the `16 * T` channels goes to `c[(16 * t + i) * ldc + p]`. The cache lines
/// of `ahead` (the next tiles, or nothing) are asked for into L2 meanwhile, spread over
/// the steps. For maps of up to 64 pixels (7x7), whose 16-column panels leave a last one
/// of 1 to 15 columns.
///
/// # Safety
///
/// The CPU must support AVX-512F. The slices are checked (a short one panics).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(unsafe_code)]
pub unsafe fn gemm_channels_avx512<const T: usize, const P: usize>(
    (depth, block): (usize, usize),
    tiles: [&[f32]; T],
    (b, ldb): (&[f32], usize),
    start: &[f32],
    (c, ldc): (&mut [f32], usize),
    ahead: &[f32],
) {
    use core::arch::x86_64::*;
    assert!(depth > 0 && block > 0 && start.len() >= 16 * T);
    assert!(tiles.iter().all(|t| t.len() >= depth * 16));
    assert!(b.len() >= (depth - 1) * ldb + P);
    assert!(c.len() >= (16 * T - 1) * ldc + P);
    let mut totals = [[_mm512_setzero_ps(); P]; T];
    for (t, row) in totals.iter_mut().enumerate() {
        // SAFETY: `start` holds `16 * T` floats (asserted)
        let first = _mm512_loadu_ps(start.as_ptr().add(16 * t));
        *row = [first; P];
    }
    let tiles = tiles.map(|t| t.as_ptr());
    // the cache lines of `ahead` asked for one every `every` steps (as the 16 x 16 tile
    // does)
    let lines = ahead.len().div_ceil(16);
    let every = depth
        .checked_div(lines)
        .map_or(usize::MAX, |steps| steps.max(1));
    let mut line = 0;
    for k0 in (0..depth).step_by(block) {
        let end = depth.min(k0 + block);
        let mut sums = [[_mm512_setzero_ps(); P]; T];
        let mut k = k0;
        while k < end {
            let run = k..end.min(k.saturating_add(every));
            k = run.end;
            // SAFETY: every step is below `depth`: inside each tile and `b` (asserted)
            channel_sums_avx512::<T, P>(&mut sums, run, tiles, (b.as_ptr(), ldb));
            if line < lines {
                // SAFETY: `line * 16 < ahead.len()`: inside `ahead`; a prefetch reads
                // nothing and cannot fault
                _mm_prefetch::<_MM_HINT_T1>(ahead.as_ptr().add(line * 16).cast());
                line += 1;
            }
        }
        for (total, sum) in totals.iter_mut().zip(&sums) {
            for (t, s) in total.iter_mut().zip(sum) {
                *t = _mm512_add_ps(*t, *s);
            }
        }
    }
    let mut lanes = [0.0f32; 16];
    for (t, total) in totals.iter().enumerate() {
        for (p, v) in total.iter().enumerate() {
            // SAFETY: `lanes` holds 16 floats
            _mm512_storeu_ps(lanes.as_mut_ptr(), *v);
            for (i, &value) in lanes.iter().enumerate() {
                c[(16 * t + i) * ldc + p] = value;
            }
        }
    }
}

/// Steps `steps` of [`gemm_channels_avx512`] added into `sums`.
///
/// # Safety
///
/// AVX-512F; every step inside each tile (`k * 16 + 16` floats) and `b` (`k * ldb + P`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
#[allow(unsafe_code)]
unsafe fn channel_sums_avx512<const T: usize, const P: usize>(
    sums: &mut [[core::arch::x86_64::__m512; P]; T],
    steps: core::ops::Range<usize>,
    tiles: [*const f32; T],
    (b, ldb): (*const f32, usize),
) {
    use core::arch::x86_64::*;
    for k in steps {
        let mut weights = [_mm512_setzero_ps(); T];
        for (w, tile) in weights.iter_mut().zip(tiles) {
            // SAFETY: inside the tile (the caller's contract)
            *w = _mm512_loadu_ps(tile.add(k * 16));
        }
        for p in 0..P {
            // SAFETY: inside `b` (the caller's contract)
            let x = _mm512_set1_ps(*b.add(k * ldb + p));
            for (row, w) in sums.iter_mut().zip(&weights) {
                row[p] = _mm512_fmadd_ps(*w, x, row[p]);
            }
        }
    }
}

/// [`gemm_tile_avx512`] storing only the first `cols` (at most [`GEMM_NR`]) columns of
/// each row, through masked loads and stores: the last panel of a product whose width is
/// not a multiple of 16 (a 14x14 or 7x7 map), with no buffer to clear and copy. `b` must
/// still hold 16 readable columns per row (a packed panel, zero-padded). Panels of up to
/// [`EDGE_COLUMNS_MAX`] columns over an interleaved tile of `a` run by columns instead
/// ([`edge_columns_avx512`]): the same sums, bit for bit, in `cols` multiply-adds per
/// step instead of 16.
///
/// # Safety
///
/// The CPU must support AVX-512F. The slices are checked (a short one panics).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(unsafe_code, clippy::too_many_arguments)]
pub unsafe fn gemm_edge_tile_avx512(
    kc: usize,
    a: (&[f32], usize, usize),
    rows: usize,
    b: &[f32],
    ldb: usize,
    (c, ldc, cols): (&mut [f32], usize, usize),
    init: Option<&[f32]>,
) {
    let (a_all, a_row, a_k) = a;
    let interleaved = a_row == 1 && a_k == GEMM_MR_AVX512 && a_all.len() >= kc * GEMM_MR_AVX512;
    if interleaved && kc > 0 && (1..=GEMM_MR_AVX512).contains(&rows) {
        let (a, b) = (&a_all[..kc * GEMM_MR_AVX512], (b, ldb));
        let out = (&mut *c, ldc, rows);
        match cols {
            1 => return edge_columns_avx512::<1>(kc, a, b, out, init),
            2 => return edge_columns_avx512::<2>(kc, a, b, out, init),
            3 => return edge_columns_avx512::<3>(kc, a, b, out, init),
            4 => return edge_columns_avx512::<4>(kc, a, b, out, init),
            5 => return edge_columns_avx512::<5>(kc, a, b, out, init),
            6 => return edge_columns_avx512::<6>(kc, a, b, out, init),
            7 => return edge_columns_avx512::<7>(kc, a, b, out, init),
            EDGE_COLUMNS_MAX => {
                return edge_columns_avx512::<EDGE_COLUMNS_MAX>(kc, a, b, out, init)
            }
            _ => {}
        }
    }
    tile_avx512(kc, a, rows, (b, ldb), (c, ldc, cols), init, &[]);
}

/// Widest edge panel [`gemm_edge_tile_avx512`] runs by columns.
const EDGE_COLUMNS_MAX: usize = 8;

/// The first `rows` rows of the `COLS` columns of an edge panel, by columns: one
/// accumulator per column holds its 16 rows, and each step along `k` loads the 16 rows of
/// the interleaved `a` once and multiplies them by each column's `b[k * ldb + p]`. Each
/// sum is the fused multiply-adds of [`gemm_tile_avx512`] in the same order from zero,
/// so the bits are the same; then `init` (or what `c` holds) is added and the values go
/// to `c[i * ldc + p]` through the stack.
///
/// # Safety
///
/// The CPU must support AVX-512F; `a` holds `kc` steps of 16 floats, `b` holds
/// `(kc - 1) * ldb + COLS` floats, `c` and `init` hold `rows` rows (checked: a short
/// slice panics).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
#[allow(unsafe_code)]
unsafe fn edge_columns_avx512<const COLS: usize>(
    kc: usize,
    a: &[f32],
    (b, ldb): (&[f32], usize),
    (c, ldc, rows): (&mut [f32], usize, usize),
    init: Option<&[f32]>,
) {
    use core::arch::x86_64::*;
    assert!(kc > 0 && a.len() >= kc * GEMM_MR_AVX512 && b.len() >= (kc - 1) * ldb + COLS);
    assert!(c.len() >= (rows - 1) * ldc + COLS && init.is_none_or(|v| v.len() >= rows));
    let mut sums = [_mm512_setzero_ps(); COLS];
    for (k, ak) in a.chunks_exact(GEMM_MR_AVX512).take(kc).enumerate() {
        // SAFETY: `ak` holds 16 floats
        let ak = _mm512_loadu_ps(ak.as_ptr());
        let bk = &b[k * ldb..k * ldb + COLS];
        for (sum, &bv) in sums.iter_mut().zip(bk) {
            *sum = _mm512_fmadd_ps(ak, _mm512_set1_ps(bv), *sum);
        }
    }
    let mut column = [0.0f32; GEMM_MR_AVX512];
    for (p, sum) in sums.iter().enumerate() {
        // SAFETY: `column` holds 16 floats
        _mm512_storeu_ps(column.as_mut_ptr(), *sum);
        for (i, &v) in column.iter().enumerate().take(rows) {
            let slot = &mut c[i * ldc + p];
            *slot = init.map_or(*slot, |start| start[i]) + v;
        }
    }
}

/// The body of [`gemm_tile_avx512`] and [`gemm_edge_tile_avx512`]: the tile stores the
/// first `cols` columns of each row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
#[allow(unsafe_code)]
unsafe fn tile_avx512(
    kc: usize,
    (a, a_row, a_k): (&[f32], usize, usize),
    rows: usize,
    (b, ldb): (&[f32], usize),
    (c, ldc, cols): (&mut [f32], usize, usize),
    init: Option<&[f32]>,
    ahead: &[f32],
) {
    use core::arch::x86_64::*;
    assert!((1..=GEMM_MR_AVX512).contains(&rows) && kc > 0);
    assert!((1..=GEMM_NR).contains(&cols));
    assert!(a.len() > (rows - 1) * a_row + (kc - 1) * a_k);
    assert!(b.len() >= (kc - 1) * ldb + GEMM_NR);
    assert!(c.len() >= (rows - 1) * ldc + cols);
    assert!(init.is_none_or(|s| s.len() >= rows));
    let bp = b.as_ptr();
    if rows <= FEW_ROWS {
        prefetch(ahead);
        // SAFETY: the operands as asserted above
        let sums = few_rows_sums_avx512(kc, (a.as_ptr(), a_row, a_k), rows, (bp, ldb));
        store_tile_avx512(&sums, rows, (c, ldc, cols), init);
        return;
    }
    if a_row == 1 && a_k == GEMM_MR_AVX512 && a.len() >= kc * GEMM_MR_AVX512 {
        // SAFETY: the interleaved tile holds `kc` steps of 16 floats (just checked), `b`
        // holds `kc` rows (asserted above)
        let sums = interleaved_sums_avx512(kc, a.as_ptr(), bp, ldb, ahead);
        store_tile_avx512(&sums, rows, (c, ldc, cols), init);
        return;
    }
    prefetch(ahead);
    let row = |i: usize| a.as_ptr().add(i.min(rows - 1) * a_row);
    let (r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11, r12, r13, r14, r15) = (
        row(0),
        row(1),
        row(2),
        row(3),
        row(4),
        row(5),
        row(6),
        row(7),
        row(8),
        row(9),
        row(10),
        row(11),
        row(12),
        row(13),
        row(14),
        row(15),
    );
    let z = _mm512_setzero_ps();
    let (
        mut c0,
        mut c1,
        mut c2,
        mut c3,
        mut c4,
        mut c5,
        mut c6,
        mut c7,
        mut c8,
        mut c9,
        mut c10,
        mut c11,
        mut c12,
        mut c13,
        mut c14,
        mut c15,
    ) = (z, z, z, z, z, z, z, z, z, z, z, z, z, z, z, z);
    for k in 0..kc {
        // SAFETY: k < kc, so `b[k * ldb .. k * ldb + 16]` and `a[i * a_row + k * a_k]`
        // for i < rows are inside the slices (asserted above).
        let (bk, ak) = (_mm512_loadu_ps(bp.add(k * ldb)), k * a_k);
        c0 = _mm512_fmadd_ps(_mm512_set1_ps(*r0.add(ak)), bk, c0);
        c1 = _mm512_fmadd_ps(_mm512_set1_ps(*r1.add(ak)), bk, c1);
        c2 = _mm512_fmadd_ps(_mm512_set1_ps(*r2.add(ak)), bk, c2);
        c3 = _mm512_fmadd_ps(_mm512_set1_ps(*r3.add(ak)), bk, c3);
        c4 = _mm512_fmadd_ps(_mm512_set1_ps(*r4.add(ak)), bk, c4);
        c5 = _mm512_fmadd_ps(_mm512_set1_ps(*r5.add(ak)), bk, c5);
        c6 = _mm512_fmadd_ps(_mm512_set1_ps(*r6.add(ak)), bk, c6);
        c7 = _mm512_fmadd_ps(_mm512_set1_ps(*r7.add(ak)), bk, c7);
        c8 = _mm512_fmadd_ps(_mm512_set1_ps(*r8.add(ak)), bk, c8);
        c9 = _mm512_fmadd_ps(_mm512_set1_ps(*r9.add(ak)), bk, c9);
        c10 = _mm512_fmadd_ps(_mm512_set1_ps(*r10.add(ak)), bk, c10);
        c11 = _mm512_fmadd_ps(_mm512_set1_ps(*r11.add(ak)), bk, c11);
        c12 = _mm512_fmadd_ps(_mm512_set1_ps(*r12.add(ak)), bk, c12);
        c13 = _mm512_fmadd_ps(_mm512_set1_ps(*r13.add(ak)), bk, c13);
        c14 = _mm512_fmadd_ps(_mm512_set1_ps(*r14.add(ak)), bk, c14);
        c15 = _mm512_fmadd_ps(_mm512_set1_ps(*r15.add(ak)), bk, c15);
    }
    let sums = [
        c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15,
    ];
    store_tile_avx512(&sums, rows, (c, ldc, cols), init);
}

/// Rows up to which an AVX-512 tile sums [`FEW_ROWS`] rows instead of sixteen
/// ([`few_rows_sums_avx512`]).
const FEW_ROWS: usize = 8;

/// The sums of a tile of at most [`FEW_ROWS`] rows (row `i`, step `k` of `a` at `a[i *
/// a_row + k * a_k]`; rows past `rows` repeat the last one): eight multiply-adds per step
/// where the sixteen-row form spends sixteen whatever the rows (mobilenet_v2's 24-channel
/// projections ran a 16-row and a 16-row tile for 24 channels).
///
/// # Safety
///
/// AVX-512F; every row `i < rows` holds `kc` steps and `b` holds `(kc - 1) * ldb + 16`
/// floats (the caller's checks).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
#[allow(unsafe_code)]
unsafe fn few_rows_sums_avx512(
    kc: usize,
    (a, a_row, a_k): (*const f32, usize, usize),
    rows: usize,
    (b, ldb): (*const f32, usize),
) -> [core::arch::x86_64::__m512; FEW_ROWS] {
    use core::arch::x86_64::*;
    let row: [*const f32; FEW_ROWS] = core::array::from_fn(|i| a.add(i.min(rows - 1) * a_row));
    let mut sums = [_mm512_setzero_ps(); FEW_ROWS];
    for k in 0..kc {
        // SAFETY: k < kc: inside `b` and every row (the caller's contract)
        let (bk, ak) = (_mm512_loadu_ps(b.add(k * ldb)), k * a_k);
        for (sum, r) in sums.iter_mut().zip(row) {
            *sum = _mm512_fmadd_ps(_mm512_set1_ps(*r.add(ak)), bk, *sum);
        }
    }
    sums
}

/// The sums of [`gemm_tile_avx512`] over an interleaved tile (`a[k * 16 + i]` is row `i`
/// at step `k`): the sixteen broadcasts of a step read one cache line at constant offsets
/// from one pointer, so the loop keeps no row pointers (the strided form needs sixteen,
/// more than the general registers, and reloads some from the stack at every step).
///
/// # Safety
///
/// AVX-512F; `a` must hold `kc * 16` floats and `b` must hold `(kc - 1) * ldb + 16`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
#[allow(unsafe_code)]
unsafe fn interleaved_sums_avx512(
    kc: usize,
    a: *const f32,
    b: *const f32,
    ldb: usize,
    ahead: &[f32],
) -> [core::arch::x86_64::__m512; GEMM_MR_AVX512] {
    use core::arch::x86_64::*;
    // the cache lines of `ahead` asked for one every `every` steps, not all at once: a
    // burst of prefetches that miss fills the core's miss buffers and stalls the tile
    // (bert6: 6% of its time on the prefetch instructions)
    let lines = ahead.len().div_ceil(16);
    let every = kc
        .checked_div(lines)
        .map_or(usize::MAX, |steps| steps.max(1));
    let mut sums = [_mm512_setzero_ps(); GEMM_MR_AVX512];
    if lines == 0 {
        interleaved_steps(&mut sums, 0..kc, a, (b, ldb));
        return sums;
    }
    let (mut k0, mut line) = (0, 0);
    while k0 < kc {
        // a run of steps, then one line asked for (none left: the rest of the steps)
        let k1 = if line < lines { kc.min(k0 + every) } else { kc };
        interleaved_steps(&mut sums, k0..k1, a, (b, ldb));
        if line < lines {
            // SAFETY: `line * 16 < ahead.len()`: inside `ahead`; a prefetch reads nothing
            // and cannot fault
            _mm_prefetch::<_MM_HINT_T1>(ahead.as_ptr().add(line * 16).cast());
            line += 1;
        }
        k0 = k1;
    }
    if line < lines {
        prefetch(&ahead[line * 16..]);
    }
    sums
}

/// Steps `steps` of [`interleaved_sums_avx512`] into `sums`.
///
/// # Safety
///
/// AVX-512F; every step inside both operands (the caller's contract).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
#[allow(unsafe_code)]
unsafe fn interleaved_steps(
    sums: &mut [core::arch::x86_64::__m512; GEMM_MR_AVX512],
    steps: core::ops::Range<usize>,
    a: *const f32,
    (b, ldb): (*const f32, usize),
) {
    use core::arch::x86_64::*;
    for k in steps {
        // SAFETY: a step of the caller's range: inside both operands
        let (bk, ak) = (_mm512_loadu_ps(b.add(k * ldb)), a.add(k * GEMM_MR_AVX512));
        for (i, sum) in sums.iter_mut().enumerate() {
            *sum = _mm512_fmadd_ps(_mm512_set1_ps(*ak.add(i)), bk, *sum);
        }
    }
}

/// Stores the first `rows` sums of an AVX-512 tile as [`gemm_tile_avx512`] says, the
/// first `cols` columns of each, through masked loads and stores (all 16 lanes for a
/// whole tile: the same cost as plain ones).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
#[allow(unsafe_code)]
unsafe fn store_tile_avx512(
    sums: &[core::arch::x86_64::__m512],
    rows: usize,
    (c, ldc, cols): (&mut [f32], usize, usize),
    init: Option<&[f32]>,
) {
    use core::arch::x86_64::*;
    let cols = cols.min(GEMM_NR);
    let mask = (u32::MAX >> (32 - cols)) as u16;
    // (by reference: `into_iter` on the array copied its 1 KiB with memcpy per tile)
    for (i, &sum) in sums.iter().enumerate().take(rows) {
        let dst = &mut c[i * ldc..i * ldc + cols];
        let start = match init {
            Some(v) => _mm512_set1_ps(v[i]),
            // SAFETY: the mask enables the `cols` floats of the checked slice `dst`
            None => _mm512_maskz_loadu_ps(mask, dst.as_ptr()),
        };
        // SAFETY: as above, `cols` floats
        _mm512_mask_storeu_ps(dst.as_mut_ptr(), mask, _mm512_add_ps(start, sum));
    }
}

/// Sixteen rows of `a` (row `i` at `a[i * lda..]`, `kc` floats each) as one interleaved
/// tile: `out[k * 16 + i] = a[i * lda + k]` for `k < kc` (each of those `16 * kc`
/// floats written, so `out` may start uninitialized). Blocks of sixteen columns go
/// through a 16 x 16 transpose in zmm registers (sixteen loads, sixty-four shuffles and
/// sixteen stores, where the scalar copy makes 256 loads and stores); the last `kc % 16`
/// columns are copied one by one.
///
/// # Safety
///
/// The CPU must support AVX-512F. The slices are checked (a short one panics).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(unsafe_code)]
pub unsafe fn pack_tile_avx512(
    (a, lda): (&[f32], usize),
    kc: usize,
    out: &mut [core::mem::MaybeUninit<f32>],
) {
    use core::arch::x86_64::*;
    const R: usize = GEMM_MR_AVX512;
    assert!(kc > 0 && a.len() >= (R - 1) * lda + kc && out.len() >= kc * R);
    let full = kc / R * R;
    for k0 in (0..full).step_by(R) {
        // SAFETY: row i < 16 reads a[i * lda + k0..][..16], inside `a` since k0 + 16 <=
        // kc (asserted above)
        let rows: [__m512; R] =
            core::array::from_fn(|i| _mm512_loadu_ps(a.as_ptr().add(i * lda + k0)));
        // within each 128-bit lane: pairs of rows, then quadruples (row 4g + r at
        // column 4L + q in lane L of quads[q][g])
        let mut quads = [[_mm512_setzero_ps(); 4]; 4];
        for (g, four) in rows.chunks_exact(4).enumerate() {
            let (lo01, hi01) = (
                _mm512_unpacklo_ps(four[0], four[1]),
                _mm512_unpackhi_ps(four[0], four[1]),
            );
            let (lo23, hi23) = (
                _mm512_unpacklo_ps(four[2], four[3]),
                _mm512_unpackhi_ps(four[2], four[3]),
            );
            quads[0][g] = _mm512_shuffle_ps::<0x44>(lo01, lo23);
            quads[1][g] = _mm512_shuffle_ps::<0xEE>(lo01, lo23);
            quads[2][g] = _mm512_shuffle_ps::<0x44>(hi01, hi23);
            quads[3][g] = _mm512_shuffle_ps::<0xEE>(hi01, hi23);
        }
        // across lanes: column 4L + q gathers lane L of quads[q][0..4]
        for (q, [g0, g1, g2, g3]) in quads.into_iter().enumerate() {
            let even01 = _mm512_shuffle_f32x4::<0x88>(g0, g1);
            let odd01 = _mm512_shuffle_f32x4::<0xDD>(g0, g1);
            let even23 = _mm512_shuffle_f32x4::<0x88>(g2, g3);
            let odd23 = _mm512_shuffle_f32x4::<0xDD>(g2, g3);
            let columns = [
                (0, _mm512_shuffle_f32x4::<0x88>(even01, even23)),
                (1, _mm512_shuffle_f32x4::<0x88>(odd01, odd23)),
                (2, _mm512_shuffle_f32x4::<0xDD>(even01, even23)),
                (3, _mm512_shuffle_f32x4::<0xDD>(odd01, odd23)),
            ];
            for (lane, column) in columns {
                let at = (k0 + 4 * lane + q) * R;
                let dst = &mut out[at..at + R];
                // SAFETY: `dst` holds exactly 16 floats (a checked slice of that length)
                _mm512_storeu_ps(dst.as_mut_ptr().cast(), column);
            }
        }
    }
    for k in full..kc {
        for (i, slot) in out[k * R..(k + 1) * R].iter_mut().enumerate() {
            slot.write(a[i * lda + k]);
        }
    }
}

/// The Winograd convolution's work on a block of output channels for tiles of `T`
/// outputs a side (`kernels::winograd::winograd_channels`) compiled for AVX-512F: its
/// transforms run sixteen tiles per zmm vector.
///
/// # Safety
///
/// The CPU must support AVX-512F, AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(unsafe_code)]
pub unsafe fn winograd_channels_avx512<const T: usize>(
    operands: crate::kernels::WinogradOperands<'_>,
    part: crate::kernels::WinogradPart,
    out: &mut [f32],
    g: &crate::kernels::Conv2dGeom,
) {
    crate::kernels::winograd_channels::<T>((true, true), operands, part, out, g);
}

/// [`winograd_channels_avx512`] for AVX2 and FMA (eight tiles per ymm vector).
///
/// # Safety
///
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(unsafe_code)]
pub unsafe fn winograd_channels_avx2<const T: usize>(
    operands: crate::kernels::WinogradOperands<'_>,
    part: crate::kernels::WinogradPart,
    out: &mut [f32],
    g: &crate::kernels::Conv2dGeom,
) {
    crate::kernels::winograd_channels::<T>((true, false), operands, part, out, g);
}

/// Lane indices `(2 * (t - first) + odd) mod 32` for lanes `t` of a zmm vector: where
/// tile `t` of a run starting at lane `first` finds its column in the two 16-float
/// windows of an input row (even columns, or odd).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
#[allow(unsafe_code)]
unsafe fn run_columns(first: usize, odd: i32) -> core::arch::x86_64::__m512i {
    use core::arch::x86_64::*;
    let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let shifted = _mm512_sub_epi32(lanes, _mm512_set1_epi32(first as i32));
    let columns = _mm512_add_epi32(_mm512_slli_epi32::<1>(shifted), _mm512_set1_epi32(odd));
    _mm512_and_si512(columns, _mm512_set1_epi32(31))
}

/// The lanes `lo..hi` among `offset..offset + 16`, as a mask.
fn window_mask(offset: usize, (lo, hi): (usize, usize)) -> u16 {
    (0..16)
        .filter(|l| (lo..hi).contains(&(offset + l)))
        .fold(0, |mask, l| mask | 1 << l)
}

/// The Winograd convolution's input transform
/// (`kernels::winograd::transform_inputs`, same contract) on AVX-512F: per input channel
/// and run of tiles, each of the tiles' four input rows is read as four masked windows of
/// sixteen columns (from the run's first column and two further; columns outside the
/// image are masked to zero and never read), whose even and odd columns two-source
/// permutes spread over the run's lanes; `B^T d B` is then sixteen vectors of adds.
///
/// # Safety
///
/// The CPU must support AVX-512F. The slices are checked (a short one panics); the
/// masked loads read only columns and rows inside the input plane.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(unsafe_code)]
pub unsafe fn winograd_inputs_avx512(
    x: &[f32],
    g: &crate::kernels::Conv2dGeom,
    runs: &[crate::kernels::WinogradRun],
    (ic0, depth): (usize, usize),
    v: &mut [f32],
) {
    use core::arch::x86_64::*;
    const P: usize = crate::kernels::winograd_points(2);
    let plane = g.h * g.w;
    assert!(runs.len() <= GEMM_NR && x.len() >= (ic0 + depth) * plane);
    assert!(v.len() >= P * depth * GEMM_NR);
    // per run: its lanes, the permute indices, the four windows' masks, where its line
    // starts (input column of line column 0, maybe -pad) and its first input row
    let mut plans = [(0u16, [_mm512_setzero_si512(); 2], [0u16; 4], 0isize, 0usize); GEMM_NR];
    for (plan, run) in plans.iter_mut().zip(runs) {
        assert!(run.len >= 1 && run.first + run.len <= GEMM_NR);
        let (oy, ox) = run.corner;
        let width = 2 * run.len + 2;
        // line columns j whose input column ox + j - pad_left exists
        let lo = g.pad_left.saturating_sub(ox).min(width);
        let hi = (g.w + g.pad_left).saturating_sub(ox).clamp(lo, width);
        let lanes = (((1u32 << run.len) - 1) << run.first) as u16;
        let index = [run_columns(run.first, 0), run_columns(run.first, 1)];
        let masks = [0, 16, 2, 18].map(|offset| window_mask(offset, (lo, hi)));
        *plan = (lanes, index, masks, ox as isize - g.pad_left as isize, oy);
    }
    let plans = &plans[..runs.len()];
    for ic in 0..depth {
        let input = x.as_ptr().add((ic0 + ic) * plane);
        let mut d = [_mm512_setzero_ps(); P];
        for &(lanes, [even, odd], masks, column, oy) in plans {
            for r in 0..4 {
                let Some(iy) = (oy + r).checked_sub(g.pad_top).filter(|&iy| iy < g.h) else {
                    continue;
                };
                let line = input.add(iy * g.w).wrapping_offset(column);
                // SAFETY: lane l of the window at `offset` reads line column offset + l,
                // and its mask holds exactly the columns inside the row (an input row of
                // the plane, asserted inside `x` above)
                let [a0, a1, b0, b1] = [0, 16, 2, 18]
                    .map(|offset| line.wrapping_add(offset))
                    .into_iter()
                    .zip(masks)
                    .map(|(at, mask)| _mm512_maskz_loadu_ps(mask, at))
                    .collect::<ArrayOf4>()
                    .0;
                let spread = [(a0, even, a1), (a0, odd, a1), (b0, even, b1), (b0, odd, b1)];
                for (c, (lo, index, hi)) in spread.into_iter().enumerate() {
                    let columns = _mm512_permutex2var_ps(lo, index, hi);
                    d[r * 4 + c] = _mm512_mask_mov_ps(d[r * 4 + c], lanes, columns);
                }
            }
        }
        // B^T d B, B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]: rows, then columns
        let mut rows = [_mm512_setzero_ps(); P];
        for c in 0..4 {
            let [d0, d1, d2, d3] = [d[c], d[4 + c], d[8 + c], d[12 + c]];
            rows[c] = _mm512_sub_ps(d0, d2);
            rows[4 + c] = _mm512_add_ps(d1, d2);
            rows[8 + c] = _mm512_sub_ps(d2, d1);
            rows[12 + c] = _mm512_sub_ps(d1, d3);
        }
        for (r, [s0, s1, s2, s3]) in rows
            .chunks_exact(4)
            .map(|s| [s[0], s[1], s[2], s[3]])
            .enumerate()
        {
            let values = [
                _mm512_sub_ps(s0, s2),
                _mm512_add_ps(s1, s2),
                _mm512_sub_ps(s2, s1),
                _mm512_sub_ps(s1, s3),
            ];
            for (c, value) in values.into_iter().enumerate() {
                let at = ((r * 4 + c) * depth + ic) * GEMM_NR;
                let dst = &mut v[at..at + GEMM_NR];
                // SAFETY: `dst` holds exactly 16 floats (a checked slice of that length)
                _mm512_storeu_ps(dst.as_mut_ptr(), value);
            }
        }
    }
}

/// F(4x4, 3x3)'s input columns for sixteen tiles: from a run's input line (`line = (plane,
/// at, (lo, hi))`: line column `j` is `plane[at + j]`, for `lo <= j < hi` only, the others
/// zeros; tile `t`'s columns are `4 t..4 t + 6`), column `c < 6` of every tile into lanes
/// `first..first + 16` of `d[r * 6 + c]`. The line is read straight from the plane by
/// masked loads (through a copy, the loads waited on its stores), then per column two
/// two-source permutes (tiles 0-7 from the line's first 32 floats, 8-15 from the next 32;
/// columns 4 and 5 from the line read 4 floats on) and a blend.
///
/// # Safety
///
/// The CPU must support AVX-512F; the columns `lo..hi` from `at` lie inside `plane`
/// (checked: a violation panics), and `hi <= 68`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
#[allow(unsafe_code)]
pub unsafe fn winograd4_columns_avx512(
    (plane, at, (lo, hi)): (&[f32], isize, (usize, usize)),
    d: &mut [[f32; 2 * GEMM_NR]; 36],
    (r, first): (usize, usize),
) {
    use core::arch::x86_64::*;
    assert!(hi <= 68);
    assert!(lo >= hi || (at + lo as isize >= 0 && at + hi as isize <= plane.len() as isize));
    let line = plane.as_ptr().wrapping_offset(at);
    // the lanes of the 16 columns from `offset` that lie in `lo..hi`
    let window = |offset: usize| {
        let below = |n: usize| if n >= 16 { u16::MAX } else { (1u16 << n) - 1 };
        below(hi.saturating_sub(offset)) & !below(lo.saturating_sub(offset))
    };
    // SAFETY: each load reads only the lanes of its mask, columns inside `lo..hi`, which
    // lie in `plane` (asserted above); masked lanes are not accessed
    let load = |offset: usize| _mm512_maskz_loadu_ps(window(offset), line.wrapping_add(offset));
    let (v, w) = ([0, 16, 32, 48].map(load), [4, 20, 36, 52].map(load));
    let four = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
    for c in 0..6 {
        let a = if c < 4 { &v } else { &w };
        let index = _mm512_add_epi32(four, _mm512_set1_epi32((c % 4) as i32));
        let low = _mm512_permutex2var_ps(a[0], index, a[1]);
        let high = _mm512_permutex2var_ps(a[2], index, a[3]);
        let columns = _mm512_mask_blend_ps(0xFF00, low, high);
        let dst = &mut d[r * 6 + c][first..first + GEMM_NR];
        // SAFETY: `dst` holds exactly 16 floats (a checked slice of that length)
        _mm512_storeu_ps(dst.as_mut_ptr(), columns);
    }
}

/// `dst[i] = src[2 * i]` for every `i < dst.len()` on NEON: four at a time by `ld2` (one
/// load of eight floats, the even ones in one register) while eight lie in `src`, then
/// one by one. Panics when `src` is shorter than `2 * dst.len() - 1`.
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
pub fn gather_even_neon(dst: &mut [f32], src: &[f32]) {
    use core::arch::aarch64::*;
    let n = dst.len();
    assert!(
        n == 0 || src.len() > 2 * (n - 1),
        "gather_even_neon: past the source"
    );
    // the runs of four whose eight floats lie in `src`
    let quads = (n / 4).min(src.len() / 8);
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    for q in 0..quads {
        #[allow(unsafe_code)]
        // SAFETY: NEON is enabled at compile time; the load reads `src[8 q..8 q + 8]`
        // (`8 q + 8 <= 8 * quads <= src.len()`), the store writes `dst[4 q..4 q + 4]`
        // (`4 q + 4 <= 4 * quads <= n`)
        unsafe {
            vst1q_f32(d.add(4 * q), vld2q_f32(s.add(8 * q)).0)
        };
    }
    for i in 4 * quads..n {
        dst[i] = src[2 * i];
    }
}

/// `out[oy * ow + ox] = start + sum over taps t of weights[t] * phases[tap_at[t] + oy *
/// pitch + ox]` for the rows of `ow` outputs that make up `out` (a depthwise kernel of any
/// size on NEON; one row, `ow == out.len()`, for a run of outputs). Per row, fused
/// multiply-adds in tap order, 32 outputs at a time in eight registers and the rest of the
/// row in one to eight more, its last one to three lanes included where every tap may
/// read four floats there (else they are copied into a vector of four). 3x3 kernels have
/// their nine taps unrolled, weights and offsets in registers: a loop over the taps loads
/// both and branches per tap, on rows of a few vectors as much work as the multiply-adds.
/// Panics when a tap would read past `phases`, the taps and weights differ in number, or
/// `out` is not whole rows.
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
pub fn depthwise_rows_neon(
    phases: &[f32],
    weights: &[f32],
    tap_at: &[usize],
    start: f32,
    out: &mut [f32],
    ow: usize,
    pitch: usize,
) {
    if out.is_empty() {
        return;
    }
    let rows = out.len() / ow.max(1);
    assert!(
        rows * ow == out.len(),
        "depthwise_rows_neon: not whole rows"
    );
    // how far past its offset a tap reads: all rows, and the last row rounded up to four
    let reach = (rows - 1) * pitch + ow;
    assert!(
        weights.len() == tap_at.len() && tap_at.iter().all(|&at| at + reach <= phases.len()),
        "depthwise_rows_neon: a tap reads past the phases"
    );
    let last_reach = reach - ow + ow.next_multiple_of(4);
    let room = tap_at.iter().all(|&at| at + last_reach <= phases.len());
    if let (Ok(w9), Ok(at9)) = (
        <&[f32; 9]>::try_from(weights),
        <&[usize; 9]>::try_from(tap_at),
    ) {
        depthwise_rows_neon_here(phases, *w9, *at9, start, out, ow, pitch, room);
    } else {
        depthwise_rows_neon_here(phases, weights, tap_at, start, out, ow, pitch, room);
    }
}

/// [`depthwise_rows_neon`] once its operands are checked (`room`: every tap may read its
/// last row rounded up to four outputs), inlined into each call so that a fixed number
/// of taps unrolls (`weights` and `tap_at` by value: arrays stay in registers).
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn depthwise_rows_neon_here(
    phases: &[f32],
    weights: impl AsRef<[f32]>,
    tap_at: impl AsRef<[usize]>,
    start: f32,
    out: &mut [f32],
    ow: usize,
    pitch: usize,
    room: bool,
) {
    use core::arch::aarch64::*;
    let (weights, tap_at) = (weights.as_ref(), tap_at.as_ref());
    let reach = (out.len() / ow - 1) * pitch + ow;
    for (oy, row) in out.chunks_exact_mut(ow).enumerate() {
        let first = oy * pitch;
        // a row's last one to three sums come from one more vector read in place where
        // every tap may read four (all rows but the last, and the last with `room`)
        let in_place = room || first + ow.next_multiple_of(4) <= reach;
        let vectors = if in_place { ow.div_ceil(4) } else { ow / 4 };
        let (mut i, mut left) = (0, vectors);
        #[allow(unsafe_code)]
        // SAFETY: the calls' vectors start below `4 * vectors`, inside the row, and every
        // tap reads below `at + first + 4 * vectors`: at most `at + reach` (asserted by
        // `depthwise_rows_neon`) when `4 * vectors <= ow`, else, `in_place`, at most the
        // last row's reach rounded up to four (inside with `room`) or at most `at +
        // reach` (the condition above)
        unsafe {
            let (w, at) = (weights, tap_at);
            while left > 8 {
                depthwise_vectors_neon::<8>(phases, w, at, start, row, first, i);
                (i, left) = (i + 32, left - 8);
            }
            match left {
                1 => depthwise_vectors_neon::<1>(phases, w, at, start, row, first, i),
                2 => depthwise_vectors_neon::<2>(phases, w, at, start, row, first, i),
                3 => depthwise_vectors_neon::<3>(phases, w, at, start, row, first, i),
                4 => depthwise_vectors_neon::<4>(phases, w, at, start, row, first, i),
                5 => depthwise_vectors_neon::<5>(phases, w, at, start, row, first, i),
                6 => depthwise_vectors_neon::<6>(phases, w, at, start, row, first, i),
                7 => depthwise_vectors_neon::<7>(phases, w, at, start, row, first, i),
                8 => depthwise_vectors_neon::<8>(phases, w, at, start, row, first, i),
                _ => {}
            }
        }
        let done = 4 * vectors;
        if done >= ow {
            continue;
        }
        // the last row without room: each tap's last one to three values copied into a
        // vector of four
        let n = ow - done;
        let mut sums = [start; 4];
        for (&wv, &at) in weights.iter().zip(tap_at) {
            let mut values = [0.0f32; 4];
            values[..n].copy_from_slice(&phases[at + first + done..at + first + ow]);
            #[allow(unsafe_code)]
            // SAFETY: NEON is enabled at compile time; the arrays hold four floats
            unsafe {
                let acc = vld1q_f32(sums.as_ptr());
                let sum = vfmaq_n_f32(acc, vld1q_f32(values.as_ptr()), wv);
                vst1q_f32(sums.as_mut_ptr(), sum);
            }
        }
        row[done..].copy_from_slice(&sums[..n]);
    }
}

/// `N` vectors of [`depthwise_rows_neon`]'s sums from `row[i]` on, each tap reading from
/// `phases[at + first + i..]`, all summed in registers (the taps' loads at fixed offsets
/// from one address per tap); the last vector keeps only the lanes inside `row`.
///
/// # Safety
///
/// `i + 4 (N - 1) < row.len()`, and `at + first + i + 4 N <= phases.len()` for every
/// `at` of `tap_at` (checked once by the caller for all rows, not per vector).
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
#[inline(always)]
#[allow(unsafe_code, clippy::too_many_arguments)]
unsafe fn depthwise_vectors_neon<const N: usize>(
    phases: &[f32],
    weights: &[f32],
    tap_at: &[usize],
    start: f32,
    row: &mut [f32],
    first: usize,
    i: usize,
) {
    use core::arch::aarch64::*;
    debug_assert!(i + 4 * (N - 1) < row.len());
    debug_assert!(tap_at
        .iter()
        .all(|&at| at + first + i + 4 * N <= phases.len()));
    let (p, o) = (phases.as_ptr().wrapping_add(first + i), row.as_mut_ptr());
    // SAFETY: NEON is enabled at compile time. Every load reads `phases[at + first + i + 4
    // j..][..4]` with `j < N`, inside `phases`; every store writes `row[i + 4 j..][..4]`
    // for `j < N - 1` and for the last when it lies in `row`, inside `row` (this
    // function's contract), else four floats of `last`.
    unsafe {
        let mut acc = [vdupq_n_f32(start); N];
        for (&wv, &at) in weights.iter().zip(tap_at) {
            let src = p.add(at);
            for (j, a) in acc.iter_mut().enumerate() {
                *a = vfmaq_n_f32(*a, vld1q_f32(src.add(4 * j)), wv);
            }
        }
        for (j, a) in acc.iter().enumerate().take(N - 1) {
            vst1q_f32(o.add(i + 4 * j), *a);
        }
        let at = i + 4 * (N - 1);
        if at + 4 <= row.len() {
            vst1q_f32(o.add(at), acc[N - 1]);
        } else {
            let mut last = [0.0f32; 4];
            vst1q_f32(last.as_mut_ptr(), acc[N - 1]);
            let n = row.len() - at;
            row[at..].copy_from_slice(&last[..n]);
        }
    }
}

/// [`crate::kernels::matvec_panels_here`]'s contract on NEON: `out[j] = x @ column j`
/// of the panels (`panels[p * k * 16 + kk * 16 + j % 16]` for output `j = 16 p + ..`),
/// each output summed in the same fixed order whatever the panel (four partial sums by
/// `kk % 4`, added as `(s0 + s1) + (s2 + s3)`), so any split of the panels gives the same
/// bits. Per four values of `x`: one load of them, sixteen of the panel, sixteen fused
/// multiply-adds by lane (the portable loop: a broadcast, four loads, four `fmul` and
/// four `fadd` per value). Panics when `panels` is shorter than `out` needs.
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
pub fn matvec_panels_neon(x: &[f32], panels: &[f32], out: &mut [f32], k: usize) {
    use core::arch::aarch64::*;
    let x = &x[..k];
    assert!(k > 0 && panels.len() >= out.len().div_ceil(GEMM_NR) * k * GEMM_NR);
    let (quads, rest) = x.as_chunks::<4>();
    for (outs, panel) in out
        .chunks_mut(GEMM_NR)
        .zip(panels.chunks_exact(k * GEMM_NR))
    {
        let (rows, _) = panel.as_chunks::<GEMM_NR>();
        let (rows, tail_rows) = rows.split_at(4 * quads.len());
        let mut sums = [0.0f32; GEMM_NR];
        #[allow(unsafe_code)]
        // SAFETY: NEON is enabled at compile time; every load reads four floats of an
        // array of four (`xs`) or sixteen (a panel row), every store four of `sums`
        unsafe {
            // acc[q][kk % 4]: columns 4q..4q + 4, the partial sum of `kk % 4`
            let mut acc = [[vdupq_n_f32(0.0); 4]; 4];
            for (xs, [r0, r1, r2, r3]) in quads.iter().zip(rows.as_chunks::<4>().0) {
                let xv = vld1q_f32(xs.as_ptr());
                for (q, [a0, a1, a2, a3]) in acc.iter_mut().enumerate() {
                    let w = |row: &[f32; GEMM_NR]| vld1q_f32(row.as_ptr().add(4 * q));
                    *a0 = vfmaq_laneq_f32::<0>(*a0, w(r0), xv);
                    *a1 = vfmaq_laneq_f32::<1>(*a1, w(r1), xv);
                    *a2 = vfmaq_laneq_f32::<2>(*a2, w(r2), xv);
                    *a3 = vfmaq_laneq_f32::<3>(*a3, w(r3), xv);
                }
            }
            // the last `k % 4` values, into the partial sums of their `kk % 4`
            for ((lane, &xv), row) in rest.iter().enumerate().zip(tail_rows) {
                for (q, a) in acc.iter_mut().enumerate() {
                    a[lane] = vfmaq_n_f32(a[lane], vld1q_f32(row.as_ptr().add(4 * q)), xv);
                }
            }
            for (q, [a0, a1, a2, a3]) in acc.iter().enumerate() {
                let total = vaddq_f32(vaddq_f32(*a0, *a1), vaddq_f32(*a2, *a3));
                vst1q_f32(sums.as_mut_ptr().add(4 * q), total);
            }
        }
        let n = outs.len();
        outs.copy_from_slice(&sums[..n]);
    }
}

/// [`gelu_row_avx512`] on NEON: `row[i] = gelu(row[i] + bias[i])` by the same rational
/// form and constants (`crate::math::GELU_P`, `GELU_Q`, with fused multiply-adds and a
/// division), four lanes at a time, the last one to three through a vector of four. The
/// portable `math::gelu` takes an erf with an exponential and a division: about three
/// times the instructions. A bias shorter than the row panics.
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
pub fn gelu_row_neon(row: &mut [f32], bias: Option<&[f32]>) {
    use crate::math::{GELU_CLAMP, GELU_P, GELU_Q};
    use core::arch::aarch64::*;
    assert!(bias.is_none_or(|b| b.len() >= row.len()));
    // SAFETY (every block below): NEON is enabled at compile time
    #[allow(unsafe_code)]
    let gelu = |v: float32x4_t| unsafe {
        // (NaN clamps to a number here and reaches the result through `v`)
        let xc = vmaxnmq_f32(
            vminnmq_f32(v, vdupq_n_f32(GELU_CLAMP)),
            vdupq_n_f32(-GELU_CLAMP),
        );
        let s = vmulq_f32(xc, xc);
        let mut p = vdupq_n_f32(GELU_P[6]);
        for &c in GELU_P[..6].iter().rev() {
            p = vfmaq_f32(vdupq_n_f32(c), p, s);
        }
        let mut q = vdupq_n_f32(GELU_Q[4]);
        for &c in GELU_Q[..4].iter().rev() {
            q = vfmaq_f32(vdupq_n_f32(c), q, s);
        }
        let w = vmulq_f32(xc, vdivq_f32(p, q));
        vfmaq_f32(vmulq_f32(vdupq_n_f32(0.5), v), v, w)
    };
    let len = row.len();
    let (quads, rest) = row.as_chunks_mut::<4>();
    for (i, quad) in quads.iter_mut().enumerate() {
        #[allow(unsafe_code)]
        // SAFETY: the loads and the store cover the four floats of `quad`, and of the
        // bias from `4 i` (asserted at least as long as the row)
        unsafe {
            let mut v = vld1q_f32(quad.as_ptr());
            if let Some(b) = bias {
                v = vaddq_f32(v, vld1q_f32(b[4 * i..4 * i + 4].as_ptr()));
            }
            vst1q_f32(quad.as_mut_ptr(), gelu(v));
        }
    }
    if !rest.is_empty() {
        let n = rest.len();
        let mut values = [0.0f32; 4];
        values[..n].copy_from_slice(rest);
        if let Some(b) = bias {
            for (v, &b) in values.iter_mut().zip(&b[len - n..len]) {
                *v += b;
            }
        }
        #[allow(unsafe_code)]
        // SAFETY: the load and the store cover the array of four
        unsafe {
            vst1q_f32(values.as_mut_ptr(), gelu(vld1q_f32(values.as_ptr())));
        }
        rest.copy_from_slice(&values[..n]);
    }
}

/// F(4x4)'s input line split by column phase on NEON: `phases[q][j] = line[4 j + q]`, the
/// sixteen tiles' columns `q` (and the seventeenth's, which the next tile shares) by four
/// de-interleaving loads (`ld4`) and sixteen stores instead of 68 single moves.
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
pub fn winograd4_phases_neon(
    line: &[f32; 4 * (GEMM_NR + 1)],
    phases: &mut [[f32; GEMM_NR + 1]; 4],
) {
    use core::arch::aarch64::*;
    for j in (0..GEMM_NR).step_by(4) {
        #[allow(unsafe_code)]
        // SAFETY: NEON is enabled at compile time; the load reads `line[4 j..4 j + 16]`
        // and each store `phases[q][j..j + 4]`, with `j + 4 <= GEMM_NR`, inside the arrays
        unsafe {
            let v = vld4q_f32(line.as_ptr().add(4 * j));
            vst1q_f32(phases[0].as_mut_ptr().add(j), v.0);
            vst1q_f32(phases[1].as_mut_ptr().add(j), v.1);
            vst1q_f32(phases[2].as_mut_ptr().add(j), v.2);
            vst1q_f32(phases[3].as_mut_ptr().add(j), v.3);
        }
    }
    for (q, phase) in phases.iter_mut().enumerate() {
        phase[GEMM_NR] = line[4 * GEMM_NR + q];
    }
}

/// [`winograd4_row_avx512`]'s contract on NEON: F(4x4, 3x3)'s output row `r` (of 4) of
/// the run of tiles from lane `first`, `y[r * 4 + c][t]` going to pixel `4 (t - first) +
/// c` of `dst` as `start + value` (without `start`, what `dst` holds plus the value; the
/// same single addition as the portable loop, so the same bits). Four tiles at a time:
/// four vector loads, one from each column's row of `y`, and one interleaving store
/// (`st4`) of their sixteen pixels (with the pixels before them read by the
/// de-interleaving `ld4` when accumulating); the last tiles of a short row one by one.
/// `dst` holds at most the run's pixels (`4 * (16 - first)`); a longer one panics.
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
pub fn winograd4_row_neon(
    y: &[[f32; GEMM_NR]; 16],
    (r, first): (usize, usize),
    dst: &mut [f32],
    start: Option<f32>,
) {
    use core::arch::aarch64::*;
    assert!(first < GEMM_NR && dst.len() <= 4 * (GEMM_NR - first));
    let columns = [&y[r * 4], &y[r * 4 + 1], &y[r * 4 + 2], &y[r * 4 + 3]];
    let mut tile = first;
    let mut chunks = dst.chunks_exact_mut(16);
    for chunk in &mut chunks {
        // (whole chunks of sixteen pixels are four tiles below lane 16, as asserted)
        let [c0, c1, c2, c3] = columns.map(|column| &column[tile..tile + 4]);
        #[allow(unsafe_code)]
        // SAFETY: NEON is enabled at compile time; each load reads the four floats of a
        // checked slice of four, `ld4` and `st4` the sixteen of the checked `chunk`
        unsafe {
            let base = match start {
                Some(v) => float32x4x4_t(
                    vdupq_n_f32(v),
                    vdupq_n_f32(v),
                    vdupq_n_f32(v),
                    vdupq_n_f32(v),
                ),
                None => vld4q_f32(chunk.as_ptr()),
            };
            let pixels = float32x4x4_t(
                vaddq_f32(base.0, vld1q_f32(c0.as_ptr())),
                vaddq_f32(base.1, vld1q_f32(c1.as_ptr())),
                vaddq_f32(base.2, vld1q_f32(c2.as_ptr())),
                vaddq_f32(base.3, vld1q_f32(c3.as_ptr())),
            );
            vst4q_f32(chunk.as_mut_ptr(), pixels);
        }
        tile += 4;
    }
    for (i, slot) in chunks.into_remainder().iter_mut().enumerate() {
        let value = columns[i % 4][tile + i / 4];
        *slot = start.unwrap_or(*slot) + value;
    }
}

/// F(4x4, 3x3)'s output row `r` (of 4) of the run of tiles from lane `first`: `y[r * 4 +
/// c][t]` is column `c` of tile `t`; `dst` (at most 64 floats) receives pixel `4 (t -
/// first) + c` as `start + value`, or, without `start`, what it holds plus the value.
/// The four columns rotate to lane 0, interleave by pairs, then by fours (two-source
/// permutes), and go out sixteen pixels at a time.
///
/// # Safety
///
/// The CPU must support AVX-512F. The slices are checked (a short one panics).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
#[allow(unsafe_code)]
pub unsafe fn winograd4_row_avx512(
    y: &[[f32; GEMM_NR]; 16],
    (r, first): (usize, usize),
    dst: &mut [f32],
    start: Option<f32>,
) {
    use core::arch::x86_64::*;
    assert!(dst.len() <= 64 && first < GEMM_NR);
    let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let rotate = _mm512_and_si512(
        _mm512_add_epi32(lanes, _mm512_set1_epi32(first as i32)),
        _mm512_set1_epi32(15),
    );
    // SAFETY: each row of `y` holds exactly 16 floats
    let [y0, y1, y2, y3] =
        [0, 1, 2, 3].map(|c| _mm512_permutexvar_ps(rotate, _mm512_loadu_ps(y[r * 4 + c].as_ptr())));
    let pairs_low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let pairs_high =
        _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let (a01, b01) = (
        _mm512_permutex2var_ps(y0, pairs_low, y1),
        _mm512_permutex2var_ps(y0, pairs_high, y1),
    );
    let (a23, b23) = (
        _mm512_permutex2var_ps(y2, pairs_low, y3),
        _mm512_permutex2var_ps(y2, pairs_high, y3),
    );
    let fours_low = _mm512_setr_epi32(0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23);
    let fours_high =
        _mm512_setr_epi32(8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31);
    let pixels = [
        _mm512_permutex2var_ps(a01, fours_low, a23),
        _mm512_permutex2var_ps(a01, fours_high, a23),
        _mm512_permutex2var_ps(b01, fours_low, b23),
        _mm512_permutex2var_ps(b01, fours_high, b23),
    ];
    for (chunk, values) in dst.chunks_mut(GEMM_NR).zip(pixels) {
        let n = chunk.len();
        let mask = ((1u32 << n) - 1) as u16;
        let at = chunk.as_mut_ptr();
        // SAFETY: the mask covers the `n` floats of `chunk` (plain stores when whole: a
        // masked one does not forward to later loads)
        let base = match start {
            Some(v) => _mm512_set1_ps(v),
            None => _mm512_maskz_loadu_ps(mask, at),
        };
        let sum = _mm512_add_ps(base, values);
        if n == GEMM_NR {
            _mm512_storeu_ps(at, sum);
        } else {
            _mm512_mask_storeu_ps(at, mask, sum);
        }
    }
}

/// Four vectors collected from an iterator (the windows of [`winograd_inputs_avx512`]).
#[cfg(target_arch = "x86_64")]
struct ArrayOf4([core::arch::x86_64::__m512; 4]);

#[cfg(target_arch = "x86_64")]
impl FromIterator<core::arch::x86_64::__m512> for ArrayOf4 {
    fn from_iter<I: IntoIterator<Item = core::arch::x86_64::__m512>>(iter: I) -> ArrayOf4 {
        // SAFETY: an all-zero bit pattern is a valid vector
        #[allow(unsafe_code)]
        let mut out = ArrayOf4(unsafe { core::mem::zeroed() });
        for (slot, v) in out.0.iter_mut().zip(iter) {
            *slot = v;
        }
        out
    }
}

/// The Winograd convolution's output transform
/// (`kernels::winograd::transform_outputs`, same contract: `m[(p * 16 + i) * 16 + t]`;
/// `out` holds the planes of `count` output channels, each the pixels from `first_pixel`
/// on, `count` being `init.len()`, or without `init` at most 16) on AVX-512F: per output channel, `A^T M A` in vectors of sixteen
/// tiles, then per run and output row the two columns of each tile interleaved by
/// two-source permutes into two masked stores of sixteen pixels.
///
/// # Safety
///
/// The CPU must support AVX-512F. The slices are checked (a short one panics).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(unsafe_code)]
pub unsafe fn winograd_outputs_avx512(
    m: &[f32],
    runs: &[crate::kernels::WinogradRun],
    init: Option<&[f32]>,
    (out, first_pixel): (&mut [f32], usize),
    count: usize,
    g: &crate::kernels::Conv2dGeom,
) {
    use core::arch::x86_64::*;
    const P: usize = crate::kernels::winograd_points(2);
    let plane_len = out.len() / count.max(1);
    assert!(m.len() >= P * GEMM_MR_AVX512 * GEMM_NR && count <= GEMM_MR_AVX512);
    assert!(init.is_none_or(|v| v.len() >= count));
    // per run: the permutes interleaving its tiles' two columns (first 8 tiles, next 8)
    // and how many output columns it has
    let lanes = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let mut plans = [([_mm512_setzero_si512(); 2], 0usize); GEMM_NR];
    for (plan, run) in plans.iter_mut().zip(runs) {
        let first = _mm512_set1_epi32(run.first as i32);
        let low = _mm512_and_si512(_mm512_add_epi32(lanes, first), _mm512_set1_epi32(31));
        let high = _mm512_and_si512(
            _mm512_add_epi32(low, _mm512_set1_epi32(8)),
            _mm512_set1_epi32(31),
        );
        let columns = (2 * run.len).min(g.ow.saturating_sub(run.corner.1));
        *plan = ([low, high], columns);
    }
    for (i, plane) in out.chunks_exact_mut(plane_len).enumerate().take(count) {
        let at = |p: usize| {
            let sums = &m[(p * GEMM_MR_AVX512 + i) * GEMM_NR..][..GEMM_NR];
            // SAFETY: `sums` holds exactly 16 floats (a checked slice of that length)
            _mm512_loadu_ps(sums.as_ptr())
        };
        // A^T = [1 1 1 0; 0 1 -1 -1]: rows, then columns
        let mut rows = [_mm512_setzero_ps(); 8];
        for c in 0..4 {
            let [m0, m1, m2, m3] = [at(c), at(4 + c), at(8 + c), at(12 + c)];
            rows[c] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
            rows[4 + c] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
        }
        let y: [[__m512; 2]; 2] = core::array::from_fn(|r| {
            let [s0, s1, s2, s3] = [
                rows[4 * r],
                rows[4 * r + 1],
                rows[4 * r + 2],
                rows[4 * r + 3],
            ];
            [
                _mm512_add_ps(_mm512_add_ps(s0, s1), s2),
                _mm512_sub_ps(_mm512_sub_ps(s1, s2), s3),
            ]
        });
        let start = init.map(|v| _mm512_set1_ps(v[i]));
        for (run, &([low, high], columns)) in runs.iter().zip(&plans) {
            let (oy, ox) = run.corner;
            for (r, [left, right]) in y.iter().enumerate() {
                let py = oy + r;
                if py >= g.oh || columns == 0 {
                    continue;
                }
                let at = py * g.ow + ox - first_pixel;
                let row = &mut plane[at..at + columns];
                for (half, index) in [low, high].into_iter().enumerate() {
                    let n = columns.saturating_sub(16 * half).min(16);
                    if n == 0 {
                        continue;
                    }
                    let mask = ((1u32 << n) - 1) as u16;
                    let dst = row[16 * half..16 * half + n].as_mut_ptr();
                    let values = _mm512_permutex2var_ps(*left, index, *right);
                    // SAFETY: the mask covers the `n` floats of the checked slice `dst`
                    // points into
                    let base = start.unwrap_or_else(|| _mm512_maskz_loadu_ps(mask, dst));
                    _mm512_mask_storeu_ps(dst, mask, _mm512_add_ps(base, values));
                }
            }
        }
    }
}

/// `crate::kernels::depthwise_rows` compiled for AVX2 and FMA, so its row loops
/// vectorize eight wide (the same code as the portable path).
///
/// # Safety
///
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(unsafe_code)]
pub unsafe fn depthwise_conv2d_avx2(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    g: &crate::kernels::Conv2dGeom,
    epi: &(impl Fn(usize, &mut [f32]) + Sync),
) {
    crate::kernels::depthwise_rows(x, w, bias, out, g, epi, true);
}

/// `wide[i] = start + sum over the 9 taps t of weights[t] * phases[tap_at[t] + i]` (a
/// 3x3 depthwise kernel), fused multiply-adds in tap order: 32 outputs at a time in four
/// registers with the nine weights in nine more, then 8 and fewer (masked loads and
/// stores, nothing read or written past the runs).
///
/// # Safety
///
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
#[allow(unsafe_code)]
pub unsafe fn depthwise_taps9_avx2(
    phases: &[f32],
    weights: &[f32; 9],
    tap_at: &[usize; 9],
    start: f32,
    wide: &mut [f32],
) {
    use core::arch::x86_64::*;
    let len = wide.len();
    assert!(
        tap_at.iter().all(|&at| at + len <= phases.len()),
        "depthwise_taps9_avx2: a tap reads past the phases"
    );
    let (p, o) = (phases.as_ptr(), wide.as_mut_ptr());
    let mut w = [_mm256_setzero_ps(); 9];
    for (wv, &v) in w.iter_mut().zip(weights) {
        *wv = _mm256_set1_ps(v);
    }
    let s0 = _mm256_set1_ps(start);
    let mut i = 0;
    while i + 32 <= len {
        let mut acc = [s0; 4];
        for (wt, &at) in w.iter().zip(tap_at) {
            for (j, a) in acc.iter_mut().enumerate() {
                // SAFETY: at + i + 8 * j + 8 <= at + len <= phases.len() (asserted)
                *a = _mm256_fmadd_ps(*wt, _mm256_loadu_ps(p.add(at + i + 8 * j)), *a);
            }
        }
        for (j, a) in acc.iter().enumerate() {
            // SAFETY: i + 8 * j + 8 <= len
            _mm256_storeu_ps(o.add(i + 8 * j), *a);
        }
        i += 32;
    }
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    while i < len {
        let n = (len - i).min(8);
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lanes);
        let mut acc = s0;
        for (wt, &at) in w.iter().zip(tap_at) {
            // SAFETY: the first n lanes: at + i + n <= at + len <= phases.len()
            acc = _mm256_fmadd_ps(*wt, _mm256_maskload_ps(p.add(at + i), mask), acc);
        }
        // SAFETY: the first n lanes: i + n <= len
        _mm256_maskstore_ps(o.add(i), mask, acc);
        i += n;
    }
}

/// Outputs per channel up to which [`depthwise_flat_avx512`] takes a depthwise
/// convolution: a 64 x 64 map, 256 vectors (mobilenet_v2's dw 192@28 0.097-0.101 ->
/// 0.078-0.096 ms alone; its 144@56 inside the model 0.279-0.293 -> 0.256-0.258 ms,
/// `bench --blocks`, two rounds of three alternated, where alone the row kernel was a
/// little ahead, 0.22 against 0.23 ms).
pub const DEPTHWISE_FLAT_MAX: usize = 4096;

/// True when [`depthwise_flat_avx512`] takes `g`: stride and dilation 1, a 3x3, 5x5 or
/// 7x7 kernel, the output as large as the input (padding `(k - 1) / 2` each side, as
/// mobilenet's), at most [`DEPTHWISE_FLAT_MAX`] outputs per channel.
pub fn depthwise_flat_fits(g: &crate::kernels::Conv2dGeom) -> bool {
    let plane = g.oh * g.ow;
    (g.stride_h, g.stride_w, g.dilation_h, g.dilation_w) == (1, 1, 1, 1)
        && matches!((g.kh, g.kw), (3, 3) | (5, 5) | (7, 7))
        && (g.oh, g.ow) == (g.h, g.w)
        && g.pad_top < g.kh
        && g.pad_left < g.kw
        && (1..=DEPTHWISE_FLAT_MAX).contains(&plane)
}

/// A depthwise convolution of small maps (stride 1, the output the input's size) on
/// AVX-512F with each channel's map as one flat run: output `o` reads, for tap `(ky,
/// kx)`, input `o + (ky - pad_top) * w + (kx - pad_left)`, inside the map where that
/// tap's mask (the same for every channel, made once per call) says so. Per channel,
/// `ceil(oh * ow / 16)` vectors of `KH * KW` masked loads and multiply-adds each, then
/// the row epilogue over the channel's map. Against [`depthwise_conv2d_avx512`], which
/// gives each output row its own vector (7 of 16 lanes busy on a 7x7 map, with a row's
/// setup each), mobilenet_v2's dw 960@7 0.059 -> 0.025 ms, 576@14 0.066 -> 0.050 ms
/// (`conv_classes`, three runs).
///
/// # Safety
///
/// The CPU must support AVX-512F and FMA; `g` must pass [`depthwise_flat_fits`] with
/// `g.kh == KH`, `g.kw == KW`. The slices are checked (a short one panics).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(unsafe_code)]
pub unsafe fn depthwise_flat_avx512<const KH: usize, const KW: usize>(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    g: &crate::kernels::Conv2dGeom,
    epi: &(impl Fn(usize, &mut [f32]) + Sync),
) {
    use core::arch::x86_64::*;
    const VECTORS: usize = DEPTHWISE_FLAT_MAX / 16;
    const TAPS: usize = 49;
    let (plane, taps) = (g.oh * g.ow, KH * KW);
    assert!(depthwise_flat_fits(g) && (g.kh, g.kw) == (KH, KW));
    check_depthwise_operands(x, w, bias, out, g);
    let vectors = plane.div_ceil(16);
    // per vector and tap `(ky, kx)`, the lanes whose input lies inside the map (4.5 KiB
    // for 3x3 kernels, cleared per call); per tap, its offset
    let mut masks = [[[0u16; KW]; KH]; VECTORS];
    let mut offsets = [0isize; TAPS];
    for (t, offset) in offsets.iter_mut().enumerate().take(taps) {
        let (ky, kx) = ((t / KW) as isize, (t % KW) as isize);
        let (dy, dx) = (ky - g.pad_top as isize, kx - g.pad_left as isize);
        *offset = dy * g.w as isize + dx;
        // the output rows whose input row is inside, and in each the columns whose input
        // column is (a division per pixel and tap here was 15% of a 56x56 map's time)
        let (y0, y1) = crate::kernels::valid_range(g.oh, g.h, 1, g.pad_top, ky as usize);
        let (x0, x1) = crate::kernels::valid_range(g.ow, g.w, 1, g.pad_left, kx as usize);
        for oy in y0..y1 {
            // the run's bits, a vector's sixteen at a time
            let (mut o, end) = (oy * g.ow + x0, oy * g.ow + x1);
            while o < end {
                let (lo, hi) = (o % 16, (o % 16 + end - o).min(16));
                let bits = (u32::MAX >> (32 - hi)) & !((1u32 << lo) - 1);
                masks[o / 16][ky as usize][kx as usize] |= bits as u16;
                o += hi - lo;
            }
        }
    }
    let last = if plane % 16 == 0 {
        u16::MAX
    } else {
        (1u16 << (plane % 16)) - 1
    };
    for image_channel in 0..g.n * g.c_out {
        let c = image_channel % g.c_out;
        let xp = x[image_channel * plane..(image_channel + 1) * plane].as_ptr();
        let op = &mut out[image_channel * plane..(image_channel + 1) * plane];
        let start = _mm512_set1_ps(bias.map_or(0.0, |b| b[c]));
        let mut weights = [_mm512_setzero_ps(); TAPS];
        for (wt, &v) in weights.iter_mut().zip(&w[c * taps..(c + 1) * taps]) {
            *wt = _mm512_set1_ps(v);
        }
        for (v, tap_masks) in masks.iter().enumerate().take(vectors) {
            let mut acc = start;
            for t in 0..taps {
                // SAFETY: the mask enables only lanes whose input, `16 * v + lane +
                // offsets[t]`, lies inside the channel's map (`plane` floats from `xp`,
                // a checked slice); masked-off lanes are not read (the address may
                // start before the map: `wrapping_offset`)
                let at = xp.wrapping_offset(16 * v as isize + offsets[t]);
                let mask = tap_masks[t / KW][t % KW];
                acc = _mm512_fmadd_ps(weights[t], _mm512_maskz_loadu_ps(mask, at), acc);
            }
            let keep = if v + 1 == vectors { last } else { u16::MAX };
            // SAFETY: the mask enables the outputs of this vector inside `op` (`plane`
            // floats: the last vector's first `plane % 16`)
            _mm512_mask_storeu_ps(op.as_mut_ptr().add(16 * v), keep, acc);
        }
        // SAFETY: AVX-512F, AVX2 and FMA (this function's contract)
        each_row_avx512(op, g.ow, image_channel * plane, epi);
    }
}

/// The checks of the AVX-512 depthwise kernels: one input channel per output channel, and
/// operands as long as `g` says (a short one panics).
#[cfg(target_arch = "x86_64")]
fn check_depthwise_operands(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &[f32],
    g: &crate::kernels::Conv2dGeom,
) {
    let (plane, in_plane, taps) = (g.oh * g.ow, g.h * g.w, g.kh * g.kw);
    assert!(g.c_in == g.c_out && g.groups == g.c_out);
    assert!(x.len() >= g.n * g.c_in * in_plane && out.len() >= g.n * g.c_out * plane);
    assert!(w.len() >= g.c_out * taps && bias.is_none_or(|b| b.len() >= g.c_out));
}

/// Jobs (16 outputs each) whose sums [`depthwise_conv2d_avx512`] keeps in registers at
/// once: four chains of fused multiply-adds in flight.
const DEPTHWISE_JOBS: usize = 4;

/// The lanes (bit `l` for column `at + l`, `l < lanes`, at most 32) of a run of `lanes`
/// columns from `at` that lie inside a row of `len` columns.
#[cfg(target_arch = "x86_64")]
fn lanes_inside(at: isize, len: usize, lanes: usize) -> u32 {
    let lo = (-at).clamp(0, lanes as isize) as u32;
    let hi = (len as isize - at).clamp(0, lanes as isize) as u32;
    let below = |n: u32| (u64::MAX >> (64 - n.max(1))) as u32 * u32::from(n > 0);
    below(hi) & !below(lo)
}

/// True when [`depthwise_conv2d_avx512`] takes `g`: horizontal stride 1 or 2, a 3x3, 5x5
/// or 7x7 kernel without horizontal dilation (any vertical stride, dilation and
/// padding), input and output rows of up to [`DEPTHWISE_MAX_W`] columns.
#[cfg(target_arch = "x86_64")]
pub fn depthwise_avx512_fits(g: &crate::kernels::Conv2dGeom) -> bool {
    (1..=2).contains(&g.stride_w)
        && g.dilation_w == 1
        && g.stride_h > 0
        && matches!((g.kh, g.kw), (3, 3) | (5, 5) | (7, 7))
        && g.w <= DEPTHWISE_MAX_W
        && g.ow <= DEPTHWISE_MAX_W
        && g.pad_left <= DEPTHWISE_MAX_W
}

/// The widest input and output rows [`depthwise_conv2d_avx512`] takes (its row of zeros
/// for the rows in the padding is this long, on the stack).
pub const DEPTHWISE_MAX_W: usize = 1024;

/// A depthwise convolution (`groups == c_in == c_out`) of horizontal stride `STRIDE` (1
/// or 2) and a `KH x KW` kernel on AVX-512F, read straight from the input (no padded
/// copies or phase planes): 16 outputs per register, four registers at once, the weights
/// in registers. Each part of 16 outputs of a row reads its `KH` input rows (a row of
/// zeros for those in the padding) from its first column on, per tap 16 columns at
/// stride 1 or, at stride 2, 32 of which a permute keeps the even ones. Whole parts, whose
/// taps all lie inside the row, run four at a time on plain loads (folded into the
/// multiply-adds at stride 1); the others (a padded map's first and last) load through
/// per-tap masks that read the padding as zeros. Maps of one part run four rows at once.
/// Each finished row goes to `epi` (through [`each_row_avx512`]) while it is in cache.
///
/// Against the AVX2 phase planes (copies of each channel, zero padding included), stride
/// 1: mobilenet_v2's dw 32@112 0.28 -> 0.21 ms, 576@14 0.137 -> 0.065, 960@7 0.116 ->
/// 0.061 (`conv_classes`, three alternating runs; 144@56 unchanged). Against the earlier
/// stride-2 kernel (a table of loads per tap, every load masked), 96@112 0.45 -> 0.28 ms,
/// 192@28 0.053 -> 0.036.
///
/// # Safety
///
/// The CPU must support AVX-512F and FMA; `g` must pass [`depthwise_avx512_fits`] with
/// `g.kh == KH`, `g.kw == KW` and `g.stride_w == STRIDE`. The slices are checked (a short
/// one panics).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(unsafe_code)]
pub unsafe fn depthwise_conv2d_avx512<const KH: usize, const KW: usize, const STRIDE: usize>(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    g: &crate::kernels::Conv2dGeom,
    epi: &(impl Fn(usize, &mut [f32]) + Sync),
) {
    use core::arch::x86_64::*;
    const MAX_PARTS: usize = DEPTHWISE_MAX_W / 16;
    let (plane, in_plane, taps) = (g.oh * g.ow, g.h * g.w, KH * KW);
    assert!(depthwise_avx512_fits(g) && (g.kh, g.kw, g.stride_w) == (KH, KW, STRIDE));
    check_depthwise_operands(x, w, bias, out, g);
    if plane == 0 {
        return;
    }
    let parts = g.ow.div_ceil(16);
    // per part: the lanes of each tap's `16 * STRIDE` columns inside the input row, and
    // whether the part is whole (16 outputs) with every lane of every tap inside (no mask
    // needed)
    let lanes = 16 * STRIDE;
    let all = (u64::MAX >> (64 - lanes)) as u32;
    let mut masks = [[0u32; KW]; MAX_PARTS];
    let mut whole = [false; MAX_PARTS];
    for (part, (tap_masks, whole)) in masks.iter_mut().zip(&mut whole).enumerate().take(parts) {
        *whole = 16 * part + 16 <= g.ow;
        for (kx, tap_mask) in tap_masks.iter_mut().enumerate() {
            let at = (lanes * part + kx) as isize - g.pad_left as isize;
            let mask = lanes_inside(at, g.w, lanes);
            *tap_mask = mask;
            *whole &= mask == all;
        }
    }
    // the whole parts are one run `first..end` (the padding touches only the ends)
    let first = whole[..parts].iter().position(|&p| p).unwrap_or(parts);
    let end = first + whole[first..parts].iter().take_while(|&&p| p).count();
    let zeros = [0.0f32; DEPTHWISE_MAX_W];
    let plane_epilogue = plane <= DEPTHWISE_PLANE_EPILOGUE;
    for image_channel in 0..g.n * g.c_out {
        let c = image_channel % g.c_out;
        let xp = &x[image_channel * in_plane..(image_channel + 1) * in_plane];
        let op = &mut out[image_channel * plane..(image_channel + 1) * plane];
        let start = _mm512_set1_ps(bias.map_or(0.0, |b| b[c]));
        // (loops, not `array::from_fn`: its closures are not inlined into this
        // function's target features)
        let mut weights = [[_mm512_setzero_ps(); KW]; KH];
        let channel_taps = w[c * taps..(c + 1) * taps].chunks_exact(KW);
        for (row, taps_row) in weights.iter_mut().zip(channel_taps) {
            for (wt, &v) in row.iter_mut().zip(taps_row) {
                *wt = _mm512_set1_ps(v);
            }
        }
        // the input rows output row `oy` reads, each from column `column - pad_left`
        // (wrapping: a masked load may start before the row)
        let rows_of = |oy: usize, column: usize| -> [*const f32; KH] {
            let mut rows = [core::ptr::null(); KH];
            for (ky, row) in rows.iter_mut().enumerate() {
                let iy = (oy * g.stride_h + ky * g.dilation_h).wrapping_sub(g.pad_top);
                let inside = if iy < g.h {
                    &xp[iy * g.w..(iy + 1) * g.w]
                } else {
                    &zeros[..g.w]
                };
                *row = inside
                    .as_ptr()
                    .wrapping_add(column)
                    .wrapping_sub(g.pad_left);
            }
            rows
        };
        let mut oy = 0;
        while oy < g.oh {
            if parts == 1 {
                // narrow maps: four rows at once, each job with its rows
                let count = (g.oh - oy).min(DEPTHWISE_JOBS);
                let mut jobs = [[core::ptr::null(); KH]; DEPTHWISE_JOBS];
                for (i, job) in jobs.iter_mut().enumerate() {
                    *job = rows_of(oy + i.min(count - 1), 0);
                }
                let (w, jobs, job_masks) = (&weights, &jobs, &[masks[0]; DEPTHWISE_JOBS]);
                // SAFETY: AVX-512F and FMA (this function's contract); each job's rows are
                // rows of the plane or of `zeros` (`g.w` floats each), and the masks
                // enable the lanes inside them
                let sums = match count {
                    1 => depthwise_jobs_avx512::<KH, KW, STRIDE, 1>(w, start, jobs, job_masks),
                    2 => depthwise_jobs_avx512::<KH, KW, STRIDE, 2>(w, start, jobs, job_masks),
                    3 => depthwise_jobs_avx512::<KH, KW, STRIDE, 3>(w, start, jobs, job_masks),
                    _ => depthwise_jobs_avx512::<KH, KW, STRIDE, 4>(w, start, jobs, job_masks),
                };
                for (i, sum) in sums.iter().enumerate().take(count) {
                    depthwise_store_avx512(op, g.ow, oy + i, 0, *sum);
                }
                if !plane_epilogue {
                    // SAFETY: AVX-512F, AVX2 and FMA (this function's contract)
                    each_row_avx512(
                        &mut op[oy * g.ow..(oy + count) * g.ow],
                        g.ow,
                        image_channel * plane + oy * g.ow,
                        epi,
                    );
                }
                oy += count;
                continue;
            }
            let rows = rows_of(oy, 0);
            // the parts that need masks (a padded map's first and last) at once
            let mut edge = (0..first).chain(end..parts).peekable();
            while edge.peek().is_some() {
                let mut chosen = [0usize; DEPTHWISE_JOBS];
                let mut count = 0;
                for (slot, part) in chosen.iter_mut().zip(edge.by_ref()) {
                    *slot = part;
                    count += 1;
                }
                let mut jobs = [rows; DEPTHWISE_JOBS];
                let mut job_masks = [[0u32; KW]; DEPTHWISE_JOBS];
                for (i, (job, job_mask)) in jobs.iter_mut().zip(&mut job_masks).enumerate() {
                    let part = chosen[i.min(count - 1)];
                    *job = rows.map(|row| row.wrapping_add(lanes * part));
                    *job_mask = masks[part];
                }
                let (w, jobs, job_masks) = (&weights, &jobs, &job_masks);
                // SAFETY: AVX-512F and FMA; the jobs read rows of the plane or of
                // `zeros` (`g.w` floats each) from their first column, through masks
                // enabling the lanes inside them
                let sums = match count {
                    1 => depthwise_jobs_avx512::<KH, KW, STRIDE, 1>(w, start, jobs, job_masks),
                    2 => depthwise_jobs_avx512::<KH, KW, STRIDE, 2>(w, start, jobs, job_masks),
                    3 => depthwise_jobs_avx512::<KH, KW, STRIDE, 3>(w, start, jobs, job_masks),
                    _ => depthwise_jobs_avx512::<KH, KW, STRIDE, 4>(w, start, jobs, job_masks),
                };
                for (sum, &part) in sums.iter().zip(&chosen).take(count) {
                    depthwise_store_avx512(op, g.ow, oy, part, *sum);
                }
            }
            // the whole parts, four at a time
            let mut part = first;
            while part < end {
                let count = (end - part).min(DEPTHWISE_JOBS);
                let (w, rows) = (&weights, rows.map(|row| row.wrapping_add(lanes * part)));
                // SAFETY: AVX-512F and FMA; the parts are whole: their 16 lanes of every
                // tap lie inside each row (of the plane or `zeros`)
                let sums = match count {
                    1 => depthwise_whole_avx512::<KH, KW, STRIDE, 1>(w, start, &rows),
                    2 => depthwise_whole_avx512::<KH, KW, STRIDE, 2>(w, start, &rows),
                    3 => depthwise_whole_avx512::<KH, KW, STRIDE, 3>(w, start, &rows),
                    _ => depthwise_whole_avx512::<KH, KW, STRIDE, 4>(w, start, &rows),
                };
                for (i, sum) in sums.iter().enumerate().take(count) {
                    depthwise_store_avx512(op, g.ow, oy, part + i, *sum);
                }
                part += count;
            }
            // (the epilogue through `each_row_avx512`, where it inlines: called here, a
            // long one stayed out of line, compiled for the baseline CPU)
            if !plane_epilogue {
                // SAFETY: AVX-512F, AVX2 and FMA (this function's contract)
                each_row_avx512(
                    &mut op[oy * g.ow..(oy + 1) * g.ow],
                    g.ow,
                    image_channel * plane + oy * g.ow,
                    epi,
                );
            }
            oy += 1;
        }
        if plane_epilogue {
            // SAFETY: AVX-512F, AVX2 and FMA (this function's contract)
            each_row_avx512(op, g.ow, image_channel * plane, epi);
        }
    }
}

/// Output planes of up to this many floats (16 KiB, half of L1d) take
/// [`depthwise_conv2d_avx512`]'s epilogue once, after the plane, rather than row by row:
/// mobilenet_v2's stride-2 depthwise layers (rows of 7 to 28) spent a tenth to a quarter
/// of their time in the calls (144@56 stride 2 0.142 -> 0.127 ms, 192@28 stride 2 0.052
/// -> 0.039, inside the model).
const DEPTHWISE_PLANE_EPILOGUE: usize = 4096;

/// The first `N` sums of a group of [`DEPTHWISE_JOBS`], the rest zeros.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
fn depthwise_sums<const N: usize>(
    acc: [core::arch::x86_64::__m512; N],
) -> [core::arch::x86_64::__m512; DEPTHWISE_JOBS] {
    let mut sums = [core::arch::x86_64::_mm512_setzero_ps(); DEPTHWISE_JOBS];
    sums[..N].copy_from_slice(&acc);
    sums
}

/// The 16 inputs of one tap of a [`depthwise_conv2d_avx512`] job from `p`: at stride 1
/// the 16 columns from `p`, at stride 2 the even ones of the 32 from `p`; with `MASKED`,
/// only the lanes of `mask` (bit `l` for column `p + l`; the others read as zeros).
///
/// # Safety
///
/// AVX-512F; every column read lies inside an allocation (disabled lanes are not accessed:
/// AVX-512 masked loads suppress their faults).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
#[allow(unsafe_code)]
unsafe fn depthwise_tap_avx512<const STRIDE: usize, const MASKED: bool>(
    p: *const f32,
    mask: u32,
) -> core::arch::x86_64::__m512 {
    use core::arch::x86_64::*;
    let load = |p: *const f32, mask: u16| {
        if MASKED {
            _mm512_maskz_loadu_ps(mask, p)
        } else {
            _mm512_loadu_ps(p)
        }
    };
    if STRIDE == 1 {
        return load(p, mask as u16);
    }
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let (lo, hi) = (
        load(p, mask as u16),
        load(p.wrapping_add(16), (mask >> 16) as u16),
    );
    _mm512_permutex2var_ps(lo, even, hi)
}

/// The sums of the first `N` jobs of [`depthwise_conv2d_avx512`] that need masks: job
/// `j` reads, for tap `(ky, kx)`, the lanes of `masks[j][kx]` from `rows[j][ky] + kx`
/// ([`depthwise_tap_avx512`]).
///
/// # Safety
///
/// AVX-512F and FMA; every enabled lane lies inside an allocation.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
#[allow(unsafe_code)]
unsafe fn depthwise_jobs_avx512<
    const KH: usize,
    const KW: usize,
    const STRIDE: usize,
    const N: usize,
>(
    weights: &[[core::arch::x86_64::__m512; KW]; KH],
    start: core::arch::x86_64::__m512,
    rows: &[[*const f32; KH]; DEPTHWISE_JOBS],
    masks: &[[u32; KW]; DEPTHWISE_JOBS],
) -> [core::arch::x86_64::__m512; DEPTHWISE_JOBS] {
    use core::arch::x86_64::*;
    let mut acc = [start; N];
    for ky in 0..KH {
        for kx in 0..KW {
            for (j, a) in acc.iter_mut().enumerate() {
                let p = rows[j][ky].wrapping_add(kx);
                // SAFETY: the enabled lanes are inside the row (the caller's contract)
                let values = depthwise_tap_avx512::<STRIDE, true>(p, masks[j][kx]);
                *a = _mm512_fmadd_ps(weights[ky][kx], values, *a);
            }
        }
    }
    depthwise_sums(acc)
}

/// The sums of `N` consecutive whole parts of one output row of
/// [`depthwise_conv2d_avx512`]: part `j` reads, for tap `(ky, kx)`, all `16 * STRIDE`
/// columns from `rows[ky] + 16 * STRIDE * j + kx` ([`depthwise_tap_avx512`]).
///
/// # Safety
///
/// AVX-512F and FMA; all those columns lie inside an allocation.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
#[allow(unsafe_code)]
unsafe fn depthwise_whole_avx512<
    const KH: usize,
    const KW: usize,
    const STRIDE: usize,
    const N: usize,
>(
    weights: &[[core::arch::x86_64::__m512; KW]; KH],
    start: core::arch::x86_64::__m512,
    rows: &[*const f32; KH],
) -> [core::arch::x86_64::__m512; DEPTHWISE_JOBS] {
    use core::arch::x86_64::*;
    let mut acc = [start; N];
    for (row, row_weights) in rows.iter().zip(weights) {
        for (kx, &wt) in row_weights.iter().enumerate() {
            for (j, a) in acc.iter_mut().enumerate() {
                let p = row.wrapping_add(16 * STRIDE * j + kx);
                // SAFETY: inside the row (the caller's contract)
                let values = depthwise_tap_avx512::<STRIDE, false>(p, u32::MAX);
                *a = _mm512_fmadd_ps(wt, values, *a);
            }
        }
    }
    depthwise_sums(acc)
}

/// Stores the sums of part `part` of output row `oy` into the plane `op` (rows of `ow`),
/// the columns inside the row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
#[allow(unsafe_code)]
fn depthwise_store_avx512(
    op: &mut [f32],
    ow: usize,
    oy: usize,
    part: usize,
    sum: core::arch::x86_64::__m512,
) {
    use core::arch::x86_64::*;
    let dst = &mut op[oy * ow + 16 * part..oy * ow + ow.min(16 * part + 16)];
    if dst.len() == 16 {
        // SAFETY: `dst` holds 16 floats (a plain store: a masked one stalls the
        // epilogue's loads of the same row)
        unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), sum) };
        return;
    }
    let mask = ((1u32 << dst.len()) - 1) as u16;
    // SAFETY: the mask covers the `dst.len()` floats of the checked slice `dst`
    unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr(), mask, sum) };
}

/// Staged rows [`depthwise3_avx512`] keeps (a power of two: a padded row's slot is a mask
/// of its index), past the nine one group of output rows reads.
#[cfg(target_arch = "x86_64")]
const DEPTHWISE3_RING: usize = 16;

/// Output rows ahead whose input rows [`depthwise3_avx512`] asks for while it stages.
#[cfg(target_arch = "x86_64")]
const DEPTHWISE3_AHEAD: usize = 4;

/// Asks the cache for the lines of `data` into L1 (a hint: nothing is read).
#[cfg(target_arch = "x86_64")]
#[inline]
fn prefetch_t0(data: &[f32]) {
    for line in data.chunks(16) {
        // SAFETY: SSE is part of x86_64; a prefetch reads nothing and cannot fault
        #[allow(unsafe_code)]
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr().cast(),
            )
        };
    }
}

/// Output vectors (16 outputs each) per row up to which [`depthwise3_avx512`] takes a
/// map (rows of up to 128 outputs).
#[cfg(target_arch = "x86_64")]
pub const DEPTHWISE3_MAX_VECTORS: usize = 8;

/// Floats of one staged row of [`depthwise3_avx512`] at most (two phases of
/// `16 * (vectors + 2)`).
#[cfg(target_arch = "x86_64")]
const DEPTHWISE3_PITCH: usize = 2 * 16 * (DEPTHWISE3_MAX_VECTORS + 2);

/// Padded input rows one group of [`depthwise3_avx512`]'s output rows reads at most
/// (four rows at stride 2).
#[cfg(target_arch = "x86_64")]
const DEPTHWISE3_GROUP_ROWS: usize = 2 * 3 + 3;

/// Output rows [`depthwise3_avx512`] sums at once for rows of `vectors` vectors: up to 16
/// accumulators (with the nine weights and five inputs, 30 of the 32 registers).
#[cfg(target_arch = "x86_64")]
const fn depthwise3_rows(vectors: usize) -> usize {
    match vectors {
        0..=4 => 4,
        _ => 2,
    }
}

/// True when [`depthwise3_avx512`] takes `g`: a 3x3 depthwise kernel of stride 1 or 2
/// (the same both ways), no dilation, rows of up to 128 outputs.
#[cfg(target_arch = "x86_64")]
pub fn depthwise3_avx512_fits(g: &crate::kernels::Conv2dGeom) -> bool {
    (g.kh, g.kw, g.dilation_h, g.dilation_w) == (3, 3, 1, 1)
        && (1..=2).contains(&g.stride_w)
        && g.stride_h == g.stride_w
        && (1..=DEPTHWISE3_MAX_VECTORS).contains(&g.ow.div_ceil(16))
}

/// Staged rows, aligned to cache lines: the ring, then a row of zeros.
#[cfg(target_arch = "x86_64")]
#[repr(align(64))]
struct Staged3([f32; (DEPTHWISE3_RING + 1) * DEPTHWISE3_PITCH]);

/// A 3x3 depthwise convolution (`groups == c_in == c_out`) of stride `S` (1 or 2) on rows
/// of `NV` vectors, on AVX-512F. Each input row a channel's outputs read is first staged,
/// zero-padded, in a ring of rows that stays in L1 (padded column `pc` at `16 + pc`; at
/// stride 2 split into its even and odd columns, phase `p` holding padded column `2 * i +
/// p` at `16 + i`), so that every tap of an output vector is an aligned load or a lane
/// shift (`valignd`) of two: per input row and output vector one load and two shifts at
/// stride 1 (the next vector's load is this one's right neighbour), two loads and one
/// shift at stride 2. No masks and no permutes per tap (the kernel it replaced for these
/// maps loaded through masks, and at stride 2 permuted 32 lanes per tap: `conv_classes`,
/// three runs alternated, mobilenet_v2's dw 32@112 0.121 -> 0.090 ms, 96@112 stride 2
/// 0.200 -> 0.135, 144@56 stride 2 0.090 -> 0.058, 576@14 stride 2 0.038 -> 0.036; the
/// model 4.55-4.59 -> 4.36-4.44 ms). While a row is staged the row `DEPTHWISE3_AHEAD`
/// output rows further is asked for (without, the model's 96@112 ran slower than the
/// kernel before). [`depthwise3_rows`] output rows run at once, their sums in registers;
/// an input row adds its taps to each of them that reads it. The sums are the definition's
/// order (bias, then the taps row by row), as on the other paths; rows go to `epi`
/// (through [`each_row_avx512`]) as they finish, or the whole plane at once when it is
/// small ([`DEPTHWISE_PLANE_EPILOGUE`]).
///
/// # Safety
///
/// The CPU must support AVX-512F and FMA; `g` must pass [`depthwise3_avx512_fits`] with
/// `g.stride_w == S` and `g.ow.div_ceil(16) == NV`. The slices are checked (a short one
/// panics).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(unsafe_code)]
pub unsafe fn depthwise3_avx512<const S: usize, const NV: usize>(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    g: &crate::kernels::Conv2dGeom,
    epi: &(impl Fn(usize, &mut [f32]) + Sync),
) {
    use core::arch::x86_64::*;
    assert!(depthwise3_avx512_fits(g) && g.stride_w == S && g.ow.div_ceil(16) == NV);
    check_depthwise_operands(x, w, bias, out, g);
    let (plane, in_plane) = (g.oh * g.ow, g.h * g.w);
    if plane == 0 {
        return;
    }
    let per_group = depthwise3_rows(NV);
    let (phase, group_rows) = (16 * (NV + 2), S * (per_group - 1) + 3);
    let pitch = S * phase;
    // the 16-lane chunks of a staged row the input fills: as many as the taps read, at
    // most the input's (the rest stays zero)
    let chunks = (g.pad_left + g.w).div_ceil(16 * S).min(NV + 1);
    // per chunk, the lanes of its `16 * S` padded columns that lie inside an input row
    let lanes = 16 * S;
    let mut masks = [0u32; DEPTHWISE3_MAX_VECTORS + 1];
    for (m, mask) in masks.iter_mut().enumerate().take(chunks) {
        *mask = lanes_inside((lanes * m) as isize - g.pad_left as isize, g.w, lanes);
    }
    let masks = &masks[..chunks];
    let mut staged = Staged3([0.0; (DEPTHWISE3_RING + 1) * DEPTHWISE3_PITCH]);
    let (ring, zeros) = staged.0.split_at_mut(DEPTHWISE3_RING * pitch);
    let zeros = zeros.as_ptr();
    let plane_epilogue = plane <= DEPTHWISE_PLANE_EPILOGUE;
    for image_channel in 0..g.n * g.c_out {
        let c = image_channel % g.c_out;
        let xp = &x[image_channel * in_plane..(image_channel + 1) * in_plane];
        let op = &mut out[image_channel * plane..(image_channel + 1) * plane];
        let start = _mm512_set1_ps(bias.map_or(0.0, |b| b[c]));
        let mut weights = [[_mm512_setzero_ps(); 3]; 3];
        for (t, &v) in w[c * 9..c * 9 + 9].iter().enumerate() {
            weights[t / 3][t % 3] = _mm512_set1_ps(v);
        }
        // the padded row each slot holds (none yet for this channel)
        let mut held = [usize::MAX; DEPTHWISE3_RING];
        let mut done = 0;
        for oy in (0..g.oh).step_by(per_group) {
            let count = per_group.min(g.oh - oy);
            // the staged rows the group reads (padded rows `oy * S` on), staged where the
            // ring lacks them; zeros for those in the padding
            let mut rows = [zeros; DEPTHWISE3_GROUP_ROWS];
            for (i, row) in rows.iter_mut().enumerate().take(group_rows) {
                let padded = oy * S + i;
                let iy = padded.wrapping_sub(g.pad_top);
                if iy >= g.h {
                    continue;
                }
                let slot = padded & (DEPTHWISE3_RING - 1);
                let dst = &mut ring[slot * pitch..(slot + 1) * pitch];
                if held[slot] != padded {
                    let xrow = &xp[iy * g.w..(iy + 1) * g.w];
                    stage_row3_avx512::<S>(xrow, g.pad_left, masks, dst);
                    held[slot] = padded;
                    // the row a group ahead asked for meanwhile
                    let ahead = iy + DEPTHWISE3_AHEAD * S;
                    if ahead < g.h {
                        prefetch_t0(&xp[ahead * g.w..(ahead + 1) * g.w]);
                    }
                }
                *row = dst.as_ptr();
            }
            // SAFETY: AVX-512F and FMA; each row pointer is a staged row (or the zeros)
            // of `pitch` floats, whose phases the vectors read to `16 * (NV + 2)`
            let sums = depthwise3_group_avx512::<S, NV>(&weights, start, &rows, phase, per_group);
            for (r, row_sums) in sums.iter().enumerate().take(count) {
                for (j, sum) in row_sums.iter().enumerate() {
                    depthwise_store_avx512(op, g.ow, oy + r, j, *sum);
                }
            }
            if !plane_epilogue {
                // SAFETY: AVX-512F, AVX2 and FMA (this function's contract)
                each_row_avx512(
                    &mut op[done * g.ow..(oy + count) * g.ow],
                    g.ow,
                    image_channel * plane + done * g.ow,
                    epi,
                );
                done = oy + count;
            }
        }
        if plane_epilogue {
            // SAFETY: AVX-512F, AVX2 and FMA (this function's contract)
            each_row_avx512(op, g.ow, image_channel * plane, epi);
        }
    }
}

/// Stages input row `xrow` into the staged row `dst` of [`depthwise3_avx512`]: chunk `m`
/// of `16 * S` padded columns (input column `pc - pad_left` at padded column `pc`), the
/// lanes of `masks[m]` read from the row and the others zero, at stride 1 from `dst[16]`
/// on, at stride 2 split into phases of `dst.len() / 2` floats (phase `p` gets padded
/// column `2 * i + p` at `16 + i`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
#[allow(unsafe_code)]
fn stage_row3_avx512<const S: usize>(
    xrow: &[f32],
    pad_left: usize,
    masks: &[u32],
    dst: &mut [f32],
) {
    use core::arch::x86_64::*;
    let phase = dst.len() / S;
    assert!(16 * (masks.len() + 1) <= phase);
    let (even, odd) = (
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30),
        _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31),
    );
    for (m, &mask) in masks.iter().enumerate() {
        let p = xrow
            .as_ptr()
            .wrapping_add(16 * S * m)
            .wrapping_sub(pad_left);
        // SAFETY: the masks enable only lanes inside `xrow` (disabled lanes are not
        // read); the stores are inside `dst` (asserted: `16 * (m + 2) <= phase`)
        unsafe {
            let first = _mm512_maskz_loadu_ps(mask as u16, p);
            let to = dst.as_mut_ptr().add(16 + 16 * m);
            if S == 1 {
                _mm512_storeu_ps(to, first);
                continue;
            }
            let second = _mm512_maskz_loadu_ps((mask >> 16) as u16, p.wrapping_add(16));
            _mm512_storeu_ps(to, _mm512_permutex2var_ps(first, even, second));
            let odd_lanes = _mm512_permutex2var_ps(first, odd, second);
            _mm512_storeu_ps(to.add(phase), odd_lanes);
        }
    }
}

/// The sums of `per_group` output rows of [`depthwise3_avx512`] (row `r`, vector `j`),
/// from the staged rows `rows` (phases `phase` floats apart): output row `r` reads
/// staged rows `S * r + ky`; the rows past `per_group` are not summed.
///
/// # Safety
///
/// AVX-512F and FMA; the first `S * (per_group - 1) + 3` rows each hold `S * phase`
/// readable floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
#[allow(unsafe_code)]
unsafe fn depthwise3_group_avx512<const S: usize, const NV: usize>(
    weights: &[[core::arch::x86_64::__m512; 3]; 3],
    start: core::arch::x86_64::__m512,
    rows: &[*const f32; DEPTHWISE3_GROUP_ROWS],
    phase: usize,
    per_group: usize,
) -> [[core::arch::x86_64::__m512; NV]; 4] {
    use core::arch::x86_64::*;
    let shift = |next: __m512, v: __m512| {
        _mm512_castsi512_ps(_mm512_alignr_epi32::<1>(
            _mm512_castps_si512(next),
            _mm512_castps_si512(v),
        ))
    };
    let shift2 = |next: __m512, v: __m512| {
        _mm512_castsi512_ps(_mm512_alignr_epi32::<2>(
            _mm512_castps_si512(next),
            _mm512_castps_si512(v),
        ))
    };
    let mut acc = [[start; NV]; 4];
    for (sr, &row) in rows.iter().enumerate().take(S * (per_group - 1) + 3) {
        // SAFETY: inside the staged rows (the caller's contract)
        let mut cur = _mm512_loadu_ps(row.add(16));
        for j in 0..NV {
            let next = _mm512_loadu_ps(row.add(16 * (j + 2)));
            let taps = if S == 1 {
                [cur, shift(next, cur), shift2(next, cur)]
            } else {
                [
                    cur,
                    _mm512_loadu_ps(row.add(phase + 16 * (j + 1))),
                    shift(next, cur),
                ]
            };
            for (r, row_acc) in acc.iter_mut().enumerate().take(per_group) {
                // the kernel row of this staged row for output row `r`, if it reads it
                let Some(ky) = sr.checked_sub(S * r).filter(|&ky| ky < 3) else {
                    continue;
                };
                for (kx, tap) in taps.iter().enumerate() {
                    row_acc[j] = _mm512_fmadd_ps(weights[ky][kx], *tap, row_acc[j]);
                }
            }
            cur = next;
        }
    }
    acc
}

/// [`crate::kernels::max_pool2d_rows`] compiled for AVX2 and FMA, so its
/// compare-and-select runs vectorize eight wide (the same code as the portable path).
///
/// # Safety
///
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(unsafe_code)]
pub unsafe fn max_pool2d_avx2(
    x: &[f32],
    out: &mut [f32],
    g: &crate::kernels::Pool2dGeom,
    epi: &impl Fn(usize, f32) -> f32,
) {
    crate::kernels::max_pool2d_rows(x, out, g, epi);
}

/// Widest window [`max_pool_s2_avx512`] takes.
const POOL_S2_MAX_KW: usize = 8;

/// True when [`max_pool_s2_avx512`] can run `g`: windows of stride 2 along rows, up to
/// [`POOL_S2_MAX_KW`] wide, any padding, no dilation, output rows up to
/// `kernels::IN_PLACE_POOL_ROW` wide (LeNet's and U-Net's 2x2, resnet18's 3x3 with
/// padding).
pub fn max_pool_s2_fits(g: &crate::kernels::Pool2dGeom) -> bool {
    g.stride_w == 2
        && g.stride_h > 0
        && (1..=POOL_S2_MAX_KW).contains(&g.kw)
        && g.kh > 0
        && g.pad_left < g.kw
        && g.dilation_h == 1
        && g.dilation_w == 1
        && g.ow <= crate::kernels::IN_PLACE_POOL_ROW
}

/// Max pooling of horizontal stride 2 on AVX-512F, 16 outputs per vector: per window
/// tap, two masked loads of the 32 input columns from the tap's first one (columns in
/// the padding read as -inf) and a permute keeping the even ones. Taps meet in the
/// portable path's order (rows, then columns) by its rule (`v > best || v is NaN` picks
/// `v`: a NaN wins its window), so the results are the same bits. Each finished output
/// row goes through `epi` while in cache. In place when `x` is `None` (`out` then holds
/// the input and receives the output at its start), under the memory plan's condition
/// for pooling in place (see `kernels::pool2d_in_place`).
///
/// # Safety
///
/// The CPU must support AVX-512F; `g` must pass [`max_pool_s2_fits`]. The lengths are
/// checked (a short buffer panics).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(unsafe_code)]
pub unsafe fn max_pool_s2_avx512(
    x: Option<&[f32]>,
    out: &mut [f32],
    g: &crate::kernels::Pool2dGeom,
    epi: &impl Fn(usize, f32) -> f32,
) {
    use core::arch::x86_64::*;
    assert!(max_pool_s2_fits(g));
    let (in_plane, plane) = (g.h * g.w, g.oh * g.ow);
    assert!(x.map_or(out.len(), <[f32]>::len) >= g.planes * in_plane);
    assert!(out.len() >= g.planes * plane);
    let dst = out.as_mut_ptr();
    let src = x.map_or(dst.cast_const(), <[f32]>::as_ptr);
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let below = _mm512_set1_ps(f32::NEG_INFINITY);
    // the 32 lanes each (part of 16 outputs, tap column) loads: those of its 2 * cols
    // columns inside the row
    let parts = g.ow.div_ceil(16);
    let mut masks = [0u32; crate::kernels::IN_PLACE_POOL_ROW / 16 * POOL_S2_MAX_KW];
    for (i, mask) in masks.iter_mut().enumerate().take(parts * g.kw) {
        let (part, kx) = (i / g.kw, i % g.kw);
        let at = (32 * part + kx) as isize - g.pad_left as isize;
        let cols = (g.ow - 16 * part).min(16) as isize;
        let lo = (-at).clamp(0, 32) as u32;
        let hi = (g.w as isize - at).clamp(0, 2 * cols) as u32;
        let under = |n: u32| if n >= 32 { u32::MAX } else { (1u32 << n) - 1 };
        *mask = under(hi) & !under(lo);
    }
    // in place with padding, rows go through a stack row (stored whole, as the memory
    // plan's condition assumes); else straight to `out`: out of place, or in place
    // without padding, where each output lies at or before the first input its window
    // reads, and is stored after every load of its own window and before none of a later
    // one's (those read further on)
    let direct = x.is_some() || (g.pad_top == 0 && g.pad_left == 0);
    let mut buffer = [0.0f32; crate::kernels::IN_PLACE_POOL_ROW];
    for p in 0..g.planes {
        for oy in 0..g.oh {
            let base = (p * g.oh + oy) * g.ow;
            let row: *mut f32 = if direct {
                dst.add(base)
            } else {
                buffer.as_mut_ptr()
            };
            let top = (oy * g.stride_h) as isize - g.pad_top as isize;
            for part in 0..parts {
                let mut best = below;
                for ky in 0..g.kh {
                    let iy = top + ky as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let line = src.add(p * in_plane + iy as usize * g.w);
                    if g.kw == 2 {
                        // both taps of the row from one pair of loads: the tap at column
                        // 0 in the even lanes, the one at column 1 in the odd lanes
                        let mask = masks[2 * part];
                        let at = (32 * part) as isize - g.pad_left as isize;
                        let first = line.wrapping_offset(at);
                        // SAFETY: as below: the first tap's mask enables lane `l` only
                        // when column `at + l` is inside input row `iy` of plane `p`; an
                        // odd lane it leaves out is a second-tap column outside the row
                        // (read as -inf, as that tap's own mask would)
                        let (lo, hi) = masked_columns(first, mask, below);
                        let row_best = pool_pick(
                            _mm512_permutex2var_ps(lo, even, hi),
                            _mm512_permutex2var_ps(lo, odd, hi),
                        );
                        // the row's pick meets the rows before it in order, which is
                        // the tap-by-tap order's result (the last NaN, else the first
                        // maximum)
                        best = pool_pick(best, row_best);
                        continue;
                    }
                    for kx in 0..g.kw {
                        let mask = masks[part * g.kw + kx];
                        let at = (32 * part + kx) as isize - g.pad_left as isize;
                        let first = line.wrapping_offset(at);
                        // SAFETY: the mask enables only lanes whose column `at + lane` is
                        // inside input row `iy` of plane `p` (inside the `planes * h * w`
                        // input floats asserted above); masked lanes are not accessed, so
                        // `first` itself may lie before the row
                        let (lo, hi) = masked_columns(first, mask, below);
                        best = pool_pick(best, _mm512_permutex2var_ps(lo, even, hi));
                    }
                }
                // the epilogue on all sixteen lanes (a loop of fixed length, which the
                // compiler keeps in registers), then one masked store of the row's lanes
                let mut maxima = [0.0f32; 16];
                _mm512_storeu_ps(maxima.as_mut_ptr(), best);
                let first = base + 16 * part;
                for (k, m) in maxima.iter_mut().enumerate() {
                    *m = epi(first + k, *m);
                }
                let count = (g.ow - 16 * part).min(16);
                // SAFETY: outputs `16 * part ..` of this row, the `count` lanes the mask
                // enables (below `ow`): inside `out` (asserted above) or the stack row
                // (`ow` fits it)
                _mm512_mask_storeu_ps(
                    row.add(16 * part),
                    ((1u32 << count) - 1) as u16,
                    _mm512_loadu_ps(maxima.as_ptr()),
                );
            }
            if !direct {
                // SAFETY: output row `oy` of plane `p`, inside `out` (asserted above),
                // apart from the stack row; every input it overlaps has been read (the
                // memory plan's condition)
                core::ptr::copy_nonoverlapping(row, dst.add(base), g.ow);
            }
        }
    }
}

/// The 32 floats from `first` as two vectors, lane `l` read only where bit `l` of `mask`
/// is set (`fill` elsewhere).
///
/// # Safety
///
/// AVX-512F; every enabled lane's float is readable (masked ones are not accessed).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(unsafe_code)]
unsafe fn masked_columns(
    first: *const f32,
    mask: u32,
    fill: core::arch::x86_64::__m512,
) -> (core::arch::x86_64::__m512, core::arch::x86_64::__m512) {
    use core::arch::x86_64::*;
    // SAFETY: the caller's contract
    unsafe {
        (
            _mm512_mask_loadu_ps(fill, mask as u16, first),
            _mm512_mask_loadu_ps(fill, (mask >> 16) as u16, first.wrapping_add(16)),
        )
    }
}

/// The max pooling's rule per lane: `v` replaces `best` when `v > best` or `v` is NaN (a
/// NaN wins its window; among equal maxima the first stays). `max(v, best)` is
/// `v > best ? v : best`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn pool_pick(
    best: core::arch::x86_64::__m512,
    v: core::arch::x86_64::__m512,
) -> core::arch::x86_64::__m512 {
    use core::arch::x86_64::*;
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
    _mm512_mask_mov_ps(_mm512_max_ps(v, best), nan, v)
}

/// `row[i] = gelu(row[i] + bias[i])` (without a bias `gelu(row[i])`) on AVX-512F, by
/// the rational form of `crate::math::GELU_P` (its bound is [`crate::math::gelu`]'s,
/// `2e-7 * max(1, |x|)`, with fused multiply-adds): about 20 operations per vector where
/// `math::gelu`'s erf (Abramowitz and Stegun's 7.1.26 with an exponential) takes 33; the
/// last `len % 16` through masked loads and stores. The row epilogue of a product
/// followed by a bias and GELU (a transformer's feed-forward layer).
///
/// # Safety
///
/// The CPU must support AVX-512F. The slices are checked (a short bias panics).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(unsafe_code)]
pub unsafe fn gelu_row_avx512(row: &mut [f32], bias: Option<&[f32]>) {
    use core::arch::x86_64::*;
    assert!(bias.is_none_or(|b| b.len() >= row.len()));
    for start in (0..row.len()).step_by(16) {
        let lanes = 16.min(row.len() - start);
        let mask = (u32::MAX >> (32 - lanes)) as u16;
        let at = row[start..].as_mut_ptr();
        // SAFETY: the mask enables the `lanes` floats from `start`, inside `row` (and
        // inside `bias`, asserted at least as long)
        let mut v = _mm512_maskz_loadu_ps(mask, at);
        if let Some(b) = bias {
            // SAFETY: as above
            v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, b[start..].as_ptr()));
        }
        // SAFETY: as above
        _mm512_mask_storeu_ps(at, mask, gelu_avx512(v));
    }
}

/// GELU of 16 lanes ([`gelu_row_avx512`]): `x / 2 + x * w` with `w = xc * P(xc^2) /
/// Q(xc^2)` (`crate::math::GELU_P`, `GELU_Q`), `xc` the input clamped to
/// `+-GELU_CLAMP`, where `w` is `+-0.5` exactly (so `gelu(-40)` is 0 and `gelu(40)` is 40).
/// NaN stays NaN (it clamps to a number, and reaches the result through `x`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
fn gelu_avx512(v: core::arch::x86_64::__m512) -> core::arch::x86_64::__m512 {
    use crate::math::{GELU_CLAMP, GELU_P, GELU_Q};
    use core::arch::x86_64::*;
    let k = _mm512_set1_ps;
    let xc = _mm512_max_ps(_mm512_min_ps(v, k(GELU_CLAMP)), k(-GELU_CLAMP));
    let s = _mm512_mul_ps(xc, xc);
    let mut p = k(GELU_P[6]);
    for i in (0..6).rev() {
        p = _mm512_fmadd_ps(p, s, k(GELU_P[i]));
    }
    let mut q = k(GELU_Q[4]);
    for i in (0..4).rev() {
        q = _mm512_fmadd_ps(q, s, k(GELU_Q[i]));
    }
    // (a division, not a reciprocal estimate: the divider works beside the two FMA pipes,
    // and its correctly rounded quotient keeps `w` at exactly 0.5 past the clamp)
    let w = _mm512_mul_ps(xc, _mm512_div_ps(p, q));
    _mm512_fmadd_ps(v, w, _mm512_mul_ps(k(0.5), v))
}

/// `e^x` of 16 lanes with `x <= 0` (greater ones count as 0): [`crate::math::exp`]'s
/// steps and constants with fused multiply-adds; below `ln(f32::MIN_POSITIVE)` 0, as
/// there; NaN stays NaN.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
fn exp_nonpositive_avx512(x: core::arch::x86_64::__m512) -> core::arch::x86_64::__m512 {
    use crate::math::EXP_MIN;
    use core::arch::x86_64::*;
    let k = _mm512_set1_ps;
    // (a NaN clamps to EXP_MIN here, and is put back at the end)
    let xc = _mm512_min_ps(_mm512_max_ps(x, k(EXP_MIN)), _mm512_setzero_ps());
    let e = exp_clamped_avx512(xc);
    // 0 below EXP_MIN (not-less-than holds for NaN too), NaN where `x` is
    let e = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_NLT_UQ>(x, k(EXP_MIN)), e);
    _mm512_mask_mov_ps(e, _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x), x)
}

/// The exponential of [`exp_nonpositive_avx512`] on lanes already in `[EXP_MIN, 0]`
/// (`crate::math::EXP_MIN`): [`crate::math::exp`]'s steps and constants.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
fn exp_clamped_avx512(xc: core::arch::x86_64::__m512) -> core::arch::x86_64::__m512 {
    use crate::math::{EXP_LN2_HI, EXP_LN2_LO, EXP_ROUND, EXP_TAYLOR};
    use core::arch::x86_64::*;
    let k = _mm512_set1_ps;
    let shifted = _mm512_fmadd_ps(xc, k(core::f32::consts::LOG2_E), k(EXP_ROUND));
    let n = _mm512_sub_ps(shifted, k(EXP_ROUND));
    let r = _mm512_fnmadd_ps(n, k(EXP_LN2_LO), _mm512_fnmadd_ps(n, k(EXP_LN2_HI), xc));
    // Horner's steps from the highest coefficient, over a fixed-size array (a chained
    // iterator stayed a loop with a branch between each two multiply-adds). Estrin's
    // scheme, three deep instead of seven, measured no faster in the GELU of the time
    // (bound by its multiplies on the two FMA pipes, not by this chain)
    let c = EXP_TAYLOR;
    let mut p = k(c[5]);
    for c in [c[4], c[3], c[2], c[1], c[0], 1.0, 1.0] {
        p = _mm512_fmadd_ps(p, r, k(c));
    }
    // 2^n from its bits: n in -126..=0
    let n_bits = _mm512_sub_epi32(
        _mm512_castps_si512(shifted),
        _mm512_set1_epi32(EXP_ROUND.to_bits() as i32),
    );
    let scale = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
        n_bits,
        _mm512_set1_epi32(127),
    )));
    _mm512_mul_ps(p, scale)
}

/// `row[i] = e^(row[i] - shift)` on AVX-512F, for `row[i] <= shift` (softmax after its
/// maximum), returning their sum (16 lanes, added across at the end); the last
/// `len % 16` through masked loads and stores. [`exp_nonpositive_avx512`] on 16 lanes
/// where the generic loop ran 8 (softmax 6% of bert_tiny's time).
///
/// # Safety
///
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(unsafe_code)]
pub unsafe fn exp_shifted_avx512(row: &mut [f32], shift: f32) -> f32 {
    use core::arch::x86_64::*;
    let shift = _mm512_set1_ps(shift);
    let mut sum = _mm512_setzero_ps();
    for start in (0..row.len()).step_by(16) {
        let lanes = 16.min(row.len() - start);
        let mask = (u32::MAX >> (32 - lanes)) as u16;
        let at = row[start..].as_mut_ptr();
        // SAFETY: the mask enables the `lanes` floats from `start`, inside `row`
        let x = _mm512_sub_ps(_mm512_maskz_loadu_ps(mask, at), shift);
        let e = _mm512_maskz_mov_ps(mask, exp_nonpositive_avx512(x));
        sum = _mm512_add_ps(sum, e);
        // SAFETY: as above
        _mm512_mask_storeu_ps(at, mask, e);
    }
    _mm512_reduce_add_ps(sum)
}

/// [`crate::kernels::each_row_here`] compiled for AVX-512F: the row epilogue closure,
/// inlined here, vectorizes sixteen wide (the same values).
///
/// # Safety
///
/// The CPU must support AVX-512F, AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(unsafe_code)]
pub unsafe fn each_row_avx512(
    data: &mut [f32],
    width: usize,
    base: usize,
    epi: &(impl Fn(usize, &mut [f32]) + Sync),
) {
    crate::kernels::each_row_here(data, width, base, epi);
}

/// [`crate::kernels::each_row_here`] compiled for AVX2 and FMA: the row epilogue closure,
/// inlined here, vectorizes eight wide.
///
/// # Safety
///
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(unsafe_code)]
pub unsafe fn each_row_avx2(
    data: &mut [f32],
    width: usize,
    base: usize,
    epi: &(impl Fn(usize, &mut [f32]) + Sync),
) {
    crate::kernels::each_row_here(data, width, base, epi);
}

/// [`crate::kernels::softmax_rows`] compiled for AVX2 and FMA (the same code; its loops
/// and a fused prologue or epilogue inlined into them vectorize eight wide).
///
/// # Safety
///
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(unsafe_code)]
pub unsafe fn softmax_rows_avx2(
    x: &impl crate::kernels::Source,
    out: &mut [f32],
    outer: usize,
    len: usize,
    epi: &impl Fn(usize, f32) -> f32,
) {
    crate::kernels::softmax_rows(x, out, outer, len, epi);
}

/// [`crate::kernels::layer_norm_rows`] compiled for AVX2 and FMA (the same code; its
/// loops and a fused prologue or epilogue inlined into them vectorize eight wide).
///
/// # Safety
///
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(unsafe_code)]
pub unsafe fn layer_norm_rows_avx2(
    x: &impl crate::kernels::Source,
    affine: (Option<&[f32]>, Option<&[f32]>),
    out: &mut [f32],
    shape: (usize, usize),
    eps: f32,
    epi: &impl Fn(usize, f32) -> f32,
) {
    crate::kernels::layer_norm_rows(x, affine, out, shape, eps, epi);
}

/// [`crate::kernels::layer_norm_rows`] compiled for AVX-512F (the same code and the same
/// sums, sixteen lanes wide: the two passes over each row in half the vectors).
///
/// # Safety
///
/// The CPU must support AVX-512F, AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(unsafe_code)]
pub unsafe fn layer_norm_rows_avx512(
    x: &impl crate::kernels::Source,
    affine: (Option<&[f32]>, Option<&[f32]>),
    out: &mut [f32],
    shape: (usize, usize),
    eps: f32,
    epi: &impl Fn(usize, f32) -> f32,
) {
    crate::kernels::layer_norm_rows(x, affine, out, shape, eps, epi);
}

/// Adds a register tile's sums to its start (`init[i]`, or what `c` holds) and stores
/// rows `0..rows` of it at `c[i * ldc ..]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
#[allow(unsafe_code)]
unsafe fn store_tile(
    sums: [[core::arch::x86_64::__m256; 2]; GEMM_MR],
    rows: usize,
    c: &mut [f32],
    ldc: usize,
    init: Option<&[f32]>,
) {
    use core::arch::x86_64::*;
    for (i, [s0, s1]) in sums.into_iter().enumerate().take(rows) {
        let dst = &mut c[i * ldc..i * ldc + GEMM_NR];
        let (start0, start1) = match init {
            Some(v) => (_mm256_set1_ps(v[i]), _mm256_set1_ps(v[i])),
            // SAFETY: `dst` holds exactly 16 floats (a checked slice of that length)
            None => (
                _mm256_loadu_ps(dst.as_ptr()),
                _mm256_loadu_ps(dst.as_ptr().add(8)),
            ),
        };
        // SAFETY: as above, 16 floats
        _mm256_storeu_ps(dst.as_mut_ptr(), _mm256_add_ps(start0, s0));
        _mm256_storeu_ps(dst.as_mut_ptr().add(8), _mm256_add_ps(start1, s1));
    }
}

/// Where each step along `k` of an indirect register tile reads its row of `b` (offsets
/// into one buffer), with the largest kept for the bounds check of
/// `gemm_tile_avx512_indirect` and `gemm_tile_neon_indirect`.
pub struct RowOffsets<'a> {
    offsets: &'a [u32],
    max: usize,
}

impl<'a> RowOffsets<'a> {
    /// The offsets of steps `0..offsets.len()`.
    pub fn new(offsets: &'a [u32]) -> RowOffsets<'a> {
        let max = offsets.iter().copied().max().unwrap_or(0) as usize;
        RowOffsets { offsets, max }
    }
}

/// [`gemm_tile_avx512`] on an interleaved tile of `a` (`a[k * 16 + i]`, sixteen rows
/// present) whose step `k` reads its sixteen columns of `b` at `b[base + offsets[k]..]`
/// instead of a packed panel: a convolution's patch row read straight from the input
/// band, where its sixteen pixels are contiguous. Per step: one offset, one vector of
/// `b`, sixteen broadcasts of `a`, sixteen fused multiply-adds.
///
/// # Safety
///
/// The CPU must support AVX-512F. The slices are checked (a short one panics).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(unsafe_code, clippy::too_many_arguments)]
pub unsafe fn gemm_tile_avx512_indirect(
    a: &[f32],
    rows: usize,
    b: &[f32],
    (offsets, base): (&RowOffsets<'_>, usize),
    c: &mut [f32],
    ldc: usize,
    init: Option<&[f32]>,
) {
    use core::arch::x86_64::*;
    let kc = offsets.offsets.len();
    assert!((1..=GEMM_MR_AVX512).contains(&rows) && kc > 0);
    assert!(a.len() >= kc * GEMM_MR_AVX512);
    assert!(base + offsets.max + GEMM_NR <= b.len());
    assert!(c.len() >= (rows - 1) * ldc + GEMM_NR);
    assert!(init.is_none_or(|s| s.len() >= rows));
    let (ap, bp, offs) = (a.as_ptr(), b.as_ptr().add(base), offsets.offsets.as_ptr());
    let mut sums = [_mm512_setzero_ps(); GEMM_MR_AVX512];
    for k in 0..kc {
        // SAFETY: k < kc: `offsets[k] <= max`, and `b` holds `base + max + 16` floats, `a`
        // holds `kc * 16` (asserted above)
        let bk = _mm512_loadu_ps(bp.add(*offs.add(k) as usize));
        let ak = ap.add(k * GEMM_MR_AVX512);
        for (i, sum) in sums.iter_mut().enumerate() {
            *sum = _mm512_fmadd_ps(_mm512_set1_ps(*ak.add(i)), bk, *sum);
        }
    }
    store_tile_avx512(&sums, rows, (c, ldc, GEMM_NR), init);
}

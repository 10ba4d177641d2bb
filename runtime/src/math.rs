//! Elementwise functions on f32, without std.
//!
//! Accuracy: `exp` and `erf` are this module's own, branch-free so that loops over them
//! vectorize (softmax, GELU): `exp` within 2 ulp of the exact value for results in the
//! normal range (results below `f32::MIN_POSITIVE`, for `x < -87.33`, flush to 0), `erf`
//! within 4e-7 of the exact value everywhere (an absolute bound; relative, 2e-6). Both are
//! checked against f64 references on a sweep of inputs in this module's tests. `sin` and
//! `cos` are this module's own too ([`sin_cos`]), in f32 and integer arithmetic only, so
//! that a single-precision FPU needs no software double-precision routine (libm's use
//! f64 inside): within 2 ulp of the exact value on the tests' sweeps (all exponents, and
//! the floats nearest the first 20 000 multiples of pi/2; the worst found is 1.53 ulp). `sqrt` is correctly rounded (the FPU's instruction on hard-float ARM). `ln`,
//! `tanh` are libm's (within 1-2 ulp); the composite functions (silu, mish, ...) follow
//! their definitions literally, `gelu` with `erf`'s rational part alone (within
//! `2e-7 * max(1, |x|)`, tested).

/// `max(x, 0)`; NaN stays NaN, `-0` gives `+0`.
///
/// (The `+ 0.0`, which turns `-0` into `+0` and nothing else, keeps LLVM from compiling
/// an in-place `*slot = relu(*slot)` loop, a row epilogue, into a masked store of the
/// negative lanes alone: AVX2's `vmaskmovps`, microcoded on AMD CPUs, where it made the
/// ReLU epilogues 12% of unet_small's time.)
#[inline(always)]
pub fn relu(x: f32) -> f32 {
    (if x < 0.0 { 0.0 } else { x }) + 0.0
}

/// `x` clamped to `[lo, hi]`; NaN stays NaN.
#[inline(always)]
pub fn clip(x: f32, lo: f32, hi: f32) -> f32 {
    // max first, then min: with lo > hi every value clips to hi (ONNX `Clip`, numpy)
    let y = if x < lo { lo } else { x };
    if y > hi {
        hi
    } else {
        y
    }
}

/// Larger of two values (NaN if either is NaN, as numpy's `maximum`).
#[inline(always)]
pub fn max(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if a > b {
        a
    } else {
        b
    }
}

/// Smaller of two values (NaN if either is NaN, as numpy's `minimum`).
#[inline(always)]
pub fn min(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if a < b {
        a
    } else {
        b
    }
}

/// `|x|`
#[inline(always)]
pub fn abs(x: f32) -> f32 {
    libm::fabsf(x)
}

/// `ln 2 = EXP_LN2_HI + EXP_LN2_LO`, the first with its low 12 bits zero (`n * EXP_LN2_HI`
/// is exact for the `n` of [`exp`]).
pub(crate) const EXP_LN2_HI: f32 = 0.693_145_75;
/// See [`EXP_LN2_HI`].
pub(crate) const EXP_LN2_LO: f32 = 1.428_606_8e-6;
/// Adding then subtracting `1.5 * 2^23` rounds a float to the nearest integer.
pub(crate) const EXP_ROUND: f32 = 12_582_912.0;
/// `ln(f32::MIN_POSITIVE)`: [`exp`] of anything lower is 0.
pub(crate) const EXP_MIN: f32 = -87.336_55;
/// `1 / k!` for `k = 2..=7`: [`exp`]'s Taylor polynomial past `1 + r`.
pub(crate) const EXP_TAYLOR: [f32; 6] = [
    0.5,
    1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 120.0,
    1.0 / 720.0,
    1.0 / 5040.0,
];

/// `e^x` (see the module doc for its accuracy).
///
/// `x = n ln 2 + r` with `|r| <= ln 2 / 2` (`ln 2` in two parts, so `r` is exact), `e^r` by
/// its Taylor polynomial of degree 7, and `2^n` built from its bits. (The AVX-512
/// softmax, `simd::exp_shifted_avx512`, takes the same steps with the same constants.)
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = core::f32::consts::LOG2_E;
    const LN2_HI: f32 = EXP_LN2_HI;
    const LN2_LO: f32 = EXP_LN2_LO;
    const ROUND: f32 = EXP_ROUND;
    const MAX: f32 = 88.722_84; // ln(f32::MAX)
    const MIN: f32 = EXP_MIN;
    const C: [f32; 6] = EXP_TAYLOR;
    let xc = x.clamp(MIN, MAX);
    let shifted = xc * LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let p =
        1.0 + r * (1.0 + r * (C[0] + r * (C[1] + r * (C[2] + r * (C[3] + r * (C[4] + r * C[5]))))));
    // n is in -126..=128; 2^128 is not a float, so take 2^127 and double p. `shifted`
    // lies in [2^23, 2^24), where floats step by 1: its bits are ROUND's plus n (integer
    // arithmetic that vectorizes, where `n as i32` saturates lane by lane; a NaN `x`
    // gives some n, and a NaN result through `p`)
    let n = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let n1 = n.min(127);
    let scaled = p
        * f32::from_bits((n1.wrapping_add(127) as u32).wrapping_shl(23))
        * (1i32.wrapping_add(n).wrapping_sub(n1)) as f32;
    if x > MAX {
        f32::INFINITY
    } else if x < MIN {
        0.0
    } else {
        scaled
    }
}

/// natural logarithm
#[inline(always)]
pub fn ln(x: f32) -> f32 {
    libm::logf(x)
}

/// square root, correctly rounded (the FPU's instruction where there is one: see
/// `simd::sqrt_f32`)
#[inline(always)]
pub fn sqrt(x: f32) -> f32 {
    crate::simd::sqrt_f32(x)
}

/// `a ^ b`
#[inline(always)]
pub fn pow(a: f32, b: f32) -> f32 {
    libm::powf(a, b)
}

/// hyperbolic tangent
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    libm::tanhf(x)
}

/// The error function (see the module doc for its accuracy).
///
/// For `|x| < 0.5`, its Maclaurin series to `x^13`; above, Abramowitz and Stegun's 7.1.26,
/// `1 - t (a1 + t (a2 + ...)) e^(-x^2)` with `t = 1 / (1 + p |x|)` (absolute error below
/// 1.5e-7); from `|x| = 4` on, `erf` is 1 in f32. NaN stays NaN.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    // series: 2/sqrt(pi) * (x - x^3/3 + x^5/10 - x^7/42 + x^9/216 - x^11/1320 + x^13/9360)
    let z = x * x;
    let series = core::f32::consts::FRAC_2_SQRT_PI
        * x
        * (1.0
            + z * (-1.0 / 3.0
                + z * (1.0 / 10.0
                    + z * (-1.0 / 42.0
                        + z * (1.0 / 216.0 + z * (-1.0 / 1320.0 + z * (1.0 / 9360.0)))))));
    if a < 0.5 {
        series
    } else {
        erf_rational(x)
    }
}

/// Abramowitz and Stegun's 7.1.26: `erf(x) = 1 - t (a1 + t (a2 + ...)) e^(-x^2)` with
/// `t = 1 / (1 + ERF_P x)` for `x >= 0`.
pub(crate) const ERF_P: f32 = 0.327_591_1;
/// `a1..a5` of [`ERF_P`]'s formula.
pub(crate) const ERF_A: [f32; 5] = [
    0.254_829_6,
    -0.284_496_74,
    1.421_413_7,
    -1.453_152,
    1.061_405_4,
];

/// [`erf`] by Abramowitz and Stegun's 7.1.26 alone, on every `x`: within 1.5e-7 of the
/// exact value (absolute; near 0 its relative error grows, where [`erf`] takes its series).
#[inline(always)]
fn erf_rational(x: f32) -> f32 {
    const A: [f32; 5] = ERF_A;
    let a = x.abs();
    let t = 1.0 / (1.0 + ERF_P * a);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let tail = 1.0 - poly * exp(-(x * x));
    let tail = if tail > 1.0 { 1.0 } else { tail }; // (NaN stays NaN)
    if x < 0.0 {
        -tail
    } else {
        tail
    }
}

/// sine (see [`sin_cos`] for how, and the module doc for its accuracy)
#[inline]
pub fn sin(x: f32) -> f32 {
    sin_cos(x).0
}

/// cosine (see [`sin_cos`])
#[inline]
pub fn cos(x: f32) -> f32 {
    sin_cos(x).1
}

/// The bits of 2/pi after the binary point, behind 32 zero bits (so that a window may
/// start before the point): `TWO_OVER_PI[1..]` is `floor(2^224 * 2 / pi)`, computed from
/// pi by Machin's formula in exact integer arithmetic.
const TWO_OVER_PI: [u32; 8] = [
    0x0000_0000,
    0xA2F9_836E,
    0x4E44_1529,
    0xFC27_57D1,
    0xF534_DDC0,
    0xDB62_9599,
    0x3C43_9041,
    0xFE51_63AB,
];

/// `(sin x, cos x)` in f32 arithmetic only: no double-precision operation, so a
/// single-precision FPU (Cortex-M4F) runs it in hardware.
///
/// `|x| = n pi/2 + r` with `|r| <= pi/4`, found exactly in integer arithmetic
/// (Payne-Hanek): `x = m 2^(e-23)` with a 24-bit `m`, and `x 2/pi mod 4` is `m` times the
/// 96 bits of 2/pi that start where `m`'s product leaves the integers below 4 (the bits
/// before it only add multiples of 4); of the product, bits 94-95 are `n mod 4` and the 62
/// below them the fraction, so even the `x` closest to a multiple of pi/2 keeps more than
/// 30 significant bits. `r` = fraction x pi/2, also in integers, rounded to f32 once. Then
/// the Taylor polynomials of sin and cos to degree 9 and 10 on `r` (truncation below
/// 2e-9) and the quadrant's signs. NaN and infinities give NaN.
pub fn sin_cos(x: f32) -> (f32, f32) {
    const FRAC_PI_4: f32 = core::f32::consts::FRAC_PI_4;
    let a = x.abs();
    if a.is_nan() || a.is_infinite() {
        return (f32::NAN, f32::NAN);
    }
    let (n, r) = if a <= FRAC_PI_4 {
        (0, a)
    } else {
        reduce_half_pi(a.to_bits())
    };
    let z = r * r;
    let s =
        r + r * z * (-1.0 / 6.0 + z * (1.0 / 120.0 + z * (-1.0 / 5040.0 + z * (1.0 / 362_880.0))));
    let c = 1.0 - 0.5 * z
        + z * z
            * (1.0 / 24.0 + z * (-1.0 / 720.0 + z * (1.0 / 40_320.0 + z * (-1.0 / 3_628_800.0))));
    let (sin, cos) = match n & 3 {
        0 => (s, c),
        1 => (c, -s),
        2 => (-s, -c),
        _ => (-c, s),
    };
    // sin is odd (and keeps the sign of a zero), cos even
    (if x.is_sign_negative() { -sin } else { sin }, cos)
}

/// For a finite `a > pi/4` given by its bits: `(n mod 4, r)` with `a = n pi/2 + r`,
/// `|r| <= pi/4` (see [`sin_cos`]).
fn reduce_half_pi(bits: u32) -> (u32, f32) {
    let m = u64::from((bits & 0x007F_FFFF) | 0x0080_0000);
    // a = m 2^(e - 23); the window of 2/pi starts at bit e - 24 after the point, which is
    // bit e + 7 of TWO_OVER_PI (e >= -1 here, e + 7 <= 134, and 134 + 96 < 256)
    let start = (bits >> 23) as usize - 120;
    let (word, shift) = (start / 32, start % 32);
    let bits_at = |i: usize| {
        let pair = (u64::from(TWO_OVER_PI[word + i]) << 32) | u64::from(TWO_OVER_PI[word + i + 1]);
        (pair << shift >> 32) as u32
    };
    let (w0, w1, w2) = (
        u64::from(bits_at(0)),
        u64::from(bits_at(1)),
        u64::from(bits_at(2)),
    );
    // bits 32..96 of m * (w0 w1 w2): quadrant in the top 2, fraction in the 62 below
    let p = ((m * w0) << 32)
        .wrapping_add(m * w1)
        .wrapping_add((m * w2) >> 32);
    // round to the nearest quadrant; the fraction is then in [-1/2, 1/2) quarter turns
    let n = (p.wrapping_add(1 << 61) >> 62) as u32;
    let frac = p.wrapping_sub(u64::from(n) << 62) as i64;
    let mag = frac.unsigned_abs();
    if mag == 0 {
        return (n, 0.0);
    }
    // r = frac 2^-62 pi/2: the top 32 bits of the fraction times pi/2 in 2.30 fixed
    // point (0x6487ED51 = round(2^30 pi / 2)), whose top 32 bits become an f32 once
    const HALF_PI_Q30: u64 = 0x6487_ED51;
    let lz = mag.leading_zeros();
    let top = (mag << lz) >> 32; // in [2^31, 2^32)
    let prod = top * HALF_PI_Q30; // in [2^61, 2^63)
    let lz2 = prod.leading_zeros();
    let top2 = ((prod << lz2) >> 32) as u32;
    // mag = top 2^(32 - lz), top pi/2 = prod 2^-30, prod = top2 2^(32 - lz2), so
    // r = mag 2^-62 pi/2 = top2 2^(-28 - lz - lz2), a normal power of two (lz <= 63)
    let scale = f32::from_bits((127 - 28 - lz - lz2) << 23);
    let r = top2 as f32 * scale;
    (n, if frac < 0 { -r } else { r })
}

/// round down
#[inline(always)]
pub fn floor(x: f32) -> f32 {
    libm::floorf(x)
}

/// round up
#[inline(always)]
pub fn ceil(x: f32) -> f32 {
    libm::ceilf(x)
}

/// round half to even (numpy, ONNX)
#[inline(always)]
pub fn round_half_even(x: f32) -> f32 {
    libm::rintf(x)
}

/// `1 / (1 + e^-x)`, without overflow for large |x|
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + exp(-x))
    } else {
        let e = exp(x);
        e / (1.0 + e)
    }
}

/// `x` if positive, else `alpha * x` (`-0` gives `+0`: the `+ 0.0` of [`relu`])
#[inline(always)]
pub fn leaky_relu(x: f32, alpha: f32) -> f32 {
    (if x < 0.0 { alpha * x } else { x }) + 0.0
}

/// `x` if positive, else `alpha * (e^x - 1)`
#[inline(always)]
pub fn elu(x: f32, alpha: f32) -> f32 {
    if x > 0.0 {
        x
    } else {
        alpha * libm::expm1f(x)
    }
}

/// scaled ELU (Klambauer et al. 2017)
#[inline(always)]
pub fn selu(x: f32) -> f32 {
    const ALPHA: f32 = 1.673_263_2;
    const SCALE: f32 = 1.050_701;
    SCALE * if x > 0.0 { x } else { ALPHA * libm::expm1f(x) }
}

/// GELU with the exact erf: `x * (1 + erf(x / sqrt 2)) / 2`, its erf without [`erf`]'s
/// series near 0 (the series keeps `erf`'s relative error small there; in GELU the
/// product with `x / 2` makes the absolute error small anyway, and the series is a third
/// of the work): within `2e-7 * max(1, |x|)` of the exact value (tested).
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_rational(x * core::f32::consts::FRAC_1_SQRT_2))
}

/// Clamp of [`GELU_P`] / [`GELU_Q`]'s rational form of GELU: `x` beyond it counts as
/// `+-GELU_CLAMP`, where `x * P(x^2) / Q(x^2)` is `+-0.5` in f32 (`Phi(-5.6)` is 1.1e-8,
/// under half an ulp of 0.5).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) const GELU_CLAMP: f32 = 5.6;
/// Numerator of the rational form of GELU taken by the AVX-512 and NEON kernels
/// (`simd::gelu_row_avx512`, `simd::gelu_row_neon`): `gelu(x) = x / 2 + x * w`, `w = x * P(x^2) / Q(x^2)`
/// approximating `Phi(x) - 1/2` on `[-GELU_CLAMP, GELU_CLAMP]`. Our own fit (Lawson's
/// weighted least squares toward the minimax, weights `min(1, |x|)` following the bound;
/// `benches/tools/gelu_fit.py` reproduces it): 2.2e-8 from `Phi(x) - 1/2` in f64, within
/// `2e-7 * max(1, |x|)` of GELU in f32 with fused multiply-adds (0.87 of it at worst on
/// a grid of 400 001 points of [-10, 10]). Without fused multiply-adds its roundings reach
/// the bound, so [`gelu`] keeps [`erf`]'s formula.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) const GELU_P: [f32; 7] = [
    0.398_941_93,
    0.037_736_33,
    0.004_628_242,
    0.000_189_406_4,
    3.459_058_7e-6,
    -2.229_707_6e-8,
    1.084_630_4e-10,
];
/// Denominator of [`GELU_P`]'s rational form (every coefficient positive: no pole).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) const GELU_Q: [f32; 5] = [
    1.0,
    0.261_253_42,
    0.030_150_268,
    0.001_939_352_7,
    6.877_816_5e-5,
];

/// GELU, tanh approximation
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // sqrt(2 / pi)
    0.5 * x * (1.0 + tanh(C * (x + 0.044_715 * x * x * x)))
}

/// `x * sigmoid(x)`
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x * sigmoid(x)
}

/// `x / (1 + |x|)`
#[inline(always)]
pub fn softsign(x: f32) -> f32 {
    x / (1.0 + abs(x))
}

/// `x` if positive, else `alpha * (e^(x / alpha) - 1)` (CELU)
#[inline(always)]
pub fn celu(x: f32, alpha: f32) -> f32 {
    if x > 0.0 {
        x
    } else {
        alpha * libm::expm1f(x / alpha)
    }
}

/// `x` above `alpha`, else 0; NaN stays NaN (`-0` above a negative `alpha` gives `+0`:
/// the `+ 0.0` of [`relu`])
#[inline(always)]
pub fn thresholded_relu(x: f32, alpha: f32) -> f32 {
    (if x <= alpha { 0.0 } else { x }) + 0.0
}

/// `x * relu6(x + 3) / 6`
#[inline(always)]
pub fn hard_swish(x: f32) -> f32 {
    x * clip(x + 3.0, 0.0, 6.0) / 6.0
}

/// `ln(1 + e^x)`, stable for large |x|
#[inline(always)]
pub fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        libm::log1pf(exp(x))
    }
}

/// `x * tanh(softplus(x))`
#[inline(always)]
pub fn mish(x: f32) -> f32 {
    x * tanh(softplus(x))
}

#[cfg(test)]
mod tests {
    /// Every point of the sweeps below, but every 100th under miri (which interprets).
    const SWEEP_STEP: usize = if cfg!(miri) { 100 } else { 1 };
    use super::*;

    extern crate std;

    /// Units in the last place between `got` and the f64 value `want`, at `want`'s scale.
    fn ulps(got: f32, want: f64) -> f64 {
        let w = want as f32;
        let ulp = (f32::from_bits(w.abs().to_bits() + 1) - w.abs()) as f64;
        (got as f64 - want).abs() / ulp
    }

    /// `exp` against f64's `exp` on 200 001 points of [-87.3, 88.7], the overflow and
    /// underflow edges, and the special values.
    #[test]
    fn exp_is_within_two_ulp() {
        let mut worst = 0.0f64;
        for i in (0..=200_000).step_by(SWEEP_STEP) {
            let x = -87.3 + 176.0 * i as f32 / 200_000.0;
            worst = worst.max(ulps(exp(x), (x as f64).exp()));
        }
        assert!(worst <= 2.0, "exp: {worst} ulp");
        for x in [
            0.0f32, -0.0, 1.0, -1.0, 88.72, 88.722_83, -87.33, 1e-10, -1e-10,
        ] {
            assert!(ulps(exp(x), (x as f64).exp()) <= 2.0, "exp({x})");
        }
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(89.0), f32::INFINITY);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!(exp(f32::NAN).is_nan());
    }

    /// `erf` against libm's f64 `erf` on 200 001 points of [-5, 5] and the special values.
    #[test]
    fn erf_is_within_4e_7() {
        let mut worst = 0.0f64;
        let mut worst_rel = 0.0f64;
        for i in (0..=200_000).step_by(SWEEP_STEP) {
            let x = -5.0 + 10.0 * i as f32 / 200_000.0;
            let want = libm::erf(x as f64);
            let err = (erf(x) as f64 - want).abs();
            worst = worst.max(err);
            if want != 0.0 {
                worst_rel = worst_rel.max(err / want.abs());
            }
        }
        assert!(
            worst <= 4e-7 && worst_rel <= 2e-6,
            "erf: {worst:e} absolute, {worst_rel:e} relative"
        );
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(erf(10.0), 1.0);
        assert_eq!(erf(-10.0), -1.0);
        assert_eq!(erf(f32::INFINITY), 1.0);
        assert!(erf(f32::NAN).is_nan());
        assert!((erf(1e-20) as f64 - 1.128_379_167e-20).abs() < 1e-26);
    }

    /// `gelu` against its definition in f64 (libm's `erf`) on 200 001 points of [-8, 8]:
    /// within `2e-7 * max(1, |x|)`, and exactly 0 at 0.
    #[test]
    fn gelu_is_within_2e_7_of_its_definition() {
        let mut worst = 0.0f64;
        for i in (0..=200_000).step_by(SWEEP_STEP) {
            let x = -8.0 + 16.0 * i as f32 / 200_000.0;
            let x64 = f64::from(x);
            let want = 0.5 * x64 * (1.0 + libm::erf(x64 / core::f64::consts::SQRT_2));
            let err = (f64::from(gelu(x)) - want).abs() / x64.abs().max(1.0);
            worst = worst.max(err);
        }
        assert!(worst <= 2e-7, "gelu: {worst:e}");
        assert_eq!(gelu(0.0), 0.0);
        assert!(gelu(f32::NAN).is_nan());
    }

    /// `sin` and `cos` against f64's on a dense sweep of [-10, 10], on 65 536 bit
    /// patterns spread over every exponent (both signs), on the floats nearest to the
    /// first 20 000 multiples of pi/2 (where the results are smallest, so an inexact
    /// reduction would show), and on the special values.
    #[test]
    fn sin_cos_are_within_two_ulp() {
        let mut worst = (0.0f64, 0.0f32);
        let mut check = |x: f32| {
            let (s, c) = sin_cos(x);
            assert_eq!(
                (s.to_bits(), c.to_bits()),
                (sin(x).to_bits(), cos(x).to_bits())
            );
            let err = ulps(s, f64::from(x).sin()).max(ulps(c, f64::from(x).cos()));
            if err > worst.0 {
                worst = (err, x);
            }
        };
        for i in (0..=200_000).step_by(SWEEP_STEP) {
            check(-10.0 + 20.0 * i as f32 / 200_000.0);
        }
        for bits in (0..0x7F80_0000u32).step_by(32_640 * SWEEP_STEP) {
            check(f32::from_bits(bits));
            check(-f32::from_bits(bits));
        }
        for k in (1..20_000).step_by(SWEEP_STEP) {
            let x = (f64::from(k) * core::f64::consts::FRAC_PI_2) as f32;
            for near in [
                x,
                f32::from_bits(x.to_bits() + 1),
                f32::from_bits(x.to_bits() - 1),
            ] {
                check(near);
            }
        }
        check(f32::MAX);
        check(f32::MIN_POSITIVE);
        let (err, at) = worst;
        assert!(err <= 2.0, "sin/cos: {err} ulp at {at:e}");
        assert_eq!(sin(0.0).to_bits(), 0.0f32.to_bits());
        assert_eq!(sin(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(cos(0.0), 1.0);
        for x in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
            assert!(sin(x).is_nan() && cos(x).is_nan());
        }
    }

    /// `sqrt` is correctly rounded: the f64 square root (itself correctly rounded, and
    /// fine enough that rounding it to f32 again changes nothing) rounded to f32, on
    /// bit patterns over the whole range, and the special values.
    #[test]
    fn sqrt_is_correctly_rounded() {
        for bits in (0..0x7F80_0000u32).step_by(4_093 * SWEEP_STEP) {
            let x = f32::from_bits(bits);
            assert_eq!(
                sqrt(x).to_bits(),
                (f64::from(x).sqrt() as f32).to_bits(),
                "sqrt({x:e})"
            );
        }
        assert_eq!(sqrt(f32::INFINITY), f32::INFINITY);
        assert_eq!(sqrt(-0.0).to_bits(), (-0.0f32).to_bits());
        assert!(sqrt(-1.0).is_nan() && sqrt(f32::NAN).is_nan());
    }

    #[test]
    fn known_values() {
        // erf(1) = 0.8427007929497149 (Abramowitz & Stegun table 7.1)
        assert!((erf(1.0) - 0.842_700_8).abs() < 1e-6);
        // gelu(1) = 0.5 * (1 + erf(1/sqrt 2)) = 0.8413447460685429
        assert!((gelu(1.0) - 0.841_344_8).abs() < 1e-6);
        assert_eq!(sigmoid(0.0), 0.5);
        assert!(sigmoid(-100.0) >= 0.0 && sigmoid(100.0) <= 1.0);
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(3.5), 4.0);
        assert!(softplus(100.0).is_finite());
        assert!(max(f32::NAN, 1.0).is_nan());
    }

    /// The ReLU family's `+ 0.0` (kept out of masked stores) changes only the sign of a
    /// zero result: NaN, infinities and every other value are as the definitions say.
    #[test]
    fn relus_keep_their_values_and_give_positive_zeros() {
        for x in [
            -3.5f32,
            -1e-40,
            -0.0,
            0.0,
            1e-40,
            2.25,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ] {
            let want = if x < 0.0 { 0.0 } else { x };
            assert_eq!(relu(x), want, "relu({x})");
            assert_eq!(leaky_relu(x, 0.5), if x < 0.0 { 0.5 * x } else { x });
            assert_eq!(thresholded_relu(x, 1.0), if x <= 1.0 { 0.0 } else { x });
        }
        for zero in [
            relu(-0.0),
            relu(-2.0),
            leaky_relu(-0.0, 0.5),
            thresholded_relu(-0.0, -1.0),
        ] {
            assert_eq!(zero.to_bits(), 0, "{zero} is not +0");
        }
        assert!(relu(f32::NAN).is_nan() && leaky_relu(f32::NAN, 0.5).is_nan());
        assert!(thresholded_relu(f32::NAN, 1.0).is_nan());
    }
}

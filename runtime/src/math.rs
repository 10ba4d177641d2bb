//! Elementwise functions on f32, through `libm` so they work without std.
//!
//! Accuracy: `exp`, `ln`, `tanh`, `erf`, `sin`, `cos` are libm's (within 1-2 ulp);
//! the composite functions (gelu, silu, mish, ...) follow their definitions literally.

/// `max(x, 0)`; NaN stays NaN.
#[inline(always)]
pub fn relu(x: f32) -> f32 {
    if x < 0.0 {
        0.0
    } else {
        x
    }
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

/// `e^x`
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    libm::expf(x)
}

/// natural logarithm
#[inline(always)]
pub fn ln(x: f32) -> f32 {
    libm::logf(x)
}

/// square root
#[inline(always)]
pub fn sqrt(x: f32) -> f32 {
    libm::sqrtf(x)
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

/// error function
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    libm::erff(x)
}

/// sine
#[inline(always)]
pub fn sin(x: f32) -> f32 {
    libm::sinf(x)
}

/// cosine
#[inline(always)]
pub fn cos(x: f32) -> f32 {
    libm::cosf(x)
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

/// `x` if positive, else `alpha * x`
#[inline(always)]
pub fn leaky_relu(x: f32, alpha: f32) -> f32 {
    if x < 0.0 {
        alpha * x
    } else {
        x
    }
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

/// GELU with the exact erf: `x * (1 + erf(x / sqrt 2)) / 2`
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * core::f32::consts::FRAC_1_SQRT_2))
}

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
    use super::*;

    #[test]
    fn known_values() {
        // erf(1) = 0.8427007929497149 (Abramowitz & Stegun table 7.1)
        assert!((erf(1.0) - 0.842_700_8).abs() < 1e-6);
        // gelu(1) = 0.5 * (1 + erf(1/sqrt 2)) = 0.8413447460685429
        assert!((gelu(1.0) - 0.841_344_75).abs() < 1e-6);
        assert_eq!(sigmoid(0.0), 0.5);
        assert!(sigmoid(-100.0) >= 0.0 && sigmoid(100.0) <= 1.0);
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(3.5), 4.0);
        assert!(softplus(100.0).is_finite());
        assert!(max(f32::NAN, 1.0).is_nan());
    }
}

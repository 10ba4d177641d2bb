//! What the test crates of the workspace share (`dnnfusion-compiler`'s tests and the
//! `dnnfusion-tests` package): one seeded random number generator, so that every test
//! draws from the same well-known stream, and the comparisons with a reference run.
//!
//! The generator is xorshift64* (Vigna, "An experimental exploration of Marsaglia's
//! xorshift generators, scrambled", 2016): small, fast, and good enough for test data.
//! Its streams are part of the tests: a seed must keep giving the same numbers, so the
//! random graphs, inputs and mutations a test checks stay the ones it checked before.

/// xorshift64*, seeded. The field is the state: `Rng(seed)` starts a stream at `seed`
/// (which must not be 0); [`Rng::new`] mixes any seed first.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// A generator whose stream depends on every bit of `seed` (0 included): the seed is
    /// scrambled and the first four draws are dropped.
    pub fn new(seed: u64) -> Self {
        let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03);
        if r.0 == 0 {
            r.0 = 1;
        }
        for _ in 0..4 {
            r.next_u64();
        }
        r
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`, 53 bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[0, 1)`, 24 bits (every value exact in `f32`).
    pub fn unit_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit_f32()
    }

    /// Uniform in `0..n`; 0 when `n == 0`, without a draw.
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }

    /// Fisher-Yates.
    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            let j = self.below(i + 1);
            xs.swap(i, j);
        }
    }
}

/// The tolerance of every comparison with a reference run (PyTorch, ONNX Runtime, an f64
/// computation) on a whole model: `1e-5 * max(1, max |expected|)` on the largest
/// absolute error, room for f32 arithmetic that sums in another order.
pub fn reference_tolerance(expected: &[f32]) -> f32 {
    1e-5 * expected.iter().fold(1.0f32, |m, v| m.max(v.abs()))
}

/// The largest |a - b| (a NaN on either side counts as infinite).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).fold(0.0f32, |m, (x, y)| {
        let d = (x - y).abs();
        if d.is_nan() {
            f32::INFINITY
        } else {
            m.max(d)
        }
    })
}

/// The one element comparison of every test: `got` is within `tolerance` of the reference
/// `want`. NaN matches NaN and an infinity the same infinity; any other NaN is outside.
pub fn within(got: f32, want: f32, tolerance: f32) -> bool {
    let same_special = (got.is_nan() && want.is_nan()) || (got.is_infinite() && got == want);
    // a NaN difference is not within tolerance
    same_special || (got - want).abs() <= tolerance
}

/// An element outside the tolerance of [`first_mismatch`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mismatch {
    /// Its flat index.
    pub index: usize,
    /// The value under test.
    pub got: f32,
    /// The reference value.
    pub want: f32,
    /// The absolute tolerance it broke.
    pub tolerance: f32,
}

/// The first element where `got` and the reference `want` differ by more than
/// `rtol * max(1, max |finite want|)`, the comparison of generated code or a fusion plan
/// with the interpreter. NaN matches NaN and an infinity the same infinity; any other
/// NaN is a mismatch.
pub fn first_mismatch<'a>(
    got: impl IntoIterator<Item = &'a f32>,
    want: impl IntoIterator<Item = &'a f32> + Clone,
    rtol: f32,
) -> Option<Mismatch> {
    let scale =
        want.clone().into_iter().fold(
            1.0f32,
            |m, v| if v.is_finite() { m.max(v.abs()) } else { m },
        );
    let tolerance = rtol * scale;
    got.into_iter()
        .zip(want)
        .enumerate()
        .find_map(|(index, (&got, &want))| {
            (!within(got, want, tolerance)).then_some(Mismatch {
                index,
                got,
                want,
                tolerance,
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_the_ones_the_tests_were_written_against() {
        // the first draws of the seeds the tests use: a change here changes every test
        assert_eq!(Rng(0x9E37_79B9_7F4A_7C15).next_u64(), 0x0D83_B3E2_9A21_487A);
        assert_eq!(Rng::new(0).next_u64(), 0x6E59_414A_9DCC_A91D);
    }

    #[test]
    fn draws_stay_in_their_ranges() {
        let mut rng = Rng::new(7);
        for n in 1..50 {
            assert!(rng.below(n) < n);
            let r = rng.range(3, 3 + n);
            assert!((3..=3 + n).contains(&r));
            let u = rng.uniform(-2.0, 2.0);
            assert!((-2.0..2.0).contains(&u));
        }
        assert_eq!(rng.below(0), 0);
    }

    #[test]
    fn mismatches_are_found_relative_to_the_largest_finite_value() {
        let want = [10.0, f32::NAN, f32::INFINITY, 1.0];
        assert_eq!(
            first_mismatch(&[10.0, f32::NAN, f32::INFINITY, 1.0009], &want, 1e-4),
            None
        );
        let m = first_mismatch(&[10.0, f32::NAN, f32::INFINITY, 1.002], &want, 1e-4);
        assert_eq!(m.map(|m| m.index), Some(3));
        assert!(first_mismatch(&[f32::NAN], &[0.0], 1e-4).is_some());
        assert_eq!(max_abs_diff(&[1.0, f32::NAN], &[1.5, 0.0]), f32::INFINITY);
        assert_eq!(reference_tolerance(&[-3.0, 2.0]), 3e-5);
    }

    #[test]
    fn within_matches_specials_only_with_themselves() {
        assert!(within(1.0, 1.5, 0.5) && !within(1.0, 1.6, 0.5));
        assert!(within(f32::NAN, f32::NAN, 0.0));
        assert!(!within(f32::NAN, 1.0, f32::INFINITY) && !within(1.0, f32::NAN, 1.0));
        assert!(within(f32::INFINITY, f32::INFINITY, 0.0));
        assert!(!within(f32::INFINITY, f32::NEG_INFINITY, 1e30));
        assert!(!within(f32::INFINITY, 1e30, 1e30));
    }
}

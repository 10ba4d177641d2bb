//! Integer inputs: token ids and other indices a model declares as `ids: i64[..]` or
//! `ids: i32[..]`. The compiled graph computes in f32, so `run` converts them on entry.

/// The largest magnitude an f32 holds exactly as an integer (2^24).
const EXACT: i64 = 1 << 24;

/// A whole number that `f32` and the integer types convert exactly.
pub trait Index: Copy + Default {
    /// The value as i64.
    fn to_i64(self) -> i64;
    /// The value from i64, when it fits.
    fn from_i64(v: i64) -> Option<Self>;
}

impl Index for i64 {
    fn to_i64(self) -> i64 {
        self
    }
    fn from_i64(v: i64) -> Option<Self> {
        Some(v)
    }
}

impl Index for i32 {
    fn to_i64(self) -> i64 {
        i64::from(self)
    }
    fn from_i64(v: i64) -> Option<Self> {
        i32::try_from(v).ok()
    }
}

/// Converts indices to the f32 the graph computes with: exact for `|v| <= 2^24` (far
/// beyond any vocabulary); a larger value becomes NaN, which `gather` and `embedding`
/// turn into a NaN row, never into the row of a rounded index.
pub fn indices_to_f32<T: Index, const N: usize>(ids: &[T; N]) -> [f32; N] {
    core::array::from_fn(|i| {
        let v = ids[i].to_i64();
        if (-EXACT..=EXACT).contains(&v) {
            v as f32
        } else {
            f32::NAN
        }
    })
}

/// The inverse for callers that hold indices as f32 (the dynamically checked
/// `run_slices`): the position of the first value that is not a whole number
/// in range of `T`.
pub fn f32_to_indices<T: Index, const N: usize>(values: &[f32; N]) -> Result<[T; N], usize> {
    let mut bad = None;
    let out = core::array::from_fn(|i| {
        let x = values[i];
        let whole = x == crate::math::floor(x) && x.abs() <= EXACT as f32;
        match T::from_i64(x as i64) {
            Some(v) if whole => v,
            _ => {
                bad.get_or_insert(i);
                T::default()
            }
        }
    });
    match bad {
        Some(i) => Err(i),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_convert_exactly_and_huge_ones_become_nan() {
        let f = indices_to_f32(&[0i64, 5, -1, 1 << 24, (1 << 24) + 1, i64::MAX]);
        assert_eq!(&f[..4], &[0.0, 5.0, -1.0, 16_777_216.0]);
        assert!(f[4].is_nan() && f[5].is_nan());
        let g = indices_to_f32(&[7i32, -3]);
        assert_eq!(g, [7.0, -3.0]);
    }

    #[test]
    fn floats_back_to_indices() {
        assert_eq!(
            f32_to_indices::<i64, 3>(&[1.0, -2.0, 30522.0]),
            Ok([1, -2, 30522])
        );
        assert_eq!(f32_to_indices::<i32, 3>(&[1.0, 2.5, 3.0]), Err(1));
        assert_eq!(f32_to_indices::<i64, 2>(&[f32::NAN, 1.0]), Err(0));
        assert_eq!(f32_to_indices::<i64, 1>(&[1e10]), Err(0));
    }
}

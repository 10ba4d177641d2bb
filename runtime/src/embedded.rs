//! Parameter buffers compiled into the program: what `#[weights = "file"]` on a `dnn!`
//! model generates. The macro reads the file at compile time, checks it, runs the
//! model's load-time ops, and emits the prepared buffer as one aligned `static` byte
//! string (flash on a microcontroller); [`EmbeddedWeights::floats`] views it as the
//! `f32`s `run` reads, without copying.
#![allow(unsafe_code)]

/// `N` bytes of little-endian `f32`s, aligned for any SIMD load of them.
#[repr(C, align(64))]
pub struct EmbeddedWeights<const N: usize>(pub [u8; N]);

impl<const N: usize> EmbeddedWeights<N> {
    /// The bytes as `N / 4` floats, in place.
    ///
    /// Panics (at compile time when used in a `const` or `static`) when `N` is not a
    /// multiple of 4 or the target is big-endian (the bytes are little-endian).
    pub const fn floats(&'static self) -> &'static [f32] {
        assert!(N.is_multiple_of(4), "embedded weights hold whole f32s");
        if cfg!(target_endian = "big") {
            panic!("embedded weights are little-endian f32s; this target is big-endian");
        }
        // SAFETY: the struct is aligned to 64 >= align_of::<f32>(), so the array's start
        // is too; `N / 4` floats cover exactly its `N` bytes; every bit pattern is a valid
        // f32; the borrow is shared and 'static, and the array is never written.
        unsafe { core::slice::from_raw_parts(self.0.as_ptr().cast::<f32>(), N / 4) }
    }
}

/// `bytes` as little-endian `f32`s in place: `None` unless they start at a 4-byte
/// aligned address, hold whole floats and the target is little-endian (no bytes are
/// no floats, wherever they are).
pub(crate) fn floats_in_place(bytes: &[u8]) -> Option<&[f32]> {
    if bytes.is_empty() {
        return Some(&[]);
    }
    let aligned = (bytes.as_ptr() as usize).is_multiple_of(core::mem::align_of::<f32>());
    if !aligned || !bytes.len().is_multiple_of(4) || cfg!(target_endian = "big") {
        return None;
    }
    // SAFETY: the start is aligned for f32 (checked above), `len / 4` floats cover
    // exactly the bytes, every bit pattern is a valid f32, and the result borrows
    // `bytes` (shared, same lifetime), so nothing can write them meanwhile.
    Some(unsafe { core::slice::from_raw_parts(bytes.as_ptr().cast::<f32>(), bytes.len() / 4) })
}

#[cfg(test)]
mod tests {
    use super::*;

    static BYTES: EmbeddedWeights<12> = EmbeddedWeights([
        0x00, 0x00, 0x80, 0x3f, // 1.0
        0x00, 0x00, 0x00, 0xc0, // -2.0
        0x00, 0x00, 0xc0, 0x7f, // NaN
    ]);
    const FLOATS: &[f32] = BYTES.floats();

    #[test]
    fn embedded_bytes_are_read_as_little_endian_floats_in_place() {
        assert_eq!(FLOATS.len(), 3);
        assert_eq!(&FLOATS[..2], &[1.0, -2.0]);
        assert!(FLOATS[2].is_nan());
        assert_eq!(FLOATS.as_ptr().cast::<u8>(), BYTES.0.as_ptr());
        assert_eq!(FLOATS.as_ptr() as usize % 64, 0);
    }

    #[test]
    fn bytes_are_read_in_place_only_when_aligned_and_whole() {
        let bytes = &BYTES.0[..];
        assert_eq!(floats_in_place(&bytes[..8]), Some(&[1.0f32, -2.0][..]));
        assert_eq!(floats_in_place(&bytes[1..5]), None);
        assert_eq!(floats_in_place(&bytes[..6]), None);
        assert_eq!(floats_in_place(&[]), Some(&[][..]));
    }
}

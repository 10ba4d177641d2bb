//! Reading and writing `.npy` files of float32 or float64 (feature `std`), enough for
//! model inputs and reference outputs.

use std::string::{String, ToString};
use std::vec::Vec;
use std::{format, vec};

use ndarray::{ArrayD, IxDyn};

/// Parses a `.npy` file holding little-endian `f4` or `f8` data in C order; f64 data is
/// converted to f32.
pub fn read_f32(bytes: &[u8]) -> Result<ArrayD<f32>, String> {
    if bytes.get(..6) != Some(b"\x93NUMPY".as_slice()) {
        return Err("not a .npy file (bad magic)".to_string());
    }
    let major = *bytes.get(6).ok_or("truncated .npy header")?;
    let (header_len, start): (usize, usize) = match major {
        1 => (
            u16::from_le_bytes([
                bytes.get(8).copied().unwrap_or(0),
                bytes.get(9).copied().unwrap_or(0),
            ]) as usize,
            10,
        ),
        2 | 3 => {
            let b = bytes.get(8..12).ok_or("truncated .npy header")?;
            (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12)
        }
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header = start
        .checked_add(header_len)
        .and_then(|end| bytes.get(start..end))
        .ok_or("truncated .npy header")?;
    let header = std::str::from_utf8(header).map_err(|_| "the .npy header is not text")?;
    let descr = field(header, "descr").ok_or("the .npy header has no descr")?;
    if field(header, "fortran_order").is_some_and(|v| v.starts_with("True")) {
        return Err("Fortran-order .npy files are not supported".to_string());
    }
    let shape_text = field(header, "shape").ok_or("the .npy header has no shape")?;
    let Some(inside) = shape_text
        .strip_prefix('(')
        .and_then(|rest| rest.split(')').next())
    else {
        return Err(format!("bad .npy shape `{}`", shape_text.trim_end()));
    };
    let shape: Vec<usize> = inside
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad .npy shape `({inside})`: `{s}` is not a dimension"))
        })
        .collect::<Result<_, _>>()?;
    let data = bytes.get(start + header_len..).unwrap_or(&[]);
    let count = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("the .npy shape {shape:?} has too many elements"))?;
    // the dtype string, without its quotes (`<f4`)
    let dtype = descr
        .strip_prefix('\'')
        .and_then(|d| d.split('\'').next())
        .unwrap_or("");
    let size = match dtype {
        "<f4" => 4,
        "<f8" => 8,
        _ => {
            return Err(format!(
                "unsupported .npy dtype `{dtype}`: expected float32 (`<f4`) or float64 (`<f8`)"
            ))
        }
    };
    let needed = count
        .checked_mul(size)
        .ok_or_else(|| format!("the .npy shape {shape:?} has too many elements"))?;
    if data.len() < needed {
        return Err(format!(
            "truncated .npy data: shape {shape:?} needs {needed} bytes, the file has {}",
            data.len()
        ));
    }
    let values: Vec<f32> = if size == 4 {
        data.chunks_exact(4)
            .take(count)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        data.chunks_exact(8)
            .take(count)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect()
    };
    ArrayD::from_shape_vec(IxDyn(&shape), values).map_err(|e| e.to_string())
}

fn field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'"))?;
    let rest = header.get(at + key.len() + 2..)?;
    let colon = rest.find(':')?;
    Some(rest.get(colon + 1..)?.trim_start())
}

/// Serializes an f32 array as a version-1 `.npy` file.
pub fn write_f32(array: &ArrayD<f32>) -> Vec<u8> {
    let dims: Vec<String> = array.shape().iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = vec![0x93u8];
    out.extend_from_slice(b"NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in array.iter() {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let a =
            ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![1.0, 2.0, 3.0, 4.0, 5.0, -6.5]).unwrap();
        assert_eq!(read_f32(&write_f32(&a)).unwrap(), a);
        assert!(read_f32(b"garbage").is_err());
    }

    /// A version-1 file with `header` and `data`; `header_len` overrides the length field.
    fn npy(header: &str, header_len: Option<u16>, data: &[u8]) -> Vec<u8> {
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        let len = header_len.unwrap_or(header.len() as u16);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn hostile_headers_are_errors_not_panics() {
        let data = [0u8; 64];
        let cases: &[(&str, Option<u16>, &str)] = &[
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000, 1000000000000), }",
                None,
                "too many elements",
            ),
            (
                "{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904,), }",
                None,
                "too many elements",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904,), }",
                None,
                "too many elements",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3), }",
                None,
                "`-3` is not a dimension",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }",
                None,
                "`x` is not a dimension",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': 7, }",
                None,
                "bad .npy shape",
            ),
            ("{'descr': '<f4', 'shape': (2,), }", Some(u16::MAX), "truncated .npy header"),
            ("{'fortran_order': False, 'shape': (2,), }", None, "no descr"),
            ("{'descr': '<f4', 'fortran_order': False, }", None, "no shape"),
            ("{'descr': '<f4', 'shape': (100,), }", None, "truncated .npy data"),
            ("{'descr", None, "no descr"),
        ];
        for (header, len, want) in cases {
            let err = read_f32(&npy(header, *len, &data)).unwrap_err();
            assert!(err.contains(want), "{header}: {err}");
        }
        // a version-2 header length past the end of the file
        let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
        v2.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(read_f32(&v2).unwrap_err().contains("truncated"));
        // every prefix of a good file
        let good = write_f32(&ArrayD::from_shape_vec(IxDyn(&[2]), vec![1.0, 2.0]).unwrap());
        for cut in 0..good.len() {
            assert!(read_f32(&good[..cut]).is_err(), "{cut}");
        }
    }

    #[test]
    fn a_dtype_error_names_the_dtype_not_the_header() {
        let header = "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }          \n";
        let err = read_f32(&npy(header, None, &[0; 16])).unwrap_err();
        assert_eq!(
            err,
            "unsupported .npy dtype `<i8`: expected float32 (`<f4`) or float64 (`<f8`)"
        );
    }
}

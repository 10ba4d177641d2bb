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
    let (header_len, start) = match major {
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
    let header = bytes
        .get(start..start + header_len)
        .ok_or("truncated .npy header")?;
    let header = std::str::from_utf8(header).map_err(|_| "the .npy header is not text")?;
    let descr = field(header, "descr").ok_or("the .npy header has no descr")?;
    if field(header, "fortran_order").is_some_and(|v| v.starts_with("True")) {
        return Err("Fortran-order .npy files are not supported".to_string());
    }
    let shape_text = field(header, "shape").ok_or("the .npy header has no shape")?;
    let inside = shape_text
        .trim_start_matches('(')
        .split(')')
        .next()
        .unwrap_or("");
    let shape: Vec<usize> = inside
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad .npy shape `{shape_text}`"))
        })
        .collect::<Result<_, _>>()?;
    let data = bytes.get(start + header_len..).unwrap_or(&[]);
    let count: usize = shape.iter().product();
    let values: Vec<f32> = if descr.starts_with("'<f4'") {
        if data.len() < count * 4 {
            return Err("truncated .npy data".to_string());
        }
        data.chunks_exact(4)
            .take(count)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else if descr.starts_with("'<f8'") {
        if data.len() < count * 8 {
            return Err("truncated .npy data".to_string());
        }
        data.chunks_exact(8)
            .take(count)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect()
    } else {
        return Err(format!("unsupported .npy dtype {descr}"));
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
}

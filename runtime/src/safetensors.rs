//! A safetensors reader for `no_std`: validates names, dtypes, shapes and offsets and
//! copies the floats into a caller's buffer. Never allocates, never panics on bad bytes.
//!
//! Format: 8 bytes little-endian header length `n`, `n` bytes of JSON
//! (`{"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...}` with an
//! optional `"__metadata__"` object), then the data, offsets relative to its start.

use crate::{LoadError, ParamSpec, TensorName};

/// Longest tensor name or dtype the reader decodes.
const MAX_NAME: usize = 256;
/// Highest rank the reader accepts.
const MAX_RANK: usize = 8;

/// One header entry.
struct Entry<'a> {
    name: &'a str,
    dtype: TensorName,
    shape: [usize; MAX_RANK],
    rank: usize,
    begin: usize,
    end: usize,
}

/// Fills `dest` from the file: every tensor of `specs` must be present exactly, with
/// dtype F32 and the declared shape, and the file may hold no other tensor.
pub fn load_into(bytes: &[u8], specs: &[ParamSpec], dest: &mut [f32]) -> Result<(), LoadError> {
    let needed: usize = specs.iter().map(|s| s.offset + s.len()).max().unwrap_or(0);
    if dest.len() < needed {
        return Err(LoadError::BufferLength {
            expected: needed,
            found: dest.len(),
        });
    }
    let (header, data) = split(bytes)?;
    // every entry must be a model tensor, well formed, and in bounds
    let mut count = 0usize;
    let mut scratch = [0u8; MAX_NAME];
    let mut cursor = Cursor {
        bytes: header,
        at: 0,
    };
    cursor.expect(b'{')?;
    if !cursor.eat(b'}') {
        loop {
            let entry = cursor.entry(&mut scratch)?;
            if let Some(entry) = entry {
                count += 1;
                let Some(spec) = specs.iter().find(|s| s.name == entry.name) else {
                    return Err(LoadError::UnexpectedTensor {
                        tensor: TensorName::new(entry.name),
                    });
                };
                copy(&entry, spec, data, dest)?;
            }
            if cursor.eat(b',') {
                continue;
            }
            cursor.expect(b'}')?;
            break;
        }
    }
    cursor.skip_ws();
    if cursor.at != header.len() {
        return Err(LoadError::Malformed {
            reason: "trailing bytes after the header object",
        });
    }
    if count != specs.len() {
        // a duplicate or a missing name: find the first spec the header lacks
        for spec in specs {
            if !header_has(header, spec.name)? {
                return Err(LoadError::MissingTensor { tensor: spec.name });
            }
        }
        return Err(LoadError::Malformed {
            reason: "a tensor name appears twice in the header",
        });
    }
    Ok(())
}

fn split(bytes: &[u8]) -> Result<(&[u8], &[u8]), LoadError> {
    let Some(len_bytes) = bytes.get(..8) else {
        return Err(LoadError::Truncated {
            tensor: TensorName::new(""),
            needed: 8,
            found: bytes.len(),
        });
    };
    let mut raw = [0u8; 8];
    raw.copy_from_slice(len_bytes);
    let n = u64::from_le_bytes(raw);
    let end = usize::try_from(n)
        .ok()
        .and_then(|n| n.checked_add(8))
        .ok_or(LoadError::Malformed {
            reason: "header length overflows",
        })?;
    let header = bytes.get(8..end).ok_or(LoadError::Truncated {
        tensor: TensorName::new(""),
        needed: end,
        found: bytes.len(),
    })?;
    let data = bytes.get(end..).unwrap_or(&[]);
    Ok((header, data))
}

fn copy(
    entry: &Entry<'_>,
    spec: &ParamSpec,
    data: &[u8],
    dest: &mut [f32],
) -> Result<(), LoadError> {
    if entry.dtype.as_str() != "F32" {
        return Err(LoadError::WrongDtype {
            tensor: spec.name,
            found: entry.dtype,
        });
    }
    if entry.rank != spec.shape.len() || entry.shape.get(..entry.rank) != Some(spec.shape) {
        return Err(LoadError::WrongShape {
            tensor: spec.name,
            expected: spec.shape,
            found: entry.shape,
            found_rank: entry.rank,
        });
    }
    let len = spec.len();
    if entry.end < entry.begin || entry.end - entry.begin != len * 4 {
        return Err(LoadError::Malformed {
            reason: "data_offsets do not match the tensor's shape and dtype",
        });
    }
    let Some(src) = data.get(entry.begin..entry.end) else {
        return Err(LoadError::Truncated {
            tensor: TensorName::new(spec.name),
            needed: entry.end,
            found: data.len(),
        });
    };
    let Some(dst) = dest.get_mut(spec.offset..spec.offset + len) else {
        return Err(LoadError::BufferLength {
            expected: spec.offset + len,
            found: dest.len(),
        });
    };
    for (d, chunk) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *d = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    Ok(())
}

/// True when the header has a tensor called `name`.
fn header_has(header: &[u8], name: &str) -> Result<bool, LoadError> {
    let mut scratch = [0u8; MAX_NAME];
    let mut cursor = Cursor {
        bytes: header,
        at: 0,
    };
    cursor.expect(b'{')?;
    if cursor.eat(b'}') {
        return Ok(false);
    }
    loop {
        if let Some(entry) = cursor.entry(&mut scratch)? {
            if entry.name == name {
                return Ok(true);
            }
        }
        if !cursor.eat(b',') {
            return Ok(false);
        }
    }
}

/// A position in the JSON header.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

const BAD: LoadError = LoadError::Malformed {
    reason: "the header is not the JSON safetensors expects",
};

impl<'a> Cursor<'a> {
    fn skip_ws(&mut self) {
        while matches!(self.bytes.get(self.at), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        self.skip_ws();
        if self.bytes.get(self.at) == Some(&b) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, b: u8) -> Result<(), LoadError> {
        if self.eat(b) {
            Ok(())
        } else {
            Err(BAD)
        }
    }

    /// A JSON string, decoded into `buf`.
    fn string<'b>(&mut self, buf: &'b mut [u8; MAX_NAME]) -> Result<&'b str, LoadError> {
        self.expect(b'"')?;
        let mut len = 0;
        loop {
            let b = *self.bytes.get(self.at).ok_or(BAD)?;
            self.at += 1;
            let decoded = match b {
                b'"' => break,
                b'\\' => {
                    let e = *self.bytes.get(self.at).ok_or(BAD)?;
                    self.at += 1;
                    match e {
                        b'"' | b'\\' | b'/' => e,
                        b'n' => b'\n',
                        b't' => b'\t',
                        b'r' => b'\r',
                        b'b' => 8,
                        b'f' => 12,
                        b'u' => {
                            // \uXXXX: decode to UTF-8 (surrogate pairs are refused)
                            let hex = self.bytes.get(self.at..self.at + 4).ok_or(BAD)?;
                            self.at += 4;
                            let mut code = 0u32;
                            for &h in hex {
                                code = code * 16 + (h as char).to_digit(16).ok_or(BAD)?;
                            }
                            let c = char::from_u32(code).ok_or(BAD)?;
                            let mut utf8 = [0u8; 4];
                            for &u in c.encode_utf8(&mut utf8).as_bytes() {
                                *buf.get_mut(len).ok_or(LoadError::Malformed {
                                    reason: "a name is longer than 256 bytes",
                                })? = u;
                                len += 1;
                            }
                            continue;
                        }
                        _ => return Err(BAD),
                    }
                }
                c if c < 0x20 => return Err(BAD),
                c => c,
            };
            *buf.get_mut(len).ok_or(LoadError::Malformed {
                reason: "a name is longer than 256 bytes",
            })? = decoded;
            len += 1;
        }
        core::str::from_utf8(buf.get(..len).ok_or(BAD)?).map_err(|_| BAD)
    }

    fn number(&mut self) -> Result<usize, LoadError> {
        self.skip_ws();
        let start = self.at;
        let mut value: usize = 0;
        while let Some(&d @ b'0'..=b'9') = self.bytes.get(self.at) {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add((d - b'0') as usize))
                .ok_or(BAD)?;
            self.at += 1;
        }
        if self.at == start {
            Err(BAD)
        } else {
            Ok(value)
        }
    }

    /// Skips any JSON value (for `__metadata__` and unknown fields).
    fn skip_value(&mut self, depth: usize) -> Result<(), LoadError> {
        if depth > 16 {
            return Err(BAD);
        }
        self.skip_ws();
        match self.bytes.get(self.at) {
            Some(b'"') => {
                let mut buf = [0u8; MAX_NAME];
                // metadata strings may be long: skip them without decoding
                self.at += 1;
                loop {
                    match self.bytes.get(self.at) {
                        Some(b'\\') => self.at += 2,
                        Some(b'"') => {
                            self.at += 1;
                            break;
                        }
                        Some(_) => self.at += 1,
                        None => return Err(BAD),
                    }
                }
                let _ = &mut buf;
                Ok(())
            }
            Some(b'{') | Some(b'[') => {
                let close = if self.bytes.get(self.at) == Some(&b'{') {
                    b'}'
                } else {
                    b']'
                };
                self.at += 1;
                if self.eat(close) {
                    return Ok(());
                }
                loop {
                    if close == b'}' {
                        self.skip_value(depth + 1)?;
                        self.expect(b':')?;
                    }
                    self.skip_value(depth + 1)?;
                    if self.eat(b',') {
                        continue;
                    }
                    return self.expect(close);
                }
            }
            Some(_) => {
                while matches!(
                    self.bytes.get(self.at),
                    Some(b'-' | b'+' | b'.' | b'0'..=b'9' | b'a'..=b'z' | b'E')
                ) {
                    self.at += 1;
                }
                Ok(())
            }
            None => Err(BAD),
        }
    }

    /// `"name": {...}`; `None` for `__metadata__`.
    fn entry<'b>(
        &mut self,
        scratch: &'b mut [u8; MAX_NAME],
    ) -> Result<Option<Entry<'b>>, LoadError> {
        let name = self.string(scratch)?;
        self.expect(b':')?;
        if name == "__metadata__" {
            self.skip_value(0)?;
            return Ok(None);
        }
        self.expect(b'{')?;
        let mut dtype = None;
        let mut shape = None;
        let mut offsets = None;
        if !self.eat(b'}') {
            loop {
                let mut key_buf = [0u8; MAX_NAME];
                let key = self.string(&mut key_buf)?;
                self.expect(b':')?;
                match key {
                    "dtype" => {
                        let mut buf = [0u8; MAX_NAME];
                        dtype = Some(TensorName::new(self.string(&mut buf)?));
                    }
                    "shape" => {
                        let mut dims = [0usize; MAX_RANK];
                        let mut rank = 0;
                        self.expect(b'[')?;
                        if !self.eat(b']') {
                            loop {
                                let d = self.number()?;
                                *dims.get_mut(rank).ok_or(LoadError::Malformed {
                                    reason: "a tensor has more than 8 dimensions",
                                })? = d;
                                rank += 1;
                                if self.eat(b',') {
                                    continue;
                                }
                                self.expect(b']')?;
                                break;
                            }
                        }
                        shape = Some((dims, rank));
                    }
                    "data_offsets" => {
                        self.expect(b'[')?;
                        let begin = self.number()?;
                        self.expect(b',')?;
                        let end = self.number()?;
                        self.expect(b']')?;
                        offsets = Some((begin, end));
                    }
                    _ => self.skip_value(0)?,
                }
                if self.eat(b',') {
                    continue;
                }
                self.expect(b'}')?;
                break;
            }
        }
        match (dtype, shape, offsets) {
            (Some(dtype), Some((shape, rank)), Some((begin, end))) => Ok(Some(Entry {
                name,
                dtype,
                shape,
                rank,
                begin,
                end,
            })),
            _ => Err(LoadError::Malformed {
                reason: "a tensor entry lacks dtype, shape or data_offsets",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[ParamSpec] = &[
        ParamSpec {
            name: "a.weight",
            shape: &[2, 2],
            offset: 0,
        },
        ParamSpec {
            name: "a.bias",
            shape: &[2],
            offset: 4,
        },
    ];

    fn file(header: &str, floats: &[f32]) -> ([u8; 512], usize) {
        let mut out = [0u8; 512];
        let h = header.as_bytes();
        out[..8].copy_from_slice(&(h.len() as u64).to_le_bytes());
        out[8..8 + h.len()].copy_from_slice(h);
        let mut at = 8 + h.len();
        for f in floats {
            out[at..at + 4].copy_from_slice(&f.to_le_bytes());
            at += 4;
        }
        (out, at)
    }

    const GOOD: &str = r#"{"__metadata__":{"format":"pt"},"a.bias":{"dtype":"F32","shape":[2],"data_offsets":[16,24]},"a.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#;

    #[test]
    fn loads_a_valid_file() {
        let (bytes, len) = file(GOOD, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let mut dest = [0.0; 6];
        assert_eq!(load_into(&bytes[..len], SPECS, &mut dest), Ok(()));
        assert_eq!(dest, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn each_fault_has_its_own_error() {
        let mut dest = [0.0; 6];
        let floats = [0.0; 6];
        let missing = r#"{"a.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#;
        let (b, l) = file(missing, &floats);
        assert_eq!(
            load_into(&b[..l], SPECS, &mut dest),
            Err(LoadError::MissingTensor { tensor: "a.bias" })
        );
        let mut extra = [0u8; 256];
        let tail = br#","c":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        let body = &GOOD.as_bytes()[..GOOD.len() - 1];
        extra[..body.len()].copy_from_slice(body);
        extra[body.len()..body.len() + tail.len()].copy_from_slice(tail);
        let extra = core::str::from_utf8(&extra[..body.len() + tail.len()]).unwrap();
        let (b, l) = file(extra, &floats);
        assert!(
            matches!(load_into(&b[..l], SPECS, &mut dest), Err(LoadError::UnexpectedTensor { tensor }) if tensor.as_str() == "c")
        );
        let (b, l) = file(
            &GOOD.replace("\"F32\",\"shape\":[2]", "\"F16\",\"shape\":[2]"),
            &floats,
        );
        assert!(matches!(
            load_into(&b[..l], SPECS, &mut dest),
            Err(LoadError::WrongDtype {
                tensor: "a.bias",
                ..
            })
        ));
        let (b, l) = file(&GOOD.replace("[2,2]", "[4,1]"), &floats);
        assert!(matches!(
            load_into(&b[..l], SPECS, &mut dest),
            Err(LoadError::WrongShape {
                tensor: "a.weight",
                ..
            })
        ));
        let (b, l) = file(GOOD, &floats[..5]);
        assert!(matches!(
            load_into(&b[..l], SPECS, &mut dest),
            Err(LoadError::Truncated { .. })
        ));
        let (b, l) = file("{\"a.weight\": [", &floats);
        assert!(matches!(
            load_into(&b[..l], SPECS, &mut dest),
            Err(LoadError::Malformed { .. })
        ));
        assert!(matches!(
            load_into(&[1, 2, 3], SPECS, &mut dest),
            Err(LoadError::Truncated { .. })
        ));
    }

    #[test]
    fn never_panics_on_any_prefix_or_byte_flip() {
        let (bytes, len) = file(GOOD, &[1.0; 6]);
        let mut dest = [0.0; 6];
        for cut in 0..len {
            let _ = load_into(&bytes[..cut], SPECS, &mut dest);
        }
        let mut copy = bytes;
        for i in 0..len {
            for flip in [0x01u8, 0x20, 0x80, 0xff] {
                copy[i] ^= flip;
                let _ = load_into(&copy[..len], SPECS, &mut dest);
                copy[i] ^= flip;
            }
        }
    }
}

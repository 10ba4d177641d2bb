//! Reading the ONNX node tests: `case.json` (a small JSON parser) and `.npy` files, into
//! an [`onnx::Node`] plus the input and expected output tensors.
//!
//! Self-contained (std and `dnnfusion_onnx` only): the generator example in the
//! dnnfusion-onnx crate includes this file with `#[path]`, so it builds even when the
//! generated models do not.

use std::path::{Path, PathBuf};

use dnnfusion_onnx::{self as onnx, Attr, Tensor, TensorData};

/// One ONNX node test.
#[derive(Clone, Debug)]
pub struct Case {
    /// `test_abs`
    pub name: String,
    /// The node, every input's value known.
    pub node: onnx::Node,
    /// The input tensors, by slot (`None` for a skipped slot).
    pub inputs: Vec<Option<Tensor>>,
    /// The expected outputs, by slot.
    pub outputs: Vec<Option<Tensor>>,
    /// `|actual - expected| <= atol + rtol * |expected|`
    pub rtol: f64,
    /// see `rtol`
    pub atol: f64,
}

/// The case folders under `dir`, sorted by name.
pub fn case_dirs(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("case.json").is_file())
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// Reads one case folder.
pub fn load(dir: &Path) -> Result<Case, String> {
    let text = std::fs::read_to_string(dir.join("case.json"))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let json = Json::parse(&text).map_err(|e| format!("{}/case.json: {e}", dir.display()))?;
    let name = json
        .get("test")
        .and_then(Json::as_str)
        .ok_or("case.json: no `test`")?
        .to_string();
    let op_type = json
        .get("op_type")
        .and_then(Json::as_str)
        .ok_or("case.json: no `op_type`")?
        .to_string();
    let opset = json
        .get("opset")
        .and_then(Json::as_i64)
        .ok_or("case.json: no `opset`")?;
    let attributes = attrs(json.get("attributes"))?;
    let defaults = attrs(json.get("attribute_defaults"))?;
    let mut node_inputs = Vec::new();
    let mut inputs = Vec::new();
    for slot in json.get("inputs").and_then(Json::as_array).unwrap_or(&[]) {
        match slot.get("file").and_then(Json::as_str) {
            None => {
                node_inputs.push(None);
                inputs.push(None);
            }
            Some(file) => {
                let tensor = read_npy(&dir.join(file))?;
                let dtype = slot
                    .get("dtype")
                    .and_then(Json::as_str)
                    .unwrap_or("")
                    .to_string();
                node_inputs.push(Some(onnx::NodeInput {
                    name: slot
                        .get("name")
                        .and_then(Json::as_str)
                        .unwrap_or("")
                        .to_string(),
                    dtype,
                    shape: tensor.shape.clone(),
                    value: Some(tensor.clone()),
                }));
                inputs.push(Some(tensor));
            }
        }
    }
    let mut node_outputs = Vec::new();
    let mut outputs = Vec::new();
    for slot in json.get("outputs").and_then(Json::as_array).unwrap_or(&[]) {
        match slot.get("file").and_then(Json::as_str) {
            None => {
                node_outputs.push(None);
                outputs.push(None);
            }
            Some(file) => {
                let tensor = read_npy(&dir.join(file))?;
                node_outputs.push(Some(tensor.shape.clone()));
                outputs.push(Some(tensor));
            }
        }
    }
    let rtol = json.get("rtol").and_then(Json::as_f64).unwrap_or(1e-3);
    let atol = json.get("atol").and_then(Json::as_f64).unwrap_or(1e-7);
    let node = onnx::Node {
        op_type,
        opset,
        attributes,
        defaults,
        inputs: node_inputs,
        outputs: node_outputs,
    };
    Ok(Case {
        name,
        node,
        inputs,
        outputs,
        rtol,
        atol,
    })
}

fn attrs(json: Option<&Json>) -> Result<Vec<(String, Attr)>, String> {
    let Some(Json::Obj(fields)) = json else {
        return Ok(Vec::new());
    };
    fields
        .iter()
        .map(|(k, v)| {
            Ok((
                k.clone(),
                attr(v).map_err(|e| format!("attribute `{k}`: {e}"))?,
            ))
        })
        .collect()
}

fn attr(v: &Json) -> Result<Attr, String> {
    Ok(match v {
        Json::Num(raw) if is_int(raw) => Attr::Int(raw.parse().map_err(|e| format!("{raw}: {e}"))?),
        Json::Num(raw) => Attr::Float(raw.parse().map_err(|e| format!("{raw}: {e}"))?),
        Json::Str(s) => Attr::Str(s.clone()),
        Json::Arr(items) if items.iter().all(|i| matches!(i, Json::Num(r) if is_int(r))) => {
            Attr::Ints(items.iter().filter_map(Json::as_i64).collect())
        }
        Json::Arr(items) if items.iter().all(|i| matches!(i, Json::Num(_))) => Attr::Floats(
            items
                .iter()
                .map(|i| {
                    if let Json::Num(r) = i {
                        r.parse().unwrap_or(f32::NAN)
                    } else {
                        f32::NAN
                    }
                })
                .collect(),
        ),
        Json::Arr(items) => Attr::Strs(
            items
                .iter()
                .map(|i| i.as_str().unwrap_or("").to_string())
                .collect(),
        ),
        Json::Obj(_) => {
            let shape: Vec<usize> = v
                .get("shape")
                .and_then(Json::as_array)
                .unwrap_or(&[])
                .iter()
                .filter_map(Json::as_i64)
                .map(|d| d as usize)
                .collect();
            let data = v.get("data").and_then(Json::as_array).unwrap_or(&[]);
            let dtype = v.get("dtype").and_then(Json::as_str).unwrap_or("");
            let data = if dtype.starts_with("int") {
                TensorData::I64(data.iter().filter_map(Json::as_i64).collect())
            } else {
                TensorData::F32(
                    data.iter()
                        .filter_map(Json::as_f64)
                        .map(|x| x as f32)
                        .collect(),
                )
            };
            Attr::Tensor(Tensor { shape, data })
        }
        other => return Err(format!("unexpected value {other:?}")),
    })
}

fn is_int(raw: &str) -> bool {
    !raw.contains(['.', 'e', 'E'])
        && !raw.contains("inf")
        && !raw.contains("nan")
        && !raw.contains("NaN")
}

/// Reads an `.npy` file (version 1.0, C order, `<f4` or `<i8`).
pub fn read_npy(path: &Path) -> Result<Tensor, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let fail = |what: &str| format!("{}: {what}", path.display());
    if bytes.get(..6) != Some(b"\x93NUMPY".as_slice()) {
        return Err(fail("not an npy file"));
    }
    let (header_len, header_start) = match bytes.get(6) {
        Some(1) => (
            usize::from(u16::from_le_bytes([
                bytes.get(8).copied().unwrap_or(0),
                bytes.get(9).copied().unwrap_or(0),
            ])),
            10,
        ),
        Some(2 | 3) => {
            let b: [u8; 4] = bytes
                .get(8..12)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| fail("truncated header"))?;
            (u32::from_le_bytes(b) as usize, 12)
        }
        _ => return Err(fail("unknown npy version")),
    };
    let header = std::str::from_utf8(
        bytes
            .get(header_start..header_start + header_len)
            .ok_or_else(|| fail("truncated header"))?,
    )
    .map_err(|_| fail("header is not text"))?;
    let descr = header
        .split("'descr':")
        .nth(1)
        .and_then(|s| s.split('\'').nth(1))
        .ok_or_else(|| fail("no descr"))?;
    if header.contains("'fortran_order': True") {
        return Err(fail("Fortran order is not supported"));
    }
    let shape_text = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split('(').nth(1))
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| fail("no shape"))?;
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| fail("bad shape")))
        .collect::<Result<_, _>>()?;
    let count: usize = shape.iter().product();
    let data = bytes.get(header_start + header_len..).unwrap_or(&[]);
    let data = match descr {
        "<f4" => TensorData::F32(
            data.chunks_exact(4)
                .take(count)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        "<i8" => TensorData::I64(
            data.chunks_exact(8)
                .take(count)
                .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
        ),
        other => return Err(fail(&format!("dtype {other} is not supported"))),
    };
    let len = match &data {
        TensorData::F32(v) => v.len(),
        TensorData::I64(v) => v.len(),
    };
    if len != count {
        return Err(fail("truncated data"));
    }
    Ok(Tensor { shape, data })
}

/// A JSON value. Numbers keep their text, so integers and f32 attributes parse exactly.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// a number, as written
    Num(String),
    /// a string
    Str(String),
    /// an array
    Arr(Vec<Json>),
    /// an object, fields in order
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// Parses a whole document.
    pub fn parse(text: &str) -> Result<Json, String> {
        let mut p = Parser {
            s: text.as_bytes(),
            at: 0,
        };
        let v = p.value()?;
        p.ws();
        if p.at != p.s.len() {
            return Err(format!("trailing text at byte {}", p.at));
        }
        Ok(v)
    }

    /// The field `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        if let Json::Str(s) = self {
            Some(s)
        } else {
            None
        }
    }

    /// The elements, if it is an array.
    pub fn as_array(&self) -> Option<&[Json]> {
        if let Json::Arr(v) = self {
            Some(v)
        } else {
            None
        }
    }

    /// The integer, if it is one.
    pub fn as_i64(&self) -> Option<i64> {
        if let Json::Num(r) = self {
            r.parse().ok()
        } else {
            None
        }
    }

    /// The number as f64.
    pub fn as_f64(&self) -> Option<f64> {
        if let Json::Num(r) = self {
            r.parse().ok()
        } else {
            None
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.s.get(self.at).is_some_and(|c| c.is_ascii_whitespace()) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.at).copied()
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.at += 1;
            Ok(())
        } else {
            Err(format!("expected `{}` at byte {}", c as char, self.at))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        match self.peek() {
            Some(b'{') => {
                self.at += 1;
                let mut fields = Vec::new();
                if self.peek() == Some(b'}') {
                    self.at += 1;
                    return Ok(Json::Obj(fields));
                }
                loop {
                    let Json::Str(key) = self.value()? else {
                        return Err(format!("expected a key at byte {}", self.at));
                    };
                    self.expect(b':')?;
                    fields.push((key, self.value()?));
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b'}') => {
                            self.at += 1;
                            return Ok(Json::Obj(fields));
                        }
                        _ => return Err(format!("expected `,` or `}}` at byte {}", self.at)),
                    }
                }
            }
            Some(b'[') => {
                self.at += 1;
                let mut items = Vec::new();
                if self.peek() == Some(b']') {
                    self.at += 1;
                    return Ok(Json::Arr(items));
                }
                loop {
                    items.push(self.value()?);
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b']') => {
                            self.at += 1;
                            return Ok(Json::Arr(items));
                        }
                        _ => return Err(format!("expected `,` or `]` at byte {}", self.at)),
                    }
                }
            }
            Some(b'"') => {
                self.at += 1;
                let mut out = String::new();
                loop {
                    let c = *self.s.get(self.at).ok_or("unterminated string")?;
                    self.at += 1;
                    match c {
                        b'"' => return Ok(Json::Str(out)),
                        b'\\' => {
                            let e = *self.s.get(self.at).ok_or("unterminated escape")?;
                            self.at += 1;
                            match e {
                                b'n' => out.push('\n'),
                                b't' => out.push('\t'),
                                b'r' => out.push('\r'),
                                b'b' => out.push('\u{8}'),
                                b'f' => out.push('\u{c}'),
                                b'u' => {
                                    let hex = std::str::from_utf8(
                                        self.s.get(self.at..self.at + 4).ok_or("bad \\u escape")?,
                                    )
                                    .map_err(|_| "bad \\u escape")?;
                                    let code = u32::from_str_radix(hex, 16)
                                        .map_err(|_| "bad \\u escape")?;
                                    out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                                    self.at += 4;
                                }
                                other => out.push(other as char),
                            }
                        }
                        _ => {
                            // copy a whole UTF-8 sequence
                            let start = self.at - 1;
                            let mut end = self.at;
                            while self.s.get(end).is_some_and(|b| b & 0xC0 == 0x80) {
                                end += 1;
                            }
                            out.push_str(
                                std::str::from_utf8(self.s.get(start..end).unwrap_or(&[]))
                                    .map_err(|_| "bad UTF-8")?,
                            );
                            self.at = end;
                        }
                    }
                }
            }
            Some(b't') if self.s.get(self.at..self.at + 4) == Some(b"true".as_slice()) => {
                self.at += 4;
                Ok(Json::Bool(true))
            }
            Some(b'f') if self.s.get(self.at..self.at + 5) == Some(b"false".as_slice()) => {
                self.at += 5;
                Ok(Json::Bool(false))
            }
            Some(b'n') if self.s.get(self.at..self.at + 4) == Some(b"null".as_slice()) => {
                self.at += 4;
                Ok(Json::Null)
            }
            Some(c) if c == b'-' || c.is_ascii_digit() || c == b'N' || c == b'I' => {
                let start = self.at;
                while self
                    .s
                    .get(self.at)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'+' | b'.'))
                {
                    self.at += 1;
                }
                let raw = std::str::from_utf8(self.s.get(start..self.at).unwrap_or(&[]))
                    .map_err(|_| "bad number")?;
                Ok(Json::Num(raw.to_string()))
            }
            _ => Err(format!("unexpected input at byte {}", self.at)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_case_format() {
        let j = Json::parse(r#"{"a": [1, 2.5, -3e-2], "b": {"c": "x\"y"}, "d": null, "e": true}"#)
            .unwrap();
        assert_eq!(
            j.get("a"),
            Some(&Json::Arr(vec![
                Json::Num("1".into()),
                Json::Num("2.5".into()),
                Json::Num("-3e-2".into())
            ]))
        );
        assert_eq!(
            j.get("b").and_then(|b| b.get("c")).and_then(Json::as_str),
            Some("x\"y")
        );
        assert_eq!(j.get("d"), Some(&Json::Null));
        assert!(Json::parse("[1, 2").is_err());
    }

    #[test]
    fn ints_and_floats_stay_apart() {
        assert_eq!(attr(&Json::parse("2").unwrap()), Ok(Attr::Int(2)));
        assert_eq!(attr(&Json::parse("2.0").unwrap()), Ok(Attr::Float(2.0)));
        assert_eq!(
            attr(&Json::parse("[0.1, 1]").unwrap()),
            Ok(Attr::Floats(vec![0.1, 1.0]))
        );
    }
}

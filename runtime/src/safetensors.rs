//! A safetensors reader for `no_std`: validates names, dtypes, shapes and offsets and
//! copies the floats (converted to f32) into a caller's buffer. Never allocates, never
//! panics on bad bytes.
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

/// How [`load_into_with`] treats the tensors of a file that the model does not use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Refuse such a tensor with [`LoadError::UnexpectedTensor`] (PyTorch's
    /// `strict=True`, the default); when false, skip it whatever its dtype and report
    /// its name. A tensor the model needs but the file lacks is an error either way.
    pub strict: bool,
}

impl LoadOptions {
    /// Every tensor of the file must belong to the model (the default).
    pub const STRICT: LoadOptions = LoadOptions { strict: true };
    /// Tensors the model does not use are skipped (PyTorch's `strict=False`).
    pub const LENIENT: LoadOptions = LoadOptions { strict: false };
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions::STRICT
    }
}

/// Fills `dest` from the file: every tensor of `specs` must be present exactly, with
/// the declared shape and a float dtype, and the file may hold no other tensor (see
/// [`load_into_with`] for the dtypes, batch-norm counters and a lenient mode).
pub fn load_into(bytes: &[u8], specs: &[ParamSpec], dest: &mut [f32]) -> Result<(), LoadError> {
    load_into_with(bytes, specs, &[], dest, LoadOptions::STRICT, |_| {}).map(|_| ())
}

/// Fills `dest` from the file as [`load_into`] does, with `options`; returns how many
/// tensors were skipped and passes each one's name to `skipped` as it meets it (before
/// the rest of the file is checked, so an error may follow).
///
/// - Dtypes: F32 is copied; F16 and BF16 are converted to f32 exactly (subnormals,
///   infinities and NaN included); F64 is rounded to the nearest f32. Any other dtype of
///   a tensor the model needs is [`LoadError::WrongDtype`].
/// - `<prefix>.num_batches_tracked` (a PyTorch batch-norm counter, any dtype) is ignored
///   whenever the model has `<prefix>.running_mean` and `<prefix>.running_var`; it is
///   not reported as skipped.
/// - A tensor named like one of `scalars` (the model's `SCALARS`: single values an ONNX
///   import compiled into the code) is optional; when present it must hold one value
///   (any rank, every dimension 1), bit for bit the compiled one, else
///   [`LoadError::ScalarDiffers`]; it is neither unexpected nor reported as skipped.
/// - A tensor the model does not use is [`LoadError::UnexpectedTensor`] when
///   `options.strict`, else skipped (its data must still lie inside the file).
pub fn load_into_with(
    bytes: &[u8],
    specs: &[ParamSpec],
    scalars: &[(&'static str, f32)],
    dest: &mut [f32],
    options: LoadOptions,
    skipped: impl FnMut(&str),
) -> Result<usize, LoadError> {
    let needed: usize = specs.iter().map(|s| s.offset + s.len()).max().unwrap_or(0);
    if dest.len() < needed {
        return Err(LoadError::BufferLength {
            expected: needed,
            found: dest.len(),
        });
    }
    // fresh parameters: the buffer may be prepared again
    crate::prepare::clear_mark(dest);
    walk(
        bytes,
        specs,
        scalars,
        options,
        skipped,
        |entry, spec, data| copy(entry, spec, data, dest),
    )
    .map(|(skipped, _)| skipped)
}

/// The loaded parameters of `specs` read in place from the file's data, without copying:
/// a read-only buffer for `Params::borrowed` (so only for a model with nothing to prepare,
/// `LOADED_LEN == PARAM_LEN`). The file must hold exactly the model's tensors (a
/// `num_batches_tracked` counter aside, as in [`load_into`]), all F32, stored in the
/// order and at the offsets of `specs` (declaration order, back to back from the start
/// of the data, as `write_in_order` (feature `alloc`) writes them), and its data must start 4-byte
/// aligned in memory (`include_bytes!` aligns to 1: wrap it in a `#[repr(align(4))]`
/// struct; files padded their header to a multiple of 8 bytes). Anything else is
/// [`LoadError::NotInPlace`] naming the first tensor that does not fit, or the error
/// [`load_into`] would give.
pub fn in_place<'a>(bytes: &'a [u8], specs: &[ParamSpec]) -> Result<&'a [f32], LoadError> {
    let loaded: usize = specs.iter().map(|s| s.offset + s.len()).max().unwrap_or(0);
    let (_, data) = walk(
        bytes,
        specs,
        &[],
        LoadOptions::STRICT,
        |_| {},
        |entry, spec, data| {
            let not_in_place = |reason| LoadError::NotInPlace {
                tensor: TensorName::new(spec.name),
                reason,
            };
            check_entry(entry, spec, data)?;
            if entry.dtype.as_str() != "F32" {
                return Err(not_in_place("it is not F32"));
            }
            if entry.begin != spec.offset * 4 {
                return Err(not_in_place(
                "it is not where the model's layout puts it (tensors in declaration order, back to back)",
            ));
            }
            Ok(())
        },
    )?;
    let Some(floats) = data.get(..loaded * 4) else {
        return Err(LoadError::Truncated {
            tensor: TensorName::new(""),
            needed: loaded * 4,
            found: data.len(),
        });
    };
    crate::embedded::floats_in_place(floats).ok_or(LoadError::NotInPlace {
        tensor: TensorName::new(""),
        reason: "the data does not start at a 4-byte aligned address (or the target is big-endian)",
    })
}

/// Walks the header: every tensor of `specs` must be present exactly once (`on_param`
/// sees each with its spec and the file's data), `scalars` and other tensors as
/// [`load_into_with`] says. Returns how many were skipped, and the data.
fn walk<'a>(
    bytes: &'a [u8],
    specs: &[ParamSpec],
    scalars: &[(&'static str, f32)],
    options: LoadOptions,
    mut skipped: impl FnMut(&str),
    mut on_param: impl FnMut(&Entry<'_>, &ParamSpec, &[u8]) -> Result<(), LoadError>,
) -> Result<(usize, &'a [u8]), LoadError> {
    let (header, data) = split(bytes)?;
    // which specs were loaded: a bit each for the first SEEN_BITS, a header scan beyond
    let mut seen = [0u64; SEEN_BITS / 64];
    let mut loaded = 0usize;
    let mut skipped_count = 0usize;
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
                if let Some((index, spec)) =
                    specs.iter().enumerate().find(|(_, s)| s.name == entry.name)
                {
                    let twice = match seen.get_mut(index / 64) {
                        Some(word) => {
                            let bit = 1u64 << (index % 64);
                            let twice = *word & bit != 0;
                            *word |= bit;
                            twice
                        }
                        None => header_count(header, spec.name)? > 1,
                    };
                    if twice {
                        return Err(DUPLICATE);
                    }
                    on_param(&entry, spec, data)?;
                    loaded += 1;
                } else if let Some(&(key, compiled)) =
                    scalars.iter().find(|(key, _)| *key == entry.name)
                {
                    check_scalar(&entry, key, compiled, data)?;
                } else if is_batch_norm_counter(entry.name, specs) {
                    check_bounds(&entry, data)?;
                } else if options.strict {
                    return Err(LoadError::UnexpectedTensor {
                        tensor: TensorName::new(entry.name),
                    });
                } else {
                    check_bounds(&entry, data)?;
                    skipped_count += 1;
                    skipped(entry.name);
                }
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
    if loaded != specs.len() {
        for spec in specs {
            if header_count(header, spec.name)? == 0 {
                return Err(LoadError::MissingTensor { tensor: spec.name });
            }
        }
        return Err(DUPLICATE);
    }
    Ok((skipped_count, data))
}

/// Specs whose duplicates are found with a bit set (beyond, by scanning the header).
const SEEN_BITS: usize = 4096;

const DUPLICATE: LoadError = LoadError::Malformed {
    reason: "a tensor name appears twice in the header",
};

/// True for `<prefix>.num_batches_tracked` when the model has `<prefix>.running_mean`
/// and `<prefix>.running_var` (PyTorch saves the counter with every batch norm).
fn is_batch_norm_counter(name: &str, specs: &[ParamSpec]) -> bool {
    let Some(prefix) = name.strip_suffix(".num_batches_tracked") else {
        return false;
    };
    let has = |field: &str| {
        specs.iter().any(|s| {
            s.name
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix('.'))
                == Some(field)
        })
    };
    has("running_mean") && has("running_var")
}

/// Checks that the tensor of a scalar compiled into the model as `compiled` holds one
/// value, bit for bit that one.
fn check_scalar(
    entry: &Entry<'_>,
    key: &'static str,
    compiled: f32,
    data: &[u8],
) -> Result<(), LoadError> {
    let mut value = [f32::NAN];
    copy(
        entry,
        &ParamSpec::single_value(key, entry.rank),
        data,
        &mut value,
    )?;
    LoadError::check_scalar(key, compiled, value[0])
}

/// Checks that a tensor the model does not read lies inside the data.
fn check_bounds(entry: &Entry<'_>, data: &[u8]) -> Result<(), LoadError> {
    if entry.end < entry.begin {
        return Err(LoadError::Malformed {
            reason: "data_offsets end before they begin",
        });
    }
    if entry.end > data.len() {
        return Err(LoadError::Truncated {
            tensor: TensorName::new(entry.name),
            needed: entry.end,
            found: data.len(),
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

/// Checks a tensor of the model: a float dtype, the declared shape, offsets that match
/// them and lie inside the data. Returns the dtype and its bytes.
fn check_entry<'d>(
    entry: &Entry<'_>,
    spec: &ParamSpec,
    data: &'d [u8],
) -> Result<(Dtype, &'d [u8]), LoadError> {
    let dtype = match entry.dtype.as_str() {
        "F32" => Dtype::F32,
        "F16" => Dtype::F16,
        "BF16" => Dtype::BF16,
        "F64" => Dtype::F64,
        _ => {
            return Err(LoadError::WrongDtype {
                tensor: spec.name,
                found: entry.dtype,
            })
        }
    };
    if entry.rank != spec.shape.len() || entry.shape.get(..entry.rank) != Some(spec.shape) {
        return Err(LoadError::WrongShape {
            tensor: spec.name,
            expected: spec.shape,
            found: entry.shape,
            found_rank: entry.rank,
        });
    }
    let len = spec.len();
    if entry.end < entry.begin || Some(entry.end - entry.begin) != len.checked_mul(dtype.size()) {
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
    Ok((dtype, src))
}

fn copy(
    entry: &Entry<'_>,
    spec: &ParamSpec,
    data: &[u8],
    dest: &mut [f32],
) -> Result<(), LoadError> {
    let (dtype, src) = check_entry(entry, spec, data)?;
    let len = spec.len();
    let Some(dst) = dest.get_mut(spec.offset..spec.offset + len) else {
        return Err(LoadError::BufferLength {
            expected: spec.offset + len,
            found: dest.len(),
        });
    };
    match dtype {
        Dtype::F32 => {
            for (d, chunk) in dst.iter_mut().zip(src.chunks_exact(4)) {
                let mut raw = [0u8; 4];
                raw.copy_from_slice(chunk);
                *d = f32::from_le_bytes(raw);
            }
        }
        Dtype::F16 | Dtype::BF16 => {
            for (d, chunk) in dst.iter_mut().zip(src.chunks_exact(2)) {
                let mut raw = [0u8; 2];
                raw.copy_from_slice(chunk);
                let bits = u16::from_le_bytes(raw);
                *d = if dtype == Dtype::F16 {
                    f16_to_f32(bits)
                } else {
                    bf16_to_f32(bits)
                };
            }
        }
        Dtype::F64 => {
            for (d, chunk) in dst.iter_mut().zip(src.chunks_exact(8)) {
                let mut raw = [0u8; 8];
                raw.copy_from_slice(chunk);
                *d = f64::from_le_bytes(raw) as f32;
            }
        }
    }
    Ok(())
}

/// A safetensors file of the parameters in `buffer` (laid out as `specs` say), all F32,
/// stored in declaration order back to back: the layout [`in_place`] reads without
/// copying. The header is padded to a multiple of 8 bytes.
#[cfg(feature = "alloc")]
pub fn write_in_order(
    specs: &[ParamSpec],
    buffer: &[f32],
) -> Result<alloc::vec::Vec<u8>, LoadError> {
    use alloc::{format, string::String, vec::Vec};
    let mut header = String::from("{");
    let mut data: Vec<u8> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let floats =
            buffer
                .get(spec.offset..spec.offset + spec.len())
                .ok_or(LoadError::BufferLength {
                    expected: spec.offset + spec.len(),
                    found: buffer.len(),
                })?;
        if spec.offset * 4 != data.len() {
            return Err(LoadError::NotInPlace {
                tensor: TensorName::new(spec.name),
                reason: "the specs do not lie back to back in declaration order",
            });
        }
        let begin = data.len();
        data.extend(floats.iter().flat_map(|v| v.to_le_bytes()));
        let shape: Vec<String> = spec.shape.iter().map(|d| format!("{d}")).collect();
        let mut name = String::new();
        for c in spec.name.chars() {
            match c {
                '"' => name.push_str("\\\""),
                '\\' => name.push_str("\\\\"),
                c if (c as u32) < 0x20 => name.push_str(&format!("\\u{:04x}", c as u32)),
                c => name.push(c),
            }
        }
        header.push_str(&format!(
            "{}\"{name}\":{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{begin},{}]}}",
            if i == 0 { "" } else { "," },
            shape.join(","),
            data.len()
        ));
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut file = Vec::with_capacity(8 + header.len() + data.len());
    file.extend_from_slice(&(header.len() as u64).to_le_bytes());
    file.extend_from_slice(header.as_bytes());
    file.extend_from_slice(&data);
    Ok(file)
}

/// The float dtypes the reader converts to f32.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dtype {
    F32,
    F16,
    BF16,
    F64,
}

impl Dtype {
    /// Bytes per element.
    fn size(self) -> usize {
        match self {
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::F32 => 4,
            Dtype::F64 => 8,
        }
    }
}

/// IEEE half precision to f32, exactly (every f16 is an f32).
pub fn f16_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits >> 15) << 31;
    let exponent = u32::from((bits >> 10) & 0x1f);
    let mantissa = u32::from(bits & 0x3ff);
    let magnitude = match exponent {
        // zero and subnormals: mantissa * 2^-24, exact in f32
        0 => (mantissa as f32 * f32::from_bits(0x3380_0000)).to_bits(),
        // infinities and NaN, payload kept
        0x1f => 0x7f80_0000 | (mantissa << 13),
        // normal: rebias the exponent from 15 to 127
        _ => ((exponent + 112) << 23) | (mantissa << 13),
    };
    f32::from_bits(sign | magnitude)
}

/// bfloat16 to f32, exactly (bf16 is the upper half of an f32).
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// How many tensors of the header are called `name`.
fn header_count(header: &[u8], name: &str) -> Result<usize, LoadError> {
    let mut scratch = [0u8; MAX_NAME];
    let mut cursor = Cursor {
        bytes: header,
        at: 0,
    };
    cursor.expect(b'{')?;
    if cursor.eat(b'}') {
        return Ok(0);
    }
    let mut count = 0;
    loop {
        if let Some(entry) = cursor.entry(&mut scratch)? {
            if entry.name == name {
                count += 1;
            }
        }
        if !cursor.eat(b',') {
            return Ok(count);
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
            &GOOD.replace("\"F32\",\"shape\":[2]", "\"I64\",\"shape\":[2]"),
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

    fn raw_file(header: &str, data: &[u8]) -> ([u8; 512], usize) {
        let mut out = [0u8; 512];
        let h = header.as_bytes();
        out[..8].copy_from_slice(&(h.len() as u64).to_le_bytes());
        out[8..8 + h.len()].copy_from_slice(h);
        out[8 + h.len()..8 + h.len() + data.len()].copy_from_slice(data);
        (out, 8 + h.len() + data.len())
    }

    const BN_SPECS: &[ParamSpec] = &[
        ParamSpec {
            name: "bn.weight",
            shape: &[1],
            offset: 0,
        },
        ParamSpec {
            name: "bn.bias",
            shape: &[1],
            offset: 1,
        },
        ParamSpec {
            name: "bn.running_mean",
            shape: &[1],
            offset: 2,
        },
        ParamSpec {
            name: "bn.running_var",
            shape: &[1],
            offset: 3,
        },
    ];

    /// The four batch-norm floats 1..=4, then `extra` header entries with 8 bytes each
    /// (an int64 7) after them.
    fn bn_file(extra: &[&str]) -> ([u8; 512], usize) {
        let mut header = [0u8; 400];
        let mut at = 0;
        let mut push = |s: &str| {
            header[at..at + s.len()].copy_from_slice(s.as_bytes());
            at += s.len();
        };
        push(
            r#"{"bn.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"bn.bias":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"bn.running_mean":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},"bn.running_var":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}"#,
        );
        for e in extra {
            push(",");
            push(e);
        }
        push("}");
        let mut data = [0u8; 16 + 8 * 4];
        for (i, v) in [1.0f32, 2.0, 3.0, 4.0].iter().enumerate() {
            data[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
        for i in 0..extra.len() {
            data[16 + i * 8..24 + i * 8].copy_from_slice(&7i64.to_le_bytes());
        }
        let header = core::str::from_utf8(&header[..at]).unwrap();
        raw_file(header, &data[..16 + 8 * extra.len()])
    }

    #[test]
    fn a_batch_norm_counter_is_ignored_only_next_to_its_batch_norm() {
        let counter =
            r#""bn.num_batches_tracked":{"dtype":"I64","shape":[],"data_offsets":[16,24]}"#;
        for extra in [&[][..], &[counter][..]] {
            let (b, l) = bn_file(extra);
            let mut dest = [0.0; 4];
            assert_eq!(load_into(&b[..l], BN_SPECS, &mut dest), Ok(()), "{extra:?}");
            assert_eq!(dest, [1.0, 2.0, 3.0, 4.0]);
            let mut names = 0;
            let skipped = load_into_with(
                &b[..l],
                BN_SPECS,
                &[],
                &mut dest,
                LoadOptions::LENIENT,
                |_| names += 1,
            );
            assert_eq!((skipped, names), (Ok(0), 0), "a counter is not reported");
        }
        // a counter without its batch norm is a tensor the model does not use
        let stray =
            r#""bn2.num_batches_tracked":{"dtype":"I64","shape":[],"data_offsets":[16,24]}"#;
        let (b, l) = bn_file(&[stray]);
        let mut dest = [0.0; 4];
        assert!(matches!(
            load_into(&b[..l], BN_SPECS, &mut dest),
            Err(LoadError::UnexpectedTensor { tensor }) if tensor.as_str() == "bn2.num_batches_tracked"
        ));
        let (specs, _) = BN_SPECS.split_at(3); // no running_var
        let (b, l) = bn_file(&[counter]);
        let mut dest = [0.0; 3];
        let fewer = &[specs[0], specs[1], specs[2]];
        assert!(matches!(
            load_into(&b[..l], fewer, &mut dest),
            Err(LoadError::UnexpectedTensor { .. })
        ));
        // its data must still be in the file
        let (b, l) = bn_file(&[counter]);
        assert!(matches!(
            load_into(&b[..l - 1], BN_SPECS, &mut [0.0; 4]),
            Err(LoadError::Truncated { tensor, .. }) if tensor.as_str() == "bn.num_batches_tracked"
        ));
    }

    #[test]
    fn a_lenient_load_skips_and_names_the_tensors_the_model_does_not_use() {
        let steps = r#""steps":{"dtype":"I64","shape":[],"data_offsets":[16,24]}"#;
        let mask = r#""head.mask":{"dtype":"BOOL","shape":[8],"data_offsets":[24,32]}"#;
        let (b, l) = bn_file(&[steps, mask]);
        let mut dest = [0.0; 4];
        assert!(matches!(
            load_into(&b[..l], BN_SPECS, &mut dest),
            Err(LoadError::UnexpectedTensor { tensor }) if tensor.as_str() == "steps"
        ));
        let mut names = [TensorName::new(""); 2];
        let mut n = 0;
        let skipped = load_into_with(
            &b[..l],
            BN_SPECS,
            &[],
            &mut dest,
            LoadOptions::LENIENT,
            |name| {
                names[n] = TensorName::new(name);
                n += 1;
            },
        );
        assert_eq!(skipped, Ok(2));
        assert_eq!(
            [names[0].as_str(), names[1].as_str()],
            ["steps", "head.mask"]
        );
        assert_eq!(dest, [1.0, 2.0, 3.0, 4.0]);
        // a missing tensor is still an error
        let more = &[
            BN_SPECS[0],
            BN_SPECS[1],
            BN_SPECS[2],
            BN_SPECS[3],
            ParamSpec {
                name: "fc.weight",
                shape: &[1],
                offset: 4,
            },
        ];
        assert_eq!(
            load_into_with(
                &b[..l],
                more,
                &[],
                &mut [0.0; 5],
                LoadOptions::LENIENT,
                |_| {}
            ),
            Err(LoadError::MissingTensor {
                tensor: "fc.weight"
            })
        );
        // and so is a skipped tensor whose data is not in the file
        assert!(matches!(
            load_into_with(&b[..l - 1], BN_SPECS, &[], &mut dest, LoadOptions::LENIENT, |_| {}),
            Err(LoadError::Truncated { tensor, .. }) if tensor.as_str() == "head.mask"
        ));
        assert_eq!(LoadOptions::default(), LoadOptions::STRICT);
    }

    #[test]
    fn a_compiled_scalar_in_the_file_must_hold_the_compiled_value() {
        // `alpha`: F32, rank 0, 0.5 (bytes 16..20); `beta`: F16 [1, 1], 1.0 (bytes 20..22)
        let alpha = r#""alpha":{"dtype":"F32","shape":[],"data_offsets":[16,20]}"#;
        let beta = r#""beta":{"dtype":"F16","shape":[1,1],"data_offsets":[20,22]}"#;
        let (mut b, l) = bn_file(&[alpha, beta]);
        // the data: 16 bytes of batch norm, 8 for each extra entry
        let data = l - 32;
        b[data + 16..][..4].copy_from_slice(&0.5f32.to_le_bytes());
        b[data + 20..][..2].copy_from_slice(&0x3c00u16.to_le_bytes());
        let scalars = [("alpha", 0.5), ("beta", 1.0)];
        for options in [LoadOptions::STRICT, LoadOptions::LENIENT] {
            let mut dest = [0.0; 4];
            let mut names = 0;
            let load = load_into_with(&b[..l], BN_SPECS, &scalars, &mut dest, options, |_| {
                names += 1;
            });
            // checked, neither unexpected nor skipped
            assert_eq!((load, names), (Ok(0), 0));
            assert_eq!(dest, [1.0, 2.0, 3.0, 4.0]);
            // another value, even one ulp off, in either mode
            let off = [("alpha", 0.5f32.next_up()), ("beta", 1.0)];
            assert_eq!(
                load_into_with(&b[..l], BN_SPECS, &off, &mut dest, options, |_| {}),
                Err(LoadError::ScalarDiffers {
                    tensor: "alpha",
                    compiled: 0.5f32.next_up(),
                    found: 0.5
                })
            );
            // a scalar the file does not hold is fine: the model has its value
            let more = [("alpha", 0.5), ("beta", 1.0), ("gamma", 2.0)];
            assert_eq!(
                load_into_with(&b[..l], BN_SPECS, &more, &mut dest, options, |_| {}),
                Ok(0)
            );
        }
        // without the model's scalars, the strict load refuses them, the lenient one skips
        assert!(matches!(
            load_into(&b[..l], BN_SPECS, &mut [0.0; 4]),
            Err(LoadError::UnexpectedTensor { tensor }) if tensor.as_str() == "alpha"
        ));
        // a tensor of more than one value under a scalar's name
        let wide = r#""alpha":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}"#;
        let (b, l) = bn_file(&[wide]);
        assert!(matches!(
            load_into_with(
                &b[..l],
                BN_SPECS,
                &scalars,
                &mut [0.0; 4],
                LoadOptions::LENIENT,
                |_| {}
            ),
            Err(LoadError::WrongShape {
                tensor: "alpha",
                ..
            })
        ));
    }

    #[test]
    fn a_name_twice_is_refused_even_when_the_count_matches() {
        let twice = r#"{"a.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"a.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#;
        let (b, l) = file(twice, &[1.0; 4]);
        assert!(matches!(
            load_into(&b[..l], SPECS, &mut [0.0; 6]),
            Err(LoadError::Malformed { .. })
        ));
    }

    #[test]
    fn half_precision_converts_exactly() {
        let cases: [(u16, f32); 12] = [
            (0x0000, 0.0),
            (0x3c00, 1.0),
            (0xc000, -2.0),
            (0x3555, 1365.0 / 4096.0),
            (0x7bff, 65504.0),
            (0x0400, 6.103_515_6e-5),          // smallest normal, 2^-14
            (0x0001, 5.960_464_5e-8),          // smallest subnormal, 2^-24
            (0x03ff, 1023.0 * 5.960_464_5e-8), // largest subnormal, 1023 * 2^-24
            (0x8001, -5.960_464_5e-8),
            (0x7c00, f32::INFINITY),
            (0xfc00, f32::NEG_INFINITY),
            (0x3800, 0.5),
        ];
        for (bits, want) in cases {
            assert_eq!(f16_to_f32(bits).to_bits(), want.to_bits(), "{bits:#06x}");
        }
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert!(f16_to_f32(0x7e00).is_nan() && f16_to_f32(0xfe01).is_nan());
        assert_eq!(
            f16_to_f32(0x7c01).to_bits(),
            0x7f80_2000,
            "NaN payload kept"
        );
        // every finite positive half maps to a value above the previous one, with the
        // spacing of its binade: 2^(e-25) for exponent e (2^-24 for subnormals)
        for bits in 0u16..0x7bff {
            let (a, b) = (f16_to_f32(bits), f16_to_f32(bits + 1));
            let e = (u32::from(bits >> 10)).max(1);
            // 2^(e - 25), exactly (`powi` is not exact everywhere: miri perturbs it)
            let spacing = f32::from_bits((e + 127 - 25) << 23);
            assert_eq!(b - a, spacing, "{bits:#06x}");
            assert_eq!(f16_to_f32(bits | 0x8000), -a);
        }
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(bf16_to_f32(0xc049), -3.140_625);
        assert_eq!(bf16_to_f32(0x0001).to_bits(), 0x0001_0000, "subnormal");
        assert_eq!(bf16_to_f32(0xff80), f32::NEG_INFINITY);
        assert!(bf16_to_f32(0x7fc1).is_nan());
    }

    const HALF: &str = r#"{"a.weight":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]},"a.bias":{"dtype":"BF16","shape":[2],"data_offsets":[8,12]}}"#;

    fn half_data() -> [u8; 12] {
        let mut data = [0u8; 12];
        for (i, h) in [0x3c00u16, 0xc000, 0x0001, 0x7c00, 0x3f80, 0xc049]
            .iter()
            .enumerate()
        {
            data[i * 2..i * 2 + 2].copy_from_slice(&h.to_le_bytes());
        }
        data
    }

    #[test]
    fn f16_bf16_and_f64_tensors_load_as_f32() {
        let (b, l) = raw_file(HALF, &half_data());
        let mut dest = [0.0; 6];
        assert_eq!(load_into(&b[..l], SPECS, &mut dest), Ok(()));
        assert_eq!(
            dest,
            [1.0, -2.0, 5.960_464_5e-8, f32::INFINITY, 1.0, -3.140_625]
        );
        let double = r#"{"a.weight":{"dtype":"F64","shape":[2,2],"data_offsets":[0,32]},"a.bias":{"dtype":"F32","shape":[2],"data_offsets":[32,40]}}"#;
        let mut data = [0u8; 40];
        for (i, v) in [0.1f64, -1e300, 1e-50, 2.5].iter().enumerate() {
            data[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        data[32..36].copy_from_slice(&7.0f32.to_le_bytes());
        data[36..40].copy_from_slice(&8.0f32.to_le_bytes());
        let (b, l) = raw_file(double, &data);
        assert_eq!(load_into(&b[..l], SPECS, &mut dest), Ok(()));
        assert_eq!(dest, [0.1, f32::NEG_INFINITY, 0.0, 2.5, 7.0, 8.0]);
    }

    #[test]
    fn faults_in_half_precision_files_have_their_own_errors() {
        let data = half_data();
        let mut dest = [0.0; 6];
        // the data stops inside the BF16 bias
        let (b, l) = raw_file(HALF, &data[..11]);
        assert!(matches!(
            load_into(&b[..l], SPECS, &mut dest),
            Err(LoadError::Truncated { tensor, needed: 12, found: 11 }) if tensor.as_str() == "a.bias"
        ));
        // offsets sized for F32 on an F16 tensor
        let (b, l) = raw_file(&HALF.replace("[0,8]", "[0,16]"), &[0; 24]);
        assert!(matches!(
            load_into(&b[..l], SPECS, &mut dest),
            Err(LoadError::Malformed { .. })
        ));
        // integer weights are not converted
        let (b, l) = raw_file(&HALF.replace("\"F16\"", "\"I16\""), &data);
        let err = load_into(&b[..l], SPECS, &mut dest).unwrap_err();
        assert!(matches!(
            err,
            LoadError::WrongDtype { tensor: "a.weight", found } if found.as_str() == "I16"
        ));
    }

    #[test]
    fn never_panics_on_any_prefix_or_byte_flip() {
        let counter =
            r#""bn.num_batches_tracked":{"dtype":"I64","shape":[],"data_offsets":[16,24]}"#;
        let extra = r#""x":{"dtype":"BOOL","shape":[8],"data_offsets":[24,32]}"#;
        let files = [
            (file(GOOD, &[1.0; 6]), SPECS),
            (raw_file(HALF, &half_data()), SPECS),
            (bn_file(&[counter, extra]), BN_SPECS),
        ];
        let mut dest = [0.0; 6];
        for ((bytes, len), specs) in files {
            for options in [LoadOptions::STRICT, LoadOptions::LENIENT] {
                let load = |b: &[u8], dest: &mut [f32]| {
                    let _ = load_into_with(b, specs, &[("x", 1.0)], dest, options, |_| {});
                };
                // every byte natively; under miri (which interprets) every 13th
                let step = if cfg!(miri) { 13 } else { 1 };
                for cut in (0..len).step_by(step) {
                    load(&bytes[..cut], &mut dest);
                }
                let mut copy = bytes;
                for i in (0..len).step_by(step) {
                    for flip in [0x01u8, 0x20, 0x80, 0xff] {
                        copy[i] ^= flip;
                        load(&copy[..len], &mut dest);
                        copy[i] ^= flip;
                    }
                }
            }
        }
    }
}

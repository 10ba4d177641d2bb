//! The weights of an `.onnx` file for `no_std`: walks the protobuf wire format of
//! `ModelProto.graph.initializer` (no decoder, no allocation, never a panic on any
//! bytes) and copies each initializer a model declares into its slot of the parameter
//! buffer, checking name, shape and element type as the safetensors reader does.
//!
//! ```text
//! ModelProto  field 7 graph (bytes)
//!   GraphProto  field 5 initializer (bytes, repeated)
//!     TensorProto  1 dims (varint, packed or not)   2 data_type (varint)
//!                  4 float_data (fixed32, packed or not)   8 name (bytes)
//!                  9 raw_data (bytes)   10 double_data   13 external_data   14 data_location
//! ```
//!
//! Initializers the model does not declare are skipped (an imported model reads some of
//! them at compile time, shapes for example); a declared one that is missing, of another
//! shape or of a non-float type is an error naming it. The `value` tensor of a
//! `Constant` node (`GraphProto` field 1, `NodeProto` output 2, op_type 4, attribute 5;
//! `AttributeProto` name 1, t 5) is read as an initializer named after the node's first
//! output: the importer declares a float constant used as data as that parameter.

use crate::{LoadError, ParamSpec, TensorName};

/// Highest rank read.
const MAX_RANK: usize = 8;

/// TensorProto data types the loader converts to f32.
const FLOAT: u64 = 1;
const FLOAT16: u64 = 10;
const DOUBLE: u64 = 11;

/// Protobuf wire types.
const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;
const FIXED32: u64 = 5;

fn malformed(reason: &'static str) -> LoadError {
    LoadError::MalformedOnnx {
        tensor: TensorName::new(""),
        reason,
    }
}

/// A protobuf reader over one message.
struct Wire<'a> {
    bytes: &'a [u8],
    at: usize,
}

/// One field: its number and its value.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed32([u8; 4]),
    Fixed64,
}

impl<'a> Wire<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Wire { bytes, at: 0 }
    }

    fn varint(&mut self) -> Result<u64, LoadError> {
        let mut value = 0u64;
        for shift in 0..10 {
            let Some(&b) = self.bytes.get(self.at) else {
                return Err(malformed("the file ends inside a number"));
            };
            self.at += 1;
            let bits = u64::from(b & 0x7f);
            if shift == 9 && b > 1 {
                return Err(malformed("a number is longer than 64 bits"));
            }
            value |= bits << (7 * shift);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed("a number is longer than 64 bits"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], LoadError> {
        let end = self
            .at
            .checked_add(n)
            .ok_or(malformed("a length overflows"))?;
        let Some(slice) = self.bytes.get(self.at..end) else {
            return Err(malformed("the file ends inside a field (truncated?)"));
        };
        self.at = end;
        Ok(slice)
    }

    /// The next field, or `None` at the end of the message.
    fn next(&mut self) -> Result<Option<(u64, Field<'a>)>, LoadError> {
        if self.at >= self.bytes.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (number, wire) = (key >> 3, key & 7);
        if number == 0 {
            return Err(malformed("a field has number 0"));
        }
        let field = match wire {
            VARINT => Field::Varint(self.varint()?),
            FIXED64 => {
                self.take(8)?;
                Field::Fixed64
            }
            LEN => {
                let n =
                    usize::try_from(self.varint()?).map_err(|_| malformed("a length overflows"))?;
                Field::Bytes(self.take(n)?)
            }
            FIXED32 => {
                let b = self.take(4)?;
                let mut raw = [0u8; 4];
                raw.copy_from_slice(b);
                Field::Fixed32(raw)
            }
            _ => {
                return Err(malformed(
                    "a field has an unknown wire type (groups are not ONNX)",
                ))
            }
        };
        Ok(Some((number, field)))
    }
}

/// What the loader reads of one TensorProto.
struct TensorView<'a> {
    name: &'a str,
    dims: [usize; MAX_RANK],
    rank: usize,
    data_type: u64,
    raw: Option<&'a [u8]>,
    /// packed float_data runs and single fixed32 values, in order, kept as the message
    message: &'a [u8],
    float_count: usize,
    double_count: usize,
    external: bool,
}

fn tensor(bytes: &[u8]) -> Result<TensorView<'_>, LoadError> {
    let mut t = TensorView {
        name: "",
        dims: [0; MAX_RANK],
        rank: 0,
        data_type: 0,
        raw: None,
        message: bytes,
        float_count: 0,
        double_count: 0,
        external: false,
    };
    let mut too_deep = false;
    let mut w = Wire::new(bytes);
    while let Some((number, field)) = w.next()? {
        match (number, field) {
            (1, Field::Varint(d)) => push_dim(&mut t, d, &mut too_deep)?,
            (1, Field::Bytes(packed)) => {
                let mut p = Wire::new(packed);
                while p.at < packed.len() {
                    let d = p.varint()?;
                    push_dim(&mut t, d, &mut too_deep)?;
                }
            }
            (2, Field::Varint(v)) => t.data_type = v,
            (4, Field::Bytes(packed)) => {
                if packed.len() % 4 != 0 {
                    return Err(malformed(
                        "packed float_data is not a whole number of floats",
                    ));
                }
                t.float_count += packed.len() / 4;
            }
            (4, Field::Fixed32(_)) => t.float_count += 1,
            (8, Field::Bytes(name)) => {
                t.name = core::str::from_utf8(name)
                    .map_err(|_| malformed("a tensor name is not UTF-8"))?;
            }
            (9, Field::Bytes(raw)) => t.raw = Some(raw),
            (10, Field::Bytes(packed)) => {
                if packed.len() % 8 != 0 {
                    return Err(malformed(
                        "packed double_data is not a whole number of doubles",
                    ));
                }
                t.double_count += packed.len() / 8;
            }
            (10, Field::Fixed64) => t.double_count += 1,
            (13, Field::Bytes(_)) => t.external = true,
            (14, Field::Varint(1)) => t.external = true,
            _ => {}
        }
    }
    if too_deep {
        t.rank = MAX_RANK + 1;
    }
    Ok(t)
}

fn push_dim(t: &mut TensorView<'_>, d: u64, too_deep: &mut bool) -> Result<(), LoadError> {
    let d = usize::try_from(d).map_err(|_| malformed("a dimension does not fit in usize"))?;
    match t.dims.get_mut(t.rank) {
        Some(slot) => {
            *slot = d;
            t.rank += 1;
        }
        None => *too_deep = true,
    }
    Ok(())
}

/// The tensor of a `Constant` node (its `value` attribute), named after the node's first
/// output; `None` for any other node.
fn constant_tensor(node: &[u8]) -> Result<Option<TensorView<'_>>, LoadError> {
    let (mut output, mut op_type, mut value) = (None, None, None);
    let mut w = Wire::new(node);
    while let Some((number, field)) = w.next()? {
        match (number, field) {
            (2, Field::Bytes(name)) if output.is_none() => output = Some(name),
            (4, Field::Bytes(op)) => op_type = Some(op),
            (5, Field::Bytes(attribute)) => {
                let (mut name, mut t) = (None, None);
                let mut a = Wire::new(attribute);
                while let Some((number, field)) = a.next()? {
                    match (number, field) {
                        (1, Field::Bytes(n)) => name = Some(n),
                        (5, Field::Bytes(tensor)) => t = Some(tensor),
                        _ => {}
                    }
                }
                if name == Some(b"value".as_slice()) {
                    value = t;
                }
            }
            _ => {}
        }
    }
    let (Some(b"Constant"), Some(output), Some(value)) = (op_type, output, value) else {
        return Ok(None);
    };
    let mut t = tensor(value)?;
    t.name = core::str::from_utf8(output).map_err(|_| malformed("a value name is not UTF-8"))?;
    Ok(Some(t))
}

/// Calls `f` with each initializer of the file's graph, and with the tensor of each
/// `Constant` node (named after its output: the importer makes a float constant used as
/// data a parameter of that name).
fn for_each_initializer<'a>(
    bytes: &'a [u8],
    mut f: impl FnMut(TensorView<'a>) -> Result<(), LoadError>,
) -> Result<(), LoadError> {
    let mut model = Wire::new(bytes);
    let mut graphs = 0usize;
    while let Some((number, field)) = model.next()? {
        let (7, Field::Bytes(graph)) = (number, field) else {
            continue;
        };
        graphs += 1;
        let mut g = Wire::new(graph);
        while let Some((number, field)) = g.next()? {
            match (number, field) {
                (5, Field::Bytes(t)) => f(tensor(t)?)?,
                (1, Field::Bytes(node)) => {
                    if let Some(t) = constant_tensor(node)? {
                        f(t)?;
                    }
                }
                _ => {}
            }
        }
    }
    if graphs == 0 {
        return Err(malformed("no graph (is this an .onnx file?)"));
    }
    Ok(())
}

/// Fills `dest` from the initializers of an ONNX file: every tensor of `specs` must be
/// an initializer with the declared shape and a float type (float32; float64 and float16
/// are converted); others are skipped. Never panics and never allocates.
pub fn load_into(bytes: &[u8], specs: &[ParamSpec], dest: &mut [f32]) -> Result<(), LoadError> {
    let needed: usize = specs.iter().map(|s| s.offset + s.len()).max().unwrap_or(0);
    if dest.len() < needed {
        return Err(LoadError::BufferLength {
            expected: needed,
            found: dest.len(),
        });
    }
    // fresh parameters: the buffer may be prepared again
    crate::prepare::clear_mark(dest);
    let mut seen = [0u64; SEEN_BITS / 64];
    let mut loaded = 0usize;
    for_each_initializer(bytes, |t| {
        let Some((index, spec)) = specs.iter().enumerate().find(|(_, s)| s.name == t.name) else {
            return Ok(());
        };
        let twice = match seen.get_mut(index / 64) {
            Some(word) => {
                let bit = 1u64 << (index % 64);
                let twice = *word & bit != 0;
                *word |= bit;
                twice
            }
            // past the bitset a duplicate is not detected: the later copy wins
            None => false,
        };
        if twice {
            return Err(LoadError::MalformedOnnx {
                tensor: TensorName::new(spec.name),
                reason: "the initializer appears twice",
            });
        }
        copy(&t, spec, dest)?;
        loaded += 1;
        Ok(())
    })?;
    if loaded < specs.len() {
        for (index, spec) in specs.iter().enumerate() {
            let found = seen
                .get(index / 64)
                .is_some_and(|w| w & (1u64 << (index % 64)) != 0);
            if !found && index < SEEN_BITS {
                return Err(LoadError::MissingTensor { tensor: spec.name });
            }
        }
        return Err(malformed("an initializer is missing"));
    }
    Ok(())
}

/// Checks that the file holds each of `scalars` (key, value), the single-value tensors a
/// model was compiled with as constants: each must be an initializer (or a `Constant`
/// node's tensor) of one element, of exactly that value. Never panics or allocates.
pub fn check_scalars(bytes: &[u8], scalars: &[(&'static str, f32)]) -> Result<(), LoadError> {
    for &(name, compiled) in scalars {
        let mut found = None;
        for_each_initializer(bytes, |t| {
            if t.name != name {
                return Ok(());
            }
            let dims = t.dims.get(..t.rank).unwrap_or(&[]);
            if dims.iter().any(|&d| d != 1) {
                return Err(LoadError::MalformedOnnx {
                    tensor: TensorName::new(name),
                    reason:
                        "the model was compiled with this tensor as one value, the file has more",
                });
            }
            // the same read as a parameter's, whatever its rank ([], [1], ...)
            let mut value = [f32::NAN];
            copy(&t, &ParamSpec::single_value(name, t.rank), &mut value)?;
            found = Some(value[0]);
            Ok(())
        })?;
        let found = found.ok_or(LoadError::MissingTensor { tensor: name })?;
        LoadError::check_scalar(name, compiled, found)?;
    }
    Ok(())
}

/// Specs whose duplicates are detected.
const SEEN_BITS: usize = 4096;

fn copy(t: &TensorView<'_>, spec: &ParamSpec, dest: &mut [f32]) -> Result<(), LoadError> {
    let name = TensorName::new(spec.name);
    if t.external {
        return Err(LoadError::MalformedOnnx {
            tensor: name,
            reason: "its data is in an external file; save the model with its weights inside the .onnx file",
        });
    }
    let size = match t.data_type {
        FLOAT => 4,
        DOUBLE => 8,
        FLOAT16 => 2,
        other => {
            return Err(LoadError::WrongDtype {
                tensor: spec.name,
                found: TensorName::new(dtype_name(other)),
            })
        }
    };
    if t.rank != spec.shape.len() || t.dims.get(..t.rank) != Some(spec.shape) {
        return Err(LoadError::WrongShape {
            tensor: spec.name,
            expected: spec.shape,
            found: t.dims,
            found_rank: t.rank.min(MAX_RANK),
        });
    }
    let len = spec.len();
    let Some(dst) = dest.get_mut(spec.offset..spec.offset + len) else {
        return Err(LoadError::BufferLength {
            expected: spec.offset + len,
            found: dest.len(),
        });
    };
    if let Some(raw) = t.raw {
        if Some(raw.len()) != len.checked_mul(size) {
            return Err(LoadError::MalformedOnnx {
                tensor: name,
                reason: "raw_data does not hold shape x element size bytes",
            });
        }
        for (d, chunk) in dst.iter_mut().zip(raw.chunks_exact(size)) {
            *d = match size {
                4 => f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]),
                8 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(chunk);
                    f64::from_le_bytes(b) as f32
                }
                _ => crate::safetensors::f16_to_f32(u16::from_le_bytes([chunk[0], chunk[1]])),
            };
        }
        return Ok(());
    }
    // typed fields: float_data for FLOAT, double_data for DOUBLE, int32_data (bits) for FLOAT16
    let count = match t.data_type {
        FLOAT => t.float_count,
        DOUBLE => t.double_count,
        _ => 0,
    };
    if count != len {
        return Err(LoadError::MalformedOnnx {
            tensor: name,
            reason:
                "the tensor's data (raw_data or float_data) does not hold one value per element",
        });
    }
    let mut out = dst.iter_mut();
    let mut w = Wire::new(t.message);
    while let Some((number, field)) = w.next()? {
        match (number, t.data_type, field) {
            (4, FLOAT, Field::Bytes(packed)) => {
                for chunk in packed.chunks_exact(4) {
                    if let Some(d) = out.next() {
                        *d = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                    }
                }
            }
            (4, FLOAT, Field::Fixed32(raw)) => {
                if let Some(d) = out.next() {
                    *d = f32::from_le_bytes(raw);
                }
            }
            (10, DOUBLE, Field::Bytes(packed)) => {
                for chunk in packed.chunks_exact(8) {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(chunk);
                    if let Some(d) = out.next() {
                        *d = f64::from_le_bytes(b) as f32;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn dtype_name(code: u64) -> &'static str {
    match code {
        2 => "UINT8",
        3 => "INT8",
        4 => "UINT16",
        5 => "INT16",
        6 => "INT32",
        7 => "INT64",
        8 => "STRING",
        9 => "BOOL",
        12 => "UINT32",
        13 => "UINT64",
        16 => "BFLOAT16",
        _ => "an unknown type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut [u8], at: &mut usize) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            out[*at] = if v == 0 { b } else { b | 0x80 };
            *at += 1;
            if v == 0 {
                break;
            }
        }
    }

    fn field(number: u64, payload: &[u8], out: &mut [u8], at: &mut usize) {
        varint(number << 3 | LEN, out, at);
        varint(payload.len() as u64, out, at);
        out[*at..*at + payload.len()].copy_from_slice(payload);
        *at += payload.len();
    }

    /// A model with one initializer `w` [2] = [1.5, -2.0] in raw_data.
    fn model(out: &mut [u8]) -> usize {
        let mut t = [0u8; 64];
        let mut n = 0;
        varint(1 << 3 | VARINT, &mut t, &mut n);
        varint(2, &mut t, &mut n);
        varint(2 << 3 | VARINT, &mut t, &mut n);
        varint(FLOAT, &mut t, &mut n);
        field(8, b"w", &mut t, &mut n);
        let mut raw = [0u8; 8];
        raw[..4].copy_from_slice(&1.5f32.to_le_bytes());
        raw[4..].copy_from_slice(&(-2.0f32).to_le_bytes());
        field(9, &raw, &mut t, &mut n);
        let mut g = [0u8; 96];
        let mut gn = 0;
        field(5, &t[..n], &mut g, &mut gn);
        let mut at = 0;
        field(7, &g[..gn], out, &mut at);
        at
    }

    #[test]
    fn a_constant_nodes_tensor_loads_by_its_output_name() {
        // the initializer `w` of `model`, moved into a Constant node with output `c`
        let mut t = [0u8; 64];
        let mut n = 0;
        varint(1 << 3 | VARINT, &mut t, &mut n);
        varint(2, &mut t, &mut n);
        varint(2 << 3 | VARINT, &mut t, &mut n);
        varint(FLOAT, &mut t, &mut n);
        let mut raw = [0u8; 8];
        raw[..4].copy_from_slice(&1.5f32.to_le_bytes());
        raw[4..].copy_from_slice(&(-2.0f32).to_le_bytes());
        field(9, &raw, &mut t, &mut n);
        let mut a = [0u8; 96];
        let mut an = 0;
        field(1, b"value", &mut a, &mut an);
        field(5, &t[..n], &mut a, &mut an);
        let mut node = [0u8; 128];
        let mut nn = 0;
        field(2, b"c", &mut node, &mut nn);
        field(4, b"Constant", &mut node, &mut nn);
        field(5, &a[..an], &mut node, &mut nn);
        let mut g = [0u8; 160];
        let mut gn = 0;
        field(1, &node[..nn], &mut g, &mut gn);
        let mut bytes = [0u8; 192];
        let mut at = 0;
        field(7, &g[..gn], &mut bytes, &mut at);
        let specs = [ParamSpec {
            name: "c",
            shape: &[2],
            offset: 0,
        }];
        let mut dest = [0.0f32; 2];
        load_into(&bytes[..at], &specs, &mut dest).unwrap();
        assert_eq!(dest, [1.5, -2.0]);
    }

    const SPECS: &[ParamSpec] = &[ParamSpec {
        name: "w",
        shape: &[2],
        offset: 0,
    }];

    #[test]
    fn an_initializer_loads_by_name() {
        let mut bytes = [0u8; 128];
        let n = model(&mut bytes);
        let mut dest = [0.0f32; 2];
        load_into(&bytes[..n], SPECS, &mut dest).unwrap();
        assert_eq!(dest, [1.5, -2.0]);
    }

    #[test]
    fn a_missing_or_misshapen_tensor_is_named() {
        let mut bytes = [0u8; 128];
        let n = model(&mut bytes);
        let mut dest = [0.0f32; 3];
        let other = [ParamSpec {
            name: "v",
            shape: &[2],
            offset: 0,
        }];
        assert_eq!(
            load_into(&bytes[..n], &other, &mut dest),
            Err(LoadError::MissingTensor { tensor: "v" })
        );
        let wrong = [ParamSpec {
            name: "w",
            shape: &[3],
            offset: 0,
        }];
        assert!(matches!(
            load_into(&bytes[..n], &wrong, &mut dest),
            Err(LoadError::WrongShape { tensor: "w", .. })
        ));
    }

    #[test]
    fn every_prefix_and_every_byte_flip_is_an_error_or_a_load_never_a_panic() {
        let mut bytes = [0u8; 128];
        let n = model(&mut bytes);
        let mut dest = [0.0f32; 2];
        // every byte natively; under miri (which interprets) every 13th
        let step = if cfg!(miri) { 13 } else { 1 };
        for cut in (0..n).step_by(step) {
            assert!(load_into(&bytes[..cut], SPECS, &mut dest).is_err(), "{cut}");
        }
        for i in (0..n).step_by(step) {
            for v in [0u8, 0x7f, 0x80, 0xff] {
                let mut b = bytes;
                b[i] = v;
                let _ = load_into(&b[..n], SPECS, &mut dest);
            }
        }
    }
}

//! The API every generated model shares.

use core::fmt;

/// A parameter of a model: its key in the weights file, its shape and where it sits in
/// the flat parameter buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    /// The safetensors key (`conv1.weight`).
    pub name: &'static str,
    /// Its shape.
    pub shape: &'static [usize],
    /// Offset in floats in the flat buffer.
    pub offset: usize,
}

impl ParamSpec {
    /// Number of floats.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// The spec through which a loader reads a folded scalar's tensor (`Model::SCALARS`):
    /// `rank` dimensions of 1 (one value, as `[]`, `[1]`, `[1, 1]`, ...), at offset 0.
    pub(crate) fn single_value(name: &'static str, rank: usize) -> ParamSpec {
        const ONES: [usize; 8] = [1; 8];
        ParamSpec {
            name,
            shape: ONES.get(..rank).unwrap_or(&ONES),
            offset: 0,
        }
    }

    /// True for a parameter without elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The flat parameter buffer of a model: borrowed (no allocator needed) or owned.
///
/// The buffer holds the loaded parameters (laid out as the model's `PARAMS` say), then
/// the tensors the model's `prepare` computes from them once (weights folded at load
/// time), then `prepare`'s scratch: `PARAM_LEN` floats in all. A model built from a
/// mutable or owned buffer runs `prepare` itself. A read-only buffer cannot be prepared,
/// so the model takes it from [`Params::borrowed`] only when it has nothing to prepare
/// (`LOADED_LEN == PARAM_LEN`) and otherwise refuses it with
/// [`LoadError::NotPrepared`]; a read-only buffer that did go through `prepare` comes
/// as [`Params::prepared`] (see [`Prepared`]).
pub struct Params<'p>(Storage<'p>);

enum Storage<'p> {
    Borrowed(&'p [f32]),
    Prepared(Prepared<'p>),
    BorrowedMut(&'p mut [f32]),
    #[cfg(feature = "alloc")]
    Owned(AlignedFloats),
}

/// An owned buffer of floats whose first one lies on a 64-byte boundary (a cache line):
/// a `Vec` with up to 15 floats of slack before it. Each 16-float load of a weight row
/// then touches one cache line, not two: a matrix-vector product streaming its weights
/// from L3 ran about 10% faster aligned (2026-12-05, mlp's two layers alone). Owned
/// parameter buffers are kept in one; an arena in one runs a little faster too
/// (mobilenet_v2 2-3%): `AlignedFloats::zeroed(M::ARENA_LEN)`, used as `&mut [f32]`.
#[cfg(feature = "alloc")]
pub struct AlignedFloats {
    data: alloc::vec::Vec<f32>,
    start: usize,
}

#[cfg(feature = "alloc")]
impl core::ops::Deref for AlignedFloats {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        self.as_slice()
    }
}

#[cfg(feature = "alloc")]
impl core::ops::DerefMut for AlignedFloats {
    fn deref_mut(&mut self) -> &mut [f32] {
        self.as_mut_slice()
    }
}

#[cfg(feature = "alloc")]
impl fmt::Debug for AlignedFloats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AlignedFloats({} floats)", self.as_slice().len())
    }
}

#[cfg(feature = "alloc")]
impl AlignedFloats {
    /// Floats of slack a `Vec<f32>` needs to hold a 64-byte-aligned run.
    const SLACK: usize = 15;

    /// `len` zeros, aligned.
    pub fn zeroed(len: usize) -> Self {
        let mut data = alloc::vec::Vec::<f32>::with_capacity(len + Self::SLACK);
        // (`align_offset` may in principle give up with usize::MAX: then unaligned, as
        // a plain `Vec` would be)
        let start = data.as_ptr().align_offset(64).min(Self::SLACK);
        data.resize(start + len, 0.0);
        AlignedFloats { data, start }
    }

    /// `data` as it is when it starts aligned, else copied into an aligned buffer.
    fn from_vec(data: alloc::vec::Vec<f32>) -> Self {
        if data.as_ptr().align_offset(64) == 0 {
            return AlignedFloats { data, start: 0 };
        }
        let mut aligned = Self::zeroed(data.len());
        aligned.as_mut_slice().copy_from_slice(&data);
        aligned
    }

    /// The floats.
    pub fn as_slice(&self) -> &[f32] {
        &self.data[self.start..]
    }

    /// The floats, writable.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.data[self.start..]
    }

    /// Keeps the first `len` floats and gives the rest back to the allocator (copying
    /// them once more should the shrunk allocation have moved off the alignment).
    fn truncate(&mut self, len: usize) {
        self.data.truncate(self.start + len);
        self.data.shrink_to_fit();
        if self.as_slice().as_ptr().align_offset(64) != 0 {
            let kept = core::mem::take(&mut self.data);
            *self = Self::from_vec(kept[self.start..].to_vec());
        }
    }
}

impl<'p> Params<'p> {
    /// Borrows read-only a buffer of loaded parameters (a `static`, or memory the caller
    /// owns). Only a model without load-time ops (`LOADED_LEN == PARAM_LEN`) accepts it;
    /// for the others use [`Params::borrowed_mut`], `Params::owned` (feature `alloc`) or
    /// [`Params::prepared`].
    pub const fn borrowed(data: &'p [f32]) -> Self {
        Params(Storage::Borrowed(data))
    }

    /// Borrows read-only a buffer that went through a model's `prepare`; only that model
    /// accepts it.
    pub fn prepared(prepared: Prepared<'p>) -> Self {
        Params(Storage::Prepared(prepared))
    }

    /// Borrows a buffer holding the loaded parameters; the model fills in the rest.
    pub fn borrowed_mut(data: &'p mut [f32]) -> Self {
        Params(Storage::BorrowedMut(data))
    }

    /// The floats.
    pub fn as_slice(&self) -> &[f32] {
        match &self.0 {
            Storage::Borrowed(d) => d,
            Storage::Prepared(p) => p.data,
            Storage::BorrowedMut(d) => d,
            #[cfg(feature = "alloc")]
            Storage::Owned(v) => v.as_slice(),
        }
    }

    /// The floats, when the buffer may be written (`None` for [`Params::borrowed`] and
    /// [`Params::prepared`]).
    pub fn as_mut_slice(&mut self) -> Option<&mut [f32]> {
        match &mut self.0 {
            Storage::Borrowed(_) | Storage::Prepared(_) => None,
            Storage::BorrowedMut(d) => Some(d),
            #[cfg(feature = "alloc")]
            Storage::Owned(v) => Some(v.as_mut_slice()),
        }
    }

    /// After `prepare`: keeps only the first `len` floats, what `run` reads (an owned
    /// buffer gives the rest back to the allocator).
    pub fn keep_first(&mut self, len: usize) {
        match &mut self.0 {
            Storage::Borrowed(_) | Storage::Prepared(_) => {}
            Storage::BorrowedMut(d) => {
                let whole = core::mem::take(d);
                let end = len.min(whole.len());
                *d = &mut whole[..end];
            }
            #[cfg(feature = "alloc")]
            Storage::Owned(v) => v.truncate(len.min(v.as_slice().len())),
        }
    }

    /// Checks that the buffer holds exactly `expected` floats.
    pub fn check_len(&self, expected: usize) -> Result<(), LoadError> {
        let found = self.as_slice().len();
        if found != expected {
            return Err(LoadError::BufferLength { expected, found });
        }
        Ok(())
    }

    /// Checks that model `M` may run on a read-only buffer as it is: the buffer was
    /// prepared for `M`, or `M` has nothing to prepare. Mutable and owned buffers pass
    /// (the model prepares them).
    pub fn check_prepared<M: Model>(&self) -> Result<(), LoadError> {
        match &self.0 {
            Storage::Borrowed(_) if M::LOADED_LEN < M::PARAM_LEN => Err(LoadError::NotPrepared {
                model: M::NAME,
                loaded_len: M::LOADED_LEN,
                param_len: M::PARAM_LEN,
            }),
            Storage::Prepared(p) if p.model != model_id::<M>() => {
                Err(LoadError::PreparedForOtherModel {
                    model: model_id::<M>(),
                    prepared_for: p.model,
                })
            }
            _ => Ok(()),
        }
    }
}

/// Identifies a model type (its path, such as `my_crate::nets::LeNet`) for [`Prepared`].
fn model_id<M: Model>() -> &'static str {
    let name = core::any::type_name::<M>();
    // generated models carry only a lifetime, which the name shows as `<'_>`
    name.strip_suffix("<'_>").unwrap_or(name)
}

/// A read-only parameter buffer that went through the `prepare` of one model, which
/// alone accepts it (as [`Params::prepared`]). Only [`Prepared::new`], which runs
/// `prepare`, makes one, so an unprepared buffer cannot pass for a prepared one. Copy it
/// to build the model several times from one buffer (the facade crate's docs show it).
#[derive(Clone, Copy)]
pub struct Prepared<'p> {
    data: &'p [f32],
    model: &'static str,
}

impl<'p> Prepared<'p> {
    /// Runs `M::prepare` on `buffer` (loaded parameters at its start, `PARAM_LEN` floats
    /// in all) and borrows the result read-only.
    pub fn new<M: Model>(buffer: &'p mut [f32]) -> Result<Self, LoadError> {
        M::prepare(buffer)?;
        Ok(Prepared {
            data: buffer,
            model: model_id::<M>(),
        })
    }

    /// The floats.
    pub fn as_slice(&self) -> &'p [f32] {
        self.data
    }
}

impl fmt::Debug for Prepared<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Prepared({} floats for {})", self.data.len(), self.model)
    }
}

#[cfg(feature = "alloc")]
impl Params<'static> {
    /// Takes ownership of a buffer. The model reads it from a 64-byte boundary: a buffer
    /// that does not start on one is copied once into one that does (the loaders of
    /// this crate fill an aligned one directly).
    pub fn owned(data: alloc::vec::Vec<f32>) -> Self {
        Params(Storage::Owned(AlignedFloats::from_vec(data)))
    }
}

impl fmt::Debug for Params<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Params({} floats)", self.as_slice().len())
    }
}

/// Why weights could not be loaded. Every variant that concerns a tensor names it.
#[derive(Clone, Debug, PartialEq)]
pub enum LoadError {
    /// The file is not a well-formed safetensors file.
    Malformed {
        /// what is wrong
        reason: &'static str,
    },
    /// The file ends before the data it declares.
    Truncated {
        /// the tensor whose bytes are missing (empty for the header)
        tensor: TensorName,
        /// bytes needed
        needed: usize,
        /// bytes present
        found: usize,
    },
    /// The model needs a tensor that the file does not have.
    MissingTensor {
        /// its key
        tensor: &'static str,
    },
    /// The file has a tensor the model does not use.
    UnexpectedTensor {
        /// its key
        tensor: TensorName,
    },
    /// A tensor the model needs is not of a float dtype the loader converts (F32, F16,
    /// BF16, F64).
    WrongDtype {
        /// its key
        tensor: &'static str,
        /// the dtype in the file
        found: TensorName,
    },
    /// A tensor's shape differs from the declaration.
    WrongShape {
        /// its key
        tensor: &'static str,
        /// the declared shape
        expected: &'static [usize],
        /// the shape in the file (first dims, up to 8)
        found: [usize; 8],
        /// the rank in the file
        found_rank: usize,
    },
    /// A read-only buffer of loaded parameters was given to a model that computes part
    /// of its buffer at load time (`LOADED_LEN < PARAM_LEN`): it would run on whatever
    /// the rest of the buffer holds.
    NotPrepared {
        /// the model's name
        model: &'static str,
        /// floats of loaded parameters
        loaded_len: usize,
        /// floats of the whole buffer
        param_len: usize,
    },
    /// `prepare` was given a buffer it had already prepared: its loaded parameters were
    /// overwritten when it was compacted to the layout `run` reads.
    AlreadyPrepared {
        /// the model's name
        model: &'static str,
    },
    /// A buffer prepared for one model was given to another.
    PreparedForOtherModel {
        /// the model given the buffer (its type path)
        model: &'static str,
        /// the model the buffer was prepared for
        prepared_for: &'static str,
    },
    /// The bytes are not a well-formed ONNX file, or a tensor in it is not readable
    /// (external data, data of the wrong length).
    MalformedOnnx {
        /// the tensor at fault (empty when the fault is outside a tensor)
        tensor: TensorName,
        /// what is wrong
        reason: &'static str,
    },
    /// A weights file cannot be read in place (`safetensors::in_place`): a tensor is
    /// not F32 or not where the model's layout puts it, or the data is misaligned.
    NotInPlace {
        /// the tensor at fault (empty when the fault is the data's address)
        tensor: TensorName,
        /// what is wrong
        reason: &'static str,
    },
    /// A scalar of the file that the model was compiled with as a constant (an ONNX
    /// import folds single-value initializers into the code: `#[scalars(...)]`) holds
    /// another value in this file.
    ScalarDiffers {
        /// its key
        tensor: &'static str,
        /// the value compiled into the model
        compiled: f32,
        /// the value in the file
        found: f32,
    },
    /// A flat parameter buffer has the wrong length.
    BufferLength {
        /// floats the model needs
        expected: usize,
        /// floats given
        found: usize,
    },
}

impl LoadError {
    /// The rule every loader checks a folded scalar by: the value read from the file must
    /// have the bits of the one compiled into the model, else [`LoadError::ScalarDiffers`].
    pub(crate) fn check_scalar(
        tensor: &'static str,
        compiled: f32,
        found: f32,
    ) -> Result<(), LoadError> {
        if found.to_bits() == compiled.to_bits() {
            Ok(())
        } else {
            Err(LoadError::ScalarDiffers {
                tensor,
                compiled,
                found,
            })
        }
    }

    /// The key of the tensor at fault, when the error concerns one.
    pub fn tensor(&self) -> Option<&str> {
        let name = match self {
            LoadError::MissingTensor { tensor }
            | LoadError::WrongDtype { tensor, .. }
            | LoadError::WrongShape { tensor, .. }
            | LoadError::ScalarDiffers { tensor, .. } => tensor,
            LoadError::Truncated { tensor, .. }
            | LoadError::UnexpectedTensor { tensor }
            | LoadError::MalformedOnnx { tensor, .. }
            | LoadError::NotInPlace { tensor, .. } => tensor.as_str(),
            LoadError::Malformed { .. }
            | LoadError::NotPrepared { .. }
            | LoadError::AlreadyPrepared { .. }
            | LoadError::PreparedForOtherModel { .. }
            | LoadError::BufferLength { .. } => "",
        };
        (!name.is_empty()).then_some(name)
    }
}

/// A short name copied out of the file without allocating (truncated at 64 bytes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TensorName {
    bytes: [u8; 64],
    len: usize,
}

impl TensorName {
    /// Copies up to 64 bytes of `s`.
    pub fn new(s: &str) -> Self {
        let mut bytes = [0u8; 64];
        let mut len = s.len().min(64);
        while !s.is_char_boundary(len) {
            len -= 1;
        }
        bytes[..len].copy_from_slice(&s.as_bytes()[..len]);
        TensorName { bytes, len }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl fmt::Debug for TensorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl fmt::Display for TensorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Malformed { reason } => write!(f, "malformed safetensors file: {reason}"),
            LoadError::Truncated {
                tensor,
                needed,
                found,
            } => {
                if tensor.as_str().is_empty() {
                    write!(f, "truncated safetensors file: the header needs {needed} bytes, the file has {found}")
                } else {
                    write!(f, "truncated safetensors file: tensor `{tensor}` needs bytes up to {needed}, the data has {found}")
                }
            }
            LoadError::MissingTensor { tensor } => {
                write!(f, "tensor `{tensor}` is missing from the weights")
            }
            LoadError::UnexpectedTensor { tensor } => write!(
                f,
                "tensor `{tensor}` is in the weights but not in the model"
            ),
            LoadError::WrongDtype { tensor, found } => {
                write!(
                    f,
                    "tensor `{tensor}` is {found}, expected a float dtype (F32, F16, BF16 or F64)"
                )
            }
            LoadError::WrongShape {
                tensor,
                expected,
                found,
                found_rank,
            } => {
                write!(
                    f,
                    "tensor `{tensor}` has shape {:?}, expected {:?}",
                    &found[..(*found_rank).min(8)],
                    expected
                )
            }
            LoadError::NotPrepared {
                model,
                loaded_len,
                param_len,
            } => write!(
                f,
                "model `{model}` computes floats {loaded_len}..{param_len} of its parameter buffer at load time, \
                 but the read-only buffer given was not prepared: pass it with `Params::borrowed_mut` or \
                 `Params::owned` so the model prepares it, or as `Params::prepared(Prepared::new::<{model}>(&mut buffer)?)`"
            ),
            LoadError::AlreadyPrepared { model } => write!(
                f,
                "model `{model}` was given a parameter buffer its `prepare` has already run on \
                 (compacted to the layout `run` reads): load the weights into it again, or keep \
                 the model built the first time"
            ),
            LoadError::PreparedForOtherModel {
                model,
                prepared_for,
            } => write!(
                f,
                "the parameter buffer was prepared for model `{prepared_for}`, not `{model}`"
            ),
            LoadError::ScalarDiffers {
                tensor,
                compiled,
                found,
            } => write!(
                f,
                "tensor `{tensor}` holds {found} in this file, but the model was compiled with {compiled} (a scalar folded into the code at import): import this file again"
            ),
            LoadError::MalformedOnnx { tensor, reason } => {
                if tensor.as_str().is_empty() {
                    write!(f, "malformed ONNX file: {reason}")
                } else {
                    write!(f, "malformed ONNX file: tensor `{tensor}`: {reason}")
                }
            }
            LoadError::BufferLength { expected, found } => {
                write!(
                    f,
                    "parameter buffer holds {found} floats, the model needs {expected}"
                )
            }
            LoadError::NotInPlace { tensor, reason } => {
                if tensor.as_str().is_empty() {
                    write!(f, "the weights cannot be read in place: {reason}; copy them with `from_safetensors_in`")
                } else {
                    write!(f, "the weights cannot be read in place: tensor `{tensor}`: {reason}; copy them with `from_safetensors_in`, or write the file with `safetensors::write_in_order`")
                }
            }
        }
    }
}

#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "std")]
impl std::error::Error for LoadError {}

/// Why a dynamically-checked run could not start (the typed `run` cannot fail).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunError {
    /// Wrong number of inputs.
    InputCount {
        /// inputs the model takes
        expected: usize,
        /// inputs given
        found: usize,
    },
    /// Wrong number of outputs.
    OutputCount {
        /// outputs the model gives
        expected: usize,
        /// output buffers given
        found: usize,
    },
    /// An input buffer has the wrong length.
    InputLength {
        /// its position
        index: usize,
        /// floats expected
        expected: usize,
        /// floats given
        found: usize,
    },
    /// An input array has the wrong shape (ndarray interop).
    InputShape {
        /// its position
        index: usize,
        /// the shape the model takes
        expected: &'static [usize],
        /// the shape given (first dims, up to 8)
        found: [usize; 8],
        /// the rank given
        found_rank: usize,
    },
    /// An output buffer has the wrong length.
    OutputLength {
        /// its position
        index: usize,
        /// floats expected
        expected: usize,
        /// floats given
        found: usize,
    },
    /// An input of integer indices holds a value that is not a whole number in range.
    InputNotIndex {
        /// its position
        index: usize,
        /// the element
        element: usize,
    },
    /// The arena has the wrong length.
    ArenaLength {
        /// floats expected
        expected: usize,
        /// floats given
        found: usize,
    },
}

impl RunError {
    /// Checks the numbers of inputs and outputs.
    pub fn check_counts(
        inputs: usize,
        outputs: usize,
        expected_inputs: usize,
        expected_outputs: usize,
    ) -> Result<(), RunError> {
        if inputs != expected_inputs {
            return Err(RunError::InputCount {
                expected: expected_inputs,
                found: inputs,
            });
        }
        if outputs != expected_outputs {
            return Err(RunError::OutputCount {
                expected: expected_outputs,
                found: outputs,
            });
        }
        Ok(())
    }

    /// Input `index` as a fixed-size array.
    pub fn input<'a, const N: usize>(
        inputs: &[&'a [f32]],
        index: usize,
    ) -> Result<&'a [f32; N], RunError> {
        let slice: &'a [f32] = inputs.get(index).copied().unwrap_or(&[]);
        slice.try_into().map_err(|_| RunError::InputLength {
            index,
            expected: N,
            found: slice.len(),
        })
    }

    /// Input `index`, declared with integer indices (`ids: i64[..]`), from f32 values
    /// that must be whole numbers.
    pub fn input_indices<T: crate::indices::Index, const N: usize>(
        inputs: &[&[f32]],
        index: usize,
    ) -> Result<[T; N], RunError> {
        let values: &[f32; N] = Self::input(inputs, index)?;
        crate::indices::f32_to_indices(values)
            .map_err(|element| RunError::InputNotIndex { index, element })
    }

    /// An output buffer as a fixed-size array.
    pub fn output<'a, const N: usize>(
        buffer: &'a mut &mut [f32],
        index: usize,
    ) -> Result<&'a mut [f32; N], RunError> {
        let found = buffer.len();
        (&mut **buffer)
            .try_into()
            .map_err(|_| RunError::OutputLength {
                index,
                expected: N,
                found,
            })
    }

    /// The arena as a fixed-size array.
    pub fn arena<const N: usize>(arena: &mut [f32]) -> Result<&mut [f32; N], RunError> {
        let found = arena.len();
        arena
            .try_into()
            .map_err(|_| RunError::ArenaLength { expected: N, found })
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::InputCount { expected, found } => {
                write!(f, "the model takes {expected} input(s), {found} given")
            }
            RunError::OutputCount { expected, found } => write!(
                f,
                "the model gives {expected} output(s), {found} buffer(s) given"
            ),
            RunError::InputLength {
                index,
                expected,
                found,
            } => write!(f, "input {index} needs {expected} floats, {found} given"),
            RunError::InputShape {
                index,
                expected,
                found,
                found_rank,
            } => {
                write!(f, "input {index} has shape ")?;
                write_dims(f, found.get(..*found_rank).unwrap_or(found))?;
                if *found_rank > found.len() {
                    write!(f, " (rank {found_rank}, first {} dims shown)", found.len())?;
                }
                f.write_str(", the model takes ")?;
                write_dims(f, expected)
            }
            RunError::OutputLength {
                index,
                expected,
                found,
            } => write!(f, "output {index} needs {expected} floats, {found} given"),
            RunError::InputNotIndex { index, element } => write!(
                f,
                "input {index} takes integer indices, but element {element} is not a whole number in range"
            ),
            RunError::ArenaLength { expected, found } => {
                write!(f, "the arena needs {expected} floats, {found} given")
            }
        }
    }
}

/// Writes `[1, 3]`.
fn write_dims(f: &mut fmt::Formatter<'_>, dims: &[usize]) -> fmt::Result {
    f.write_str("[")?;
    for (i, d) in dims.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{d}")?;
    }
    f.write_str("]")
}

impl RunError {
    /// An [`RunError::InputShape`] for input `index` given with shape `found`.
    pub fn input_shape(index: usize, expected: &'static [usize], found: &[usize]) -> RunError {
        let mut dims = [0usize; 8];
        for (d, f) in dims.iter_mut().zip(found) {
            *d = *f;
        }
        RunError::InputShape {
            index,
            expected,
            found: dims,
            found_rank: found.len(),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for RunError {}

/// What every generated model implements: its shapes, sizes and a dynamically checked run.
pub trait Model: Sized {
    /// The model's name.
    const NAME: &'static str;
    /// Shapes of the inputs.
    const INPUT_SHAPES: &'static [&'static [usize]];
    /// Shapes of the outputs.
    const OUTPUT_SHAPES: &'static [&'static [usize]];
    /// Floats of arena `run` needs.
    const ARENA_LEN: usize;
    /// Floats of the parameter buffer (see [`Params`]).
    const PARAM_LEN: usize;
    /// Floats of the loaded parameters, at the start of the buffer while it loads.
    const LOADED_LEN: usize;
    /// Floats `run` reads, at the start of the buffer once prepared.
    const RUN_LEN: usize;
    /// The parameters loaded from a weights file.
    const PARAMS: &'static [ParamSpec];
    /// Scalars of the weights file compiled into the code as constants (`#[scalars(...)]`,
    /// written by the ONNX import), by key: the ONNX loader checks the file holds them.
    const SCALARS: &'static [(&'static str, f32)] = &[];
    /// Number of ops executed.
    const OP_COUNT: usize;
    /// What the compiler did, with the blocks `run_slices_observed` reports.
    const FUSION_REPORT: FusionReport;

    /// Builds the model around a parameter buffer of `PARAM_LEN` floats.
    fn from_static_params(params: Params<'static>) -> Result<Self, LoadError>;

    /// Computes the load-time part of the buffer from the loaded parameters at its start.
    fn prepare(buffer: &mut [f32]) -> Result<(), LoadError>;

    /// Runs with length-checked slices.
    fn run_slices(
        &self,
        inputs: &[&[f32]],
        outputs: &mut [&mut [f32]],
        arena: &mut [f32],
    ) -> Result<(), RunError> {
        self.run_slices_observed(inputs, outputs, arena, &mut |_| {})
    }

    /// [`Model::run_slices`], calling `observe(block)` as each block of the model's fusion
    /// report (`FUSION_REPORT.block_list`) finishes, with its index there, in order.
    fn run_slices_observed(
        &self,
        inputs: &[&[f32]],
        outputs: &mut [&mut [f32]],
        arena: &mut [f32],
        observe: &mut dyn FnMut(usize),
    ) -> Result<(), RunError>;
}

/// Loads a safetensors file into a fresh owned buffer and builds the model. The file must
/// hold exactly the model's tensors, and may hold its [`Model::SCALARS`] with their
/// compiled values (see [`safetensors::load_into_with`](crate::safetensors::load_into_with)).
#[cfg(feature = "alloc")]
pub fn load_safetensors<M: Model>(bytes: &[u8]) -> Result<M, LoadError> {
    load_safetensors_with(bytes, crate::LoadOptions::STRICT).map(|(model, _)| model)
}

/// Loads the initializers of an ONNX file into a fresh owned buffer and builds the model
/// (see [`onnx_weights::load_into`](crate::onnx_weights::load_into)).
#[cfg(feature = "alloc")]
pub fn load_onnx<M: Model>(bytes: &[u8]) -> Result<M, LoadError> {
    crate::onnx_weights::check_scalars(bytes, M::SCALARS)?;
    let mut buffer = AlignedFloats::zeroed(M::PARAM_LEN);
    crate::onnx_weights::load_into(bytes, M::PARAMS, buffer.as_mut_slice())?;
    M::from_static_params(Params(Storage::Owned(buffer)))
}

/// What [`load_safetensors_with`] left out of the model.
#[cfg(feature = "alloc")]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Tensors of the file the model does not use, in file order (only a lenient load
    /// skips any; batch-norm `num_batches_tracked` counters are not listed).
    pub skipped: alloc::vec::Vec<alloc::string::String>,
}

/// Loads a safetensors file with `options` into a fresh owned buffer and builds the
/// model; with [`LoadOptions::LENIENT`](crate::LoadOptions::LENIENT) the report names
/// the tensors skipped. See [`safetensors::load_into_with`](crate::safetensors::load_into_with)
/// for the dtypes converted; without an allocator call that function, then the model's
/// `from_params`.
#[cfg(feature = "alloc")]
pub fn load_safetensors_with<M: Model>(
    bytes: &[u8],
    options: crate::LoadOptions,
) -> Result<(M, LoadReport), LoadError> {
    use alloc::string::ToString;
    let mut buffer = AlignedFloats::zeroed(M::PARAM_LEN);
    let mut report = LoadReport::default();
    crate::safetensors::load_into_with(
        bytes,
        M::PARAMS,
        M::SCALARS,
        buffer.as_mut_slice(),
        options,
        |name| report.skipped.push(name.to_string()),
    )?;
    Ok((
        M::from_static_params(Params(Storage::Owned(buffer)))?,
        report,
    ))
}

/// Runs a model on slices, allocating the arena and the outputs.
#[cfg(feature = "alloc")]
pub fn infer<M: Model>(
    model: &M,
    inputs: &[&[f32]],
) -> Result<alloc::vec::Vec<alloc::vec::Vec<f32>>, RunError> {
    use alloc::vec::Vec;
    let mut outputs: Vec<Vec<f32>> = M::OUTPUT_SHAPES
        .iter()
        .map(|s| alloc::vec![0.0; s.iter().product()])
        .collect();
    let mut arena = AlignedFloats::zeroed(M::ARENA_LEN);
    {
        let mut views: Vec<&mut [f32]> = outputs.iter_mut().map(|o| o.as_mut_slice()).collect();
        model.run_slices(inputs, &mut views, &mut arena)?;
    }
    Ok(outputs)
}

/// One fused block of a [`FusionReport`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockReport {
    /// Op names joined by `+`.
    pub ops: &'static str,
    /// The block's mapping type (`many-to-many`, ...).
    pub mapping: &'static str,
    /// Indices of the blocks whose outputs it reads (the data-flow edges).
    pub inputs: &'static [usize],
}

/// What the compiler did to a model (every generated model has one as `FUSION_REPORT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FusionReport {
    /// Model name.
    pub model: &'static str,
    /// Ops after lowering.
    pub ops: usize,
    /// Ops after rewriting (those run per inference plus those run at load time).
    pub ops_after_rewrite: usize,
    /// Ops that read only parameters, run once when the weights load (`prepare`).
    pub ops_at_load: usize,
    /// The rewrite rules applied, in order (`compiler/src/tables.rs` lists them all).
    pub rewrites: &'static [&'static str],
    /// Weighted FLOPs of the graph as declared.
    pub flops_before: u64,
    /// Weighted FLOPs after rewriting.
    pub flops_after: u64,
    /// Blocks executed (fused kernels).
    pub blocks: usize,
    /// Whether fusion was on.
    pub fusion: bool,
    /// Bytes of intermediates written to memory without fusion.
    pub irs_bytes_before: usize,
    /// Bytes of intermediates written to memory with fusion.
    pub irs_bytes_after: usize,
    /// Bytes of arena.
    pub arena_bytes: usize,
    /// The blocks, in execution order.
    pub block_list: &'static [BlockReport],
}

impl FusionReport {
    /// Ops run per inference.
    pub fn ops_per_run(&self) -> usize {
        self.ops_after_rewrite - self.ops_at_load
    }

    /// Ops per block, of those run per inference (the paper's Table 5 fusion rate).
    pub fn fusion_rate(&self) -> f64 {
        self.ops_per_run() as f64 / self.blocks.max(1) as f64
    }

    /// Writes the report as one JSON object (no trailing newline).
    pub fn write_json(&self, w: &mut impl fmt::Write) -> fmt::Result {
        write!(
            w,
            "{{\"model\":\"{}\",\"ops\":{},\"ops_after_rewrite\":{},\"ops_at_load\":{},\"flops_before\":{},\"flops_after\":{},\"blocks\":{},\"fusion_rate\":{:.2},\"fusion\":{},\"irs_bytes_before\":{},\"irs_bytes_after\":{},\"arena_bytes\":{},\"block_ops\":[",
            self.model,
            self.ops,
            self.ops_after_rewrite,
            self.ops_at_load,
            self.flops_before,
            self.flops_after,
            self.blocks,
            self.fusion_rate(),
            self.fusion,
            self.irs_bytes_before,
            self.irs_bytes_after,
            self.arena_bytes
        )?;
        for (i, b) in self.block_list.iter().enumerate() {
            if i > 0 {
                w.write_str(",")?;
            }
            write!(
                w,
                "{{\"ops\":\"{}\",\"mapping\":\"{}\",\"inputs\":[",
                b.ops, b.mapping
            )?;
            for (k, from) in b.inputs.iter().enumerate() {
                if k > 0 {
                    w.write_str(",")?;
                }
                write!(w, "{from}")?;
            }
            w.write_str("]}")?;
        }
        w.write_str("],\"rewrites\":[")?;
        for (i, r) in self.rewrites.iter().enumerate() {
            if i > 0 {
                w.write_str(",")?;
            }
            write!(w, "\"{r}\"")?;
        }
        w.write_str("]}")
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;

    /// Owned buffers start on a 64-byte boundary whatever the `Vec` they came from (one
    /// starting 4 bytes past a boundary is copied), hold the same floats, and stay
    /// aligned after `keep_first` gives the tail back.
    #[test]
    fn owned_parameters_start_on_a_cache_line() {
        let values: alloc::vec::Vec<f32> = (0..1000).map(|i| i as f32 * 0.5).collect();
        for skip in 0..16 {
            // a Vec whose first float lies `skip` floats past a boundary of its own
            let mut padded = alloc::vec::Vec::<f32>::with_capacity(values.len() + 32);
            let at = padded.as_ptr().align_offset(64).min(15) + skip;
            padded.resize(at, 0.0);
            padded.extend_from_slice(&values);
            let mut shifted = padded.split_off(at);
            shifted.shrink_to(values.len());
            let mut params = Params::owned(shifted);
            assert_eq!(
                params.as_slice().as_ptr().align_offset(64),
                0,
                "skip {skip}"
            );
            assert_eq!(params.as_slice(), &values[..], "skip {skip}");
            params.keep_first(300);
            assert_eq!(
                params.as_slice().as_ptr().align_offset(64),
                0,
                "skip {skip}"
            );
            assert_eq!(params.as_slice(), &values[..300], "skip {skip}");
            assert_eq!(params.as_mut_slice().map(|s| s.len()), Some(300));
        }
    }
}

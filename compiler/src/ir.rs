//! The graph every stage after `lower` works on.
//!
//! A [`Graph`] is a list of [`Value`]s (model inputs, parameters, node outputs) and a
//! list of [`Node`]s in execution order. Every value has a static shape; every node has
//! one output. Tensors are f32, row-major (C order), NCHW for images.
//!
//! ```text
//!   x:[1,784] --linear(fc1)--> fc1:[1,512] --relu--> h:[1,512]
//!                 ^   ^
//!   fc1.weight:[512,784]  fc1.bias:[512]      (parameters are values too)
//! ```

use proc_macro2::Span;

/// Index of a value in [`Graph::values`].
pub type ValueId = usize;

/// Where a value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// The model input with this position.
    Input(usize),
    /// The parameter with this index in [`Graph::params`].
    Param(usize),
    /// The output of the node with this index in [`Graph::nodes`].
    Node(usize),
}

/// A tensor of the graph.
#[derive(Clone, Debug)]
pub struct Value {
    /// The binding it came from (`fc1`), made unique by `lower`.
    pub name: String,
    /// Static shape; `[]` is a scalar.
    pub shape: Vec<usize>,
    /// Where it comes from.
    pub kind: ValueKind,
}

impl Value {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the tensor has no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A learned tensor, loaded by name from a weights file.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// The safetensors key (`conv1.weight`).
    pub key: String,
    /// Static shape.
    pub shape: Vec<usize>,
    /// The value it holds.
    pub value: ValueId,
}

/// One operation; its output is [`Node::output`].
#[derive(Clone, Debug)]
pub struct Node {
    /// What it computes.
    pub op: Op,
    /// Operands, in the order the op documents.
    pub inputs: Vec<ValueId>,
    /// The value it writes.
    pub output: ValueId,
    /// Where the user wrote it.
    pub span: Span,
}

/// A whole model after lowering and checking.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// Every tensor.
    pub values: Vec<Value>,
    /// Every operation, in an order where operands come first.
    pub nodes: Vec<Node>,
    /// Model inputs, in declaration order.
    pub inputs: Vec<ValueId>,
    /// Model outputs, in declaration order.
    pub outputs: Vec<ValueId>,
    /// Learned tensors.
    pub params: Vec<Param>,
}

impl Graph {
    /// Shape of a value.
    pub fn shape(&self, value: ValueId) -> &[usize] {
        self.values.get(value).map_or(&[], |v| v.shape.as_slice())
    }

    /// Adds a value and returns its id.
    pub fn add_value(&mut self, name: String, shape: Vec<usize>, kind: ValueKind) -> ValueId {
        self.values.push(Value { name, shape, kind });
        self.values.len() - 1
    }

    /// Number of nodes that read each value.
    pub fn consumer_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.values.len()];
        for node in &self.nodes {
            for &input in &node.inputs {
                if let Some(c) = counts.get_mut(input) {
                    *c += 1;
                }
            }
        }
        counts
    }
}

pub use crate::ops::unary::UnaryOp;

pub use crate::ops::binary::BinaryOp;

pub use crate::ops::reduce::ReduceKind;

pub use crate::ops::scan::ScanKind;

/// Attributes of `conv2d`. Weight `[out, in / groups, kh, kw]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    /// kernel height and width
    pub kernel: [usize; 2],
    /// stride along h and w
    pub stride: [usize; 2],
    /// zero padding: top, left, bottom, right
    pub padding: [usize; 4],
    /// dilation along h and w
    pub dilation: [usize; 2],
    /// channel groups (`groups == in == out` is depthwise)
    pub groups: usize,
    /// how the weight operand is laid out (set by stage `prepare`)
    pub weights: ConvWeights,
}

/// The layout of a [`Conv2d`]'s weight operand.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConvWeights {
    /// `[out, in / groups, kh, kw]` as given
    #[default]
    RowMajor,
    /// laid out by [`Op::TileConvWeights`] (the same shape)
    Tiled,
    /// transformed by [`Op::WinogradWeights`] (`[(tile + 2)^2, out, in]`): a 3x3
    /// convolution of unit stride and dilation, one group, computed as Winograd's
    /// F(tile x tile, 3x3)
    Winograd {
        /// output pixels along each side of a tile: 2 or 4
        tile: usize,
    },
}

/// Attributes of `conv_transpose2d`. Weight `[in, out / groups, kh, kw]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTranspose2d {
    /// kernel height and width
    pub kernel: [usize; 2],
    /// stride along h and w
    pub stride: [usize; 2],
    /// implicit padding removed from each side, along h and w
    pub padding: [usize; 2],
    /// extra rows/columns added at the bottom/right of the output
    pub output_padding: [usize; 2],
    /// dilation along h and w
    pub dilation: [usize; 2],
    /// channel groups
    pub groups: usize,
}

/// Attributes of the 2-d pooling ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2d {
    /// window height and width
    pub kernel: [usize; 2],
    /// stride along h and w
    pub stride: [usize; 2],
    /// padding: top, left, bottom, right (ignored by max, zero for average)
    pub padding: [usize; 4],
    /// dilation along h and w (max pooling only)
    pub dilation: [usize; 2],
    /// output size rounds up (a window must still start inside the input or left padding)
    pub ceil_mode: bool,
    /// average pooling divides by the whole window, padding included
    pub count_include_pad: bool,
}

/// How `pad` fills the border.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PadMode {
    /// a constant value
    Constant(f32),
    /// mirror without repeating the edge
    Reflect,
    /// repeat the edge value
    Edge,
}

/// How `resize` samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResizeMode {
    /// nearest neighbour, PyTorch's `mode="nearest"` (`floor(out_idx * in / out)`)
    Nearest,
    /// bilinear on the last two axes
    Bilinear {
        /// corners of input and output grids coincide
        align_corners: bool,
    },
}

/// How ONNX `Resize` maps an output coordinate to an input coordinate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoordMode {
    /// `(x + 0.5) / scale - 0.5`
    HalfPixel,
    /// `half_pixel`, shifted to keep the image centred when `in * scale` is fractional
    HalfPixelSymmetric,
    /// `half_pixel`, but 0 when the output has length 1
    PytorchHalfPixel,
    /// `x * (in - 1) / (out - 1)`
    AlignCorners,
    /// `x / scale`
    Asymmetric,
    /// within the region of interest; outside it, the extrapolation value
    TfCropAndResize,
}

impl CoordMode {
    /// Every mode by its ONNX name (`coordinate_transformation_mode`): the DSL's
    /// `resize` and the ONNX mapping accept exactly these.
    pub const NAMED: [(&'static str, CoordMode); 6] = [
        ("half_pixel", CoordMode::HalfPixel),
        ("half_pixel_symmetric", CoordMode::HalfPixelSymmetric),
        ("pytorch_half_pixel", CoordMode::PytorchHalfPixel),
        ("align_corners", CoordMode::AlignCorners),
        ("asymmetric", CoordMode::Asymmetric),
        ("tf_crop_and_resize", CoordMode::TfCropAndResize),
    ];

    /// The mode ONNX calls `name`.
    pub fn named(name: &str) -> Option<CoordMode> {
        Self::NAMED
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, m)| m)
    }
}

/// How `nearest` resampling rounds a fractional input coordinate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NearestMode {
    /// round half down
    RoundPreferFloor,
    /// round half up
    RoundPreferCeil,
    /// down
    Floor,
    /// up
    Ceil,
}

/// The interpolation of [`Resample`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Interpolation {
    /// the nearest input element
    Nearest(NearestMode),
    /// (multi)linear, two taps per axis
    Linear,
    /// Keys cubic convolution with coefficient `a`, four taps per axis
    Cubic {
        /// -0.75 (PyTorch) or -0.5 (TensorFlow)
        a: f32,
    },
}

/// Attributes of ONNX-style resampling ([`Op::Resample`]): separable along every axis.
#[derive(Clone, Debug, PartialEq)]
pub struct Resample {
    /// nearest, linear or cubic
    pub interpolation: Interpolation,
    /// output to input coordinates
    pub coord: CoordMode,
    /// taps outside the input get weight 0 (and the rest are renormalized)
    pub exclude_outside: bool,
    /// widen linear/cubic kernels by `1 / scale` when downscaling
    pub antialias: bool,
    /// the value of outputs outside the region of interest (`TfCropAndResize`)
    pub extrapolation: f32,
    /// per axis, the scale used in the coordinate formulas
    pub scales: Vec<f64>,
    /// per axis, the region of interest `(start, end)` in normalized coordinates
    pub roi: Vec<(f64, f64)>,
}

/// The input taps of one output index along one axis of a [`Resample`].
#[derive(Clone, Debug, PartialEq)]
pub struct AxisTaps {
    /// The output lies outside the region of interest: it is the extrapolation value.
    pub outside: bool,
    /// `(input index, weight)`, indices clamped into the input, zero weights dropped.
    pub taps: Vec<(usize, f64)>,
}

impl Resample {
    /// The taps of every output index along `axis`, from `in_len` inputs to `out_len`
    /// outputs (ONNX's reference: the coordinate of each output, the `n` nearest input
    /// neighbours, edge-padded, and the interpolation weights of its fractional part).
    pub fn axis_taps(&self, axis: usize, in_len: usize, out_len: usize) -> Vec<AxisTaps> {
        let scale = self.scales.get(axis).copied().unwrap_or(1.0);
        let (roi_start, roi_end) = self.roi.get(axis).copied().unwrap_or((0.0, 1.0));
        let len = in_len as f64;
        let out_f = scale * len;
        (0..out_len)
            .map(|o| {
                let x = o as f64;
                let x_in = match self.coord {
                    CoordMode::HalfPixel => (x + 0.5) / scale - 0.5,
                    CoordMode::HalfPixelSymmetric => {
                        let adjustment = out_len as f64 / out_f;
                        len / 2.0 * (1.0 - adjustment) + (x + 0.5) / scale - 0.5
                    }
                    CoordMode::PytorchHalfPixel => {
                        if out_f == 1.0 {
                            -0.5
                        } else {
                            (x + 0.5) / scale - 0.5
                        }
                    }
                    CoordMode::AlignCorners => {
                        if out_f == 1.0 {
                            0.0
                        } else {
                            x * (len - 1.0) / (out_f - 1.0)
                        }
                    }
                    CoordMode::Asymmetric => x / scale,
                    CoordMode::TfCropAndResize => {
                        let x_in = if out_f == 1.0 {
                            (roi_end - roi_start) * (len - 1.0) / 2.0
                        } else {
                            x * (roi_end - roi_start) * (len - 1.0) / (out_f - 1.0)
                        };
                        x_in + roi_start * (len - 1.0)
                    }
                };
                if self.coord == CoordMode::TfCropAndResize && (x_in < 0.0 || x_in > len - 1.0) {
                    return AxisTaps {
                        outside: true,
                        taps: Vec::new(),
                    };
                }
                AxisTaps {
                    outside: false,
                    taps: self.taps_at(x_in, scale, in_len),
                }
            })
            .collect()
    }

    /// The weights around input coordinate `x_in`.
    fn taps_at(&self, x_in: f64, scale: f64, in_len: usize) -> Vec<(usize, f64)> {
        if in_len == 0 {
            return Vec::new();
        }
        // the left neighbour is the last index strictly below x_in, so ratio is in (0, 1]
        let left = x_in.ceil() - 1.0;
        let ratio = x_in - left;
        let coeffs: Vec<f64> = match self.interpolation {
            Interpolation::Nearest(mode) => {
                let right = match mode {
                    _ if ratio == 1.0 => true,
                    NearestMode::RoundPreferFloor => ratio > 0.5,
                    NearestMode::RoundPreferCeil => ratio >= 0.5,
                    NearestMode::Floor => false,
                    NearestMode::Ceil => true,
                };
                if right {
                    vec![0.0, 1.0]
                } else {
                    vec![1.0, 0.0]
                }
            }
            Interpolation::Linear if self.antialias => {
                let s = scale.min(1.0);
                let start = (-1.0 / s).floor() + 1.0;
                let n = (2.0 - 2.0 * start) as usize;
                (0..n)
                    .map(|k| (1.0 - ((start + k as f64 - ratio) * s).abs()).clamp(0.0, 1.0))
                    .collect()
            }
            Interpolation::Linear => vec![1.0 - ratio, ratio],
            Interpolation::Cubic { a } if self.antialias => {
                let s = scale.min(1.0);
                let start = (-2.0 / s).floor() + 1.0;
                let n = (2.0 - 2.0 * start) as usize;
                (0..n)
                    .map(|k| cubic_kernel(f64::from(a), s * (start + k as f64 - ratio)))
                    .collect()
            }
            Interpolation::Cubic { a } => {
                let a = f64::from(a);
                vec![
                    cubic_kernel(a, ratio + 1.0),
                    cubic_kernel(a, ratio),
                    cubic_kernel(a, 1.0 - ratio),
                    cubic_kernel(a, 2.0 - ratio),
                ]
            }
        };
        let n = coeffs.len() as i64;
        // the n nearest indices of the edge-padded axis (ties go to the smaller index):
        // left - n/2 + 1 ..= left + n/2, shifted to stay inside the padding
        let pad = (n + 1) / 2;
        let first = (left as i64 - n / 2 + 1).clamp(-pad, in_len as i64 + pad - n);
        let mut weights = coeffs;
        if self.antialias {
            // the widened kernels are normalized to sum 1
            let sum: f64 = weights.iter().sum();
            if sum != 0.0 {
                weights.iter_mut().for_each(|w| *w /= sum);
            }
        }
        if self.exclude_outside {
            for (k, w) in weights.iter_mut().enumerate() {
                let idx = first + k as i64;
                if idx < 0 || idx >= in_len as i64 {
                    *w = 0.0;
                }
            }
            let sum: f64 = weights.iter().sum();
            if sum != 0.0 {
                weights.iter_mut().for_each(|w| *w /= sum);
            }
        }
        let mut taps: Vec<(usize, f64)> = Vec::new();
        for (k, &w) in weights.iter().enumerate() {
            if w == 0.0 {
                continue;
            }
            let idx = (first + k as i64).clamp(0, in_len as i64 - 1).max(0) as usize;
            match taps.iter_mut().find(|(i, _)| *i == idx) {
                Some(t) => t.1 += w,
                None => taps.push((idx, w)),
            }
        }
        taps
    }
}

/// Keys' cubic convolution kernel at distance `x` with coefficient `a`.
fn cubic_kernel(a: f64, x: f64) -> f64 {
    let x = x.abs();
    if x <= 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    } else {
        0.0
    }
}

/// Columns of one panel of [`Op::PackPanels`]: the width of the runtime's matrix-product
/// register tile (`kernels::WEIGHT_PANEL`; the generated code asserts they agree).
pub const WEIGHT_PANEL: usize = 16;

/// Output channels per tile of [`Op::TileConvWeights`] (`kernels::WEIGHT_TILE_ROWS`; the
/// generated code asserts they agree).
pub const WEIGHT_TILE_ROWS: usize = 16;

/// Points of a transformed tile of [`Op::WinogradWeights`] for tiles of `tile` outputs a
/// side: `(tile + 2)^2` (16 or 36; the runtime's `kernels::winograd_points`, the generated
/// code asserts they agree).
pub const fn winograd_points(tile: usize) -> usize {
    (tile + 2) * (tile + 2)
}

/// An operation of the graph. The operand list of each variant is in its doc.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// `[x]`, elementwise.
    Unary(UnaryOp),
    /// `[a, b]`, elementwise with numpy broadcasting.
    Binary(BinaryOp),
    /// `[cond, a, b]`: `a` where `cond != 0`, else `b`; all broadcast.
    Where,
    /// `[x, slope]`: `x` if positive else `slope[c] * x`, slope along axis 1 (or 1 element).
    Prelu,
    /// `[x, weight [out, in], bias [out]?]`: `x @ weight^T + bias` on the last axis.
    Linear,
    /// `[a, b]`: matrix product over the last two axes, batch axes broadcast.
    MatMul,
    /// `[a [.., m, k], panels [n / 16 rounded up, k, 16]]` -> `[.., m, n]`: the matrix
    /// product of `a` by a `[k, n]` matrix stored as [`Op::PackPanels`] leaves it.
    MatMulPanels {
        /// columns of the product
        n: usize,
    },
    /// `[w [n, k]]` -> `[n / 16 rounded up, k, 16]`: a `linear`'s weight in the layout the
    /// matrix-product tiles read (panel `p`, row `k` holds `w[16 p + j, k]` for `j < 16`,
    /// zero past `n`). Computed once, when the weights load (stage `prepare`).
    PackPanels,
    /// `[w [out, in / groups, kh, kw]]` -> the same shape: a convolution's weight laid out
    /// as the runtime's `kernels::tile_conv2d_weights` lays it (per group, blocks of
    /// [`WEIGHT_TILE_ROWS`] output channels interleaved along the patch, the remaining
    /// channels row-major after them), read by a [`Conv2d`] with [`ConvWeights::Tiled`]. Computed
    /// once, when the weights load (stage `prepare`).
    TileConvWeights {
        /// channel groups of the convolution
        groups: usize,
    },
    /// `[w [out, in, 3, 3]]` -> `[(tile + 2)^2, out, in]`: a 3x3 convolution's weight
    /// transformed for Winograd's F(tile x tile, 3x3) as the runtime's
    /// `kernels::winograd_weights` does it (`U = G w G^T` per channel pair, point `p` of
    /// the transform in matrix `p`, each laid out as [`Op::TileConvWeights`] lays a `[out,
    /// in]` weight), read by a [`Conv2d`] with [`ConvWeights::Winograd`] of the same tile.
    /// Computed once, when the weights load (stage `prepare`).
    WinogradWeights {
        /// output pixels along each side of a tile: 2 or 4
        tile: usize,
    },
    /// `[x, weight, bias?]`, NCHW.
    Conv2d(Conv2d),
    /// `[x, weight, bias?]`, NCHW.
    ConvTranspose2d(ConvTranspose2d),
    /// `[x]`, NCHW; padding counts as minus infinity.
    MaxPool2d(Pool2d),
    /// `[x]`, NCHW.
    AvgPool2d(Pool2d),
    /// `[x]`, NCHW -> `[N, C, 1, 1]`: mean over h and w.
    GlobalAvgPool,
    /// `[x]`, NCHW -> `[N, C, 1, 1]`: max over h and w.
    GlobalMaxPool,
    /// `[x]`: reduce over `axes` (sorted, distinct).
    Reduce {
        /// the function
        kind: ReduceKind,
        /// reduced axes, sorted
        axes: Vec<usize>,
        /// reduced axes stay with length 1
        keepdims: bool,
    },
    /// `[x]`: softmax along `axis`.
    Softmax {
        /// normalized axis
        axis: usize,
    },
    /// `[x]`: log of softmax along `axis`.
    LogSoftmax {
        /// normalized axis
        axis: usize,
    },
    /// `[x, weight?, bias?]`: normalize over the last `dims` axes; weight/bias have that shape.
    LayerNorm {
        /// how many trailing axes are normalized
        dims: usize,
        /// added to the variance
        eps: f32,
    },
    /// `[x, weight, bias, running_mean, running_var]`, inference mode, channels on axis 1.
    BatchNorm {
        /// added to the variance
        eps: f32,
    },
    /// `[x, weight?, bias?]`: normalize each of `groups` channel groups per sample (axis 1).
    GroupNorm {
        /// channel groups
        groups: usize,
        /// added to the variance
        eps: f32,
    },
    /// `[x, weight?, bias?]`: normalize each channel of each sample over the spatial axes.
    InstanceNorm {
        /// added to the variance
        eps: f32,
    },
    /// `[x]`: same data, the output value's shape (also flatten, squeeze, unsqueeze).
    Reshape(ReshapeKind),
    /// `[x]`: output axis `i` is input axis `perm[i]`.
    Transpose {
        /// the permutation
        perm: Vec<usize>,
    },
    /// `[x0, x1, ...]` joined along `axis`.
    Concat {
        /// the joined axis
        axis: usize,
    },
    /// `[x]`: per axis, elements `start, start + step, ...` below `end` (steps are positive).
    Slice {
        /// first index per axis
        starts: Vec<usize>,
        /// one past the last index per axis
        ends: Vec<usize>,
        /// step per axis
        steps: Vec<usize>,
    },
    /// `[x]`: per axis, `(before, after)` elements added.
    Pad {
        /// padding per axis
        pads: Vec<(usize, usize)>,
        /// border fill
        mode: PadMode,
    },
    /// `[x, indices]`: `indices` holds whole numbers (as f32) indexing `axis` of `x`; the
    /// output shape is `x.shape[..axis] ++ indices.shape ++ x.shape[axis + 1..]`.
    Gather {
        /// the indexed axis
        axis: usize,
    },
    /// `[x]`: broadcast to the output shape.
    Expand,
    /// `[x]`: NCHW resampled to the output value's h and w.
    Resize(ResizeMode),
    /// `[x]`: ONNX `Resize` on any axes (output lengths are the output value's shape).
    Resample(Box<Resample>),
    /// `[x]`: a running fold along `axis` (`cumsum`, `cumprod`, ...), same shape.
    Scan {
        /// the function
        kind: ScanKind,
        /// the scanned axis
        axis: usize,
        /// each output excludes its own element
        exclusive: bool,
        /// sum from the end
        reverse: bool,
    },
}

/// Which DSL op a [`Op::Reshape`] came from (they compute the same thing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReshapeKind {
    /// `reshape`
    Reshape,
    /// `flatten`
    Flatten,
    /// `squeeze`
    Squeeze,
    /// `unsqueeze`
    Unsqueeze,
}

impl Op {
    /// The DSL name of the op (`conv2d`, `relu`, `add`).
    pub fn name(&self) -> &'static str {
        crate::ops::facts(self).name
    }
}

//! The poolings: `max_pool2d` and `avg_pool2d` over windows, `adaptive_avg_pool2d`, and
//! the global poolings. Everything the family knows is here: the argument binding (each
//! op's signature with its defaults, and its binder, a row of `DSL_OPS`), the shape
//! inference `check::infer` calls, the cost, the reference interpreter's evaluation and
//! the kernel call `codegen` emits, and the facts the stages ask (name, mapping type,
//! fusion role, sign: [`MAX_POOL2D`], ...).
//!
//! ```text
//!   max_pool2d(x [1, 1, 4, 4], 2)          each output is the max of a 2x2 window
//!   [[ 1  2 | 0  1]                        [[4  5]
//!    [ 3  4 | 5  2]              ->         [9  8]]
//!    [---------------]
//!    [ 9  0 | 7  8]
//!    [ 1  2 | 3  6]]
//! ```

use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;

use super::conv::padding4;
use super::{Bind, DslOp, LowerError};
use crate::check::{attr_err, dims4, err, expect_rank, fmt_shape, window_out, ShapeError};
use crate::ir::*;
use crate::lower::Val;
use crate::ops::{NonnegWhen, OpFacts, Role};
use crate::tables::MappingType::*;

/// The poolings as the DSL calls them.
pub(super) const DSL_OPS: &[DslOp] = dsl_ops! {
    "max_pool2d" => "x, kernel, stride = kernel, padding = 0, dilation = 1, ceil_mode = false" => window_pool,
    "avg_pool2d" => "x, kernel, stride = kernel, padding = 0, ceil_mode = false, count_include_pad = true, *, dilation = 1" => window_pool,
    "global_avg_pool2d" => "x" => global_pool, "global_max_pool2d" => "x" => global_pool,
    "adaptive_avg_pool2d" => "x, output_size" => |b, _| adaptive_pool(b),
};

/// `max_pool2d`: Many-to-Many, an anchor taking an epilogue; picks one of its inputs.
pub const MAX_POOL2D: OpFacts =
    OpFacts::new("max_pool2d", ManyToMany, Role::KERNEL, NonnegWhen::FirstIs);
/// `avg_pool2d`: the same; a mean keeps the sign.
pub const AVG_POOL2D: OpFacts =
    OpFacts::new("avg_pool2d", ManyToMany, Role::KERNEL, NonnegWhen::FirstIs);
/// `global_avg_pool2d`: Many-to-Many, row-wise (an epilogue and a prologue).
pub const GLOBAL_AVG_POOL2D: OpFacts = OpFacts::new(
    "global_avg_pool2d",
    ManyToMany,
    Role::ROWS,
    NonnegWhen::FirstIs,
);
/// `global_max_pool2d`: the same.
pub const GLOBAL_MAX_POOL2D: OpFacts = OpFacts::new(
    "global_max_pool2d",
    ManyToMany,
    Role::ROWS,
    NonnegWhen::FirstIs,
);

/// Binds `max_pool2d(..)` and `avg_pool2d(..)`.
fn window_pool(b: &mut Bind<'_, '_>, name: &str) -> Result<Val, LowerError> {
    let x = b.tensor("x")?;
    let kernel = b.pair("kernel", 1)?;
    let stride = b.pair_or("stride", kernel, 1)?;
    let padding = padding4(b, kernel, stride)?;
    // PyTorch's orders: max_pool2d(x, kernel, stride, padding, dilation, ceil_mode),
    // avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad)
    let (dilation, ceil_mode, count_include_pad) = if name == "avg_pool2d" {
        let ceil_mode = b.boolean("ceil_mode")?;
        let count_include_pad = b.boolean("count_include_pad")?;
        b.keywords_only();
        let dilation = b.pair("dilation", 1)?;
        (dilation, ceil_mode, count_include_pad)
    } else {
        let dilation = b.pair("dilation", 1)?;
        (dilation, b.boolean("ceil_mode")?, false)
    };
    let attrs = Pool2d {
        kernel,
        stride,
        padding,
        dilation,
        ceil_mode,
        count_include_pad,
    };
    let op = if name == "max_pool2d" {
        Op::MaxPool2d(attrs)
    } else {
        Op::AvgPool2d(attrs)
    };
    Ok(b.node(op, vec![x.0], &[x.1])?)
}

/// Binds `adaptive_avg_pool2d(..)`.
fn adaptive_pool(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
    let x = b.tensor("x")?;
    let shape = b.shape(x.0);
    let size = b.pair("output_size", 1)?;
    adaptive_avg_pool2d(b, x, &shape, size)
}

/// Binds `global_avg_pool2d(..)` and `global_max_pool2d(..)`.
fn global_pool(b: &mut Bind<'_, '_>, name: &str) -> Result<Val, LowerError> {
    let x = b.tensor("x")?;
    let shape = b.shape(x.0);
    if shape.len() < 3 {
        return Ok(b.lw.fail(
            x.1,
            format!(
                "{name}: the input must be [N, C, H, W] (at least 3-d), found {}",
                fmt_shape(&shape)
            ),
        )?);
    }
    let op = if name == "global_avg_pool2d" {
        Op::GlobalAvgPool
    } else {
        Op::GlobalMaxPool
    };
    Ok(b.node(op, vec![x.0], &[x.1])?)
}

/// PyTorch's adaptive average pooling: output cell `i` of an axis of length `n` averages
/// input `floor(i * n / out) .. ceil((i + 1) * n / out)`. As a global pool when the output
/// is 1x1, an `avg_pool2d` when the sizes divide, else per axis: a `reduce_mean` of each
/// window's slice, joined by `concat` (the windows of one axis share their size along the
/// other, so the mean of row means is the window mean).
fn adaptive_avg_pool2d(
    b: &mut Bind<'_, '_>,
    x: (ValueId, Span),
    shape: &[usize],
    size: [usize; 2],
) -> Result<Val, LowerError> {
    let [_, _, h, w] = shape else {
        return Ok(b.lw.fail(
            x.1,
            format!(
                "adaptive_avg_pool2d: the input must be [N, C, H, W], found {}",
                fmt_shape(shape)
            ),
        )?);
    };
    let (h, w) = (*h, *w);
    if h == 0 || w == 0 {
        return Ok(b.lw.fail(
            x.1,
            format!(
                "adaptive_avg_pool2d: the input {} has no pixels to average",
                fmt_shape(shape)
            ),
        )?);
    }
    let [oh, ow] = size;
    if [oh, ow] == [1, 1] {
        return Ok(b.node(Op::GlobalAvgPool, vec![x.0], &[x.1])?);
    }
    if h % oh == 0 && w % ow == 0 {
        let kernel = [h / oh, w / ow];
        let attrs = Pool2d {
            kernel,
            stride: kernel,
            padding: [0; 4],
            dilation: [1, 1],
            ceil_mode: false,
            count_include_pad: true,
        };
        return Ok(b.node(Op::AvgPool2d(attrs), vec![x.0], &[x.1])?);
    }
    let mut current = x.0;
    for (axis, out) in [(2usize, oh), (3usize, ow)] {
        let current_shape = b.shape(current);
        let len = current_shape.get(axis).copied().unwrap_or(1);
        if len == out {
            continue;
        }
        let mut parts = Vec::new();
        for i in 0..out {
            let mut starts = vec![0; 4];
            let mut ends = current_shape.clone();
            if let (Some(a), Some(e)) = (starts.get_mut(axis), ends.get_mut(axis)) {
                *a = i * len / out;
                *e = ((i + 1) * len).div_ceil(out);
            }
            let steps = vec![1; 4];
            let slice = Op::Slice {
                starts,
                ends,
                steps,
            };
            let window = b.inner_node(slice, vec![current], &[], &[x.1])?;
            let mean = Op::Reduce {
                kind: ReduceKind::Mean,
                axes: vec![axis],
                keepdims: true,
            };
            parts.push(b.inner_node(mean, vec![window], &[], &[x.1])?);
        }
        current = b.inner_node(Op::Concat { axis }, parts, &[], &[x.1])?;
    }
    Ok(Val::Tensor(current))
}

// ---------------------------------------------------------------------------------------
// Shape inference
// ---------------------------------------------------------------------------------------

/// Output shape of `max_pool2d` / `avg_pool2d` on `[N, C, H, W]`.
pub fn window_shape(op: &str, x: &[usize], attrs: &Pool2d) -> Result<Vec<usize>, ShapeError> {
    expect_rank(op, "the input", x, 4, 0)?;
    let [n, c, h, w] = dims4(x);
    let [pt, pl, pb, pr] = attrs.padding;
    // every window must overlap the input (ONNX allows more padding than PyTorch's
    // "at most half the kernel", so the DSL does too)
    for (k, d, p) in [
        (attrs.kernel[0], attrs.dilation[0], pt.max(pb)),
        (attrs.kernel[1], attrs.dilation[1], pl.max(pr)),
    ] {
        let span = d.saturating_mul(k.saturating_sub(1)).saturating_add(1);
        if p >= span {
            return attr_err(
                "padding",
                format!(
                    "{op}: padding ({p}) must be smaller than the window ({span} with dilation)"
                ),
            );
        }
    }
    let oh = pool_out(
        op,
        "height",
        h,
        pt,
        pb,
        attrs.kernel[0],
        attrs.stride[0],
        attrs.dilation[0],
        attrs.ceil_mode,
    )?;
    let ow = pool_out(
        op,
        "width",
        w,
        pl,
        pr,
        attrs.kernel[1],
        attrs.stride[1],
        attrs.dilation[1],
        attrs.ceil_mode,
    )?;
    Ok(vec![n, c, oh, ow])
}

/// Pooling output length with PyTorch's ceil-mode rule (the last window starts inside the
/// input or the begin padding).
#[allow(clippy::too_many_arguments)]
pub fn pool_out(
    op: &str,
    axis: &str,
    len: usize,
    begin: usize,
    end: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    ceil: bool,
) -> Result<usize, ShapeError> {
    let out = window_out(
        op,
        axis,
        len,
        begin.saturating_add(end),
        kernel,
        stride,
        dilation,
    )?;
    if !ceil {
        return Ok(out);
    }
    // window_out accepted these, so the window fits in the padded input
    let span = dilation
        .saturating_mul(kernel.saturating_sub(1))
        .saturating_add(1);
    let num = len
        .saturating_add(begin)
        .saturating_add(end)
        .saturating_sub(span);
    let mut out = num.div_ceil(stride.max(1)).saturating_add(1);
    if (out - 1).saturating_mul(stride) >= len.saturating_add(begin) {
        out -= 1;
    }
    Ok(out)
}

/// Output shape of the global poolings: `[N, C, 1, ...]` for `[N, C, ...]`.
pub fn global_shape(op: &str, x: &[usize]) -> Result<Vec<usize>, ShapeError> {
    if x.len() < 2 {
        return err(
            Some(0),
            format!("{op}: needs [N, C, ...], found {}", fmt_shape(x)),
        );
    }
    Ok(x.iter()
        .enumerate()
        .map(|(axis, &d)| if axis < 2 { d } else { 1 })
        .collect())
}

// ---------------------------------------------------------------------------------------
// Cost
// ---------------------------------------------------------------------------------------

/// Operations of a window pooling with `outputs` elements: one per window tap.
pub fn window_cost(outputs: u64, attrs: &Pool2d) -> u64 {
    outputs.saturating_mul((attrs.kernel[0] * attrs.kernel[1]) as u64)
}

/// Operations of a global pooling over `inputs` elements: one per element.
pub fn global_cost(inputs: u64) -> u64 {
    inputs
}

// ---------------------------------------------------------------------------------------
// The reference interpreter's evaluation
// ---------------------------------------------------------------------------------------

/// Row-major input `[N, C, H, W]` and the output's spatial extent `[OH, OW]` (from
/// [`window_shape`]) of one window pooling.
#[cfg(feature = "interp")]
pub struct WindowInput<'a> {
    /// the input, row-major
    pub x: &'a [f32],
    /// the input's shape `[N, C, H, W]`
    pub shape: [usize; 4],
    /// the output's height and width
    pub out: [usize; 2],
}

/// The position `pos` as an index into an axis of length `len`, or `None` in padding.
#[cfg(feature = "interp")]
fn inside(pos: i64, len: usize) -> Option<usize> {
    usize::try_from(pos).ok().filter(|&p| p < len)
}

/// Max over each window (padding never wins, NaN does), in the reference interpreter.
/// `None` when `x` is shorter than its shape says.
#[cfg(feature = "interp")]
pub fn evaluate_max(attrs: &Pool2d, input: &WindowInput<'_>) -> Option<Vec<f32>> {
    let [n, c, h, w] = input.shape;
    let [oh, ow] = input.out;
    let [kh, kw] = attrs.kernel;
    let [sh, sw] = attrs.stride;
    let [dh, dw] = attrs.dilation;
    let [pt, pl, _, _] = attrs.padding;
    let mut out = Vec::with_capacity(n * c * oh * ow);
    for plane in 0..n * c {
        for y in 0..oh {
            for xo in 0..ow {
                let mut m = f32::NEG_INFINITY;
                for ky in 0..kh {
                    let Some(iy) = inside((y * sh + ky * dh) as i64 - pt as i64, h) else {
                        continue;
                    };
                    for kx in 0..kw {
                        let Some(ix) = inside((xo * sw + kx * dw) as i64 - pl as i64, w) else {
                            continue;
                        };
                        let v = *input.x.get((plane * h + iy) * w + ix)?;
                        if v > m || v.is_nan() {
                            m = v;
                        }
                        if m.is_nan() {
                            break;
                        }
                    }
                }
                out.push(m);
            }
        }
    }
    Some(out)
}

/// Mean over each window, in f64, in the reference interpreter. The sum covers real input
/// elements only; the divisor counts the window positions inside the padded extent
/// (`count_include_pad`) or inside the input. `None` when `x` is shorter than its shape
/// says.
#[cfg(feature = "interp")]
pub fn evaluate_avg(attrs: &Pool2d, input: &WindowInput<'_>) -> Option<Vec<f32>> {
    let [n, c, h, w] = input.shape;
    let [oh, ow] = input.out;
    let [kh, kw] = attrs.kernel;
    let [sh, sw] = attrs.stride;
    let [dh, dw] = attrs.dilation;
    let [pt, pl, pb, pr] = attrs.padding;
    let mut out = Vec::with_capacity(n * c * oh * ow);
    for plane in 0..n * c {
        for y in 0..oh {
            for xo in 0..ow {
                let mut sum = 0.0f64;
                let mut real = 0usize;
                let mut padded = 0usize;
                for ky in 0..kh {
                    // position relative to the top of the padded input
                    let py = y * sh + ky * dh;
                    let in_padded_y = py < pt + h + pb;
                    let iy = inside(py as i64 - pt as i64, h);
                    for kx in 0..kw {
                        let px = xo * sw + kx * dw;
                        if in_padded_y && px < pl + w + pr {
                            padded += 1;
                        }
                        let ix = inside(px as i64 - pl as i64, w);
                        if let (Some(iy), Some(ix)) = (iy, ix) {
                            real += 1;
                            sum += f64::from(*input.x.get((plane * h + iy) * w + ix)?);
                        }
                    }
                }
                let divisor = if attrs.count_include_pad {
                    padded
                } else {
                    real
                };
                out.push((sum / divisor as f64) as f32);
            }
        }
    }
    Some(out)
}

/// Mean (or max, NaN winning) of each of `planes` runs of `plane` elements of `x`, in f64,
/// in the reference interpreter. `None` when `x` is shorter than that.
#[cfg(feature = "interp")]
pub fn evaluate_global(max: bool, x: &[f32], planes: usize, plane: usize) -> Option<Vec<f32>> {
    (0..planes)
        .map(|p| {
            let values = x.get(p * plane..(p + 1) * plane)?;
            let r = if max {
                values.iter().fold(f64::NEG_INFINITY, |m, &v| {
                    super::binary::max_nan(m, f64::from(v))
                })
            } else {
                values.iter().map(|&v| f64::from(v)).sum::<f64>() / plane as f64
            };
            Some(r as f32)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Code generation
// ---------------------------------------------------------------------------------------

/// The kernel call that pools `input` (of `shape`) into `out` (of `out_shape`) with the
/// epilogue `epilogue`: a window pooling when `window` is given, else a global one.
/// `k` is the path of the runtime's `kernels` module.
#[allow(clippy::too_many_arguments)]
pub fn kernel_call(
    k: &TokenStream,
    max: bool,
    window: Option<&Pool2d>,
    input: &Ident,
    out: &Ident,
    shape: &[usize],
    out_shape: &[usize],
    epilogue: &TokenStream,
) -> TokenStream {
    let dim = |s: &[usize], axis: usize| s.get(axis).copied().unwrap_or(1);
    let planes = dim(shape, 0) * dim(shape, 1);
    let Some(p) = window else {
        let plane: usize = shape.get(2..).unwrap_or(&[]).iter().product();
        return if max {
            quote! { #k::global_max_pool(#input, #out, #planes, #plane, #epilogue); }
        } else {
            quote! { #k::global_avg_pool(#input, #out, #planes, #plane, #epilogue); }
        };
    };
    let [h, w] = [dim(shape, 2), dim(shape, 3)];
    let [oh, ow] = [dim(out_shape, 2), dim(out_shape, 3)];
    let [kh, kw] = p.kernel;
    let [sh, sw] = p.stride;
    let [pt, pl, pb, pr] = p.padding;
    let [dh, dw] = p.dilation;
    let geom = quote! {
        &#k::Pool2dGeom {
            planes: #planes, h: #h, w: #w, oh: #oh, ow: #ow, kh: #kh, kw: #kw,
            stride_h: #sh, stride_w: #sw, pad_top: #pt, pad_left: #pl, pad_bottom: #pb, pad_right: #pr,
            dilation_h: #dh, dilation_w: #dw,
        }
    };
    if max {
        quote! { #k::max_pool2d(#input, #out, #geom, #epilogue); }
    } else {
        let cip = p.count_include_pad;
        quote! { #k::avg_pool2d(#input, #out, #geom, #cip, #epilogue); }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PyTorch's ceil-mode rule.
    #[test]
    fn window_shape_rounds_up_in_ceil_mode() {
        // torch.nn.MaxPool2d(3, 2, ceil_mode=True) on 6x6 gives 3x3 (floor would give 2x2)
        let p = Pool2d {
            kernel: [3, 3],
            stride: [2, 2],
            padding: [0; 4],
            dilation: [1, 1],
            ceil_mode: true,
            count_include_pad: true,
        };
        assert_eq!(
            window_shape("max_pool2d", &[1, 1, 6, 6], &p),
            Ok(vec![1, 1, 3, 3])
        );
        // ceil_mode with padding 1, kernel 2, stride 2 on 5: floor gives 3, ceil gives 4, and
        // the 4th window starts at 6 - 1 = 5 >= 5 + 1? no: (4-1)*2 = 6 >= 6 -> 3
        let p = Pool2d {
            kernel: [2, 2],
            stride: [2, 2],
            padding: [1; 4],
            dilation: [1, 1],
            ceil_mode: true,
            count_include_pad: true,
        };
        assert_eq!(
            window_shape("max_pool2d", &[1, 1, 5, 5], &p),
            Ok(vec![1, 1, 3, 3])
        );
    }
}

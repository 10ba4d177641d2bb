//! The convolutions: `conv2d` and `conv_transpose2d`, and the load-time layouts of a
//! convolution's weight (`tile_conv_weights`, `winograd_weights`). Everything the family
//! knows is here: the argument binding (each op's signature with its defaults, and its
//! binder, a row of `DSL_OPS`) and the learned tensors each call creates, the shape
//! inference `check::infer` calls, the cost, the reference interpreter's f64 evaluation
//! and the kernel calls `codegen` emits, and the facts the stages ask (name, mapping
//! type, fusion role, sign: [`CONV2D`], ...); the choice of weight layout is `prepare`'s.
//!
//! ```text
//!   conv2d(x [1, 1, 28, 28], 6, kernel = 5)     weight [6, 1, 5, 5], bias [6]
//!     -> [1, 6, 24, 24]: y[o, i, j] = b[o] + sum over c, u, v of x[c, i + u, j + v] w[o, c, u, v]
//! ```

use proc_macro2::{Ident, TokenStream};
use quote::quote;

use super::{Bind, DslOp, LowerError};
use crate::check::{
    attr_err, dims4, err, expect_rank, expect_shape, fmt_shape, leading, operands, window_out,
    ShapeError,
};
use crate::ir::*;
use crate::lower::Val;
use crate::ops::{NonnegWhen, OpFacts, Role};
use crate::tables::MappingType::*;

/// The convolutions as the DSL calls them.
pub(super) const DSL_OPS: &[DslOp] = dsl_ops! {
    "conv2d" => "x, out_channels, kernel, stride = 1, padding = 0, dilation = 1, groups = 1, bias = true"; params "weight [out_channels, in_channels / groups, kh, kw], bias [out_channels]" => |b, _| conv2d(b),
    "conv_transpose2d" => "x, out_channels, kernel, stride = 1, padding = 0, output_padding = 0, groups = 1, bias = true, dilation = 1"; params "weight [in_channels, out_channels / groups, kh, kw], bias [out_channels]" => |b, _| conv_transpose2d(b),
};

/// `conv2d`: Many-to-Many, an anchor taking an epilogue.
pub const CONV2D: OpFacts = OpFacts::new("conv2d", ManyToMany, Role::KERNEL, NonnegWhen::Unknown);
/// `conv_transpose2d`: the same.
pub const CONV_TRANSPOSE2D: OpFacts = OpFacts::new(
    "conv_transpose2d",
    ManyToMany,
    Role::KERNEL,
    NonnegWhen::Unknown,
);
/// A convolution's weight in tiles: a Shuffle (zero padding keeps the sign).
pub const TILE_CONV_WEIGHTS: OpFacts = OpFacts::new(
    "tile_conv_weights",
    Shuffle,
    Role::PLAIN,
    NonnegWhen::FirstIs,
);
/// A 3x3 weight's Winograd transform: Many-to-Many (every transformed weight reads the nine
/// taps of its channel pair); an anchor like the convolutions.
pub const WINOGRAD_WEIGHTS: OpFacts = OpFacts::new(
    "winograd_weights",
    ManyToMany,
    Role::KERNEL,
    NonnegWhen::Unknown,
);

/// Binds `conv2d(..)`.
fn conv2d(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
    let x = b.tensor("x")?;
    let (out, _) = b.positive("out_channels")?;
    let kernel = b.pair("kernel", 1)?;
    let stride = b.pair("stride", 1)?;
    let padding = padding4(b, kernel, stride)?;
    let dilation = b.pair("dilation", 1)?;
    let (groups, _) = b.positive("groups")?;
    let bias = b.boolean("bias")?;
    let attrs = Conv2d {
        kernel,
        stride,
        padding,
        dilation,
        groups,
        weights: crate::ir::ConvWeights::RowMajor,
    };
    // the attributes checked against the input before the weight is shaped by them
    if let Err(e) = conv2d_shape(&b.shape(x.0), &attrs, out) {
        return Ok(b.shape_fail(e, &[x.1])?);
    }
    let cin = b.shape(x.0).get(1).copied().unwrap_or(1);
    let weight = [out, cin / groups, kernel[0], kernel[1]];
    let inputs = with_params(b, x.0, weight, bias.then_some(out))?;
    Ok(b.node(Op::Conv2d(attrs), inputs, &[x.1])?)
}

/// Binds `conv_transpose2d(..)`.
fn conv_transpose2d(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
    let x = b.tensor("x")?;
    let (out, _) = b.positive("out_channels")?;
    let kernel = b.pair("kernel", 1)?;
    let stride = b.pair("stride", 1)?;
    let padding = b.pair("padding", 0)?;
    let output_padding = b.pair("output_padding", 0)?;
    // PyTorch's order: groups, bias, then dilation
    let (groups, _) = b.positive("groups")?;
    let bias = b.boolean("bias")?;
    let dilation = b.pair("dilation", 1)?;
    let attrs = ConvTranspose2d {
        kernel,
        stride,
        padding,
        output_padding,
        dilation,
        groups,
    };
    // the attributes checked against the input before the weight is shaped by them
    if let Err(e) = conv_transpose2d_shape(&b.shape(x.0), &attrs, out) {
        return Ok(b.shape_fail(e, &[x.1])?);
    }
    let cin = b.shape(x.0).get(1).copied().unwrap_or(1);
    let weight = [cin, out / groups, kernel[0], kernel[1]];
    let inputs = with_params(b, x.0, weight, bias.then_some(out))?;
    Ok(b.node(Op::ConvTranspose2d(attrs), inputs, &[x.1])?)
}

/// A convolution's operands: `x`, then the learned `weight` of shape `weight` and, when
/// given its length, the `bias`.
fn with_params(
    b: &mut Bind<'_, '_>,
    x: ValueId,
    weight: [usize; 4],
    bias: Option<usize>,
) -> Result<Vec<ValueId>, LowerError> {
    let key = b.key();
    let mut inputs = vec![x, b.param(&key, "weight", weight.to_vec())?];
    if let Some(len) = bias {
        inputs.push(b.param(&key, "bias", vec![len])?);
    }
    Ok(inputs)
}

/// `padding = p | [ph, pw] | [t, l, b, r] | "same" | "valid"`, as [top, left, bottom, right].
pub(super) fn padding4(
    b: &mut Bind<'_, '_>,
    kernel: [usize; 2],
    stride: [usize; 2],
) -> Result<[usize; 4], LowerError> {
    let op = b.args.op.clone();
    match b.args.take("padding") {
        None => {
            let p: usize = b.default("padding", "an integer")?;
            Ok([p; 4])
        }
        Some((Val::Str(s), span)) => match s.as_str() {
            "valid" => Ok([0; 4]),
            "same" => {
                if stride != [1, 1] {
                    return Ok(b.lw.fail(
                        span,
                        format!("{op}: padding = \"same\" needs stride 1 (as in PyTorch)"),
                    )?);
                }
                let (th, tw) = (kernel[0] - 1, kernel[1] - 1);
                Ok([th / 2, tw / 2, th - th / 2, tw - tw / 2])
            }
            other => Ok(b.lw.fail(
                span,
                format!(
                    "{op}: padding \"{other}\" is not one of \"same\", \"valid\"; or give numbers"
                ),
            )?),
        },
        Some((v, span)) => {
            let list: Vec<i64> = match v {
                Val::Int(n) => vec![n],
                Val::List(items) => items
                    .iter()
                    .map(|(v, _)| if let Val::Int(n) = v { *n } else { -1 })
                    .collect(),
                other => {
                    return Ok(b.wrong(
                        "padding",
                        "an integer, a list or \"same\"",
                        &other,
                        span,
                    )?)
                }
            };
            if list.iter().any(|&p| p < 0) {
                return Ok(b
                    .lw
                    .fail(span, format!("{op}: padding must be non-negative integers"))?);
            }
            let u: Vec<usize> = list.iter().map(|&p| p as usize).collect();
            match u.as_slice() {
                [p] => Ok([*p; 4]),
                [h, w] => Ok([*h, *w, *h, *w]),
                [t, l, bo, r] => Ok([*t, *l, *bo, *r]),
                _ => Ok(b.lw.fail(span, format!("{op}: padding takes 1, 2 (h, w) or 4 (top, left, bottom, right) integers, found {}", u.len()))?),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Shape inference
// ---------------------------------------------------------------------------------------

/// An error unless `groups` divides both channel counts.
fn groups_divide(op: &str, groups: usize, c: usize, out_channels: usize) -> Result<(), ShapeError> {
    if groups == 0 || !c.is_multiple_of(groups) || !out_channels.is_multiple_of(groups) {
        return attr_err(
            "groups",
            format!(
                "{op}: groups = {groups} must divide both the input channels ({c}) and the output channels ({out_channels})"
            ),
        );
    }
    Ok(())
}

/// Output shape of `conv2d` for input `[N, C, H, W]` and weight `[O, C/g, kh, kw]`.
pub fn conv2d_shape(
    x: &[usize],
    attrs: &Conv2d,
    out_channels: usize,
) -> Result<Vec<usize>, ShapeError> {
    expect_rank("conv2d", "the input", x, 4, 0)?;
    let [n, c, h, w] = dims4(x);
    groups_divide("conv2d", attrs.groups, c, out_channels)?;
    let [pt, pl, pb, pr] = attrs.padding;
    let oh = window_out(
        "conv2d",
        "height",
        h,
        pt.saturating_add(pb),
        attrs.kernel[0],
        attrs.stride[0],
        attrs.dilation[0],
    )?;
    let ow = window_out(
        "conv2d",
        "width",
        w,
        pl.saturating_add(pr),
        attrs.kernel[1],
        attrs.stride[1],
        attrs.dilation[1],
    )?;
    Ok(vec![n, out_channels, oh, ow])
}

/// Output shape of `conv_transpose2d` for input `[N, C, H, W]`.
pub fn conv_transpose2d_shape(
    x: &[usize],
    attrs: &ConvTranspose2d,
    out_channels: usize,
) -> Result<Vec<usize>, ShapeError> {
    expect_rank("conv_transpose2d", "the input", x, 4, 0)?;
    let [n, c, h, w] = dims4(x);
    groups_divide("conv_transpose2d", attrs.groups, c, out_channels)?;
    let mut out = [0usize; 2];
    for (i, (len, slot)) in [h, w].into_iter().zip(out.iter_mut()).enumerate() {
        let s = attrs.stride.get(i).copied().unwrap_or(1);
        let p = attrs.padding.get(i).copied().unwrap_or(0);
        let d = attrs.dilation.get(i).copied().unwrap_or(1);
        let k = attrs.kernel.get(i).copied().unwrap_or(1);
        let op = attrs.output_padding.get(i).copied().unwrap_or(0);
        if s == 0 || d == 0 || k == 0 {
            return err(
                None,
                "conv_transpose2d: kernel, stride and dilation must be at least 1".to_string(),
            );
        }
        if op >= s && op >= d {
            return attr_err("output_padding", format!("conv_transpose2d: output_padding ({op}) must be smaller than the stride ({s}) or the dilation ({d})"));
        }
        let full = len
            .saturating_sub(1)
            .checked_mul(s)
            .and_then(|n| n.checked_add(d.checked_mul(k - 1)?))
            .and_then(|n| n.checked_add(op)?.checked_add(1));
        let Some(full) = full.filter(|&n| n <= crate::MAX_ELEMENTS) else {
            return err(None, format!("conv_transpose2d: the output is too large (above {} along one axis); use a smaller kernel, stride or dilation", crate::MAX_ELEMENTS));
        };
        if p.saturating_mul(2) >= full {
            return attr_err("padding", format!("conv_transpose2d: padding {p} removes the whole output (size {full} before padding)"));
        }
        *slot = full - 2 * p;
    }
    Ok(vec![n, out_channels, out[0], out[1]])
}

/// Shape of `tile_conv_weights` (the load-time layout of `ConvWeights::Tiled`): its
/// weight's./// Shape of `tile_conv_weights` (the load-time layout of `ConvWeights::Tiled`): its
/// weight's.
pub fn tiled_weight_shape(
    name: &str,
    inputs: &[&[usize]],
    groups: usize,
) -> Result<Vec<usize>, ShapeError> {
    let [w] = operands(name, inputs)?;
    match w.first() {
        Some(o) if w.len() == 4 && groups > 0 && o % groups == 0 => Ok(w.to_vec()),
        _ => err(
            Some(0),
            format!(
                "tile_conv_weights: a 4-d weight whose {groups} groups divide its outputs expected, found {}",
                fmt_shape(w)
            ),
        ),
    }
}
/// Shape of `winograd_weights` (the load-time layout of `ConvWeights::Winograd`):
/// `[(tile + 2)^2, out, in]` for a `[out, in, 3, 3]` weight.
pub fn winograd_weight_shape(
    name: &str,
    tile: usize,
    inputs: &[&[usize]],
) -> Result<Vec<usize>, ShapeError> {
    match operands::<1>(name, inputs)?[0] {
        [o, i, 3, 3] => Ok(vec![winograd_points(tile), *o, *i]),
        w => err(
            Some(0),
            format!(
                "winograd_weights: a 3x3 weight expected, found {}",
                fmt_shape(w)
            ),
        ),
    }
}
/// Shape of `conv2d` on its operands: the weight (in the layout `attrs.weights` names)
/// and the optional bias checked against the input, then [`conv2d_shape`].
pub fn conv2d_operands_shape(
    name: &str,
    inputs: &[&[usize]],
    attrs: &Conv2d,
) -> Result<Vec<usize>, ShapeError> {
    let x = leading(name, inputs, 2, 3)?;
    let w = inputs.get(1).copied().unwrap_or(&[]);
    let c = x.get(1).copied().unwrap_or(0);
    let per_group = c.checked_div(attrs.groups).unwrap_or(0);
    let [kh, kw] = attrs.kernel;
    let out_channels = match (attrs.weights, w) {
        (ConvWeights::Winograd { tile }, [p, o, i])
            if *p == winograd_points(tile) && *i == c && attrs.kernel == [3, 3] =>
        {
            *o
        }
        (ConvWeights::RowMajor | ConvWeights::Tiled, [o, i, h, k])
            if *i == per_group && [*h, *k] == [kh, kw] =>
        {
            *o
        }
        _ => {
            return err(
                Some(1),
                format!(
                    "conv2d: weight {} ({:?} layout) does not fit input {} with {} groups and kernel {kh}x{kw}",
                    fmt_shape(w),
                    attrs.weights,
                    fmt_shape(x),
                    attrs.groups
                ),
            )
        }
    };
    expect_shape(name, "the bias", inputs, 2, &[out_channels])?;
    conv2d_shape(x, attrs, out_channels)
}
/// Shape of `conv_transpose2d` on its operands: the weight `[in, out / groups, kh, kw]`
/// and the optional bias checked against the input, then [`conv_transpose2d_shape`].
pub fn conv_transpose2d_operands_shape(
    name: &str,
    inputs: &[&[usize]],
    attrs: &ConvTranspose2d,
) -> Result<Vec<usize>, ShapeError> {
    let x = leading(name, inputs, 2, 3)?;
    let w = inputs.get(1).copied().unwrap_or(&[]);
    let out_channels = match w {
        [i, o, h, k]
            if Some(i) == x.get(1) && [*h, *k] == attrs.kernel =>
        {
            o.saturating_mul(attrs.groups)
        }
        _ => {
            return err(
                Some(1),
                format!(
                    "conv_transpose2d: weight {} does not fit input {} (the weight is [in, out / groups, kh, kw])",
                    fmt_shape(w),
                    fmt_shape(x)
                ),
            )
        }
    };
    expect_shape(name, "the bias", inputs, 2, &[out_channels])?;
    conv_transpose2d_shape(x, attrs, out_channels)
}

// ---------------------------------------------------------------------------------------
// Cost
// ---------------------------------------------------------------------------------------

/// Operations of a `conv2d` with `outputs` elements and `in_channels` input channels: a
/// multiply-add per tap of its group's channels.
pub fn conv2d_cost(outputs: u64, in_channels: u64, attrs: &Conv2d) -> u64 {
    let per = (in_channels / attrs.groups.max(1) as u64)
        .saturating_mul((attrs.kernel[0] * attrs.kernel[1]) as u64);
    outputs.saturating_mul(2).saturating_mul(per)
}

/// Operations of a `conv_transpose2d` with `inputs` elements and `out_channels` output
/// channels: each input scatters a multiply-add per tap of its group's outputs.
pub fn conv_transpose2d_cost(inputs: u64, out_channels: u64, attrs: &ConvTranspose2d) -> u64 {
    let per = (out_channels / attrs.groups.max(1) as u64)
        .saturating_mul((attrs.kernel[0] * attrs.kernel[1]) as u64);
    inputs.saturating_mul(2).saturating_mul(per)
}

// ---------------------------------------------------------------------------------------
// The reference interpreter's f64 evaluation (operands checked by `check::infer` first;
// `None` when one is shorter than its shape says)
// ---------------------------------------------------------------------------------------

/// A row-major 4-d operand.
#[cfg(feature = "interp")]
#[derive(Clone, Copy)]
pub struct Tensor4<'a> {
    /// the elements, row-major
    pub data: &'a [f32],
    /// the shape
    pub dims: [usize; 4],
}

/// The position `pos` as an index into an axis of length `len`, or `None` in padding.
#[cfg(feature = "interp")]
fn inside(pos: i64, len: usize) -> Option<usize> {
    usize::try_from(pos).ok().filter(|&p| p < len)
}

/// PyTorch's `conv2d` in f64: input `[N, C, H, W]`, weight `[O, C / groups, kh, kw]`,
/// bias of length `O`, zero padding `[top, left, bottom, right]`; the output's height and
/// width are `out` (from [`conv2d_shape`]).
#[cfg(feature = "interp")]
pub fn evaluate_conv2d(
    attrs: &Conv2d,
    x: Tensor4<'_>,
    w: Tensor4<'_>,
    bias: &[f32],
    [oh, ow]: [usize; 2],
) -> Option<Vec<f32>> {
    let [n, c, h, wi] = x.dims;
    let [o, cpg, kh, kw] = w.dims;
    let [sh, sw] = attrs.stride;
    let [dh, dw] = attrs.dilation;
    let [pt, pl, _, _] = attrs.padding;
    let opg = o / attrs.groups.max(1);
    let mut out = Vec::with_capacity(n * o * oh * ow);
    for ni in 0..n {
        for oc in 0..o {
            let group = oc / opg.max(1);
            for y in 0..oh {
                for xo in 0..ow {
                    let mut acc = f64::from(*bias.get(oc)?);
                    for icl in 0..cpg {
                        let ic = group * cpg + icl;
                        for ky in 0..kh {
                            let pos = (y * sh + ky * dh) as i64 - pt as i64;
                            let Some(iy) = inside(pos, h) else { continue };
                            // x[ni, ic, iy, :] and w[oc, icl, ky, :]
                            let row = ((ni * c + ic) * h + iy) * wi;
                            let xrow = x.data.get(row..row + wi)?;
                            let row = ((oc * cpg + icl) * kh + ky) * kw;
                            let wrow = w.data.get(row..row + kw)?;
                            for (kx, &wv) in wrow.iter().enumerate() {
                                let pos = (xo * sw + kx * dw) as i64 - pl as i64;
                                let Some(ix) = inside(pos, wi) else { continue };
                                acc += f64::from(*xrow.get(ix)?) * f64::from(wv);
                            }
                        }
                    }
                    out.push(acc as f32);
                }
            }
        }
    }
    Some(out)
}

/// PyTorch's `conv_transpose2d` in f64: input `[N, C, H, W]`, weight
/// `[C, O / groups, kh, kw]`, bias of length `O`; every input element scatters `x * w`
/// into the output at `in_pos * stride + k * dilation - padding`. The output's height and
/// width are `out` (from [`conv_transpose2d_shape`]).
#[cfg(feature = "interp")]
pub fn evaluate_conv_transpose2d(
    attrs: &ConvTranspose2d,
    x: Tensor4<'_>,
    w: Tensor4<'_>,
    bias: &[f32],
    [oh, ow]: [usize; 2],
) -> Option<Vec<f32>> {
    let [n, cin, h, wi] = x.dims;
    let [_, opg, kh, kw] = w.dims;
    let g = attrs.groups.max(1);
    let ipg = (cin / g).max(1);
    let cout = opg * g;
    let [sh, sw] = attrs.stride;
    let [dh, dw] = attrs.dilation;
    let [ph, pw] = attrs.padding;
    let mut acc = vec![0.0f64; n * cout * oh * ow];
    for ni in 0..n {
        for ic in 0..cin {
            let group = ic / ipg;
            for iy in 0..h {
                for ix in 0..wi {
                    let xv = f64::from(*x.data.get(((ni * cin + ic) * h + iy) * wi + ix)?);
                    for ocl in 0..opg {
                        let oc = group * opg + ocl;
                        for ky in 0..kh {
                            let pos = (iy * sh + ky * dh) as i64 - ph as i64;
                            let Some(oy) = inside(pos, oh) else { continue };
                            for kx in 0..kw {
                                let pos = (ix * sw + kx * dw) as i64 - pw as i64;
                                let Some(ox) = inside(pos, ow) else { continue };
                                let wv = *w.data.get(((ic * opg + ocl) * kh + ky) * kw + kx)?;
                                *acc.get_mut(((ni * cout + oc) * oh + oy) * ow + ox)? +=
                                    xv * f64::from(wv);
                            }
                        }
                    }
                }
            }
        }
    }
    let plane = (oh * ow).max(1);
    acc.iter()
        .enumerate()
        .map(|(i, &v)| Some((v + f64::from(*bias.get((i / plane) % cout.max(1))?)) as f32))
        .collect()
}

/// A weight `[out, in / groups, kh, kw]` laid out as `tile_conv_weights` stores it
/// (`tile`), or back (`!tile`): per group, output channel `i` of tile `t` at patch row
/// `k` is at `(t * depth + k) * 16 + i`, the group's channels past its last whole tile
/// row-major after the tiles.
#[cfg(feature = "interp")]
pub fn evaluate_tiled_weights(w: Tensor4<'_>, groups: usize, tile: bool) -> Option<Vec<f32>> {
    let [out_channels, ..] = w.dims;
    let per_group = out_channels / groups.max(1);
    let depth: usize = w.dims.iter().skip(1).product();
    let tiled_rows = per_group / WEIGHT_TILE_ROWS * WEIGHT_TILE_ROWS;
    let mut out = vec![0.0f32; w.data.len()];
    for o in 0..out_channels {
        let (group, row) = (o / per_group.max(1), o % per_group.max(1));
        let base = group * per_group * depth;
        for k in 0..depth {
            let plain = o * depth + k;
            let tiled = if row < tiled_rows {
                let (t, i) = (row / WEIGHT_TILE_ROWS, row % WEIGHT_TILE_ROWS);
                base + (t * depth + k) * WEIGHT_TILE_ROWS + i
            } else {
                plain
            };
            let (from, to) = if tile { (plain, tiled) } else { (tiled, plain) };
            *out.get_mut(to)? = *w.data.get(from)?;
        }
    }
    Some(out)
}

/// Winograd's `G` for tiles of `tile` outputs a side (`(tile + 2) x 3`): F(2x2, 3x3)
/// interpolates at 0, 1, -1 and infinity, F(4x4, 3x3) at 0, 1, -1, 2, -2 and infinity.
#[cfg(feature = "interp")]
fn winograd_g(tile: usize) -> Option<&'static [[f64; 3]]> {
    const F2: [[f64; 3]; 4] = [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ];
    const F4: [[f64; 3]; 6] = [
        [1.0 / 4.0, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        [0.0, 0.0, 1.0],
    ];
    match tile {
        2 => Some(&F2),
        4 => Some(&F4),
        _ => None,
    }
}

/// A left inverse `P` of [`winograd_g`] (`P G = I`, `3 x (tile + 2)`), so that `w = P U
/// P^T`: the taps come back from rows 0, 1 and 2 (F(2x2)) or 0, 1, 2 and 5 (F(4x4)).
#[cfg(feature = "interp")]
fn winograd_left_inverse(tile: usize) -> Option<&'static [&'static [f64]]> {
    const F2: [&[f64]; 3] = [
        &[1.0, 0.0, 0.0, 0.0],
        &[0.0, 1.0, -1.0, 0.0],
        &[0.0, 0.0, 0.0, 1.0],
    ];
    const F4: [&[f64]; 3] = [
        &[4.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        &[0.0, -3.0, 3.0, 0.0, 0.0, 0.0],
        &[0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
    ];
    match tile {
        2 => Some(&F2),
        4 => Some(&F4),
        _ => None,
    }
}

/// A 3x3 weight `[out, in, 3, 3]` transformed as `winograd_weights` stores it for tiles of
/// `tile` outputs a side: `U = G w G^T` per channel pair (in f64, rounded once), point `p`
/// of the `(tile + 2)^2` results in matrix `p`, each `[out, in]` matrix tiled as
/// `tile_conv_weights` tiles a weight of depth `in`.
#[cfg(feature = "interp")]
pub fn evaluate_winograd_weights(
    w: &[f32],
    [out_channels, in_channels]: [usize; 2],
    tile: usize,
) -> Option<Vec<f32>> {
    let g = winograd_g(tile)?;
    let side = g.len();
    let pairs = out_channels * in_channels;
    let mut points = vec![0.0f32; winograd_points(tile) * pairs];
    for (pair, taps) in w.chunks_exact(9).enumerate() {
        for (r, gr) in g.iter().enumerate() {
            for (c, gc) in g.iter().enumerate() {
                // (G w G^T)[r][c] = sum over a, b of G[r][a] w[a][b] G[c][b]
                let mut u = 0.0;
                for (row, &ga) in taps.chunks_exact(3).zip(gr) {
                    for (&tap, &gb) in row.iter().zip(gc) {
                        u += ga * f64::from(tap) * gb;
                    }
                }
                *points.get_mut((r * side + c) * pairs + pair)? = u as f32;
            }
        }
    }
    let mut tiled = Vec::with_capacity(points.len());
    for point in points.chunks_exact(pairs.max(1)) {
        let plain = Tensor4 {
            data: point,
            dims: [out_channels, in_channels, 1, 1],
        };
        tiled.extend(evaluate_tiled_weights(plain, 1, true)?);
    }
    Some(tiled)
}

/// The 3x3 taps `[out, in, 3, 3]` that `winograd_weights` transformed into `u`
/// (`[(tile + 2)^2, out, in]`): `w = P U P^T` for the left inverse `P` of `G`
/// (`winograd_left_inverse`).
#[cfg(feature = "interp")]
pub fn evaluate_winograd_taps(
    u: &[f32],
    [out_channels, in_channels]: [usize; 2],
    tile: usize,
) -> Option<Vec<f32>> {
    let p = winograd_left_inverse(tile)?;
    let side = tile + 2;
    let pairs = out_channels * in_channels;
    let plain = u
        .chunks_exact(pairs.max(1))
        .map(|point| {
            let tiled = Tensor4 {
                data: point,
                dims: [out_channels, in_channels, 1, 1],
            };
            evaluate_tiled_weights(tiled, 1, false)
        })
        .collect::<Option<Vec<Vec<f32>>>>()?;
    let mut taps = vec![0.0f32; pairs * 9];
    for (pair, out) in taps.chunks_exact_mut(9).enumerate() {
        for (slot, (pa, pb)) in out
            .iter_mut()
            .zip(p.iter().flat_map(|pa| p.iter().map(move |pb| (pa, pb))))
        {
            // (P U P^T)[a][b] = sum over r, c of P[a][r] U[r][c] P[b][c]
            let mut sum = 0.0;
            for (row, &ar) in plain.chunks_exact(side).zip(pa.iter()) {
                for (point, &bc) in row.iter().zip(pb.iter()) {
                    sum += ar * f64::from(*point.get(pair)?) * bc;
                }
            }
            *slot = sum as f32;
        }
    }
    Some(taps)
}

// ---------------------------------------------------------------------------------------
// Code generation (`k` is the path of the runtime's `kernels` module)
// ---------------------------------------------------------------------------------------

/// The `Conv2dGeom` literal of a convolution from `x` (of `shape`) to `out_shape`.
#[allow(clippy::too_many_arguments)]
fn geometry(
    k: &TokenStream,
    shape: &[usize],
    out_shape: &[usize],
    kernel: [usize; 2],
    stride: [usize; 2],
    [pad_top, pad_left]: [usize; 2],
    dilation: [usize; 2],
    groups: usize,
) -> TokenStream {
    let dim = |s: &[usize], axis: usize| s.get(axis).copied().unwrap_or(1);
    let [n, cin, h, w] = [dim(shape, 0), dim(shape, 1), dim(shape, 2), dim(shape, 3)];
    let [cout, oh, ow] = [dim(out_shape, 1), dim(out_shape, 2), dim(out_shape, 3)];
    let [kh, kw] = kernel;
    let [sh, sw] = stride;
    let [dh, dw] = dilation;
    quote! {
        &#k::Conv2dGeom {
            n: #n, c_in: #cin, h: #h, w: #w, c_out: #cout, oh: #oh, ow: #ow,
            kh: #kh, kw: #kw, stride_h: #sh, stride_w: #sw, pad_top: #pad_top, pad_left: #pad_left,
            dilation_h: #dh, dilation_w: #dw, groups: #groups,
        }
    }
}

/// The operands of a convolution's kernel call: input, weight, bias (an `Option`
/// expression) and output.
pub struct ConvCall<'a> {
    /// the input
    pub input: &'a Ident,
    /// the weight, in the layout the op names
    pub weight: Option<&'a Ident>,
    /// `Some(bias)` or `None`, as an expression
    pub bias: &'a TokenStream,
    /// the output
    pub out: &'a Ident,
}

/// The kernel call of `conv2d` from `shape` to `out_shape`, the weight in the layout
/// `attrs.weights` names; `rows` is the row epilogue.
pub fn conv2d_call(
    k: &TokenStream,
    attrs: &Conv2d,
    call: &ConvCall<'_>,
    [shape, out_shape]: [&[usize]; 2],
    rows: &TokenStream,
) -> TokenStream {
    let [pt, pl, _, _] = attrs.padding;
    let geom = geometry(
        k,
        shape,
        out_shape,
        attrs.kernel,
        attrs.stride,
        [pt, pl],
        attrs.dilation,
        attrs.groups,
    );
    let kernel = match attrs.weights {
        ConvWeights::RowMajor => quote! { conv2d },
        ConvWeights::Tiled => quote! { conv2d_tiled },
        ConvWeights::Winograd { tile } => {
            let tile = proc_macro2::Literal::usize_unsuffixed(tile);
            quote! { conv2d_winograd::<#tile> }
        }
    };
    let ConvCall {
        input,
        weight,
        bias,
        out,
    } = call;
    quote! { #k::#kernel(#input, #weight, #bias, #out, #geom, #rows); }
}

/// The kernel call of `conv_transpose2d` from `shape` to `out_shape`; `epilogue` is the
/// element epilogue.
pub fn conv_transpose2d_call(
    k: &TokenStream,
    attrs: &ConvTranspose2d,
    call: &ConvCall<'_>,
    [shape, out_shape]: [&[usize]; 2],
    epilogue: &TokenStream,
) -> TokenStream {
    let geom = geometry(
        k,
        shape,
        out_shape,
        attrs.kernel,
        attrs.stride,
        attrs.padding,
        attrs.dilation,
        attrs.groups,
    );
    let ConvCall {
        input,
        weight,
        bias,
        out,
    } = call;
    quote! { #k::conv_transpose2d(#input, #weight, #bias, #out, #geom, #epilogue); }
}

/// The load-time call that tiles a weight (of `shape`) for `conv2d_tiled`.
pub fn tiled_weights_call(
    k: &TokenStream,
    groups: usize,
    [input, out]: [&Ident; 2],
    shape: &[usize],
) -> TokenStream {
    let c_out = shape.first().copied().unwrap_or(1);
    quote! {
        const _: () = ::core::assert!(#k::WEIGHT_TILE_ROWS == #WEIGHT_TILE_ROWS);
        #k::tile_conv2d_weights(#input, #out, #c_out, #groups);
    }
}

/// The load-time call that transforms a 3x3 weight (of `shape`) for `conv2d_winograd`
/// with tiles of `tile` outputs a side.
pub fn winograd_weights_call(
    k: &TokenStream,
    tile: usize,
    [input, out]: [&Ident; 2],
    shape: &[usize],
) -> TokenStream {
    let c_out = shape.first().copied().unwrap_or(1);
    let c_in = shape.get(1).copied().unwrap_or(1);
    let points = winograd_points(tile);
    let tile = proc_macro2::Literal::usize_unsuffixed(tile);
    quote! {
        const _: () = ::core::assert!(#k::WEIGHT_TILE_ROWS == #WEIGHT_TILE_ROWS);
        const _: () = ::core::assert!(#k::winograd_points(#tile) == #points);
        #k::winograd_weights::<#tile>(#input, #out, #c_out, #c_in);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_sizes_match_pytorch() {
        let c = Conv2d {
            kernel: [5, 5],
            stride: [1, 1],
            padding: [0; 4],
            dilation: [1, 1],
            groups: 1,
            weights: crate::ir::ConvWeights::RowMajor,
        };
        assert_eq!(conv2d_shape(&[1, 1, 28, 28], &c, 6), Ok(vec![1, 6, 24, 24]));
        let c = Conv2d {
            kernel: [3, 3],
            stride: [2, 2],
            padding: [1; 4],
            dilation: [1, 1],
            groups: 1,
            weights: crate::ir::ConvWeights::RowMajor,
        };
        assert_eq!(
            conv2d_shape(&[1, 3, 224, 224], &c, 32),
            Ok(vec![1, 32, 112, 112])
        );
        let t = ConvTranspose2d {
            kernel: [2, 2],
            stride: [2, 2],
            padding: [0, 0],
            output_padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        };
        assert_eq!(
            conv_transpose2d_shape(&[1, 64, 32, 32], &t, 32),
            Ok(vec![1, 32, 64, 64])
        );
    }
}

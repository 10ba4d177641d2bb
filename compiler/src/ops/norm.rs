//! The normalizations: `softmax` and `log_softmax` along one axis, `layer_norm` over the
//! last axes, and the per-channel `batch_norm`, `group_norm` and `instance_norm`.
//! Everything the family knows is here: the argument binding (each op's signature with
//! its defaults, and its binder, a row of `DSL_OPS`), the shape inference `check::infer`
//! calls, the cost, the reference interpreter's f64 evaluation and the kernel calls
//! `codegen` emits, and the facts the stages ask (name, mapping type, fusion role, sign:
//! [`SOFTMAX`], ...).
//!
//! ```text
//!   layer_norm(x [2, 4], [4])           each row: (x - mean) / sqrt(var + eps)
//!   [[1, 2, 3, 4],             ->       [[-1.34, -0.45, 0.45, 1.34],
//!    [2, 2, 2, 2]]                       [ 0,     0,    0,    0   ]]
//! ```

use proc_macro2::{Ident, TokenStream};
use quote::quote;

use super::{Bind, DslOp, LowerError};
use crate::check::{channels, err, expect_shape, fmt_shape, leading, ShapeError};
use crate::element::Ex;
use crate::ir::*;
use crate::lower::Val;
use crate::ops::unary::f32_lit;
use crate::ops::{NonnegWhen, OpFacts, Role};
use crate::tables::MappingType::*;

/// The normalizations as the DSL calls them.
pub(super) const DSL_OPS: &[DslOp] = dsl_ops! {
    "softmax" => "x, axis = -1" => softmax, "log_softmax" => "x, axis = -1" => softmax,
    "layer_norm" => "x, normalized_shape = the last axis, *, dims = 1, eps = 1e-5, affine = true"; params "weight [normalized_shape], bias [normalized_shape] (affine)" => |b, _| layer_norm(b),
    "batch_norm" => "x, num_features = channels, *, eps = 1e-5, momentum = 0.1, affine = true, track_running_stats = true"; params "weight [C], bias [C], running_mean [C], running_var [C] (a `num_batches_tracked` in the weights is ignored)" => channel_norm,
    "group_norm" => "x, num_groups, num_channels = channels, *, eps = 1e-5, affine = true"; params "weight [C], bias [C] (affine)" => channel_norm,
    "instance_norm" => "x, num_features = channels, *, eps = 1e-5, momentum = 0.1, affine = false, track_running_stats = false"; params "weight [C], bias [C] (affine)" => channel_norm,
};

/// `softmax`: Many-to-Many, row-wise (an epilogue and a prologue); always nonnegative.
pub const SOFTMAX: OpFacts = OpFacts::new("softmax", ManyToMany, Role::ROWS, NonnegWhen::Always);
/// `log_softmax`: the same, never positive.
pub const LOG_SOFTMAX: OpFacts =
    OpFacts::new("log_softmax", ManyToMany, Role::ROWS, NonnegWhen::Unknown);
/// `layer_norm`: Many-to-Many, row-wise.
pub const LAYER_NORM: OpFacts =
    OpFacts::new("layer_norm", ManyToMany, Role::ROWS, NonnegWhen::Unknown);
/// `batch_norm` at inference: One-to-One (its statistics are parameters), elementwise.
pub const BATCH_NORM: OpFacts = OpFacts::new(
    "batch_norm",
    OneToOne,
    Role::ELEMENTWISE,
    NonnegWhen::Unknown,
);
/// `group_norm`: Many-to-Many, an anchor taking an epilogue.
pub const GROUP_NORM: OpFacts =
    OpFacts::new("group_norm", ManyToMany, Role::KERNEL, NonnegWhen::Unknown);
/// `instance_norm`: the same.
pub const INSTANCE_NORM: OpFacts = OpFacts::new(
    "instance_norm",
    ManyToMany,
    Role::KERNEL,
    NonnegWhen::Unknown,
);

/// Binds `softmax(..)` and `log_softmax(..)`.
fn softmax(b: &mut Bind<'_, '_>, name: &str) -> Result<Val, LowerError> {
    let x = b.tensor("x")?;
    let (axis, s) = b.int("axis")?;
    let shape = b.shape(x.0);
    let axis = b.axis(axis, shape.len(), s)?;
    let op = if name == "softmax" {
        Op::Softmax { axis }
    } else {
        Op::LogSoftmax { axis }
    };
    Ok(b.node(op, vec![x.0], &[x.1])?)
}

/// Binds `layer_norm(..)`.
fn layer_norm(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
    let x = b.tensor("x")?;
    let shape = b.shape(x.0);
    let normalized = b.ints("normalized_shape")?;
    b.keywords_only();
    let dims_arg = b.ints("dims")?;
    let eps = b.float("eps")? as f32;
    let affine = b.boolean("affine")?;
    let (dims, ds) = match (normalized, dims_arg) {
        (Some(_), Some((_, ds))) => {
            return Ok(b.lw.fail(
                ds,
                "layer_norm: give `normalized_shape` (PyTorch's form) or `dims`, not both"
                    .to_string(),
            )?)
        }
        (Some((want, ns)), None) => {
            let tail = shape
                .get(shape.len().saturating_sub(want.len())..)
                .unwrap_or(&[]);
            let matches = want.len() <= shape.len()
                && !want.is_empty()
                && tail
                    .iter()
                    .zip(&want)
                    .all(|(&d, &w)| i64::try_from(d) == Ok(w));
            if !matches {
                return Ok(b.lw.fail(
                    ns,
                    format!(
                        "layer_norm: normalized_shape {want:?} is not the trailing axes of the input {}; write the last axes' sizes (as PyTorch's LayerNorm), or `dims = N` to normalize over the last N axes",
                        fmt_shape(&shape)
                    ),
                )?);
            }
            (want.len(), ns)
        }
        (None, Some((d, ds))) => match d.as_slice() {
            [n] if *n >= 1 => (*n as usize, ds),
            _ => {
                return Ok(b.lw.fail(
                    ds,
                    format!("layer_norm: `dims` must be one integer of at least 1, found {d:?}"),
                )?)
            }
        },
        (None, None) => (b.default("dims", "an integer")?, b.args.func_span),
    };
    if dims > shape.len() {
        return Ok(b.lw.fail(
            ds,
            format!(
                "layer_norm: dims = {dims} but the input {} has only {} axes",
                fmt_shape(&shape),
                shape.len()
            ),
        )?);
    }
    let norm_shape = shape.get(shape.len() - dims..).unwrap_or(&[]).to_vec();
    let mut inputs = vec![x.0];
    if affine {
        let key = b.key();
        inputs.push(b.param(&key, "weight", norm_shape.clone())?);
        inputs.push(b.param(&key, "bias", norm_shape)?);
    }
    Ok(b.node(Op::LayerNorm { dims, eps }, inputs, &[x.1])?)
}

/// Binds `batch_norm(..)`, `group_norm(..)` and `instance_norm(..)`.
fn channel_norm(b: &mut Bind<'_, '_>, name: &str) -> Result<Val, LowerError> {
    let x = b.tensor("x")?;
    let shape = b.shape(x.0);
    if shape.len() < 2 {
        return Ok(b.lw.fail(
            x.1,
            format!(
                "{name}: the input must be [N, C, ...] (at least 2-d), found {}",
                fmt_shape(&shape)
            ),
        )?);
    }
    let c = shape.get(1).copied().unwrap_or(1);
    let groups = if name == "group_norm" {
        let (g, gs) = b.positive("num_groups")?;
        if c % g != 0 {
            return Ok(b.lw.fail(
                gs,
                format!(
                    "group_norm: groups = {g} must divide the {c} channels of {}",
                    fmt_shape(&shape)
                ),
            )?);
        }
        g
    } else {
        c
    };
    // PyTorch's second argument is the channel count (`BatchNorm2d(64)`,
    // `GroupNorm(4, 64)`): checked, never taken as `eps`
    let channels_arg = if name == "group_norm" {
        "num_channels"
    } else {
        "num_features"
    };
    match b.args.take(channels_arg) {
        None | Some((Val::Poison, _)) => {}
        Some((Val::Int(n), _)) if i64::try_from(c) == Ok(n) => {}
        Some((Val::Int(n), s)) => {
            return Ok(b.lw.fail(
                s,
                format!(
                    "{name}: {channels_arg} = {n} but the input {} has {c} channels (axis 1)",
                    fmt_shape(&shape)
                ),
            )?)
        }
        Some((other, s)) => {
            let hint = if matches!(other, Val::Float(_)) {
                "; `eps` is keyword-only: write `eps = ...`"
            } else {
                ""
            };
            let msg = format!(
                "`{name}` argument `{channels_arg}` must be an integer (the channel count), found {}{hint}",
                other.kind()
            );
            return Ok(b.lw.fail(s, msg)?);
        }
    }
    b.keywords_only();
    let eps = b.float("eps")? as f32;
    if name != "group_norm" {
        // the running statistics' update rate: no effect at inference
        b.float("momentum")?;
    }
    let (affine, track_stats) = match name {
        "batch_norm" => (b.boolean("affine")?, b.boolean("track_running_stats")?),
        "group_norm" => (b.boolean("affine")?, false),
        _ => (b.boolean("affine")?, b.boolean("track_running_stats")?),
    };
    let unsupported = match name {
        "batch_norm" if !affine => Some((
            "affine",
            "false",
            "batch_norm without `weight` and `bias`: give affine = true and load ones and zeros",
        )),
        "batch_norm" if !track_stats => Some((
            "track_running_stats",
            "false",
            "batch_norm normalizes with its running statistics at inference",
        )),
        "instance_norm" if track_stats => Some((
            "track_running_stats",
            "true",
            "instance_norm normalizes each instance by its own statistics",
        )),
        _ => None,
    };
    if let Some((arg, value, why)) = unsupported {
        let span = b.args.span_of(arg).unwrap_or(b.args.call_span);
        return Ok(b.lw.fail(
            span,
            format!("{name}: {arg} = {value} is not supported ({why})"),
        )?);
    }
    let key = b.key();
    let mut inputs = vec![x.0];
    if affine {
        inputs.push(b.param(&key, "weight", vec![c])?);
        inputs.push(b.param(&key, "bias", vec![c])?);
    }
    let op = match name {
        "batch_norm" => {
            inputs.push(b.param(&key, "running_mean", vec![c])?);
            inputs.push(b.param(&key, "running_var", vec![c])?);
            Op::BatchNorm { eps }
        }
        "group_norm" => Op::GroupNorm { groups, eps },
        _ => Op::InstanceNorm { eps },
    };
    Ok(b.node(op, inputs, &[x.1])?)
}

// ---------------------------------------------------------------------------------------
// Shape inference (softmax's is its input's, checked with the scans' in `check::infer`)
// ---------------------------------------------------------------------------------------

/// Shape of `layer_norm` over the last `dims` axes of its input, with an optional weight
/// and bias of the normalized shape: its input's.
pub fn layer_norm_shape(
    op: &str,
    inputs: &[&[usize]],
    dims: usize,
) -> Result<Vec<usize>, ShapeError> {
    let x = leading(op, inputs, 1, 3)?;
    let Some(normalized) = x
        .get(x.len().saturating_sub(dims)..)
        .filter(|_| dims <= x.len())
    else {
        return err(
            Some(0),
            format!(
                "layer_norm: {dims} normalized axes for shape {}",
                fmt_shape(x)
            ),
        );
    };
    expect_shape(op, "the weight", inputs, 1, normalized)?;
    expect_shape(op, "the bias", inputs, 2, normalized)?;
    Ok(x.to_vec())
}

/// Shape of `batch_norm` on `[N, C, ...]` with four `[C]` vectors: its input's.
pub fn batch_norm_shape(op: &str, inputs: &[&[usize]]) -> Result<Vec<usize>, ShapeError> {
    let [x, ..] = crate::check::operands::<5>(op, inputs)?;
    let c = channels(op, x)?;
    for (i, what) in [
        (1, "the weight"),
        (2, "the bias"),
        (3, "the running mean"),
        (4, "the running variance"),
    ] {
        expect_shape(op, what, inputs, i, &[c])?;
    }
    Ok(x.to_vec())
}

/// Shape of `group_norm` (`groups` given) or `instance_norm` (one group per channel) on
/// `[N, C, ...]` with an optional `[C]` weight and bias: its input's.
pub fn group_norm_shape(
    op: &str,
    inputs: &[&[usize]],
    groups: Option<usize>,
) -> Result<Vec<usize>, ShapeError> {
    let x = leading(op, inputs, 1, 3)?;
    let c = channels(op, x)?;
    if let Some(groups) = groups {
        if groups == 0 || c % groups != 0 {
            return err(
                None,
                format!("group_norm: {groups} groups do not divide {c} channels"),
            );
        }
    }
    expect_shape(op, "the weight", inputs, 1, &[c])?;
    expect_shape(op, "the bias", inputs, 2, &[c])?;
    Ok(x.to_vec())
}

// ---------------------------------------------------------------------------------------
// Element translation (batch norm inside a fused block)
// ---------------------------------------------------------------------------------------

/// Batch norm of `x` as element arithmetic, from its channel's `[weight, bias, mean, var]`:
/// `(x - mean) * (weight / sqrt(var + eps)) + bias`.
pub fn batch_norm_element(x: Ex, [w, b, mean, var]: [Ex; 4], eps: f32) -> Ex {
    let inv = Ex::Unary(
        UnaryOp::Rsqrt,
        Box::new(Ex::Unary(UnaryOp::AddScalar(eps), Box::new(var))),
    );
    let scale = Ex::Binary(BinaryOp::Mul, Box::new(w), Box::new(inv));
    let centred = Ex::Binary(BinaryOp::Sub, Box::new(x), Box::new(mean));
    Ex::Binary(
        BinaryOp::Add,
        Box::new(Ex::Binary(
            BinaryOp::Mul,
            Box::new(centred),
            Box::new(scale),
        )),
        Box::new(b),
    )
}

// ---------------------------------------------------------------------------------------
// Cost
// ---------------------------------------------------------------------------------------

/// Operations per output element of a softmax: the max, the exponential (about ten), the
/// sum and the division.
pub const SOFTMAX_COST: u64 = 12;
/// Operations per output element of a statistics norm (layer, group, instance): the two
/// sums, the subtraction, the scale and the affine part.
pub const STATISTICS_COST: u64 = 8;
/// Operations per output element of a batch norm: one multiply-add on folded constants.
pub const BATCH_NORM_COST: u64 = 2;

// ---------------------------------------------------------------------------------------
// The reference interpreter's f64 evaluation
// ---------------------------------------------------------------------------------------

/// `[outer, len, inner]`: the elements of `shape` before `axis`, along it and after it.
#[cfg(feature = "interp")]
pub fn around_axis(shape: &[usize], axis: usize) -> [usize; 3] {
    let product = |dims: Option<&[usize]>| dims.unwrap_or(&[]).iter().product::<usize>();
    [
        product(shape.get(..axis)),
        shape.get(axis).copied().unwrap_or(1),
        product(shape.get(axis + 1..)),
    ]
}

/// Softmax (or log-softmax) of row-major `x` along the middle of `[outer, len, inner]`, in
/// f64 with the maximum subtracted first (NaN wins the maximum). `None` when `x` is
/// shorter than that.
#[cfg(feature = "interp")]
pub fn evaluate_softmax(x: &[f32], [outer, len, inner]: [usize; 3], log: bool) -> Option<Vec<f32>> {
    let mut out = vec![0.0f32; x.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * len + k) * inner + i;
            let lane = (0..len)
                .map(|k| x.get(at(k)).map(|&v| f64::from(v)))
                .collect::<Option<Vec<f64>>>()?;
            let m = lane
                .iter()
                .fold(f64::NEG_INFINITY, |m, &v| super::binary::max_nan(m, v));
            let sum: f64 = lane.iter().map(|&v| (v - m).exp()).sum();
            for (k, v) in lane.into_iter().enumerate() {
                let y = if log {
                    v - m - sum.ln()
                } else {
                    (v - m).exp() / sum
                };
                *out.get_mut(at(k))? = y as f32;
            }
        }
    }
    Some(out)
}

/// Mean and biased variance of a run of values, in f64 (two passes).
#[cfg(feature = "interp")]
fn mean_var(values: &[f32]) -> (f64, f64) {
    let count = values.len() as f64;
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / count;
    let var = values
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / count;
    (mean, var)
}

/// Each row of `cols` elements of `x` normalized in f64, then `* weight[j] + bias[j]`
/// (both of length `cols`). `None` when an operand is shorter than that.
#[cfg(feature = "interp")]
pub fn evaluate_layer_norm(
    x: &[f32],
    cols: usize,
    weight: &[f32],
    bias: &[f32],
    eps: f32,
) -> Option<Vec<f32>> {
    let eps = f64::from(eps);
    let mut out = Vec::with_capacity(x.len());
    for values in x.chunks(cols.max(1)) {
        let (mean, var) = mean_var(values);
        let inv_std = 1.0 / (var + eps).sqrt();
        for (j, &v) in values.iter().enumerate() {
            let (w, b) = (f64::from(*weight.get(j)?), f64::from(*bias.get(j)?));
            out.push(((f64::from(v) - mean) * inv_std * w + b) as f32);
        }
    }
    Some(out)
}

/// The per-channel vectors of a batch norm, each of length `C`.
#[cfg(feature = "interp")]
pub struct BatchNormParams<'a> {
    /// the scale
    pub weight: &'a [f32],
    /// the shift
    pub bias: &'a [f32],
    /// the running mean
    pub mean: &'a [f32],
    /// the running variance
    pub var: &'a [f32],
}

/// Inference batch norm of row-major `x` with `channels` channels of `inner` elements
/// each per sample, in f64. `None` when an operand is shorter than that.
#[cfg(feature = "interp")]
pub fn evaluate_batch_norm(
    x: &[f32],
    channels: usize,
    inner: usize,
    p: &BatchNormParams<'_>,
    eps: f32,
) -> Option<Vec<f32>> {
    let eps = f64::from(eps);
    let f = |v: &[f32], ch: usize| v.get(ch).map(|&v| f64::from(v));
    x.iter()
        .enumerate()
        .map(|(i, &xv)| {
            let ch = (i / inner.max(1)) % channels.max(1);
            let norm = (f64::from(xv) - f(p.mean, ch)?) / (f(p.var, ch)? + eps).sqrt();
            Some((norm * f(p.weight, ch)? + f(p.bias, ch)?) as f32)
        })
        .collect()
}

/// Each group of `channels / groups` consecutive channels of each sample normalized in
/// f64 (over those channels and their `inner` positions), then `* weight[c] + bias[c]`.
/// Instance norm is the case `groups == channels`. `None` when an operand is shorter
/// than that.
#[cfg(feature = "interp")]
pub fn evaluate_group_norm(
    x: &[f32],
    [channels, inner]: [usize; 2],
    groups: usize,
    weight: &[f32],
    bias: &[f32],
    eps: f32,
) -> Option<Vec<f32>> {
    let per_group = channels / groups.max(1);
    let block = (per_group * inner).max(1);
    let eps = f64::from(eps);
    let mut out = Vec::with_capacity(x.len());
    for (index, values) in x.chunks(block).enumerate() {
        let g = index % groups.max(1);
        let (mean, var) = mean_var(values);
        let inv_std = 1.0 / (var + eps).sqrt();
        for (j, &v) in values.iter().enumerate() {
            let ch = g * per_group + j / inner.max(1);
            let (w, b) = (f64::from(*weight.get(ch)?), f64::from(*bias.get(ch)?));
            out.push(((f64::from(v) - mean) * inv_std * w + b) as f32);
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------
// Code generation (`k` is the path of the runtime's `kernels` module; the optional
// operands are `Option` expressions)
// ---------------------------------------------------------------------------------------

fn product(dims: Option<&[usize]>) -> usize {
    dims.unwrap_or(&[]).iter().product()
}

/// The kernel call of a softmax (or log-softmax) of `input` (of `shape`) along `axis`.
pub fn softmax_call(
    k: &TokenStream,
    log: bool,
    axis: usize,
    [input, out]: [&Ident; 2],
    shape: &[usize],
    epilogue: &TokenStream,
) -> TokenStream {
    let outer = product(shape.get(..axis));
    let len = shape.get(axis).copied().unwrap_or(1);
    let inner = product(shape.get(axis + 1..));
    if log {
        quote! { #k::log_softmax(#input, #out, #outer, #len, #inner, #epilogue); }
    } else {
        quote! { #k::softmax(#input, #out, #outer, #len, #inner, #epilogue); }
    }
}

/// The kernel call of a layer norm of `input` (of `shape`) over its last `dims` axes.
pub fn layer_norm_call(
    k: &TokenStream,
    (dims, eps): (usize, f32),
    [input, out]: [&Ident; 2],
    [weight, bias]: [&TokenStream; 2],
    shape: &[usize],
    epilogue: &TokenStream,
) -> TokenStream {
    let cols = product(shape.get(shape.len().saturating_sub(dims)..));
    let rows = product(Some(shape)) / cols.max(1);
    let eps = f32_lit(eps);
    quote! { #k::layer_norm(#input, #weight, #bias, #out, #rows, #cols, #eps, #epilogue); }
}

/// The kernel call of a batch norm of `input` (of `shape`, channels on axis 1) with its
/// four per-channel vectors (weight, bias, mean, variance).
pub fn batch_norm_call(
    k: &TokenStream,
    eps: f32,
    [input, out]: [&Ident; 2],
    [weight, bias, mean, var]: [Option<&Ident>; 4],
    shape: &[usize],
) -> TokenStream {
    let n = shape.first().copied().unwrap_or(1);
    let c = shape.get(1).copied().unwrap_or(1);
    let inner = product(shape.get(2..));
    let eps = f32_lit(eps);
    quote! { #k::batch_norm(#input, #weight, #bias, #mean, #var, #out, #n, #c, #inner, #eps); }
}

/// The kernel call of a group norm of `input` (of `shape`) in `groups` groups (an
/// instance norm: one per channel).
pub fn group_norm_call(
    k: &TokenStream,
    (groups, eps): (usize, f32),
    [input, out]: [&Ident; 2],
    [weight, bias]: [&TokenStream; 2],
    shape: &[usize],
    epilogue: &TokenStream,
) -> TokenStream {
    let n = shape.first().copied().unwrap_or(1);
    let c = shape.get(1).copied().unwrap_or(1);
    let inner = product(shape.get(2..));
    let eps = f32_lit(eps);
    quote! { #k::group_norm(#input, #weight, #bias, #out, #n, #c, #inner, #groups, #eps, #epilogue); }
}

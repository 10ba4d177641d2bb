//! The layout ops: reshapes (`reshape`, `flatten`, `squeeze`, `unsqueeze`), `transpose`
//! and `permute`, `concat`, `slice` and `split`, `pad`, `gather` and `embedding`,
//! `expand` and `tile`, `depth_to_space` and `space_to_depth`, `resize`. Everything the
//! family knows is here: the argument binding (each op's signature with its defaults, and
//! its binder, a row of `DSL_OPS`; several DSL ops bind to one IR op), the shape
//! inference `check::infer` calls, the cost, the reference interpreter's evaluation and
//! the kernel calls `codegen` emits for a layout op that runs on its own, and the index
//! translation that replaces it inside a fused block (the input index an output index
//! reads, which `element` builds the block's expression from), and the facts the stages
//! ask (name, mapping type, fusion role, sign: [`TRANSPOSE`], ...).
//!
//! ```text
//!   transpose(x [2, 3], 0, 1)        [[1, 2, 3],      ->   [[1, 4],
//!                                     [4, 5, 6]]            [2, 5],
//!                                                           [3, 6]]
//! ```

use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;

use super::{Bind, DslOp, LowerError};
use crate::check::{self, broadcast, elements, err, expect_axis, fmt_shape, operands, ShapeError};
use crate::element::{broadcast_strides, flat, row_major_strides, unflatten, Ix};
use crate::ir::*;
use crate::lower::{as_f64, Val};
use crate::ops::unary::f32_lit;
use crate::ops::{NonnegWhen, OpFacts, Role};
use crate::tables::MappingType::*;

/// The layout ops as the DSL calls them.
pub(super) const DSL_OPS: &[DslOp] = dsl_ops! {
    "reshape" => "x, shape" => |b, _| reshape(b),
    "flatten" => "x, start = 1, end = -1" => |b, _| flatten(b),
    "squeeze" => "x, axes = all length-1 axes" => |b, _| squeeze(b),
    "unsqueeze" => "x, axis" => |b, _| unsqueeze(b),
    "transpose" => "x, axis0, axis1" => transpose, "permute" => "x, perm" => transpose,
    "concat" => "tensors, axis = 0" => |b, _| concat(b),
    "slice" => "x, axis, start, end = to the end, step = 1" => |b, _| slice(b),
    "split" => "x, sizes = [a, b, ...], axis = 0, *, chunks = n | split_size = n" => |b, _| split(b),
    "pad" => "x, pads, mode = \"constant\", value = 0.0" => |b, _| pad(b),
    "gather" => "x, indices, axis = 0" => |b, _| gather(b),
    "embedding" => "indices, num_embeddings, embedding_dim"; params "weight [num_embeddings, embedding_dim]" => |b, _| embedding(b),
    "expand" => "x, shape" => |b, _| expand(b), "tile" => "x, repeats" => |b, _| tile(b),
    "depth_to_space" => "x, blocksize, mode = \"DCR\"" => depth_space,
    "space_to_depth" => "x, blocksize, mode = \"DCR\"" => depth_space,
    "resize" => "x, size = [h, w] | scale = s, mode = \"nearest\", align_corners = false; or (ONNX) x, sizes = [per axis] and/or scales = [per axis], mode = \"nearest\" | \"linear\" | \"cubic\", coordinate_transformation_mode = \"half_pixel\", nearest_mode = \"round_prefer_floor\", cubic_coeff_a = -0.75, exclude_outside = false, antialias = false, roi = [starts, ends], extrapolation_value = 0.0" => |b, _| resize(b),
};

/// The reshapes (`reshape`, `flatten`, `squeeze`, `unsqueeze`): Reorganize, the same data.
pub fn reshape_facts(kind: ReshapeKind) -> OpFacts {
    let name = match kind {
        ReshapeKind::Reshape => "reshape",
        ReshapeKind::Flatten => "flatten",
        ReshapeKind::Squeeze => "squeeze",
        ReshapeKind::Unsqueeze => "unsqueeze",
    };
    OpFacts::new(name, Reorganize, Role::PLAIN, NonnegWhen::FirstIs)
}
/// `transpose`: a Shuffle.
pub const TRANSPOSE: OpFacts = OpFacts::new("transpose", Shuffle, Role::PLAIN, NonnegWhen::FirstIs);
/// `concat`: One-to-One (each output element is one input element).
pub const CONCAT: OpFacts = OpFacts::new("concat", OneToOne, Role::PLAIN, NonnegWhen::AllAre);
/// `slice`: One-to-One.
pub const SLICE: OpFacts = OpFacts::new("slice", OneToOne, Role::PLAIN, NonnegWhen::FirstIs);
/// `pad`: One-to-Many (reflect and edge padding read an input element more than once);
/// its fill value is not looked into.
pub const PAD: OpFacts = OpFacts::new("pad", OneToMany, Role::PLAIN, NonnegWhen::Unknown);
/// `gather`: One-to-Many (an index may repeat).
pub const GATHER: OpFacts = OpFacts::new("gather", OneToMany, Role::PLAIN, NonnegWhen::FirstIs);
/// `expand`: One-to-Many.
pub const EXPAND: OpFacts = OpFacts::new("expand", OneToMany, Role::PLAIN, NonnegWhen::FirstIs);
/// `resize` on NCHW: One-to-Many; nearest picks input elements, bilinear weights are not
/// looked into.
pub fn resize_facts(mode: &ResizeMode) -> OpFacts {
    let nonneg = match mode {
        ResizeMode::Nearest => NonnegWhen::FirstIs,
        ResizeMode::Bilinear { .. } => NonnegWhen::Unknown,
    };
    OpFacts::new("resize", OneToMany, Role::PLAIN, nonneg)
}
/// ONNX `Resize` on any axes: One-to-Many; its weights are not looked into.
pub const RESAMPLE: OpFacts = OpFacts::new("resize", OneToMany, Role::PLAIN, NonnegWhen::Unknown);

/// Binds `reshape(..)`.
fn reshape(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
    let x = b.tensor("x")?;
    let Some((target, s)) = b.ints("shape")? else {
        return Ok(b.missing("shape")?);
    };
    let shape = match check::reshape(&b.shape(x.0), &target) {
        Ok(shape) => shape,
        Err(e) => return Ok(b.lw.fail(s, e.message)?),
    };
    Ok(b.node_shaped(Op::Reshape(ReshapeKind::Reshape), vec![x.0], &shape, &[x.1])?)
}

/// Binds `flatten(..)`.
fn flatten(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
    let x = b.tensor("x")?;
    let shape = b.shape(x.0);
    let (start, ss) = b.int("start")?;
    let (end, es) = b.int("end")?;
    let rank = shape.len().max(1);
    let start = b.axis(start, rank, ss)?;
    let end = b.axis(end, rank, es)?;
    if start > end {
        return Ok(b.lw.fail(
            ss,
            format!("flatten: start axis {start} is after end axis {end}"),
        )?);
    }
    let mut out: Vec<usize> = shape.get(..start).unwrap_or(&[]).to_vec();
    out.push(shape.get(start..=end).unwrap_or(&[]).iter().product());
    out.extend(shape.get(end + 1..).unwrap_or(&[]));
    Ok(b.node_shaped(Op::Reshape(ReshapeKind::Flatten), vec![x.0], &out, &[x.1])?)
}

/// Binds `squeeze(..)`.
fn squeeze(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
    let x = b.tensor("x")?;
    let shape = b.shape(x.0);
    let axes = match b.ints("axes")? {
        None => (0..shape.len())
            .filter(|&i| shape.get(i) == Some(&1))
            .collect::<Vec<_>>(),
        Some((list, s)) => {
            let mut axes = Vec::new();
            for a in list {
                let a = b.axis(a, shape.len(), s)?;
                if shape.get(a) != Some(&1) {
                    return Ok(b.lw.fail(
                        s,
                        format!(
                            "squeeze: axis {a} of {} has length {}, not 1",
                            fmt_shape(&shape),
                            shape.get(a).copied().unwrap_or(0)
                        ),
                    )?);
                }
                axes.push(a);
            }
            axes
        }
    };
    let out: Vec<usize> = shape
        .iter()
        .enumerate()
        .filter(|(i, _)| !axes.contains(i))
        .map(|(_, &d)| d)
        .collect();
    Ok(b.node_shaped(Op::Reshape(ReshapeKind::Squeeze), vec![x.0], &out, &[x.1])?)
}

/// Binds `unsqueeze(..)`.
fn unsqueeze(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
    let x = b.tensor("x")?;
    let mut shape = b.shape(x.0);
    let (axis, s) = b.int("axis")?;
    let axis = b.axis(axis, shape.len() + 1, s)?;
    shape.insert(axis, 1);
    let op = Op::Reshape(ReshapeKind::Unsqueeze);
    Ok(b.node_shaped(op, vec![x.0], &shape, &[x.1])?)
}

/// Binds `transpose(..)` and `permute(..)`.
fn transpose(b: &mut Bind<'_, '_>, name: &str) -> Result<Val, LowerError> {
    let x = b.tensor("x")?;
    let shape = b.shape(x.0);
    let perm: Vec<usize> = if name == "transpose" {
        let (a0, s0) = b.int("axis0")?;
        let (a1, s1) = b.int("axis1")?;
        let a0 = b.axis(a0, shape.len(), s0)?;
        let a1 = b.axis(a1, shape.len(), s1)?;
        let mut perm: Vec<usize> = (0..shape.len()).collect();
        perm.swap(a0, a1);
        perm
    } else {
        let Some((list, s)) = b.ints("perm")? else {
            return Ok(b.missing("perm")?);
        };
        let mut perm = Vec::new();
        for a in &list {
            perm.push(b.axis(*a, shape.len(), s)?);
        }
        let mut sorted = perm.clone();
        sorted.sort_unstable();
        if sorted != (0..shape.len()).collect::<Vec<_>>() {
            return Ok(b.lw.fail(
                s,
                format!(
                    "permute: {list:?} is not a permutation of the {} axes of {}",
                    shape.len(),
                    fmt_shape(&shape)
                ),
            )?);
        }
        perm
    };
    Ok(b.node(Op::Transpose { perm }, vec![x.0], &[x.1])?)
}

/// Binds `concat(..)`.
fn concat(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
    let xs = b.tensors("tensors")?;
    let (axis, s) = b.int("axis")?;
    let Some(first) = xs.first().copied() else {
        return Ok(b.lw.fail(
            b.args.call_span,
            "concat: needs at least one tensor".to_string(),
        )?);
    };
    let rank = b.shape(first.0).len();
    let axis = b.axis(axis, rank, s)?;
    let (ids, spans): (Vec<ValueId>, Vec<Span>) = xs.into_iter().unzip();
    Ok(b.node(Op::Concat { axis }, ids, &spans)?)
}

/// Binds `slice(..)`.
fn slice(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
    let x = b.tensor("x")?;
    let shape = b.shape(x.0);
    let (axis, axs) = b.int("axis")?;
    let axis = b.axis(axis, shape.len(), axs)?;
    let len = shape.get(axis).copied().unwrap_or(0) as i64;
    let (start, _) = b.int("start")?;
    let end = match b.args.take("end") {
        Some((Val::Int(n), _)) => Some(n),
        Some((other, s)) => return Ok(b.wrong("end", "an integer", &other, s)?),
        None => None,
    };
    let (step, sts) = b.int("step")?;
    if step == 0 {
        return Ok(b.lw.fail(sts, "slice: step must not be 0".to_string())?);
    }
    // Python's rules: negative bounds count from the end, then clamp; the range
    // may be empty (a zero-length axis)
    let resolve = |v: i64| if v < 0 { v.saturating_add(len) } else { v };
    let stride = step.unsigned_abs() as usize;
    let mut source = x.0;
    let (s0, e0) = if step > 0 {
        let s0 = resolve(start).clamp(0, len);
        (s0, resolve(end.unwrap_or(len)).clamp(s0, len))
    } else {
        // a negative step walks down from `start` to above `end`: slice the axis
        // reversed (a reflect pad of len - 1 before it holds x[len-1], ..., x[0])
        let s = resolve(start).clamp(-1, len - 1);
        let e = end.map_or(-1, |e| resolve(e).clamp(-1, len - 1)).min(s);
        if len > 1 {
            let mut pads = vec![(0usize, 0usize); shape.len()];
            if let Some(p) = pads.get_mut(axis) {
                *p = (len as usize - 1, 0);
            }
            let mode = PadMode::Reflect;
            source = b.inner_node(Op::Pad { pads, mode }, vec![x.0], &[], &[x.1])?;
        }
        (len - 1 - s, len - 1 - e)
    };
    let mut starts = vec![0; shape.len()];
    let mut ends = shape.clone();
    let mut steps = vec![1; shape.len()];
    if let (Some(a), Some(e), Some(st)) = (
        starts.get_mut(axis),
        ends.get_mut(axis),
        steps.get_mut(axis),
    ) {
        *a = s0 as usize;
        *e = e0 as usize;
        *st = stride;
    }
    let op = Op::Slice {
        starts,
        ends,
        steps,
    };
    Ok(b.node(op, vec![source], &[x.1])?)
}

/// Binds `split(..)`.
fn split(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
    let x = b.tensor("x")?;
    let shape = b.shape(x.0);
    let parts = b.args.take("sizes");
    let (axis, axs) = b.int("axis")?;
    b.keywords_only();
    let chunks = b.args.take("chunks");
    let split_size = b.args.take("split_size");
    let axis = b.axis(axis, shape.len(), axs)?;
    let len = shape.get(axis).copied().unwrap_or(0);
    let parts = match (parts, chunks, split_size) {
        (Some((Val::Int(n), s)), None, None) => {
            return Ok(b.lw.fail(
                s,
                format!("split: a single integer is ambiguous (PyTorch's torch.split takes it as the size of each part, ONNX as the number of parts): write `chunks = {n}` for {n} equal parts, `split_size = {n}` for parts of {n}, or a list of sizes"),
            )?)
        }
        (Some(p), None, None) => Some(p),
        (None, Some((Val::Int(n), s)), None) => Some((Val::Int(n), s)),
        (None, None, Some((Val::Int(n), s))) => {
            if n < 1 {
                return Ok(b.lw.fail(s, format!("split: split_size must be at least 1, found {n}"))?);
            }
            // torch.split: parts of `n`, the last one smaller when `n` does not divide
            let n = n as usize;
            let mut sizes = vec![(Val::Int(n as i64), s); len / n];
            if len % n != 0 || len == 0 {
                sizes.push((Val::Int((len % n) as i64), s));
            }
            Some((Val::List(sizes), s))
        }
        (None, Some((other, s)), None) => {
            return Ok(b.wrong("chunks", "an integer", &other, s)?)
        }
        (None, None, Some((other, s))) => {
            return Ok(b.wrong("split_size", "an integer", &other, s)?)
        }
        (None, None, None) => None,
        (_, _, Some((_, s))) | (_, Some((_, s)), _) => {
            return Ok(b.lw.fail(
                s,
                "split: give one of a list of sizes, `chunks = n` or `split_size = n`"
                    .to_string(),
            )?)
        }
    };
    let sizes: Vec<usize> = match parts {
        None => return Ok(b.missing("sizes")?),
        Some((Val::Int(n), s)) => {
            if n < 1 || len % n as usize != 0 {
                return Ok(b.lw.fail(
                    s,
                    format!(
                        "split: axis {axis} of length {len} does not split into {n} equal parts"
                    ),
                )?);
            }
            vec![len / n as usize; n as usize]
        }
        Some((Val::List(items), s)) => {
            let sizes: Vec<i64> = items
                .iter()
                .map(|(v, _)| if let Val::Int(n) = v { *n } else { -1 })
                .collect();
            if sizes.iter().any(|&v| v < 0)
                || sizes.iter().map(|&v| i128::from(v)).sum::<i128>() != len as i128
            {
                return Ok(b.lw.fail(s, format!("split: sizes {sizes:?} must be non-negative integers adding up to {len} (axis {axis} of {})", fmt_shape(&shape)))?);
            }
            sizes.iter().map(|&v| v as usize).collect()
        }
        Some((other, s)) => return Ok(b.wrong("sizes", "a list of sizes", &other, s)?),
    };
    let mut ids = Vec::new();
    let mut offset = 0;
    for size in sizes {
        let mut starts = vec![0; shape.len()];
        let mut ends = shape.clone();
        if let (Some(a), Some(e)) = (starts.get_mut(axis), ends.get_mut(axis)) {
            *a = offset;
            *e = offset + size;
        }
        offset += size;
        let steps = vec![1; shape.len()];
        let op = Op::Slice {
            starts,
            ends,
            steps,
        };
        ids.push(b.inner_node(op, vec![x.0], &[], &[x.1])?);
    }
    Ok(Val::Tuple(ids))
}

/// Binds `pad(..)`.
fn pad(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
    let x = b.tensor("x")?;
    let shape = b.shape(x.0);
    let Some((list, s)) = b.ints("pads")? else {
        return Ok(b.missing("pads")?);
    };
    if list.len() % 2 != 0 || list.len() / 2 > shape.len() || list.iter().any(|&p| p < 0) {
        return Ok(b.lw.fail(
            s,
            format!("pad: pads are non-negative (before, after) pairs starting from the last axis, at most {} pairs for {}, found {list:?}", shape.len(), fmt_shape(&shape)),
        )?);
    }
    let (mode, ms) = b.string("mode", &["constant", "reflect", "replicate"])?;
    let value = b.float("value")? as f32;
    let mut pads = vec![(0usize, 0usize); shape.len()];
    for (k, pair) in list.chunks(2).enumerate() {
        let axis = shape.len() - 1 - k;
        if let (Some(slot), [a, c]) = (pads.get_mut(axis), pair) {
            *slot = (*a as usize, *c as usize);
        }
    }
    let mode = match mode.as_str() {
        "reflect" => {
            if pads
                .iter()
                .zip(&shape)
                .any(|((a, c), &d)| *a >= d || *c >= d)
            {
                return Ok(b.lw.fail(
                    ms,
                    format!(
                        "pad: reflect padding must be smaller than the axis it pads ({})",
                        fmt_shape(&shape)
                    ),
                )?);
            }
            PadMode::Reflect
        }
        "replicate" => PadMode::Edge,
        _ => PadMode::Constant(value),
    };
    Ok(b.node(Op::Pad { pads, mode }, vec![x.0], &[x.1])?)
}

/// Binds `gather(..)`.
fn gather(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
    let x = b.tensor("x")?;
    let idx = b.tensor("indices")?;
    let (axis, s) = b.int("axis")?;
    let shape = b.shape(x.0);
    let axis = b.axis(axis, shape.len(), s)?;
    Ok(b.node(Op::Gather { axis }, vec![x.0, idx.0], &[x.1, idx.1])?)
}

/// Binds `embedding(..)`.
fn embedding(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
    let idx = b.tensor("indices")?;
    let (num, _) = b.positive("num_embeddings")?;
    let (dim, _) = b.positive("embedding_dim")?;
    let key = b.key();
    let w = b.param(&key, "weight", vec![num, dim])?;
    Ok(b.node(Op::Gather { axis: 0 }, vec![w, idx.0], &[idx.1, idx.1])?)
}

/// Binds `expand(..)`.
fn expand(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
    let x = b.tensor("x")?;
    let Some((target, s)) = b.ints("shape")? else {
        return Ok(b.missing("shape")?);
    };
    let shape = b.shape(x.0);
    if target.len() < shape.len() {
        return Ok(b.lw.fail(
            s,
            format!(
                "expand: the target has fewer axes than {}",
                fmt_shape(&shape)
            ),
        )?);
    }
    let offset = target.len() - shape.len();
    let mut out = Vec::new();
    for (i, &t) in target.iter().enumerate() {
        let own = if i >= offset {
            shape.get(i - offset).copied()
        } else {
            None
        };
        let d = match (t, own) {
            (-1, Some(d)) => d,
            (t, _) if t < 1 => return Ok(b.lw.fail(s, format!("expand: dimension {t} is invalid (use -1 to keep an axis)"))?),
            (t, Some(d)) if d != 1 && d as i64 != t => {
                return Ok(b.lw.fail(s, format!("expand: axis {i} has length {d}, which cannot expand to {t} (only length-1 axes expand)"))?)
            }
            (t, _) => t as usize,
        };
        out.push(d);
    }
    Ok(b.node_shaped(Op::Expand, vec![x.0], &out, &[x.1])?)
}

/// Binds `tile(..)`.
fn tile(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
    let x = b.tensor("x")?;
    let shape = b.shape(x.0);
    let Some((repeats, s)) = b.ints("repeats")? else {
        return Ok(b.missing("repeats")?);
    };
    if repeats.len() != shape.len() || repeats.iter().any(|&r| r < 1) {
        return Ok(b.lw.fail(
            s,
            format!(
                "tile: repeats {repeats:?} must be {} positive integers, one per axis of {}",
                shape.len(),
                fmt_shape(&shape)
            ),
        )?);
    }
    // x [.., d, ..] -> reshape [.., 1, d, ..] -> expand [.., r, d, ..] -> reshape [.., r * d, ..]
    let mut lifted = Vec::new();
    let mut expanded = Vec::new();
    let mut out = Vec::new();
    for (&d, &r) in shape.iter().zip(&repeats) {
        let r = r as usize;
        if r > 1 {
            lifted.push(1);
            expanded.push(r);
        }
        lifted.push(d);
        expanded.push(d);
        out.push(d * r);
    }
    if lifted.len() > crate::MAX_RANK {
        return Ok(b.lw.fail(
            s,
            format!(
                "tile: repeating {} axes of {} needs rank {}, above the supported maximum of {}",
                lifted.len() - shape.len(),
                fmt_shape(&shape),
                lifted.len(),
                crate::MAX_RANK
            ),
        )?);
    }
    let reshape = Op::Reshape(ReshapeKind::Reshape);
    let r = b.inner_node(reshape.clone(), vec![x.0], &lifted, &[x.1])?;
    let e = b.inner_node(Op::Expand, vec![r], &expanded, &[x.1])?;
    Ok(b.node_shaped(reshape, vec![e], &out, &[x.1])?)
}

/// Binds `depth_to_space(..)` and `space_to_depth(..)`.
fn depth_space(b: &mut Bind<'_, '_>, name: &str) -> Result<Val, LowerError> {
    let x = b.tensor("x")?;
    let shape = b.shape(x.0);
    let (bs, bss) = b.positive("blocksize")?;
    let (mode, _) = b.string("mode", &["DCR", "CRD"])?;
    let [n, c, h, w] = match shape.as_slice() {
        [n, c, h, w] => [*n, *c, *h, *w],
        _ => {
            return Ok(b.lw.fail(
                x.1,
                format!(
                    "{name}: the input must be [N, C, H, W], found {}",
                    fmt_shape(&shape)
                ),
            )?)
        }
    };
    // both are a reshape to 6-d, a permutation and a reshape back (ONNX's definition)
    let (six, perm, out) = if name == "depth_to_space" {
        if c % (bs * bs) != 0 {
            return Ok(b.lw.fail(
                bss,
                format!(
                    "depth_to_space: blocksize {bs} squared must divide the {c} channels of {}",
                    fmt_shape(&shape)
                ),
            )?);
        }
        let cc = c / (bs * bs);
        if mode == "DCR" {
            (
                vec![n, bs, bs, cc, h, w],
                vec![0, 3, 4, 1, 5, 2],
                vec![n, cc, h * bs, w * bs],
            )
        } else {
            (
                vec![n, cc, bs, bs, h, w],
                vec![0, 1, 4, 2, 5, 3],
                vec![n, cc, h * bs, w * bs],
            )
        }
    } else {
        if h % bs != 0 || w % bs != 0 {
            return Ok(b.lw.fail(
                bss,
                format!(
                    "space_to_depth: blocksize {bs} must divide the height and width of {}",
                    fmt_shape(&shape)
                ),
            )?);
        }
        let six = vec![n, c, h / bs, bs, w / bs, bs];
        let perm = if mode == "DCR" {
            vec![0, 3, 5, 1, 2, 4]
        } else {
            vec![0, 1, 3, 5, 2, 4]
        };
        (six, perm, vec![n, c * bs * bs, h / bs, w / bs])
    };
    let reshape = Op::Reshape(ReshapeKind::Reshape);
    let r = b.inner_node(reshape.clone(), vec![x.0], &six, &[x.1])?;
    let t = b.inner_node(Op::Transpose { perm }, vec![r], &[], &[x.1])?;
    Ok(b.node_shaped(reshape, vec![t], &out, &[x.1])?)
}

/// Binds `resize(..)`.
fn resize(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
    let x = b.tensor("x")?;
    if b.args
        .named
        .iter()
        .any(|(n, ..)| n == "sizes" || n == "scales")
    {
        return resize_nd(b, x);
    }
    let shape = b.shape(x.0);
    if shape.len() != 4 {
        return Ok(b.lw.fail(
            x.1,
            format!(
                "resize: the input must be [N, C, H, W], found {}",
                fmt_shape(&shape)
            ),
        )?);
    }
    let size = b.ints("size")?;
    let scale = match b.args.take("scale") {
        Some((v @ (Val::Int(_) | Val::Float(_)), s)) => Some((as_f64(&v), s)),
        Some((other, s)) => return Ok(b.wrong("scale", "a number", &other, s)?),
        None => None,
    };
    let (mode, _) = b.string("mode", &["nearest", "bilinear"])?;
    let align_corners = b.boolean("align_corners")?;
    let (h, w) = (
        shape.get(2).copied().unwrap_or(1),
        shape.get(3).copied().unwrap_or(1),
    );
    let (oh, ow) = match (size, scale) {
        (Some((list, s)), None) => match list.as_slice() {
            [a, c] if *a >= 1 && *c >= 1 => (*a as usize, *c as usize),
            _ => return Ok(b.lw.fail(s, "resize: `size` is [height, width], both at least 1".to_string())?),
        },
        (None, Some((f, s))) => {
            let (oh, ow) = ((h as f64 * f).floor(), (w as f64 * f).floor());
            if oh < 1.0 || ow < 1.0 || !f.is_finite() {
                return Ok(b.lw.fail(s, format!("resize: scale {f} gives an empty output"))?);
            }
            (oh as usize, ow as usize)
        }
        (Some(_), Some((_, s))) => return Ok(b.lw.fail(s, "resize: `size` and `scale` are both given; give exactly one of `size = [h, w]` or `scale = s`".to_string())?),
        (None, None) => return Ok(b.lw.fail(b.args.func_span, "resize: give exactly one of `size = [h, w]` or `scale = s`".to_string())?),
    };
    let mode = if mode == "bilinear" {
        ResizeMode::Bilinear { align_corners }
    } else {
        ResizeMode::Nearest
    };
    let out = vec![
        shape.first().copied().unwrap_or(1),
        shape.get(1).copied().unwrap_or(1),
        oh,
        ow,
    ];
    Ok(b.node_shaped(Op::Resize(mode), vec![x.0], &out, &[x.1])?)
}

/// The ONNX form of `resize`: per-axis `sizes` and/or `scales` and ONNX's options.
fn resize_nd(b: &mut Bind<'_, '_>, x: (ValueId, Span)) -> Result<Val, LowerError> {
    let shape = b.shape(x.0);
    let rank = shape.len();
    let sizes = b.ints("sizes")?;
    let scales = b.floats("scales")?;
    let (mode, _) = b.string("mode", &["nearest", "linear", "cubic"])?;
    let coords = CoordMode::NAMED.map(|(name, _)| name);
    let (coord, _) = b.string("coordinate_transformation_mode", &coords)?;
    let (nearest, _) = b.string(
        "nearest_mode",
        &["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"],
    )?;
    let a = b.float("cubic_coeff_a")? as f32;
    let exclude_outside = b.boolean("exclude_outside")?;
    let antialias = b.boolean("antialias")?;
    let roi = b.floats("roi")?;
    let extrapolation = b.float("extrapolation_value")? as f32;
    let call = b.args.call_span;
    let roi: Vec<(f64, f64)> = match roi {
        None => vec![(0.0, 1.0); rank],
        Some((r, _)) if r.len() == 2 * rank => (0..rank)
            .map(|i| {
                (
                    r.get(i).copied().unwrap_or(0.0),
                    r.get(i + rank).copied().unwrap_or(1.0),
                )
            })
            .collect(),
        Some((r, s)) => {
            return Ok(b.lw.fail(
                s,
                format!(
                    "resize: roi holds {} starts then {} ends, found {} values",
                    rank,
                    rank,
                    r.len()
                ),
            )?)
        }
    };
    let tf_crop = coord == "tf_crop_and_resize";
    let (out, scales): (Vec<usize>, Vec<f64>) = match (sizes, scales) {
        (Some((sz, s)), sc) => {
            if sz.len() != rank || sz.iter().any(|&d| d < 0) {
                return Ok(b.lw.fail(
                    s,
                    format!(
                        "resize: sizes must be {rank} non-negative lengths, one per axis of {}",
                        fmt_shape(&shape)
                    ),
                )?);
            }
            let out: Vec<usize> = sz.iter().map(|&d| d as usize).collect();
            let scales = match sc {
                Some((v, vs)) if v.len() != rank => {
                    return Ok(b.lw.fail(
                        vs,
                        format!("resize: scales must hold {rank} values, one per axis"),
                    )?)
                }
                Some((v, _)) => v,
                None => out
                    .iter()
                    .zip(&shape)
                    .map(|(&o, &i)| o as f64 / i.max(1) as f64)
                    .collect(),
            };
            (out, scales)
        }
        (None, Some((v, vs))) => {
            if v.len() != rank {
                return Ok(b.lw.fail(
                    vs,
                    format!(
                        "resize: scales must hold {rank} values, one per axis of {}",
                        fmt_shape(&shape)
                    ),
                )?);
            }
            let out = shape
                .iter()
                .zip(&v)
                .zip(&roi)
                .map(|((&d, &s), &(r0, r1))| {
                    (d as f64 * s * if tf_crop { r1 - r0 } else { 1.0 })
                        .floor()
                        .max(0.0) as usize
                })
                .collect();
            (out, v)
        }
        (None, None) => {
            return Ok(b
                .lw
                .fail(call, "resize: give `sizes` or `scales`".to_string())?)
        }
    };
    if scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Ok(b
            .lw
            .fail(call, format!("resize: scales {scales:?} must be positive"))?);
    }
    if shape.iter().zip(&out).any(|(&i, &o)| i == 0 && o > 0) {
        return Ok(b.lw.fail(
            call,
            format!(
                "resize: cannot resize an empty axis of {} to a non-empty one",
                fmt_shape(&shape)
            ),
        )?);
    }
    let interpolation = match mode.as_str() {
        "linear" => Interpolation::Linear,
        "cubic" => Interpolation::Cubic { a },
        _ => {
            if antialias {
                return Ok(b.lw.fail(
                    call,
                    "resize: antialias applies to linear and cubic modes".to_string(),
                )?);
            }
            Interpolation::Nearest(match nearest.as_str() {
                "round_prefer_ceil" => NearestMode::RoundPreferCeil,
                "floor" => NearestMode::Floor,
                "ceil" => NearestMode::Ceil,
                _ => NearestMode::RoundPreferFloor,
            })
        }
    };
    // `string` allowed only these names
    let coord = CoordMode::named(&coord).unwrap_or(CoordMode::HalfPixel);
    let spec = Resample {
        interpolation,
        coord,
        exclude_outside,
        antialias,
        extrapolation,
        scales,
        roi,
    };
    Ok(b.node_shaped(Op::Resample(Box::new(spec)), vec![x.0], &out, &[x.1])?)
}

// ---------------------------------------------------------------------------------------
// Shape inference
// ---------------------------------------------------------------------------------------

/// Shape of `reshape` (and its flatten, squeeze and unsqueeze forms): the shape it names
/// (`given`), when it holds as many elements as its operand.
pub fn reshape_shape(
    name: &str,
    inputs: &[&[usize]],
    given: &[usize],
) -> Result<Vec<usize>, ShapeError> {
    let [x] = operands(name, inputs)?;
    if elements(x) != elements(given) {
        return err(
            Some(0),
            format!(
                "{name}: {} and {} hold different numbers of elements",
                fmt_shape(x),
                fmt_shape(given)
            ),
        );
    }
    Ok(given.to_vec())
}

/// Shape of `transpose`: output axis `i` is input axis `perm[i]`.
pub fn transpose_shape(
    name: &str,
    inputs: &[&[usize]],
    perm: &[usize],
) -> Result<Vec<usize>, ShapeError> {
    let [x] = operands(name, inputs)?;
    let mut seen = vec![false; x.len()];
    let out: Option<Vec<usize>> = perm
        .iter()
        .map(|&p| {
            let slot = seen.get_mut(p)?;
            (!std::mem::replace(slot, true)).then_some(())?;
            x.get(p).copied()
        })
        .collect();
    match out {
        Some(out) if perm.len() == x.len() => Ok(out),
        _ => err(
            None,
            format!(
                "transpose: {perm:?} is not a permutation of the axes of {}",
                fmt_shape(x)
            ),
        ),
    }
}

/// Shape of `concat`: the operands' lengths along `axis` summed, every other axis equal.
pub fn concat_shape(
    name: &str,
    inputs: &[&[usize]],
    axis: usize,
) -> Result<Vec<usize>, ShapeError> {
    let Some(first) = inputs.first() else {
        return err(None, "concat: takes at least one operand".to_string());
    };
    expect_axis(name, first, axis)?;
    let mut out = first.to_vec();
    for (i, s) in inputs.iter().enumerate().skip(1) {
        let fits = s.len() == first.len()
            && s.iter()
                .zip(first.iter())
                .enumerate()
                .all(|(a, (d, f))| a == axis || d == f);
        if !fits {
            return err(
                Some(i),
                format!(
                    "concat: along axis {axis}, every tensor must match {} on the other axes, found {}",
                    fmt_shape(first),
                    fmt_shape(s)
                ),
            );
        }
        if let (Some(slot), Some(d)) = (out.get_mut(axis), s.get(axis)) {
            *slot += d;
        }
    }
    Ok(out)
}

/// Shape of `slice`: per axis, the indices `start, start + step, ...` below `end`, both
/// clamped to the axis.
pub fn slice_shape(
    name: &str,
    inputs: &[&[usize]],
    [starts, ends, steps]: [&[usize]; 3],
) -> Result<Vec<usize>, ShapeError> {
    let [x] = operands(name, inputs)?;
    let rank = x.len();
    if starts.len() != rank || ends.len() != rank || steps.len() != rank || steps.contains(&0) {
        return err(
            None,
            format!(
                "slice: {} needs one start, end and positive step per axis, found {starts:?} {ends:?} {steps:?}",
                fmt_shape(x)
            ),
        );
    }
    Ok(x.iter()
        .zip(starts.iter().zip(ends).zip(steps))
        .map(|(&len, ((&start, &end), &step))| {
            let start = start.min(len);
            (end.min(len).max(start) - start).div_ceil(step)
        })
        .collect())
}

/// Shape of `pad`: `(before, after)` added per axis.
pub fn pad_shape(
    name: &str,
    inputs: &[&[usize]],
    pads: &[(usize, usize)],
) -> Result<Vec<usize>, ShapeError> {
    let [x] = operands(name, inputs)?;
    if pads.len() != x.len() {
        return err(
            None,
            format!("pad: {} pads for shape {}", pads.len(), fmt_shape(x)),
        );
    }
    Ok(x.iter()
        .zip(pads)
        .map(|(&d, &(before, after))| d.saturating_add(before).saturating_add(after))
        .collect())
}

/// Shape of `gather`: `x.shape[..axis] ++ indices.shape ++ x.shape[axis + 1..]`.
pub fn gather_shape(
    name: &str,
    inputs: &[&[usize]],
    axis: usize,
) -> Result<Vec<usize>, ShapeError> {
    let [x, indices] = operands(name, inputs)?;
    expect_axis(name, x, axis)?;
    let mut out = x.get(..axis).unwrap_or_default().to_vec();
    out.extend_from_slice(indices);
    out.extend_from_slice(x.get(axis + 1..).unwrap_or_default());
    Ok(out)
}

/// Shape of `expand`: the shape it names (`given`), when its operand broadcasts to it.
pub fn expand_shape(
    name: &str,
    inputs: &[&[usize]],
    given: &[usize],
) -> Result<Vec<usize>, ShapeError> {
    let [x] = operands(name, inputs)?;
    if broadcast(name, x, given).ok().as_deref() != Some(given) {
        return err(
            Some(0),
            format!(
                "expand: {} does not broadcast to {}",
                fmt_shape(x),
                fmt_shape(given)
            ),
        );
    }
    Ok(given.to_vec())
}

/// A resize's result: the shape it names (`given`), of its operand's rank, on operands
/// `axes_ok` accepts.
pub fn resized_shape(
    name: &str,
    inputs: &[&[usize]],
    given: &[usize],
    axes_ok: impl Fn(&[usize]) -> bool,
) -> Result<Vec<usize>, ShapeError> {
    let [x] = operands(name, inputs)?;
    if x.len() != given.len() || !axes_ok(x) {
        return err(
            Some(0),
            format!(
                "resize: input {} and output {} disagree in rank",
                fmt_shape(x),
                fmt_shape(given)
            ),
        );
    }
    Ok(given.to_vec())
}

// ---------------------------------------------------------------------------------------
// Index translation: inside a fused block a layout op is no copy but the index of its input
// that an output index reads (`element` builds the block's expression from these)
// ---------------------------------------------------------------------------------------

/// The input index of a reshape: shared leading and trailing axes map directly, the rest
/// goes through the flat offset.
pub fn reshape_index(idx: &[Ix], out_shape: &[usize], in_shape: &[usize]) -> Vec<Ix> {
    // drop unit axes on both sides and compare what is left
    let out_non_unit: Vec<(usize, usize)> = out_shape
        .iter()
        .copied()
        .enumerate()
        .filter(|&(_, d)| d != 1)
        .collect();
    let in_non_unit: Vec<(usize, usize)> = in_shape
        .iter()
        .copied()
        .enumerate()
        .filter(|&(_, d)| d != 1)
        .collect();
    if out_non_unit
        .iter()
        .map(|p| p.1)
        .eq(in_non_unit.iter().map(|p| p.1))
    {
        let mut in_idx = vec![Ix::Const(0); in_shape.len()];
        for ((oi, _), (ii, _)) in out_non_unit.iter().zip(&in_non_unit) {
            if let (Some(slot), Some(i)) = (in_idx.get_mut(*ii), idx.get(*oi)) {
                *slot = i.clone();
            }
        }
        return in_idx;
    }
    unflatten(&flat(idx, out_shape), in_shape)
}

/// The input index of a transpose by `perm` (output axis `i` is input axis `perm[i]`).
pub fn transpose_index(idx: &[Ix], perm: &[usize]) -> Option<Vec<Ix>> {
    let mut in_idx = vec![Ix::Const(0); perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        *in_idx.get_mut(p)? = idx.get(i)?.clone();
    }
    Some(in_idx)
}

/// The input index of a slice: `start + i * step` on every axis.
pub fn slice_index(idx: &[Ix], starts: &[usize], steps: &[usize]) -> Vec<Ix> {
    idx.iter()
        .zip(starts.iter().zip(steps))
        .map(|(i, (&s, &st))| Ix::add(Ix::mul(i.clone(), st), Ix::Const(s)))
        .collect()
}

/// Where each operand of a concat along `axis` starts on that axis, and its length there.
pub fn concat_parts(shapes: &[Vec<usize>], axis: usize) -> Vec<(usize, usize)> {
    let mut at = 0;
    shapes
        .iter()
        .map(|shape| {
            let len = shape.get(axis).copied().unwrap_or(0);
            at += len;
            (at - len, len)
        })
        .collect()
}

/// The index in the concat operand starting at `start` on `axis` (valid where the output
/// index lies inside that operand: the caller tests the range).
pub fn concat_index(idx: &[Ix], axis: usize, start: usize) -> Option<Vec<Ix>> {
    let mut in_idx = idx.to_vec();
    let at = in_idx.get_mut(axis)?;
    *at = Ix::sub(at.clone(), start);
    Some(in_idx)
}

/// `(index, lo, hi)`: the read is inside the input when `lo <= index < hi`.
pub type RangeTest = (Ix, usize, usize);

/// The input index of a pad, and for constant padding the range tests `(index, lo, hi)`
/// that keep the read inside the input (outside them the value is the constant).
pub fn pad_index(
    idx: &[Ix],
    pads: &[(usize, usize)],
    mode: PadMode,
    in_shape: &[usize],
) -> Option<(Vec<Ix>, Vec<RangeTest>)> {
    let mut in_idx = Vec::new();
    let mut tests = Vec::new();
    for (k, (&(before, after), &d)) in pads.iter().zip(in_shape).enumerate() {
        let i = idx.get(k)?.clone();
        if before == 0 && after == 0 {
            in_idx.push(i);
            continue;
        }
        match mode {
            PadMode::Constant(_) => {
                tests.push((i.clone(), before, before + d));
                in_idx.push(Ix::sub(i, before));
            }
            PadMode::Reflect => in_idx.push(Ix::Reflect {
                index: Box::new(i),
                before,
                len: d,
            }),
            PadMode::Edge => in_idx.push(Ix::Clamp {
                index: Box::new(i),
                before,
                len: d,
            }),
        }
    }
    Some((in_idx, tests))
}

/// The input index of a nearest-neighbour resize: `i * in / out` on every resized axis.
pub fn resize_nearest_index(idx: &[Ix], in_shape: &[usize], out_shape: &[usize]) -> Vec<Ix> {
    idx.iter()
        .enumerate()
        .map(|(k, i)| {
            let (a, b) = (
                in_shape.get(k).copied().unwrap_or(1),
                out_shape.get(k).copied().unwrap_or(1),
            );
            if a == b {
                i.clone()
            } else {
                Ix::div(Ix::mul(i.clone(), a), b)
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Cost
// ---------------------------------------------------------------------------------------

/// Operations per output element of a bilinear resize and of an ONNX resize (4, the
/// bilinear case: one multiply-add per tap combination); every other layout op moves
/// data without arithmetic (cost 0).
pub const INTERPOLATION_COST: u64 = 4;

// ---------------------------------------------------------------------------------------
// The reference interpreter's evaluation
// ---------------------------------------------------------------------------------------

/// The layout ops on the interpreter's arrays (in f64 where they interpolate).
#[cfg(feature = "interp")]
pub mod evaluate {
    use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn, Slice};

    use crate::interp::{
        at, dim, dims_before, dims_from, fail, for_each_index, from_vec, inside, product,
        row_major, run, InterpError, Result,
    };
    use crate::ir::*;

    /// Same elements in row-major order, new shape.
    pub fn reshape(x: &ArrayD<f32>, out_shape: &[usize]) -> Result<ArrayD<f32>> {
        if product(out_shape) != x.len() {
            return fail(format!(
                "cannot reshape {:?} ({} elements) to {out_shape:?}",
                x.shape(),
                x.len()
            ));
        }
        from_vec(out_shape, row_major(x))
    }

    /// Output axis `i` is input axis `perm[i]`.
    pub fn transpose(x: &ArrayD<f32>, perm: &[usize]) -> Result<ArrayD<f32>> {
        let mut seen = vec![false; x.ndim()];
        let valid = perm.len() == x.ndim()
            && perm
                .iter()
                .all(|&p| seen.get_mut(p).is_some_and(|s| !std::mem::replace(s, true)));
        if !valid {
            return fail(format!(
                "{perm:?} is not a permutation of the axes of {:?}",
                x.shape()
            ));
        }
        Ok(x.view().permuted_axes(IxDyn(perm)).to_owned())
    }

    /// All operands joined along `axis`.
    pub fn concat(xs: &[&ArrayD<f32>], axis: usize) -> Result<ArrayD<f32>> {
        let Some(first) = xs.first() else {
            return fail("concat needs at least one operand");
        };
        if axis >= first.ndim() || xs.iter().any(|a| a.ndim() != first.ndim()) {
            return fail(format!(
                "cannot join shapes {:?} along axis {axis}",
                xs.iter().map(|a| a.shape()).collect::<Vec<_>>()
            ));
        }
        let views: Vec<ArrayViewD<f32>> = xs.iter().map(|a| a.view()).collect();
        ndarray::concatenate(Axis(axis), &views).map_err(|e| {
            InterpError::new(format!(
                "cannot join shapes {:?} along axis {axis}: {e}",
                xs.iter().map(|a| a.shape()).collect::<Vec<_>>()
            ))
        })
    }

    /// Per axis, indices `start, start + step, ...` below `end` (both clamped to the axis).
    pub fn slice(
        x: &ArrayD<f32>,
        starts: &[usize],
        ends: &[usize],
        steps: &[usize],
    ) -> Result<ArrayD<f32>> {
        let rank = x.ndim();
        if starts.len() != rank || ends.len() != rank || steps.len() != rank || steps.contains(&0) {
            return fail(format!(
                "slice of {:?} needs one start, end and positive step per axis, \
                 got {starts:?} {ends:?} {steps:?}",
                x.shape()
            ));
        }
        let to_isize = |v: usize| {
            isize::try_from(v).map_err(|_| InterpError::new(format!("slice bound {v} too large")))
        };
        let mut view = x.view();
        for (axis, ((&start, &end), &step)) in starts.iter().zip(ends).zip(steps).enumerate() {
            let len = view.len_of(Axis(axis));
            let start = start.min(len);
            let end = end.min(len).max(start);
            view.slice_axis_inplace(
                Axis(axis),
                Slice::new(to_isize(start)?, Some(to_isize(end)?), to_isize(step)?),
            );
        }
        Ok(view.to_owned())
    }

    /// Input coordinate of output coordinate `j - before` along an axis of length `len`,
    /// `None` for a constant fill.
    fn pad_source(pos: i64, len: usize, mode: PadMode) -> Result<Option<usize>> {
        if let Some(i) = inside(pos, len) {
            return Ok(Some(i));
        }
        let last = len as i64 - 1;
        match mode {
            PadMode::Constant(_) => Ok(None),
            _ if len == 0 => fail("cannot reflect or extend an empty axis"),
            PadMode::Edge => Ok(Some(pos.clamp(0, last) as usize)),
            PadMode::Reflect if len == 1 => Ok(Some(0)),
            PadMode::Reflect => {
                // numpy 'reflect': period 2 (len - 1), the edge is not repeated.
                let period = 2 * last;
                let r = pos.rem_euclid(period);
                Ok(Some((if r > last { period - r } else { r }) as usize))
            }
        }
    }

    /// Adds `(before, after)` elements per axis.
    pub fn pad(x: &ArrayD<f32>, pads: &[(usize, usize)], mode: PadMode) -> Result<ArrayD<f32>> {
        let shape = x.shape();
        if pads.len() != shape.len() {
            return fail(format!("{} pads for rank {}", pads.len(), shape.len()));
        }
        let fill = match mode {
            PadMode::Constant(v) => v,
            _ => 0.0,
        };
        // For every axis, the input coordinate of each output coordinate.
        let mut tables = Vec::with_capacity(shape.len());
        let mut out_shape = Vec::with_capacity(shape.len());
        for (&len, &(before, after)) in shape.iter().zip(pads) {
            let out_len = before + len + after;
            let table = (0..out_len)
                .map(|j| pad_source(j as i64 - before as i64, len, mode))
                .collect::<Result<Vec<Option<usize>>>>()?;
            tables.push(table);
            out_shape.push(out_len);
        }
        let strides: Vec<usize> = (0..shape.len())
            .map(|axis| product(dims_from(shape, axis + 1)))
            .collect();
        let xd = row_major(x);
        let mut out = Vec::with_capacity(product(&out_shape));
        for_each_index(&out_shape, |index| {
            let mut flat = Some(0usize);
            for ((&j, table), &stride) in index.iter().zip(&tables).zip(&strides) {
                let source = table.get(j).copied().flatten();
                flat = flat.zip(source).map(|(f, s)| f + s * stride);
            }
            out.push(match flat {
                Some(f) => at(&xd, f)?,
                None => fill,
            });
            Ok(())
        })?;
        from_vec(&out_shape, out)
    }

    /// ONNX Gather: `x.shape[..axis] ++ indices.shape ++ x.shape[axis + 1..]`.
    pub fn gather(x: &ArrayD<f32>, indices: &ArrayD<f32>, axis: usize) -> Result<ArrayD<f32>> {
        let shape = x.shape();
        let len = dim(shape, axis)?;
        let picks = indices
            .iter()
            .map(|&v| {
                if !v.is_finite() || v.fract() != 0.0 {
                    return fail(format!("gather index {v} is not a whole number"));
                }
                let i = v as i64;
                let i = if i < 0 { i + len as i64 } else { i };
                inside(i, len).ok_or_else(|| {
                    InterpError::new(format!("gather index {v} out of range for length {len}"))
                })
            })
            .collect::<Result<Vec<usize>>>()?;
        let outer = product(dims_before(shape, axis));
        let inner = product(dims_from(shape, axis + 1));
        let xd = row_major(x);
        let mut out = Vec::with_capacity(outer * picks.len() * inner);
        for o in 0..outer {
            for &p in &picks {
                out.extend_from_slice(run(&xd, (o * len + p) * inner, inner)?);
            }
        }
        let out_shape = [
            dims_before(shape, axis),
            indices.shape(),
            dims_from(shape, axis + 1),
        ]
        .concat();
        from_vec(&out_shape, out)
    }

    /// Sampling position along one axis for bilinear resize: `(i0, i1, lambda)`.
    fn bilinear_source(
        o: usize,
        in_len: usize,
        out_len: usize,
        align_corners: bool,
    ) -> (usize, usize, f64) {
        let src = if align_corners {
            if out_len > 1 {
                o as f64 * (in_len as f64 - 1.0) / (out_len as f64 - 1.0)
            } else {
                0.0
            }
        } else {
            ((o as f64 + 0.5) * in_len as f64 / out_len as f64 - 0.5).max(0.0)
        };
        let i0 = (src.floor() as usize).min(in_len - 1);
        let i1 = (i0 + 1).min(in_len - 1);
        (i0, i1, src - i0 as f64)
    }

    /// ONNX `Resize`, as ONNX's reference evaluator computes it: each output element
    /// interpolates, along the first axis, values that are themselves interpolations of the
    /// remaining axes (in f64), each 1-d step taking the `n` input neighbours nearest to the
    /// output's input coordinate (found by sorting, edge-padded) with the mode's weights.
    pub fn resample(spec: &Resample, x: &ArrayD<f32>, out_shape: &[usize]) -> Result<ArrayD<f32>> {
        let in_shape = x.shape().to_vec();
        if in_shape.len() != out_shape.len()
            || spec.scales.len() != in_shape.len()
            || spec.roi.len() != in_shape.len()
        {
            return fail(format!(
                "resize: input {in_shape:?}, output {out_shape:?} and {} scales disagree",
                spec.scales.len()
            ));
        }
        let data: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        let mut out = Vec::with_capacity(product(out_shape));
        for_each_index(out_shape, |o| {
            out.push(resample_at(spec, &data, &in_shape, out_shape, 0, o)? as f32);
            Ok(())
        })?;
        from_vec(out_shape, out)
    }

    /// The value at output index `o` of the sub-tensor `data` (shape `shape`, whose first
    /// axis is axis `axis` of the input).
    fn resample_at(
        spec: &Resample,
        data: &[f64],
        shape: &[usize],
        out_shape: &[usize],
        axis: usize,
        o: &[usize],
    ) -> Result<f64> {
        let (Some(&len), Some(&x), Some(&out_len)) =
            (shape.first(), o.first(), out_shape.get(axis))
        else {
            return data
                .first()
                .copied()
                .ok_or_else(|| InterpError::new("resize: empty input"));
        };
        let inner: usize = product(shape.get(1..).unwrap_or(&[]));
        let weights = match resample_weights(spec, axis, len, out_len, x) {
            None => return Ok(f64::from(spec.extrapolation)),
            Some(w) => w,
        };
        let mut sum = 0.0;
        for (i, w) in weights {
            let sub = data
                .get(i * inner..(i + 1) * inner)
                .ok_or_else(|| InterpError::new("resize: index out of range"))?;
            let v = resample_at(
                spec,
                sub,
                shape.get(1..).unwrap_or(&[]),
                out_shape,
                axis + 1,
                o.get(1..).unwrap_or(&[]),
            )?;
            sum += w * v;
        }
        Ok(sum)
    }

    /// The `(input index, weight)` pairs of output coordinate `x` along `axis` (length
    /// `len`), or `None` for an output outside the region of interest.
    fn resample_weights(
        spec: &Resample,
        axis: usize,
        len: usize,
        out_len: usize,
        x: usize,
    ) -> Option<Vec<(usize, f64)>> {
        let scale = spec.scales.get(axis).copied().unwrap_or(1.0);
        let (r0, r1) = spec.roi.get(axis).copied().unwrap_or((0.0, 1.0));
        let input_width = len as f64;
        let output_width = scale * input_width;
        let x = x as f64;
        let x_ori = match spec.coord {
            CoordMode::AlignCorners if output_width == 1.0 => 0.0,
            CoordMode::AlignCorners => x * (input_width - 1.0) / (output_width - 1.0),
            CoordMode::Asymmetric => x / scale,
            CoordMode::TfCropAndResize => {
                let x_ori = if output_width == 1.0 {
                    (r1 - r0) * (input_width - 1.0) / 2.0
                } else {
                    x * (r1 - r0) * (input_width - 1.0) / (output_width - 1.0)
                } + r0 * (input_width - 1.0);
                if x_ori < 0.0 || x_ori > input_width - 1.0 {
                    return None;
                }
                x_ori
            }
            CoordMode::PytorchHalfPixel if output_width == 1.0 => -0.5,
            CoordMode::PytorchHalfPixel | CoordMode::HalfPixel => (x + 0.5) / scale - 0.5,
            CoordMode::HalfPixelSymmetric => {
                // the output length actually produced, against the ideal `scale * len`
                let adjustment = out_len as f64 / output_width;
                input_width / 2.0 * (1.0 - adjustment) + (x + 0.5) / scale - 0.5
            }
        };
        let ratio = if x_ori.fract() == 0.0 {
            1.0
        } else {
            x_ori - x_ori.floor()
        };
        let mut coeffs: Vec<f64> = match spec.interpolation {
            Interpolation::Nearest(mode) => {
                let right = ratio == 1.0
                    || match mode {
                        NearestMode::RoundPreferFloor => ratio > 0.5,
                        NearestMode::RoundPreferCeil => ratio >= 0.5,
                        NearestMode::Floor => false,
                        NearestMode::Ceil => true,
                    };
                vec![f64::from(u8::from(!right)), f64::from(u8::from(right))]
            }
            Interpolation::Linear if spec.antialias => {
                let s = scale.min(1.0);
                let start = (-1.0 / s).floor() as i64 + 1;
                let footprint = 2 - 2 * start;
                let c: Vec<f64> = (start..start + footprint)
                    .map(|i| (1.0 - ((i as f64 - ratio) * s).abs()).clamp(0.0, 1.0))
                    .collect();
                let total: f64 = c.iter().sum();
                c.iter().map(|v| v / total).collect()
            }
            Interpolation::Linear => vec![1.0 - ratio, ratio],
            Interpolation::Cubic { a } => {
                let a = f64::from(a);
                let keys = |d: f64| {
                    let d = d.abs();
                    if d <= 1.0 {
                        (a + 2.0) * d.powi(3) - (a + 3.0) * d * d + 1.0
                    } else if d < 2.0 {
                        a * d.powi(3) - 5.0 * a * d * d + 8.0 * a * d - 4.0 * a
                    } else {
                        0.0
                    }
                };
                if spec.antialias {
                    let s = scale.min(1.0);
                    let start = (-2.0 / s).floor() as i64 + 1;
                    let c: Vec<f64> = (start..2 - start)
                        .map(|i| keys(s * (i as f64 - ratio)))
                        .collect();
                    let total: f64 = c.iter().sum();
                    c.iter().map(|v| v / total).collect()
                } else {
                    vec![
                        keys(ratio + 1.0),
                        keys(ratio),
                        keys(1.0 - ratio),
                        keys(2.0 - ratio),
                    ]
                }
            }
        };
        // the n nearest indices to x_ori in the edge-padded axis, ties to the smaller one
        let n = coeffs.len();
        let pad = n.div_ceil(2) as i64;
        let mut candidates: Vec<i64> = (-pad..len as i64 + pad).collect();
        candidates.sort_by(|&p, &q| {
            let (dp, dq) = ((x_ori - p as f64).abs(), (x_ori - q as f64).abs());
            dp.total_cmp(&dq).then(p.cmp(&q))
        });
        let mut neighbours: Vec<i64> = candidates.into_iter().take(n).collect();
        neighbours.sort_unstable();
        if spec.exclude_outside {
            for (c, &i) in coeffs.iter_mut().zip(&neighbours) {
                if i < 0 || i >= len as i64 {
                    *c = 0.0;
                }
            }
            let total: f64 = coeffs.iter().sum();
            coeffs.iter_mut().for_each(|c| *c /= total);
        }
        Some(
            neighbours
                .iter()
                .zip(coeffs)
                .map(|(&i, c)| (i.clamp(0, len as i64 - 1) as usize, c))
                .collect(),
        )
    }

    /// Resamples the last two axes to those of `out_shape`.
    pub fn resize(x: &ArrayD<f32>, mode: ResizeMode, out_shape: &[usize]) -> Result<ArrayD<f32>> {
        let shape = x.shape();
        let rank = shape.len();
        let lead = rank.checked_sub(2);
        let same_lead = lead.is_some_and(|l| {
            out_shape.len() == rank && dims_before(shape, l) == dims_before(out_shape, l)
        });
        let (Some(l), true) = (lead, same_lead) else {
            return fail(format!("cannot resize {shape:?} to {out_shape:?}"));
        };
        let (ih, iw, oh, ow) = (
            dim(shape, l)?,
            dim(shape, l + 1)?,
            dim(out_shape, l)?,
            dim(out_shape, l + 1)?,
        );
        if (ih == 0 && oh > 0) || (iw == 0 && ow > 0) {
            return fail(format!("cannot resize empty {shape:?} to {out_shape:?}"));
        }
        let planes = product(dims_before(shape, l));
        let xd = row_major(x);
        let mut out = Vec::with_capacity(planes * oh * ow);
        match mode {
            ResizeMode::Nearest => {
                // floor(o * in / out), exact in integers.
                let rows: Vec<usize> = (0..oh).map(|o| (o * ih / oh).min(ih - 1)).collect();
                let cols: Vec<usize> = (0..ow).map(|o| (o * iw / ow).min(iw - 1)).collect();
                for p in 0..planes {
                    for &r in &rows {
                        for &c in &cols {
                            out.push(at(&xd, (p * ih + r) * iw + c)?);
                        }
                    }
                }
            }
            ResizeMode::Bilinear { align_corners } => {
                let rows: Vec<_> = (0..oh)
                    .map(|o| bilinear_source(o, ih, oh, align_corners))
                    .collect();
                let cols: Vec<_> = (0..ow)
                    .map(|o| bilinear_source(o, iw, ow, align_corners))
                    .collect();
                for p in 0..planes {
                    let px = |r: usize, c: usize| at(&xd, (p * ih + r) * iw + c).map(f64::from);
                    for &(r0, r1, ly) in &rows {
                        for &(c0, c1, lx) in &cols {
                            let top = (1.0 - lx) * px(r0, c0)? + lx * px(r0, c1)?;
                            let bottom = (1.0 - lx) * px(r1, c0)? + lx * px(r1, c1)?;
                            out.push(((1.0 - ly) * top + ly * bottom) as f32);
                        }
                    }
                }
            }
        }
        from_vec(out_shape, out)
    }
}

// ---------------------------------------------------------------------------------------
// Code generation (`k` is the path of the runtime's `kernels` module; `io` the operand
// and the output)
// ---------------------------------------------------------------------------------------

fn product(dims: Option<&[usize]>) -> usize {
    dims.unwrap_or(&[]).iter().product()
}

/// A reshape's copy: the same elements in the same order.
pub fn reshape_call([input, out]: [&Ident; 2]) -> TokenStream {
    quote! { #out.copy_from_slice(#input); }
}

/// A transpose's strided copy from `shape` to `out_shape`.
pub fn transpose_call(
    k: &TokenStream,
    perm: &[usize],
    [input, out]: [&Ident; 2],
    [shape, out_shape]: [&[usize]; 2],
) -> TokenStream {
    let strides = row_major_strides(shape);
    let permuted: Vec<usize> = perm
        .iter()
        .map(|&p| strides.get(p).copied().unwrap_or(0))
        .collect();
    quote! { #k::strided_copy(#input, 0, &[#(#permuted),*], #out, &[#(#out_shape),*]); }
}

/// A slice's strided copy from `shape` to `out_shape`.
pub fn slice_call(
    k: &TokenStream,
    [starts, steps]: [&[usize]; 2],
    [input, out]: [&Ident; 2],
    [shape, out_shape]: [&[usize]; 2],
) -> TokenStream {
    let strides = row_major_strides(shape);
    let offset: usize = starts.iter().zip(&strides).map(|(a, s)| a * s).sum();
    let stepped: Vec<usize> = strides.iter().zip(steps).map(|(s, st)| s * st).collect();
    quote! { #k::strided_copy(#input, #offset, &[#(#stepped),*], #out, &[#(#out_shape),*]); }
}

/// An expand's strided copy (stride 0 on the broadcast axes).
pub fn expand_call(
    k: &TokenStream,
    [input, out]: [&Ident; 2],
    [shape, out_shape]: [&[usize]; 2],
) -> TokenStream {
    let strides = broadcast_strides(shape, out_shape);
    quote! { #k::strided_copy(#input, 0, &[#(#strides),*], #out, &[#(#out_shape),*]); }
}

/// A concat's copy of its operands (of `shapes`) along `axis`.
pub fn concat_call(
    k: &TokenStream,
    axis: usize,
    (inputs, out): (&[Ident], &Ident),
    shapes: &[&[usize]],
    out_shape: &[usize],
) -> TokenStream {
    let outer = product(out_shape.get(..axis));
    let inner = product(out_shape.get(axis + 1..));
    let chunks: Vec<usize> = shapes
        .iter()
        .map(|s| s.get(axis).copied().unwrap_or(1) * inner)
        .collect();
    quote! { #k::concat(&[#(#inputs),*], &[#(#chunks),*], #out, #outer); }
}

/// A pad's copy from `shape` to `out_shape`.
pub fn pad_call(
    k: &TokenStream,
    pads: &[(usize, usize)],
    mode: PadMode,
    [input, out]: [&Ident; 2],
    [shape, out_shape]: [&[usize]; 2],
) -> TokenStream {
    let before: Vec<usize> = pads.iter().map(|p| p.0).collect();
    let mode = match mode {
        PadMode::Constant(v) => {
            let v = f32_lit(v);
            quote! { #k::PadMode::Constant(#v) }
        }
        PadMode::Reflect => quote! { #k::PadMode::Reflect },
        PadMode::Edge => quote! { #k::PadMode::Edge },
    };
    quote! { #k::pad(#input, &[#(#shape),*], &[#(#before),*], #out, &[#(#out_shape),*], #mode); }
}

/// A gather of `x` (of `shape`) at `indices` along `axis`.
pub fn gather_call(
    k: &TokenStream,
    axis: usize,
    (x, indices, out): (&Ident, Option<&Ident>, &Ident),
    shape: &[usize],
) -> TokenStream {
    let outer = product(shape.get(..axis));
    let len = shape.get(axis).copied().unwrap_or(1);
    let inner = product(shape.get(axis + 1..));
    quote! { #k::gather(#x, #indices, #out, #outer, #len, #inner); }
}

/// A DSL resize of the last two axes of `[N, C, H, W]`.
pub fn resize_call(
    k: &TokenStream,
    mode: ResizeMode,
    [input, out]: [&Ident; 2],
    [shape, out_shape]: [&[usize]; 2],
) -> TokenStream {
    let dim = |s: &[usize], axis: usize| s.get(axis).copied().unwrap_or(1);
    let planes = dim(shape, 0) * dim(shape, 1);
    let [h, w] = [dim(shape, 2), dim(shape, 3)];
    let [oh, ow] = [dim(out_shape, 2), dim(out_shape, 3)];
    match mode {
        ResizeMode::Nearest => {
            quote! { #k::resize_nearest(#input, #out, #planes, #h, #w, #oh, #ow); }
        }
        ResizeMode::Bilinear { align_corners } => {
            quote! { #k::resize_bilinear(#input, #out, #planes, #h, #w, #oh, #ow, #align_corners); }
        }
    }
}

/// An ONNX resize: per axis, the taps (input index and weight) of every output position,
/// as literal tables.
pub fn resample_call(
    k: &TokenStream,
    spec: &Resample,
    [input, out]: [&Ident; 2],
    [shape, out_shape]: [&[usize]; 2],
) -> TokenStream {
    let mut axes = Vec::new();
    for (a, (&len, &out_len)) in shape.iter().zip(out_shape).enumerate() {
        let (mut start, mut index, mut weight, mut outside) =
            (vec![0usize], Vec::new(), Vec::new(), Vec::new());
        for t in spec.axis_taps(a, len, out_len) {
            for (i, w) in t.taps {
                index.push(i);
                weight.push(f32_lit(w as f32));
            }
            start.push(index.len());
            outside.push(t.outside);
        }
        let outside = if outside.contains(&true) {
            quote! { &[#(#outside),*] }
        } else {
            quote! { &[] }
        };
        axes.push(quote! { #k::ResampleAxis { start: &[#(#start),*], index: &[#(#index),*], weight: &[#(#weight),*], outside: #outside } });
    }
    let e = f32_lit(spec.extrapolation);
    quote! { #k::resample(#input, &[#(#shape),*], #out, &[#(#out_shape),*], &[#(#axes),*], #e); }
}

//! The layout ops: reshapes (`reshape`, `flatten`, `squeeze`, `unsqueeze`), `transpose`
//! and `permute`, `concat`, `slice` and `split`, `pad`, `gather` and `embedding`,
//! `expand` and `tile`, `depth_to_space` and `space_to_depth`, `resize`: their argument
//! binding (defaults from their signatures in [`super::ops`]).

use proc_macro2::Span;

use super::{Bind, LowerError};
use crate::check::{self, fmt_shape};
use crate::ir::*;
use crate::lower::{as_f64, Val};

/// Binds `reshape(..)`.
pub(super) fn reshape(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
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
pub(super) fn flatten(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
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
pub(super) fn squeeze(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
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
pub(super) fn unsqueeze(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
    let x = b.tensor("x")?;
    let mut shape = b.shape(x.0);
    let (axis, s) = b.int("axis")?;
    let axis = b.axis(axis, shape.len() + 1, s)?;
    shape.insert(axis, 1);
    let op = Op::Reshape(ReshapeKind::Unsqueeze);
    Ok(b.node_shaped(op, vec![x.0], &shape, &[x.1])?)
}

/// Binds `transpose(..)` and `permute(..)`.
pub(super) fn transpose(b: &mut Bind<'_, '_>, name: &str) -> Result<Val, LowerError> {
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
pub(super) fn concat(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
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
pub(super) fn slice(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
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
pub(super) fn split(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
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
pub(super) fn pad(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
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
pub(super) fn gather(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
    let x = b.tensor("x")?;
    let idx = b.tensor("indices")?;
    let (axis, s) = b.int("axis")?;
    let shape = b.shape(x.0);
    let axis = b.axis(axis, shape.len(), s)?;
    Ok(b.node(Op::Gather { axis }, vec![x.0, idx.0], &[x.1, idx.1])?)
}

/// Binds `embedding(..)`.
pub(super) fn embedding(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
    let idx = b.tensor("indices")?;
    let (num, _) = b.positive("num_embeddings")?;
    let (dim, _) = b.positive("embedding_dim")?;
    let key = b.key();
    let w = b.param(&key, "weight", vec![num, dim])?;
    Ok(b.node(Op::Gather { axis: 0 }, vec![w, idx.0], &[idx.1, idx.1])?)
}

/// Binds `expand(..)`.
pub(super) fn expand(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
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
pub(super) fn tile(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
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
pub(super) fn depth_space(b: &mut Bind<'_, '_>, name: &str) -> Result<Val, LowerError> {
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
pub(super) fn resize(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
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

//! The normalizations: `softmax` and `log_softmax` along one axis, `layer_norm` over the
//! last axes, and the per-channel `batch_norm`, `group_norm` and `instance_norm`: their
//! argument binding (defaults from their signatures in [`super::ops`]).

use super::{Bind, LowerError};
use crate::check::fmt_shape;
use crate::ir::*;
use crate::lower::Val;

/// Binds `softmax(..)` and `log_softmax(..)`.
pub(super) fn softmax(b: &mut Bind<'_, '_>, name: &str) -> Result<Val, LowerError> {
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
pub(super) fn layer_norm(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
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
pub(super) fn channel_norm(b: &mut Bind<'_, '_>, name: &str) -> Result<Val, LowerError> {
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

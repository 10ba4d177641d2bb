//! The convolutions: `conv2d` and `conv_transpose2d`, their argument binding (defaults from
//! their signatures in [`super::ops`]) and the learned tensors each call creates.

use super::{Bind, LowerError};
use crate::check;
use crate::ir::*;
use crate::lower::Val;

/// Binds `conv2d(..)`.
pub(super) fn conv2d(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
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
    if let Err(e) = check::conv2d(&b.shape(x.0), &attrs, out) {
        return Ok(b.shape_fail(e, &[x.1])?);
    }
    let cin = b.shape(x.0).get(1).copied().unwrap_or(1);
    let weight = [out, cin / groups, kernel[0], kernel[1]];
    let inputs = with_params(b, x.0, weight, bias.then_some(out))?;
    Ok(b.node(Op::Conv2d(attrs), inputs, &[x.1])?)
}

/// Binds `conv_transpose2d(..)`.
pub(super) fn conv_transpose2d(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
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
    if let Err(e) = check::conv_transpose2d(&b.shape(x.0), &attrs, out) {
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

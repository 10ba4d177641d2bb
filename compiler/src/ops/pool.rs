//! The poolings: `max_pool2d` and `avg_pool2d` over windows, `adaptive_avg_pool2d`, and
//! the global poolings: their argument binding (defaults from their signatures in
//! [`super::ops`]).

use proc_macro2::Span;

use super::conv::padding4;
use super::{Bind, LowerError};
use crate::check::fmt_shape;
use crate::ir::*;
use crate::lower::Val;

/// Binds `max_pool2d(..)` and `avg_pool2d(..)`.
pub(super) fn window_pool(b: &mut Bind<'_, '_>, name: &str) -> Result<Val, LowerError> {
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
pub(super) fn adaptive_pool(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
    let x = b.tensor("x")?;
    let shape = b.shape(x.0);
    let size = b.pair("output_size", 1)?;
    adaptive_avg_pool2d(b, x, &shape, size)
}

/// Binds `global_avg_pool2d(..)` and `global_max_pool2d(..)`.
pub(super) fn global_pool(b: &mut Bind<'_, '_>, name: &str) -> Result<Val, LowerError> {
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

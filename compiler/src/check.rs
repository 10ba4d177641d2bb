//! Stage 3, `check`: static shape inference and validation.
//!
//! Input: an op, its operand shapes; output: the result shape or a message saying what
//! was expected and what was found. `lower` calls these rules as it builds the graph
//! (block calls bind their shape patterns from the shapes it infers), attaching the span
//! of the token at fault; [`check`] re-validates a finished [`Graph`] (used after every
//! later pass in tests and debug builds).
//!
//! ```text
//!   conv2d([1, 1, 28, 28], weight [6, 1, 5, 5])  ->  [1, 6, 24, 24]
//!   add([2, 1, 4], [3, 1])                       ->  [2, 3, 4]   (numpy broadcasting)
//! ```

use crate::ir::{
    Conv2d, ConvTranspose2d, Graph, Op, Pool2d, ResizeMode, ValueKind, WEIGHT_PANEL,
    WINOGRAD_POINTS,
};

/// A rule's complaint: what went wrong and which operand is at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeError {
    /// Index of the operand at fault, or `None` when it is an attribute or the op itself.
    pub operand: Option<usize>,
    /// The attribute at fault (`"kernel"`, `"groups"`, ...), when it is one.
    pub attr: Option<&'static str>,
    /// Lowercase message naming the op, the expected and the found shapes.
    pub message: String,
}

fn err<T>(operand: Option<usize>, message: String) -> Result<T, ShapeError> {
    Err(ShapeError {
        operand,
        attr: None,
        message,
    })
}

/// An error whose cause is the attribute `attr` of the call.
fn attr_err<T>(attr: &'static str, message: String) -> Result<T, ShapeError> {
    Err(ShapeError {
        operand: None,
        attr: Some(attr),
        message,
    })
}

/// The number of elements of `shape`, or `None` when it is above [`crate::MAX_ELEMENTS`].
pub fn elements(shape: &[usize]) -> Option<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= crate::MAX_ELEMENTS)
}

/// Formats a shape as `[1, 3, 224, 224]`.
pub fn fmt_shape(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(", "))
}

/// numpy broadcasting of two shapes.
pub fn broadcast(op: &str, a: &[usize], b: &[usize]) -> Result<Vec<usize>, ShapeError> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for (i, slot) in out.iter_mut().enumerate() {
        let da = dim_from_end(a, rank - 1 - i);
        let db = dim_from_end(b, rank - 1 - i);
        *slot = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            (x, y) => {
                return err(
                    Some(1),
                    format!(
                        "{op}: shapes {} and {} do not broadcast (axis {} from the end is {x} vs {y}; each pair must be equal or one of them 1)",
                        fmt_shape(a),
                        fmt_shape(b),
                        rank - i,
                    ),
                )
            }
        };
    }
    Ok(out)
}

fn dim_from_end(shape: &[usize], k: usize) -> usize {
    if k < shape.len() {
        shape.get(shape.len() - 1 - k).copied().unwrap_or(1)
    } else {
        1
    }
}

/// Resolves a possibly negative axis against a rank.
pub fn normalize_axis(op: &str, axis: i64, rank: usize) -> Result<usize, ShapeError> {
    let r = rank as i64;
    let resolved = if axis < 0 { axis + r } else { axis };
    if resolved < 0 || resolved >= r {
        return err(
            None,
            format!(
                "{op}: axis {axis} is out of range for a tensor of rank {rank} (valid: {} to {})",
                -r,
                r - 1
            ),
        );
    }
    Ok(resolved as usize)
}

fn expect_rank(
    op: &str,
    what: &str,
    shape: &[usize],
    rank: usize,
    operand: usize,
) -> Result<(), ShapeError> {
    if shape.len() != rank {
        return err(
            Some(operand),
            format!(
                "{op}: {what} must be {rank}-d, found {}-d shape {}",
                shape.len(),
                fmt_shape(shape)
            ),
        );
    }
    Ok(())
}

fn dims4(shape: &[usize]) -> [usize; 4] {
    [
        shape.first().copied().unwrap_or(0),
        shape.get(1).copied().unwrap_or(0),
        shape.get(2).copied().unwrap_or(0),
        shape.get(3).copied().unwrap_or(0),
    ]
}

/// Output length of a strided window along one axis (rounding down), or an error when
/// the window does not fit in the padded input.
#[allow(clippy::too_many_arguments)]
fn window_out(
    op: &str,
    axis: &str,
    len: usize,
    pad: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
) -> Result<usize, ShapeError> {
    // saturating: absurd attributes give "window too large", not an overflow
    let span = dilation
        .saturating_mul(kernel.saturating_sub(1))
        .saturating_add(1);
    let padded = len.saturating_add(pad);
    if kernel == 0 || dilation == 0 {
        return err(
            None,
            format!("{op}: kernel and dilation must be at least 1"),
        );
    }
    if span > padded {
        return attr_err(
            "kernel",
            format!("{op}: the {axis} window ({span} with dilation) is larger than the padded input ({padded}); use a smaller kernel or more padding"),
        );
    }
    if stride == 0 {
        return attr_err("stride", format!("{op}: stride must be at least 1"));
    }
    Ok((padded - span) / stride + 1)
}

/// Output shape of `conv2d` for input `[N, C, H, W]` and weight `[O, C/g, kh, kw]`.
pub fn conv2d(x: &[usize], attrs: &Conv2d, out_channels: usize) -> Result<Vec<usize>, ShapeError> {
    expect_rank("conv2d", "the input", x, 4, 0)?;
    let [n, c, h, w] = dims4(x);
    if attrs.groups == 0 || c % attrs.groups != 0 || !out_channels.is_multiple_of(attrs.groups) {
        return attr_err(
            "groups",
            format!(
                "conv2d: groups = {} must divide both the input channels ({c}) and the output channels ({out_channels})",
                attrs.groups
            ),
        );
    }
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
pub fn conv_transpose2d(
    x: &[usize],
    attrs: &ConvTranspose2d,
    out_channels: usize,
) -> Result<Vec<usize>, ShapeError> {
    expect_rank("conv_transpose2d", "the input", x, 4, 0)?;
    let [n, c, h, w] = dims4(x);
    if attrs.groups == 0 || c % attrs.groups != 0 || !out_channels.is_multiple_of(attrs.groups) {
        return attr_err(
            "groups",
            format!(
                "conv_transpose2d: groups = {} must divide both the input channels ({c}) and the output channels ({out_channels})",
                attrs.groups
            ),
        );
    }
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

/// Output shape of `max_pool2d` / `avg_pool2d` on `[N, C, H, W]`.
pub fn pool2d(op: &str, x: &[usize], attrs: &Pool2d) -> Result<Vec<usize>, ShapeError> {
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

/// Output shape of `matmul` (batched, batch axes broadcast).
pub fn matmul(a: &[usize], b: &[usize]) -> Result<Vec<usize>, ShapeError> {
    if a.len() < 2 {
        return err(
            Some(0),
            format!(
                "matmul: operands must be at least 2-d, found {}",
                fmt_shape(a)
            ),
        );
    }
    if b.len() < 2 {
        return err(
            Some(1),
            format!(
                "matmul: operands must be at least 2-d, found {}",
                fmt_shape(b)
            ),
        );
    }
    let (ab, am) = a.split_at(a.len() - 2);
    let (bb, bm) = b.split_at(b.len() - 2);
    let (m, k) = (
        am.first().copied().unwrap_or(0),
        am.get(1).copied().unwrap_or(0),
    );
    let (k2, n) = (
        bm.first().copied().unwrap_or(0),
        bm.get(1).copied().unwrap_or(0),
    );
    if k != k2 {
        return err(
            Some(1),
            format!(
                "matmul: inner dimensions differ: {} @ {} needs the last axis of the left ({k}) to equal the second-to-last of the right ({k2})",
                fmt_shape(a),
                fmt_shape(b)
            ),
        );
    }
    let mut out = broadcast("matmul (batch axes)", ab, bb)?;
    out.extend([m, n]);
    Ok(out)
}

/// The shape after a reshape, resolving one `-1`.
pub fn reshape(x: &[usize], target: &[i64]) -> Result<Vec<usize>, ShapeError> {
    let total: usize = x.iter().product();
    let mut infer = None;
    let mut known = 1usize;
    let mut out = Vec::with_capacity(target.len());
    for (i, &d) in target.iter().enumerate() {
        if d == -1 {
            if infer.is_some() {
                return err(None, "reshape: only one dimension may be -1".to_string());
            }
            infer = Some(i);
            out.push(0);
        } else if d < 0 {
            return err(None, format!("reshape: dimension {d} is negative (only -1, meaning \"the rest\", is allowed)"));
        } else {
            let Some(k) = known
                .checked_mul(d as usize)
                .filter(|&k| k <= crate::MAX_ELEMENTS)
            else {
                let shown: Vec<String> = target.iter().map(|d| d.to_string()).collect();
                return err(
                    None,
                    format!("reshape: cannot reshape {} ({total} elements) into [{}] (more than {} elements)", fmt_shape(x), shown.join(", "), crate::MAX_ELEMENTS),
                );
            };
            known = k;
            out.push(d as usize);
        }
    }
    let shown: Vec<String> = target.iter().map(|d| d.to_string()).collect();
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return err(
                None,
                format!(
                    "reshape: cannot reshape {} ({total} elements) into [{}]",
                    fmt_shape(x),
                    shown.join(", ")
                ),
            );
        }
        if let Some(slot) = out.get_mut(i) {
            *slot = total / known;
        }
    } else if known != total {
        return err(
            None,
            format!(
                "reshape: cannot reshape {} ({total} elements) into [{}] ({known} elements)",
                fmt_shape(x),
                shown.join(", ")
            ),
        );
    }
    Ok(out)
}

/// Re-validates every node of a finished graph: operand counts and result shapes. A
/// failure here is an internal error of the pass that produced the graph.
pub fn check(graph: &Graph) -> Result<(), String> {
    crate::work::add(crate::work::Stage::Check, graph.nodes.len());
    for (i, node) in graph.nodes.iter().enumerate() {
        let shapes: Vec<&[usize]> = node.inputs.iter().map(|&v| graph.shape(v)).collect();
        let out = graph.shape(node.output);
        let name = node.op.name();
        if node.output >= graph.values.len()
            || graph.values.get(node.output).map(|v| &v.kind) != Some(&ValueKind::Node(i))
        {
            return Err(format!("node {i} ({name}) does not own its output value"));
        }
        for &v in &node.inputs {
            match graph.values.get(v).map(|v| &v.kind) {
                Some(ValueKind::Node(j)) if *j >= i => {
                    return Err(format!(
                        "node {i} ({name}) reads the output of a later node {j}"
                    ))
                }
                None => {
                    return Err(format!(
                        "node {i} ({name}) reads a value that does not exist"
                    ))
                }
                _ => {}
            }
        }
        let arity_ok = match &node.op {
            Op::Unary(_)
            | Op::MaxPool2d(_)
            | Op::AvgPool2d(_)
            | Op::GlobalAvgPool
            | Op::GlobalMaxPool
            | Op::Reduce { .. }
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::Reshape(_)
            | Op::Transpose { .. }
            | Op::Slice { .. }
            | Op::Pad { .. }
            | Op::Expand
            | Op::Resize(_)
            | Op::Resample(_)
            | Op::PackPanels
            | Op::TileConvWeights { .. }
            | Op::WinogradWeights
            | Op::Cumsum { .. } => shapes.len() == 1,
            Op::Binary(_)
            | Op::Prelu
            | Op::MatMul
            | Op::MatMulPanels { .. }
            | Op::Gather { .. } => shapes.len() == 2,
            Op::Where => shapes.len() == 3,
            Op::Linear | Op::Conv2d(_) | Op::ConvTranspose2d(_) => matches!(shapes.len(), 2 | 3),
            Op::LayerNorm { .. } | Op::GroupNorm { .. } | Op::InstanceNorm { .. } => {
                matches!(shapes.len(), 1 | 3)
            }
            Op::BatchNorm { .. } => shapes.len() == 5,
            Op::Concat { .. } => !shapes.is_empty(),
        };
        if !arity_ok {
            return Err(format!("node {i} ({name}) has {} operands", shapes.len()));
        }
        let in_len: usize = shapes.first().map_or(0, |s| s.iter().product());
        let out_len: usize = out.iter().product();
        let consistent = match &node.op {
            Op::Unary(_)
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::Cumsum { .. }
            | Op::LayerNorm { .. }
            | Op::BatchNorm { .. }
            | Op::GroupNorm { .. }
            | Op::InstanceNorm { .. }
            | Op::Prelu => shapes.first() == Some(&out),
            Op::Reshape(_) | Op::Transpose { .. } => in_len == out_len,
            Op::Binary(_) => match (shapes.first(), shapes.get(1)) {
                (Some(a), Some(b)) => broadcast(name, a, b).is_ok_and(|s| s == out),
                _ => false,
            },
            Op::MatMul => match (shapes.first(), shapes.get(1)) {
                (Some(a), Some(b)) => matmul(a, b).is_ok_and(|s| s == out),
                _ => false,
            },
            Op::MatMulPanels { n } => match (shapes.first(), shapes.get(1)) {
                (Some(a), Some(p)) => {
                    let k = a.last().copied();
                    let mut want = a.to_vec();
                    if let Some(last) = want.last_mut() {
                        *last = *n;
                    }
                    let panels = [n.div_ceil(WEIGHT_PANEL), k.unwrap_or(0), WEIGHT_PANEL];
                    a.len() >= 2 && p[..] == panels && want[..] == out[..]
                }
                _ => false,
            },
            Op::PackPanels => shapes.first().is_some_and(|w| match w[..] {
                [n, k] => out[..] == [n.div_ceil(WEIGHT_PANEL), k, WEIGHT_PANEL],
                _ => false,
            }),
            Op::TileConvWeights { groups } => shapes.first().is_some_and(|w| {
                w.len() == 4
                    && w[..] == out[..]
                    && *groups > 0
                    && w.first().is_some_and(|c| c % groups == 0)
            }),
            Op::WinogradWeights => shapes.first().is_some_and(|w| match w[..] {
                [o, i, 3, 3] => out[..] == [WINOGRAD_POINTS, o, i],
                _ => false,
            }),
            Op::Conv2d(attrs) => shapes.first().is_some_and(|x| {
                conv2d(x, attrs, out.get(1).copied().unwrap_or(0)).is_ok_and(|s| s == out)
            }),
            Op::MaxPool2d(attrs) | Op::AvgPool2d(attrs) => shapes
                .first()
                .is_some_and(|x| pool2d(name, x, attrs).is_ok_and(|s| s == out)),
            Op::Resize(ResizeMode::Nearest | ResizeMode::Bilinear { .. }) => shapes
                .first()
                .is_some_and(|x| x.len() == out.len() && x.len() >= 3),
            _ => true,
        };
        if !consistent {
            let found: Vec<String> = shapes.iter().map(|s| fmt_shape(s)).collect();
            return Err(format!(
                "node {i} ({name}) has operands {} but result {}",
                found.join(", "),
                fmt_shape(out)
            ));
        }
    }
    for &o in &graph.outputs {
        if o >= graph.values.len() {
            return Err("an output does not exist".to_string());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast("add", &[2, 1, 4], &[3, 1]), Ok(vec![2, 3, 4]));
        assert_eq!(broadcast("add", &[], &[5]), Ok(vec![5]));
        assert!(broadcast("add", &[2, 3], &[4, 3]).is_err());
    }

    #[test]
    fn conv_and_pool_sizes_match_pytorch() {
        let c = Conv2d {
            kernel: [5, 5],
            stride: [1, 1],
            padding: [0; 4],
            dilation: [1, 1],
            groups: 1,
            weights: crate::ir::ConvWeights::RowMajor,
        };
        assert_eq!(conv2d(&[1, 1, 28, 28], &c, 6), Ok(vec![1, 6, 24, 24]));
        let c = Conv2d {
            kernel: [3, 3],
            stride: [2, 2],
            padding: [1; 4],
            dilation: [1, 1],
            groups: 1,
            weights: crate::ir::ConvWeights::RowMajor,
        };
        assert_eq!(conv2d(&[1, 3, 224, 224], &c, 32), Ok(vec![1, 32, 112, 112]));
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
            pool2d("max_pool2d", &[1, 1, 6, 6], &p),
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
            pool2d("max_pool2d", &[1, 1, 5, 5], &p),
            Ok(vec![1, 1, 3, 3])
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
            conv_transpose2d(&[1, 64, 32, 32], &t, 32),
            Ok(vec![1, 32, 64, 64])
        );
    }

    #[test]
    fn reshape_infers_one_axis() {
        assert_eq!(reshape(&[2, 3, 4], &[6, -1]), Ok(vec![6, 4]));
        assert!(reshape(&[2, 3, 4], &[5, -1]).is_err());
        assert!(reshape(&[2, 3, 4], &[-1, -1]).is_err());
        assert!(reshape(&[2, 3, 4], &[25]).is_err());
    }

    #[test]
    fn matmul_broadcasts_batches() {
        assert_eq!(matmul(&[2, 1, 3, 4], &[5, 4, 6]), Ok(vec![2, 5, 3, 6]));
        assert!(matmul(&[3, 4], &[5, 6]).is_err());
    }
}

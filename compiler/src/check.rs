//! Stage 3, `check`: static shape inference and validation.
//!
//! Input: an op, its operand shapes; output: the result shape or a message saying what
//! was expected and what was found. `lower` calls these rules as it builds the graph
//! (block calls bind their shape patterns from the shapes it infers), attaching the span
//! of the token at fault. [`infer`] is the one result-shape rule of every op (an
//! exhaustive `match`: a new op does not compile without its rule): [`check`] holds every
//! node of a finished [`Graph`] to it after lowering and after every rewrite round,
//! rewrite patches take their nodes' shapes from it, and the reference interpreter
//! compares each result it computes with it. The rules of the op families live with the
//! rest of each family's facts in `ops/` (`ops::conv::conv2d_shape`, `ops::pool::window_shape`,
//! ...); `infer` dispatches to them and keeps the elementwise ones.
//!
//! ```text
//!   conv2d([1, 1, 28, 28], weight [6, 1, 5, 5])  ->  [1, 6, 24, 24]
//!   add([2, 1, 4], [3, 1])                       ->  [2, 3, 4]   (numpy broadcasting)
//! ```

use crate::ir::{Graph, Op, ValueKind};
use crate::ops::{conv, layout, norm, pool, product, reduce, select};

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

pub(crate) fn err<T>(operand: Option<usize>, message: String) -> Result<T, ShapeError> {
    Err(ShapeError {
        operand,
        attr: None,
        message,
    })
}

/// An error whose cause is the attribute `attr` of the call.
pub(crate) fn attr_err<T>(attr: &'static str, message: String) -> Result<T, ShapeError> {
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

/// Refuses a result shape above the supported rank ([`crate::MAX_RANK`]) or size
/// ([`crate::MAX_ELEMENTS`]).
pub fn within_limits(op: &str, shape: &[usize]) -> Result<(), ShapeError> {
    if shape.len() > crate::MAX_RANK {
        return err(
            None,
            format!(
                "{op}: the result {} has rank {}, above the supported maximum of {}",
                fmt_shape(shape),
                shape.len(),
                crate::MAX_RANK
            ),
        );
    }
    if elements(shape).is_none() {
        return err(
            None,
            format!(
                "{op}: the result {} has more than {} elements, the supported maximum",
                fmt_shape(shape),
                crate::MAX_ELEMENTS
            ),
        );
    }
    Ok(())
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

pub(crate) fn expect_rank(
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

pub(crate) fn dims4(shape: &[usize]) -> [usize; 4] {
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
pub(crate) fn window_out(
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

/// The operands of an op, exactly `K` of them, or the complaint that names the count.
pub(crate) fn operands<'a, const K: usize>(
    name: &str,
    inputs: &[&'a [usize]],
) -> Result<[&'a [usize]; K], ShapeError> {
    <[&[usize]; K]>::try_from(inputs).or_else(|_| {
        err(
            None,
            format!("{name}: takes {K} operands, found {}", inputs.len()),
        )
    })
}

/// The data operand of an op that takes `required` operands or `all` (with its optional
/// trailing parameters, as `weight, bias`).
pub(crate) fn leading<'a>(
    name: &str,
    inputs: &[&'a [usize]],
    required: usize,
    all: usize,
) -> Result<&'a [usize], ShapeError> {
    match inputs.first() {
        Some(x) if inputs.len() == required || inputs.len() == all => Ok(x),
        _ => err(
            None,
            format!(
                "{name}: takes {required} or {all} operands, found {}",
                inputs.len()
            ),
        ),
    }
}

/// Operand `index` (if given) must have shape `want`.
pub(crate) fn expect_shape(
    name: &str,
    what: &str,
    inputs: &[&[usize]],
    index: usize,
    want: &[usize],
) -> Result<(), ShapeError> {
    match inputs.get(index) {
        Some(s) if *s != want => err(
            Some(index),
            format!(
                "{name}: {what} must have shape {}, found {}",
                fmt_shape(want),
                fmt_shape(s)
            ),
        ),
        _ => Ok(()),
    }
}

/// `axis` must be below the rank of `x`.
pub(crate) fn expect_axis(name: &str, x: &[usize], axis: usize) -> Result<(), ShapeError> {
    if axis >= x.len() {
        return err(
            Some(0),
            format!(
                "{name}: axis {axis} is out of range for shape {}",
                fmt_shape(x)
            ),
        );
    }
    Ok(())
}

/// The result shape of `op` on operands of shapes `inputs`: the one shape inference of
/// every op, used by [`check`] after lowering and after every rewrite round. `given` is
/// the result value's recorded shape, read only by the ops whose result shape is their
/// attribute (`reshape`, `expand`, `resize`), which validate it against their operand.
pub fn infer(op: &Op, inputs: &[&[usize]], given: &[usize]) -> Result<Vec<usize>, ShapeError> {
    let name = op.name();
    match op {
        Op::Unary(_) => Ok(operands::<1>(name, inputs)?[0].to_vec()),
        Op::Binary(_) => {
            let [a, b] = operands(name, inputs)?;
            broadcast(name, a, b)
        }
        Op::Where => select::where_shape(name, inputs),
        Op::Prelu => select::prelu_shape(name, inputs),
        Op::Linear => product::linear_shape(name, inputs),
        Op::MatMul => {
            let [a, b] = operands(name, inputs)?;
            product::matmul_shape(a, b)
        }
        Op::MatMulPanels { n } => product::panels_matmul_shape(name, inputs, *n),
        Op::PackPanels => product::pack_panels_shape(name, inputs),
        Op::TileConvWeights { groups } => conv::tiled_weight_shape(name, inputs, *groups),
        Op::WinogradWeights { tile } => conv::winograd_weight_shape(name, *tile, inputs),
        Op::Conv2d(attrs) => conv::conv2d_operands_shape(name, inputs, attrs),
        Op::ConvTranspose2d(attrs) => conv::conv_transpose2d_operands_shape(name, inputs, attrs),
        Op::MaxPool2d(attrs) | Op::AvgPool2d(attrs) => {
            let [x] = operands(name, inputs)?;
            pool::window_shape(name, x, attrs)
        }
        Op::GlobalAvgPool | Op::GlobalMaxPool => {
            let [x] = operands(name, inputs)?;
            pool::global_shape(name, x)
        }
        Op::Reduce { axes, keepdims, .. } => {
            let [x] = operands(name, inputs)?;
            reduce::shape(name, x, axes, *keepdims)
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } | Op::Scan { axis, .. } => {
            let [x] = operands(name, inputs)?;
            expect_axis(name, x, *axis)?;
            Ok(x.to_vec())
        }
        Op::LayerNorm { dims, .. } => norm::layer_norm_shape(name, inputs, *dims),
        Op::BatchNorm { .. } => norm::batch_norm_shape(name, inputs),
        Op::GroupNorm { groups, .. } => norm::group_norm_shape(name, inputs, Some(*groups)),
        Op::InstanceNorm { .. } => norm::group_norm_shape(name, inputs, None),
        Op::Reshape(_) => layout::reshape_shape(name, inputs, given),
        Op::Transpose { perm } => layout::transpose_shape(name, inputs, perm),
        Op::Concat { axis } => layout::concat_shape(name, inputs, *axis),
        Op::Slice {
            starts,
            ends,
            steps,
        } => layout::slice_shape(name, inputs, [starts, ends, steps]),
        Op::Pad { pads, .. } => layout::pad_shape(name, inputs, pads),
        Op::Gather { axis } => layout::gather_shape(name, inputs, *axis),
        Op::Expand => layout::expand_shape(name, inputs, given),
        Op::Resize(_) => layout::resized_shape(name, inputs, given, |x| x.len() >= 3),
        Op::Resample(spec) => layout::resized_shape(name, inputs, given, |x| {
            spec.scales.len() == x.len() && spec.roi.len() == x.len()
        }),
    }
}

/// The channel count (axis 1) of a normalization's input.
pub(crate) fn channels(name: &str, x: &[usize]) -> Result<usize, ShapeError> {
    match x.get(1) {
        Some(&c) => Ok(c),
        None => err(
            Some(0),
            format!("{name}: needs [N, C, ...], found {}", fmt_shape(x)),
        ),
    }
}

/// Re-validates every node of a finished graph: each node owns its output, reads only
/// earlier values, and its result shape is what [`infer`] says. A failure here is an
/// internal error of the pass that produced the graph.
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
        match infer(&node.op, &shapes, out) {
            Ok(inferred) if inferred == out => {}
            Ok(inferred) => {
                let found: Vec<String> = shapes.iter().map(|s| fmt_shape(s)).collect();
                return Err(format!(
                    "node {i} ({name}) has operands {} and result {}, but they give {}",
                    found.join(", "),
                    fmt_shape(out),
                    fmt_shape(&inferred)
                ));
            }
            Err(e) => return Err(format!("node {i}: {}", e.message)),
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
    use crate::ir::{winograd_points, Conv2d, ConvWeights};

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast("add", &[2, 1, 4], &[3, 1]), Ok(vec![2, 3, 4]));
        assert_eq!(broadcast("add", &[], &[5]), Ok(vec![5]));
        assert!(broadcast("add", &[2, 3], &[4, 3]).is_err());
    }

    #[test]
    fn reshape_infers_one_axis() {
        assert_eq!(reshape(&[2, 3, 4], &[6, -1]), Ok(vec![6, 4]));
        assert!(reshape(&[2, 3, 4], &[5, -1]).is_err());
        assert!(reshape(&[2, 3, 4], &[-1, -1]).is_err());
        assert!(reshape(&[2, 3, 4], &[25]).is_err());
    }

    #[test]
    fn infer_gives_each_ops_result_shape_and_refuses_misfits() {
        use crate::ir::{PadMode, ReduceKind, UnaryOp};
        let ok = |op: Op, inputs: &[&[usize]], want: &[usize]| {
            assert_eq!(infer(&op, inputs, want).as_deref(), Ok(want), "{op:?}");
        };
        ok(Op::Unary(UnaryOp::Relu), &[&[2, 3]], &[2, 3]);
        ok(Op::Where, &[&[3, 1], &[1, 4], &[4]], &[3, 4]);
        ok(Op::Linear, &[&[2, 5, 19], &[7, 19], &[7]], &[2, 5, 7]);
        ok(
            Op::Reduce {
                kind: ReduceKind::Sum,
                axes: vec![1, 2],
                keepdims: false,
            },
            &[&[2, 3, 4, 5]],
            &[2, 5],
        );
        ok(
            Op::Reduce {
                kind: ReduceKind::Max,
                axes: vec![0],
                keepdims: true,
            },
            &[&[2, 3]],
            &[1, 3],
        );
        ok(
            Op::Concat { axis: 1 },
            &[&[2, 3], &[2, 4], &[2, 1]],
            &[2, 8],
        );
        ok(
            Op::Slice {
                starts: vec![0, 1],
                ends: vec![2, 9],
                steps: vec![1, 3],
            },
            &[&[2, 8]],
            &[2, 3],
        );
        ok(
            Op::Pad {
                pads: vec![(1, 2), (0, 0)],
                mode: PadMode::Edge,
            },
            &[&[2, 3]],
            &[5, 3],
        );
        ok(
            Op::Gather { axis: 1 },
            &[&[4, 5, 6], &[2, 3]],
            &[4, 2, 3, 6],
        );
        ok(
            Op::Transpose {
                perm: vec![2, 0, 1],
            },
            &[&[2, 3, 4]],
            &[4, 2, 3],
        );
        ok(Op::GlobalAvgPool, &[&[1, 8, 5, 5]], &[1, 8, 1, 1]);
        ok(Op::Expand, &[&[3, 1]], &[2, 3, 4]);
        ok(
            Op::WinogradWeights { tile: 2 },
            &[&[8, 4, 3, 3]],
            &[winograd_points(2), 8, 4],
        );
        ok(
            Op::WinogradWeights { tile: 4 },
            &[&[8, 4, 3, 3]],
            &[36, 8, 4],
        );
        let conv = Conv2d {
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1, 1, 1],
            dilation: [1, 1],
            groups: 2,
            weights: ConvWeights::RowMajor,
        };
        ok(
            Op::Conv2d(conv),
            &[&[1, 4, 8, 8], &[6, 2, 3, 3], &[6]],
            &[1, 6, 8, 8],
        );
        // misfits: a weight for the wrong group count, a bias of the wrong length, an
        // axis past the rank, a reshape that changes the element count, a bad permutation
        let bad = |op: Op, inputs: &[&[usize]], given: &[usize]| {
            assert!(infer(&op, inputs, given).is_err(), "{op:?} on {inputs:?}");
        };
        bad(Op::Conv2d(conv), &[&[1, 4, 8, 8], &[6, 4, 3, 3]], &[]);
        bad(Op::Conv2d(conv), &[&[1, 4, 8, 8], &[6, 2, 3, 3], &[5]], &[]);
        bad(Op::Linear, &[&[2, 19], &[7, 18]], &[]);
        bad(Op::Softmax { axis: 2 }, &[&[2, 3]], &[]);
        bad(
            Op::Reshape(crate::ir::ReshapeKind::Reshape),
            &[&[2, 3]],
            &[7],
        );
        bad(Op::Transpose { perm: vec![0, 0] }, &[&[2, 3]], &[]);
        bad(Op::Concat { axis: 0 }, &[&[2, 3], &[2, 4]], &[]);
        bad(Op::Binary(crate::ir::BinaryOp::Add), &[&[2, 3]], &[]);
    }
}

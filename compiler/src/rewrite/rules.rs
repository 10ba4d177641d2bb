//! The rewrite rules: one `fn(&Graph, node) -> Option<Patch>` each, named
//! `<family>_<effect>` and listed (with family, exactness and a one-line doc) in
//! [`crate::tables::RULES`]. A rule only matches and builds; the engine
//! ([`crate::rewrite`]) prices, chooses and applies.
//!
//! Conventions: `x`, `a`, `b` are values; `c`, `k` scalar constants folded into unary
//! ops; constants are combined in f64 and rounded once to f32.

use super::{Operand, Operand::Old, Patch};
use crate::ir::{
    BinaryOp, Graph, Node, Op, ReduceKind, ReshapeKind, ResizeMode, UnaryOp, ValueId, ValueKind,
};
use crate::ops::unary::Order;
use crate::ops::NonnegWhen;

// ---------------------------------------------------------------------------------------
// Matching helpers
// ---------------------------------------------------------------------------------------

/// The node producing `v`.
fn def(g: &Graph, v: ValueId) -> Option<&Node> {
    match g.values.get(v).map(|v| &v.kind) {
        Some(ValueKind::Node(i)) => g.nodes.get(*i),
        _ => None,
    }
}

/// `v = u(x)`: `(u, x)`.
fn un(g: &Graph, v: ValueId) -> Option<(UnaryOp, ValueId)> {
    let n = def(g, v)?;
    match (&n.op, n.inputs.as_slice()) {
        (Op::Unary(u), [x]) => Some((*u, *x)),
        _ => None,
    }
}

/// `v = a op b`: `(op, a, b)`.
fn bin(g: &Graph, v: ValueId) -> Option<(BinaryOp, ValueId, ValueId)> {
    let n = def(g, v)?;
    match (&n.op, n.inputs.as_slice()) {
        (Op::Binary(b), [x, y]) => Some((*b, *x, *y)),
        _ => None,
    }
}

/// `v = op(a, b)` for one given binary op: `(a, b)`.
fn bin_of(g: &Graph, v: ValueId, op: BinaryOp) -> Option<(ValueId, ValueId)> {
    bin(g, v)
        .filter(|(o, _, _)| *o == op)
        .map(|(_, a, b)| (a, b))
}

/// `v = u(x)` for one given unary op: `x`.
fn un_of(g: &Graph, v: ValueId, op: UnaryOp) -> Option<ValueId> {
    un(g, v).filter(|(u, _)| *u == op).map(|(_, x)| x)
}

/// The matched node.
fn at(g: &Graph, n: usize) -> Option<&Node> {
    g.nodes.get(n)
}

/// The matched node as `u(x)`.
fn root_un(g: &Graph, n: usize) -> Option<(UnaryOp, ValueId)> {
    un(g, at(g, n)?.output)
}

/// The matched node as `a op b`.
fn root_bin(g: &Graph, n: usize) -> Option<(BinaryOp, ValueId, ValueId)> {
    bin(g, at(g, n)?.output)
}

/// The matched node's single operand.
fn root_single(g: &Graph, n: usize) -> Option<(&Node, ValueId)> {
    let node = at(g, n)?;
    match node.inputs.as_slice() {
        [x] => Some((node, *x)),
        _ => None,
    }
}

/// The matched node's output shape.
fn out_shape(g: &Graph, n: usize) -> Vec<usize> {
    at(g, n).map_or_else(Vec::new, |node| g.shape(node.output).to_vec())
}

/// Both orders of a pair (for commutative ops).
fn orders(a: ValueId, b: ValueId) -> [(ValueId, ValueId); 2] {
    [(a, b), (b, a)]
}

/// Rounds an f64 constant to f32, if it stays a normal number (or an exact zero asked for).
fn normal(c: f64) -> Option<f32> {
    let f = c as f32;
    f.is_normal().then_some(f)
}

/// A power of two (so `x / c == x * (1 / c)` bit for bit).
fn power_of_two(c: f32) -> bool {
    c.is_normal() && c.abs().to_bits() & 0x007F_FFFF == 0
}

/// An integer exponent in `-64..=64`, not 0.
fn small_integer(c: f32) -> Option<i32> {
    (c.fract() == 0.0 && c.abs() <= 64.0 && c != 0.0).then_some(c as i32)
}

/// `v >= 0` (or NaN) for every input, by construction of its producer. Looks at most
/// `depth` producers deep.
pub fn nonneg(g: &Graph, v: ValueId, depth: usize) -> bool {
    if depth == 0 {
        return false;
    }
    let Some(n) = def(g, v) else { return false };
    let all = |n: &Node| n.inputs.iter().all(|&x| nonneg(g, x, depth - 1));
    let first = |n: &Node| n.inputs.first().is_some_and(|&x| nonneg(g, x, depth - 1));
    match crate::ops::facts(&n.op).nonneg {
        NonnegWhen::Always => true,
        NonnegWhen::FirstIs => first(n),
        NonnegWhen::AllAre => all(n),
        NonnegWhen::AnyIs => n.inputs.iter().any(|&x| nonneg(g, x, depth - 1)),
        NonnegWhen::BranchesAre => n
            .inputs
            .get(1..)
            .is_some_and(|xs| xs.iter().all(|&x| nonneg(g, x, depth - 1))),
        NonnegWhen::Unknown => false,
    }
}

/// Nondecreasing on every input, NaN to NaN (so it commutes with max and min).
fn increasing(u: UnaryOp) -> bool {
    u.order() == Order::Increasing
}

/// Nonincreasing on every input, NaN to NaN.
fn decreasing(u: UnaryOp) -> bool {
    u.order() == Order::Decreasing
}

/// A scalar scale: `x * c`, `x / c` or `-x` (commutes with sums, means and products).
fn scale(u: UnaryOp) -> bool {
    matches!(
        u,
        UnaryOp::MulScalar(_) | UnaryOp::DivScalar(_) | UnaryOp::Neg
    )
}

/// A slice as (starts, ends, steps).
type SliceSpec = (Vec<usize>, Vec<usize>, Vec<usize>);

fn slice_of(n: &Node) -> Option<SliceSpec> {
    match &n.op {
        Op::Slice {
            starts,
            ends,
            steps,
        } => Some((starts.clone(), ends.clone(), steps.clone())),
        _ => None,
    }
}

/// Adds `slice(x)` with output `shape`, or returns `x` when the slice takes all of it;
/// `None` when the slice of `x` does not have that shape.
fn make_slice(
    p: &mut Patch,
    g: &Graph,
    x: Operand,
    spec: SliceSpec,
    shape: Vec<usize>,
) -> Option<Operand> {
    let full = {
        let in_shape = p.shape(g, x);
        in_shape == shape.as_slice() && spec.0.iter().all(|&s| s == 0)
    };
    if full {
        return Some(x);
    }
    let (starts, ends, steps) = spec;
    let slice = p.node(
        g,
        Op::Slice {
            starts,
            ends,
            steps,
        },
        vec![x],
    )?;
    (p.shape(g, slice) == shape.as_slice()).then_some(slice)
}

// ---------------------------------------------------------------------------------------
// Identity: ops that do nothing, pairs that cancel, pairs that compose
// ---------------------------------------------------------------------------------------

/// `x * 1 -> x`
pub fn identity_mul_one(g: &Graph, n: usize) -> Option<Patch> {
    match root_un(g, n)? {
        (UnaryOp::MulScalar(1.0), x) => Some(Patch::alias(x)),
        _ => None,
    }
}

/// `x / 1 -> x`
pub fn identity_div_one(g: &Graph, n: usize) -> Option<Patch> {
    match root_un(g, n)? {
        (UnaryOp::DivScalar(1.0), x) => Some(Patch::alias(x)),
        _ => None,
    }
}

/// `x + 0 -> x`
pub fn identity_add_zero(g: &Graph, n: usize) -> Option<Patch> {
    match root_un(g, n)? {
        (UnaryOp::AddScalar(0.0), x) => Some(Patch::alias(x)),
        _ => None,
    }
}

/// `x - 0 -> x`
pub fn identity_sub_zero(g: &Graph, n: usize) -> Option<Patch> {
    match root_un(g, n)? {
        (UnaryOp::SubScalar(0.0), x) => Some(Patch::alias(x)),
        _ => None,
    }
}

/// `pow(x, 1) -> x`
pub fn identity_pow_one(g: &Graph, n: usize) -> Option<Patch> {
    match root_un(g, n)? {
        (UnaryOp::PowScalar(1.0), x) => Some(Patch::alias(x)),
        _ => None,
    }
}

/// `leaky_relu(x, 1) -> x`
pub fn identity_leaky_relu_one(g: &Graph, n: usize) -> Option<Patch> {
    match root_un(g, n)? {
        (UnaryOp::LeakyRelu(1.0), x) => Some(Patch::alias(x)),
        _ => None,
    }
}

/// `clip(x, -inf, inf) -> x`
pub fn identity_clip_unbounded(g: &Graph, n: usize) -> Option<Patch> {
    match root_un(g, n)? {
        (UnaryOp::Clip { min, max }, x) if min == f32::NEG_INFINITY && max == f32::INFINITY => {
            Some(Patch::alias(x))
        }
        _ => None,
    }
}

/// `-(-x) -> x`
pub fn identity_neg_neg(g: &Graph, n: usize) -> Option<Patch> {
    let x = un_of(g, un_of(g, at(g, n)?.output, UnaryOp::Neg)?, UnaryOp::Neg)?;
    Some(Patch::alias(x))
}

/// `abs(abs(x)) -> abs(x)`
pub fn identity_abs_abs(g: &Graph, n: usize) -> Option<Patch> {
    let inner = un_of(g, at(g, n)?.output, UnaryOp::Abs)?;
    un_of(g, inner, UnaryOp::Abs)?;
    Some(Patch::alias(inner))
}

/// `relu(relu(x)) -> relu(x)`
pub fn identity_relu_relu(g: &Graph, n: usize) -> Option<Patch> {
    let inner = un_of(g, at(g, n)?.output, UnaryOp::Relu)?;
    un_of(g, inner, UnaryOp::Relu)?;
    Some(Patch::alias(inner))
}

/// `1 / (1 / x) -> x`
pub fn identity_recip_recip(g: &Graph, n: usize) -> Option<Patch> {
    let x = un_of(
        g,
        un_of(g, at(g, n)?.output, UnaryOp::Recip)?,
        UnaryOp::Recip,
    )?;
    Some(Patch::alias(x))
}

/// `abs(-x) -> abs(x)`
pub fn identity_abs_of_neg(g: &Graph, n: usize) -> Option<Patch> {
    let x = un_of(g, un_of(g, at(g, n)?.output, UnaryOp::Abs)?, UnaryOp::Neg)?;
    let mut p = Patch::default();
    let r = p.unary(g, UnaryOp::Abs, Old(x));
    p.done(r)
}

/// `abs(y) -> y` when `y >= 0` by construction (relu, exp, square, sigmoid, ...)
pub fn identity_abs_of_nonneg(g: &Graph, n: usize) -> Option<Patch> {
    let y = un_of(g, at(g, n)?.output, UnaryOp::Abs)?;
    nonneg(g, y, 8).then(|| Patch::alias(y))
}

/// `relu(y) -> y` when `y >= 0` by construction
pub fn identity_relu_of_nonneg(g: &Graph, n: usize) -> Option<Patch> {
    let y = un_of(g, at(g, n)?.output, UnaryOp::Relu)?;
    nonneg(g, y, 8).then(|| Patch::alias(y))
}

/// `square(-x) -> square(x)`, `square(abs(x)) -> square(x)`
pub fn identity_square_of_neg(g: &Graph, n: usize) -> Option<Patch> {
    let y = un_of(g, at(g, n)?.output, UnaryOp::Square)?;
    let (u, x) = un(g, y)?;
    if !matches!(u, UnaryOp::Neg | UnaryOp::Abs) {
        return None;
    }
    let mut p = Patch::default();
    let r = p.unary(g, UnaryOp::Square, Old(x));
    p.done(r)
}

/// `floor(y) -> y` (also ceil, round) when `y` is already a whole number (floor, ceil or round)
pub fn identity_rounding_of_integral(g: &Graph, n: usize) -> Option<Patch> {
    let rounding = |u: UnaryOp| matches!(u, UnaryOp::Floor | UnaryOp::Ceil | UnaryOp::Round);
    let (u, y) = root_un(g, n)?;
    let (inner, _) = un(g, y)?;
    (rounding(u) && rounding(inner)).then(|| Patch::alias(y))
}

/// `maximum(x, x) -> x`
pub fn identity_max_self(g: &Graph, n: usize) -> Option<Patch> {
    match root_bin(g, n)? {
        (BinaryOp::Max, a, b) if a == b => Some(Patch::alias(a)),
        _ => None,
    }
}

/// `minimum(x, x) -> x`
pub fn identity_min_self(g: &Graph, n: usize) -> Option<Patch> {
    match root_bin(g, n)? {
        (BinaryOp::Min, a, b) if a == b => Some(Patch::alias(a)),
        _ => None,
    }
}

/// `where(c, a, a) -> a`
pub fn identity_where_same(g: &Graph, n: usize) -> Option<Patch> {
    let node = at(g, n)?;
    match (&node.op, node.inputs.as_slice()) {
        (Op::Where, [_, a, b]) if a == b => Some(Patch::alias(*a)),
        _ => None,
    }
}

/// `reshape(x)` to its own shape `-> x`
pub fn identity_reshape_noop(g: &Graph, n: usize) -> Option<Patch> {
    let (node, x) = root_single(g, n)?;
    (matches!(node.op, Op::Reshape(_)) && g.shape(x) == g.shape(node.output))
        .then(|| Patch::alias(x))
}

/// `reshape(reshape(x))` back to the shape of `x` `-> x` (`squeeze(unsqueeze(x))`, ...)
pub fn identity_reshape_pair_cancel(g: &Graph, n: usize) -> Option<Patch> {
    let (node, y) = root_single(g, n)?;
    let inner = def(g, y)?;
    let (Op::Reshape(_), Op::Reshape(_), [x]) = (&node.op, &inner.op, inner.inputs.as_slice())
    else {
        return None;
    };
    (g.shape(*x) == g.shape(node.output)).then(|| Patch::alias(*x))
}

/// `reshape(reshape(x)) -> reshape(x)`
pub fn identity_reshape_reshape(g: &Graph, n: usize) -> Option<Patch> {
    let (node, y) = root_single(g, n)?;
    let inner = def(g, y)?;
    let (Op::Reshape(kind), Op::Reshape(_), [x]) = (&node.op, &inner.op, inner.inputs.as_slice())
    else {
        return None;
    };
    if g.shape(*x) == g.shape(node.output) {
        return None;
    }
    let mut p = Patch::default();
    let r = p.node_shaped(g, Op::Reshape(*kind), vec![Old(*x)], out_shape(g, n))?;
    p.done(r)
}

fn perm_of(n: &Node) -> Option<&[usize]> {
    match &n.op {
        Op::Transpose { perm } => Some(perm),
        _ => None,
    }
}

fn is_identity(perm: &[usize]) -> bool {
    perm.iter().enumerate().all(|(i, &p)| i == p)
}

/// `transpose(x)` with the identity permutation `-> x`
pub fn identity_transpose_noop(g: &Graph, n: usize) -> Option<Patch> {
    let (node, x) = root_single(g, n)?;
    is_identity(perm_of(node)?).then(|| Patch::alias(x))
}

/// The permutation of `outer(inner(x))`: output axis `i` reads axis `inner[outer[i]]` of `x`.
fn compose(outer: &[usize], inner: &[usize]) -> Option<Vec<usize>> {
    outer.iter().map(|&o| inner.get(o).copied()).collect()
}

/// `transpose(transpose(x))` that restores `x` `-> x`
pub fn identity_transpose_pair_cancel(g: &Graph, n: usize) -> Option<Patch> {
    let (node, y) = root_single(g, n)?;
    let inner = def(g, y)?;
    let (outer, inner_perm, [x]) = (perm_of(node)?, perm_of(inner)?, inner.inputs.as_slice())
    else {
        return None;
    };
    is_identity(&compose(outer, inner_perm)?).then(|| Patch::alias(*x))
}

/// `transpose(transpose(x)) -> transpose(x)` with the composed permutation
pub fn identity_transpose_transpose(g: &Graph, n: usize) -> Option<Patch> {
    let (node, y) = root_single(g, n)?;
    let inner = def(g, y)?;
    let (outer, inner_perm, [x]) = (perm_of(node)?, perm_of(inner)?, inner.inputs.as_slice())
    else {
        return None;
    };
    let perm = compose(outer, inner_perm)?;
    if is_identity(&perm) {
        return None;
    }
    let mut p = Patch::default();
    let r = p.node(g, Op::Transpose { perm }, vec![Old(*x)])?;
    p.done(r)
}

/// `transpose(x)` that only moves length-1 axes `-> reshape(x)` (no data moves)
pub fn identity_transpose_to_reshape(g: &Graph, n: usize) -> Option<Patch> {
    let (node, x) = root_single(g, n)?;
    let perm = perm_of(node)?;
    if is_identity(perm) {
        return None;
    }
    let shape = g.shape(x);
    let moved: Vec<usize> = perm
        .iter()
        .copied()
        .filter(|&a| shape.get(a).copied().unwrap_or(1) != 1)
        .collect();
    if !moved.windows(2).all(|w| matches!(w, [a, b] if a < b)) {
        return None;
    }
    let mut p = Patch::default();
    let r = p.node_shaped(
        g,
        Op::Reshape(ReshapeKind::Reshape),
        vec![Old(x)],
        out_shape(g, n),
    )?;
    p.done(r)
}

/// `slice(x)` that takes all of `x` `-> x`
pub fn identity_slice_full(g: &Graph, n: usize) -> Option<Patch> {
    let (node, x) = root_single(g, n)?;
    let (starts, _, _) = slice_of(node)?;
    (g.shape(x) == g.shape(node.output) && starts.iter().all(|&s| s == 0)).then(|| Patch::alias(x))
}

/// `slice(slice(x)) -> slice(x)`
pub fn identity_slice_slice(g: &Graph, n: usize) -> Option<Patch> {
    let (node, y) = root_single(g, n)?;
    let inner = def(g, y)?;
    let [x] = inner.inputs.as_slice() else {
        return None;
    };
    let (s2, _, st2) = slice_of(node)?;
    let (s1, _, st1) = slice_of(inner)?;
    let out = out_shape(g, n);
    let mut spec: SliceSpec = (Vec::new(), Vec::new(), Vec::new());
    for (axis, &len) in out.iter().enumerate() {
        let (a, b, c, d) = (s1.get(axis)?, st1.get(axis)?, s2.get(axis)?, st2.get(axis)?);
        let start = a.checked_add(c.checked_mul(*b)?)?;
        let step = b.checked_mul(*d)?;
        let end = start
            .checked_add(len.checked_sub(1)?.checked_mul(step)?)?
            .checked_add(1)?;
        spec.0.push(start);
        spec.1.push(end);
        spec.2.push(step);
    }
    let mut p = Patch::default();
    let r = make_slice(&mut p, g, Old(*x), spec, out)?;
    p.done(r)
}

/// `slice(concat(a, b, ...))` inside one operand `-> slice(that operand)`
pub fn identity_slice_of_concat(g: &Graph, n: usize) -> Option<Patch> {
    let (node, y) = root_single(g, n)?;
    let (mut starts, mut ends, steps) = slice_of(node)?;
    let cat = def(g, y)?;
    let Op::Concat { axis } = cat.op else {
        return None;
    };
    let out = out_shape(g, n);
    let first = *starts.get(axis)?;
    let last = first + out.get(axis)?.checked_sub(1)? * steps.get(axis)?;
    let mut offset = 0;
    for &part in &cat.inputs {
        let len = *g.shape(part).get(axis)?;
        if first >= offset && last < offset + len {
            *starts.get_mut(axis)? -= offset;
            *ends.get_mut(axis)? = last - offset + 1;
            let mut p = Patch::default();
            let r = make_slice(&mut p, g, Old(part), (starts, ends, steps), out)?;
            return p.done(r);
        }
        offset += len;
    }
    None
}

/// `concat(slice(x, a..b), slice(x, b..c))` along the sliced axis `-> slice(x, a..c)`
pub fn identity_concat_adjacent_slices(g: &Graph, n: usize) -> Option<Patch> {
    let node = at(g, n)?;
    let Op::Concat { axis } = node.op else {
        return None;
    };
    if node.inputs.len() < 2 {
        return None;
    }
    let mut source = None;
    let mut spec: Option<SliceSpec> = None;
    let mut next = 0;
    for &part in &node.inputs {
        let s = def(g, part)?;
        let [x] = s.inputs.as_slice() else {
            return None;
        };
        let (starts, ends, steps) = slice_of(s)?;
        let len = *g.shape(part).get(axis)?;
        if *steps.get(axis)? != 1 || source.is_some_and(|src| src != *x) {
            return None;
        }
        match &mut spec {
            None => {
                next = starts.get(axis)? + len;
                spec = Some((starts, ends, steps));
                source = Some(*x);
            }
            Some((s0, e0, st0)) => {
                let same_elsewhere = (0..s0.len()).filter(|&a| a != axis).all(|a| {
                    s0.get(a) == starts.get(a)
                        && e0.get(a) == ends.get(a)
                        && st0.get(a) == steps.get(a)
                });
                if !same_elsewhere || *starts.get(axis)? != next {
                    return None;
                }
                next += len;
                *e0.get_mut(axis)? = next;
            }
        }
    }
    let mut p = Patch::default();
    let r = make_slice(&mut p, g, Old(source?), spec?, out_shape(g, n))?;
    p.done(r)
}

/// `concat(x) -> x`
pub fn identity_concat_single(g: &Graph, n: usize) -> Option<Patch> {
    let node = at(g, n)?;
    match (&node.op, node.inputs.as_slice()) {
        (Op::Concat { .. }, [x]) => Some(Patch::alias(*x)),
        _ => None,
    }
}

/// `concat(a, concat(b, c), d) -> concat(a, b, c, d)` along one axis
pub fn identity_concat_of_concat(g: &Graph, n: usize) -> Option<Patch> {
    let node = at(g, n)?;
    let Op::Concat { axis } = node.op else {
        return None;
    };
    let mut flat = Vec::new();
    let mut changed = false;
    for &part in &node.inputs {
        match def(g, part) {
            Some(inner) if inner.op == (Op::Concat { axis }) => {
                flat.extend(inner.inputs.iter().map(|&v| Old(v)));
                changed = true;
            }
            _ => flat.push(Old(part)),
        }
    }
    if !changed {
        return None;
    }
    let mut p = Patch::default();
    let r = p.node(g, Op::Concat { axis }, flat)?;
    p.done(r)
}

/// `expand(x)` to its own shape `-> x`
pub fn identity_expand_noop(g: &Graph, n: usize) -> Option<Patch> {
    let (node, x) = root_single(g, n)?;
    (node.op == Op::Expand && g.shape(x) == g.shape(node.output)).then(|| Patch::alias(x))
}

/// `pad(x)` by zero everywhere `-> x`
pub fn identity_pad_zero(g: &Graph, n: usize) -> Option<Patch> {
    let (node, x) = root_single(g, n)?;
    let Op::Pad { pads, .. } = &node.op else {
        return None;
    };
    pads.iter()
        .all(|&(a, b)| a == 0 && b == 0)
        .then(|| Patch::alias(x))
}

/// `reduce_*(x)` over length-1 axes only `-> x` (reshaped when the axes are dropped)
pub fn identity_reduce_unit_axes(g: &Graph, n: usize) -> Option<Patch> {
    let (node, x) = root_single(g, n)?;
    // an L1 or L2 norm, a sum of squares or a log of one element is not the element
    let Op::Reduce { kind, axes, .. } = &node.op else {
        return None;
    };
    if !kind.facts().of_one_is_element {
        return None;
    }
    let shape = g.shape(x);
    if !axes.iter().all(|&a| shape.get(a) == Some(&1)) {
        return None;
    }
    if shape == g.shape(node.output) {
        return Some(Patch::alias(x));
    }
    let mut p = Patch::default();
    let r = p.node_shaped(
        g,
        Op::Reshape(ReshapeKind::Squeeze),
        vec![Old(x)],
        out_shape(g, n),
    )?;
    p.done(r)
}

/// `max_pool2d(x, 1)` / `avg_pool2d(x, 1)` (stride 1, no padding) `-> x`
pub fn identity_pool_unit_window(g: &Graph, n: usize) -> Option<Patch> {
    let (node, x) = root_single(g, n)?;
    let (Op::MaxPool2d(p) | Op::AvgPool2d(p)) = &node.op else {
        return None;
    };
    (p.kernel == [1, 1]
        && p.stride == [1, 1]
        && p.padding == [0; 4]
        && g.shape(x) == g.shape(node.output))
    .then(|| Patch::alias(x))
}

/// `global_*_pool2d(x)` of a 1x1 image `-> x`
pub fn identity_global_pool_unit(g: &Graph, n: usize) -> Option<Patch> {
    let (node, x) = root_single(g, n)?;
    (matches!(node.op, Op::GlobalAvgPool | Op::GlobalMaxPool) && g.shape(x) == g.shape(node.output))
        .then(|| Patch::alias(x))
}

/// `resize(x)` (nearest) to its own size `-> x`
pub fn identity_resize_same(g: &Graph, n: usize) -> Option<Patch> {
    let (node, x) = root_single(g, n)?;
    (node.op == Op::Resize(ResizeMode::Nearest) && g.shape(x) == g.shape(node.output))
        .then(|| Patch::alias(x))
}

/// `cumsum(x)` (any inclusive scan) along a length-1 axis `-> x`
pub fn identity_scan_unit_axis(g: &Graph, n: usize) -> Option<Patch> {
    let (node, x) = root_single(g, n)?;
    let Op::Scan {
        axis,
        exclusive: false,
        ..
    } = node.op
    else {
        return None;
    };
    (g.shape(x).get(axis) == Some(&1)).then(|| Patch::alias(x))
}

// ---------------------------------------------------------------------------------------
// CSE
// ---------------------------------------------------------------------------------------

/// How far back CSE looks for an equal node (keeps a round linear in the graph size).
const CSE_WINDOW: usize = 1024;

/// The earlier nodes that may equal node `n`: after the producers of its operands, at most
/// [`CSE_WINDOW`] back.
fn earlier(g: &Graph, n: usize) -> impl Iterator<Item = &Node> {
    let node = g.nodes.get(n);
    let after = node
        .into_iter()
        .flat_map(|node| node.inputs.iter())
        .filter_map(|&v| match g.values.get(v).map(|v| &v.kind) {
            Some(ValueKind::Node(p)) => Some(p + 1),
            _ => None,
        })
        .max()
        .unwrap_or(0)
        .max(n.saturating_sub(CSE_WINDOW));
    g.nodes.get(after..n).unwrap_or(&[]).iter()
}

/// A node equal to an earlier one (same op, same operands, same shape) `->` the earlier one
pub fn cse_identical(g: &Graph, n: usize) -> Option<Patch> {
    let node = at(g, n)?;
    let shape = g.shape(node.output);
    earlier(g, n)
        .find(|m| m.inputs == node.inputs && m.op == node.op && g.shape(m.output) == shape)
        .map(|m| Patch::alias(m.output))
}

/// `b + a` after `a + b` (also `*`, `maximum`, `minimum`) `->` the earlier one
pub fn cse_commuted(g: &Graph, n: usize) -> Option<Patch> {
    let (op, a, b) = root_bin(g, n)?;
    if !matches!(
        op,
        BinaryOp::Add | BinaryOp::Mul | BinaryOp::Max | BinaryOp::Min
    ) || a == b
    {
        return None;
    }
    earlier(g, n)
        .find(|m| m.op == Op::Binary(op) && m.inputs == [b, a])
        .map(|m| Patch::alias(m.output))
}

// ---------------------------------------------------------------------------------------
// Folding: chains of scalar constants
// ---------------------------------------------------------------------------------------

/// `(x * a) * b -> x * (a * b)`
pub fn folding_mul_mul(g: &Graph, n: usize) -> Option<Patch> {
    let (UnaryOp::MulScalar(b), y) = root_un(g, n)? else {
        return None;
    };
    let (UnaryOp::MulScalar(a), x) = un(g, y)? else {
        return None;
    };
    let c = normal(f64::from(a) * f64::from(b))?;
    let mut p = Patch::default();
    let r = p.unary(g, UnaryOp::MulScalar(c), Old(x));
    p.done(r)
}

/// `(x / a) / b -> x / (a * b)`
pub fn folding_div_div(g: &Graph, n: usize) -> Option<Patch> {
    let (UnaryOp::DivScalar(b), y) = root_un(g, n)? else {
        return None;
    };
    let (UnaryOp::DivScalar(a), x) = un(g, y)? else {
        return None;
    };
    let c = normal(f64::from(a) * f64::from(b))?;
    let mut p = Patch::default();
    let r = p.unary(g, UnaryOp::DivScalar(c), Old(x));
    p.done(r)
}

/// `(x * a) / b -> x * (a / b)`
pub fn folding_mul_div(g: &Graph, n: usize) -> Option<Patch> {
    let (UnaryOp::DivScalar(b), y) = root_un(g, n)? else {
        return None;
    };
    let (UnaryOp::MulScalar(a), x) = un(g, y)? else {
        return None;
    };
    let c = normal(f64::from(a) / f64::from(b))?;
    let mut p = Patch::default();
    let r = p.unary(g, UnaryOp::MulScalar(c), Old(x));
    p.done(r)
}

/// `(x / a) * b -> x * (b / a)`
pub fn folding_div_mul(g: &Graph, n: usize) -> Option<Patch> {
    let (UnaryOp::MulScalar(b), y) = root_un(g, n)? else {
        return None;
    };
    let (UnaryOp::DivScalar(a), x) = un(g, y)? else {
        return None;
    };
    let c = normal(f64::from(b) / f64::from(a))?;
    let mut p = Patch::default();
    let r = p.unary(g, UnaryOp::MulScalar(c), Old(x));
    p.done(r)
}

/// `-(x * c) -> x * -c`, `-(x / c) -> x / -c`
pub fn folding_neg_of_scale(g: &Graph, n: usize) -> Option<Patch> {
    let y = un_of(g, at(g, n)?.output, UnaryOp::Neg)?;
    let folded = match un(g, y)? {
        (UnaryOp::MulScalar(c), x) => (UnaryOp::MulScalar(-c), x),
        (UnaryOp::DivScalar(c), x) => (UnaryOp::DivScalar(-c), x),
        _ => return None,
    };
    let mut p = Patch::default();
    let r = p.unary(g, folded.0, Old(folded.1));
    p.done(r)
}

/// `(-x) * c -> x * -c`, `(-x) / c -> x / -c`
pub fn folding_scale_of_neg(g: &Graph, n: usize) -> Option<Patch> {
    let (u, y) = root_un(g, n)?;
    let x = un_of(g, y, UnaryOp::Neg)?;
    let folded = match u {
        UnaryOp::MulScalar(c) => UnaryOp::MulScalar(-c),
        UnaryOp::DivScalar(c) => UnaryOp::DivScalar(-c),
        UnaryOp::ScalarDiv(c) => UnaryOp::ScalarDiv(-c),
        _ => return None,
    };
    let mut p = Patch::default();
    let r = p.unary(g, folded, Old(x));
    p.done(r)
}

/// `-(x + c) -> (-c) - x`, `-(x - c) -> c - x`, `-(c - x) -> x - c`
pub fn folding_neg_of_shift(g: &Graph, n: usize) -> Option<Patch> {
    let y = un_of(g, at(g, n)?.output, UnaryOp::Neg)?;
    let (u, x) = match un(g, y)? {
        (UnaryOp::AddScalar(c), x) => (UnaryOp::ScalarSub(-c), x),
        (UnaryOp::SubScalar(c), x) => (UnaryOp::ScalarSub(c), x),
        (UnaryOp::ScalarSub(c), x) => (UnaryOp::SubScalar(c), x),
        _ => return None,
    };
    let mut p = Patch::default();
    let r = p.unary(g, u, Old(x));
    p.done(r)
}

/// `(-x) + c -> c - x`, `(-x) - c -> (-c) - x`, `c - (-x) -> x + c`
pub fn folding_shift_of_neg(g: &Graph, n: usize) -> Option<Patch> {
    let (u, y) = root_un(g, n)?;
    let x = un_of(g, y, UnaryOp::Neg)?;
    let folded = match u {
        UnaryOp::AddScalar(c) => UnaryOp::ScalarSub(c),
        UnaryOp::SubScalar(c) => UnaryOp::ScalarSub(-c),
        UnaryOp::ScalarSub(c) => UnaryOp::AddScalar(c),
        _ => return None,
    };
    let mut p = Patch::default();
    let r = p.unary(g, folded, Old(x));
    p.done(r)
}

/// `s * x + c` with `s = 1` or `-1`, for the shift ops.
fn shift(u: UnaryOp) -> Option<(f64, f64)> {
    match u {
        UnaryOp::AddScalar(c) => Some((1.0, f64::from(c))),
        UnaryOp::SubScalar(c) => Some((1.0, -f64::from(c))),
        UnaryOp::ScalarSub(c) => Some((-1.0, f64::from(c))),
        _ => None,
    }
}

/// The op `s * x + c` for `s = 1` or `-1`.
fn shift_op(s: f64, c: f64) -> Option<UnaryOp> {
    let k = c as f32;
    if !k.is_finite() {
        return None;
    }
    Some(if s > 0.0 {
        UnaryOp::AddScalar(k)
    } else {
        UnaryOp::ScalarSub(k)
    })
}

/// `(x + a) + b -> x + (a + b)` (any mix of `x + c`, `x - c`, `c - x`)
pub fn folding_shift_shift(g: &Graph, n: usize) -> Option<Patch> {
    let (outer, y) = root_un(g, n)?;
    let (inner, x) = un(g, y)?;
    let ((s2, c2), (s1, c1)) = (shift(outer)?, shift(inner)?);
    let u = shift_op(s1 * s2, s2 * c1 + c2)?;
    let mut p = Patch::default();
    let r = p.unary(g, u, Old(x));
    p.done(r)
}

/// `m * x + c` for the scalar affine ops.
fn affine(u: UnaryOp) -> Option<(f64, f64)> {
    match u {
        UnaryOp::MulScalar(c) => Some((f64::from(c), 0.0)),
        UnaryOp::DivScalar(c) if c != 0.0 => Some((1.0 / f64::from(c), 0.0)),
        UnaryOp::Neg => Some((-1.0, 0.0)),
        _ => shift(u),
    }
}

/// `((x * a + b) * c + d) ...` (three or more scalar affine ops) `-> x * m + k`
pub fn folding_affine_chain(g: &Graph, n: usize) -> Option<Patch> {
    let (mut m, mut k) = (1.0f64, 0.0f64);
    let mut v = at(g, n)?.output;
    let mut length = 0;
    while let Some((u, x)) = un(g, v) {
        let Some((a, b)) = affine(u) else { break };
        // f(x) = m * (a * x + b) + k
        k += m * b;
        m *= a;
        v = x;
        length += 1;
        if length == 16 {
            break;
        }
    }
    if length < 3 {
        return None;
    }
    let (mf, kf) = (m as f32, k as f32);
    if !(mf.is_normal() && kf.is_finite()) {
        return None;
    }
    let mut p = Patch::default();
    let scaled = if mf == 1.0 {
        Old(v)
    } else {
        p.unary(g, UnaryOp::MulScalar(mf), Old(v))
    };
    let r = if kf == 0.0 {
        scaled
    } else {
        p.unary(g, UnaryOp::AddScalar(kf), scaled)
    };
    p.done(r)
}

/// `[lo, hi]` of a clamp: relu, relu6, clip.
fn clamp(u: UnaryOp) -> Option<(f32, f32)> {
    match u {
        UnaryOp::Relu => Some((0.0, f32::INFINITY)),
        UnaryOp::Relu6 => Some((0.0, 6.0)),
        UnaryOp::Clip { min, max } if min <= max => Some((min, max)),
        _ => None,
    }
}

/// `clip(clip(x, a, b), c, d) -> clip(x, max(a, c), min(b, d))` (relu and relu6 are clips)
pub fn folding_clamp_clamp(g: &Graph, n: usize) -> Option<Patch> {
    let (outer, y) = root_un(g, n)?;
    let (inner, x) = un(g, y)?;
    let ((lo2, hi2), (lo1, hi1)) = (clamp(outer)?, clamp(inner)?);
    let (lo, hi) = (lo1.max(lo2), hi1.min(hi2));
    if lo > hi {
        return None;
    }
    let u = match (lo, hi) {
        (l, h) if l == 0.0 && h == f32::INFINITY => UnaryOp::Relu,
        (l, h) if l == 0.0 && h == 6.0 => UnaryOp::Relu6,
        _ => UnaryOp::Clip { min: lo, max: hi },
    };
    let mut p = Patch::default();
    let r = p.unary(g, u, Old(x));
    p.done(r)
}

/// `leaky_relu(leaky_relu(x, a), b) -> leaky_relu(x, a * b)` for `a, b > 0`
pub fn folding_leaky_relu_chain(g: &Graph, n: usize) -> Option<Patch> {
    let (UnaryOp::LeakyRelu(b), y) = root_un(g, n)? else {
        return None;
    };
    let (UnaryOp::LeakyRelu(a), x) = un(g, y)? else {
        return None;
    };
    if !(a > 0.0 && b > 0.0) {
        return None;
    }
    let c = normal(f64::from(a) * f64::from(b))?;
    let mut p = Patch::default();
    let r = p.unary(g, UnaryOp::LeakyRelu(c), Old(x));
    p.done(r)
}

/// `pow(pow(x, a), b) -> pow(x, a * b)` for whole `a`, `b` with `|a * b| <= 64`
pub fn folding_pow_pow_integer(g: &Graph, n: usize) -> Option<Patch> {
    let (UnaryOp::PowScalar(b), y) = root_un(g, n)? else {
        return None;
    };
    let (UnaryOp::PowScalar(a), x) = un(g, y)? else {
        return None;
    };
    let e = small_integer(a)?.checked_mul(small_integer(b)?)?;
    if e.abs() > 64 {
        return None;
    }
    let mut p = Patch::default();
    let r = p.unary(g, UnaryOp::PowScalar(e as f32), Old(x));
    p.done(r)
}

/// `c / (x * a) -> (c / a) / x`, `c / (x / a) -> (c * a) / x`, `(c / x) * a -> (c * a) / x`,
/// `(c / x) / a -> (c / a) / x`, `c / (-x) -> (-c) / x`, `-(c / x) -> (-c) / x`
pub fn folding_scalar_div_scale(g: &Graph, n: usize) -> Option<Patch> {
    let (outer, y) = root_un(g, n)?;
    let (inner, x) = un(g, y)?;
    let c = match (outer, inner) {
        (UnaryOp::ScalarDiv(c), UnaryOp::MulScalar(a)) => f64::from(c) / f64::from(a),
        (UnaryOp::ScalarDiv(c), UnaryOp::DivScalar(a)) => f64::from(c) * f64::from(a),
        (UnaryOp::ScalarDiv(c), UnaryOp::Neg) => -f64::from(c),
        (UnaryOp::MulScalar(a), UnaryOp::ScalarDiv(c)) => f64::from(c) * f64::from(a),
        (UnaryOp::DivScalar(a), UnaryOp::ScalarDiv(c)) => f64::from(c) / f64::from(a),
        (UnaryOp::Neg, UnaryOp::ScalarDiv(c)) => -f64::from(c),
        _ => return None,
    };
    let c = normal(c)?;
    let mut p = Patch::default();
    let r = p.unary(g, UnaryOp::ScalarDiv(c), Old(x));
    p.done(r)
}

// ---------------------------------------------------------------------------------------
// Strength reduction: cheaper ops for the same value
// ---------------------------------------------------------------------------------------

/// `x / 2^k -> x * 2^-k` (bit for bit)
pub fn strength_div_pow2(g: &Graph, n: usize) -> Option<Patch> {
    let (UnaryOp::DivScalar(c), x) = root_un(g, n)? else {
        return None;
    };
    if !power_of_two(c) {
        return None;
    }
    let k = normal(1.0 / f64::from(c))?;
    let mut p = Patch::default();
    let r = p.unary(g, UnaryOp::MulScalar(k), Old(x));
    p.done(r)
}

/// `x / c -> x * (1 / c)` (one more rounding: within 1.5 ulp)
pub fn strength_div_to_mul(g: &Graph, n: usize) -> Option<Patch> {
    let (UnaryOp::DivScalar(c), x) = root_un(g, n)? else {
        return None;
    };
    if power_of_two(c) || !c.is_normal() {
        return None;
    }
    let k = normal(1.0 / f64::from(c))?;
    let mut p = Patch::default();
    let r = p.unary(g, UnaryOp::MulScalar(k), Old(x));
    p.done(r)
}

fn pow_scalar(g: &Graph, n: usize, e: f32) -> Option<ValueId> {
    match root_un(g, n)? {
        (UnaryOp::PowScalar(c), x) if c == e => Some(x),
        _ => None,
    }
}

/// `pow(x, 2) -> square(x)` (`x * x`)
pub fn strength_pow_two(g: &Graph, n: usize) -> Option<Patch> {
    let x = pow_scalar(g, n, 2.0)?;
    let mut p = Patch::default();
    let r = p.unary(g, UnaryOp::Square, Old(x));
    p.done(r)
}

/// `pow(x, 3) -> x * square(x)`
pub fn strength_pow_three(g: &Graph, n: usize) -> Option<Patch> {
    let x = pow_scalar(g, n, 3.0)?;
    let mut p = Patch::default();
    let s = p.unary(g, UnaryOp::Square, Old(x));
    let r = p.binary(g, BinaryOp::Mul, Old(x), s)?;
    p.done(r)
}

/// `pow(x, 0.5) -> sqrt(x)`
pub fn strength_pow_half(g: &Graph, n: usize) -> Option<Patch> {
    let x = pow_scalar(g, n, 0.5)?;
    let mut p = Patch::default();
    let r = p.unary(g, UnaryOp::Sqrt, Old(x));
    p.done(r)
}

/// `pow(x, -1) -> reciprocal(x)`
pub fn strength_pow_neg_one(g: &Graph, n: usize) -> Option<Patch> {
    let x = pow_scalar(g, n, -1.0)?;
    let mut p = Patch::default();
    let r = p.unary(g, UnaryOp::Recip, Old(x));
    p.done(r)
}

/// `pow(x, -2) -> reciprocal(square(x))`
pub fn strength_pow_neg_two(g: &Graph, n: usize) -> Option<Patch> {
    let x = pow_scalar(g, n, -2.0)?;
    let mut p = Patch::default();
    let s = p.unary(g, UnaryOp::Square, Old(x));
    let r = p.unary(g, UnaryOp::Recip, s);
    p.done(r)
}

/// `pow(x, -0.5) -> rsqrt(x)` (value-changing: `pow(-0, -0.5)` is `+inf`, `rsqrt(-0)` is `-inf`)
pub fn strength_pow_neg_half(g: &Graph, n: usize) -> Option<Patch> {
    let x = pow_scalar(g, n, -0.5)?;
    let mut p = Patch::default();
    let r = p.unary(g, UnaryOp::Rsqrt, Old(x));
    p.done(r)
}

/// `x * x -> square(x)` (one load instead of two)
pub fn strength_mul_self_to_square(g: &Graph, n: usize) -> Option<Patch> {
    let (BinaryOp::Mul, a, b) = root_bin(g, n)? else {
        return None;
    };
    if a != b {
        return None;
    }
    let mut p = Patch::default();
    let r = p.unary(g, UnaryOp::Square, Old(a));
    p.done(r)
}

/// `x + x -> x * 2` (bit for bit)
pub fn strength_add_self_to_double(g: &Graph, n: usize) -> Option<Patch> {
    let (BinaryOp::Add, a, b) = root_bin(g, n)? else {
        return None;
    };
    if a != b {
        return None;
    }
    let mut p = Patch::default();
    let r = p.unary(g, UnaryOp::MulScalar(2.0), Old(a));
    p.done(r)
}

/// `sqrt(a) * sqrt(b)` with `a == b`: `x`.
fn sqrt_times_sqrt(g: &Graph, n: usize) -> Option<ValueId> {
    let (BinaryOp::Mul, a, b) = root_bin(g, n)? else {
        return None;
    };
    let (xa, xb) = (un_of(g, a, UnaryOp::Sqrt)?, un_of(g, b, UnaryOp::Sqrt)?);
    (xa == xb).then_some(xa)
}

/// `sqrt(x) * sqrt(x) -> x` when `x >= 0` by construction
pub fn strength_sqrt_times_sqrt_nonneg(g: &Graph, n: usize) -> Option<Patch> {
    let x = sqrt_times_sqrt(g, n)?;
    nonneg(g, x, 8).then(|| Patch::alias(x))
}

/// `sqrt(x) * sqrt(x) -> x` (value-changing: NaN becomes `x` for `x < 0`)
pub fn strength_sqrt_times_sqrt(g: &Graph, n: usize) -> Option<Patch> {
    sqrt_times_sqrt(g, n).map(Patch::alias)
}

/// `square(sqrt(x)) -> x` when `x >= 0` by construction
pub fn strength_square_of_sqrt_nonneg(g: &Graph, n: usize) -> Option<Patch> {
    let x = un_of(
        g,
        un_of(g, at(g, n)?.output, UnaryOp::Square)?,
        UnaryOp::Sqrt,
    )?;
    nonneg(g, x, 8).then(|| Patch::alias(x))
}

/// `square(sqrt(x)) -> x` (value-changing: NaN becomes `x` for `x < 0`)
pub fn strength_square_of_sqrt(g: &Graph, n: usize) -> Option<Patch> {
    let x = un_of(
        g,
        un_of(g, at(g, n)?.output, UnaryOp::Square)?,
        UnaryOp::Sqrt,
    )?;
    Some(Patch::alias(x))
}

/// `sqrt(square(x)) -> abs(x)`
pub fn strength_sqrt_of_square(g: &Graph, n: usize) -> Option<Patch> {
    let x = un_of(
        g,
        un_of(g, at(g, n)?.output, UnaryOp::Sqrt)?,
        UnaryOp::Square,
    )?;
    let mut p = Patch::default();
    let r = p.unary(g, UnaryOp::Abs, Old(x));
    p.done(r)
}

/// `f(a) op f(b) -> f(a op2 b)`: the operands of a binary root through the same unary.
fn through(g: &Graph, n: usize, op: BinaryOp, f: UnaryOp) -> Option<(ValueId, ValueId)> {
    let (a, b) = bin_of(g, at(g, n)?.output, op)?;
    Some((un_of(g, a, f)?, un_of(g, b, f)?))
}

fn wrap(g: &Graph, (a, b): (ValueId, ValueId), inner: BinaryOp, outer: UnaryOp) -> Option<Patch> {
    let mut p = Patch::default();
    let s = p.binary(g, inner, Old(a), Old(b))?;
    let r = p.unary(g, outer, s);
    p.done(r)
}

/// `exp(a) * exp(b) -> exp(a + b)` (value-changing: overflow and rounding of `a + b`)
pub fn strength_exp_times_exp(g: &Graph, n: usize) -> Option<Patch> {
    wrap(
        g,
        through(g, n, BinaryOp::Mul, UnaryOp::Exp)?,
        BinaryOp::Add,
        UnaryOp::Exp,
    )
}

/// `exp(a) / exp(b) -> exp(a - b)` (value-changing)
pub fn strength_exp_over_exp(g: &Graph, n: usize) -> Option<Patch> {
    wrap(
        g,
        through(g, n, BinaryOp::Div, UnaryOp::Exp)?,
        BinaryOp::Sub,
        UnaryOp::Exp,
    )
}

/// `log(a) + log(b) -> log(a * b)` (value-changing: `a * b` can overflow; negative pairs)
pub fn strength_log_plus_log(g: &Graph, n: usize) -> Option<Patch> {
    wrap(
        g,
        through(g, n, BinaryOp::Add, UnaryOp::Log)?,
        BinaryOp::Mul,
        UnaryOp::Log,
    )
}

/// `log(a) - log(b) -> log(a / b)` (value-changing)
pub fn strength_log_minus_log(g: &Graph, n: usize) -> Option<Patch> {
    wrap(
        g,
        through(g, n, BinaryOp::Sub, UnaryOp::Log)?,
        BinaryOp::Div,
        UnaryOp::Log,
    )
}

/// `log(exp(x)) -> x` (value-changing: `exp` overflows for `x > 88`)
pub fn strength_log_of_exp(g: &Graph, n: usize) -> Option<Patch> {
    let x = un_of(g, un_of(g, at(g, n)?.output, UnaryOp::Log)?, UnaryOp::Exp)?;
    Some(Patch::alias(x))
}

/// `exp(log(x)) -> x` (value-changing: NaN becomes `x` for `x < 0`)
pub fn strength_exp_of_log(g: &Graph, n: usize) -> Option<Patch> {
    let x = un_of(g, un_of(g, at(g, n)?.output, UnaryOp::Exp)?, UnaryOp::Log)?;
    Some(Patch::alias(x))
}

/// `1 / sqrt(x) -> rsqrt(x)`
pub fn strength_recip_of_sqrt(g: &Graph, n: usize) -> Option<Patch> {
    let (u, y) = root_un(g, n)?;
    if !(u == UnaryOp::Recip || u == UnaryOp::ScalarDiv(1.0)) {
        return None;
    }
    let x = un_of(g, y, UnaryOp::Sqrt)?;
    let mut p = Patch::default();
    let r = p.unary(g, UnaryOp::Rsqrt, Old(x));
    p.done(r)
}

/// `a / sqrt(b) -> a * rsqrt(b)`
pub fn strength_div_by_sqrt(g: &Graph, n: usize) -> Option<Patch> {
    let (BinaryOp::Div, a, s) = root_bin(g, n)? else {
        return None;
    };
    let b = un_of(g, s, UnaryOp::Sqrt)?;
    let mut p = Patch::default();
    let rs = p.unary(g, UnaryOp::Rsqrt, Old(b));
    let r = p.binary(g, BinaryOp::Mul, Old(a), rs)?;
    p.done(r)
}

/// `a * reciprocal(b) -> a / b`
pub fn strength_mul_by_recip(g: &Graph, n: usize) -> Option<Patch> {
    let (BinaryOp::Mul, x, y) = root_bin(g, n)? else {
        return None;
    };
    for (a, r) in orders(x, y) {
        if let Some(b) = un_of(g, r, UnaryOp::Recip) {
            let mut p = Patch::default();
            let q = p.binary(g, BinaryOp::Div, Old(a), Old(b))?;
            return p.done(q);
        }
    }
    None
}

/// `a / reciprocal(b) -> a * b`
pub fn strength_div_by_recip(g: &Graph, n: usize) -> Option<Patch> {
    let (BinaryOp::Div, a, r) = root_bin(g, n)? else {
        return None;
    };
    let b = un_of(g, r, UnaryOp::Recip)?;
    let mut p = Patch::default();
    let q = p.binary(g, BinaryOp::Mul, Old(a), Old(b))?;
    p.done(q)
}

/// `c / reciprocal(x) -> x * c`, `reciprocal(c / x) -> x / c`
pub fn strength_reciprocal_scalar_div(g: &Graph, n: usize) -> Option<Patch> {
    let (outer, y) = root_un(g, n)?;
    let (inner, x) = un(g, y)?;
    let u = match (outer, inner) {
        (UnaryOp::ScalarDiv(c), UnaryOp::Recip) => UnaryOp::MulScalar(c),
        (UnaryOp::Recip, UnaryOp::ScalarDiv(c)) if c != 0.0 => UnaryOp::DivScalar(c),
        _ => return None,
    };
    let mut p = Patch::default();
    let r = p.unary(g, u, Old(x));
    p.done(r)
}

/// `1 / (1 + exp(-x)) -> sigmoid(x)`
pub fn strength_sigmoid_pattern(g: &Graph, n: usize) -> Option<Patch> {
    let (u, y) = root_un(g, n)?;
    if !(u == UnaryOp::Recip || u == UnaryOp::ScalarDiv(1.0)) {
        return None;
    }
    let e = un_of(g, y, UnaryOp::AddScalar(1.0))?;
    let m = un_of(g, e, UnaryOp::Exp)?;
    let x = match un(g, m)? {
        (UnaryOp::Neg, x) => x,
        (UnaryOp::MulScalar(-1.0), x) => x,
        _ => return None,
    };
    let mut p = Patch::default();
    let r = p.unary(g, UnaryOp::Sigmoid, Old(x));
    p.done(r)
}

/// `x * sigmoid(x) -> silu(x)`
pub fn strength_silu_pattern(g: &Graph, n: usize) -> Option<Patch> {
    let (BinaryOp::Mul, a, b) = root_bin(g, n)? else {
        return None;
    };
    for (x, s) in orders(a, b) {
        if un_of(g, s, UnaryOp::Sigmoid) == Some(x) {
            let mut p = Patch::default();
            let r = p.unary(g, UnaryOp::Silu, Old(x));
            return p.done(r);
        }
    }
    None
}

/// The factors of a product of `Mul`s and scalar multiplies or divides rooted at `v`, at
/// most `depth` nodes deep, not looking inside `stop`: `(factors, their scalar)`.
fn product_factors(
    g: &Graph,
    v: ValueId,
    stop: Option<ValueId>,
    depth: usize,
) -> (Vec<ValueId>, f64) {
    if depth > 0 && Some(v) != stop {
        if let Some((a, b)) = bin_of(g, v, BinaryOp::Mul) {
            let (mut fa, sa) = product_factors(g, a, stop, depth - 1);
            let (fb, sb) = product_factors(g, b, stop, depth - 1);
            fa.extend(fb);
            return (fa, sa * sb);
        }
        match un(g, v) {
            Some((UnaryOp::MulScalar(c), x)) => {
                let (f, s) = product_factors(g, x, stop, depth - 1);
                return (f, s * f64::from(c));
            }
            Some((UnaryOp::DivScalar(c), x)) => {
                let (f, s) = product_factors(g, x, stop, depth - 1);
                return (f, s / f64::from(c));
            }
            _ => {}
        }
    }
    (vec![v], 1.0)
}

/// Whether a constant is `want` rounded to f32 (within 1e-7 of it, relative: an f32
/// rounding is within 6e-8).
fn near(c: f64, want: f64) -> bool {
    (c - want).abs() <= 1e-7 * want.abs()
}

/// `1 + erf(x / sqrt 2)` (also `erf(x * (1 / sqrt 2)) + 1`): `x`.
fn one_plus_erf_of_scaled(g: &Graph, v: ValueId) -> Option<ValueId> {
    let e = un_of(g, v, UnaryOp::AddScalar(1.0))?;
    match un(g, un_of(g, e, UnaryOp::Erf)?)? {
        (UnaryOp::MulScalar(k), x) if near(k.into(), core::f64::consts::FRAC_1_SQRT_2) => Some(x),
        (UnaryOp::DivScalar(d), x) if near(d.into(), core::f64::consts::SQRT_2) => Some(x),
        _ => None,
    }
}

/// `1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3))`, the cube as `pow(x, 3)`, `x * x * x`
/// or `x * square(x)`: `x`.
fn one_plus_tanh_of_cubic(g: &Graph, v: ValueId) -> Option<ValueId> {
    let e = un_of(g, v, UnaryOp::AddScalar(1.0))?;
    let (inner, k) = product_factors(g, un_of(g, e, UnaryOp::Tanh)?, None, 2);
    let (&[sum], true) = (
        inner.as_slice(),
        near(k, (2.0 / core::f64::consts::PI).sqrt()),
    ) else {
        return None;
    };
    let (a, b) = bin_of(g, sum, BinaryOp::Add)?;
    orders(a, b).into_iter().find_map(|(x, cubic)| {
        let (factors, c) = product_factors(g, cubic, Some(x), 3);
        let cube = match factors.as_slice() {
            [p, q, r] => [p, q, r].iter().all(|&&f| f == x),
            [p, q] => orders(*p, *q)
                .iter()
                .any(|&(y, sq)| y == x && un_of(g, sq, UnaryOp::Square) == Some(x)),
            [p] => un_of(g, *p, UnaryOp::PowScalar(3.0)) == Some(x),
            _ => false,
        };
        (cube && near(c, 0.044715)).then_some(x)
    })
}

/// `x * (1 + erf(x / sqrt 2)) * 0.5 -> gelu(x)` and `x * (1 + tanh(sqrt(2 / pi) * (x +
/// 0.044715 x^3))) * 0.5 -> gelu_tanh(x)`, each product grouped in any way (ONNX
/// exporters write GELU so: PyTorch's `Div, Erf, Add, Mul, Mul`)
pub fn strength_gelu_pattern(g: &Graph, n: usize) -> Option<Patch> {
    let root = at(g, n)?.output;
    let (first, _) = product_factors(g, root, None, 4);
    let (x, op) = first.iter().find_map(|&f| {
        one_plus_erf_of_scaled(g, f)
            .map(|x| (x, UnaryOp::Gelu))
            .or_else(|| one_plus_tanh_of_cubic(g, f).map(|x| (x, UnaryOp::GeluTanh)))
    })?;
    let (factors, scalar) = product_factors(g, root, Some(x), 4);
    let &[a, b] = factors.as_slice() else {
        return None;
    };
    let other = if a == x { b } else { a };
    let matches = match op {
        UnaryOp::Gelu => one_plus_erf_of_scaled(g, other),
        _ => one_plus_tanh_of_cubic(g, other),
    };
    if !(a == x || b == x) || matches != Some(x) || scalar != 0.5 {
        return None;
    }
    let mut p = Patch::default();
    let r = p.unary(g, op, Old(x));
    p.done(r)
}

/// `log(1 + exp(x)) -> softplus(x)` (value-changing: the left side is inf for `x > 88`)
pub fn strength_softplus_pattern(g: &Graph, n: usize) -> Option<Patch> {
    let y = un_of(g, at(g, n)?.output, UnaryOp::Log)?;
    let x = un_of(g, un_of(g, y, UnaryOp::AddScalar(1.0))?, UnaryOp::Exp)?;
    let mut p = Patch::default();
    let r = p.unary(g, UnaryOp::Softplus, Old(x));
    p.done(r)
}

/// `(-a) * (-b) -> a * b`
pub fn strength_neg_times_neg(g: &Graph, n: usize) -> Option<Patch> {
    let (a, b) = through(g, n, BinaryOp::Mul, UnaryOp::Neg)?;
    let mut p = Patch::default();
    let r = p.binary(g, BinaryOp::Mul, Old(a), Old(b))?;
    p.done(r)
}

/// `a + (-b) -> a - b`, `(-b) + a -> a - b`
pub fn strength_add_of_neg(g: &Graph, n: usize) -> Option<Patch> {
    let (BinaryOp::Add, x, y) = root_bin(g, n)? else {
        return None;
    };
    for (a, nb) in orders(x, y) {
        if let Some(b) = un_of(g, nb, UnaryOp::Neg) {
            let mut p = Patch::default();
            let r = p.binary(g, BinaryOp::Sub, Old(a), Old(b))?;
            return p.done(r);
        }
    }
    None
}

/// `a - (-b) -> a + b`
pub fn strength_sub_of_neg(g: &Graph, n: usize) -> Option<Patch> {
    let (BinaryOp::Sub, a, nb) = root_bin(g, n)? else {
        return None;
    };
    let b = un_of(g, nb, UnaryOp::Neg)?;
    let mut p = Patch::default();
    let r = p.binary(g, BinaryOp::Add, Old(a), Old(b))?;
    p.done(r)
}

// ---------------------------------------------------------------------------------------
// Associative: regroup products and quotients
// ---------------------------------------------------------------------------------------

/// `abs(a) * abs(b) -> abs(a * b)`
pub fn associative_abs_product(g: &Graph, n: usize) -> Option<Patch> {
    wrap(
        g,
        through(g, n, BinaryOp::Mul, UnaryOp::Abs)?,
        BinaryOp::Mul,
        UnaryOp::Abs,
    )
}

/// `reciprocal(a) * reciprocal(b) -> reciprocal(a * b)`
pub fn associative_recip_product(g: &Graph, n: usize) -> Option<Patch> {
    wrap(
        g,
        through(g, n, BinaryOp::Mul, UnaryOp::Recip)?,
        BinaryOp::Mul,
        UnaryOp::Recip,
    )
}

/// `square(a) * square(b) -> square(a * b)`
pub fn associative_square_product(g: &Graph, n: usize) -> Option<Patch> {
    wrap(
        g,
        through(g, n, BinaryOp::Mul, UnaryOp::Square)?,
        BinaryOp::Mul,
        UnaryOp::Square,
    )
}

/// `Recip(A) * Recip(A * B) -> Square(Recip(A)) * Recip(B)` (paper, Table 4: loads `A` once)
pub fn associative_recip_square(g: &Graph, n: usize) -> Option<Patch> {
    let (BinaryOp::Mul, x, y) = root_bin(g, n)? else {
        return None;
    };
    for (ra, rab) in orders(x, y) {
        let Some(a) = un_of(g, ra, UnaryOp::Recip) else {
            continue;
        };
        let Some(ab) = un_of(g, rab, UnaryOp::Recip) else {
            continue;
        };
        let Some((p1, p2)) = bin_of(g, ab, BinaryOp::Mul) else {
            continue;
        };
        let b = if p1 == a {
            p2
        } else if p2 == a {
            p1
        } else {
            continue;
        };
        let mut p = Patch::default();
        let sq = p.unary(g, UnaryOp::Square, Old(ra));
        let rb = p.unary(g, UnaryOp::Recip, Old(b));
        let r = p.binary(g, BinaryOp::Mul, sq, rb)?;
        return p.done(r);
    }
    None
}

/// `sqrt(a) * sqrt(b) -> sqrt(a * b)` when `a, b >= 0` by construction
pub fn associative_sqrt_product_nonneg(g: &Graph, n: usize) -> Option<Patch> {
    let (a, b) = through(g, n, BinaryOp::Mul, UnaryOp::Sqrt)?;
    if a == b || !(nonneg(g, a, 8) && nonneg(g, b, 8)) {
        return None;
    }
    wrap(g, (a, b), BinaryOp::Mul, UnaryOp::Sqrt)
}

/// `sqrt(a) * sqrt(b) -> sqrt(a * b)` (value-changing: NaN becomes a number when both are negative)
pub fn associative_sqrt_product(g: &Graph, n: usize) -> Option<Patch> {
    let (a, b) = through(g, n, BinaryOp::Mul, UnaryOp::Sqrt)?;
    if a == b {
        return None;
    }
    wrap(g, (a, b), BinaryOp::Mul, UnaryOp::Sqrt)
}

/// `rsqrt(a) * rsqrt(b) -> rsqrt(a * b)` when `a, b >= 0` by construction
pub fn associative_rsqrt_product_nonneg(g: &Graph, n: usize) -> Option<Patch> {
    let (a, b) = through(g, n, BinaryOp::Mul, UnaryOp::Rsqrt)?;
    if !(nonneg(g, a, 8) && nonneg(g, b, 8)) {
        return None;
    }
    wrap(g, (a, b), BinaryOp::Mul, UnaryOp::Rsqrt)
}

/// `(X * R) * (R * Y)`: `(X, R, Y)`, `R` shared, products in any order.
fn shared_factor(g: &Graph, n: usize) -> Option<(ValueId, ValueId, ValueId)> {
    let (BinaryOp::Mul, l, r) = root_bin(g, n)? else {
        return None;
    };
    let (l1, l2) = bin_of(g, l, BinaryOp::Mul)?;
    let (r1, r2) = bin_of(g, r, BinaryOp::Mul)?;
    for (x, f) in orders(l1, l2) {
        for (f2, y) in orders(r1, r2) {
            if f == f2 {
                return Some((x, f, y));
            }
        }
    }
    None
}

/// `(A * sqrt(B)) * (sqrt(B) * C) -> (A * B) * C` when `B >= 0` by construction (paper)
pub fn associative_sqrt_pair_nonneg(g: &Graph, n: usize) -> Option<Patch> {
    let (a, s, c) = shared_factor(g, n)?;
    let b = un_of(g, s, UnaryOp::Sqrt)?;
    if !nonneg(g, b, 8) {
        return None;
    }
    let mut p = Patch::default();
    let ab = p.binary(g, BinaryOp::Mul, Old(a), Old(b))?;
    let r = p.binary(g, BinaryOp::Mul, ab, Old(c))?;
    p.done(r)
}

/// `(A * sqrt(B)) * (sqrt(B) * C) -> (A * B) * C` (paper; value-changing for `B < 0`)
pub fn associative_sqrt_pair(g: &Graph, n: usize) -> Option<Patch> {
    let (a, s, c) = shared_factor(g, n)?;
    let b = un_of(g, s, UnaryOp::Sqrt)?;
    let mut p = Patch::default();
    let ab = p.binary(g, BinaryOp::Mul, Old(a), Old(b))?;
    let r = p.binary(g, BinaryOp::Mul, ab, Old(c))?;
    p.done(r)
}

/// `(A * R) * (R * C) -> (A * C) * square(R)` (paper: `R = ReduceSum(B)` is squared on `m`
/// elements instead of multiplied twice on `m * n`)
pub fn associative_shared_factor(g: &Graph, n: usize) -> Option<Patch> {
    let (a, f, c) = shared_factor(g, n)?;
    let mut p = Patch::default();
    let ac = p.binary(g, BinaryOp::Mul, Old(a), Old(c))?;
    let sq = p.unary(g, UnaryOp::Square, Old(f));
    let r = p.binary(g, BinaryOp::Mul, ac, sq)?;
    p.done(r)
}

/// `(A / B) / C -> A / (B * C)`
pub fn associative_div_div(g: &Graph, n: usize) -> Option<Patch> {
    let (BinaryOp::Div, ab, c) = root_bin(g, n)? else {
        return None;
    };
    let (a, b) = bin_of(g, ab, BinaryOp::Div)?;
    let mut p = Patch::default();
    let bc = p.binary(g, BinaryOp::Mul, Old(b), Old(c))?;
    let r = p.binary(g, BinaryOp::Div, Old(a), bc)?;
    p.done(r)
}

/// `A / (B / C) -> (A * C) / B`
pub fn associative_div_of_div(g: &Graph, n: usize) -> Option<Patch> {
    let (BinaryOp::Div, a, bc) = root_bin(g, n)? else {
        return None;
    };
    let (b, c) = bin_of(g, bc, BinaryOp::Div)?;
    let mut p = Patch::default();
    let ac = p.binary(g, BinaryOp::Mul, Old(a), Old(c))?;
    let r = p.binary(g, BinaryOp::Div, ac, Old(b))?;
    p.done(r)
}

/// `u(A op B) -> B op A` (`reciprocal(A / B)`, `-(A - B)`).
fn swapped_operands(g: &Graph, n: usize, u: UnaryOp, op: BinaryOp) -> Option<Patch> {
    let ab = un_of(g, at(g, n)?.output, u)?;
    let (a, b) = bin_of(g, ab, op)?;
    let mut p = Patch::default();
    let r = p.binary(g, op, Old(b), Old(a))?;
    p.done(r)
}

/// `reciprocal(A / B) -> B / A`
pub fn associative_recip_of_div(g: &Graph, n: usize) -> Option<Patch> {
    swapped_operands(g, n, UnaryOp::Recip, BinaryOp::Div)
}

/// `reciprocal(A) / B -> reciprocal(A * B)`
pub fn associative_recip_div(g: &Graph, n: usize) -> Option<Patch> {
    let (BinaryOp::Div, ra, b) = root_bin(g, n)? else {
        return None;
    };
    let a = un_of(g, ra, UnaryOp::Recip)?;
    wrap(g, (a, b), BinaryOp::Mul, UnaryOp::Recip)
}

/// `(A * a) * (B * b) -> (A * B) * (a * b)`
pub fn associative_scaled_product(g: &Graph, n: usize) -> Option<Patch> {
    let (BinaryOp::Mul, x, y) = root_bin(g, n)? else {
        return None;
    };
    let (UnaryOp::MulScalar(a), xa) = un(g, x)? else {
        return None;
    };
    let (UnaryOp::MulScalar(b), yb) = un(g, y)? else {
        return None;
    };
    let c = normal(f64::from(a) * f64::from(b))?;
    let mut p = Patch::default();
    let m = p.binary(g, BinaryOp::Mul, Old(xa), Old(yb))?;
    let r = p.unary(g, UnaryOp::MulScalar(c), m);
    p.done(r)
}

/// `op(op(A, B), B) -> op(A, B)` for an idempotent `op`, in any order.
fn absorb(g: &Graph, n: usize, op: BinaryOp) -> Option<Patch> {
    let (o, x, y) = root_bin(g, n)?;
    if o != op {
        return None;
    }
    for (inner, other) in orders(x, y) {
        if let Some((a, b)) = bin_of(g, inner, op) {
            if other == a || other == b {
                return Some(Patch::alias(inner));
            }
        }
    }
    None
}

/// `maximum(maximum(A, B), B) -> maximum(A, B)`
pub fn associative_max_absorb(g: &Graph, n: usize) -> Option<Patch> {
    absorb(g, n, BinaryOp::Max)
}

/// `minimum(minimum(A, B), B) -> minimum(A, B)`
pub fn associative_min_absorb(g: &Graph, n: usize) -> Option<Patch> {
    absorb(g, n, BinaryOp::Min)
}

/// `(A op B) inv B -> A` for a pair of inverse ops, `B` on either side of a commutative
/// `op` (value-changing: `B = inf` or `0` gives NaN before, `A` after).
fn cancel(g: &Graph, n: usize, inv: BinaryOp, op: BinaryOp) -> Option<Patch> {
    let (o, l, r) = root_bin(g, n)?;
    if o != inv {
        return None;
    }
    let commutes = |op: BinaryOp| matches!(op, BinaryOp::Add | BinaryOp::Mul);
    let pairs: &[(ValueId, ValueId)] = if commutes(inv) {
        &[(l, r), (r, l)]
    } else {
        &[(l, r)]
    };
    for &(ab, b) in pairs {
        let Some((x, y)) = bin_of(g, ab, op) else {
            continue;
        };
        let a = if y == b {
            x
        } else if commutes(op) && x == b {
            y
        } else {
            continue;
        };
        // the result keeps the matched value's shape (no broadcast hidden in `op`)
        if g.shape(a) == out_shape(g, n).as_slice() {
            return Some(Patch::alias(a));
        }
    }
    None
}

/// `(A + B) - B -> A`
pub fn associative_add_sub_cancel(g: &Graph, n: usize) -> Option<Patch> {
    cancel(g, n, BinaryOp::Sub, BinaryOp::Add)
}

/// `(A - B) + B -> A`
pub fn associative_sub_add_cancel(g: &Graph, n: usize) -> Option<Patch> {
    cancel(g, n, BinaryOp::Add, BinaryOp::Sub)
}

/// `(A * B) / B -> A`
pub fn associative_mul_div_cancel(g: &Graph, n: usize) -> Option<Patch> {
    cancel(g, n, BinaryOp::Div, BinaryOp::Mul)
}

/// `(A / B) * B -> A`
pub fn associative_div_mul_cancel(g: &Graph, n: usize) -> Option<Patch> {
    cancel(g, n, BinaryOp::Mul, BinaryOp::Div)
}

/// `u(A) / u(B) -> u(A / B)` for `u` in `abs`, `square` (and `sqrt` with `guard`).
fn quotient(g: &Graph, n: usize, u: UnaryOp, guard: bool) -> Option<Patch> {
    let (BinaryOp::Div, l, r) = root_bin(g, n)? else {
        return None;
    };
    let (a, b) = (un_of(g, l, u)?, un_of(g, r, u)?);
    if guard && !(nonneg(g, a, 4) && nonneg(g, b, 4)) {
        return None;
    }
    wrap(g, (a, b), BinaryOp::Div, u)
}

/// `abs(a) / abs(b) -> abs(a / b)`
pub fn associative_abs_quotient(g: &Graph, n: usize) -> Option<Patch> {
    quotient(g, n, UnaryOp::Abs, false)
}

/// `square(a) / square(b) -> square(a / b)`
pub fn associative_square_quotient(g: &Graph, n: usize) -> Option<Patch> {
    quotient(g, n, UnaryOp::Square, false)
}

/// `sqrt(a) / sqrt(b) -> sqrt(a / b)` for `a, b >= 0` by construction
pub fn associative_sqrt_quotient_nonneg(g: &Graph, n: usize) -> Option<Patch> {
    quotient(g, n, UnaryOp::Sqrt, true)
}

/// `sqrt(a) / sqrt(b) -> sqrt(a / b)` (value-changing: two negatives give a number)
pub fn associative_sqrt_quotient(g: &Graph, n: usize) -> Option<Patch> {
    quotient(g, n, UnaryOp::Sqrt, false)
}

/// `(A * a) / (B * b) -> (A / B) * (a / b)`
pub fn associative_scaled_quotient(g: &Graph, n: usize) -> Option<Patch> {
    let (BinaryOp::Div, x, y) = root_bin(g, n)? else {
        return None;
    };
    let (UnaryOp::MulScalar(a), xa) = un(g, x)? else {
        return None;
    };
    let (UnaryOp::MulScalar(b), yb) = un(g, y)? else {
        return None;
    };
    let c = normal(f64::from(a) / f64::from(b))?;
    let mut p = Patch::default();
    let q = p.binary(g, BinaryOp::Div, Old(xa), Old(yb))?;
    let r = p.unary(g, UnaryOp::MulScalar(c), q);
    p.done(r)
}

/// `reduce_max(reduce_max(x, A), B) -> reduce_max(x, A + B)` (also min): one pass
pub fn associative_reduce_extreme_chain(g: &Graph, n: usize) -> Option<Patch> {
    let (outer, y) = root_single(g, n)?;
    let Op::Reduce {
        kind: kind @ (ReduceKind::Max | ReduceKind::Min),
        axes: outer_axes,
        keepdims,
    } = &outer.op
    else {
        return None;
    };
    let inner = def(g, y)?;
    let (
        Op::Reduce {
            kind: inner_kind,
            axes: inner_axes,
            keepdims: true,
        },
        [x],
    ) = (&inner.op, inner.inputs.as_slice())
    else {
        return None;
    };
    if inner_kind != kind {
        return None;
    }
    // with keepdims the inner reduction keeps every axis, so both name axes of x
    let mut axes = inner_axes.clone();
    axes.extend(outer_axes.iter().copied());
    axes.sort_unstable();
    axes.dedup();
    let mut p = Patch::default();
    let op = Op::Reduce {
        kind: *kind,
        axes,
        keepdims: true,
    };
    let kept = p.node(g, op, vec![Old(*x)])?;
    if *keepdims {
        return p.done(kept);
    }
    // the axes the inner reduction kept at length 1 stay; the outer ones go
    let r = p.node_shaped(
        g,
        Op::Reshape(ReshapeKind::Reshape),
        vec![kept],
        out_shape(g, n),
    )?;
    p.done(r)
}

/// `conv2d(x, W, b) + c -> conv2d(x, W, b + c)` (also `conv_transpose2d`, `linear`,
/// `- c`): the shift joins
/// the bias, computed once at load time (value-changing: regroups a sum)
pub fn associative_shift_into_bias(g: &Graph, n: usize) -> Option<Patch> {
    let (u @ (UnaryOp::AddScalar(_) | UnaryOp::SubScalar(_)), y) = root_un(g, n)? else {
        return None;
    };
    let (node, x, w, Some(b)) = weighted(g, y)? else {
        return None;
    };
    let mut p = Patch::default();
    let shifted = p.unary(g, u, Old(b));
    let q = p.node(g, node.op.clone(), vec![Old(x), Old(w), shifted])?;
    p.done(q)
}

// ---------------------------------------------------------------------------------------
// Distributive: factor out common operands
// ---------------------------------------------------------------------------------------

/// `A * B op A * C`: `(A, B, C)`, each product in any order.
fn common_factor(g: &Graph, n: usize, op: BinaryOp) -> Option<(ValueId, ValueId, ValueId)> {
    let (l, r) = bin_of(g, at(g, n)?.output, op)?;
    let (l1, l2) = bin_of(g, l, BinaryOp::Mul)?;
    let (r1, r2) = bin_of(g, r, BinaryOp::Mul)?;
    for (a, b) in orders(l1, l2) {
        for (a2, c) in orders(r1, r2) {
            if a == a2 {
                return Some((a, b, c));
            }
        }
    }
    None
}

fn factor_out(g: &Graph, (a, b, c): (ValueId, ValueId, ValueId), op: BinaryOp) -> Option<Patch> {
    let mut p = Patch::default();
    let s = p.binary(g, op, Old(b), Old(c))?;
    let r = p.binary(g, BinaryOp::Mul, Old(a), s)?;
    p.done(r)
}

/// `A * B + A * C -> A * (B + C)` (paper, Fig. 2b)
pub fn distributive_factor_mul_add(g: &Graph, n: usize) -> Option<Patch> {
    factor_out(g, common_factor(g, n, BinaryOp::Add)?, BinaryOp::Add)
}

/// `A * B - A * C -> A * (B - C)`
pub fn distributive_factor_mul_sub(g: &Graph, n: usize) -> Option<Patch> {
    factor_out(g, common_factor(g, n, BinaryOp::Sub)?, BinaryOp::Sub)
}

/// `A / C op B / C -> (A op B) / C`
fn common_divisor(g: &Graph, n: usize, op: BinaryOp) -> Option<Patch> {
    let (l, r) = bin_of(g, at(g, n)?.output, op)?;
    let (a, c) = bin_of(g, l, BinaryOp::Div)?;
    let (b, c2) = bin_of(g, r, BinaryOp::Div)?;
    if c != c2 {
        return None;
    }
    let mut p = Patch::default();
    let s = p.binary(g, op, Old(a), Old(b))?;
    let q = p.binary(g, BinaryOp::Div, s, Old(c))?;
    p.done(q)
}

/// `A / C + B / C -> (A + B) / C`
pub fn distributive_factor_div_add(g: &Graph, n: usize) -> Option<Patch> {
    common_divisor(g, n, BinaryOp::Add)
}

/// `A / C - B / C -> (A - B) / C`
pub fn distributive_factor_div_sub(g: &Graph, n: usize) -> Option<Patch> {
    common_divisor(g, n, BinaryOp::Sub)
}

/// `A + A * B -> A * (B + 1)` (paper, Table 4: loads `A` once)
pub fn distributive_add_self_product(g: &Graph, n: usize) -> Option<Patch> {
    let (BinaryOp::Add, x, y) = root_bin(g, n)? else {
        return None;
    };
    for (a, ab) in orders(x, y) {
        let Some((p1, p2)) = bin_of(g, ab, BinaryOp::Mul) else {
            continue;
        };
        for (a2, b) in orders(p1, p2) {
            if a2 == a {
                let mut p = Patch::default();
                let b1 = p.unary(g, UnaryOp::AddScalar(1.0), Old(b));
                let r = p.binary(g, BinaryOp::Mul, Old(a), b1)?;
                return p.done(r);
            }
        }
    }
    None
}

/// `A - A * B -> A * (1 - B)`, `A * B - A -> A * (B - 1)`
pub fn distributive_sub_self_product(g: &Graph, n: usize) -> Option<Patch> {
    let (BinaryOp::Sub, x, y) = root_bin(g, n)? else {
        return None;
    };
    for (a, ab, left) in [(x, y, true), (y, x, false)] {
        let Some((p1, p2)) = bin_of(g, ab, BinaryOp::Mul) else {
            continue;
        };
        for (a2, b) in orders(p1, p2) {
            if a2 == a {
                let mut p = Patch::default();
                let u = if left {
                    UnaryOp::ScalarSub(1.0)
                } else {
                    UnaryOp::SubScalar(1.0)
                };
                let b1 = p.unary(g, u, Old(b));
                let r = p.binary(g, BinaryOp::Mul, Old(a), b1)?;
                return p.done(r);
            }
        }
    }
    None
}

/// `square(S) - S * C -> S * (S - C)`, `square(S) + S * C -> S * (S + C)` (paper, with `S = A + B`)
pub fn distributive_square_minus_product(g: &Graph, n: usize) -> Option<Patch> {
    let (op, sq, sc) = root_bin(g, n)?;
    if !matches!(op, BinaryOp::Sub | BinaryOp::Add) {
        return None;
    }
    let s = un_of(g, sq, UnaryOp::Square)?;
    let (p1, p2) = bin_of(g, sc, BinaryOp::Mul)?;
    let c = if p1 == s {
        p2
    } else if p2 == s {
        p1
    } else {
        return None;
    };
    let mut p = Patch::default();
    let d = p.binary(g, op, Old(s), Old(c))?;
    let r = p.binary(g, BinaryOp::Mul, Old(s), d)?;
    p.done(r)
}

/// `(x, a)` for `x * a` or `(v, 1)` for a plain `v`.
fn scaled(g: &Graph, v: ValueId) -> (ValueId, f64) {
    match un(g, v) {
        Some((UnaryOp::MulScalar(a), x)) => (x, f64::from(a)),
        _ => (v, 1.0),
    }
}

/// `x * a + x * b -> x * (a + b)`, also `x * a + x`, `x - x * b`, ... (scalar `a`, `b`)
pub fn distributive_scalar_factor(g: &Graph, n: usize) -> Option<Patch> {
    let (op, l, r) = root_bin(g, n)?;
    let sign = match op {
        BinaryOp::Add => 1.0,
        BinaryOp::Sub => -1.0,
        _ => return None,
    };
    let ((x, a), (y, b)) = (scaled(g, l), scaled(g, r));
    if x != y || l == r {
        return None;
    }
    let c = (a + sign * b) as f32;
    if !(c.is_normal() || c == 0.0 && a == sign * -b) {
        return None;
    }
    let mut p = Patch::default();
    let q = p.unary(g, UnaryOp::MulScalar(c), Old(x));
    p.done(q)
}

/// `l = a * c` and `r = b * c` (or both `/ c`) with the same `c`: `(the scale, a, b)`.
fn same_scale(g: &Graph, l: ValueId, r: ValueId) -> Option<(UnaryOp, ValueId, ValueId)> {
    let (ul, a) = un(g, l)?;
    let (ur, b) = un(g, r)?;
    (ul == ur && matches!(ul, UnaryOp::MulScalar(_) | UnaryOp::DivScalar(_))).then_some((ul, a, b))
}

/// `A * c op B * c -> (A op B) * c`, `A / c op B / c -> (A op B) / c`
pub fn distributive_common_scale(g: &Graph, n: usize) -> Option<Patch> {
    let (op, l, r) = root_bin(g, n)?;
    if !matches!(op, BinaryOp::Add | BinaryOp::Sub) {
        return None;
    }
    let (ul, a, b) = same_scale(g, l, r)?;
    let mut p = Patch::default();
    let s = p.binary(g, op, Old(a), Old(b))?;
    let q = p.unary(g, ul, s);
    p.done(q)
}

/// `(-A) + (-B) -> -(A + B)`, `(-A) - (-B) -> B - A`
pub fn distributive_neg_sum(g: &Graph, n: usize) -> Option<Patch> {
    let (op, l, r) = root_bin(g, n)?;
    let (a, b) = (un_of(g, l, UnaryOp::Neg)?, un_of(g, r, UnaryOp::Neg)?);
    let mut p = Patch::default();
    let q = match op {
        BinaryOp::Add => {
            let s = p.binary(g, BinaryOp::Add, Old(a), Old(b))?;
            p.unary(g, UnaryOp::Neg, s)
        }
        BinaryOp::Sub => p.binary(g, BinaryOp::Sub, Old(b), Old(a))?,
        _ => return None,
    };
    p.done(q)
}

fn matmul_of(g: &Graph, v: ValueId) -> Option<(ValueId, ValueId)> {
    let m = def(g, v)?;
    match (&m.op, m.inputs.as_slice()) {
        (Op::MatMul, [a, b]) => Some((*a, *b)),
        _ => None,
    }
}

/// `A @ B op A @ C -> A @ (B op C)` (value-changing: regroups the long sums)
pub fn distributive_matmul_left(g: &Graph, n: usize) -> Option<Patch> {
    let (op, l, r) = root_bin(g, n)?;
    if !matches!(op, BinaryOp::Add | BinaryOp::Sub) {
        return None;
    }
    let ((a, b), (a2, c)) = (matmul_of(g, l)?, matmul_of(g, r)?);
    if a != a2 || g.shape(b) != g.shape(c) {
        return None;
    }
    let mut p = Patch::default();
    let s = p.binary(g, op, Old(b), Old(c))?;
    let q = p.node(g, Op::MatMul, vec![Old(a), s])?;
    p.done(q)
}

/// `A @ C op B @ C -> (A op B) @ C` (value-changing: regroups the long sums)
pub fn distributive_matmul_right(g: &Graph, n: usize) -> Option<Patch> {
    let (op, l, r) = root_bin(g, n)?;
    if !matches!(op, BinaryOp::Add | BinaryOp::Sub) {
        return None;
    }
    let ((a, c), (b, c2)) = (matmul_of(g, l)?, matmul_of(g, r)?);
    if c != c2 || g.shape(a) != g.shape(b) {
        return None;
    }
    let mut p = Patch::default();
    let s = p.binary(g, op, Old(a), Old(b))?;
    let q = p.node(g, Op::MatMul, vec![s, Old(c)])?;
    p.done(q)
}

/// `linear(x, W1, b1) + linear(x, W2, b2) -> linear(x, W1 + W2, b1 + b2)` (value-changing:
/// regroups the long sums)
pub fn distributive_linear_shared_input(g: &Graph, n: usize) -> Option<Patch> {
    shared_input(g, n, |op| *op == Op::Linear)
}

/// `-(A - B) -> B - A`
pub fn distributive_neg_of_difference(g: &Graph, n: usize) -> Option<Patch> {
    swapped_operands(g, n, UnaryOp::Neg, BinaryOp::Sub)
}

/// `where(c, A op X, B op X) -> where(c, A, B) op X` (`X` on the same side of both)
pub fn distributive_where_common_operand(g: &Graph, n: usize) -> Option<Patch> {
    let node = at(g, n)?;
    let (Op::Where, [c, l, r]) = (&node.op, node.inputs.as_slice()) else {
        return None;
    };
    let (op, l1, l2) = bin(g, *l)?;
    let (op2, r1, r2) = bin(g, *r)?;
    if op != op2
        || !matches!(
            op,
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div
        )
    {
        return None;
    }
    let shape = out_shape(g, n);
    let (a, b, x, x_right) = if l2 == r2 {
        (l1, r1, l2, true)
    } else if l1 == r1 {
        (l2, r2, l1, false)
    } else {
        return None;
    };
    let mut p = Patch::default();
    let sel = p.node(g, Op::Where, vec![Old(*c), Old(a), Old(b)])?;
    let q = if x_right {
        p.binary(g, op, sel, Old(x))?
    } else {
        p.binary(g, op, Old(x), sel)?
    };
    (p.shape(g, q) == shape.as_slice()).then_some(())?;
    p.done(q)
}

/// `maximum(A + C, B + C) -> maximum(A, B) + C` (also minimum, `- C`): rounding is monotone
pub fn distributive_extreme_of_shifted(g: &Graph, n: usize) -> Option<Patch> {
    let (m, l, r) = root_bin(g, n)?;
    if !matches!(m, BinaryOp::Max | BinaryOp::Min) {
        return None;
    }
    let (op, l1, l2) = bin(g, l)?;
    let (op2, r1, r2) = bin(g, r)?;
    if op != op2 || !matches!(op, BinaryOp::Add | BinaryOp::Sub) {
        return None;
    }
    let (a, b, c) = if l2 == r2 {
        (l1, r1, l2)
    } else if op == BinaryOp::Add && l1 == r1 {
        (l2, r2, l1)
    } else if op == BinaryOp::Add && l1 == r2 {
        (l2, r1, l1)
    } else if op == BinaryOp::Add && l2 == r1 {
        (l1, r2, l2)
    } else {
        return None;
    };
    let mut p = Patch::default();
    let e = p.binary(g, m, Old(a), Old(b))?;
    let q = p.binary(g, op, e, Old(c))?;
    (p.shape(g, q) == out_shape(g, n).as_slice()).then_some(())?;
    p.done(q)
}

/// `maximum(A * c, B * c) -> maximum(A, B) * c` for `c > 0`, `-> minimum(A, B) * c` for
/// `c < 0` (also minimum, `/ c`): rounding is monotone
pub fn distributive_extreme_of_scaled(g: &Graph, n: usize) -> Option<Patch> {
    let (m, l, r) = root_bin(g, n)?;
    if !matches!(m, BinaryOp::Max | BinaryOp::Min) {
        return None;
    }
    let (ul, a, b) = same_scale(g, l, r)?;
    let (UnaryOp::MulScalar(c) | UnaryOp::DivScalar(c)) = ul else {
        return None;
    };
    if !c.is_normal() {
        return None;
    }
    let m = match (m, c > 0.0) {
        (_, true) => m,
        (BinaryOp::Max, false) => BinaryOp::Min,
        _ => BinaryOp::Max,
    };
    wrap(g, (a, b), m, ul)
}

/// `reduce_sum(A) + reduce_sum(B) -> reduce_sum(A + B)` over the same axes (also mean, `-`)
/// (value-changing: regroups the sums)
pub fn distributive_reduce_of_sum(g: &Graph, n: usize) -> Option<Patch> {
    let (op, l, r) = root_bin(g, n)?;
    if !matches!(op, BinaryOp::Add | BinaryOp::Sub) {
        return None;
    }
    let (ln, rn) = (def(g, l)?, def(g, r)?);
    let (
        Op::Reduce {
            kind: ReduceKind::Sum | ReduceKind::Mean,
            ..
        },
        [a],
        [b],
    ) = (&ln.op, ln.inputs.as_slice(), rn.inputs.as_slice())
    else {
        return None;
    };
    if ln.op != rn.op || g.shape(*a) != g.shape(*b) || g.shape(l) != g.shape(r) {
        return None;
    }
    let mut p = Patch::default();
    let s = p.binary(g, op, Old(*a), Old(*b))?;
    let q = p.node(g, ln.op.clone(), vec![s])?;
    p.done(q)
}

/// `v = op(x, w, bias)` for an op linear in its weights and bias (`conv2d`,
/// `conv_transpose2d`, `linear`): `(node, x, w, bias)`.
fn weighted(g: &Graph, v: ValueId) -> Option<(&Node, ValueId, ValueId, Option<ValueId>)> {
    let node = def(g, v)?;
    if !matches!(node.op, Op::Conv2d(_) | Op::ConvTranspose2d(_) | Op::Linear) {
        return None;
    }
    match node.inputs.as_slice() {
        [x, w] => Some((node, *x, *w, None)),
        [x, w, b] => Some((node, *x, *w, Some(*b))),
        _ => None,
    }
}

/// The sum of two optional biases, as an operand list tail.
fn bias_sum(
    p: &mut Patch,
    g: &Graph,
    a: Option<ValueId>,
    b: Option<ValueId>,
) -> Option<Vec<Operand>> {
    Some(match (a, b) {
        (Some(a), Some(b)) => vec![p.binary(g, BinaryOp::Add, Old(a), Old(b))?],
        (Some(a), None) | (None, Some(a)) => vec![Old(a)],
        (None, None) => Vec::new(),
    })
}

/// `conv2d(x, W1, b1) + conv2d(x, W2, b2) -> conv2d(x, W1 + W2, b1 + b2)` (same geometry;
/// the weight sum runs at load time) (value-changing: regroups the sums)
pub fn distributive_conv_shared_input(g: &Graph, n: usize) -> Option<Patch> {
    shared_input(g, n, |op| matches!(op, Op::Conv2d(_)))
}

/// `op(x, W1, b1) + op(x, W2, b2) -> op(x, W1 + W2, b1 + b2)` for the same `op` (same
/// attributes) where `is_op(op)`.
fn shared_input(g: &Graph, n: usize, is_op: impl Fn(&Op) -> bool) -> Option<Patch> {
    let (BinaryOp::Add, l, r) = root_bin(g, n)? else {
        return None;
    };
    let ((ln, lx, lw, lb), (rn, rx, rw, rb)) = (weighted(g, l)?, weighted(g, r)?);
    if !is_op(&ln.op) || ln.op != rn.op || lx != rx {
        return None;
    }
    if g.shape(lw) != g.shape(rw) || g.shape(l) != g.shape(r) {
        return None;
    }
    let mut p = Patch::default();
    let mut inputs = vec![Old(lx), p.binary(g, BinaryOp::Add, Old(lw), Old(rw))?];
    inputs.extend(bias_sum(&mut p, g, lb, rb)?);
    let q = p.node(g, ln.op.clone(), inputs)?;
    p.done(q)
}

/// `conv2d(x, W, b) * c -> conv2d(x, W * c, b * c)` (also `conv_transpose2d`, `linear`,
/// `/ c`, `-`): the scale
/// moves into the weights, computed once at load time (value-changing, as batch norm
/// folding: the scale moves inside the sum)
pub fn distributive_scale_into_weights(g: &Graph, n: usize) -> Option<Patch> {
    let (u, y) = root_un(g, n)?;
    if !scale(u) {
        return None;
    }
    let (node, x, w, b) = weighted(g, y)?;
    let mut p = Patch::default();
    let mut inputs = vec![Old(x), p.unary(g, u, Old(w))];
    if let Some(b) = b {
        inputs.push(p.unary(g, u, Old(b)));
    }
    let q = p.node(g, node.op.clone(), inputs)?;
    p.done(q)
}

// ---------------------------------------------------------------------------------------
// Commutative: swap operands, move ops past each other
// ---------------------------------------------------------------------------------------

/// `u(op(x, rest..)) -> op(u(x), rest..)` when `accept(op, u)`: the matched unary moves
/// onto the first operand of the op that produces its operand.
fn unary_inside(g: &Graph, n: usize, accept: impl Fn(&Op, UnaryOp) -> bool) -> Option<Patch> {
    let (u, e) = root_un(g, n)?;
    let inner = def(g, e)?;
    let (x, rest) = inner.inputs.split_first()?;
    if !accept(&inner.op, u) {
        return None;
    }
    let mut p = Patch::default();
    let y = p.unary(g, u, Old(*x));
    let mut inputs = vec![y];
    inputs.extend(rest.iter().map(|&v| Old(v)));
    let r = p.node_shaped(g, inner.op.clone(), inputs, out_shape(g, n))?;
    p.done(r)
}

/// `(X * B) * C -> (X * C) * B` (no gain alone: kept only when it enables another rule,
/// e.g. `abs(A) * B * abs(C) -> abs(A * C) * B`)
pub fn commutative_swap_product(g: &Graph, n: usize) -> Option<Patch> {
    let (BinaryOp::Mul, inner, c) = root_bin(g, n)? else {
        return None;
    };
    let (x, b) = bin_of(g, inner, BinaryOp::Mul)?;
    // pair like with like: keep next to C the operand made by the same op
    let op_of = |v: ValueId| def(g, v).map(|d| d.op.clone());
    let (keep, out) = if op_of(x).is_some() && op_of(x) == op_of(c) {
        (x, b)
    } else {
        (b, x)
    };
    let mut p = Patch::default();
    let kc = p.binary(g, BinaryOp::Mul, Old(keep), Old(c))?;
    let r = p.binary(g, BinaryOp::Mul, kc, Old(out))?;
    p.done(r)
}

/// `u(transpose(x)) -> transpose(u(x))` for an elementwise `u` (kept only when it enables
/// another rule, e.g. two transposes meeting)
pub fn commutative_transpose_past_unary(g: &Graph, n: usize) -> Option<Patch> {
    let (u, t) = root_un(g, n)?;
    let tn = def(g, t)?;
    let (Op::Transpose { perm }, [x]) = (&tn.op, tn.inputs.as_slice()) else {
        return None;
    };
    let mut p = Patch::default();
    let y = p.unary(g, u, Old(*x));
    let r = p.node(g, Op::Transpose { perm: perm.clone() }, vec![y])?;
    p.done(r)
}

/// `u(reshape(x)) -> reshape(u(x))` for an elementwise `u` (kept only when it enables
/// another rule)
pub fn commutative_reshape_past_unary(g: &Graph, n: usize) -> Option<Patch> {
    unary_inside(g, n, |op, _| matches!(op, Op::Reshape(_)))
}

/// `slice(u(x)) -> u(slice(x))`: the function runs on the kept elements only
pub fn commutative_slice_past_unary(g: &Graph, n: usize) -> Option<Patch> {
    let (node, y) = root_single(g, n)?;
    let spec = slice_of(node)?;
    let (u, x) = un(g, y)?;
    let mut p = Patch::default();
    let s = make_slice(&mut p, g, Old(x), spec, out_shape(g, n))?;
    let r = p.unary(g, u, s);
    p.done(r)
}

/// `slice(a op b) -> slice(a) op slice(b)` (operands of the full shape)
pub fn commutative_slice_past_binary(g: &Graph, n: usize) -> Option<Patch> {
    let (node, y) = root_single(g, n)?;
    let spec = slice_of(node)?;
    let (op, a, b) = bin(g, y)?;
    if g.shape(a) != g.shape(y) || g.shape(b) != g.shape(y) {
        return None;
    }
    let out = out_shape(g, n);
    let mut p = Patch::default();
    let sa = make_slice(&mut p, g, Old(a), spec.clone(), out.clone())?;
    let sb = if a == b {
        sa
    } else {
        make_slice(&mut p, g, Old(b), spec, out)?
    };
    let r = p.binary(g, op, sa, sb)?;
    p.done(r)
}

/// `u(expand(x)) -> expand(u(x))`: the function runs before the broadcast
pub fn commutative_unary_past_expand(g: &Graph, n: usize) -> Option<Patch> {
    unary_inside(g, n, |op, _| *op == Op::Expand)
}

/// `u(resize(x))` (nearest) `-> resize(u(x))`: the function runs before the upsampling
pub fn commutative_unary_past_resize(g: &Graph, n: usize) -> Option<Patch> {
    unary_inside(g, n, |op, _| *op == Op::Resize(ResizeMode::Nearest))
}

/// `u(gather(x, i)) -> gather(u(x), i)` (pays when `x` is smaller than the gathered result)
pub fn commutative_unary_before_gather(g: &Graph, n: usize) -> Option<Patch> {
    unary_inside(g, n, |op, _| matches!(op, Op::Gather { .. }))
}

/// `concat(u(a), u(b), ...) -> u(concat(a, b, ...))`: one op instead of several
pub fn commutative_concat_of_unary(g: &Graph, n: usize) -> Option<Patch> {
    let node = at(g, n)?;
    let Op::Concat { axis } = node.op else {
        return None;
    };
    if node.inputs.len() < 2 {
        return None;
    }
    let parts: Vec<(UnaryOp, ValueId)> = node
        .inputs
        .iter()
        .map(|&v| un(g, v))
        .collect::<Option<_>>()?;
    let u = parts.first()?.0;
    if parts.iter().any(|(v, _)| *v != u) {
        return None;
    }
    let mut p = Patch::default();
    let c = p.node(
        g,
        Op::Concat { axis },
        parts.iter().map(|(_, x)| Old(*x)).collect(),
    )?;
    let r = p.unary(g, u, c);
    p.done(r)
}

/// `reduce_sum(x * c) -> reduce_sum(x) * c` (also mean, `x / c`, `-x`)
pub fn commutative_reduce_sum_of_scale(g: &Graph, n: usize) -> Option<Patch> {
    let (node, y) = root_single(g, n)?;
    let Op::Reduce {
        kind: ReduceKind::Sum | ReduceKind::Mean,
        ..
    } = node.op
    else {
        return None;
    };
    let (u, x) = un(g, y)?;
    if !scale(u) {
        return None;
    }
    let mut p = Patch::default();
    let red = p.node(g, node.op.clone(), vec![Old(x)])?;
    let r = p.unary(g, u, red);
    p.done(r)
}

/// `reduce_max(f(x)) -> f(reduce_max(x))` (also min) for a nondecreasing `f`
pub fn commutative_reduce_extreme_of_increasing(g: &Graph, n: usize) -> Option<Patch> {
    let (node, y) = root_single(g, n)?;
    let Op::Reduce {
        kind: ReduceKind::Max | ReduceKind::Min,
        ..
    } = node.op
    else {
        return None;
    };
    let (u, x) = un(g, y)?;
    if !increasing(u) {
        return None;
    }
    let mut p = Patch::default();
    let red = p.node(g, node.op.clone(), vec![Old(x)])?;
    let r = p.unary(g, u, red);
    p.done(r)
}

/// `reduce_max(f(x)) -> f(reduce_min(x))` (and min of max) for a nonincreasing `f` (`-x`, `c - x`)
pub fn commutative_reduce_extreme_of_decreasing(g: &Graph, n: usize) -> Option<Patch> {
    let (node, y) = root_single(g, n)?;
    let Op::Reduce {
        kind,
        axes,
        keepdims,
    } = &node.op
    else {
        return None;
    };
    let flipped = match kind {
        ReduceKind::Max => ReduceKind::Min,
        ReduceKind::Min => ReduceKind::Max,
        _ => return None,
    };
    let (u, x) = un(g, y)?;
    if !decreasing(u) {
        return None;
    }
    let mut p = Patch::default();
    let red = p.node(
        g,
        Op::Reduce {
            kind: flipped,
            axes: axes.clone(),
            keepdims: *keepdims,
        },
        vec![Old(x)],
    )?;
    let r = p.unary(g, u, red);
    p.done(r)
}

/// `max_pool2d(f(x)) -> f(max_pool2d(x))` for a nondecreasing `f` (relu after pooling
/// touches a quarter of the elements)
pub fn commutative_max_pool_of_increasing(g: &Graph, n: usize) -> Option<Patch> {
    let (node, y) = root_single(g, n)?;
    let Op::MaxPool2d(_) = node.op else {
        return None;
    };
    let (u, x) = un(g, y)?;
    if !increasing(u) {
        return None;
    }
    let mut p = Patch::default();
    let red = p.node(g, node.op.clone(), vec![Old(x)])?;
    let r = p.unary(g, u, red);
    p.done(r)
}

/// `global_max_pool2d(f(x)) -> f(global_max_pool2d(x))` for a nondecreasing `f`
pub fn commutative_global_max_pool_of_increasing(g: &Graph, n: usize) -> Option<Patch> {
    let (node, y) = root_single(g, n)?;
    let Op::GlobalMaxPool = node.op else {
        return None;
    };
    let (u, x) = un(g, y)?;
    if !increasing(u) {
        return None;
    }
    let mut p = Patch::default();
    let red = p.node(g, Op::GlobalMaxPool, vec![Old(x)])?;
    let r = p.unary(g, u, red);
    p.done(r)
}

/// `avg_pool2d(x * c) -> avg_pool2d(x) * c` (also global average pooling, `x / c`, `-x`)
pub fn commutative_avg_pool_of_scale(g: &Graph, n: usize) -> Option<Patch> {
    let (node, y) = root_single(g, n)?;
    if !matches!(node.op, Op::AvgPool2d(_) | Op::GlobalAvgPool) {
        return None;
    }
    let (u, x) = un(g, y)?;
    if !scale(u) {
        return None;
    }
    let mut p = Patch::default();
    let red = p.node(g, node.op.clone(), vec![Old(x)])?;
    let r = p.unary(g, u, red);
    p.done(r)
}

/// `(A * c) @ B -> (A @ B) * c`, `A @ (B * c) -> (A @ B) * c` (also `/ c`, `-`): the scale
/// runs on the smaller side
pub fn commutative_matmul_of_scale(g: &Graph, n: usize) -> Option<Patch> {
    let (a, b) = matmul_of(g, at(g, n)?.output)?;
    let (u, inputs) = match (un(g, a), un(g, b)) {
        (Some((u, x)), _) if scale(u) => (u, vec![Old(x), Old(b)]),
        (_, Some((u, x))) if scale(u) => (u, vec![Old(a), Old(x)]),
        _ => return None,
    };
    let mut p = Patch::default();
    let m = p.node(g, Op::MatMul, inputs)?;
    let r = p.unary(g, u, m);
    p.done(r)
}

/// `reduce_prod(exp(A)) -> exp(reduce_sum(A))` (paper; value-changing: overflow moves)
pub fn commutative_reduce_prod_of_exp(g: &Graph, n: usize) -> Option<Patch> {
    let (node, y) = root_single(g, n)?;
    let Op::Reduce {
        kind: ReduceKind::Prod,
        axes,
        keepdims,
    } = &node.op
    else {
        return None;
    };
    let x = un_of(g, y, UnaryOp::Exp)?;
    let mut p = Patch::default();
    let red = p.node(
        g,
        Op::Reduce {
            kind: ReduceKind::Sum,
            axes: axes.clone(),
            keepdims: *keepdims,
        },
        vec![Old(x)],
    )?;
    let r = p.unary(g, UnaryOp::Exp, red);
    p.done(r)
}

/// `(A @ B) * c -> (A * c) @ B` (or `A @ (B * c)`, also `/ c`, `-`): the scale runs on
/// the smaller operand when it is smaller than the product
pub fn commutative_scale_into_matmul(g: &Graph, n: usize) -> Option<Patch> {
    let (u, m) = root_un(g, n)?;
    if !scale(u) {
        return None;
    }
    let (a, b) = matmul_of(g, m)?;
    let size = |v: ValueId| g.shape(v).iter().product::<usize>();
    let mut p = Patch::default();
    let inputs = if size(a) <= size(b) {
        vec![p.unary(g, u, Old(a)), Old(b)]
    } else {
        vec![Old(a), p.unary(g, u, Old(b))]
    };
    let r = p.node(g, Op::MatMul, inputs)?;
    p.done(r)
}

/// `where(c, u(a), u(b)) -> u(where(c, a, b))` for the same elementwise `u`
pub fn commutative_unary_past_where(g: &Graph, n: usize) -> Option<Patch> {
    let node = at(g, n)?;
    let (Op::Where, [c, l, r]) = (&node.op, node.inputs.as_slice()) else {
        return None;
    };
    let ((ul, a), (ur, b)) = (un(g, *l)?, un(g, *r)?);
    if ul != ur || g.shape(a) != g.shape(*l) || g.shape(b) != g.shape(*r) {
        return None;
    }
    let mut p = Patch::default();
    let sel = p.node(g, Op::Where, vec![Old(*c), Old(a), Old(b)])?;
    let q = p.unary(g, ul, sel);
    p.done(q)
}

/// `u(v)` for the functions the compiler evaluates exactly as the generated code does.
fn eval_simple(u: UnaryOp, v: f32) -> Option<f32> {
    u.exact().then(|| u.reference(f64::from(v)) as f32)
}

/// `u(pad(x)) -> pad(u(x))`: the function runs on the smaller tensor (a constant border
/// `v` becomes `u(v)`; edge and reflect borders copy values, so any `u` moves)
pub fn commutative_unary_past_pad(g: &Graph, n: usize) -> Option<Patch> {
    let (u, e) = root_un(g, n)?;
    let en = def(g, e)?;
    let (Op::Pad { pads, mode }, [x]) = (&en.op, en.inputs.as_slice()) else {
        return None;
    };
    let mode = match mode {
        crate::ir::PadMode::Constant(v) => {
            let w = eval_simple(u, *v)?;
            if v.is_nan() || w.is_nan() {
                return None;
            }
            crate::ir::PadMode::Constant(w)
        }
        other => *other,
    };
    let mut p = Patch::default();
    let y = p.unary(g, u, Old(*x));
    let r = p.node(
        g,
        Op::Pad {
            pads: pads.clone(),
            mode,
        },
        vec![y],
    )?;
    p.done(r)
}

/// `resize(x) * c -> resize(x * c)` (bilinear, also `/ c`, `-x`): interpolation is
/// linear, so the scale runs before the upsampling, on the smaller tensor
pub fn commutative_scale_past_resize(g: &Graph, n: usize) -> Option<Patch> {
    unary_inside(g, n, |op, u| {
        scale(u) && matches!(op, Op::Resize(ResizeMode::Bilinear { .. }))
    })
}

/// `conv_transpose2d(x, W) * c -> conv_transpose2d(x * c, W)` without bias (also `/ c`,
/// `-x`): the scale runs on the smaller input
pub fn commutative_scale_into_conv_transpose(g: &Graph, n: usize) -> Option<Patch> {
    let (_, e) = root_un(g, n)?;
    if def(g, e)?.inputs.len() != 2 {
        return None; // with a bias, the scale would apply to it too
    }
    unary_inside(g, n, |op, u| {
        scale(u) && matches!(op, Op::ConvTranspose2d(_))
    })
}

// ---------------------------------------------------------------------------------------
// Folding: batch norm into the convolution before it
// ---------------------------------------------------------------------------------------

/// `batch_norm(conv2d(x, w, b)) -> conv2d(x, w * s, (b - mean) * s + beta)` with
/// `s = gamma / sqrt(var + eps)` per output channel, when `eps > 0`. The folded weights are
/// computed from the parameters by small per-channel ops, which stage `prepare` runs once
/// at load time, so the parameters keep their names and shapes. Exact: the scale moves
/// inside the convolution's sum (`s * sum(w * x)` becomes `sum((w * s) * x)`, as `(x * a) *
/// b -> x * (a * b)` regroups a product) and the shift moves out of the epilogue, so the
/// results differ by the rounding of the terms; a positive `eps` keeps `s` finite and at
/// most `|gamma| / sqrt(eps)` for any variance a batch norm can hold, so `w * s` overflows
/// only at extreme magnitudes, where the unfolded output overflows too (one form may give
/// NaN where the other gives inf). A variance below `-eps` makes both forms NaN; exactly
/// `-eps`, `s` infinite (the unfolded output inf, the folded one inf or NaN). PyTorch's
/// ONNX exporter folds batch norms the same way.
pub fn folding_batch_norm_into_conv_positive_eps(g: &Graph, n: usize) -> Option<Patch> {
    fold_batch_norm_into_conv(g, n, true)
}

/// [`folding_batch_norm_into_conv_positive_eps`] for `eps <= 0` (value-changing: a zero
/// variance makes `s` infinite, and the folded weights then turn an infinite unfolded
/// output into NaN).
pub fn folding_batch_norm_into_conv(g: &Graph, n: usize) -> Option<Patch> {
    fold_batch_norm_into_conv(g, n, false)
}

/// `batch_norm(linear(x, w, b)) -> linear(x, w * s, (b - mean) * s + beta)` for a 2-d
/// `[N, C]` linear output (the batch norm's channels are the linear's output features),
/// `s = gamma / sqrt(var + eps)`, when `eps > 0`: exact for the reasons of
/// [`folding_batch_norm_into_conv_positive_eps`].
pub fn folding_batch_norm_into_linear_positive_eps(g: &Graph, n: usize) -> Option<Patch> {
    fold_batch_norm_into_linear(g, n, true)
}

/// [`folding_batch_norm_into_linear_positive_eps`] for `eps <= 0` (value-changing, as
/// [`folding_batch_norm_into_conv`]).
pub fn folding_batch_norm_into_linear(g: &Graph, n: usize) -> Option<Patch> {
    fold_batch_norm_into_linear(g, n, false)
}

/// The batch norm at `n` (its `eps` positive exactly when `positive_eps`), as
/// `(output, gamma, beta, mean, var, eps)`.
fn batch_norm_at(
    g: &Graph,
    n: usize,
    positive_eps: bool,
) -> Option<(ValueId, ValueId, ValueId, ValueId, ValueId, f32)> {
    let node = at(g, n)?;
    let (Op::BatchNorm { eps }, &[c, gamma, beta, mean, var]) = (&node.op, node.inputs.as_slice())
    else {
        return None;
    };
    ((*eps > 0.0) == positive_eps).then_some((c, gamma, beta, mean, var, *eps))
}

/// The folded operands of a batch norm after a product with weight `w` (scaled along its
/// first axis, whose other axes are `ones`) and optional bias: `(w * s, bias)`.
#[allow(clippy::too_many_arguments)]
fn folded_weight_and_bias(
    g: &Graph,
    p: &mut Patch,
    (w, bias): (ValueId, Option<ValueId>),
    ones: usize,
    (gamma, beta, mean, var, eps): (ValueId, ValueId, ValueId, ValueId, f32),
) -> Option<(Operand, Operand)> {
    let channels = *g.shape(gamma).first()?;
    let shifted = p.unary(g, UnaryOp::AddScalar(eps), Old(var));
    let inv = p.unary(g, UnaryOp::Rsqrt, shifted);
    let scale = p.binary(g, BinaryOp::Mul, Old(gamma), inv)?;
    let mut shape = vec![channels];
    shape.resize(1 + ones, 1);
    let scale_along = p.node_shaped(g, Op::Reshape(ReshapeKind::Reshape), vec![scale], shape)?;
    let weight = p.binary(g, BinaryOp::Mul, Old(w), scale_along)?;
    let bias = match bias {
        Some(b) => {
            let centred = p.binary(g, BinaryOp::Sub, Old(b), Old(mean))?;
            let scaled = p.binary(g, BinaryOp::Mul, centred, scale)?;
            p.binary(g, BinaryOp::Add, scaled, Old(beta))?
        }
        None => {
            let moved = p.binary(g, BinaryOp::Mul, Old(mean), scale)?;
            p.binary(g, BinaryOp::Sub, Old(beta), moved)?
        }
    };
    Some((weight, bias))
}

/// The two conv folds: [`folding_batch_norm_into_conv_positive_eps`] and
/// [`folding_batch_norm_into_conv`].
fn fold_batch_norm_into_conv(g: &Graph, n: usize, positive_eps: bool) -> Option<Patch> {
    let (c, gamma, beta, mean, var, eps) = batch_norm_at(g, n, positive_eps)?;
    let conv = def(g, c)?;
    let Op::Conv2d(attrs) = &conv.op else {
        return None;
    };
    let (x, w, bias) = match conv.inputs.as_slice() {
        [x, w] => (*x, *w, None),
        [x, w, b] => (*x, *w, Some(*b)),
        _ => return None,
    };
    let mut p = Patch::default();
    let bn = (gamma, beta, mean, var, eps);
    let (weight, bias) = folded_weight_and_bias(g, &mut p, (w, bias), 3, bn)?;
    let folded = p.node(g, Op::Conv2d(*attrs), vec![Old(x), weight, bias])?;
    p.done(folded)
}

/// The two linear folds: [`folding_batch_norm_into_linear_positive_eps`] and
/// [`folding_batch_norm_into_linear`].
fn fold_batch_norm_into_linear(g: &Graph, n: usize, positive_eps: bool) -> Option<Patch> {
    let (l, gamma, beta, mean, var, eps) = batch_norm_at(g, n, positive_eps)?;
    let linear = def(g, l)?;
    if !matches!(linear.op, Op::Linear) || g.shape(l).len() != 2 {
        return None;
    }
    let (x, w, bias) = match linear.inputs.as_slice() {
        [x, w] => (*x, *w, None),
        [x, w, b] => (*x, *w, Some(*b)),
        _ => return None,
    };
    let mut p = Patch::default();
    let bn = (gamma, beta, mean, var, eps);
    let (weight, bias) = folded_weight_and_bias(g, &mut p, (w, bias), 1, bn)?;
    let folded = p.node(g, Op::Linear, vec![Old(x), weight, bias])?;
    p.done(folded)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether [`nonneg`] proves each of the model's outputs nonnegative.
    fn proved(body: &str) -> Vec<bool> {
        let g = crate::lower_str(&format!("pub model M{body}"))
            .unwrap()
            .remove(0)
            .graph;
        g.outputs.iter().map(|&o| nonneg(&g, o, 8)).collect()
    }

    /// Each kind of op-level sign fact, read from the family files' facts: proved where
    /// the op keeps the sign of the operands it names, not proved where an operand may be
    /// negative.
    #[test]
    fn nonneg_follows_each_ops_stated_fact() {
        let same = "[1, 2, 4, 4]";
        let cases: &[(&str, &str, [bool; 2])] = &[
            // always
            ("softmax(x, 1), log_softmax(x, 1)", same, [true, false]),
            // its first operand
            (
                "max_pool2d(exp(x), 2), max_pool2d(x, 2)",
                "[1, 2, 2, 2]",
                [true, false],
            ),
            (
                "transpose(relu(x), 2, 3), transpose(x, 2, 3)",
                same,
                [true, false],
            ),
            // all operands
            (
                "concat([exp(x), relu(x)], 1), concat([exp(x), x], 1)",
                "[1, 4, 4, 4]",
                [true, false],
            ),
            (
                "exp(x) * sigmoid(x), exp(x) - sigmoid(x)",
                same,
                [true, false],
            ),
            // any operand
            (
                "maximum(x, exp(x)), minimum(x, exp(x))",
                same,
                [true, false],
            ),
            // the branches after the condition
            (
                "where(x, exp(x), relu(x)), where(exp(x), x, relu(x))",
                same,
                [true, false],
            ),
            // mixed by the op
            (
                "conv2d(exp(x), 2, 1, key = \"c\"), batch_norm(exp(x), 2, key = \"b\")",
                same,
                [false, false],
            ),
        ];
        for (outputs, shape, expected) in cases {
            let body = format!("(x: {same}) -> ({shape}, {shape}) {{ ({outputs}) }}");
            assert_eq!(proved(&body), expected, "{outputs}");
        }
    }
}

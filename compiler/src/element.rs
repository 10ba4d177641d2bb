//! Element expressions: what one output element of a fused block computes, as data.
//!
//! `fuse` decides which nodes form a block; this module turns a block into an
//! [`ElementProgram`]: index expressions ([`Ix`]) over the sink's output index, and value
//! expressions ([`Ex`]) that load external operands through those indices. Reorganize,
//! Shuffle, slice, concat, pad, expand and broadcasting become index arithmetic, never
//! copies. Values read twice at the same index are computed once (`lets`).
//!
//! ```text
//!   t = transpose(x, 0, 1) : [3, 2]     out[i0, i1] = relu(x[i1 * 3 + i0])
//!   out = relu(t)
//! ```
//!
//! `codegen` prints a program as Rust; [`ElementProgram::eval`] evaluates it on numbers,
//! so plans can be checked against the interpreter without rustc.

use std::collections::HashMap;

use crate::fuse::Block;
use crate::ir::{BinaryOp, Graph, Op, PadMode, ResizeMode, UnaryOp, ValueId, ValueKind};
use crate::ops::layout;

/// An index expression over the output index variables `i0, i1, ...`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Ix {
    /// Output axis `k`'s index.
    Var(usize),
    /// A constant.
    Const(usize),
    /// Sum.
    Add(Box<Ix>, Box<Ix>),
    /// Product with a constant.
    Mul(Box<Ix>, usize),
    /// Integer division by a constant.
    Div(Box<Ix>, usize),
    /// Remainder by a constant.
    Rem(Box<Ix>, usize),
    /// `a - c`, only where `a >= c` is guaranteed by an enclosing range test.
    Sub(Box<Ix>, usize),
    /// numpy `reflect` padding: `j = a - before`, mirrored into `0..len`.
    Reflect {
        /// the padded index
        index: Box<Ix>,
        /// padding before the axis
        before: usize,
        /// the axis length
        len: usize,
    },
    /// numpy `edge` padding: `a - before` clamped into `0..len`.
    Clamp {
        /// the padded index
        index: Box<Ix>,
        /// padding before the axis
        before: usize,
        /// the axis length
        len: usize,
    },
}

impl Ix {
    /// `a + b`, folded where constant
    pub(crate) fn add(a: Ix, b: Ix) -> Ix {
        match (a, b) {
            (Ix::Const(0), x) | (x, Ix::Const(0)) => x,
            (Ix::Const(x), Ix::Const(y)) => Ix::Const(x + y),
            (x, y) => Ix::Add(Box::new(x), Box::new(y)),
        }
    }
    /// `a * c`, folded where constant
    pub(crate) fn mul(a: Ix, c: usize) -> Ix {
        match (a, c) {
            (_, 0) => Ix::Const(0),
            (x, 1) => x,
            (Ix::Const(x), c) => Ix::Const(x * c),
            (x, c) => Ix::Mul(Box::new(x), c),
        }
    }
    /// `a / c`, folded where constant
    pub(crate) fn div(a: Ix, c: usize) -> Ix {
        match (a, c) {
            (x, 1) => x,
            (Ix::Const(x), c) => Ix::Const(x / c.max(1)),
            (x, c) => Ix::Div(Box::new(x), c),
        }
    }
    /// `a % c`, folded where constant
    pub(crate) fn rem(a: Ix, c: usize) -> Ix {
        match (a, c) {
            (_, 1) => Ix::Const(0),
            (Ix::Const(x), c) => Ix::Const(x % c.max(1)),
            (x, c) => Ix::Rem(Box::new(x), c),
        }
    }
    /// `a - c` (saturating), folded where constant
    pub(crate) fn sub(a: Ix, c: usize) -> Ix {
        match (a, c) {
            (x, 0) => x,
            (Ix::Const(x), c) => Ix::Const(x.saturating_sub(c)),
            (x, c) => Ix::Sub(Box::new(x), c),
        }
    }

    /// Evaluates at the output index `vars`.
    pub fn eval(&self, vars: &[usize]) -> usize {
        match self {
            Ix::Var(k) => vars.get(*k).copied().unwrap_or(0),
            Ix::Const(c) => *c,
            Ix::Add(a, b) => a.eval(vars) + b.eval(vars),
            Ix::Mul(a, c) => a.eval(vars) * c,
            Ix::Div(a, c) => a.eval(vars) / (*c).max(1),
            Ix::Rem(a, c) => a.eval(vars) % (*c).max(1),
            Ix::Sub(a, c) => a.eval(vars).saturating_sub(*c),
            Ix::Reflect { index, before, len } => reflect(index.eval(vars), *before, *len),
            Ix::Clamp { index, before, len } => clamp(index.eval(vars), *before, *len),
        }
    }
}

/// `i - before` mirrored into `0..len` (numpy `reflect`, pads shorter than the axis).
pub fn reflect(i: usize, before: usize, len: usize) -> usize {
    let j = i as isize - before as isize;
    let last = len as isize - 1;
    let r = if j < 0 {
        -j
    } else if j > last {
        2 * last - j
    } else {
        j
    };
    r.clamp(0, last.max(0)) as usize
}

/// `i - before` clamped into `0..len` (numpy `edge`).
pub fn clamp(i: usize, before: usize, len: usize) -> usize {
    i.saturating_sub(before).min(len.saturating_sub(1))
}

/// A value expression for one element.
#[derive(Clone, Debug, PartialEq)]
pub enum Ex {
    /// Operand `k` of the block at a flat offset.
    Load(usize, Ix),
    /// The anchor's value at the current index (epilogues only).
    Anchor,
    /// A constant.
    Const(f32),
    /// A unary function.
    Unary(UnaryOp, Box<Ex>),
    /// A binary function.
    Binary(BinaryOp, Box<Ex>, Box<Ex>),
    /// `a` where `cond != 0`, else `b`.
    Select(Box<Ex>, Box<Ex>, Box<Ex>),
    /// `x` if positive else `slope * x`.
    Prelu(Box<Ex>, Box<Ex>),
    /// `then` when `lo <= index < hi`, else `otherwise`.
    InRange {
        /// the tested index
        index: Ix,
        /// inclusive lower bound
        lo: usize,
        /// exclusive upper bound
        hi: usize,
        /// value inside
        then: Box<Ex>,
        /// value outside
        otherwise: Box<Ex>,
    },
    /// The `k`-th shared subexpression.
    Let(usize),
}

/// One fused block, element by element.
#[derive(Clone, Debug, PartialEq)]
pub struct ElementProgram {
    /// The values the block reads, in order of first use: operand `k` is `operands[k]`.
    pub operands: Vec<ValueId>,
    /// Shape of the output (the sink's shape).
    pub shape: Vec<usize>,
    /// Shared subexpressions, each may use earlier ones.
    pub lets: Vec<Ex>,
    /// The output element.
    pub value: Ex,
}

/// Builds the element program of a block. `anchor` is the block's Many-to-Many node,
/// whose value is [`Ex::Anchor`]; `None` on failure (an op that cannot be translated).
pub fn build(graph: &Graph, block: &Block) -> Option<ElementProgram> {
    let sink = block.sink();
    let node = graph.nodes.get(sink)?;
    let shape = graph.shape(node.output).to_vec();
    let mut uses: HashMap<usize, usize> = HashMap::new();
    for &m in &block.nodes {
        for &v in &graph.nodes.get(m)?.inputs {
            if let Some(ValueKind::Node(p)) = graph.values.get(v).map(|v| &v.kind) {
                if block.nodes.contains(p) {
                    *uses.entry(*p).or_insert(0) += 1;
                }
            }
        }
    }
    let mut builder = Builder {
        graph,
        block,
        operands: Vec::new(),
        lets: Vec::new(),
        memo: HashMap::new(),
        uses,
        guarded: 0,
    };
    let vars: Vec<Ix> = (0..shape.len()).map(Ix::Var).collect();
    let value = builder.node_value(sink, &vars)?;
    Some(ElementProgram {
        operands: builder.operands,
        shape,
        lets: builder.lets,
        value,
    })
}

struct Builder<'a> {
    graph: &'a Graph,
    block: &'a Block,
    operands: Vec<ValueId>,
    lets: Vec<Ex>,
    memo: HashMap<(usize, Vec<Ix>), usize>,
    uses: HashMap<usize, usize>,
    /// How many range tests (concat parts, constant pads) enclose the value being built:
    /// an index there is only valid inside its test, so nothing built there may become a
    /// `let` (lets are computed for every element).
    guarded: usize,
}

/// Row-major strides of a shape (the last axis has stride 1).
pub fn row_major_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    let mut acc = 1;
    for i in (0..shape.len()).rev() {
        if let Some(s) = strides.get_mut(i) {
            *s = acc;
        }
        acc *= shape.get(i).copied().unwrap_or(1);
    }
    strides
}

/// Strides of `shape` broadcast into `out` (0 on broadcast axes).
pub fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let own = row_major_strides(shape);
    let offset = out.len() - shape.len().min(out.len());
    (0..out.len())
        .map(|i| {
            if i < offset {
                return 0;
            }
            let d = shape.get(i - offset).copied().unwrap_or(1);
            if d == 1 {
                0
            } else {
                own.get(i - offset).copied().unwrap_or(0)
            }
        })
        .collect()
}

/// Flat offset of `idx` in a row-major tensor of `shape`.
pub(crate) fn flat(idx: &[Ix], shape: &[usize]) -> Ix {
    let strides = row_major_strides(shape);
    idx.iter().zip(&strides).fold(Ix::Const(0), |acc, (i, &s)| {
        Ix::add(acc, Ix::mul(i.clone(), s))
    })
}

/// The index in a row-major tensor of `shape` at flat offset `flat_ix` (the inverse of
/// [`flat`]; the first axis is not reduced, so an offset past the end stays past it).
pub(crate) fn unflatten(flat_ix: &Ix, shape: &[usize]) -> Vec<Ix> {
    let strides = row_major_strides(shape);
    shape
        .iter()
        .zip(&strides)
        .enumerate()
        .map(|(k, (&d, &s))| {
            if k == 0 {
                Ix::div(flat_ix.clone(), s)
            } else {
                Ix::rem(Ix::div(flat_ix.clone(), s), d)
            }
        })
        .collect()
}

/// The index of an operand of shape `shape` broadcast into an output index `idx`.
fn broadcast_index(idx: &[Ix], shape: &[usize]) -> Vec<Ix> {
    let offset = idx.len().saturating_sub(shape.len());
    shape
        .iter()
        .enumerate()
        .map(|(k, &d)| {
            if d == 1 {
                Ix::Const(0)
            } else {
                idx.get(offset + k).cloned().unwrap_or(Ix::Const(0))
            }
        })
        .collect()
}

impl Builder<'_> {
    /// The value `v` at index `idx` (in `v`'s own shape).
    fn value(&mut self, v: ValueId, idx: &[Ix]) -> Option<Ex> {
        if let Some(ValueKind::Node(p)) = self.graph.values.get(v).map(|v| &v.kind) {
            if self.block.nodes.contains(p) {
                return self.node_value(*p, idx);
            }
        }
        let k = match self.operands.iter().position(|&o| o == v) {
            Some(k) => k,
            None => {
                self.operands.push(v);
                self.operands.len() - 1
            }
        };
        Some(Ex::Load(k, flat(idx, self.graph.shape(v))))
    }

    fn node_value(&mut self, node: usize, idx: &[Ix]) -> Option<Ex> {
        if Some(node) == self.block.anchor {
            return Some(Ex::Anchor);
        }
        let key = (node, idx.to_vec());
        if let Some(&k) = self.memo.get(&key) {
            // lets are only made outside range tests, so they are valid everywhere
            return Some(Ex::Let(k));
        }
        let ex = self.compute(node, idx)?;
        if self.guarded == 0
            && self.uses.get(&node).copied().unwrap_or(0) > 1
            && !matches!(ex, Ex::Load(..) | Ex::Const(_) | Ex::Anchor)
        {
            self.lets.push(ex);
            let k = self.lets.len() - 1;
            self.memo.insert(key, k);
            return Some(Ex::Let(k));
        }
        Some(ex)
    }

    fn compute(&mut self, node: usize, idx: &[Ix]) -> Option<Ex> {
        let graph = self.graph;
        let n = graph.nodes.get(node)?;
        if !translates(&n.op) {
            return None;
        }
        let out_shape = graph.shape(n.output).to_vec();
        let input = |i: usize| n.inputs.get(i).copied();
        let shape_of = |i: usize| {
            n.inputs
                .get(i)
                .map(|&v| graph.shape(v).to_vec())
                .unwrap_or_default()
        };
        Some(match &n.op {
            Op::Unary(u) => Ex::Unary(*u, Box::new(self.value(input(0)?, idx)?)),
            Op::Binary(b) => {
                let a = self.value(input(0)?, &broadcast_index(idx, &shape_of(0)))?;
                let c = self.value(input(1)?, &broadcast_index(idx, &shape_of(1)))?;
                Ex::Binary(*b, Box::new(a), Box::new(c))
            }
            Op::Where => {
                let c = self.value(input(0)?, &broadcast_index(idx, &shape_of(0)))?;
                let a = self.value(input(1)?, &broadcast_index(idx, &shape_of(1)))?;
                let b = self.value(input(2)?, &broadcast_index(idx, &shape_of(2)))?;
                Ex::Select(Box::new(c), Box::new(a), Box::new(b))
            }
            Op::Prelu => {
                let x = self.value(input(0)?, idx)?;
                let channel = crate::ops::select::prelu_slope_index(idx, &shape_of(1))?;
                let s = self.value(input(1)?, &[channel])?;
                Ex::Prelu(Box::new(x), Box::new(s))
            }
            Op::BatchNorm { eps } => {
                let c = [idx.get(1).cloned()?];
                let x = self.value(input(0)?, idx)?;
                let [w, b, mean, var] =
                    [1, 2, 3, 4].map(|i| input(i).and_then(|v| self.value(v, &c)));
                crate::ops::norm::batch_norm_element(x, [w?, b?, mean?, var?], *eps)
            }
            Op::Reshape(_) => {
                let in_idx = layout::reshape_index(idx, &out_shape, &shape_of(0));
                self.value(input(0)?, &in_idx)?
            }
            Op::Transpose { perm } => {
                self.value(input(0)?, &layout::transpose_index(idx, perm)?)?
            }
            Op::Slice { starts, steps, .. } => {
                self.value(input(0)?, &layout::slice_index(idx, starts, steps))?
            }
            Op::Expand => self.value(input(0)?, &broadcast_index(idx, &shape_of(0)))?,
            Op::Concat { axis } => {
                let axis = *axis;
                let shapes: Vec<Vec<usize>> = (0..n.inputs.len()).map(shape_of).collect();
                let axis_ix = idx.get(axis)?.clone();
                let mut result: Option<Ex> = None;
                for (i, (start, len)) in layout::concat_parts(&shapes, axis)
                    .into_iter()
                    .enumerate()
                    .rev()
                {
                    let in_idx = layout::concat_index(idx, axis, start)?;
                    self.guarded += 1;
                    let part = self.value(input(i)?, &in_idx);
                    self.guarded -= 1;
                    let part = part?;
                    result = Some(match result {
                        None => part,
                        Some(rest) => Ex::InRange {
                            index: axis_ix.clone(),
                            lo: start,
                            hi: start + len,
                            then: Box::new(part),
                            otherwise: Box::new(rest),
                        },
                    });
                }
                result?
            }
            Op::Pad { pads, mode } => {
                let (in_idx, tests) = layout::pad_index(idx, pads, *mode, &shape_of(0))?;
                let guard = usize::from(!tests.is_empty());
                self.guarded += guard;
                let value = self.value(input(0)?, &in_idx);
                self.guarded -= guard;
                let mut value = value?;
                if let PadMode::Constant(c) = mode {
                    for (index, lo, hi) in tests.into_iter().rev() {
                        value = Ex::InRange {
                            index,
                            lo,
                            hi,
                            then: Box::new(value),
                            otherwise: Box::new(Ex::Const(*c)),
                        };
                    }
                }
                value
            }
            Op::Resize(ResizeMode::Nearest) => {
                let in_idx = layout::resize_nearest_index(idx, &shape_of(0), &out_shape);
                self.value(input(0)?, &in_idx)?
            }
            // the ops `translates` refuses (returned above): no index translation
            Op::Resize(ResizeMode::Bilinear { .. })
            | Op::Linear
            | Op::MatMul
            | Op::MatMulPanels { .. }
            | Op::PackPanels
            | Op::TileConvWeights { .. }
            | Op::WinogradWeights { .. }
            | Op::Conv2d(_)
            | Op::ConvTranspose2d(_)
            | Op::MaxPool2d(_)
            | Op::AvgPool2d(_)
            | Op::GlobalAvgPool
            | Op::GlobalMaxPool
            | Op::Reduce { .. }
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::LayerNorm { .. }
            | Op::GroupNorm { .. }
            | Op::InstanceNorm { .. }
            | Op::Gather { .. }
            | Op::Resample(_)
            | Op::Scan { .. } => return None,
        })
    }
}

/// Advances `vars`, an index into `shape`, to the next flat position (row-major).
fn next_index(vars: &mut [usize], shape: &[usize]) {
    for (v, &d) in vars.iter_mut().zip(shape).rev() {
        *v += 1;
        if *v < d {
            return;
        }
        *v = 0;
    }
}

/// How many consecutive outputs a store map keeps contiguous: the largest `run` dividing
/// the last axis's length such that `map(o + 1) == map(o) + 1` whenever `o + 1` is not a
/// multiple of `run` (a transpose that keeps the last axis moves whole runs of it, and the
/// kernel then asks the map once per run). 1 for shapes over 2^22 elements (not checked).
pub fn contiguous_run(map: &Ix, shape: &[usize]) -> usize {
    let total: usize = shape.iter().product();
    let last = shape.last().copied().unwrap_or(1);
    if total == 0 || last <= 1 || total > 1 << 22 {
        return 1;
    }
    // the index of flat position `o`, advanced one position at a time
    let mut vars = vec![0usize; shape.len()];
    let gcd = |mut a: usize, mut b: usize| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    crate::work::add(crate::work::Stage::Codegen, total);
    let mut run = last;
    let mut prev = map.eval(&vars);
    for o in 1..total {
        next_index(&mut vars, shape);
        let here = map.eval(&vars);
        if o % run != 0 && here != prev.wrapping_add(1) {
            run = gcd(run, o % last);
        }
        prev = here;
    }
    run.max(1)
}

/// The constant step of a store map down a column of rows `width` long (a product's
/// output rows, over `shape`'s flat positions): `step` such that `map(o + width) ==
/// map(o) + step` for every `o` with `o + width` inside the shape, or 0 when there is
/// none (the step varies or is not positive, a single row, or a shape over 2^22
/// elements, not checked). A transposed store (attention's keys stored as K^T, `run` 1)
/// keeps step 1: the kernel then asks the map once per column of a block and writes the
/// column's values `step` apart.
pub fn column_step(map: &Ix, shape: &[usize], width: usize) -> usize {
    let total: usize = shape.iter().product();
    let last = width.max(1);
    if total <= last || total > 1 << 22 {
        return 0;
    }
    let mut vars = vec![0usize; shape.len()];
    crate::work::add(crate::work::Stage::Codegen, total);
    // the map's values of the last `last` positions, by position modulo `last`
    let mut row = vec![0usize; last];
    let mut step = None;
    for o in 0..total {
        let here = map.eval(&vars);
        let Some(slot) = row.get_mut(o % last) else {
            return 0;
        };
        if o >= last {
            match (here.checked_sub(*slot), step) {
                (Some(s), None) if s > 0 => step = Some(s),
                (Some(s), Some(want)) if s == want => {}
                _ => return 0,
            }
        }
        *slot = here;
        next_index(&mut vars, shape);
    }
    step.unwrap_or(0)
}

/// True when [`build`] evaluates the op element by element (index translation): the
/// one list of such ops, which the planner reads (`fuse::is_translatable`). Exhaustive, so
/// a new op does not compile until it is placed on one side; an op moved to `true` needs
/// its arm in the element builder.
pub fn translates(op: &Op) -> bool {
    match op {
        Op::Unary(_)
        | Op::Binary(_)
        | Op::Where
        | Op::Prelu
        | Op::BatchNorm { .. }
        | Op::Reshape(_)
        | Op::Transpose { .. }
        | Op::Slice { .. }
        | Op::Expand
        | Op::Concat { .. }
        | Op::Pad { .. } => true,
        // nearest neighbour reads one input element per output; the other modes several
        Op::Resize(mode) => *mode == ResizeMode::Nearest,
        // kernels, index data (gather), multi-tap resampling, load-time layouts
        Op::Linear
        | Op::MatMul
        | Op::MatMulPanels { .. }
        | Op::PackPanels
        | Op::TileConvWeights { .. }
        | Op::WinogradWeights { .. }
        | Op::Conv2d(_)
        | Op::ConvTranspose2d(_)
        | Op::MaxPool2d(_)
        | Op::AvgPool2d(_)
        | Op::GlobalAvgPool
        | Op::GlobalMaxPool
        | Op::Reduce { .. }
        | Op::Softmax { .. }
        | Op::LogSoftmax { .. }
        | Op::LayerNorm { .. }
        | Op::GroupNorm { .. }
        | Op::InstanceNorm { .. }
        | Op::Gather { .. }
        | Op::Resample(_)
        | Op::Scan { .. } => false,
    }
}

/// The flat position in the last node's output where the value at index `i0, i1, ...` of
/// `shape` lands after the transposes and reshapes of `chain` (nodes in order): the store
/// map of an anchor block whose epilogue ends in a layout change.
pub fn store_map(graph: &Graph, chain: &[usize], shape: &[usize]) -> Option<Ix> {
    // a reshape keeps the flat position: keep it flat until a transpose needs axes
    let mut idx: Vec<Ix> = (0..shape.len()).map(Ix::Var).collect();
    let mut flat_pos: Option<Ix> = None;
    let mut current = shape.to_vec();
    for &c in chain {
        let node = graph.nodes.get(c)?;
        let out = graph.shape(node.output).to_vec();
        match &node.op {
            Op::Transpose { perm } => {
                if let Some(f) = flat_pos.take() {
                    idx = unflatten(&f, &current);
                }
                idx = perm
                    .iter()
                    .map(|&p| idx.get(p).cloned())
                    .collect::<Option<Vec<Ix>>>()?;
            }
            Op::Reshape(_) => {
                if flat_pos.is_none() {
                    flat_pos = Some(flat(&idx, &current));
                }
            }
            _ => return None,
        }
        current = out;
    }
    Some(flat_pos.unwrap_or_else(|| flat(&idx, &current)))
}

impl ElementProgram {
    /// Evaluates the whole output: `operands[k]` holds the data of operand `k`, `anchor` the
    /// anchor's output (for epilogue blocks).
    pub fn eval(&self, operands: &[&[f32]], anchor: Option<&[f32]>) -> Vec<f32> {
        let total: usize = self.shape.iter().product();
        let strides = row_major_strides(&self.shape);
        let mut out = vec![0.0f32; total];
        let mut vars = vec![0usize; self.shape.len()];
        let mut lets = vec![0.0f32; self.lets.len()];
        for (o, slot) in out.iter_mut().enumerate() {
            for (k, (v, &s)) in vars.iter_mut().zip(&strides).enumerate() {
                *v = (o / s) % self.shape.get(k).copied().unwrap_or(1).max(1);
            }
            let a = anchor.and_then(|a| a.get(o)).copied().unwrap_or(f32::NAN);
            for k in 0..self.lets.len() {
                let value = self
                    .lets
                    .get(k)
                    .map_or(f32::NAN, |e| eval_ex(e, &vars, operands, a, &lets));
                if let Some(l) = lets.get_mut(k) {
                    *l = value;
                }
            }
            *slot = eval_ex(&self.value, &vars, operands, a, &lets);
        }
        out
    }
}

fn eval_ex(e: &Ex, vars: &[usize], operands: &[&[f32]], anchor: f32, lets: &[f32]) -> f32 {
    match e {
        Ex::Load(k, ix) => operands
            .get(*k)
            .and_then(|o| o.get(ix.eval(vars)))
            .copied()
            .unwrap_or(f32::NAN),
        Ex::Anchor => anchor,
        Ex::Const(c) => *c,
        Ex::Unary(op, a) => unary_value(*op, eval_ex(a, vars, operands, anchor, lets)),
        Ex::Binary(op, a, b) => {
            let (x, y) = (
                eval_ex(a, vars, operands, anchor, lets),
                eval_ex(b, vars, operands, anchor, lets),
            );
            op.reference(f64::from(x), f64::from(y)) as f32
        }
        Ex::Select(c, a, b) => {
            if eval_ex(c, vars, operands, anchor, lets) != 0.0 {
                eval_ex(a, vars, operands, anchor, lets)
            } else {
                eval_ex(b, vars, operands, anchor, lets)
            }
        }
        Ex::Prelu(x, s) => {
            let v = eval_ex(x, vars, operands, anchor, lets);
            if v < 0.0 {
                eval_ex(s, vars, operands, anchor, lets) * v
            } else {
                v
            }
        }
        Ex::InRange {
            index,
            lo,
            hi,
            then,
            otherwise,
        } => {
            let i = index.eval(vars);
            if *lo <= i && i < *hi {
                eval_ex(then, vars, operands, anchor, lets)
            } else {
                eval_ex(otherwise, vars, operands, anchor, lets)
            }
        }
        Ex::Let(k) => lets.get(*k).copied().unwrap_or(f32::NAN),
    }
}

/// f32 value of a unary op: its row's f64 semantics, rounded.
pub fn unary_value(op: UnaryOp, x: f32) -> f32 {
    op.reference(f64::from(x)) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_runs_follow_the_last_axis() {
        let v = Ix::Var;
        // [2, 3, 4] stored as [3, 2, 4]: runs of the 4 values of the last axis
        let swap = Ix::add(Ix::add(Ix::mul(v(1), 8), Ix::mul(v(0), 4)), v(2));
        assert_eq!(contiguous_run(&swap, &[2, 3, 4]), 4);
        // the identity keeps whole rows
        let flat = Ix::add(Ix::add(Ix::mul(v(0), 12), Ix::mul(v(1), 4)), v(2));
        assert_eq!(contiguous_run(&flat, &[2, 3, 4]), 4);
        // [2, 4] stored transposed: no run
        let transposed = Ix::add(Ix::mul(v(1), 2), v(0));
        assert_eq!(contiguous_run(&transposed, &[2, 4]), 1);
        // [1, 6] as two halves of 3, swapped: runs of 3
        let halves = Ix::add(
            Ix::mul(Ix::rem(Ix::add(Ix::div(v(1), 3), Ix::Const(1)), 2), 3),
            Ix::rem(v(1), 3),
        );
        assert_eq!(contiguous_run(&halves, &[1, 6]), 3);
    }

    #[test]
    fn column_steps_are_constant_or_zero() {
        let v = Ix::Var;
        // [2, 4] stored transposed: down a column, the next value
        let transposed = Ix::add(Ix::mul(v(1), 2), v(0));
        assert_eq!(column_step(&transposed, &[2, 4], 4), 1);
        // the identity: a whole row down
        let flat = Ix::add(Ix::mul(v(0), 4), v(1));
        assert_eq!(column_step(&flat, &[3, 4], 4), 4);
        // [2, 3, 4] stored as [3, 2, 4]: 8 apart within a batch, but 4 - 2 * 8 from the
        // last row of the first to the first of the second
        let swap = Ix::add(Ix::add(Ix::mul(v(1), 8), Ix::mul(v(0), 4)), v(2));
        assert_eq!(column_step(&swap, &[2, 3, 4], 4), 0);
        // rows reversed: a negative step
        let row = Ix::rem(Ix::add(Ix::mul(v(0), 2), Ix::Const(2)), 3);
        let reversed = Ix::add(Ix::mul(row, 4), v(1));
        assert_eq!(column_step(&reversed, &[3, 4], 4), 0);
        // a single row has no step
        assert_eq!(column_step(&flat, &[1, 4], 4), 0);
        // attention's keys, rows of 128 reshaped to [1, 128, 2, 64] (2 heads), stored as
        // K^T [1, 2, 64, 128]: step 1 down the product's columns of 128
        let heads = Ix::add(Ix::add(Ix::mul(v(2), 8192), Ix::mul(v(3), 128)), v(1));
        assert_eq!(column_step(&heads, &[1, 128, 2, 64], 128), 1);
        // (down the reshaped shape's own columns of 64 the step is not constant)
        assert_eq!(column_step(&heads, &[1, 128, 2, 64], 64), 0);
    }
}

//! The reference interpreter: evaluates a [`Graph`] with `ndarray`, node by node.
//!
//! It is the independent oracle that every numeric test compares generated code
//! against, so it is written straight from the PyTorch / ONNX definition of each op and
//! shares nothing with the code generator. It is deliberately simple: one obvious loop
//! (or one `ndarray` call) per op, no fusion, no layout tricks. The evaluation of each op
//! family is written beside the family's other facts in `ops/` (`ops::conv::evaluate_conv2d`,
//! `ops::layout::evaluate`, ...); this module dispatches, checks operands and keeps the
//! elementwise ops, the fused-plan runner and the helpers those evaluations share. Sums that can be long
//! (matmul, linear, convolution, reductions, normalization statistics) are accumulated
//! in `f64`, and elementwise functions are evaluated in `f64`, so the oracle is closer
//! to the exact answer than an `f32` implementation can be.
//!
//! ```text
//!   inputs, params --> [ node 0 ] --> [ node 1 ] --> ... --> outputs
//!                      eval_op       eval_op                 (shapes checked at every step)
//! ```

use crate::ir::{
    winograd_points, BinaryOp, Conv2d, ConvWeights, Graph, Op, Pool2d, UnaryOp, Value, ValueId,
};
use crate::ops::{conv, layout, norm, pool, product, reduce, select};
use ndarray::{ArrayD, ArrayViewD, IxDyn, Zip};
use std::fmt;

/// Error of the interpreter (bad operand count, shape mismatch it detected, non-integer
/// gather index...).
#[derive(Debug, Clone, PartialEq)]
pub struct InterpError {
    /// What went wrong, with the node and op when known.
    pub message: String,
}

impl InterpError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        InterpError {
            message: message.into(),
        }
    }
}

impl fmt::Display for InterpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for InterpError {}

pub(crate) type Result<T> = std::result::Result<T, InterpError>;

/// Shorthand for an `Err` with a message.
pub(crate) fn fail<T>(message: impl Into<String>) -> Result<T> {
    Err(InterpError::new(message))
}

// ---------------------------------------------------------------------------------------
// Graph evaluation
// ---------------------------------------------------------------------------------------

/// Checks the input and parameter arrays against the graph and returns the value table
/// with them defined (in standard layout); every other value is still undefined.
fn bind_operands(
    graph: &Graph,
    inputs: &[ArrayD<f32>],
    params: &[ArrayD<f32>],
) -> Result<Vec<Option<ArrayD<f32>>>> {
    if inputs.len() != graph.inputs.len() {
        return fail(format!(
            "the graph has {} inputs, {} arrays were given",
            graph.inputs.len(),
            inputs.len()
        ));
    }
    if params.len() != graph.params.len() {
        return fail(format!(
            "the graph has {} parameters, {} arrays were given",
            graph.params.len(),
            params.len()
        ));
    }
    let mut env: Vec<Option<ArrayD<f32>>> = vec![None; graph.values.len()];
    for (position, (&id, array)) in graph.inputs.iter().zip(inputs).enumerate() {
        let value = value_of(graph, id)?;
        if array.shape() != value.shape.as_slice() {
            return fail(format!(
                "input {position} (`{}`) has shape {:?}, declared {:?}",
                value.name,
                array.shape(),
                value.shape
            ));
        }
        define(&mut env, id, standard_layout(array.clone()))?;
    }
    for (index, (param, array)) in graph.params.iter().zip(params).enumerate() {
        let value = value_of(graph, param.value)?;
        if array.shape() != param.shape.as_slice() || array.shape() != value.shape.as_slice() {
            return fail(format!(
                "parameter {index} (`{}`) has shape {:?}, declared {:?}",
                param.key,
                array.shape(),
                param.shape
            ));
        }
        define(&mut env, param.value, standard_layout(array.clone()))?;
    }
    Ok(env)
}

/// The parameters a compiled model's run graph reads: `params` (the loaded ones, in
/// order), then the outputs of its load-time graph (`CompiledModel::load`) evaluated on
/// them, as the generated `prepare` computes them.
pub fn with_derived(load: Option<&Graph>, params: &[ArrayD<f32>]) -> Result<Vec<ArrayD<f32>>> {
    let mut all = params.to_vec();
    if let Some(load) = load {
        all.extend(interpret(load, &[], params)?);
    }
    Ok(all)
}

/// Evaluates every node in order. `inputs[i]` is the value of `graph.inputs[i]`;
/// `params[i]` the value of `graph.params[i]`. Returns one array per `graph.outputs`
/// entry.
///
/// Input and parameter arrays must have their declared shapes, and the result of every
/// node must have the shape recorded for its output value; anything else is an error.
pub fn interpret(
    graph: &Graph,
    inputs: &[ArrayD<f32>],
    params: &[ArrayD<f32>],
) -> Result<Vec<ArrayD<f32>>> {
    let mut env = bind_operands(graph, inputs, params)?;

    for (index, node) in graph.nodes.iter().enumerate() {
        let out = value_of(graph, node.output)?;
        let context = |message: &str| {
            InterpError::new(format!(
                "node {index} ({}, output `{}`): {message}",
                node.op.name(),
                out.name
            ))
        };
        let operands = node
            .inputs
            .iter()
            .map(|&id| {
                env.get(id)
                    .and_then(Option::as_ref)
                    .ok_or_else(|| context(&format!("operand value {id} has not been computed")))
            })
            .collect::<Result<Vec<&ArrayD<f32>>>>()?;
        let result = eval_refs(&node.op, &operands, &out.shape).map_err(|e| context(&e.message))?;
        if result.shape() != out.shape.as_slice() {
            return Err(context(&format!(
                "result has shape {:?}, the graph records {:?}",
                result.shape(),
                out.shape
            )));
        }
        define(&mut env, node.output, result)?;
    }

    graph
        .outputs
        .iter()
        .map(|&id| {
            env.get(id)
                .and_then(Option::as_ref)
                .cloned()
                .ok_or_else(|| InterpError::new(format!("output value {id} was never computed")))
        })
        .collect()
}

/// The value with this id.
fn value_of(graph: &Graph, id: ValueId) -> Result<&Value> {
    graph
        .values
        .get(id)
        .ok_or_else(|| InterpError::new(format!("value {id} does not exist")))
}

/// Records the array of a value; a value is defined once.
fn define(env: &mut [Option<ArrayD<f32>>], id: ValueId, array: ArrayD<f32>) -> Result<()> {
    match env.get_mut(id) {
        Some(slot @ None) => {
            *slot = Some(array);
            Ok(())
        }
        Some(Some(_)) => fail(format!("value {id} is defined twice")),
        None => fail(format!("value {id} does not exist")),
    }
}

// ---------------------------------------------------------------------------------------
// Fusion plan execution
// ---------------------------------------------------------------------------------------

/// Executes a fusion plan block by block, the way the generated code does, and returns
/// one array per `graph.outputs` entry; compare it with [`interpret`] to check a plan.
///
/// - a block with one node: [`eval_op`] on its operands (as the unfused kernel call);
/// - a block with an anchor and other nodes: [`eval_op`] for the anchor (its kernel), then
///   [`crate::element::build`] and [`crate::element::ElementProgram::eval`] with the
///   anchor's output as the epilogue's `acc`;
/// - a block without anchor and several nodes: [`crate::element::build`] +
///   [`crate::element::ElementProgram::eval`] (one loop nest).
///
/// The members with a path to the anchor are its *prologue*, computed as the kernel reads
/// them, as codegen does: a lone `pad` before a `conv2d` is added to the conv's padding
/// (the conv reads the pad's operand), any other prologue is the element program of the
/// prologue nodes (a block of its own, sink last) and must compute the anchor's operand 0;
/// the other operands of the anchor are read from memory.
///
/// Only a block's *sink* is stored: the values of the other nodes of a block live inside
/// it and are invisible to later blocks, exactly as in generated code (their memory slot
/// is `Fused`). So a plan bug (a block member read outside its block, blocks in the wrong
/// order, a member feeding an anchor operand the kernel reads from memory) surfaces here
/// as an error instead of as silently right numbers, and a wrong fusion (an op that does
/// not commute with the index translation, a pad folded into a conv that it does not
/// match) as numbers that differ from [`interpret`]'s. Besides the checks of
/// [`interpret`], it reports as an error:
///
/// - a node outside `0..graph.nodes.len()`, a node in two blocks, or in no block;
/// - an anchor that is not a member of its block, or whose size differs from the sink's
///   (the kernel stores its element `o` through the epilogue at flat position `o` of the
///   sink, so only flat-position-keeping ops such as reshapes may change the shape);
/// - a block reading a value that is neither a model input, a parameter, nor the sink of
///   an earlier block;
/// - a prologue that does not end in the anchor's operand 0, or a `conv2d` prologue that
///   is not one `pad`;
/// - a multi-node block (or prologue) `element::build` cannot express (`None`);
/// - an element program that would fail as generated code although
///   `ElementProgram::eval` (which saturates) computes numbers: an index subtraction
///   that goes below zero or a load out of bounds, for any output element, in a shared
///   subexpression (computed for every element) or a branch that is taken;
/// - a result whose shape differs from the sink's recorded shape;
/// - a model output that no block stored.
pub fn run_plan(
    graph: &Graph,
    plan: &crate::fuse::FusionPlan,
    inputs: &[ArrayD<f32>],
    params: &[ArrayD<f32>],
) -> Result<Vec<ArrayD<f32>>> {
    let mut env = bind_operands(graph, inputs, params)?;

    let mut executed = vec![false; graph.nodes.len()];
    let facts = crate::fuse::Facts::new(graph);
    for (b, block) in plan.blocks.iter().enumerate() {
        for &m in &block.nodes {
            match executed.get_mut(m) {
                Some(done @ false) => *done = true,
                Some(true) => return fail(format!("block {b}: node {m} is in two blocks")),
                None => return fail(format!("block {b}: node {m} does not exist")),
            }
        }
        let sink = block.sink();
        let sink_node = graph
            .nodes
            .get(sink)
            .ok_or_else(|| InterpError::new(format!("block {b} has no node")))?;
        let out = value_of(graph, sink_node.output)?;
        let context = |message: &str| {
            InterpError::new(format!(
                "block {b} (nodes {:?}, sink {} `{}`): {message}",
                block.nodes,
                sink_node.op.name(),
                out.name
            ))
        };
        // the stored value of an operand; block members are deliberately not in `env`
        let stored = |v: ValueId| -> Result<&ArrayD<f32>> {
            env.get(v).and_then(Option::as_ref).ok_or_else(|| {
                let name = graph.values.get(v).map_or("?", |v| v.name.as_str());
                InterpError::new(format!(
                    "reads value {v} (`{name}`), which is neither an input, a parameter nor the sink of an earlier block"
                ))
            })
        };
        let run_node = |node: usize| -> Result<ArrayD<f32>> {
            let n = graph
                .nodes
                .get(node)
                .ok_or_else(|| context(&format!("node {node} does not exist")))?;
            let operands = n
                .inputs
                .iter()
                .map(|&v| stored(v))
                .collect::<Result<Vec<_>>>()
                .map_err(|e| context(&e.message))?;
            let shape = graph.shape(n.output);
            let result = eval_refs(&n.op, &operands, shape)
                .map_err(|e| context(&format!("node {node} ({}): {}", n.op.name(), e.message)))?;
            if result.shape() != shape {
                return Err(context(&format!(
                    "node {node} ({}) has shape {:?}, the graph records {shape:?}",
                    n.op.name(),
                    result.shape()
                )));
            }
            Ok(result)
        };
        let result = if let [only] = block.nodes.as_slice() {
            run_node(*only)?
        } else {
            if let Some(anchor) = block.anchor.filter(|a| !block.nodes.contains(a)) {
                return Err(context(&format!(
                    "the anchor {anchor} is not a member of the block"
                )));
            }
            // the block as the planner decided it (codegen emits the same description)
            let form = crate::fuse::block_form(&facts, block).map_err(|e| context(&e))?;
            let anchor_out = match (block.anchor, &form.anchor) {
                (Some(anchor), Some(reads)) => {
                    let a = run_anchor(graph, block, anchor, reads, &stored)
                        .map_err(|e| context(&e.message))?;
                    if a.len() != out.len() {
                        return Err(context(&format!(
                            "the anchor's shape {:?} and the sink's {:?} differ in size (the epilogue reads the anchor at the sink's flat position)",
                            a.shape(),
                            out.shape
                        )));
                    }
                    Some(row_major(&a))
                }
                _ => None,
            };
            // a store chain (transposes at the end of an anchor's epilogue) is not part of
            // the element program: the kernel stores through its map instead
            let (program, store_map) = (form.program, form.store_map);
            let expected_shape: Vec<usize> = if store_map.is_some() {
                program.shape.clone()
            } else {
                out.shape.clone()
            };
            if program.shape != expected_shape
                || program.shape.iter().product::<usize>() != out.shape.iter().product::<usize>()
            {
                return Err(context(&format!(
                    "the element program has shape {:?}, the sink {:?}",
                    program.shape, out.shape
                )));
            }
            let loads = program
                .operands
                .iter()
                .map(|&v| stored(v).map(row_major))
                .collect::<Result<Vec<Vec<f32>>>>()
                .map_err(|e| context(&e.message))?;
            let slices: Vec<&[f32]> = loads.iter().map(Vec::as_slice).collect();
            check_program(&program, &slices, anchor_out.as_deref())
                .map_err(|e| context(&format!("the generated loop would fail: {}", e.message)))?;
            let mut data = program.eval(&slices, anchor_out.as_deref());
            if let Some(map) = &store_map {
                // scatter as the kernel does: value at position o lands at map(o)
                let mut stored_data = vec![f32::NAN; data.len()];
                let mut strides: Vec<usize> = program
                    .shape
                    .iter()
                    .rev()
                    .scan(1usize, |acc, &d| {
                        let s = *acc;
                        *acc *= d;
                        Some(s)
                    })
                    .collect();
                strides.reverse();
                for (o, &v) in data.iter().enumerate() {
                    let vars: Vec<usize> = strides
                        .iter()
                        .zip(&program.shape)
                        .map(|(&s, &d)| (o / s) % d.max(1))
                        .collect();
                    let target = map.eval(&vars);
                    let slot = stored_data.get_mut(target).ok_or_else(|| {
                        context(&format!(
                            "the store map sends {o} to {target}, outside the output"
                        ))
                    })?;
                    *slot = v;
                }
                data = stored_data;
            }
            from_vec(&out.shape, data).map_err(|e| context(&e.message))?
        };
        define(&mut env, sink_node.output, result).map_err(|e| context(&e.message))?;
    }
    if let Some(missing) = executed.iter().position(|done| !done) {
        return fail(format!("node {missing} is in no block"));
    }
    graph
        .outputs
        .iter()
        .map(|&id| {
            env.get(id)
                .and_then(Option::as_ref)
                .cloned()
                .ok_or_else(|| {
                    let name = graph.values.get(id).map_or("?", |v| v.name.as_str());
                    InterpError::new(format!(
                        "output value {id} (`{name}`) is not the sink of any block"
                    ))
                })
        })
        .collect()
}

/// Runs an element program the way the generated loop runs it and reports what would
/// panic (or read garbage) there but is hidden by [`crate::element::ElementProgram::eval`]
/// (which saturates index subtractions and turns out-of-bounds loads into NaN): shared
/// subexpressions (`lets`) are computed for every output element, the branches of
/// `InRange`, `Select` and `Prelu` only when taken, index arithmetic is `usize` and must
/// not wrap, and every load must be inside its operand.
fn check_program(
    program: &crate::element::ElementProgram,
    operands: &[&[f32]],
    anchor: Option<&[f32]>,
) -> Result<()> {
    use crate::element::{Ex, Ix};

    fn ix(e: &Ix, vars: &[usize]) -> Result<usize> {
        let wrap = |what: &str| {
            InterpError::new(format!(
                "index expression {e:?} {what} at output index {vars:?}"
            ))
        };
        Ok(match e {
            Ix::Var(k) => vars
                .get(*k)
                .copied()
                .ok_or_else(|| wrap("names a missing axis"))?,
            Ix::Const(c) => *c,
            Ix::Add(a, b) => ix(a, vars)?
                .checked_add(ix(b, vars)?)
                .ok_or_else(|| wrap("overflows"))?,
            Ix::Mul(a, c) => ix(a, vars)?
                .checked_mul(*c)
                .ok_or_else(|| wrap("overflows"))?,
            Ix::Div(a, c) => ix(a, vars)?
                .checked_div(*c)
                .ok_or_else(|| wrap("divides by 0"))?,
            Ix::Rem(a, c) => ix(a, vars)?
                .checked_rem(*c)
                .ok_or_else(|| wrap("divides by 0"))?,
            Ix::Sub(a, c) => ix(a, vars)?
                .checked_sub(*c)
                .ok_or_else(|| wrap("goes below 0 (usize underflow)"))?,
            Ix::Reflect { index, before, len } => {
                crate::element::reflect(ix(index, vars)?, *before, *len)
            }
            Ix::Clamp { index, before, len } => {
                crate::element::clamp(ix(index, vars)?, *before, *len)
            }
        })
    }

    struct Env<'a> {
        operands: &'a [&'a [f32]],
        anchor: f32,
        lets: Vec<f32>,
    }

    fn ex(e: &Ex, vars: &[usize], env: &Env<'_>) -> Result<f32> {
        Ok(match e {
            Ex::Load(k, i) => {
                let at = ix(i, vars)?;
                let data = env.operands.get(*k).ok_or_else(|| {
                    InterpError::new(format!(
                        "load of operand {k}, which the block does not have"
                    ))
                })?;
                *data.get(at).ok_or_else(|| {
                    InterpError::new(format!(
                        "load of element {at} of operand {k} ({} elements) at output index {vars:?}",
                        data.len()
                    ))
                })?
            }
            Ex::Anchor => env.anchor,
            Ex::Const(c) => *c,
            Ex::Unary(op, a) => crate::element::unary_value(*op, ex(a, vars, env)?),
            Ex::Binary(op, a, b) => {
                let (x, y) = (ex(a, vars, env)?, ex(b, vars, env)?);
                binary(*op, x, y)
            }
            Ex::Select(c, a, b) => {
                if ex(c, vars, env)? != 0.0 {
                    ex(a, vars, env)?
                } else {
                    ex(b, vars, env)?
                }
            }
            Ex::Prelu(x, slope) => {
                let v = ex(x, vars, env)?;
                if v < 0.0 {
                    ex(slope, vars, env)? * v
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
                let i = ix(index, vars)?;
                if *lo <= i && i < *hi {
                    ex(then, vars, env)?
                } else {
                    ex(otherwise, vars, env)?
                }
            }
            Ex::Let(k) => *env
                .lets
                .get(*k)
                .ok_or_else(|| InterpError::new(format!("let {k} is used before it is defined")))?,
        })
    }

    let total: usize = program.shape.iter().product();
    let mut vars = vec![0usize; program.shape.len()];
    for o in 0..total {
        let mut rest = o;
        for (v, &d) in vars.iter_mut().zip(&program.shape).rev() {
            *v = rest % d.max(1);
            rest /= d.max(1);
        }
        let a = anchor.and_then(|a| a.get(o)).copied().unwrap_or(f32::NAN);
        let mut env = Env {
            operands,
            anchor: a,
            lets: Vec::with_capacity(program.lets.len()),
        };
        for (k, e) in program.lets.iter().enumerate() {
            let value = ex(e, &vars, &env)
                .map_err(|err| InterpError::new(format!("let {k}: {}", err.message)))?;
            env.lets.push(value);
        }
        ex(&program.value, &vars, &env)?;
    }
    Ok(())
}

/// The anchor of a multi-node block, reading its operands as `form` says (with its
/// prologue; see [`run_plan`]); `stored` gives the values in memory.
fn run_anchor<'a>(
    graph: &Graph,
    block: &crate::fuse::Block,
    anchor: usize,
    form: &crate::fuse::AnchorForm,
    stored: &dyn Fn(ValueId) -> Result<&'a ArrayD<f32>>,
) -> Result<ArrayD<f32>> {
    let node = graph
        .nodes
        .get(anchor)
        .ok_or_else(|| InterpError::new(format!("anchor {anchor} does not exist")))?;
    let out_shape = graph.shape(node.output);
    let operands: Vec<ArrayD<f32>> = match form.prologue.as_slice() {
        [] => form
            .operands
            .iter()
            .map(|&v| stored(v).cloned())
            .collect::<Result<_>>()?,
        feeds => {
            let sub = crate::fuse::Block {
                nodes: feeds.to_vec(),
                anchor: None,
                mapping: block.mapping,
            };
            let program = crate::element::build(graph, &sub).ok_or_else(|| {
                InterpError::new(format!(
                    "element::build cannot express the prologue {feeds:?}"
                ))
            })?;
            let main_shape = form.operands.first().map_or(&[][..], |&v| graph.shape(v));
            if program.shape != main_shape {
                return fail(format!(
                    "the prologue program has shape {:?}, the anchor's operand 0 {main_shape:?}",
                    program.shape
                ));
            }
            let loads = program
                .operands
                .iter()
                .map(|&v| stored(v).map(row_major))
                .collect::<Result<Vec<Vec<f32>>>>()?;
            let slices: Vec<&[f32]> = loads.iter().map(Vec::as_slice).collect();
            check_program(&program, &slices, None).map_err(|e| {
                InterpError::new(format!("the generated prologue would fail: {}", e.message))
            })?;
            let mut operands = vec![from_vec(main_shape, program.eval(&slices, None))?];
            for &v in form.operands.iter().skip(1) {
                operands.push(stored(v)?.clone());
            }
            operands
        }
    };
    let result = eval_op(&form.op, &operands, out_shape).map_err(|e| {
        InterpError::new(format!(
            "anchor {anchor} ({}): {}",
            node.op.name(),
            e.message
        ))
    })?;
    if result.shape() != out_shape {
        return fail(format!(
            "anchor {anchor} ({}) has shape {:?}, the graph records {out_shape:?}",
            node.op.name(),
            result.shape()
        ));
    }
    Ok(result)
}

/// Evaluates a single op on operand arrays; `out_shape` is the output value's shape
/// (needed by Reshape, Expand, Resize; ignored by the other ops, which derive their
/// output shape from the operands). The result is in standard (row-major) layout.
pub fn eval_op(op: &Op, operands: &[ArrayD<f32>], out_shape: &[usize]) -> Result<ArrayD<f32>> {
    let refs: Vec<&ArrayD<f32>> = operands.iter().collect();
    eval_refs(op, &refs, out_shape)
}

/// [`eval_op`] on borrowed operands.
fn eval_refs(op: &Op, xs: &[&ArrayD<f32>], out_shape: &[usize]) -> Result<ArrayD<f32>> {
    let result = match op {
        Op::Unary(u) => {
            let [x] = exactly(xs)?;
            x.mapv(|v| unary(*u, v))
        }
        Op::Binary(b) => {
            let [a, c] = exactly(xs)?;
            binary_broadcast(*b, a, c)?
        }
        Op::Where => {
            let [cond, a, b] = exactly(xs)?;
            select::evaluate::where_(cond, a, b)?
        }
        Op::Prelu => {
            let [x, slope] = exactly(xs)?;
            select::evaluate::prelu(x, slope)?
        }
        Op::Linear => {
            let (x, w, b) = two_or_three(xs)?;
            product::evaluate::linear(x, w, b)?
        }
        Op::MatMul => {
            let [a, b] = exactly(xs)?;
            product::evaluate::matmul(a, b)?
        }
        Op::MatMulPanels { n } => {
            let [a, panels] = exactly(xs)?;
            product::evaluate::matmul(a, &product::evaluate::unpack_panels(panels, *n)?)?
        }
        Op::PackPanels => {
            let [w] = exactly(xs)?;
            product::evaluate::pack_panels(w)?
        }
        Op::TileConvWeights { groups } => {
            let [w] = exactly(xs)?;
            tiled_weights(w, *groups, true)?
        }
        Op::WinogradWeights { tile } => {
            let [w] = exactly(xs)?;
            winograd_weights(w, *tile)?
        }
        Op::Conv2d(attrs) if attrs.weights != ConvWeights::RowMajor => {
            let (x, w, b) = two_or_three(xs)?;
            let plain = Conv2d {
                weights: ConvWeights::RowMajor,
                ..*attrs
            };
            let w = match attrs.weights {
                ConvWeights::Winograd { tile } => winograd_taps(w, tile)?,
                _ => tiled_weights(w, attrs.groups, false)?,
            };
            convolution(&Op::Conv2d(plain), [x, &w], b, |(x, w, b, out)| {
                conv::evaluate_conv2d(&plain, x, w, b, out)
            })?
        }
        Op::Conv2d(attrs) => {
            let (x, w, b) = two_or_three(xs)?;
            convolution(op, [x, w], b, |(x, w, b, out)| {
                conv::evaluate_conv2d(attrs, x, w, b, out)
            })?
        }
        Op::ConvTranspose2d(attrs) => {
            let (x, w, b) = two_or_three(xs)?;
            convolution(op, [x, w], b, |(x, w, b, out)| {
                conv::evaluate_conv_transpose2d(attrs, x, w, b, out)
            })?
        }
        Op::MaxPool2d(attrs) => {
            let [x] = exactly(xs)?;
            window_pool(op, true, attrs, x)?
        }
        Op::AvgPool2d(attrs) => {
            let [x] = exactly(xs)?;
            window_pool(op, false, attrs, x)?
        }
        Op::GlobalAvgPool => {
            let [x] = exactly(xs)?;
            global_pool(op, x, false)?
        }
        Op::GlobalMaxPool => {
            let [x] = exactly(xs)?;
            global_pool(op, x, true)?
        }
        Op::Reduce {
            kind,
            axes,
            keepdims,
        } => {
            let [x] = exactly(xs)?;
            reduce::evaluate(*kind, axes, *keepdims, x)?
        }
        Op::Softmax { axis } => {
            let [x] = exactly(xs)?;
            softmax(x, *axis, false)?
        }
        Op::LogSoftmax { axis } => {
            let [x] = exactly(xs)?;
            softmax(x, *axis, true)?
        }
        Op::LayerNorm { dims, eps } => {
            let (x, w, b) = affine_operands(xs)?;
            layer_norm(x, *dims, *eps, w, b)?
        }
        Op::BatchNorm { eps } => {
            let [x, w, b, mean, var] = exactly(xs)?;
            batch_norm(x, w, b, mean, var, *eps)?
        }
        Op::GroupNorm { groups, eps } => {
            let (x, w, b) = affine_operands(xs)?;
            group_norm(x, *groups, *eps, w, b)?
        }
        Op::InstanceNorm { eps } => {
            let (x, w, b) = affine_operands(xs)?;
            let channels = dim(x.shape(), 1)?;
            group_norm(x, channels, *eps, w, b)?
        }
        Op::Reshape(_) => {
            let [x] = exactly(xs)?;
            layout::evaluate::reshape(x, out_shape)?
        }
        Op::Transpose { perm } => {
            let [x] = exactly(xs)?;
            layout::evaluate::transpose(x, perm)?
        }
        Op::Concat { axis } => layout::evaluate::concat(xs, *axis)?,
        Op::Slice {
            starts,
            ends,
            steps,
        } => {
            let [x] = exactly(xs)?;
            layout::evaluate::slice(x, starts, ends, steps)?
        }
        Op::Pad { pads, mode } => {
            let [x] = exactly(xs)?;
            layout::evaluate::pad(x, pads, *mode)?
        }
        Op::Gather { axis } => {
            let [x, indices] = exactly(xs)?;
            layout::evaluate::gather(x, indices, *axis)?
        }
        Op::Expand => {
            let [x] = exactly(xs)?;
            broadcast_to(x, out_shape)?.to_owned()
        }
        Op::Resize(mode) => {
            let [x] = exactly(xs)?;
            layout::evaluate::resize(x, *mode, out_shape)?
        }
        Op::Resample(spec) => {
            let [x] = exactly(xs)?;
            layout::evaluate::resample(spec, x, out_shape)?
        }
        Op::Scan {
            kind,
            axis,
            exclusive,
            reverse,
        } => {
            let [x] = exactly(xs)?;
            let values: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
            let scanned =
                crate::ops::scan::evaluate(*kind, &values, x.shape(), *axis, *exclusive, *reverse);
            let Some(scanned) = scanned else {
                return fail(format!("{}: axis {axis} of {:?}", kind.name(), x.shape()));
            };
            from_vec(x.shape(), scanned.into_iter().map(|v| v as f32).collect())?
        }
    };
    // the evaluation and the one shape inference must agree on every op
    let shapes: Vec<&[usize]> = xs.iter().map(|x| x.shape()).collect();
    match crate::check::infer(op, &shapes, out_shape) {
        Ok(inferred) if inferred[..] == *result.shape() => Ok(standard_layout(result)),
        Ok(inferred) => fail(format!(
            "{}: evaluation gives shape {:?}, shape inference {inferred:?}",
            op.name(),
            result.shape()
        )),
        Err(e) => fail(e.message),
    }
}

// ---------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------

/// Exactly `K` operands.
fn exactly<'a, const K: usize>(xs: &[&'a ArrayD<f32>]) -> Result<[&'a ArrayD<f32>; K]> {
    <[&ArrayD<f32>; K]>::try_from(xs)
        .map_err(|_| InterpError::new(format!("expected {K} operands, got {}", xs.len())))
}

/// `[x, w]` or `[x, w, bias]`.
type WeightedOperands<'a> = (&'a ArrayD<f32>, &'a ArrayD<f32>, Option<&'a ArrayD<f32>>);

/// Operands of linear and convolutions: `[x, weight]` or `[x, weight, bias]`.
fn two_or_three<'a>(xs: &[&'a ArrayD<f32>]) -> Result<WeightedOperands<'a>> {
    match *xs {
        [x, w] => Ok((x, w, None)),
        [x, w, b] => Ok((x, w, Some(b))),
        _ => fail(format!("expected 2 or 3 operands, got {}", xs.len())),
    }
}

/// `[x]`, `[x, weight]` or `[x, weight, bias]`.
type AffineOperands<'a> = (
    &'a ArrayD<f32>,
    Option<&'a ArrayD<f32>>,
    Option<&'a ArrayD<f32>>,
);

/// Operands of the normalizations with an optional affine part.
fn affine_operands<'a>(xs: &[&'a ArrayD<f32>]) -> Result<AffineOperands<'a>> {
    match *xs {
        [x] => Ok((x, None, None)),
        [x, w] => Ok((x, Some(w), None)),
        [x, w, b] => Ok((x, Some(w), Some(b))),
        _ => fail(format!("expected 1 to 3 operands, got {}", xs.len())),
    }
}

/// The elements in row-major order (whatever the memory layout).
pub(crate) fn row_major(x: &ArrayD<f32>) -> Vec<f32> {
    x.iter().copied().collect()
}

/// An array of this shape from row-major data.
pub(crate) fn from_vec(shape: &[usize], data: Vec<f32>) -> Result<ArrayD<f32>> {
    ArrayD::from_shape_vec(IxDyn(shape), data)
        .map_err(|e| InterpError::new(format!("cannot build an array of shape {shape:?}: {e}")))
}

/// The same array in standard (C-contiguous) layout.
fn standard_layout(a: ArrayD<f32>) -> ArrayD<f32> {
    if a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned()
    }
}

/// Product of the dimensions (1 for none).
pub(crate) fn product(dims: &[usize]) -> usize {
    dims.iter().product()
}

/// Length of axis `axis`.
pub(crate) fn dim(shape: &[usize], axis: usize) -> Result<usize> {
    shape
        .get(axis)
        .copied()
        .ok_or_else(|| InterpError::new(format!("shape {shape:?} has no axis {axis}")))
}

/// Dimensions from `axis` on (empty past the end).
pub(crate) fn dims_from(shape: &[usize], axis: usize) -> &[usize] {
    shape.get(axis..).unwrap_or(&[])
}

/// Dimensions before `axis` (all of them past the end).
pub(crate) fn dims_before(shape: &[usize], axis: usize) -> &[usize] {
    shape.get(..axis).unwrap_or(shape)
}

/// The shape as exactly four dimensions.
fn dims4(a: &ArrayD<f32>, what: &str) -> Result<[usize; 4]> {
    <[usize; 4]>::try_from(a.shape()).map_err(|_| {
        InterpError::new(format!(
            "{what} must have rank 4, has shape {:?}",
            a.shape()
        ))
    })
}

/// Element `i` of row-major data; `i` is in range by construction, checked anyway.
pub(crate) fn at(data: &[f32], i: usize) -> Result<f32> {
    data.get(i)
        .copied()
        .ok_or_else(|| InterpError::new(format!("internal: index {i} out of {}", data.len())))
}

/// `len` elements of row-major data from `start`.
pub(crate) fn run(data: &[f32], start: usize, len: usize) -> Result<&[f32]> {
    data.get(start..start + len).ok_or_else(|| {
        InterpError::new(format!(
            "internal: run {start}..{} out of {}",
            start + len,
            data.len()
        ))
    })
}

/// A per-channel parameter vector: shape must be exactly `[channels]`.
pub(crate) fn channel_vector(p: &ArrayD<f32>, channels: usize, what: &str) -> Result<Vec<f32>> {
    if p.shape() != [channels] {
        return fail(format!(
            "{what} must have shape [{channels}], has {:?}",
            p.shape()
        ));
    }
    Ok(row_major(p))
}

/// `pos` as an index into an axis of length `len`, if it lies inside.
pub(crate) fn inside(pos: i64, len: usize) -> Option<usize> {
    usize::try_from(pos).ok().filter(|&p| p < len)
}

/// Calls `f` with every multi-index of `shape`, in row-major order.
pub(crate) fn for_each_index(
    shape: &[usize],
    mut f: impl FnMut(&[usize]) -> Result<()>,
) -> Result<()> {
    if shape.contains(&0) {
        return Ok(());
    }
    let mut index = vec![0usize; shape.len()];
    loop {
        f(&index)?;
        // Odometer increment, last axis fastest.
        let mut axis = shape.len();
        loop {
            if axis == 0 {
                return Ok(());
            }
            axis -= 1;
            let (Some(i), Some(&d)) = (index.get_mut(axis), shape.get(axis)) else {
                return fail("internal: odometer out of range");
            };
            *i += 1;
            if *i < d {
                break;
            }
            *i = 0;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Elementwise
// ---------------------------------------------------------------------------------------

/// One unary function, evaluated in f64 (its row's reference semantics).
fn unary(op: UnaryOp, v: f32) -> f32 {
    op.reference(f64::from(v)) as f32
}

/// One binary function, evaluated in f64 (its row's reference semantics).
fn binary(op: BinaryOp, a: f32, b: f32) -> f32 {
    op.reference(f64::from(a), f64::from(b)) as f32
}

/// The numpy broadcast of two shapes (trailing axes aligned, length 1 stretches): the
/// shape rule of `check`, the one every op's inference uses.
pub(crate) fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    crate::check::broadcast("broadcast", a, b).map_err(shape_error)
}

/// A broadcast view of `x` with this shape.
pub(crate) fn broadcast_to<'a>(x: &'a ArrayD<f32>, shape: &[usize]) -> Result<ArrayViewD<'a, f32>> {
    x.broadcast(IxDyn(shape)).ok_or_else(|| {
        InterpError::new(format!(
            "shape {:?} does not broadcast to {shape:?}",
            x.shape()
        ))
    })
}

/// `op(a, b)` with numpy broadcasting.
fn binary_broadcast(op: BinaryOp, a: &ArrayD<f32>, b: &ArrayD<f32>) -> Result<ArrayD<f32>> {
    let shape = broadcast_shape(a.shape(), b.shape())?;
    let av = broadcast_to(a, &shape)?;
    let bv = broadcast_to(b, &shape)?;
    Ok(Zip::from(&av)
        .and(&bv)
        .map_collect(|&x, &y| binary(op, x, y)))
}

// ---------------------------------------------------------------------------------------
// Matrix products and convolutions
// ---------------------------------------------------------------------------------------

/// A convolution weight laid out as `Op::TileConvWeights` stores it (`tile`), or back
/// (`ops::conv`'s evaluation).
fn tiled_weights(w: &ArrayD<f32>, groups: usize, tile: bool) -> Result<ArrayD<f32>> {
    let dims = dims4(w, "a convolution weight")?;
    if groups == 0 || dims[0] % groups != 0 {
        return fail(format!(
            "weight {:?} does not split into {groups} groups",
            w.shape()
        ));
    }
    let data = row_major(w);
    let weight = conv::Tensor4 { data: &data, dims };
    let out = conv::evaluate_tiled_weights(weight, groups, tile).ok_or_else(shorter)?;
    from_vec(w.shape(), out)
}

/// A 3x3 convolution weight `[out, in, 3, 3]` transformed as `Op::WinogradWeights`
/// stores it (`ops::conv`'s evaluation).
fn winograd_weights(w: &ArrayD<f32>, tile: usize) -> Result<ArrayD<f32>> {
    let &[out_channels, in_channels, 3, 3] = w.shape() else {
        return fail(format!(
            "winograd_weights takes [out, in, 3, 3], got {:?}",
            w.shape()
        ));
    };
    let out = conv::evaluate_winograd_weights(&row_major(w), [out_channels, in_channels], tile)
        .ok_or_else(shorter)?;
    from_vec(&[winograd_points(tile), out_channels, in_channels], out)
}

/// The 3x3 taps `[out, in, 3, 3]` that `Op::WinogradWeights` transformed into `u`
/// (`[(tile + 2)^2, out, in]`; `ops::conv`'s evaluation).
fn winograd_taps(u: &ArrayD<f32>, tile: usize) -> Result<ArrayD<f32>> {
    let points = winograd_points(tile);
    let &[p, out_channels, in_channels] = u.shape() else {
        return fail(format!(
            "a Winograd weight is [{points}, out, in], got {:?}",
            u.shape()
        ));
    };
    if p != points {
        return fail(format!(
            "a Winograd weight of tile {tile} is [{points}, out, in], got {:?}",
            u.shape()
        ));
    }
    let out = conv::evaluate_winograd_taps(&row_major(u), [out_channels, in_channels], tile)
        .ok_or_else(shorter)?;
    from_vec(&[out_channels, in_channels, 3, 3], out)
}

/// The operands of a convolution evaluation: input, weight, bias, output height and width.
type ConvOperands<'a> = (conv::Tensor4<'a>, conv::Tensor4<'a>, &'a [f32], [usize; 2]);

/// A convolution `op` of `x` by `w` plus the optional bias, on `check::infer`'s output
/// shape, by `evaluate` (one of `ops::conv`'s evaluations).
fn convolution(
    op: &Op,
    [x, w]: [&ArrayD<f32>; 2],
    bias: Option<&ArrayD<f32>>,
    evaluate: impl FnOnce(ConvOperands<'_>) -> Option<Vec<f32>>,
) -> Result<ArrayD<f32>> {
    let mut shapes = vec![x.shape(), w.shape()];
    shapes.extend(bias.map(|b| b.shape()));
    let out_shape = crate::check::infer(op, &shapes, &[]).map_err(shape_error)?;
    let [_, out_channels, oh, ow] = out_shape[..] else {
        return fail(format!(
            "{}: output shape {out_shape:?} is not 4-d",
            op.name()
        ));
    };
    let b = match bias {
        Some(b) => row_major(b),
        None => vec![0.0; out_channels],
    };
    let (xd, wd) = (row_major(x), row_major(w));
    let x = conv::Tensor4 {
        data: &xd,
        dims: dims4(x, "input")?,
    };
    let w = conv::Tensor4 {
        data: &wd,
        dims: dims4(w, "weight")?,
    };
    let out = evaluate((x, w, &b, [oh, ow])).ok_or_else(shorter)?;
    from_vec(&out_shape, out)
}

// ---------------------------------------------------------------------------------------
// Pooling
// ---------------------------------------------------------------------------------------

/// A window pooling of `x` (`ops::pool`'s evaluation on `check::infer`'s shape).
fn window_pool(op: &Op, max: bool, attrs: &Pool2d, x: &ArrayD<f32>) -> Result<ArrayD<f32>> {
    let shape = dims4(x, "input")?;
    let out_shape = crate::check::infer(op, &[x.shape()], &[]).map_err(shape_error)?;
    let [_, _, oh, ow] = out_shape[..] else {
        return fail(format!(
            "{}: output shape {out_shape:?} is not 4-d",
            op.name()
        ));
    };
    let xd = row_major(x);
    let input = pool::WindowInput {
        x: &xd,
        shape,
        out: [oh, ow],
    };
    let out = if max {
        pool::evaluate_max(attrs, &input)
    } else {
        pool::evaluate_avg(attrs, &input)
    };
    from_vec(&out_shape, out.ok_or_else(shorter)?)
}

/// A shape inference's refusal as the interpreter's error.
fn shape_error(e: crate::check::ShapeError) -> InterpError {
    InterpError::new(e.message)
}

/// Mean (or max) over axes `2..` of `[N, C, ...]`, keeping them with length 1.
fn global_pool(op: &Op, x: &ArrayD<f32>, max: bool) -> Result<ArrayD<f32>> {
    let out_shape = crate::check::infer(op, &[x.shape()], &[]).map_err(shape_error)?;
    let planes = product(dims_before(x.shape(), 2));
    let plane = product(dims_from(x.shape(), 2));
    let out = pool::evaluate_global(max, &row_major(x), planes, plane).ok_or_else(shorter)?;
    from_vec(&out_shape, out)
}

// ---------------------------------------------------------------------------------------
// Reductions and normalizations
// ---------------------------------------------------------------------------------------

/// Softmax (or log-softmax) along `axis` (`ops::norm`'s evaluation).
fn softmax(x: &ArrayD<f32>, axis: usize, log: bool) -> Result<ArrayD<f32>> {
    if axis >= x.ndim() {
        return fail(format!("axis {axis} out of rank {}", x.ndim()));
    }
    let extents = norm::around_axis(x.shape(), axis);
    let out = norm::evaluate_softmax(&row_major(x), extents, log).ok_or_else(shorter)?;
    from_vec(x.shape(), out)
}

/// The error of an evaluation whose operand is shorter than its shape says: an internal
/// error, as the shapes were checked.
fn shorter() -> InterpError {
    InterpError::new("internal: an operand is shorter than its shape")
}

/// An optional affine parameter of this exact shape, or `fill` repeated.
fn affine_param(
    p: Option<&ArrayD<f32>>,
    shape: &[usize],
    fill: f32,
    what: &str,
) -> Result<Vec<f32>> {
    match p {
        Some(p) if p.shape() == shape => Ok(row_major(p)),
        Some(p) => fail(format!(
            "{what} must have shape {shape:?}, has {:?}",
            p.shape()
        )),
        None => Ok(vec![fill; product(shape)]),
    }
}

/// Normalizes over the last `dims` axes, then `* weight + bias` (`ops::norm`'s
/// evaluation).
fn layer_norm(
    x: &ArrayD<f32>,
    dims: usize,
    eps: f32,
    weight: Option<&ArrayD<f32>>,
    bias: Option<&ArrayD<f32>>,
) -> Result<ArrayD<f32>> {
    let shape = x.shape();
    let Some(split) = shape.len().checked_sub(dims) else {
        return fail(format!("cannot normalize {dims} axes of shape {shape:?}"));
    };
    let norm_shape = dims_from(shape, split);
    let w = affine_param(weight, norm_shape, 1.0, "weight")?;
    let b = affine_param(bias, norm_shape, 0.0, "bias")?;
    let cols = product(norm_shape);
    let out = norm::evaluate_layer_norm(&row_major(x), cols, &w, &b, eps).ok_or_else(shorter)?;
    from_vec(shape, out)
}

/// Inference batch norm, channels on axis 1 (`ops::norm`'s evaluation).
fn batch_norm(
    x: &ArrayD<f32>,
    weight: &ArrayD<f32>,
    bias: &ArrayD<f32>,
    mean: &ArrayD<f32>,
    var: &ArrayD<f32>,
    eps: f32,
) -> Result<ArrayD<f32>> {
    let channels = dim(x.shape(), 1)?;
    let inner = product(dims_from(x.shape(), 2));
    let w = channel_vector(weight, channels, "weight")?;
    let b = channel_vector(bias, channels, "bias")?;
    let m = channel_vector(mean, channels, "running_mean")?;
    let v = channel_vector(var, channels, "running_var")?;
    let params = norm::BatchNormParams {
        weight: &w,
        bias: &b,
        mean: &m,
        var: &v,
    };
    let out = norm::evaluate_batch_norm(&row_major(x), channels, inner, &params, eps)
        .ok_or_else(shorter)?;
    from_vec(x.shape(), out)
}

/// Group norm in `groups` groups of consecutive channels; instance norm is the case
/// `groups == C` (`ops::norm`'s evaluation).
fn group_norm(
    x: &ArrayD<f32>,
    groups: usize,
    eps: f32,
    weight: Option<&ArrayD<f32>>,
    bias: Option<&ArrayD<f32>>,
) -> Result<ArrayD<f32>> {
    let shape = x.shape();
    let channels = dim(shape, 1)?;
    if groups == 0 || channels % groups != 0 {
        return fail(format!("{groups} groups do not divide {channels} channels"));
    }
    let w = affine_param(weight, &[channels], 1.0, "weight")?;
    let b = affine_param(bias, &[channels], 0.0, "bias")?;
    let inner = product(dims_from(shape, 2));
    let out = norm::evaluate_group_norm(&row_major(x), [channels, inner], groups, &w, &b, eps)
        .ok_or_else(shorter)?;
    from_vec(shape, out)
}

/// ONNX CumSum along `axis`.
#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::excessive_precision
)]
mod tests {
    use super::*;
    use crate::ir::{
        ConvTranspose2d, Node, PadMode, Param, ReduceKind, ReshapeKind, ResizeMode, ValueKind,
    };
    use ndarray::{s, Array2, Array4};
    use proc_macro2::Span;

    /// An array from a shape and row-major data.
    fn t(shape: &[usize], data: &[f32]) -> ArrayD<f32> {
        ArrayD::from_shape_vec(IxDyn(shape), data.to_vec()).unwrap()
    }

    /// 0, 1, 2, ... in row-major order.
    fn seq(shape: &[usize]) -> ArrayD<f32> {
        let n: usize = shape.iter().product();
        t(shape, &(0..n).map(|v| v as f32).collect::<Vec<_>>())
    }

    /// Deterministic pseudo-random values in [-1, 1).
    fn rand(shape: &[usize], seed: u64) -> ArrayD<f32> {
        let mut rng = dnnfusion_test_support::Rng::new(seed);
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect();
        t(shape, &data)
    }

    fn eval(op: Op, xs: &[ArrayD<f32>], out_shape: &[usize]) -> ArrayD<f32> {
        eval_op(&op, xs, out_shape).unwrap_or_else(|e| panic!("{op:?}: {e}"))
    }

    fn eval1(op: Op, x: &ArrayD<f32>) -> ArrayD<f32> {
        eval(op, std::slice::from_ref(x), &[])
    }

    #[track_caller]
    fn assert_close(got: &ArrayD<f32>, want: &ArrayD<f32>, tol: f32) {
        assert_eq!(got.shape(), want.shape(), "shapes differ");
        for (i, (&g, &w)) in got.iter().zip(want.iter()).enumerate() {
            assert!(
                dnnfusion_test_support::within(g, w, tol * (1.0 + w.abs())),
                "element {i}: got {g}, want {w}\ngot  {got}\nwant {want}"
            );
        }
    }

    // ----- elementwise ---------------------------------------------------------------

    #[test]
    fn unary_functions_match_their_definitions() {
        use UnaryOp as U;
        let e = std::f32::consts::E;
        let cases: Vec<(UnaryOp, f32, f32)> = vec![
            (U::Neg, 2.0, -2.0),
            (U::Abs, -2.5, 2.5),
            (U::Exp, 1.0, e),
            (U::Log, e, 1.0),
            (U::Sqrt, 9.0, 3.0),
            (U::Rsqrt, 4.0, 0.5),
            (U::Recip, 4.0, 0.25),
            (U::Square, -3.0, 9.0),
            (U::Relu, -1.0, 0.0),
            (U::Relu, 2.0, 2.0),
            (U::Relu6, 7.0, 6.0),
            (U::Relu6, 3.0, 3.0),
            (U::Relu6, -3.0, 0.0),
            (U::LeakyRelu(0.1), -2.0, -0.2),
            (U::LeakyRelu(0.1), 2.0, 2.0),
            (U::Elu(1.0), -1.0, -0.6321205588285577),
            (U::Elu(2.0), 3.0, 3.0),
            (U::Selu, -1.0, -1.1113307378125625),
            (U::Selu, 2.0, 2.101401974710961),
            (U::Sigmoid, 0.0, 0.5),
            (U::Sigmoid, -200.0, 0.0),
            (U::Tanh, 0.5, 0.46211715726000974),
            (U::Gelu, 1.0, 0.8413447460685429),
            (U::Gelu, -3.0, -0.00404969409489031),
            (U::Gelu, -10.0, -7.619853024160593e-23),
            (U::GeluTanh, 1.0, 0.8411919906082768),
            (U::GeluTanh, -2.0, -0.04540230591222494),
            (U::Silu, 1.0, 0.7310585786300049),
            (U::Silu, -2.0, -0.2384058440442351),
            (
                U::HardSigmoid {
                    alpha: 0.2,
                    beta: 0.5,
                },
                1.0,
                0.7,
            ),
            (
                U::HardSigmoid {
                    alpha: 0.2,
                    beta: 0.5,
                },
                10.0,
                1.0,
            ),
            (
                U::HardSigmoid {
                    alpha: 0.2,
                    beta: 0.5,
                },
                -10.0,
                0.0,
            ),
            (U::HardSwish, -4.0, 0.0),
            (U::HardSwish, 1.0, 2.0 / 3.0),
            (U::HardSwish, 4.0, 4.0),
            (U::Mish, 1.0, 0.8650983882673103),
            (U::Mish, -2.0, -0.2525014826957089),
            (U::Softplus, 0.0, std::f32::consts::LN_2),
            (U::Softplus, 3.0, 3.048587351573742),
            (U::Softplus, -3.0, 0.04858735157374206),
            (U::Softplus, 100.0, 100.0),
            (U::Softplus, 1000.0, 1000.0),
            (U::Erf, 0.5, 0.5204998778130465),
            (U::Sin, std::f32::consts::FRAC_PI_2, 1.0),
            (U::Cos, 0.0, 1.0),
            (U::Floor, -1.5, -2.0),
            (U::Ceil, -1.5, -1.0),
            (
                U::Clip {
                    min: -1.0,
                    max: 2.0,
                },
                -3.0,
                -1.0,
            ),
            (
                U::Clip {
                    min: -1.0,
                    max: 2.0,
                },
                5.0,
                2.0,
            ),
            (
                U::Clip {
                    min: -1.0,
                    max: 2.0,
                },
                0.5,
                0.5,
            ),
            (U::PowScalar(2.0), 3.0, 9.0),
            (U::PowScalar(0.5), 16.0, 4.0),
            (U::AddScalar(2.0), 1.0, 3.0),
            (U::SubScalar(2.0), 1.0, -1.0),
            (U::ScalarSub(2.0), 1.0, 1.0),
            (U::MulScalar(3.0), 2.0, 6.0),
            (U::DivScalar(4.0), 2.0, 0.5),
            (U::ScalarDiv(4.0), 2.0, 2.0),
        ];
        for (op, x, want) in cases {
            let got = eval1(Op::Unary(op), &t(&[1], &[x]))[[0]];
            let ok = (got - want).abs() <= 1e-6 * (1.0 + want.abs())
                && (want.abs() > 1e-20 || (got - want).abs() <= 1e-3 * want.abs());
            assert!(ok, "{op:?}({x}) = {got}, want {want}");
        }
        // Tiny but nonzero for very negative softplus input (no cancellation to 0 or NaN).
        let sp = eval1(Op::Unary(U::Softplus), &t(&[1], &[-60.0]))[[0]];
        assert!(
            sp > 0.0 && (sp - (-60.0f32).exp()).abs() < 1e-30,
            "softplus(-60) = {sp}"
        );
    }

    #[test]
    fn round_is_half_to_even() {
        let x = t(&[8], &[0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4, 2.6]);
        let want = t(&[8], &[0.0, 2.0, 2.0, -0.0, -2.0, -2.0, 2.0, 3.0]);
        assert_eq!(eval1(Op::Unary(UnaryOp::Round), &x), want);
    }

    #[test]
    fn unary_keeps_shape_and_propagates_nan() {
        let x = t(&[2, 1, 2], &[f32::NAN, -1.0, 0.0, 1.0]);
        let y = eval1(Op::Unary(UnaryOp::Relu), &x);
        assert_eq!(y.shape(), &[2, 1, 2]);
        assert!(y[[0, 0, 0]].is_nan());
        assert_eq!(
            y.iter().skip(1).copied().collect::<Vec<_>>(),
            vec![0.0, 0.0, 1.0]
        );
    }

    #[test]
    fn broadcast_shapes_follow_numpy_rules() {
        // Examples of the numpy broadcasting documentation.
        assert_eq!(
            broadcast_shape(&[256, 256, 3], &[3]).unwrap(),
            vec![256, 256, 3]
        );
        assert_eq!(
            broadcast_shape(&[8, 1, 6, 1], &[7, 1, 5]).unwrap(),
            vec![8, 7, 6, 5]
        );
        assert_eq!(broadcast_shape(&[5, 4], &[1]).unwrap(), vec![5, 4]);
        assert_eq!(
            broadcast_shape(&[15, 3, 5], &[15, 1, 5]).unwrap(),
            vec![15, 3, 5]
        );
        assert_eq!(broadcast_shape(&[], &[2, 3]).unwrap(), vec![2, 3]);
        assert!(broadcast_shape(&[3], &[4]).is_err());
        assert!(broadcast_shape(&[2, 1], &[8, 4, 3]).is_err());
    }

    #[test]
    fn binary_ops_broadcast() {
        // numpy docs: a[:, newaxis] + b.
        let a = t(&[4, 1], &[0.0, 10.0, 20.0, 30.0]);
        let b = t(&[3], &[1.0, 2.0, 3.0]);
        let sum = eval(Op::Binary(BinaryOp::Add), &[a.clone(), b.clone()], &[]);
        let want = t(
            &[4, 3],
            &[
                1.0, 2.0, 3.0, 11.0, 12.0, 13.0, 21.0, 22.0, 23.0, 31.0, 32.0, 33.0,
            ],
        );
        assert_eq!(sum, want);
        let diff = eval(Op::Binary(BinaryOp::Sub), &[b.clone(), a.clone()], &[]);
        assert_eq!(diff, want.mapv(|v| -v + 2.0 * (v % 10.0)));
        let x = t(&[2, 2], &[1.0, 4.0, -2.0, 9.0]);
        let y = t(&[2], &[2.0, 0.5]);
        assert_eq!(
            eval(Op::Binary(BinaryOp::Mul), &[x.clone(), y.clone()], &[]),
            t(&[2, 2], &[2.0, 2.0, -4.0, 4.5])
        );
        assert_eq!(
            eval(Op::Binary(BinaryOp::Div), &[x.clone(), y.clone()], &[]),
            t(&[2, 2], &[0.5, 8.0, -1.0, 18.0])
        );
        assert_eq!(
            eval(Op::Binary(BinaryOp::Max), &[x.clone(), y.clone()], &[]),
            t(&[2, 2], &[2.0, 4.0, 2.0, 9.0])
        );
        assert_eq!(
            eval(Op::Binary(BinaryOp::Min), &[x.clone(), y.clone()], &[]),
            t(&[2, 2], &[1.0, 0.5, -2.0, 0.5])
        );
        assert_eq!(
            eval(Op::Binary(BinaryOp::Pow), &[x, y], &[]),
            t(&[2, 2], &[1.0, 2.0, 4.0, 3.0])
        );
        // A scalar (rank 0) operand.
        let s = t(&[], &[10.0]);
        assert_eq!(
            eval(Op::Binary(BinaryOp::Sub), &[s, b.clone()], &[]),
            t(&[3], &[9.0, 8.0, 7.0])
        );
        let bad = eval_op(
            &Op::Binary(BinaryOp::Add),
            &[t(&[3], &[0.0; 3]), t(&[4], &[0.0; 4])],
            &[],
        );
        assert!(bad.is_err());
        let nan = eval(
            Op::Binary(BinaryOp::Max),
            &[t(&[1], &[f32::NAN]), t(&[1], &[1.0])],
            &[],
        );
        assert!(nan[[0]].is_nan());
    }

    #[test]
    fn where_selects_and_broadcasts() {
        let cond = t(&[3, 1], &[1.0, 0.0, -2.0]);
        let a = t(&[1, 4], &[1.0, 2.0, 3.0, 4.0]);
        let b = t(&[], &[-1.0]);
        let y = eval(Op::Where, &[cond, a, b], &[]);
        let want = t(
            &[3, 4],
            &[
                1.0, 2.0, 3.0, 4.0, -1.0, -1.0, -1.0, -1.0, 1.0, 2.0, 3.0, 4.0,
            ],
        );
        assert_eq!(y, want);
    }

    #[test]
    fn prelu_uses_one_or_per_channel_slopes() {
        let x = t(&[1, 2, 2, 1], &[-1.0, 2.0, -3.0, -4.0]);
        let one = eval(Op::Prelu, &[x.clone(), t(&[1], &[0.5])], &[]);
        assert_eq!(one, t(&[1, 2, 2, 1], &[-0.5, 2.0, -1.5, -2.0]));
        let per = eval(Op::Prelu, &[x.clone(), t(&[2], &[0.1, 2.0])], &[]);
        assert_close(&per, &t(&[1, 2, 2, 1], &[-0.1, 2.0, -6.0, -8.0]), 1e-7);
        assert!(eval_op(&Op::Prelu, &[x, t(&[3], &[0.0; 3])], &[]).is_err());
    }

    // ----- linear / matmul -----------------------------------------------------------

    #[test]
    fn linear_matches_hand_computation() {
        let x = t(&[2, 1, 3], &[1.0, 2.0, 3.0, -1.0, 0.0, 1.0]);
        let w = t(&[2, 3], &[1.0, 0.0, -1.0, 0.5, 0.5, 0.5]);
        let b = t(&[2], &[10.0, 20.0]);
        let y = eval(Op::Linear, &[x.clone(), w.clone(), b], &[]);
        assert_eq!(y, t(&[2, 1, 2], &[8.0, 23.0, 8.0, 20.0]));
        let y = eval(Op::Linear, &[x.clone(), w], &[]);
        assert_eq!(y, t(&[2, 1, 2], &[-2.0, 3.0, -2.0, 0.0]));
        assert!(eval_op(&Op::Linear, &[x, t(&[2, 4], &[0.0; 8])], &[]).is_err());
    }

    #[test]
    fn matmul_broadcasts_batches_like_numpy() {
        let a = rand(&[2, 1, 2, 3], 1);
        let b = rand(&[3, 3, 4], 2);
        let y = eval(Op::MatMul, &[a.clone(), b.clone()], &[]);
        assert_eq!(y.shape(), &[2, 3, 2, 4]);
        for i in 0..2 {
            for j in 0..3 {
                let a2 = a
                    .slice(s![i, 0, .., ..])
                    .into_dimensionality::<ndarray::Ix2>()
                    .unwrap();
                let b2 = b
                    .slice(s![j, .., ..])
                    .into_dimensionality::<ndarray::Ix2>()
                    .unwrap();
                let want = a2.dot(&b2).into_dyn();
                assert_close(
                    &y.slice(s![i, j, .., ..]).to_owned().into_dyn(),
                    &want,
                    1e-6,
                );
            }
        }
        let small = eval(
            Op::MatMul,
            &[t(&[2, 2], &[1.0, 2.0, 3.0, 4.0]), t(&[2, 1], &[5.0, 6.0])],
            &[],
        );
        assert_eq!(small, t(&[2, 1], &[17.0, 39.0]));
        assert!(eval_op(
            &Op::MatMul,
            &[t(&[2, 3], &[0.0; 6]), t(&[2, 3], &[0.0; 6])],
            &[]
        )
        .is_err());
        assert!(eval_op(
            &Op::MatMul,
            &[t(&[3], &[0.0; 3]), t(&[3, 1], &[0.0; 3])],
            &[]
        )
        .is_err());
    }

    // ----- convolutions --------------------------------------------------------------

    /// Convolution by explicit zero padding, im2col with strided ndarray slices, and
    /// ndarray's matrix product.
    fn conv_im2col(x: &ArrayD<f32>, w: &ArrayD<f32>, b: &[f32], a: &Conv2d) -> ArrayD<f32> {
        let x = x.clone().into_dimensionality::<ndarray::Ix4>().unwrap();
        let w = w.clone().into_dimensionality::<ndarray::Ix4>().unwrap();
        let (n, c, h, wi) = x.dim();
        let (o, cpg, kh, kw) = w.dim();
        let [pt, pl, pb, pr] = a.padding;
        let [sh, sw] = a.stride;
        let [dh, dw] = a.dilation;
        let mut xp = Array4::<f32>::zeros((n, c, h + pt + pb, wi + pl + pr));
        xp.slice_mut(s![.., .., pt..pt + h, pl..pl + wi]).assign(&x);
        let oh = (h + pt + pb - dh * (kh - 1) - 1) / sh + 1;
        let ow = (wi + pl + pr - dw * (kw - 1) - 1) / sw + 1;
        let g = a.groups;
        let opg = o / g;
        let mut out = Array4::<f32>::zeros((n, o, oh, ow));
        for ni in 0..n {
            for gi in 0..g {
                let mut cols = Array2::<f32>::zeros((cpg * kh * kw, oh * ow));
                for icl in 0..cpg {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let (y0, x0) = (ky * dh, kx * dw);
                            let patch = xp.slice(s![
                                ni,
                                gi * cpg + icl,
                                y0..y0 + (oh - 1) * sh + 1;sh,
                                x0..x0 + (ow - 1) * sw + 1;sw
                            ]);
                            let row: Vec<f32> = patch.iter().copied().collect();
                            cols.row_mut((icl * kh + ky) * kw + kx)
                                .assign(&ndarray::Array1::from(row));
                        }
                    }
                }
                let wmat = w
                    .slice(s![gi * opg..(gi + 1) * opg, .., .., ..])
                    .to_owned()
                    .into_shape_with_order((opg, cpg * kh * kw))
                    .unwrap();
                let res = wmat.dot(&cols);
                for ocl in 0..opg {
                    let oc = gi * opg + ocl;
                    let plane = res
                        .row(ocl)
                        .to_owned()
                        .into_shape_with_order((oh, ow))
                        .unwrap();
                    out.slice_mut(s![ni, oc, .., ..])
                        .assign(&plane.mapv(|v| v + b[oc]));
                }
            }
        }
        out.into_dyn()
    }

    #[test]
    fn conv2d_hand_example() {
        let x = t(
            &[1, 1, 3, 3],
            &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
        );
        let w = t(&[1, 1, 2, 2], &[1.0, 1.0, 1.0, 1.0]);
        let attrs = Conv2d {
            kernel: [2, 2],
            stride: [1, 1],
            padding: [0; 4],
            dilation: [1, 1],
            groups: 1,
            weights: crate::ir::ConvWeights::RowMajor,
        };
        let y = eval(Op::Conv2d(attrs), &[x.clone(), w.clone()], &[]);
        assert_eq!(y, t(&[1, 1, 2, 2], &[12.0, 16.0, 24.0, 28.0]));
        // Padding 1 all round, stride 2: corners see one 2x2 window each.
        let attrs = Conv2d {
            stride: [2, 2],
            padding: [1; 4],
            ..attrs
        };
        let y = eval(Op::Conv2d(attrs), &[x, w, t(&[1], &[0.5])], &[]);
        assert_eq!(y, t(&[1, 1, 2, 2], &[1.5, 5.5, 11.5, 28.5]));
    }

    #[test]
    fn conv2d_matches_im2col() {
        let configs = [
            // (n, c, h, w, o, k, stride, padding, dilation, groups)
            (1, 3, 7, 6, 4, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1),
            (2, 4, 9, 8, 6, [3, 2], [2, 1], [0, 1, 2, 0], [1, 1], 2),
            (1, 4, 10, 10, 4, [3, 3], [1, 2], [2, 2, 2, 2], [2, 2], 4),
            (1, 2, 5, 7, 3, [1, 1], [2, 2], [0, 0, 0, 0], [1, 1], 1),
            (1, 6, 8, 8, 4, [5, 3], [3, 2], [2, 1, 1, 2], [1, 2], 2),
        ];
        for (seed, (n, c, h, wi, o, k, stride, padding, dilation, groups)) in
            configs.into_iter().enumerate()
        {
            let attrs = Conv2d {
                kernel: k,
                stride,
                padding,
                dilation,
                groups,
                weights: crate::ir::ConvWeights::RowMajor,
            };
            let x = rand(&[n, c, h, wi], seed as u64 * 3);
            let w = rand(&[o, c / groups, k[0], k[1]], seed as u64 * 3 + 1);
            let b = rand(&[o], seed as u64 * 3 + 2);
            let y = eval(Op::Conv2d(attrs), &[x.clone(), w.clone(), b.clone()], &[]);
            let want = conv_im2col(&x, &w, b.as_slice().unwrap(), &attrs);
            assert_close(&y, &want, 1e-5);
        }
    }

    #[test]
    fn conv2d_rejects_bad_shapes() {
        let attrs = Conv2d {
            kernel: [3, 3],
            stride: [1, 1],
            padding: [0; 4],
            dilation: [1, 1],
            groups: 2,
            weights: crate::ir::ConvWeights::RowMajor,
        };
        let x = rand(&[1, 4, 5, 5], 1);
        // weight in-channels must be C / groups = 2
        assert!(eval_op(
            &Op::Conv2d(attrs),
            &[x.clone(), rand(&[2, 4, 3, 3], 2)],
            &[]
        )
        .is_err());
        // kernel larger than the input
        let big = Conv2d {
            kernel: [7, 7],
            groups: 1,
            ..attrs
        };
        assert!(eval_op(&Op::Conv2d(big), &[x, rand(&[2, 4, 7, 7], 2)], &[]).is_err());
    }

    /// `G w G^T` by hand for all-ones taps (`G`'s row sums are 1, 3/2, 1/2, 1 for F(2x2)
    /// and 1/4, -1/2, -1/6, 7/24, 1/8, 1 for F(4x4), so `U[r][c]` is their product), and
    /// convolutions on transformed weights against the plain one (17 output channels: a
    /// whole tile and a row-major tail).
    #[test]
    fn winograd_weights_hand_example_and_convolution() {
        let ones = t(&[1, 1, 3, 3], &[1.0; 9]);
        let u = eval_op(
            &Op::WinogradWeights { tile: 2 },
            core::slice::from_ref(&ones),
            &[],
        )
        .unwrap();
        let sums = [1.0, 1.5, 0.5, 1.0];
        let want: Vec<f32> = (0..16).map(|p| sums[p / 4] * sums[p % 4]).collect();
        assert_eq!(u.shape(), &[16, 1, 1]);
        assert_eq!(u.iter().copied().collect::<Vec<f32>>(), want);
        let u = eval_op(&Op::WinogradWeights { tile: 4 }, &[ones], &[]).unwrap();
        let sums = [0.25, -0.5, -1.0 / 6.0, 7.0 / 24.0, 0.125, 1.0f64];
        let want: Vec<f32> = (0..36)
            .map(|p| (sums[p / 6] * sums[p % 6]) as f32)
            .collect();
        assert_eq!(u.shape(), &[36, 1, 1]);
        for (got, want) in u.iter().zip(&want) {
            assert!((got - want).abs() <= 1e-7, "{got} vs {want}");
        }
        let attrs = Conv2d {
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 0, 2, 1],
            dilation: [1, 1],
            groups: 1,
            weights: crate::ir::ConvWeights::RowMajor,
        };
        let (x, w) = (rand(&[2, 5, 6, 7], 1), rand(&[17, 5, 3, 3], 2));
        let plain = eval_op(&Op::Conv2d(attrs), &[x.clone(), w.clone()], &[]).unwrap();
        for (tile, points) in [(2, 16), (4, 36)] {
            let u = eval_op(
                &Op::WinogradWeights { tile },
                core::slice::from_ref(&w),
                &[],
            )
            .unwrap();
            assert_eq!(u.shape(), &[points, 17, 5]);
            let winograd = Conv2d {
                weights: ConvWeights::Winograd { tile },
                ..attrs
            };
            let got = eval_op(&Op::Conv2d(winograd), &[x.clone(), u], &[]).unwrap();
            assert_eq!(got.shape(), plain.shape());
            // the taps come back from U through one rounding to f32 each way
            for (a, b) in got.iter().zip(plain.iter()) {
                assert!((a - b).abs() <= 1e-5, "tile {tile}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn conv_transpose2d_hand_examples() {
        let x = t(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let w = t(&[1, 1, 2, 2], &[1.0, 1.0, 1.0, 1.0]);
        let base = ConvTranspose2d {
            kernel: [2, 2],
            stride: [2, 2],
            padding: [0, 0],
            output_padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        };
        let y = eval(Op::ConvTranspose2d(base), &[x.clone(), w.clone()], &[]);
        let want = t(
            &[1, 1, 4, 4],
            &[
                1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 3.0, 3.0, 4.0, 4.0,
            ],
        );
        assert_eq!(y, want);
        let s1 = ConvTranspose2d {
            stride: [1, 1],
            ..base
        };
        let y = eval(
            Op::ConvTranspose2d(s1),
            &[x.clone(), w.clone(), t(&[1], &[1.0])],
            &[],
        );
        assert_eq!(
            y,
            t(
                &[1, 1, 3, 3],
                &[2.0, 4.0, 3.0, 5.0, 11.0, 7.0, 4.0, 8.0, 5.0]
            )
        );
        // padding 1 crops one row/column from each side of the 4x4 result; output
        // padding 1 adds a bottom row and right column (which receive nothing here).
        let cropped = ConvTranspose2d {
            padding: [1, 1],
            output_padding: [1, 1],
            ..base
        };
        let y = eval(Op::ConvTranspose2d(cropped), &[x, w], &[]);
        let want = t(
            &[1, 1, 3, 3],
            &[1.0, 2.0, 2.0, 3.0, 4.0, 4.0, 3.0, 4.0, 4.0],
        );
        assert_eq!(y, want);
    }

    #[test]
    fn conv_transpose2d_is_the_adjoint_of_conv2d() {
        // <conv(x), z> == <x, conv_transpose(z)> with the same weight tensor.
        let configs = [
            // (c, h, w, o, k, stride, pad, dilation, groups)
            (2, 7, 6, 3, [3, 3], [2, 2], [1, 1], [1, 1], 1),
            (4, 9, 8, 6, [3, 2], [2, 3], [1, 0], [2, 1], 2),
            (3, 5, 5, 3, [1, 1], [1, 1], [0, 0], [1, 1], 3),
            (2, 8, 9, 4, [4, 3], [3, 2], [2, 1], [1, 2], 1),
        ];
        for (seed, (c, h, wi, o, k, stride, pad, dilation, groups)) in
            configs.into_iter().enumerate()
        {
            let seed = seed as u64 * 5;
            let conv = Conv2d {
                kernel: k,
                stride,
                padding: [pad[0], pad[1], pad[0], pad[1]],
                dilation,
                groups,
                weights: crate::ir::ConvWeights::RowMajor,
            };
            let x = rand(&[2, c, h, wi], seed);
            let w = rand(&[o, c / groups, k[0], k[1]], seed + 1);
            let y = eval(Op::Conv2d(conv), &[x.clone(), w.clone()], &[]);
            let z = rand(y.shape(), seed + 2);
            let (oh, ow) = (y.shape()[2], y.shape()[3]);
            // Output padding that gives back exactly h x w.
            let out_pad = [
                (h + 2 * pad[0] - dilation[0] * (k[0] - 1) - 1) % stride[0],
                (wi + 2 * pad[1] - dilation[1] * (k[1] - 1) - 1) % stride[1],
            ];
            let tconv = ConvTranspose2d {
                kernel: k,
                stride,
                padding: pad,
                output_padding: out_pad,
                dilation,
                groups,
            };
            let xt = eval(Op::ConvTranspose2d(tconv), &[z.clone(), w], &[]);
            assert_eq!(xt.shape(), x.shape(), "from {oh}x{ow}");
            let lhs: f64 = y
                .iter()
                .zip(z.iter())
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            let rhs: f64 = x
                .iter()
                .zip(xt.iter())
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            assert!(
                (lhs - rhs).abs() < 1e-4 * (1.0 + lhs.abs()),
                "{lhs} vs {rhs}"
            );
        }
    }

    // ----- pooling -------------------------------------------------------------------

    fn pool(
        kernel: usize,
        stride: usize,
        padding: usize,
        ceil_mode: bool,
        count_include_pad: bool,
    ) -> Pool2d {
        Pool2d {
            kernel: [kernel; 2],
            stride: [stride; 2],
            padding: [padding; 4],
            dilation: [1, 1],
            ceil_mode,
            count_include_pad,
        }
    }

    #[test]
    fn max_pool2d_hand_examples() {
        let x = seq(&[1, 1, 4, 4]); // x[i][j] = 4 i + j
        let y = eval1(Op::MaxPool2d(pool(2, 2, 0, false, false)), &x);
        assert_eq!(y, t(&[1, 1, 2, 2], &[5.0, 7.0, 13.0, 15.0]));
        let y = eval1(Op::MaxPool2d(pool(3, 2, 1, false, false)), &x);
        assert_eq!(y, t(&[1, 1, 2, 2], &[5.0, 7.0, 13.0, 15.0]));
        let y = eval1(Op::MaxPool2d(pool(3, 2, 1, true, false)), &x);
        assert_eq!(
            y,
            t(
                &[1, 1, 3, 3],
                &[5.0, 7.0, 7.0, 13.0, 15.0, 15.0, 13.0, 15.0, 15.0]
            )
        );
        // Padding never wins, even against negative values.
        let neg = x.mapv(|v| -v - 1.0);
        let y = eval1(Op::MaxPool2d(pool(3, 1, 1, false, false)), &neg);
        assert_eq!(y[[0, 0, 0, 0]], -1.0);
        assert!(y.iter().all(|&v| v < 0.0));
        // Dilation 2 along w: windows {0, 2}, {1, 3}, {2, 4}.
        let row = t(&[1, 1, 1, 5], &[1.0, 5.0, 2.0, 4.0, 3.0]);
        let dil = Pool2d {
            kernel: [1, 2],
            stride: [1, 1],
            padding: [0; 4],
            dilation: [1, 2],
            ceil_mode: false,
            count_include_pad: false,
        };
        assert_eq!(
            eval1(Op::MaxPool2d(dil), &row),
            t(&[1, 1, 1, 3], &[2.0, 5.0, 3.0])
        );
    }

    #[test]
    fn pooling_dilation_along_h_and_nan() {
        // Same windows as the dilated row examples, along h: {0, 2}, {1, 3}, {2, 4}.
        let col = t(&[1, 1, 5, 1], &[1.0, 5.0, 2.0, 4.0, 3.0]);
        let dil = Pool2d {
            kernel: [2, 1],
            stride: [1, 1],
            padding: [0; 4],
            dilation: [2, 1],
            ceil_mode: false,
            count_include_pad: false,
        };
        let max = eval1(Op::MaxPool2d(dil), &col);
        assert_eq!(max, t(&[1, 1, 3, 1], &[2.0, 5.0, 3.0]));
        let avg = eval1(Op::AvgPool2d(dil), &col);
        assert_eq!(avg, t(&[1, 1, 3, 1], &[1.5, 4.5, 2.5]));
        // A NaN in a window wins the max (PyTorch propagates it).
        let x = t(&[1, 1, 2, 2], &[1.0, f32::NAN, 3.0, 2.0]);
        let y = eval1(Op::MaxPool2d(pool(2, 2, 0, false, false)), &x);
        assert!(y[[0, 0, 0, 0]].is_nan());
    }

    #[test]
    fn pool_output_size_rules() {
        // (H, k, s, pad, ceil) -> out, PyTorch's formula.
        let cases = [
            (4, 2, 2, 0, false, 2),
            (5, 2, 2, 0, false, 2),
            (5, 2, 2, 0, true, 3),
            (4, 3, 2, 1, true, 3),
            // ceil would give 3, but the last window would start in the right padding.
            (4, 2, 3, 1, true, 2),
            // ceil gives 4; the last window would start exactly at the right padding.
            (5, 2, 2, 1, true, 3),
            (6, 3, 3, 1, true, 3),
            (112, 3, 2, 1, false, 56),
        ];
        for (h, k, s, p, ceil, want) in cases {
            let x = seq(&[1, 1, h, h]);
            let y = eval1(Op::MaxPool2d(pool(k, s, p, ceil, false)), &x);
            assert_eq!(
                y.shape(),
                &[1, 1, want, want],
                "H={h} k={k} s={s} p={p} ceil={ceil}"
            );
        }
    }

    #[test]
    fn avg_pool2d_divisors() {
        let x = seq(&[1, 1, 4, 4]);
        let incl = eval1(Op::AvgPool2d(pool(3, 2, 1, false, true)), &x);
        assert_close(
            &incl,
            &t(&[1, 1, 2, 2], &[10.0 / 9.0, 24.0 / 9.0, 51.0 / 9.0, 10.0]),
            1e-6,
        );
        let excl = eval1(Op::AvgPool2d(pool(3, 2, 1, false, false)), &x);
        assert_close(&excl, &t(&[1, 1, 2, 2], &[2.5, 4.0, 8.5, 10.0]), 1e-6);
        // ceil_mode: the last windows hang past the padding; PyTorch clips their divisor
        // at the padded border.
        let incl = eval1(Op::AvgPool2d(pool(3, 2, 1, true, true)), &x);
        assert_eq!(incl.shape(), &[1, 1, 3, 3]);
        assert_close(
            &incl.slice(s![0, 0, 2, ..]).to_owned().into_dyn(),
            &t(&[3], &[25.0 / 6.0, 42.0 / 6.0, 15.0 / 4.0]),
            1e-6,
        );
        let excl = eval1(Op::AvgPool2d(pool(3, 2, 1, true, false)), &x);
        assert_close(
            &excl.slice(s![0, 0, 2, ..]).to_owned().into_dyn(),
            &t(&[3], &[12.5, 14.0, 15.0]),
            1e-6,
        );
        // Dilated average (ONNX): windows {0, 2}, {1, 3}, {2, 4}.
        let row = t(&[1, 1, 1, 5], &[1.0, 2.0, 3.0, 4.0, 5.0]);
        let dil = Pool2d {
            kernel: [1, 2],
            stride: [1, 1],
            padding: [0; 4],
            dilation: [1, 2],
            ceil_mode: false,
            count_include_pad: false,
        };
        assert_eq!(
            eval1(Op::AvgPool2d(dil), &row),
            t(&[1, 1, 1, 3], &[2.0, 3.0, 4.0])
        );
        // Asymmetric padding: only left padding 1, kernel 2, stride 2 on width 3.
        let asym = Pool2d {
            kernel: [1, 2],
            stride: [1, 2],
            padding: [0, 1, 0, 0],
            dilation: [1, 1],
            ceil_mode: false,
            count_include_pad: true,
        };
        let r3 = t(&[1, 1, 1, 3], &[2.0, 4.0, 6.0]);
        assert_eq!(
            eval1(Op::AvgPool2d(asym), &r3),
            t(&[1, 1, 1, 2], &[1.0, 5.0])
        );
    }

    #[test]
    fn global_pools_keep_rank() {
        let x = t(&[1, 2, 2, 2], &[1.0, 2.0, 3.0, 6.0, -1.0, -2.0, -3.0, -4.0]);
        assert_eq!(eval1(Op::GlobalAvgPool, &x), t(&[1, 2, 1, 1], &[3.0, -2.5]));
        assert_eq!(eval1(Op::GlobalMaxPool, &x), t(&[1, 2, 1, 1], &[6.0, -1.0]));
    }

    // ----- reductions and normalizations ---------------------------------------------

    #[test]
    fn reduce_matches_loops() {
        let x = rand(&[2, 3, 4], 9);
        let mut sum = vec![0.0f32; 8]; // over axis 1 -> [2, 4]
        let mut mean02 = [0.0f32; 3]; // over axes 0 and 2 -> [3]
        let mut max02 = [f32::NEG_INFINITY; 3];
        let mut min1 = vec![f32::INFINITY; 8];
        let mut prod2 = vec![1.0f32; 6];
        for i in 0..2 {
            for j in 0..3 {
                for k in 0..4 {
                    let v = x[[i, j, k]];
                    sum[i * 4 + k] += v;
                    mean02[j] += v / 8.0;
                    max02[j] = max02[j].max(v);
                    min1[i * 4 + k] = min1[i * 4 + k].min(v);
                    prod2[i * 3 + j] *= v;
                }
            }
        }
        let red = |kind, axes: &[usize], keepdims| {
            eval1(
                Op::Reduce {
                    kind,
                    axes: axes.to_vec(),
                    keepdims,
                },
                &x,
            )
        };
        assert_close(&red(ReduceKind::Sum, &[1], false), &t(&[2, 4], &sum), 1e-6);
        assert_close(
            &red(ReduceKind::Sum, &[1], true),
            &t(&[2, 1, 4], &sum),
            1e-6,
        );
        assert_close(
            &red(ReduceKind::Mean, &[0, 2], false),
            &t(&[3], &mean02),
            1e-6,
        );
        assert_close(
            &red(ReduceKind::Mean, &[0, 2], true),
            &t(&[1, 3, 1], &mean02),
            1e-6,
        );
        assert_close(&red(ReduceKind::Max, &[0, 2], false), &t(&[3], &max02), 0.0);
        assert_close(&red(ReduceKind::Min, &[1], false), &t(&[2, 4], &min1), 0.0);
        assert_close(
            &red(ReduceKind::Prod, &[2], false),
            &t(&[2, 3], &prod2),
            1e-6,
        );
        let all = red(ReduceKind::Sum, &[0, 1, 2], false);
        assert_eq!(all.shape(), &[] as &[usize]);
        assert!((all[[]] - sum.iter().sum::<f32>()).abs() < 1e-5);
        assert!(eval_op(
            &Op::Reduce {
                kind: ReduceKind::Sum,
                axes: vec![2, 1],
                keepdims: false
            },
            std::slice::from_ref(&x),
            &[]
        )
        .is_err());
        assert!(eval_op(
            &Op::Reduce {
                kind: ReduceKind::Sum,
                axes: vec![3],
                keepdims: false
            },
            &[x],
            &[]
        )
        .is_err());
    }

    #[test]
    fn softmax_is_normalized_and_stable() {
        let x = rand(&[3, 5], 4).mapv(|v| v * 4.0);
        let y = eval1(Op::Softmax { axis: 1 }, &x);
        for i in 0..3 {
            let denom: f32 = (0..5).map(|j| x[[i, j]].exp()).sum();
            let row_sum: f32 = (0..5).map(|j| y[[i, j]]).sum();
            assert!((row_sum - 1.0).abs() < 1e-6);
            for j in 0..5 {
                assert!((y[[i, j]] - x[[i, j]].exp() / denom).abs() < 1e-6);
            }
        }
        // Along axis 0, columns sum to 1.
        let y0 = eval1(Op::Softmax { axis: 0 }, &x);
        for j in 0..5 {
            assert!(((0..3).map(|i| y0[[i, j]]).sum::<f32>() - 1.0).abs() < 1e-6);
        }
        // Huge logits: same result as the shifted ones, no overflow.
        let big = eval1(Op::Softmax { axis: 0 }, &t(&[3], &[1000.0, 1001.0, 1002.0]));
        let small = eval1(Op::Softmax { axis: 0 }, &t(&[3], &[0.0, 1.0, 2.0]));
        assert_close(&big, &small, 1e-6);
        assert!((small[[2]] - 2f32.exp() / (1.0 + 1f32.exp() + 2f32.exp())).abs() < 1e-6);
        let log = eval1(Op::LogSoftmax { axis: 1 }, &x);
        assert_close(&log, &y.mapv(f32::ln), 1e-5);
        let log_big = eval1(Op::LogSoftmax { axis: 0 }, &t(&[2], &[1000.0, 0.0]));
        assert_close(&log_big, &t(&[2], &[0.0, -1000.0]), 1e-6);
    }

    #[test]
    fn layer_norm_hand_example() {
        let x = t(&[2, 4], &[1.0, 2.0, 3.0, 4.0, 2.0, 2.0, 2.0, 2.0]);
        let eps = 1e-5f32;
        let sd = (1.25f32 + eps).sqrt();
        let plain = eval1(Op::LayerNorm { dims: 1, eps }, &x);
        let want = t(
            &[2, 4],
            &[-1.5 / sd, -0.5 / sd, 0.5 / sd, 1.5 / sd, 0.0, 0.0, 0.0, 0.0],
        );
        assert_close(&plain, &want, 1e-6);
        let w = t(&[4], &[1.0, 2.0, 3.0, 4.0]);
        let b = t(&[4], &[0.0, 1.0, 0.0, -1.0]);
        let affine = eval(Op::LayerNorm { dims: 1, eps }, &[x.clone(), w, b], &[]);
        let want = t(
            &[2, 4],
            &[
                -1.5 / sd,
                -1.0 / sd + 1.0,
                1.5 / sd,
                6.0 / sd - 1.0,
                0.0,
                1.0,
                0.0,
                -1.0,
            ],
        );
        assert_close(&affine, &want, 1e-6);
        // Two trailing axes: each sample normalized as a whole.
        let x3 = rand(&[2, 3, 4], 7);
        let y3 = eval1(Op::LayerNorm { dims: 2, eps: 0.0 }, &x3);
        for i in 0..2 {
            let s = y3.slice(s![i, .., ..]);
            let mean: f32 = s.iter().sum::<f32>() / 12.0;
            let var: f32 = s.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 12.0;
            assert!(
                mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5,
                "{mean} {var}"
            );
        }
        assert!(eval_op(
            &Op::LayerNorm { dims: 1, eps },
            &[x, t(&[3], &[1.0; 3]), t(&[3], &[0.0; 3])],
            &[]
        )
        .is_err());
    }

    #[test]
    fn batch_norm_hand_example() {
        let x = t(&[1, 2, 1, 2], &[1.0, 3.0, 10.0, 20.0]);
        let w = t(&[2], &[2.0, 1.0]);
        let b = t(&[2], &[1.0, -1.0]);
        let mean = t(&[2], &[1.0, 10.0]);
        let var = t(&[2], &[4.0, 25.0]);
        let y = eval(Op::BatchNorm { eps: 0.0 }, &[x, w, b, mean, var], &[]);
        // channel 0: (x - 1) / 2 * 2 + 1; channel 1: (x - 10) / 5 - 1
        assert_close(&y, &t(&[1, 2, 1, 2], &[1.0, 3.0, -1.0, 1.0]), 1e-7);
    }

    #[test]
    fn group_norm_matches_direct_statistics() {
        let (n, c, h, w, groups) = (2, 6, 2, 3, 3);
        let x = rand(&[n, c, h, w], 11);
        let gamma = rand(&[c], 12);
        let beta = rand(&[c], 13);
        let eps = 1e-5;
        let y = eval(
            Op::GroupNorm { groups, eps },
            &[x.clone(), gamma.clone(), beta.clone()],
            &[],
        );
        let per = c / groups;
        for s in 0..n {
            for g in 0..groups {
                let block = x.slice(s![s, g * per..(g + 1) * per, .., ..]);
                let count = block.len() as f64;
                let mean = block.iter().map(|&v| f64::from(v)).sum::<f64>() / count;
                let var = block
                    .iter()
                    .map(|&v| (f64::from(v) - mean).powi(2))
                    .sum::<f64>()
                    / count;
                for ch in g * per..(g + 1) * per {
                    for i in 0..h {
                        for j in 0..w {
                            let want = (f64::from(x[[s, ch, i, j]]) - mean)
                                / (var + f64::from(eps)).sqrt()
                                * f64::from(gamma[[ch]])
                                + f64::from(beta[[ch]]);
                            assert!((f64::from(y[[s, ch, i, j]]) - want).abs() < 1e-5);
                        }
                    }
                }
            }
        }
        // One group is layer norm over [C, H, W] without affine.
        let one = eval1(Op::GroupNorm { groups: 1, eps }, &x);
        let ln = eval1(Op::LayerNorm { dims: 3, eps }, &x);
        assert_close(&one, &ln, 1e-6);
        assert!(eval_op(&Op::GroupNorm { groups: 4, eps }, &[x], &[]).is_err());
    }

    #[test]
    fn instance_norm_normalizes_each_channel() {
        let x = t(&[1, 2, 1, 3], &[1.0, 2.0, 3.0, 10.0, 10.0, 40.0]);
        let y = eval(
            Op::InstanceNorm { eps: 0.0 },
            &[x, t(&[2], &[1.0, 2.0]), t(&[2], &[0.0, 5.0])],
            &[],
        );
        let a = (2.0f32 / 3.0).sqrt(); // std of [1, 2, 3]
        let b = 200f32.sqrt(); // std of [10, 10, 40] (mean 20, var 200)
        let want = t(
            &[1, 2, 1, 3],
            &[
                -1.0 / a,
                0.0,
                1.0 / a,
                2.0 * -10.0 / b + 5.0,
                2.0 * -10.0 / b + 5.0,
                2.0 * 20.0 / b + 5.0,
            ],
        );
        assert_close(&y, &want, 1e-6);
    }

    // ----- data movement -------------------------------------------------------------

    #[test]
    fn reshape_keeps_row_major_order() {
        let x = seq(&[2, 3]);
        let y = eval(
            Op::Reshape(ReshapeKind::Flatten),
            std::slice::from_ref(&x),
            &[3, 1, 2],
        );
        assert_eq!(y, seq(&[3, 1, 2]));
        // A transposed (non-standard layout) input still reshapes in logical order.
        let xt = x.clone().reversed_axes();
        let y = eval(Op::Reshape(ReshapeKind::Reshape), &[xt], &[6]);
        assert_eq!(y, t(&[6], &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]));
        assert!(eval_op(&Op::Reshape(ReshapeKind::Reshape), &[x], &[4]).is_err());
    }

    #[test]
    fn transpose_moves_axes_and_round_trips() {
        let x = rand(&[2, 3, 4], 3);
        let y = eval1(
            Op::Transpose {
                perm: vec![2, 0, 1],
            },
            &x,
        );
        assert_eq!(y.shape(), &[4, 2, 3]);
        assert!(y.is_standard_layout());
        for i in 0..2 {
            for j in 0..3 {
                for k in 0..4 {
                    assert_eq!(y[[k, i, j]], x[[i, j, k]]);
                }
            }
        }
        let back = eval1(
            Op::Transpose {
                perm: vec![1, 2, 0],
            },
            &y,
        );
        assert_eq!(back, x);
        assert!(eval_op(
            &Op::Transpose {
                perm: vec![0, 0, 1]
            },
            std::slice::from_ref(&x),
            &[]
        )
        .is_err());
        assert!(eval_op(&Op::Transpose { perm: vec![0, 1] }, &[x], &[]).is_err());
    }

    #[test]
    fn concat_joins_along_axis() {
        let a = seq(&[2, 1]);
        let b = t(&[2, 2], &[10.0, 11.0, 12.0, 13.0]);
        let y = eval(Op::Concat { axis: 1 }, &[a.clone(), b.clone()], &[]);
        assert_eq!(y, t(&[2, 3], &[0.0, 10.0, 11.0, 1.0, 12.0, 13.0]));
        let y = eval(Op::Concat { axis: 0 }, &[b.clone(), b.clone()], &[]);
        assert_eq!(y.shape(), &[4, 2]);
        assert!(eval_op(&Op::Concat { axis: 0 }, &[a, b], &[]).is_err());
    }

    #[test]
    fn slice_with_steps() {
        let x = seq(&[4, 5]);
        let op = Op::Slice {
            starts: vec![1, 0],
            ends: vec![4, 100],
            steps: vec![2, 2],
        };
        let y = eval1(op, &x);
        assert_eq!(y, t(&[2, 3], &[5.0, 7.0, 9.0, 15.0, 17.0, 19.0]));
        let op = Op::Slice {
            starts: vec![3, 1],
            ends: vec![4, 3],
            steps: vec![1, 1],
        };
        assert_eq!(eval1(op, &x), t(&[1, 2], &[16.0, 17.0]));
        let empty = Op::Slice {
            starts: vec![3, 0],
            ends: vec![2, 5],
            steps: vec![1, 1],
        };
        assert_eq!(eval1(empty, &x).shape(), &[0, 5]);
    }

    #[test]
    fn pad_modes_match_numpy() {
        let x = t(&[5], &[1.0, 2.0, 3.0, 4.0, 5.0]);
        let pad1 = |mode| {
            eval1(
                Op::Pad {
                    pads: vec![(2, 3)],
                    mode,
                },
                &x,
            )
        };
        // numpy.pad documentation examples.
        assert_eq!(
            pad1(PadMode::Constant(4.0)),
            t(&[10], &[4.0, 4.0, 1.0, 2.0, 3.0, 4.0, 5.0, 4.0, 4.0, 4.0])
        );
        assert_eq!(
            pad1(PadMode::Edge),
            t(&[10], &[1.0, 1.0, 1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0])
        );
        assert_eq!(
            pad1(PadMode::Reflect),
            t(&[10], &[3.0, 2.0, 1.0, 2.0, 3.0, 4.0, 5.0, 4.0, 3.0, 2.0])
        );
        let m = t(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let y = eval1(
            Op::Pad {
                pads: vec![(1, 1), (1, 1)],
                mode: PadMode::Reflect,
            },
            &m,
        );
        let want = t(
            &[4, 4],
            &[
                4.0, 3.0, 4.0, 3.0, 2.0, 1.0, 2.0, 1.0, 4.0, 3.0, 4.0, 3.0, 2.0, 1.0, 2.0, 1.0,
            ],
        );
        assert_eq!(y, want);
        let y = eval1(
            Op::Pad {
                pads: vec![(0, 1), (2, 0)],
                mode: PadMode::Constant(0.0),
            },
            &m,
        );
        assert_eq!(
            y,
            t(
                &[3, 4],
                &[0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0]
            )
        );
        assert!(eval_op(
            &Op::Pad {
                pads: vec![(1, 1)],
                mode: PadMode::Edge
            },
            &[m],
            &[]
        )
        .is_err());
    }

    #[test]
    fn gather_follows_onnx() {
        // ONNX Gather examples.
        let x = t(&[3, 2], &[1.0, 1.2, 2.3, 3.4, 4.5, 5.7]);
        let idx = t(&[2, 2], &[0.0, 1.0, 1.0, 2.0]);
        let y = eval(Op::Gather { axis: 0 }, &[x, idx], &[]);
        assert_eq!(y, t(&[2, 2, 2], &[1.0, 1.2, 2.3, 3.4, 2.3, 3.4, 4.5, 5.7]));
        let x = t(&[3, 3], &[1.0, 1.2, 1.9, 2.3, 3.4, 3.9, 4.5, 5.7, 5.9]);
        let idx = t(&[1, 2], &[0.0, 2.0]);
        let y = eval(Op::Gather { axis: 1 }, &[x.clone(), idx], &[]);
        assert_eq!(y, t(&[3, 1, 2], &[1.0, 1.9, 2.3, 3.9, 4.5, 5.9]));
        let y = eval(Op::Gather { axis: 0 }, &[x.clone(), t(&[], &[-1.0])], &[]);
        assert_eq!(y, t(&[3], &[4.5, 5.7, 5.9]));
        for bad in [0.5, 3.0, -4.0, f32::NAN] {
            assert!(
                eval_op(&Op::Gather { axis: 0 }, &[x.clone(), t(&[1], &[bad])], &[]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn expand_broadcasts_to_output_shape() {
        let x = t(&[3, 1], &[1.0, 2.0, 3.0]);
        let y = eval(Op::Expand, std::slice::from_ref(&x), &[2, 3, 2]);
        assert_eq!(
            y,
            t(
                &[2, 3, 2],
                &[1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0]
            )
        );
        assert!(eval_op(&Op::Expand, &[x], &[2, 2]).is_err());
    }

    #[test]
    fn resize_nearest() {
        let x = t(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let up = eval(Op::Resize(ResizeMode::Nearest), &[x], &[1, 1, 4, 4]);
        let want = t(
            &[1, 1, 4, 4],
            &[
                1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 3.0, 3.0, 4.0, 4.0,
            ],
        );
        assert_eq!(up, want);
        let down = eval(
            Op::Resize(ResizeMode::Nearest),
            &[seq(&[1, 1, 4, 4])],
            &[1, 1, 2, 2],
        );
        assert_eq!(down, t(&[1, 1, 2, 2], &[0.0, 2.0, 8.0, 10.0]));
        // 3 -> 5 columns: floor(o * 3 / 5) = 0, 0, 1, 1, 2.
        let odd = eval(
            Op::Resize(ResizeMode::Nearest),
            &[seq(&[1, 1, 1, 3])],
            &[1, 1, 1, 5],
        );
        assert_eq!(odd, t(&[1, 1, 1, 5], &[0.0, 0.0, 1.0, 1.0, 2.0]));
        // Nothing to sample from: an error, not a panic.
        for mode in [
            ResizeMode::Nearest,
            ResizeMode::Bilinear {
                align_corners: false,
            },
        ] {
            let empty = t(&[1, 1, 0, 2], &[]);
            assert!(eval_op(&Op::Resize(mode), &[empty], &[1, 1, 2, 0]).is_err());
        }
    }

    #[test]
    fn resize_bilinear_matches_pytorch() {
        let x = t(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let half = eval(
            Op::Resize(ResizeMode::Bilinear {
                align_corners: false,
            }),
            std::slice::from_ref(&x),
            &[1, 1, 4, 4],
        );
        // F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        let want = t(
            &[1, 1, 4, 4],
            &[
                1.0, 1.25, 1.75, 2.0, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3.0, 3.25, 3.75,
                4.0,
            ],
        );
        assert_close(&half, &want, 1e-6);
        let corners = eval(
            Op::Resize(ResizeMode::Bilinear {
                align_corners: true,
            }),
            &[x],
            &[1, 1, 4, 4],
        );
        // align_corners=True: rows 1, 5/3, 7/3, 3 then + 0, 1/3, 2/3, 1 along w.
        let mut want = Vec::new();
        for r in 0..4 {
            for c in 0..4 {
                want.push(1.0 + 2.0 * r as f32 / 3.0 + c as f32 / 3.0);
            }
        }
        assert_close(&corners, &t(&[1, 1, 4, 4], &want), 1e-6);
        // Downsampling by 2 without align_corners averages each 2x2 block.
        let down = eval(
            Op::Resize(ResizeMode::Bilinear {
                align_corners: false,
            }),
            &[seq(&[1, 1, 4, 4])],
            &[1, 1, 2, 2],
        );
        assert_close(&down, &t(&[1, 1, 2, 2], &[2.5, 4.5, 10.5, 12.5]), 1e-6);
    }

    #[test]
    fn cumsum_onnx_examples() {
        let x = t(&[5], &[1.0, 2.0, 3.0, 4.0, 5.0]);
        let cs = |exclusive, reverse| {
            eval1(
                Op::Scan {
                    kind: crate::ir::ScanKind::Sum,
                    axis: 0,
                    exclusive,
                    reverse,
                },
                &x,
            )
        };
        assert_eq!(cs(false, false), t(&[5], &[1.0, 3.0, 6.0, 10.0, 15.0]));
        assert_eq!(cs(true, false), t(&[5], &[0.0, 1.0, 3.0, 6.0, 10.0]));
        assert_eq!(cs(false, true), t(&[5], &[15.0, 14.0, 12.0, 9.0, 5.0]));
        assert_eq!(cs(true, true), t(&[5], &[14.0, 12.0, 9.0, 5.0, 0.0]));
        let m = seq(&[2, 3]);
        let y = eval1(
            Op::Scan {
                kind: crate::ir::ScanKind::Sum,
                axis: 0,
                exclusive: false,
                reverse: false,
            },
            &m,
        );
        assert_eq!(y, t(&[2, 3], &[0.0, 1.0, 2.0, 3.0, 5.0, 7.0]));
        let y = eval1(
            Op::Scan {
                kind: crate::ir::ScanKind::Sum,
                axis: 1,
                exclusive: false,
                reverse: false,
            },
            &m,
        );
        assert_eq!(y, t(&[2, 3], &[0.0, 1.0, 3.0, 3.0, 7.0, 12.0]));
    }

    #[test]
    fn operand_counts_are_checked() {
        let x = t(&[1], &[1.0]);
        assert!(eval_op(&Op::Unary(UnaryOp::Relu), &[x.clone(), x.clone()], &[]).is_err());
        assert!(eval_op(&Op::Binary(BinaryOp::Add), std::slice::from_ref(&x), &[]).is_err());
        assert!(eval_op(&Op::BatchNorm { eps: 0.0 }, std::slice::from_ref(&x), &[]).is_err());
        assert!(eval_op(&Op::Concat { axis: 0 }, &[], &[]).is_err());
        let e = eval_op(&Op::Linear, &[x], &[]).unwrap_err();
        assert!(e.to_string().contains("operands"), "{e}");
    }

    // ----- whole graphs --------------------------------------------------------------

    /// x:[1,3] -> linear(fc) -> relu -> y:[1,2]
    fn small_graph() -> Graph {
        let mut g = Graph::default();
        let x = g.add_value("x".into(), vec![1, 3], ValueKind::Input(0));
        let w = g.add_value("fc.weight".into(), vec![2, 3], ValueKind::Param(0));
        let b = g.add_value("fc.bias".into(), vec![2], ValueKind::Param(1));
        let h = g.add_value("h".into(), vec![1, 2], ValueKind::Node(0));
        let y = g.add_value("y".into(), vec![1, 2], ValueKind::Node(1));
        g.params = vec![
            Param {
                key: "fc.weight".into(),
                shape: vec![2, 3],
                value: w,
            },
            Param {
                key: "fc.bias".into(),
                shape: vec![2],
                value: b,
            },
        ];
        g.nodes = vec![
            Node {
                op: Op::Linear,
                inputs: vec![x, w, b],
                output: h,
                span: Span::call_site(),
            },
            Node {
                op: Op::Unary(UnaryOp::Relu),
                inputs: vec![h],
                output: y,
                span: Span::call_site(),
            },
        ];
        g.inputs = vec![x];
        g.outputs = vec![y, h];
        g
    }

    #[test]
    fn interpret_runs_a_graph() {
        let g = small_graph();
        let params = [
            t(&[2, 3], &[1.0, 1.0, 1.0, -1.0, 0.0, 0.0]),
            t(&[2], &[0.5, 0.0]),
        ];
        let out = interpret(&g, &[t(&[1, 3], &[1.0, 2.0, 3.0])], &params).unwrap();
        assert_eq!(out, vec![t(&[1, 2], &[6.5, 0.0]), t(&[1, 2], &[6.5, -1.0])]);
    }

    #[test]
    fn interpret_checks_shapes() {
        let g = small_graph();
        let params = [t(&[2, 3], &[0.0; 6]), t(&[2], &[0.0; 2])];
        // Wrong input shape.
        assert!(interpret(&g, &[t(&[3], &[0.0; 3])], &params).is_err());
        // Wrong parameter shape.
        assert!(interpret(
            &g,
            &[t(&[1, 3], &[0.0; 3])],
            &[t(&[3, 2], &[0.0; 6]), t(&[2], &[0.0; 2])]
        )
        .is_err());
        // Wrong number of inputs.
        assert!(interpret(&g, &[], &params).is_err());
        // A node whose result disagrees with the recorded shape.
        let mut bad = g.clone();
        bad.values[3].shape = vec![2, 1];
        let e = interpret(&bad, &[t(&[1, 3], &[0.0; 3])], &params).unwrap_err();
        assert!(e.message.contains("node 0"), "{e}");
        // An operand that is never computed.
        let mut bad = g;
        bad.nodes[1].inputs = vec![4];
        assert!(interpret(&bad, &[t(&[1, 3], &[0.0; 3])], &params).is_err());
    }

    // ----- run_plan -----------------------------------------------------------------

    #[test]
    fn check_program_finds_what_generated_code_would_trip_on() {
        use crate::element::{ElementProgram, Ex, Ix};
        // out[i0] = t0 where t0 = x[i0 - 1] is computed for every i0 (a shared
        // subexpression), though only used under `1 <= i0`: i0 = 0 underflows
        let load = Ex::Load(0, Ix::Sub(Box::new(Ix::Var(0)), 1));
        let guarded = |value: Ex| Ex::InRange {
            index: Ix::Var(0),
            lo: 1,
            hi: 3,
            then: Box::new(value),
            otherwise: Box::new(Ex::Const(0.0)),
        };
        let hoisted = ElementProgram {
            operands: vec![0],
            shape: vec![3],
            lets: vec![load.clone()],
            value: guarded(Ex::Let(0)),
        };
        let x = [1.0f32, 2.0];
        let e = check_program(&hoisted, &[&x], None).unwrap_err();
        assert!(e.message.contains("underflow"), "{e}");
        // the same load inside the guard is fine
        let inline = ElementProgram {
            operands: vec![0],
            shape: vec![3],
            lets: vec![],
            value: guarded(load),
        };
        check_program(&inline, &[&x], None).unwrap();
        // a load past the end
        let past = ElementProgram {
            operands: vec![0],
            shape: vec![3],
            lets: vec![],
            value: Ex::Load(0, Ix::Var(0)),
        };
        assert!(check_program(&past, &[&x], None)
            .unwrap_err()
            .message
            .contains("load of element 2"));
    }

    fn lowered(src: &str) -> (Graph, Vec<ArrayD<f32>>, Vec<ArrayD<f32>>) {
        let g = crate::lower_str(src).unwrap().remove(0).graph;
        let inputs = g
            .inputs
            .iter()
            .enumerate()
            .map(|(i, &v)| rand(&g.values[v].shape, i as u64))
            .collect();
        let params = g
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| rand(&p.shape, 100 + i as u64).mapv(f32::abs))
            .collect();
        (g, inputs, params)
    }

    #[test]
    fn run_plan_matches_interpret_fused_and_unfused() {
        let sources = [
            // an anchor with an epilogue: conv2d + batch_norm + relu
            "model M(x: [1, 2, 6, 6]) -> [1, 3, 3, 3] {
                let c = conv2d(x, 3, kernel = 3, padding = 1);
                let bn = batch_norm(c);
                max_pool2d(relu(bn), 2)
            }",
            // index translation: transpose, broadcast, a diamond
            "model M(x: [1, 2, 4, 4], y: [4, 1]) -> [1, 2, 4, 4] {
                let t = transpose(relu(x), 2, 3) + y;
                sigmoid(t) * tanh(t)
            }",
        ];
        for src in sources {
            let (g, inputs, params) = lowered(src);
            let want = interpret(&g, &inputs, &params).unwrap();
            let fused = crate::fuse::fuse(&g);
            assert!(fused.blocks.iter().any(|b| b.nodes.len() > 1), "{fused:?}");
            for plan in [fused, crate::fuse::FusionPlan::unfused(&g)] {
                let got = run_plan(&g, &plan, &inputs, &params).unwrap();
                assert_close(&got[0], &want[0], 1e-5);
            }
        }
    }

    #[test]
    fn run_plan_rejects_broken_plans() {
        use crate::fuse::{Block, FusionPlan};
        use crate::tables::MappingType;
        let (g, inputs, params) = lowered(
            "model M(x: [3, 4]) -> [3, 4] {
                let a = relu(x);
                let b = exp(a);
                b + a
            }",
        );
        let block = |nodes: Vec<usize>| Block {
            nodes,
            anchor: None,
            mapping: MappingType::OneToOne,
        };
        // `a` lives inside block 0 but block 1 reads it
        let leaky = FusionPlan {
            blocks: vec![block(vec![0, 1]), block(vec![2])],
        };
        let e = run_plan(&g, &leaky, &inputs, &params).unwrap_err();
        assert!(e.message.contains("neither an input"), "{e}");
        // blocks out of order
        let reversed = FusionPlan {
            blocks: vec![block(vec![1]), block(vec![0]), block(vec![2])],
        };
        assert!(run_plan(&g, &reversed, &inputs, &params).is_err());
        // a node in no block / in two blocks
        let missing = FusionPlan {
            blocks: vec![block(vec![0]), block(vec![2])],
        };
        assert!(run_plan(&g, &missing, &inputs, &params).is_err());
        let twice = FusionPlan {
            blocks: vec![block(vec![0]), block(vec![0, 1]), block(vec![2])],
        };
        assert!(run_plan(&g, &twice, &inputs, &params).is_err());
        // a whole-graph block is fine
        let whole = FusionPlan {
            blocks: vec![block(vec![0, 1, 2])],
        };
        let want = interpret(&g, &inputs, &params).unwrap();
        assert_close(
            &run_plan(&g, &whole, &inputs, &params).unwrap()[0],
            &want[0],
            1e-6,
        );
        // a prologue computes the anchor's operand 0 on the fly, as codegen does
        let (g, inputs, params) =
            lowered("model M(x: [2, 4]) -> [2, 3] { let fc = linear(relu(x), 3); fc }");
        let prologue = FusionPlan {
            blocks: vec![Block {
                nodes: vec![0, 1],
                anchor: Some(1),
                mapping: MappingType::ManyToMany,
            }],
        };
        let want = interpret(&g, &inputs, &params).unwrap();
        assert_close(
            &run_plan(&g, &prologue, &inputs, &params).unwrap()[0],
            &want[0],
            1e-6,
        );
        // a block member feeding another operand of the anchor is read from memory: an error
        let (g, inputs, params) =
            lowered("model M(x: [2, 4], y: [4, 3]) -> [2, 3] { matmul(x, relu(y)) }");
        let second = FusionPlan {
            blocks: vec![Block {
                nodes: vec![0, 1],
                anchor: Some(1),
                mapping: MappingType::ManyToMany,
            }],
        };
        let e = run_plan(&g, &second, &inputs, &params).unwrap_err();
        assert!(e.message.contains("operand 0"), "{e}");
        // a conv2d prologue other than one pad is not what codegen generates
        let (g, inputs, params) = lowered("model M(x: [1, 1, 4, 4]) -> [1, 1, 4, 4] { let c = conv2d(relu(x), 1, kernel = 1); c }");
        let conv = FusionPlan {
            blocks: vec![Block {
                nodes: vec![0, 1],
                anchor: Some(1),
                mapping: MappingType::ManyToMany,
            }],
        };
        assert!(run_plan(&g, &conv, &inputs, &params).is_err());
        // a zero pad folded into the conv's padding
        let (g, inputs, params) = lowered("model M(x: [1, 2, 4, 4]) -> [1, 1, 6, 6] { let c = conv2d(pad(x, [1, 2, 0, 1]), 1, kernel = 2, padding = [1, 0]); c }");
        let folded = FusionPlan {
            blocks: vec![Block {
                nodes: vec![0, 1],
                anchor: Some(1),
                mapping: MappingType::ManyToMany,
            }],
        };
        let want = interpret(&g, &inputs, &params).unwrap();
        assert_close(
            &run_plan(&g, &folded, &inputs, &params).unwrap()[0],
            &want[0],
            1e-6,
        );
    }
}

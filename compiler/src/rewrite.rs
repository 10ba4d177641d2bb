//! Stage 4, `rewrite`: a checked [`Graph`] -> an equivalent, cheaper [`Graph`]
//! (paper §4.2, DESIGN.md §5).
//!
//! Rules are data: each entry of [`crate::tables::RULES`] has a name, a family, an
//! exactness tag and a `fn(&Graph, node) -> Option<Patch>` that matches a small pattern
//! rooted at one node and proposes a replacement. The engine owns everything else:
//!
//! - **cost**: a patch is priced generically ([`Cost`]: FLOPs, then loads, then node
//!   count) by the nodes it makes dead against the nodes it adds; a rule never states its
//!   own gain. The cost is per inference: a node computed from parameters alone costs
//!   nothing, since stage `prepare` runs it once at load time (so moving a scale into a
//!   conv's weights pays);
//! - **choice** (the paper's greedy scheme): the graph is cut into partitions at ops with
//!   none of the associative, commutative or distributive properties
//!   ([`crate::tables::algebraic`]); in each partition the candidate removing the most
//!   FLOPs (loads, then node count break ties) is applied; repeat until nothing applies
//!   or `max_rewrites` patches were applied. To stay linear on long chains, a round also
//!   applies every other candidate, by decreasing gain, whose footprint (the nodes it
//!   removes and the producers of what it reads) overlaps no chosen one: applying them
//!   together is the same as applying them one after the other;
//! - **commutative moves** that gain nothing by themselves (operand swaps, moving a
//!   transpose past an elementwise op) are tried only when no other rule applies, and are
//!   kept only together with a rule they enable, when the pair lowers the cost;
//! - **safety**: the replacement must have the replaced value's shape, model outputs stay
//!   outputs, parameters are never added or removed (they are loaded by key at run time),
//!   and nodes of `fuse { }` groups are never removed. Debug builds re-run
//!   [`crate::check::check`] after every round; a round that fails it is undone and
//!   replayed one patch at a time, and the failing patch is skipped (and reported in
//!   [`Rewritten::errors`]).
//!
//! Every applied patch lowers the cost, a tuple of natural numbers compared
//! lexicographically, so the loop terminates even without `max_rewrites`.
//!
//! ```text
//!   before                              after (distributive_factor_mul_add)
//!   a ──┬──> mul(a, b) ──┐              b ──┐
//!       │                ├─> add          c ──┴─> add(b, c) ──> mul(a, ·)
//!       └──> mul(a, c) ──┘              a ─────────────────────────^
//!   3 ops, 3n FLOPs, 9n loads           2 ops, 2n FLOPs, 6n loads
//! ```
//!
//! Floating point (README "Floating-point policy"): rules tagged `exact` change results by
//! ordinary rounding only; value-changing rules run only with `#![rewrite(fast_math)]`.

pub mod rules;

use std::collections::HashMap;

use crate::ir::{Graph, Node, Op, ResizeMode, UnaryOp, ValueId, ValueKind};
use crate::ops::{conv, layout, norm, pool, product, select};
use crate::tables::{Family, Rule, RULES};
use crate::work::{self, Stage};

/// An operand of a node a patch adds: a value of the graph, or an earlier new node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    /// An existing value.
    Old(ValueId),
    /// The output of `Patch::nodes[i]`.
    New(usize),
}

/// A node a patch adds.
#[derive(Clone, Debug, PartialEq)]
pub struct NewNode {
    /// What it computes.
    pub op: Op,
    /// Its operands.
    pub inputs: Vec<Operand>,
    /// Its output shape.
    pub shape: Vec<usize>,
}

/// A rule's proposal: replace the output of the matched node by `result`, computed by
/// `nodes` (inserted just before the matched node, so the order stays topological).
/// Readers of the old value (and the model outputs) are redirected; nodes left without
/// readers are removed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Patch {
    /// New nodes, operands first.
    pub nodes: Vec<NewNode>,
    /// The value that takes the matched node's place.
    pub result: Option<Operand>,
}

impl Patch {
    /// A patch that adds no node: the matched value becomes `value`.
    pub fn alias(value: ValueId) -> Patch {
        Patch {
            nodes: Vec::new(),
            result: Some(Operand::Old(value)),
        }
    }

    /// The shape of an operand.
    pub fn shape<'a>(&'a self, graph: &'a Graph, operand: Operand) -> &'a [usize] {
        match operand {
            Operand::Old(v) => graph.shape(v),
            Operand::New(i) => self.nodes.get(i).map_or(&[], |n| n.shape.as_slice()),
        }
    }

    /// Adds a node whose result shape follows from its operands (every op but reshape,
    /// expand and resize: [`Patch::node_shaped`]); its shape is what
    /// [`crate::check::infer`] gives. `None` when the operands do not fit the op.
    pub fn node(&mut self, graph: &Graph, op: Op, inputs: Vec<Operand>) -> Option<Operand> {
        self.node_shaped(graph, op, inputs, Vec::new())
    }

    /// [`Patch::node`] for an op whose result shape is its attribute (reshape, expand,
    /// resize: `given`, which [`crate::check::infer`] validates against the operands), or
    /// for a copy of a matched node's op, which may be one of them. Other ops ignore
    /// `given`.
    pub fn node_shaped(
        &mut self,
        graph: &Graph,
        op: Op,
        inputs: Vec<Operand>,
        given: Vec<usize>,
    ) -> Option<Operand> {
        let shapes: Vec<&[usize]> = inputs.iter().map(|&x| self.shape(graph, x)).collect();
        let shape = crate::check::infer(&op, &shapes, &given).ok()?;
        self.nodes.push(NewNode { op, inputs, shape });
        Some(Operand::New(self.nodes.len() - 1))
    }

    /// Adds an elementwise unary op.
    pub fn unary(&mut self, graph: &Graph, op: UnaryOp, x: Operand) -> Operand {
        let shape = self.shape(graph, x).to_vec();
        self.nodes.push(NewNode {
            op: Op::Unary(op),
            inputs: vec![x],
            shape,
        });
        Operand::New(self.nodes.len() - 1)
    }

    /// Adds a broadcasting binary op; `None` when the shapes do not broadcast.
    pub fn binary(
        &mut self,
        graph: &Graph,
        op: crate::ir::BinaryOp,
        a: Operand,
        b: Operand,
    ) -> Option<Operand> {
        self.node(graph, Op::Binary(op), vec![a, b])
    }

    /// Finishes the patch with its result.
    pub fn done(mut self, result: Operand) -> Option<Patch> {
        self.result = Some(result);
        Some(self)
    }
}

/// Options of the rewrite stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RewriteOptions {
    /// Also run the value-changing rules (`#![rewrite(fast_math)]`).
    pub fast_math: bool,
    /// Stop after this many patches (for bisecting a bad rewrite).
    pub max_rewrites: usize,
    /// Run only the rules with these names (tests and bisecting); `None` runs them all.
    pub only: Option<Vec<String>>,
    /// Nodes that must survive unchanged (members of `fuse { }` groups).
    pub frozen: Vec<usize>,
    /// Rules never to apply (the fusion guard in `compile_model` turns off a rule whose
    /// result fuses worse).
    pub excluded: Vec<&'static str>,
}

impl Default for RewriteOptions {
    fn default() -> Self {
        RewriteOptions {
            fast_math: false,
            max_rewrites: 10_000,
            only: None,
            frozen: Vec::new(),
            excluded: Vec::new(),
        }
    }
}

/// The result of [`rewrite`].
#[derive(Clone, Debug)]
pub struct Rewritten {
    /// The rewritten graph (same inputs, parameters and output shapes).
    pub graph: Graph,
    /// The names of the applied rules, in order.
    pub applied: Vec<&'static str>,
    /// For each node of the input graph, its index in the new graph (`None`: removed).
    pub node_map: Vec<Option<usize>>,
    /// Patches rejected by the post-patch check (an internal error of a rule; empty
    /// unless a rule is wrong).
    pub errors: Vec<String>,
}

/// The price of some nodes. Compared lexicographically: FLOPs first (the paper's
/// metric), then loads (the paper's footnote: "A is loaded once instead of twice"), then
/// the number of ops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cost {
    /// Floating-point operations, weighted (see [`UnaryOp::cost`]).
    pub flops: u64,
    /// Elements read plus elements written.
    pub loads: u64,
    /// Ops.
    pub nodes: u64,
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost {
            flops: self.flops.saturating_add(o.flops),
            loads: self.loads.saturating_add(o.loads),
            nodes: self.nodes.saturating_add(o.nodes),
        }
    }
}

/// How much a patch saves: `before - after`, each field signed. A patch is worth applying
/// when this is lexicographically above zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Gain {
    /// FLOPs removed.
    pub flops: i64,
    /// Loads removed.
    pub loads: i64,
    /// Ops removed.
    pub nodes: i64,
}

impl Gain {
    /// `before - after`.
    pub fn between(before: Cost, after: Cost) -> Gain {
        let d = |a: u64, b: u64| {
            (a as i128 - b as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64
        };
        Gain {
            flops: d(before.flops, after.flops),
            loads: d(before.loads, after.loads),
            nodes: d(before.nodes, after.nodes),
        }
    }

    /// Lexicographically above zero.
    pub fn positive(self) -> bool {
        self > Gain::default()
    }

    fn plus(self, o: Gain) -> Gain {
        Gain {
            flops: self.flops.saturating_add(o.flops),
            loads: self.loads.saturating_add(o.loads),
            nodes: self.nodes.saturating_add(o.nodes),
        }
    }
}

fn elements(shape: &[usize]) -> u64 {
    shape.iter().fold(1u64, |a, &d| a.saturating_mul(d as u64))
}

/// The cost of one op given its operand shapes and output shape.
pub fn op_cost(op: &Op, inputs: &[&[usize]], out: &[usize]) -> Cost {
    let n = elements(out);
    let first = inputs.first().map_or(0, |s| elements(s));
    let read: u64 = inputs
        .iter()
        .map(|s| elements(s))
        .fold(0, u64::saturating_add);
    let flops = match op {
        Op::Unary(u) => n.saturating_mul(u.cost()),
        Op::Binary(b) => n.saturating_mul(b.cost()),
        Op::Where | Op::Prelu => n.saturating_mul(select::COST),
        Op::Linear => {
            let k = inputs.first().and_then(|s| s.last()).copied().unwrap_or(0) as u64;
            product::cost(n, k, inputs.len() > 2)
        }
        Op::MatMul | Op::MatMulPanels { .. } => {
            let k = inputs.first().and_then(|s| s.last()).copied().unwrap_or(0) as u64;
            product::cost(n, k, false)
        }
        Op::Conv2d(c) => {
            let cin = inputs.first().and_then(|s| s.get(1)).copied().unwrap_or(0) as u64;
            conv::conv2d_cost(n, cin, c)
        }
        Op::ConvTranspose2d(c) => {
            let cout = out.get(1).copied().unwrap_or(0) as u64;
            conv::conv_transpose2d_cost(first, cout, c)
        }
        Op::MaxPool2d(p) | Op::AvgPool2d(p) => pool::window_cost(n, p),
        Op::GlobalAvgPool | Op::GlobalMaxPool => pool::global_cost(first),
        Op::Scan { kind, .. } => first.saturating_mul(kind.facts().cost),
        Op::Reduce { kind, .. } => first.saturating_add(n.saturating_mul(kind.facts().finish_cost)),
        Op::Softmax { .. } | Op::LogSoftmax { .. } => n.saturating_mul(norm::SOFTMAX_COST),
        Op::LayerNorm { .. } | Op::GroupNorm { .. } | Op::InstanceNorm { .. } => {
            n.saturating_mul(norm::STATISTICS_COST)
        }
        Op::BatchNorm { .. } => n.saturating_mul(norm::BATCH_NORM_COST),
        Op::Resize(ResizeMode::Bilinear { .. }) | Op::Resample(_) => {
            n.saturating_mul(layout::INTERPOLATION_COST)
        }
        Op::Resize(ResizeMode::Nearest)
        | Op::Reshape(_)
        | Op::Transpose { .. }
        | Op::PackPanels
        | Op::TileConvWeights { .. }
        | Op::WinogradWeights { .. }
        | Op::Concat { .. }
        | Op::Slice { .. }
        | Op::Pad { .. }
        | Op::Gather { .. }
        | Op::Expand => 0,
    };
    // a reshape moves no data: it aliases its operand's memory
    let loads = if matches!(op, Op::Reshape(_)) {
        0
    } else {
        read.saturating_add(n)
    };
    Cost {
        flops,
        loads,
        nodes: 1,
    }
}

/// The per-inference cost of some nodes of a graph: a node computed from parameters alone
/// costs nothing, since stage `prepare` runs it once, at load time.
pub fn cost(graph: &Graph, nodes: &[usize]) -> Cost {
    cost_given(graph, nodes, &crate::prepare::parameter_only(graph))
}

/// [`cost`] with the graph's [`parameter_only`](crate::prepare::parameter_only) values
/// already known (pricing a candidate must not walk the whole graph).
fn cost_given(graph: &Graph, nodes: &[usize], param_only: &[bool]) -> Cost {
    nodes
        .iter()
        .filter_map(|&i| graph.nodes.get(i))
        .filter(|n| !param_only.get(n.output).copied().unwrap_or(false))
        .map(|n| node_cost(graph, n))
        .fold(Cost::default(), |a, b| a + b)
}

/// The cost of one node of a graph.
pub fn node_cost(graph: &Graph, node: &Node) -> Cost {
    let shapes: Vec<&[usize]> = node.inputs.iter().map(|&v| graph.shape(v)).collect();
    op_cost(&node.op, &shapes, graph.shape(node.output))
}

/// The cost of a whole graph.
pub fn graph_cost(graph: &Graph) -> Cost {
    let all: Vec<usize> = (0..graph.nodes.len()).collect();
    cost(graph, &all)
}

/// Most commutative moves tried per round when no other rule applies (each trial
/// rebuilds the graph).
const ENABLING_TRIALS: usize = 32;

/// Rewrites `graph` to a fixed point of the enabled rules (see the module doc).
pub fn rewrite(graph: &Graph, options: &RewriteOptions) -> Rewritten {
    let rules: Vec<&'static Rule> = RULES
        .iter()
        .filter(|r| r.exact || options.fast_math)
        .filter(|r| {
            options
                .only
                .as_ref()
                .is_none_or(|only| only.iter().any(|n| n == r.name))
        })
        .filter(|r| !options.excluded.contains(&r.name))
        .collect();
    let mut frozen = vec![false; graph.nodes.len()];
    for &f in &options.frozen {
        if let Some(x) = frozen.get_mut(f) {
            *x = true;
        }
    }
    let mut state = State {
        graph: graph.clone(),
        frozen,
        map: (0..graph.nodes.len()).map(Some).collect(),
        fresh: 0,
        created: Vec::new(),
    };
    // dead nodes go first (not a rule: nothing reads them)
    state.apply(&[]);
    let mut applied = Vec::new();
    let mut errors = Vec::new();
    let mut blocked: Vec<(usize, &'static str)> = Vec::new();
    // after a failed check, one patch per round until the culprit is found
    let mut single = false;
    while applied.len() < options.max_rewrites {
        let left = options.max_rewrites - applied.len();
        let mut batch = vec![round(
            &state,
            &rules,
            &blocked,
            if single { 1 } else { left },
        )];
        let pair = batch.iter().all(Vec::is_empty);
        if pair {
            match best_enabling(&state, &rules, &blocked) {
                Some((first, follow)) if left >= 2 => batch = vec![vec![first], vec![follow]],
                _ => break,
            }
        }
        // the enabling pair is applied in two steps (the follow-up is priced on the
        // graph the move made); a round's batch in one. `state` stays as it was until the
        // result is known to be good.
        let mut next: Option<State> = None;
        let mut ok = true;
        let mut names = Vec::new();
        for step in &batch {
            if ok {
                match next.as_ref().unwrap_or(&state).applied(step) {
                    Some(s) => next = Some(s),
                    None => ok = false,
                }
            }
            names.extend(step.iter().map(|c| c.rule.name));
        }
        if ok && cfg!(debug_assertions) {
            let graph = next.as_ref().map_or(&state.graph, |s| &s.graph);
            if let Err(message) = crate::check::check(graph) {
                errors.push(format!("rules {names:?} broke the graph: {message}"));
                ok = false;
            }
        }
        if !ok {
            if names.len() > 1 && !pair && !single {
                single = true;
            } else if let Some(c) = batch.first().and_then(|b| b.first()) {
                blocked.push((c.node, c.rule.name));
            }
            continue;
        }
        if let Some(s) = next {
            state = s;
        }
        applied.extend(names);
        blocked.clear();
        single = false;
    }
    Rewritten {
        graph: state.graph,
        applied,
        node_map: state.map,
        errors,
    }
}

/// A rule that matched, with its patch, its gain and the nodes it touches.
#[derive(Clone)]
struct Candidate {
    rule: &'static Rule,
    node: usize,
    patch: Patch,
    gain: Gain,
    /// The nodes the patch removes plus the producers of the values it reads: two
    /// candidates with disjoint footprints can be applied together.
    footprint: Vec<usize>,
}

/// The graph being rewritten, plus the bookkeeping the driver needs.
#[derive(Clone)]
struct State {
    graph: Graph,
    /// Per node of `graph`: a member of a `fuse { }` group.
    frozen: Vec<bool>,
    /// Per node of the original graph: its index in `graph`.
    map: Vec<Option<usize>>,
    /// Counter for the names of new values.
    fresh: usize,
    /// Nodes of `graph` the last patches added.
    created: Vec<usize>,
}

/// Per value: how many node operands and model outputs read it.
fn readers(graph: &Graph) -> Vec<usize> {
    let mut counts = graph.consumer_counts();
    for &o in &graph.outputs {
        if let Some(c) = counts.get_mut(o) {
            *c += 1;
        }
    }
    counts
}

fn producer(graph: &Graph, v: ValueId) -> Option<usize> {
    match graph.values.get(v).map(|v| &v.kind) {
        Some(ValueKind::Node(i)) => Some(*i),
        _ => None,
    }
}

impl State {
    /// The gain and footprint of `patch` at `node`, or `None` when the patch is malformed
    /// or would remove a frozen node. `readers` and `param_only` are the graph's (see
    /// [`readers`] and [`crate::prepare::parameter_only`]).
    fn price(
        &self,
        node: usize,
        patch: &Patch,
        readers: &[usize],
        param_only: &[bool],
    ) -> Option<(Gain, Vec<usize>)> {
        let g = &self.graph;
        let root = g.nodes.get(node)?;
        let r = root.output;
        if self.frozen.get(node).copied().unwrap_or(false) {
            return None;
        }
        let result = patch.result?;
        if result == Operand::Old(r) || patch.shape(g, result) != g.shape(r) {
            return None;
        }
        if let Operand::New(i) = result {
            if i >= patch.nodes.len() {
                return None;
            }
        }
        let mut extra: HashMap<ValueId, usize> = HashMap::new();
        let mut after = Cost::default();
        // new nodes computed from parameters alone run at load time: free per inference
        let mut new_param_only = Vec::with_capacity(patch.nodes.len());
        for (i, n) in patch.nodes.iter().enumerate() {
            let mut shapes = Vec::with_capacity(n.inputs.len());
            let mut from_params = !n.inputs.is_empty();
            for &input in &n.inputs {
                match input {
                    Operand::Old(v) if v == r || v >= g.values.len() => return None,
                    Operand::Old(v) => {
                        *extra.entry(v).or_insert(0) += 1;
                        from_params &= param_only.get(v).copied().unwrap_or(false);
                    }
                    Operand::New(j) if j >= i => return None,
                    Operand::New(j) => {
                        from_params &= new_param_only.get(j).copied().unwrap_or(false);
                    }
                }
                shapes.push(patch.shape(g, input));
            }
            new_param_only.push(from_params);
            if !from_params {
                after = after + op_cost(&n.op, &shapes, &n.shape);
            }
        }
        if let Operand::Old(v) = result {
            *extra.entry(v).or_insert(0) += 1;
        }
        // nodes left without readers once `r` is replaced
        let mut lost: HashMap<ValueId, usize> = HashMap::new();
        let mut dead = vec![node];
        let mut stack = vec![node];
        while let Some(d) = stack.pop() {
            let Some(dn) = g.nodes.get(d) else { continue };
            for &v in &dn.inputs {
                let l = lost.entry(v).or_insert(0);
                *l += 1;
                let left =
                    readers.get(v).copied().unwrap_or(0) + extra.get(&v).copied().unwrap_or(0);
                if left == *l {
                    if let Some(p) = producer(g, v) {
                        if !dead.contains(&p) {
                            if self.frozen.get(p).copied().unwrap_or(false) {
                                return None;
                            }
                            dead.push(p);
                            stack.push(p);
                        }
                    }
                }
            }
        }
        work::add(Stage::Rewrite, dead.len() + patch.nodes.len());
        let gain = Gain::between(cost_given(g, &dead, param_only), after);
        let mut footprint = dead;
        footprint.extend(extra.keys().filter_map(|&v| producer(g, v)));
        footprint.sort_unstable();
        footprint.dedup();
        Some((gain, footprint))
    }

    /// Applies candidates with disjoint footprints in one rebuild (none: only removes
    /// dead nodes); false (and the state unchanged) if a patch does not fit.
    fn apply(&mut self, batch: &[Candidate]) -> bool {
        match self.applied(batch) {
            Some(next) => {
                *self = next;
                true
            }
            None => false,
        }
    }

    /// The state after [`State::apply`], leaving this one as it is (no copy of the graph
    /// is made: the rebuild writes a new one); `None` if a patch does not fit.
    fn applied(&self, batch: &[Candidate]) -> Option<State> {
        let g = &self.graph;
        let mut fresh = self.fresh;
        work::add(Stage::Rewrite, g.nodes.len() + g.values.len());
        let mut values = g.values.clone();
        let mut redirect: HashMap<ValueId, ValueId> = HashMap::new();
        // per root node: the new nodes to insert before it
        let mut inserts: HashMap<usize, Vec<Node>> = HashMap::new();
        for c in batch {
            let root = g.nodes.get(c.node)?;
            let base = g
                .values
                .get(root.output)
                .map_or_else(|| "v".to_string(), |v| v.name.clone());
            let mut new_ids = Vec::with_capacity(c.patch.nodes.len());
            for n in &c.patch.nodes {
                fresh += 1;
                values.push(crate::ir::Value {
                    name: format!("{base}_r{fresh}"),
                    shape: n.shape.clone(),
                    kind: ValueKind::Node(usize::MAX),
                });
                new_ids.push(values.len() - 1);
            }
            let resolve = |o: Operand| match o {
                Operand::Old(v) => Some(v),
                Operand::New(i) => new_ids.get(i).copied(),
            };
            let result = c.patch.result.and_then(resolve)?;
            let mut nodes = Vec::with_capacity(c.patch.nodes.len());
            for (nn, &output) in c.patch.nodes.iter().zip(&new_ids) {
                let inputs = nn
                    .inputs
                    .iter()
                    .map(|&o| resolve(o))
                    .collect::<Option<Vec<_>>>()?;
                nodes.push(Node {
                    op: nn.op.clone(),
                    inputs,
                    output,
                    span: root.span,
                });
            }
            if inserts.insert(c.node, nodes).is_some()
                || redirect.insert(root.output, result).is_some()
            {
                return None;
            }
        }
        // (node, origin): origin is the old index, or None for a new node
        let mut order: Vec<(Node, Option<usize>)> = Vec::with_capacity(g.nodes.len());
        for (i, n) in g.nodes.iter().enumerate() {
            if let Some(new) = inserts.remove(&i) {
                order.extend(new.into_iter().map(|n| (n, None)));
            }
            order.push((n.clone(), Some(i)));
        }
        let follow = |v: &mut ValueId| {
            if let Some(&to) = redirect.get(v) {
                *v = to;
            }
        };
        for (n, _) in &mut order {
            n.inputs.iter_mut().for_each(follow);
        }
        let mut outputs = g.outputs.clone();
        outputs.iter_mut().for_each(follow);
        let mut graph = Graph {
            values,
            nodes: Vec::new(),
            inputs: g.inputs.clone(),
            outputs,
            params: g.params.clone(),
        };
        let frozen_old = &self.frozen;
        let kept = rebuild(&mut graph, order, |origin| {
            origin
                .and_then(|i| frozen_old.get(i).copied())
                .unwrap_or(false)
        });
        Some(self.finish(graph, kept, fresh))
    }

    /// The state holding a rebuilt graph; `kept[i]` is the origin (old index) of new node
    /// `i`, `fresh` the counter after naming its new values.
    fn finish(&self, graph: Graph, kept: Vec<Option<usize>>, fresh: usize) -> State {
        let mut old_to_new = vec![None; self.graph.nodes.len()];
        let mut frozen = vec![false; graph.nodes.len()];
        for (new, origin) in kept.iter().enumerate() {
            if let Some(o) = origin {
                if let Some(slot) = old_to_new.get_mut(*o) {
                    *slot = Some(new);
                }
                if let (Some(f), Some(&was)) = (frozen.get_mut(new), self.frozen.get(*o)) {
                    *f = was;
                }
            }
        }
        let map = self
            .map
            .iter()
            .map(|m| m.and_then(|i| old_to_new.get(i).copied().flatten()))
            .collect();
        let created = kept
            .iter()
            .enumerate()
            .filter(|(_, o)| o.is_none())
            .map(|(i, _)| i)
            .collect();
        State {
            graph,
            frozen,
            map,
            fresh,
            created,
        }
    }
}

/// Fills `graph.nodes` from `order` (topological), dropping nodes nobody reads (unless
/// `keep` says so), and renumbers the values: inputs and parameters first, in their old
/// order, then node outputs in node order. Returns the origin of every kept node.
fn rebuild(
    graph: &mut Graph,
    order: Vec<(Node, Option<usize>)>,
    keep: impl Fn(Option<usize>) -> bool,
) -> Vec<Option<usize>> {
    let mut live = vec![false; graph.values.len()];
    for &o in &graph.outputs {
        if let Some(l) = live.get_mut(o) {
            *l = true;
        }
    }
    let mut keep_node = vec![false; order.len()];
    for (i, (n, origin)) in order.iter().enumerate().rev() {
        if live.get(n.output).copied().unwrap_or(false) || keep(*origin) {
            if let Some(k) = keep_node.get_mut(i) {
                *k = true;
            }
            for &v in &n.inputs {
                if let Some(l) = live.get_mut(v) {
                    *l = true;
                }
            }
        }
    }
    let old_values = std::mem::take(&mut graph.values);
    let mut remap: Vec<Option<ValueId>> = vec![None; old_values.len()];
    for (id, v) in old_values.iter().enumerate() {
        if !matches!(v.kind, ValueKind::Node(_)) {
            graph.values.push(v.clone());
            if let Some(slot) = remap.get_mut(id) {
                *slot = Some(graph.values.len() - 1);
            }
        }
    }
    let mut origins = Vec::new();
    let mut nodes = Vec::new();
    for ((n, origin), k) in order.into_iter().zip(keep_node) {
        if !k {
            continue;
        }
        let index = nodes.len();
        if let Some(v) = old_values.get(n.output) {
            let mut v = v.clone();
            v.kind = ValueKind::Node(index);
            graph.values.push(v);
            if let Some(slot) = remap.get_mut(n.output) {
                *slot = Some(graph.values.len() - 1);
            }
        }
        nodes.push(n);
        origins.push(origin);
    }
    let map = |v: ValueId| remap.get(v).copied().flatten().unwrap_or(usize::MAX);
    for n in &mut nodes {
        n.output = map(n.output);
        for v in &mut n.inputs {
            *v = map(*v);
        }
    }
    graph.nodes = nodes;
    for v in &mut graph.inputs {
        *v = map(*v);
    }
    for v in &mut graph.outputs {
        *v = map(*v);
    }
    for p in &mut graph.params {
        p.value = map(p.value);
    }
    origins
}

/// Partition of every node: nodes with an algebraic property joined through their edges;
/// every other node alone. Returned as a representative node per node.
fn partitions(graph: &Graph) -> Vec<usize> {
    let n = graph.nodes.len();
    work::add(Stage::Rewrite, n);
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(parent: &mut [usize], mut x: usize) -> usize {
        while let Some(&p) = parent.get(x) {
            if p == x {
                break;
            }
            let gp = parent.get(p).copied().unwrap_or(p);
            if let Some(slot) = parent.get_mut(x) {
                *slot = gp;
            }
            x = p;
        }
        x
    }
    for (i, node) in graph.nodes.iter().enumerate() {
        if !crate::tables::algebraic(&node.op) {
            continue;
        }
        for &v in &node.inputs {
            if let Some(p) = producer(graph, v) {
                if graph
                    .nodes
                    .get(p)
                    .is_some_and(|pn| crate::tables::algebraic(&pn.op))
                {
                    let (a, b) = (find(&mut parent, i), find(&mut parent, p));
                    if let Some(slot) = parent.get_mut(a.max(b)) {
                        *slot = a.min(b);
                    }
                }
            }
        }
    }
    (0..n).map(|i| find(&mut parent, i)).collect()
}

/// Every candidate of `rules` at `nodes` (all nodes when `None`), with its gain.
fn candidates(
    state: &State,
    rules: &[&'static Rule],
    blocked: &[(usize, &'static str)],
    nodes: Option<&[usize]>,
) -> Vec<Candidate> {
    let g = &state.graph;
    let all: Vec<usize> = (0..g.nodes.len()).collect();
    work::add(Stage::Rewrite, nodes.unwrap_or(&all).len() * rules.len());
    // the whole-graph facts pricing needs, computed when a rule first matches (trying the
    // few nodes near a move usually matches nothing)
    let mut facts: Option<(Vec<usize>, Vec<bool>)> = None;
    let mut out = Vec::new();
    for &node in nodes.unwrap_or(&all) {
        for &rule in rules {
            if blocked.contains(&(node, rule.name)) {
                continue;
            }
            let Some(patch) = (rule.apply)(g, node) else {
                continue;
            };
            let (readers, param_only) = facts.get_or_insert_with(|| {
                work::add(Stage::Rewrite, g.values.len());
                (readers(g), crate::prepare::parameter_only(g))
            });
            let Some((gain, footprint)) = state.price(node, &patch, readers, param_only) else {
                continue;
            };
            out.push(Candidate {
                rule,
                node,
                patch,
                gain,
                footprint,
            });
        }
    }
    out
}

/// One round of the paper's greedy scheme: the best candidate of every partition (the
/// largest gain; the earlier node, then the earlier rule, on ties), then every other
/// candidate by decreasing gain, keeping only candidates whose footprints do not overlap
/// (so applying them together is applying them one after the other), at most `room`.
fn round(
    state: &State,
    rules: &[&'static Rule],
    blocked: &[(usize, &'static str)],
    room: usize,
) -> Vec<Candidate> {
    let parts = partitions(&state.graph);
    let mut all: Vec<Candidate> = candidates(state, rules, blocked, None)
        .into_iter()
        .filter(|c| c.gain.positive())
        .collect();
    // stable: on equal gains the earlier node, then the earlier rule, comes first
    all.sort_by_key(|c| std::cmp::Reverse(c.gain));
    let mut first_of_part = std::collections::HashSet::new();
    let (mut heads, mut rest): (Vec<Candidate>, Vec<Candidate>) = (Vec::new(), Vec::new());
    for c in all {
        if first_of_part.insert(parts.get(c.node).copied().unwrap_or(c.node)) {
            heads.push(c);
        } else {
            rest.push(c);
        }
    }
    let mut taken: std::collections::HashSet<usize> = std::collections::HashSet::new();
    let mut batch = Vec::new();
    for c in heads.into_iter().chain(rest) {
        if batch.len() == room {
            break;
        }
        if c.footprint.iter().any(|n| taken.contains(n)) {
            continue;
        }
        taken.extend(c.footprint.iter().copied());
        batch.push(c);
    }
    batch.sort_by_key(|c| c.node);
    batch
}

/// A commutative move with no gain of its own, and the best rule it enables, when the
/// pair lowers the cost (tried only when no other rule applies).
fn best_enabling(
    state: &State,
    rules: &[&'static Rule],
    blocked: &[(usize, &'static str)],
) -> Option<(Candidate, Candidate)> {
    let movers: Vec<&'static Rule> = rules
        .iter()
        .copied()
        .filter(|r| r.family == Family::Commutative)
        .collect();
    if movers.is_empty() {
        return None;
    }
    let tries = candidates(state, &movers, blocked, None)
        .into_iter()
        .filter(|c| !c.gain.positive())
        .take(ENABLING_TRIALS);
    for first in tries {
        let Some(trial) = state.applied(std::slice::from_ref(&first)) else {
            continue;
        };
        // the nodes the move created, and their readers
        work::add(Stage::Rewrite, trial.graph.nodes.len());
        let mut near = trial.created.clone();
        for (i, n) in trial.graph.nodes.iter().enumerate() {
            let reads_new = n
                .inputs
                .iter()
                .any(|&v| producer(&trial.graph, v).is_some_and(|p| trial.created.contains(&p)));
            if reads_new && !near.contains(&i) {
                near.push(i);
            }
        }
        let follow = candidates(&trial, rules, &[], Some(&near))
            .into_iter()
            .filter(|c| first.gain.plus(c.gain).positive())
            .max_by(|a, b| a.gain.cmp(&b.gain).then(b.node.cmp(&a.node)));
        if let Some(follow) = follow {
            return Some((first, follow));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(body: &str) -> Graph {
        crate::lower_str(&format!("pub model M{body}"))
            .unwrap()
            .remove(0)
            .graph
    }

    fn ops(g: &Graph) -> Vec<&'static str> {
        g.nodes.iter().map(|n| n.op.name()).collect()
    }

    #[test]
    fn costs_compare_flops_then_loads_then_ops() {
        let div = op_cost(&Op::Unary(UnaryOp::DivScalar(3.0)), &[&[10]], &[10]);
        let mul = op_cost(&Op::Unary(UnaryOp::MulScalar(3.0)), &[&[10]], &[10]);
        assert_eq!((div.flops, div.loads, div.nodes), (40, 20, 1));
        assert!(mul < div);
        let reshape = op_cost(
            &Op::Reshape(crate::ir::ReshapeKind::Reshape),
            &[&[10]],
            &[2, 5],
        );
        assert_eq!((reshape.flops, reshape.loads), (0, 0));
        assert!(Gain::between(div, mul).positive());
        assert!(!Gain::between(mul, mul).positive());
    }

    #[test]
    fn a_chain_collapses_and_dead_nodes_go() {
        let g = graph("(x: [2, 3]) -> [2, 3] { let unused = exp(x); relu(relu(relu(-(-x)))) }");
        assert_eq!(g.nodes.len(), 6);
        let r = rewrite(&g, &RewriteOptions::default());
        assert_eq!(ops(&r.graph), vec!["relu"]);
        assert!(
            r.applied
                .iter()
                .all(|a| ["identity_relu_relu", "identity_neg_neg"].contains(a)),
            "{:?}",
            r.applied
        );
        assert!(crate::check::check(&r.graph).is_ok());
        // the relu kept is one of the original nodes
        assert_eq!(r.node_map.iter().flatten().count(), 1);
    }

    #[test]
    fn max_rewrites_bounds_the_patches() {
        let g = graph("(x: [2, 3]) -> [2, 3] { relu(relu(relu(relu(relu(x))))) * 1.0 }");
        let all = rewrite(&g, &RewriteOptions::default());
        assert!(all.applied.len() >= 2);
        let one = rewrite(
            &g,
            &RewriteOptions {
                max_rewrites: 1,
                ..RewriteOptions::default()
            },
        );
        assert_eq!(one.applied.len(), 1);
        let none = rewrite(
            &g,
            &RewriteOptions {
                max_rewrites: 0,
                ..RewriteOptions::default()
            },
        );
        assert!(none.applied.is_empty());
        assert_eq!(none.graph.nodes.len(), g.nodes.len());
    }

    #[test]
    fn frozen_nodes_survive() {
        let g = graph("(x: [2, 3]) -> [2, 3] { -(-x) }");
        let r = rewrite(
            &g,
            &RewriteOptions {
                frozen: vec![0],
                ..RewriteOptions::default()
            },
        );
        assert!(r.applied.is_empty(), "{:?}", r.applied);
        assert_eq!(r.node_map, vec![Some(0), Some(1)]);
        let r = rewrite(
            &g,
            &RewriteOptions {
                frozen: vec![1],
                ..RewriteOptions::default()
            },
        );
        assert!(
            r.applied.is_empty(),
            "the root of the pattern is frozen: {:?}",
            r.applied
        );
    }

    #[test]
    fn outputs_stay_outputs_with_their_shapes() {
        let g = graph("(x: [2, 3]) -> (a: [2, 3], b: [2, 3]) { (exp(x) * 1.0, exp(x)) }");
        let r = rewrite(&g, &RewriteOptions::default());
        assert_eq!(r.graph.outputs.len(), 2);
        assert_eq!(ops(&r.graph), vec!["exp"]);
        assert_eq!(r.graph.outputs[0], r.graph.outputs[1]);
        assert_eq!(r.graph.params.len(), g.params.len());
    }

    #[test]
    fn partitions_split_at_ops_without_properties() {
        let g = graph(
            "(x: [2, 3]) -> [2, 3] { let a = exp(x) * 2.0; let s = softmax(a); relu(s) + 1.0 }",
        );
        let parts = partitions(&g);
        let names = ops(&g);
        let softmax = names.iter().position(|&n| n == "softmax").unwrap();
        assert_eq!(parts[0], parts[1], "exp and mul share a partition");
        assert_ne!(parts[softmax], parts[0]);
        assert_ne!(parts[softmax + 1], parts[0], "the softmax cuts the graph");
        assert_eq!(parts[softmax + 1], parts[softmax + 2]);
    }

    #[test]
    fn a_commutative_move_needs_a_rule_to_enable() {
        // alone, the swap gains nothing and is not applied
        let g = graph("(x: [2, 3], y: [2, 3], z: [2, 3]) -> [2, 3] { abs(x) * y * abs(z) }");
        let only = |names: &[&str]| RewriteOptions {
            only: Some(names.iter().map(|s| s.to_string()).collect()),
            ..RewriteOptions::default()
        };
        assert!(rewrite(&g, &only(&["commutative_swap_product"]))
            .applied
            .is_empty());
        let r = rewrite(
            &g,
            &only(&["commutative_swap_product", "associative_abs_product"]),
        );
        assert_eq!(
            r.applied,
            vec!["commutative_swap_product", "associative_abs_product"]
        );
        assert!(graph_cost(&r.graph) < graph_cost(&g));
    }
}

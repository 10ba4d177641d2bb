//! Stage 6, `fuse`: a checked [`Graph`] -> a [`FusionPlan`] (paper §4.3, Listing 1).
//!
//! Seeds are One-to-One ops, smallest intermediate first. A block grows through its
//! sink's consumer (successors), then through the producers of its operands
//! (predecessors). Each edge asks the Table-3 lattice ([`crate::tables`]): red stops,
//! green proceeds, yellow asks the analytic cost model (`yellow_pays`). Constraints stop a
//! block that would be too big or that codegen cannot express as one loop nest.
//!
//! ```text
//!        x                      block 0: conv2d --> batch_norm --> relu   (anchor conv2d,
//!        |                               epilogue batch_norm, relu: one store)
//!     conv2d   <- anchor (M2M)
//!        |
//!    batch_norm                 block 1: max_pool2d (M2M -> M2M is red)
//!        |
//!      relu     <- seed (O2O, smallest intermediate)
//!        |
//!    max_pool2d
//! ```
//!
//! Every block has one materialized output, its *sink*; every other value of the block is
//! read only inside it and disappears (`IR_removable`). A block holds at most one
//! Many-to-Many op, its *anchor*, which comes first: the other ops are its epilogue (on
//! the anchor's values, at the same index) or side computations feeding the epilogue.
//! Reorganize, Shuffle, slice, concat, pad and broadcasting ops inside a block are index
//! translations, never copies (see [`crate::element`]).
//!
//! How a multi-node block runs is decided here too, as data ([`block_form`]): its element
//! program, the layout ops its kernel applies as a store map, and how the anchor reads its
//! operands ([`anchor_form`]: a pad folded into a conv's padding, or a prologue computing
//! operand 0). Codegen and the plan executor (`interp::run_plan`) both consume that one
//! description.

use std::collections::BTreeSet;

use crate::ir::{Graph, Op, ValueId, ValueKind};
use crate::ops;
use crate::tables::{classify, classify_op, fusion_cell, Colour, FusionCell, MappingType};
use crate::work::{self, Stage};

/// Largest number of ops in one block (keeps register pressure and code size bounded).
pub const MAX_BLOCK_OPS: usize = 24;

/// A group of nodes executed as one loop nest (or one anchor kernel with an epilogue).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// Node indices in execution order; the last one is the sink.
    pub nodes: Vec<usize>,
    /// The Many-to-Many node whose kernel the block runs, if any.
    pub anchor: Option<usize>,
    /// The mapping type of the fused block (the lattice's result).
    pub mapping: MappingType,
}

impl Block {
    /// The node whose output the block writes.
    pub fn sink(&self) -> usize {
        self.nodes.last().copied().unwrap_or(0)
    }
}

/// The fusion decision for a whole graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FusionPlan {
    /// Blocks in execution order.
    pub blocks: Vec<Block>,
}

impl FusionPlan {
    /// One block per node: the unfused plan (`#[fusion(off)]`).
    pub fn unfused(graph: &Graph) -> FusionPlan {
        FusionPlan {
            blocks: graph
                .nodes
                .iter()
                .enumerate()
                .map(|(i, node)| Block {
                    nodes: vec![i],
                    anchor: (classify(graph, node) == MappingType::ManyToMany).then_some(i),
                    mapping: classify(graph, node),
                })
                .collect(),
        }
    }
}

/// True when codegen can evaluate the op element by element through index translation:
/// the element builder's one list ([`crate::element::translates`]), less the
/// Many-to-Many ops (they run their kernel).
pub fn is_translatable(op: &Op) -> bool {
    classify_op(op, true) != MappingType::ManyToMany && crate::element::translates(op)
}

/// Facts about the graph the planner keeps asking (mapping types, consumers, outputs),
/// computed once per graph: build one and pass it to [`store_chain_in`] and
/// [`prologue_in`] when asking about many blocks of the same graph.
pub struct Facts<'g> {
    graph: &'g Graph,
    types: Vec<MappingType>,
    /// Nodes reading each value.
    consumers: Vec<Vec<usize>>,
    /// Values that are model outputs.
    is_output: Vec<bool>,
}

impl<'g> Facts<'g> {
    /// Computes the facts of `graph` (linear in its size).
    pub fn new(graph: &'g Graph) -> Self {
        work::add(Stage::Fuse, graph.nodes.len() + graph.values.len());
        let mut consumers = vec![Vec::new(); graph.values.len()];
        for (i, node) in graph.nodes.iter().enumerate() {
            for &v in &node.inputs {
                if let Some(c) = consumers.get_mut(v) {
                    if !c.contains(&i) {
                        c.push(i);
                    }
                }
            }
        }
        let mut is_output = vec![false; graph.values.len()];
        for &o in &graph.outputs {
            if let Some(slot) = is_output.get_mut(o) {
                *slot = true;
            }
        }
        Facts {
            graph,
            types: graph.nodes.iter().map(|n| classify(graph, n)).collect(),
            consumers,
            is_output,
        }
    }

    fn output_of(&self, node: usize) -> usize {
        self.graph.nodes.get(node).map_or(0, |n| n.output)
    }

    fn consumers_of_node(&self, node: usize) -> &[usize] {
        self.consumers
            .get(self.output_of(node))
            .map_or(&[], |c| c.as_slice())
    }

    /// Nodes producing the (non-parameter, non-input) operands of `node`.
    fn producers(&self, node: usize) -> Vec<usize> {
        let Some(n) = self.graph.nodes.get(node) else {
            return Vec::new();
        };
        n.inputs
            .iter()
            .filter_map(|&v| match self.graph.values.get(v).map(|v| &v.kind) {
                Some(ValueKind::Node(p)) => Some(*p),
                _ => None,
            })
            .collect()
    }

    fn len_of(&self, node: usize) -> usize {
        self.graph
            .values
            .get(self.output_of(node))
            .map_or(0, |v| v.len())
    }

    fn ty(&self, node: usize) -> MappingType {
        self.types
            .get(node)
            .copied()
            .unwrap_or(MappingType::ManyToMany)
    }

    fn op(&self, node: usize) -> Option<&Op> {
        self.graph.nodes.get(node).map(|n| &n.op)
    }
}

/// Generates the fusion plan of a graph.
pub fn fuse(graph: &Graph) -> FusionPlan {
    fuse_with_groups(graph, &[])
}

/// Why a `fuse { ... }` group cannot be one block: the node at fault and the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupError {
    /// The node the error points at.
    pub node: usize,
    /// Lowercase message naming the ops and their mapping types.
    pub message: String,
}

/// Checks that explicitly grouped nodes can fuse: connected, no red pair of Table 3
/// along the group's data paths, and expressible as one block.
pub fn check_group(graph: &Graph, nodes: &[usize]) -> Result<(), GroupError> {
    let facts = Facts::new(graph);
    let name = |n: usize| graph.nodes.get(n).map_or("?", |n| n.op.name());
    let describe = |n: usize| format!("`{}` ({})", name(n), facts.ty(n).name());
    let Some(&first) = nodes.first() else {
        return Ok(());
    };
    // reachability inside the group, in node order (nodes are topologically ordered)
    let mut sorted = nodes.to_vec();
    sorted.sort_unstable();
    let mut reaches: Vec<Vec<usize>> = Vec::new(); // reaches[k]: group nodes with a path to sorted[k]
    for (k, &n) in sorted.iter().enumerate() {
        let mut from = Vec::new();
        for p in facts.producers(n) {
            if let Some(pk) = sorted.iter().position(|&m| m == p) {
                from.push(p);
                if let Some(r) = reaches.get(pk) {
                    from.extend(r.iter().copied());
                }
            }
        }
        from.sort_unstable();
        from.dedup();
        let _ = k;
        reaches.push(from);
    }
    // a path from `a` to `b` inside the group whose lattice composition is red
    for (k, &b) in sorted.iter().enumerate() {
        for &a in reaches.get(k).map_or(&[][..], |r| r.as_slice()) {
            let (ta, tb) = (facts.ty(a), facts.ty(b));
            let pad_into_conv = matches!((facts.op(a), facts.op(b)), (Some(pa), Some(pb)) if is_conv_pad(graph, pa, pb));
            let red = !pad_into_conv
                && (fusion_cell(ta, tb).colour == Colour::Red
                    || (ta == MappingType::ManyToMany && tb == MappingType::ManyToMany));
            if red {
                return Err(GroupError {
                    node: b,
                    message: format!(
                        "cannot fuse {} with {}: the fusion table forbids {} then {}; split the `fuse` group between them",
                        describe(a),
                        describe(b),
                        ta.name(),
                        tb.name()
                    ),
                });
            }
        }
    }
    // two many-to-many ops on separate paths
    let m2m: Vec<usize> = sorted
        .iter()
        .copied()
        .filter(|&n| facts.ty(n) == MappingType::ManyToMany)
        .collect();
    if let [a, b, ..] = m2m.as_slice() {
        return Err(GroupError {
            node: *b,
            message: format!(
                "cannot fuse {} with {}: a block holds one many-to-many op; split the `fuse` group",
                describe(*a),
                describe(*b)
            ),
        });
    }
    // connected (undirected) through data edges inside the group
    let mut component = vec![first];
    let mut changed = true;
    while changed {
        changed = false;
        for &n in &sorted {
            if component.contains(&n) {
                continue;
            }
            let linked = facts.producers(n).iter().any(|p| component.contains(p))
                || component.iter().any(|&c| facts.producers(c).contains(&n));
            if linked {
                component.push(n);
                changed = true;
            }
        }
    }
    if let Some(&stray) = sorted.iter().find(|n| !component.contains(n)) {
        return Err(GroupError {
            node: stray,
            message: format!(
                "cannot fuse {} with {}: they are not connected by data inside the `fuse` group; fuse only ops that feed each other",
                describe(first),
                describe(stray)
            ),
        });
    }
    if !fits(&facts, &sorted) {
        let sink = sorted.iter().copied().max().unwrap_or(first);
        let reason = if sorted
            .iter()
            .any(|&n| facts.ty(n) == MappingType::ManyToMany)
        {
            "after a many-to-many op come only elementwise ops that keep its shape; before it only an elementwise prologue of softmax, log_softmax, layer_norm, reductions and global pools (or a zero pad of a conv2d); and every value but the last must be used only inside the group"
        } else {
            "every value but the last must be used only inside the group, and every op must be expressible by index translation"
        };
        return Err(GroupError {
            node: sink,
            message: format!("this `fuse` group cannot be generated as one block: {reason}"),
        });
    }
    Ok(())
}

/// Generates the fusion plan, starting from explicit groups (already checked with
/// [`check_group`]) that must each be one block.
pub fn fuse_with_groups(graph: &Graph, groups: &[Vec<usize>]) -> FusionPlan {
    let facts = Facts::new(graph);
    let n = graph.nodes.len();
    work::add(Stage::Fuse, n);
    let mut assigned = vec![false; n];
    let mut blocks: Vec<Block> = Vec::new();
    for group in groups {
        let mut members = group.clone();
        members.sort_unstable();
        let mapping = members
            .iter()
            .fold(None, |acc: Option<MappingType>, &m| match acc {
                None => Some(facts.ty(m)),
                Some(t) => Some(
                    fusion_cell(t, facts.ty(m))
                        .result
                        .unwrap_or(t.max(facts.ty(m))),
                ),
            });
        for &m in &members {
            if let Some(a) = assigned.get_mut(m) {
                *a = true;
            }
        }
        blocks.push(make_block(
            &facts,
            members,
            mapping.unwrap_or(MappingType::OneToOne),
        ));
    }

    let mut seeds: Vec<usize> = (0..n)
        .filter(|&i| facts.ty(i) == MappingType::OneToOne)
        .collect();
    seeds.sort_by_key(|&i| (facts.len_of(i), i));
    for seed in seeds {
        if assigned.get(seed).copied().unwrap_or(true) {
            continue;
        }
        let mut members = vec![seed];
        let mut mapping = facts.ty(seed);
        grow_successors(&facts, &assigned, &mut members, &mut mapping);
        grow_predecessors(&facts, &assigned, &mut members, &mut mapping);
        for &m in &members {
            if let Some(a) = assigned.get_mut(m) {
                *a = true;
            }
        }
        blocks.push(make_block(&facts, members, mapping));
    }
    for i in 0..n {
        if !assigned.get(i).copied().unwrap_or(true) {
            blocks.push(make_block(&facts, vec![i], facts.ty(i)));
        }
    }
    merge_blocks(&facts, &mut blocks);
    blocks.sort_by_key(|b| b.sink());
    FusionPlan { blocks }
}

/// A block whose whole output is read by one other block joins it when the lattice and
/// the constraints allow (this completes diamonds whose top was an earlier seed: the
/// seed could not grow through its several consumers one at a time).
///
/// Merges happen one at a time, always the pair `(consumer block, producer block)` that
/// comes first in block order (the consumer's position, then the producer's; a merged
/// block takes its consumer's position). Whether a pair may merge depends only on the two
/// blocks, so after a merge only the pairs touching the merged block are examined again:
/// the producers of its operands, and itself as a producer. Each merge costs work bounded
/// by the size of the blocks involved, not by the size of the graph.
fn merge_blocks(facts: &Facts<'_>, blocks: &mut Vec<Block>) {
    let mut slots: Vec<Option<Block>> = blocks.drain(..).map(Some).collect();
    // the live blocks holding each node (one, unless explicit groups overlap)
    let mut holders: Vec<Vec<usize>> = vec![Vec::new(); facts.graph.nodes.len()];
    for (id, block) in slots.iter().enumerate() {
        for &n in block.iter().flat_map(|b| &b.nodes) {
            if let Some(h) = holders.get_mut(n) {
                if !h.contains(&id) {
                    h.push(id);
                }
            }
        }
    }
    // every mergeable pair, as (consumer id, producer id); ids are block positions
    let mut ready: BTreeSet<(usize, usize)> = BTreeSet::new();
    // the pairs in `ready` with each block as producer
    let mut ready_as_producer: Vec<Vec<usize>> = vec![Vec::new(); slots.len()];
    let examine = |a: usize,
                   slots: &[Option<Block>],
                   holders: &[Vec<usize>],
                   ready: &mut BTreeSet<(usize, usize)>,
                   ready_as_producer: &mut [Vec<usize>]| {
        if let Some(old) = ready_as_producer.get_mut(a) {
            for b in old.drain(..) {
                ready.remove(&(b, a));
            }
        }
        let Some(Some(block)) = slots.get(a) else {
            return;
        };
        let targets = merge_targets(facts, holders, a, block);
        work::add(Stage::Fuse, 1 + targets.len());
        for b in targets {
            let Some(Some(target)) = slots.get(b) else {
                continue;
            };
            if merged(facts, block, target).is_some() {
                ready.insert((b, a));
                if let Some(list) = ready_as_producer.get_mut(a) {
                    list.push(b);
                }
            }
        }
    };
    for a in 0..slots.len() {
        examine(a, &slots, &holders, &mut ready, &mut ready_as_producer);
    }
    while let Some((bi, ai)) = ready.pop_first() {
        let (Some(Some(a)), Some(Some(b))) = (slots.get(ai), slots.get(bi)) else {
            continue;
        };
        let Some(block) = merged(facts, a, b) else {
            continue;
        };
        if let Some(slot) = slots.get_mut(ai) {
            if let Some(gone) = slot.take() {
                for n in gone.nodes {
                    if let Some(h) = holders.get_mut(n) {
                        h.retain(|&id| id != ai);
                        if !h.contains(&bi) {
                            h.push(bi);
                        }
                    }
                }
            }
        }
        examine(ai, &slots, &holders, &mut ready, &mut ready_as_producer);
        // blocks whose sink feeds the merged block may now merge into it (or no longer)
        work::add(Stage::Fuse, block.nodes.len());
        let mut producers: Vec<usize> = Vec::new();
        for &m in &block.nodes {
            for p in facts.producers(m) {
                for &x in holders.get(p).map_or(&[][..], |h| h.as_slice()) {
                    let is_sink = slots
                        .get(x)
                        .and_then(|s| s.as_ref())
                        .is_some_and(|s| s.sink() == p);
                    if x != bi && is_sink && !producers.contains(&x) {
                        producers.push(x);
                    }
                }
            }
        }
        if let Some(slot) = slots.get_mut(bi) {
            *slot = Some(block);
        }
        examine(bi, &slots, &holders, &mut ready, &mut ready_as_producer);
        for x in producers {
            examine(x, &slots, &holders, &mut ready, &mut ready_as_producer);
        }
    }
    blocks.extend(slots.into_iter().flatten());
}

/// The blocks `a` may merge into: those holding every consumer of its sink, when the sink
/// is not a model output.
fn merge_targets(facts: &Facts<'_>, holders: &[Vec<usize>], a: usize, block: &Block) -> Vec<usize> {
    let sink = block.sink();
    if facts
        .is_output
        .get(facts.output_of(sink))
        .copied()
        .unwrap_or(true)
    {
        return Vec::new();
    }
    let consumers = facts.consumers_of_node(sink);
    let Some(first) = consumers.first() else {
        return Vec::new();
    };
    let holds = |b: usize, c: &usize| holders.get(*c).is_some_and(|h| h.contains(&b));
    holders
        .get(*first)
        .map_or(&[][..], |h| h.as_slice())
        .iter()
        .copied()
        .filter(|&b| b != a && consumers.iter().all(|c| holds(b, c)))
        .collect()
}

/// Block `a` merged into block `b`, which reads all of `a`'s output, when the lattice and
/// the constraints allow.
fn merged(facts: &Facts<'_>, a: &Block, b: &Block) -> Option<Block> {
    let cell = fusion_cell(a.mapping, b.mapping);
    let result = cell.result?;
    if cell.colour == Colour::Yellow && !yellow_pays(facts, &b.nodes, a.sink()) {
        return None;
    }
    let mut union: Vec<usize> = a.nodes.iter().chain(&b.nodes).copied().collect();
    union.sort_unstable();
    if !fits(facts, &union) {
        return None;
    }
    Some(make_block(facts, union, result))
}

fn make_block(facts: &Facts<'_>, mut members: Vec<usize>, mapping: MappingType) -> Block {
    members.sort_unstable();
    let anchor = members
        .iter()
        .copied()
        .find(|&m| facts.ty(m) == MappingType::ManyToMany);
    Block {
        nodes: members,
        anchor,
        mapping,
    }
}

/// Step II: follow the sink's single consumer while the lattice and constraints allow.
fn grow_successors(
    facts: &Facts<'_>,
    assigned: &[bool],
    members: &mut Vec<usize>,
    mapping: &mut MappingType,
) {
    loop {
        work::add(Stage::Fuse, members.len());
        let Some(&sink) = members.iter().max() else {
            return;
        };
        if facts
            .is_output
            .get(facts.output_of(sink))
            .copied()
            .unwrap_or(true)
        {
            return;
        }
        let consumers = facts.consumers_of_node(sink);
        let [next] = consumers else { return };
        let next = *next;
        if assigned.get(next).copied().unwrap_or(true) || members.contains(&next) {
            return;
        }
        let cell = fusion_cell(*mapping, facts.ty(next));
        let Some(result) = cell.result else { return };
        if cell.colour == Colour::Yellow && !yellow_pays(facts, members, next) {
            return;
        }
        let mut candidate = members.clone();
        candidate.push(next);
        if !fits(facts, &candidate) {
            return;
        }
        *members = candidate;
        *mapping = result;
    }
}

/// Step III: pull in producers of the block's operands when all their consumers are in
/// the block (some predecessors may fuse and others not).
fn grow_predecessors(
    facts: &Facts<'_>,
    assigned: &[bool],
    members: &mut Vec<usize>,
    mapping: &mut MappingType,
) {
    let mut frontier: Vec<usize> = members.clone();
    while let Some(node) = frontier.pop() {
        work::add(Stage::Fuse, members.len());
        for p in facts.producers(node) {
            if members.contains(&p) || assigned.get(p).copied().unwrap_or(true) {
                continue;
            }
            if facts
                .is_output
                .get(facts.output_of(p))
                .copied()
                .unwrap_or(true)
            {
                continue;
            }
            if !facts
                .consumers_of_node(p)
                .iter()
                .all(|c| members.contains(c))
            {
                continue;
            }
            let cell = if absorbs_pad(facts, members, p) {
                FusionCell {
                    colour: Colour::Green,
                    result: Some(*mapping),
                }
            } else {
                fusion_cell(facts.ty(p), *mapping)
            };
            let Some(result) = cell.result else { continue };
            if cell.colour == Colour::Yellow && !yellow_pays(facts, members, p) {
                continue;
            }
            let mut candidate = members.clone();
            candidate.push(p);
            if !fits(facts, &candidate) {
                continue;
            }
            *members = candidate;
            *mapping = result;
            frontier.push(p);
        }
    }
}

/// True when `p` is a zero pad read only by a `conv2d` of the block: the conv absorbs it
/// into its own padding. Our choice beside Table 3, whose red One-to-Many -> Many-to-Many
/// cell is about the anchor losing contiguous reads, which does not happen here.
fn absorbs_pad(facts: &Facts<'_>, members: &[usize], p: usize) -> bool {
    let consumers = facts.consumers_of_node(p);
    let [conv] = consumers else { return false };
    members.contains(conv)
        && match (facts.op(p), facts.op(*conv)) {
            (Some(pad), Some(conv_op)) => is_conv_pad(facts.graph, pad, conv_op),
            _ => false,
        }
}

/// The analytic cost model for yellow cells: fuse when the bytes saved by not writing and
/// re-reading the intermediate outweigh the values recomputed (an op evaluated per output
/// element of the block instead of once per own element) and the loss of contiguous reads
/// (a shuffle read through a transposed index).
fn yellow_pays(facts: &Facts<'_>, members: &[usize], candidate: usize) -> bool {
    let Some(&sink) = members.iter().chain([&candidate]).max() else {
        return false;
    };
    let out_len = facts.len_of(sink) as f64;
    let cand_len = facts.len_of(candidate).max(1) as f64;
    // bytes of the intermediate between candidate and block, written once and read once
    let saved = 8.0 * cand_len;
    // ops upstream of the candidate that would be evaluated per block output element
    let upstream = if candidate < sink {
        1.0
    } else {
        members.len() as f64
    };
    let recompute = (out_len / cand_len - 1.0).max(0.0) * cand_len * upstream;
    let shuffle_penalty = if facts.ty(candidate) == MappingType::Shuffle {
        4.0 * cand_len
    } else {
        0.0
    };
    recompute + shuffle_penalty <= saved
}

/// Constraint check: can the block be generated as one loop nest (or one anchor kernel
/// with an epilogue)?
fn fits(facts: &Facts<'_>, members: &[usize]) -> bool {
    work::add(Stage::Fuse, members.len());
    if members.len() > MAX_BLOCK_OPS {
        return false;
    }
    let anchors: Vec<usize> = members
        .iter()
        .copied()
        .filter(|&m| facts.ty(m) == MappingType::ManyToMany)
        .collect();
    if anchors.len() > 1 {
        return false;
    }
    let Some(&sink) = members.iter().max() else {
        return false;
    };
    // single sink: every other member is read only inside the block
    for &m in members {
        if m == sink {
            continue;
        }
        if facts
            .is_output
            .get(facts.output_of(m))
            .copied()
            .unwrap_or(true)
        {
            return false;
        }
        if !facts
            .consumers_of_node(m)
            .iter()
            .all(|c| members.contains(c))
        {
            return false;
        }
    }
    if !is_convex(facts, members) {
        return false;
    }
    match anchors.first() {
        None => members
            .iter()
            .all(|&m| facts.op(m).is_some_and(is_translatable)),
        Some(&anchor) => {
            if !facts
                .op(anchor)
                .is_some_and(|op| ops::facts(op).role.epilogue)
            {
                return false;
            }
            let feeds = feeds_anchor(facts, members, anchor);
            if !feeds.is_empty() && !prologue_fits(facts, members, anchor, &feeds) {
                return false;
            }
            let depends = depends_on(facts, members, anchor);
            let Some(chain) = store_chain(facts, members, anchor, &depends) else {
                return false;
            };
            members.iter().all(|&m| {
                if m == anchor || chain.contains(&m) {
                    return true;
                }
                let Some(op) = facts.op(m) else { return false };
                if feeds.contains(&m) {
                    true
                } else if depends.contains(&m) {
                    keeps_flat_position(facts, m, &depends)
                } else {
                    is_translatable(op)
                }
            })
        }
    }
}

/// A zero `pad` of the two spatial axes feeding a `conv2d`: absorbed into the conv's own
/// padding (the pad's prologue form for convolutions).
pub fn is_conv_pad(graph: &Graph, pad: &Op, conv: &Op) -> bool {
    let _ = graph;
    matches!(
        (pad, conv),
        (Op::Pad { pads, mode: crate::ir::PadMode::Constant(c) }, Op::Conv2d(_))
            if *c == 0.0 && pads.len() == 4 && pads.iter().take(2).all(|p| *p == (0, 0))
    )
}

/// Members with a path to the anchor inside the block (its prologue).
fn feeds_anchor(facts: &Facts<'_>, members: &[usize], anchor: usize) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    let mut frontier = vec![anchor];
    while let Some(n) = frontier.pop() {
        for p in facts.producers(n) {
            if members.contains(&p) && !out.contains(&p) {
                out.push(p);
                frontier.push(p);
            }
        }
    }
    out
}

/// The prologue may only feed the anchor's main operand, be read nowhere else, and be
/// expressible for this anchor.
fn prologue_fits(facts: &Facts<'_>, members: &[usize], anchor: usize, feeds: &[usize]) -> bool {
    let Some(anchor_node) = facts.graph.nodes.get(anchor) else {
        return false;
    };
    // only operand 0 may come from the block
    for (k, &v) in anchor_node.inputs.iter().enumerate() {
        if let Some(ValueKind::Node(p)) = facts.graph.values.get(v).map(|v| &v.kind) {
            if k > 0 && members.contains(p) {
                return false;
            }
        }
    }
    // prologue values are read only by the prologue or the anchor
    for &f in feeds {
        if !facts
            .consumers_of_node(f)
            .iter()
            .all(|c| *c == anchor || feeds.contains(c))
        {
            return false;
        }
    }
    if ops::facts(&anchor_node.op).role.prologue {
        return feeds
            .iter()
            .all(|&f| facts.op(f).is_some_and(is_translatable));
    }
    match feeds {
        [pad] => {
            facts
                .op(*pad)
                .is_some_and(|op| is_conv_pad(facts.graph, op, &anchor_node.op))
                && {
                    // the pad's own operand is stored, not computed in the block
                    facts.producers(*pad).iter().all(|p| !members.contains(p))
                }
        }
        _ => false,
    }
}

/// The prologue of a block: its members computed before (and read only by) the anchor.
pub fn prologue_nodes(graph: &Graph, block: &Block) -> Vec<usize> {
    prologue_in(&Facts::new(graph), block)
}

/// [`prologue_nodes`] with the graph's facts already computed.
pub fn prologue_in(facts: &Facts<'_>, block: &Block) -> Vec<usize> {
    let Some(anchor) = block.anchor else {
        return Vec::new();
    };
    let mut feeds = feeds_anchor(facts, &block.nodes, anchor);
    feeds.sort_unstable();
    feeds
}

/// How an anchor's kernel reads its operands, decided once from its block's prologue
/// ([`anchor_form`]) and consumed by both codegen and the plan executor
/// (`interp::run_plan`), so the two cannot disagree about a fold.
#[derive(Clone, Debug, PartialEq)]
pub struct AnchorForm {
    /// The op the kernel runs: the anchor's own, or a `conv2d` whose padding includes the
    /// folded `pad` before it.
    pub op: Op,
    /// The value each operand of the kernel reads from memory; when `prologue` is not
    /// empty, operand 0 is computed by it instead (and names the prologue's result).
    pub operands: Vec<ValueId>,
    /// The members computed on the fly for operand 0 (one elementwise program), in order.
    pub prologue: Vec<usize>,
}

/// The [`AnchorForm`] of `anchor` with the block members `prologue` computed before it
/// ([`prologue_in`]): none, the operands as stored; a `pad` before a `conv2d`, folded into
/// the convolution's padding (the conv reads the pad's operand); otherwise an elementwise
/// prologue that computes operand 0. An error says which form the planner should not
/// have made (a kernel computes only its operand 0 on the fly, and a conv only folds a pad).
pub fn anchor_form(graph: &Graph, anchor: usize, prologue: &[usize]) -> Result<AnchorForm, String> {
    let node = graph
        .nodes
        .get(anchor)
        .ok_or_else(|| format!("anchor {anchor} does not exist"))?;
    let plain = AnchorForm {
        op: node.op.clone(),
        operands: node.inputs.clone(),
        prologue: Vec::new(),
    };
    match (prologue, &node.op) {
        ([], _) => Ok(plain),
        ([pad], Op::Conv2d(attrs)) => {
            let pad_node = graph
                .nodes
                .get(*pad)
                .ok_or_else(|| format!("node {pad} does not exist"))?;
            let Op::Pad { pads, .. } = &pad_node.op else {
                return Err(format!(
                    "the prologue of conv2d {anchor} is `{}`, and a conv folds only a `pad`",
                    pad_node.op.name()
                ));
            };
            let (Some(h), Some(w)) = (pads.get(2), pads.get(3)) else {
                return Err(format!("the pad {pad} before conv2d {anchor} is not 4-d"));
            };
            let source = pad_node
                .inputs
                .first()
                .ok_or_else(|| format!("the pad {pad} has no operand"))?;
            let mut attrs = *attrs;
            let [t, l, b, r] = attrs.padding;
            attrs.padding = [t + h.0, l + w.0, b + h.1, r + w.1];
            let mut operands = plain.operands;
            *operands
                .first_mut()
                .ok_or_else(|| format!("conv2d {anchor} has no operand"))? = *source;
            Ok(AnchorForm {
                op: Op::Conv2d(attrs),
                operands,
                prologue: Vec::new(),
            })
        }
        (_, Op::Conv2d(_)) => Err(format!(
            "the prologue {prologue:?} of conv2d {anchor} is not one pad (a conv folds only a pad)"
        )),
        (feeds, _) => {
            let sink = feeds
                .last()
                .and_then(|&f| graph.nodes.get(f))
                .map(|n| n.output);
            if sink.is_none() || sink != node.inputs.first().copied() {
                return Err(format!(
                    "the prologue {feeds:?} of anchor {anchor} does not end in the anchor's operand 0 (the only operand a kernel computes on the fly)"
                ));
            }
            Ok(AnchorForm {
                prologue: feeds.to_vec(),
                ..plain
            })
        }
    }
}

/// A multi-node block as data, everything decided: the one description codegen turns
/// into a function and the plan executor (`interp::run_plan`) runs, so the two cannot
/// lower a block differently.
#[derive(Clone, Debug)]
pub struct BlockForm {
    /// The members as one element program: the whole block (a loop nest), or for an
    /// anchor block its epilogue on the anchor's values. Without the store chain.
    pub program: crate::element::ElementProgram,
    /// The layout ops at the end of an anchor's epilogue that the kernel applies as a
    /// translation of its store index ([`store_chain_in`]); empty when none.
    pub store_chain: Vec<usize>,
    /// The store index of the program's element `o` (over `program.shape`) when there is
    /// a store chain.
    pub store_map: Option<crate::element::Ix>,
    /// How the anchor's kernel reads its operands, if the block has an anchor.
    pub anchor: Option<AnchorForm>,
}

/// The [`BlockForm`] of a multi-node `block`; an error names what the planner should not
/// have made (a block `element::build` cannot express, a store chain without a map, an
/// anchor form [`anchor_form`] refuses).
pub fn block_form(facts: &Facts<'_>, block: &Block) -> Result<BlockForm, String> {
    let graph = facts.graph;
    let store_chain = store_chain_in(facts, block);
    let program = if store_chain.is_empty() {
        crate::element::build(graph, block)
    } else {
        // the epilogue ends before the layout change; the change becomes the store map
        let nodes: Vec<usize> = block
            .nodes
            .iter()
            .copied()
            .filter(|n| !store_chain.contains(n))
            .collect();
        crate::element::build(
            graph,
            &Block {
                nodes,
                anchor: block.anchor,
                mapping: block.mapping,
            },
        )
    }
    .ok_or("element::build cannot express the block")?;
    let store_map = if store_chain.is_empty() {
        None
    } else {
        Some(
            crate::element::store_map(graph, &store_chain, &program.shape)
                .ok_or("the store chain has no store map")?,
        )
    };
    let anchor = match block.anchor {
        Some(anchor) => Some(anchor_form(graph, anchor, &prologue_in(facts, block))?),
        None => None,
    };
    Ok(BlockForm {
        program,
        store_chain,
        store_map,
        anchor,
    })
}

/// The *store chain* of an anchor block: the transposes (and the reshapes after them) at
/// the end of the epilogue, applied as a translation of the kernel's store index. `Some`
/// (possibly empty) when the block's epilogue is expressible, `None` otherwise: the chain
/// must be a path ending at the sink, come after every elementwise epilogue op, and the
/// anchor must take a store map.
fn store_chain(
    facts: &Facts<'_>,
    members: &[usize],
    anchor: usize,
    depends: &[usize],
) -> Option<Vec<usize>> {
    let mut sorted: Vec<usize> = depends.iter().copied().filter(|&d| d != anchor).collect();
    sorted.sort_unstable();
    let mut chain: Vec<usize> = Vec::new();
    for &d in &sorted {
        let op = facts.op(d)?;
        let after_transpose = facts.producers(d).iter().any(|p| chain.contains(p));
        if matches!(op, Op::Transpose { .. }) || (after_transpose && matches!(op, Op::Reshape(_))) {
            chain.push(d);
        } else if after_transpose {
            return None;
        }
    }
    if chain.is_empty() {
        return Some(chain);
    }
    if !facts
        .op(anchor)
        .is_some_and(|op| ops::facts(op).role.store_map)
    {
        return None;
    }
    let sink = *members.iter().max()?;
    // a path: each link has one block operand and one consumer, the last is the sink
    for (k, &c) in chain.iter().enumerate() {
        let consumers = facts.consumers_of_node(c);
        match chain.get(k + 1) {
            Some(next) => {
                if consumers != [*next] {
                    return None;
                }
            }
            None => {
                if c != sink {
                    return None;
                }
            }
        }
    }
    Some(chain)
}

/// The store chain of a planned block (see `store_chain`); empty for most blocks.
pub fn store_chain_nodes(graph: &Graph, block: &Block) -> Vec<usize> {
    store_chain_in(&Facts::new(graph), block)
}

/// [`store_chain_nodes`] with the graph's facts already computed.
pub fn store_chain_in(facts: &Facts<'_>, block: &Block) -> Vec<usize> {
    let Some(anchor) = block.anchor else {
        return Vec::new();
    };
    let depends = depends_on(facts, &block.nodes, anchor);
    store_chain(facts, &block.nodes, anchor, &depends).unwrap_or_default()
}

/// An epilogue op must leave every value of the anchor at its flat position, so the
/// kernel's store index is the block's output index: elementwise ops whose operands on the
/// anchor's path have the op's own shape (no broadcast), and reshapes.
fn keeps_flat_position(facts: &Facts<'_>, node: usize, depends: &[usize]) -> bool {
    let Some(n) = facts.graph.nodes.get(node) else {
        return false;
    };
    if matches!(n.op, Op::Reshape(_)) {
        return true;
    }
    if !ops::facts(&n.op).role.index_preserving {
        return false;
    }
    let out = facts.graph.shape(n.output);
    n.inputs
        .iter()
        .all(|&v| match facts.graph.values.get(v).map(|v| &v.kind) {
            Some(ValueKind::Node(p)) if depends.contains(p) => facts.graph.shape(v) == out,
            _ => true,
        })
}

/// Members that (transitively) read the anchor's output.
fn depends_on(facts: &Facts<'_>, members: &[usize], anchor: usize) -> Vec<usize> {
    let mut out = vec![anchor];
    let mut sorted = members.to_vec();
    sorted.sort_unstable();
    for &m in &sorted {
        if m != anchor && facts.producers(m).iter().any(|p| out.contains(p)) {
            out.push(m);
        }
    }
    out
}

/// No path leaves the block and comes back (else it could not run as one step).
fn is_convex(facts: &Facts<'_>, members: &[usize]) -> bool {
    let Some(&lo) = members.iter().min() else {
        return true;
    };
    let Some(&hi) = members.iter().max() else {
        return true;
    };
    // nodes outside the block, between lo and hi, reachable from the block (`reached[i -
    // lo]`: only that range can be, and scanning it keeps the test as small as the block)
    work::add(Stage::Fuse, hi - lo + 1);
    let mut reached = vec![false; hi - lo + 1];
    let was_reached = |reached: &[bool], p: usize| {
        p.checked_sub(lo)
            .and_then(|k| reached.get(k))
            .copied()
            .unwrap_or(false)
    };
    for i in lo..=hi {
        let producers = facts.producers(i);
        if members.contains(&i) {
            if producers
                .iter()
                .any(|&p| !members.contains(&p) && was_reached(&reached, p))
            {
                return false;
            }
        } else if producers
            .iter()
            .any(|&p| members.contains(&p) || was_reached(&reached, p))
        {
            if let Some(r) = reached.get_mut(i - lo) {
                *r = true;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(src: &str) -> (Graph, FusionPlan) {
        let models = crate::lower_str(src).unwrap();
        let g = models.into_iter().next().unwrap().graph;
        let p = fuse(&g);
        (g, p)
    }

    fn names(g: &Graph, p: &FusionPlan) -> Vec<Vec<&'static str>> {
        p.blocks
            .iter()
            .map(|b| b.nodes.iter().map(|&n| g.nodes[n].op.name()).collect())
            .collect()
    }

    #[test]
    fn conv_bn_relu_fuse_and_pool_stays_apart() {
        let (g, p) = plan_of(
            "model M(x: [1, 3, 8, 8]) -> [1, 4, 4, 4] {
                let c = conv2d(x, 4, kernel = 3, padding = 1, bias = false);
                let b = batch_norm(c);
                max_pool2d(relu(b), 2)
            }",
        );
        assert_eq!(
            names(&g, &p),
            vec![vec!["conv2d", "batch_norm", "relu"], vec!["max_pool2d"]]
        );
        assert_eq!(p.blocks[0].anchor, Some(0));
        assert_eq!(p.blocks[0].mapping, MappingType::ManyToMany);
    }

    #[test]
    fn a_value_read_outside_the_block_is_a_sink() {
        // r feeds both the add and the output: it must be materialized
        let (g, p) = plan_of(
            "model M(x: [4, 4]) -> (a: [4, 4], b: [4, 4]) {
                let r = relu(x);
                (r, sigmoid(r) + 1.0)
            }",
        );
        assert_eq!(names(&g, &p), vec![vec!["relu"], vec!["sigmoid", "add"]]);
    }

    #[test]
    fn two_many_to_many_ops_never_share_a_block() {
        let (g, p) = plan_of(
            "model M(x: [2, 8]) -> [2, 8] {
                let a = linear(x, 8);
                let b = linear(relu(a), 8);
                softmax(b)
            }",
        );
        assert_eq!(
            names(&g, &p),
            vec![vec!["linear", "relu"], vec!["linear"], vec!["softmax"]]
        );
    }

    #[test]
    fn diamonds_fuse_with_one_sink() {
        let (g, p) = plan_of(
            "model M(x: [4, 4]) -> [4, 4] {
                let e = exp(x);
                sigmoid(e) * tanh(e)
            }",
        );
        assert_eq!(names(&g, &p), vec![vec!["exp", "sigmoid", "tanh", "mul"]]);
    }

    #[test]
    fn transposes_and_concats_become_index_translation() {
        let (g, p) = plan_of(
            "model M(x: [2, 3], y: [3, 2]) -> [3, 4] {
                let t = transpose(x, 0, 1);
                concat([relu(t), y], axis = 1)
            }",
        );
        assert_eq!(p.blocks.len(), 1, "{:?}", names(&g, &p));
    }

    #[test]
    fn anchor_form_folds_a_pad_into_a_conv_and_refuses_other_prologues() {
        let (g, _) = plan_of(
            "model M(x: [1, 2, 4, 4]) -> [1, 1, 6, 6] {
                let c = conv2d(pad(x, [1, 2, 0, 1]), 1, kernel = 2, padding = [1, 0]);
                c
            }",
        );
        let (pad, conv) = (0, 1);
        assert_eq!(g.nodes[conv].op.name(), "conv2d");
        // none: the anchor's operands as stored
        let plain = anchor_form(&g, conv, &[]).unwrap();
        assert_eq!(
            (plain.op.clone(), plain.operands.clone()),
            (g.nodes[conv].op.clone(), g.nodes[conv].inputs.clone())
        );
        // the pad folded: the conv reads x with the pad's h and w added to its padding
        // (3 rows and 3 columns in all, as the 4 -> 6 output of a 2x2 kernel needs)
        let folded = anchor_form(&g, conv, &[pad]).unwrap();
        let (Op::Pad { pads, .. }, Op::Conv2d(before), Op::Conv2d(attrs)) =
            (&g.nodes[pad].op, &g.nodes[conv].op, &folded.op)
        else {
            panic!("{:?}", folded.op)
        };
        let [t, l, b, r] = before.padding;
        let want = [t + pads[2].0, l + pads[3].0, b + pads[2].1, r + pads[3].1];
        assert_eq!(attrs.padding, want);
        assert_eq!((want[0] + want[2], want[1] + want[3]), (3, 3));
        assert_eq!(folded.operands[0], g.nodes[pad].inputs[0]);
        assert!(folded.prologue.is_empty());
        // a conv computes no prologue; another anchor's prologue must end in operand 0
        let (g, _) = plan_of(
            "model M(x: [2, 3], y: [3, 4]) -> [2, 4] {
                matmul(x, relu(y))
            }",
        );
        let (relu, matmul) = (0, 1);
        assert!(anchor_form(&g, matmul, &[relu]).is_err());
        let (g, _) = plan_of(
            "model M(x: [2, 3], y: [3, 4]) -> [2, 4] {
                matmul(relu(x), y)
            }",
        );
        let form = anchor_form(&g, 1, &[0]).unwrap();
        assert_eq!(form.prologue, vec![0]);
        assert_eq!(form.operands, g.nodes[1].inputs);
        let (g, _) = plan_of(
            "model M(x: [1, 2, 4, 4]) -> [1, 1, 3, 3] {
                let c = conv2d(relu(x), 1, kernel = 2);
                c
            }",
        );
        let refused = anchor_form(&g, 1, &[0]).unwrap_err();
        assert!(refused.contains("folds only a `pad`"), "{refused}");
        assert!(anchor_form(&g, 1, &[0, 0])
            .unwrap_err()
            .contains("not one pad"));
    }
}

//! Stage 7, `plan`: where every tensor lives while `run` executes.
//!
//! Input: a checked [`Graph`]; output: a [`MemoryPlan`] giving each value a [`Slot`].
//! Model inputs and outputs live in the caller's buffers, parameters in the model's flat
//! parameter buffer (in declaration order), and every intermediate in one arena, at an
//! offset chosen from liveness: a value's space is reused once its last reader has run.
//!
//! ```text
//!   node:     0      1      2      3
//!   a = ...   [======]                  a: offset 0
//!   b = ...          [======]           b: offset 64
//!   c = ...                 [======]    c: offset 0 (a is dead by then)
//! ```

use crate::fuse::FusionPlan;
use crate::ir::{Graph, Op, ValueId, ValueKind};
use crate::work::{self, Stage};

/// Offsets are rounded up to this many floats (64 bytes, one cache line).
pub const ALIGN_FLOATS: usize = 16;

/// Where one value is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Slot {
    /// The caller's input with this position.
    Input(usize),
    /// A range of the flat parameter buffer.
    Param {
        /// first float
        offset: usize,
        /// number of floats
        len: usize,
    },
    /// A range of the arena.
    Arena {
        /// first float
        offset: usize,
        /// number of floats
        len: usize,
    },
    /// The caller's output buffer with this position.
    Output(usize),
    /// Never written: a value that lives only inside a fused block.
    Fused,
    /// The same memory as another value (a reshape of it); readers use that value's slot.
    Alias(ValueId),
}

/// The storage decision for every value of a graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    /// One slot per value of the graph.
    pub slots: Vec<Slot>,
    /// Floats of arena the plan needs.
    pub arena_len: usize,
    /// Floats of parameters.
    pub param_len: usize,
    /// Outputs that must be copied at the end: (output position, source value).
    pub output_copies: Vec<(usize, ValueId)>,
    /// Bytes of intermediates written to memory (arena values), for the fusion report.
    pub intermediate_bytes: usize,
    /// Poolings computed in place: (stored value, operand whose arena range it
    /// overwrites, starting at the same offset); see `pools_in_place`.
    pub in_place: Vec<(ValueId, ValueId)>,
    /// Concatenations whose operands were stored straight into their result's range
    /// (see `concats_in_place`): nothing runs for them.
    pub concats_in_place: Vec<ValueId>,
}

impl MemoryPlan {
    /// The slot that holds a value's data, following aliases.
    pub fn storage(&self, value: ValueId) -> Option<&Slot> {
        let mut v = value;
        for _ in 0..self.slots.len() + 1 {
            match self.slots.get(v) {
                Some(Slot::Alias(root)) => v = *root,
                other => return other,
            }
        }
        None
    }

    /// True when `value` is a concatenation whose operands were written into its range.
    pub fn concatenated_in_place(&self, value: ValueId) -> bool {
        self.concats_in_place.contains(&value)
    }

    /// The operand `value` is computed over, in place (its slot starts where the operand's
    /// did), if any.
    pub fn overwrites(&self, value: ValueId) -> Option<ValueId> {
        self.in_place
            .iter()
            .find(|&&(v, _)| v == value)
            .map(|&(_, operand)| operand)
    }
}

/// Assigns storage to every value, executing `fusion`'s blocks in order.
pub fn plan(graph: &Graph, fusion: &FusionPlan) -> MemoryPlan {
    let n = graph.values.len();
    work::add(Stage::Plan, n + graph.nodes.len());
    let mut slots: Vec<Option<Slot>> = vec![None; n];
    let mut param_len = 0;
    for param in &graph.params {
        let len: usize = param.shape.iter().product();
        if let Some(slot) = slots.get_mut(param.value) {
            *slot = Some(Slot::Param {
                offset: param_len,
                len,
            });
        }
        param_len += len;
    }
    for (position, &input) in graph.inputs.iter().enumerate() {
        if let Some(slot) = slots.get_mut(input) {
            *slot = Some(Slot::Input(position));
        }
    }
    let mut output_copies = Vec::new();
    for (position, &out) in graph.outputs.iter().enumerate() {
        let is_node = matches!(
            graph.values.get(out).map(|v| &v.kind),
            Some(ValueKind::Node(_))
        );
        match slots.get_mut(out) {
            Some(slot @ None) if is_node => *slot = Some(Slot::Output(position)),
            _ => output_copies.push((position, out)),
        }
    }
    // values computed inside a block and never stored
    let mut sinks = vec![false; n];
    for block in &fusion.blocks {
        for &m in &block.nodes {
            let Some(node) = graph.nodes.get(m) else {
                continue;
            };
            if m == block.sink() {
                if let Some(s) = sinks.get_mut(node.output) {
                    *s = true;
                }
            } else if let Some(slot) = slots.get_mut(node.output) {
                *slot = Some(Slot::Fused);
            }
        }
    }
    // a lone reshape of a stored value shares its memory
    let mut root: Vec<ValueId> = (0..n).collect();
    for block in &fusion.blocks {
        let [only] = block.nodes.as_slice() else {
            continue;
        };
        let Some(node) = graph.nodes.get(*only) else {
            continue;
        };
        let (Op::Reshape(_), [input]) = (&node.op, node.inputs.as_slice()) else {
            continue;
        };
        if matches!(slots.get(node.output), Some(None)) {
            let r = root.get(*input).copied().unwrap_or(*input);
            if let Some(slot) = slots.get_mut(node.output) {
                *slot = Some(Slot::Alias(*input));
            }
            if let Some(x) = root.get_mut(node.output) {
                *x = r;
            }
        }
    }
    // last block reading each stored value (aliases extend their root)
    let mut last_use = vec![0usize; n];
    for (b, block) in fusion.blocks.iter().enumerate() {
        for &m in &block.nodes {
            let Some(node) = graph.nodes.get(m) else {
                continue;
            };
            for &v in &node.inputs {
                let r = root.get(v).copied().unwrap_or(v);
                if let Some(l) = last_use.get_mut(r) {
                    *l = (*l).max(b);
                }
            }
        }
    }
    for &(_, v) in &output_copies {
        let r = root.get(v).copied().unwrap_or(v);
        if let Some(l) = last_use.get_mut(r) {
            *l = usize::MAX;
        }
    }
    let concats = concats_in_place(graph, fusion, &slots, &sinks, &root);
    // per value stored inside a concatenation's range: (the concatenation, offset in it)
    let mut part_of: Vec<Option<(ValueId, usize)>> = vec![None; n];
    for (c, parts) in &concats {
        for &(v, at) in parts {
            if let Some(p) = part_of.get_mut(v) {
                *p = Some((*c, at));
            }
        }
    }
    // (offset, len, last use) of live arena blocks
    let mut live: Vec<(usize, usize, usize)> = Vec::new();
    let mut arena_len = 0;
    let mut intermediate_bytes = 0;
    let mut in_place = Vec::new();
    for (b, block) in fusion.blocks.iter().enumerate() {
        let Some(node) = graph.nodes.get(block.sink()) else {
            continue;
        };
        let v = node.output;
        if !matches!(slots.get(v), Some(None)) || !sinks.get(v).copied().unwrap_or(false) {
            continue;
        }
        work::add(Stage::Plan, live.len());
        live.retain(|&(_, _, end)| end >= b);
        let len = graph.values.get(v).map_or(0, |v| v.len());
        if let Some(&Some((c, at))) = part_of.get(v) {
            // the first operand of an in-place concatenation reserves its whole result,
            // live until the last read of the result or of any operand
            let base = match slots.get(c) {
                Some(Some(Slot::Arena { offset, .. })) => *offset,
                _ => {
                    let c_len = graph.values.get(c).map_or(0, |v| v.len());
                    let parts = concats.iter().find(|(k, _)| *k == c).map(|(_, p)| p);
                    let end = parts
                        .into_iter()
                        .flatten()
                        .map(|&(p, _)| p)
                        .chain([c])
                        .filter_map(|p| last_use.get(p).copied())
                        .fold(b, usize::max);
                    let offset = first_fit(&mut live, c_len);
                    live.push((offset, c_len, end));
                    arena_len = arena_len.max(offset + c_len);
                    intermediate_bytes += c_len * 4;
                    if let Some(slot) = slots.get_mut(c) {
                        *slot = Some(Slot::Arena { offset, len: c_len });
                    }
                    offset
                }
            };
            if let Some(slot) = slots.get_mut(v) {
                *slot = Some(Slot::Arena {
                    offset: base + at,
                    len,
                });
            }
            continue;
        }
        let end = last_use.get(v).copied().unwrap_or(b).max(b);
        let overwritten = pools_in_place(graph, block, b, &slots, &root, &last_use);
        let offset = match overwritten {
            Some((operand, offset)) => {
                in_place.push((v, operand));
                offset
            }
            None => first_fit(&mut live, len),
        };
        live.push((offset, len, end));
        arena_len = arena_len.max(offset + len);
        intermediate_bytes += len * 4;
        if let Some(slot) = slots.get_mut(v) {
            *slot = Some(Slot::Arena { offset, len });
        }
    }
    let slots = slots
        .into_iter()
        .map(|s| s.unwrap_or(Slot::Fused))
        .collect();
    MemoryPlan {
        slots,
        arena_len,
        param_len,
        output_copies,
        intermediate_bytes,
        in_place,
        concats_in_place: concats.into_iter().map(|(c, _)| c).collect(),
    }
}

/// The concatenations whose operands can be stored straight into their result, each with
/// its operands and their offsets in it: a block of the `concat` alone, along an axis
/// with nothing but ones before it (each operand one contiguous run of the result: U-Net's
/// skip connections along the channels at batch 1), whose result and operands are
/// arena values each stored by a block of its own (not inputs, parameters, outputs or
/// aliases), distinct, not themselves such concatenations nor operands of another, each
/// a whole number of cache lines long (every operand then starts aligned). The copies
/// into the result disappear: unet_small copied 3 MB per inference (3.5% of its time).
///
/// ```text
///   up = conv_transpose2d(..)      [1, 32, 64, 64]  -> arena 0 + 131072 (was its own range)
///   skip = relu(..)                [1, 32, 64, 64]  -> arena 131072 + 131072
///   cat = concat(up, skip, axis=1) [1, 64, 64, 64]  -> arena 0 + 262144: nothing to run
/// ```
#[allow(clippy::type_complexity)]
fn concats_in_place(
    graph: &Graph,
    fusion: &FusionPlan,
    slots: &[Option<Slot>],
    sinks: &[bool],
    root: &[ValueId],
) -> Vec<(ValueId, Vec<(ValueId, usize)>)> {
    let stored = |v: ValueId| {
        matches!(slots.get(v), Some(None))
            && sinks.get(v).copied().unwrap_or(false)
            && root.get(v) == Some(&v)
            && matches!(
                graph.values.get(v).map(|value| &value.kind),
                Some(ValueKind::Node(_))
            )
    };
    let mut taken = vec![false; graph.values.len()];
    let mut found = Vec::new();
    for block in &fusion.blocks {
        let [only] = block.nodes.as_slice() else {
            continue;
        };
        let Some(node) = graph.nodes.get(*only) else {
            continue;
        };
        let Op::Concat { axis } = node.op else {
            continue;
        };
        let c = node.output;
        let leading: usize = graph.shape(c).iter().take(axis).product();
        let operand_is_concat = |v: ValueId| match graph.values.get(v).map(|value| &value.kind) {
            Some(ValueKind::Node(m)) => {
                matches!(graph.nodes.get(*m).map(|n| &n.op), Some(Op::Concat { .. }))
            }
            _ => false,
        };
        let fits = leading == 1
            && stored(c)
            && !taken.get(c).copied().unwrap_or(true)
            && node.inputs.iter().enumerate().all(|(i, &v)| {
                stored(v)
                    && !taken.get(v).copied().unwrap_or(true)
                    && !operand_is_concat(v)
                    && !node.inputs.iter().take(i).any(|&u| u == v)
                    && graph
                        .values
                        .get(v)
                        .is_some_and(|value| value.len() % ALIGN_FLOATS == 0)
            });
        if !fits {
            continue;
        }
        let mut parts = Vec::new();
        let mut at = 0;
        for &v in &node.inputs {
            parts.push((v, at));
            at += graph.values.get(v).map_or(0, |value| value.len());
            if let Some(t) = taken.get_mut(v) {
                *t = true;
            }
        }
        if let Some(t) = taken.get_mut(c) {
            *t = true;
        }
        found.push((c, parts));
    }
    found
}

/// Widest output row a pooling is planned in place for: the row the runtime's in-place
/// kernel keeps on the stack (`runtime::kernels::IN_PLACE_POOL_ROW`, equal by a test).
pub const IN_PLACE_POOL_ROW: usize = 256;

/// The operand block `b` may overwrite with its result, and that operand's offset: when
/// the block's anchor is a `max_pool2d` or `avg_pool2d` whose input is an arena value
/// read by nothing else (no later block, no other op of this block), whose epilogue keeps
/// every value at its flat position, and whose geometry lets the kernel work in place.
///
/// The kernel (`runtime::kernels::pool2d_in_place`) computes output row `oy` of each
/// plane into a stack row, after reading input rows from `first(oy) = min(h, max(0, oy *
/// stride - pad_top))` on, and only then stores it. A stored row must not reach input a
/// later row reads: for plane `p`, row `oy` ends at `(p * oh + oy + 1) * ow` and the next
/// row reads from `p * h * w + first(oy + 1) * w` (the next plane from `(p + 1) * h * w`).
/// Both sides grow with `p`, the right one faster when `oh * ow <= h * w`, so plane 0
/// is the one to check:
///
/// ```text
///   LeNet's 2x2 stride 2 on 24x24: output row oy ends at 12 (oy + 1),
///   the next reads from 24 * 2 (oy + 1): in place
///   3x3 stride 1 padding 1 on 8x8: output row 0 ends at 8, row 1 reads from 0: not
/// ```
fn pools_in_place(
    graph: &Graph,
    block: &crate::fuse::Block,
    b: usize,
    slots: &[Option<Slot>],
    root: &[ValueId],
    last_use: &[usize],
) -> Option<(ValueId, usize)> {
    let anchor = graph.nodes.get(block.anchor?)?;
    let (Op::MaxPool2d(attrs) | Op::AvgPool2d(attrs)) = &anchor.op else {
        return None;
    };
    let x = *anchor.inputs.first()?;
    let Some(Some(Slot::Arena { offset, .. })) = slots.get(x) else {
        return None;
    };
    let reads = block
        .nodes
        .iter()
        .filter_map(|&m| graph.nodes.get(m))
        .flat_map(|n| &n.inputs)
        .filter(|&&v| root.get(v).copied().unwrap_or(v) == x)
        .count();
    let sink = graph.nodes.get(block.sink())?;
    let stored_len = graph.values.get(sink.output)?.len();
    let out_len = graph.values.get(anchor.output)?.len();
    if last_use.get(x) != Some(&b)
        || reads != 1
        || stored_len != out_len
        || !crate::fuse::store_chain_nodes(graph, block).is_empty()
    {
        return None;
    }
    let (&[_, _, h, w], &[_, _, oh, ow]) = (graph.shape(x), graph.shape(anchor.output)) else {
        return None;
    };
    let (stride, pad_top) = (attrs.stride[0], attrs.padding[0]);
    let first = |oy: usize| (oy * stride).saturating_sub(pad_top).min(h);
    let fits = ow <= IN_PLACE_POOL_ROW
        && oh * ow <= h * w
        && (1..oh).all(|next| next * ow <= first(next) * w);
    fits.then_some((x, *offset))
}

/// Lowest aligned offset where `len` floats fit between live blocks.
fn first_fit(live: &mut [(usize, usize, usize)], len: usize) -> usize {
    live.sort_unstable();
    let mut candidate = 0;
    for &(offset, size, _) in live.iter() {
        if candidate + len <= offset {
            return candidate;
        }
        candidate = candidate.max((offset + size).next_multiple_of(ALIGN_FLOATS));
    }
    candidate
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Node, Op, UnaryOp};

    fn chain(len: usize, count: usize) -> Graph {
        let mut g = Graph::default();
        let mut prev = g.add_value("x".into(), vec![len], ValueKind::Input(0));
        g.inputs.push(prev);
        for i in 0..count {
            let out = g.add_value(format!("v{i}"), vec![len], ValueKind::Node(i));
            g.nodes.push(Node {
                op: Op::Unary(UnaryOp::Relu),
                inputs: vec![prev],
                output: out,
                span: proc_macro2::Span::call_site(),
            });
            prev = out;
        }
        g.outputs.push(prev);
        g
    }

    #[test]
    fn a_chain_ping_pongs_between_two_buffers() {
        let g = chain(100, 5);
        let plan = plan(&g, &FusionPlan::unfused(&g));
        // 4 intermediates, the 5th is the output; two live at a time
        assert_eq!(plan.arena_len, 112 + 100);
        let offsets: Vec<usize> = plan
            .slots
            .iter()
            .filter_map(|s| match s {
                Slot::Arena { offset, .. } => Some(*offset),
                _ => None,
            })
            .collect();
        assert_eq!(offsets, vec![0, 112, 0, 112]);
        assert_eq!(plan.slots.last(), Some(&Slot::Output(0)));
    }

    /// The memory plan `dnn!` makes of one model declaration.
    fn planned(src: &str) -> (Graph, MemoryPlan) {
        let mut models = crate::lower_str(src).unwrap();
        let compiled = crate::compile_model(models.remove(0));
        (compiled.model.graph, compiled.memory)
    }

    /// The arena slot of the value named `name`.
    fn arena_of(graph: &Graph, memory: &MemoryPlan, name: &str) -> Option<(usize, usize)> {
        let v = graph.values.iter().position(|v| v.name == name)?;
        match memory.slots.get(v)? {
            Slot::Arena { offset, len } => Some((*offset, *len)),
            _ => None,
        }
    }

    #[test]
    fn a_pooling_that_reads_ahead_of_its_writes_overwrites_its_input() {
        // LeNet's first layers: the pooled copy takes the convolution's place
        let (graph, memory) = planned(
            "model M(x: [1, 1, 28, 28]) -> [1, 16, 8, 8] {
                let c = conv2d(x, 6, kernel = 5);
                let p = max_pool2d(c, 2);
                let d = conv2d(p, 16, kernel = 5);
                d
            }",
        );
        assert_eq!(arena_of(&graph, &memory, "c"), Some((0, 3456)));
        assert_eq!(arena_of(&graph, &memory, "p"), Some((0, 864)));
        assert_eq!(memory.in_place.len(), 1);
        assert_eq!(memory.arena_len, 3456);
    }

    #[test]
    fn a_pooling_whose_rows_reach_back_gets_its_own_place() {
        // 3x3 stride 1 padding 1 on 6x6: output row 0 ends at 6, row 1 reads input from 0
        let (graph, memory) = planned(
            "model M(x: [1, 1, 8, 8]) -> [1, 2, 6, 6] {
                let c = conv2d(x, 2, kernel = 3);
                let p = max_pool2d(c, 3, stride = 1, padding = 1);
                let d = conv2d(p, 2, kernel = 1);
                d
            }",
        );
        assert!(memory.in_place.is_empty());
        let (c, p) = (
            arena_of(&graph, &memory, "c"),
            arena_of(&graph, &memory, "p"),
        );
        assert!(matches!((c, p), (Some((a, _)), Some((b, _))) if a != b));
    }

    #[test]
    fn a_pooling_whose_input_is_read_again_gets_its_own_place() {
        // `c` is still read after the pooling: overwriting it would change `d`
        let (_, memory) = planned(
            "model M(x: [1, 1, 12, 12]) -> [1, 2, 1, 1] {
                let c = conv2d(x, 2, kernel = 3);
                let p = avg_pool2d(c, 2);
                let d = global_avg_pool2d(c);
                global_avg_pool2d(p) + d
            }",
        );
        assert!(memory.in_place.is_empty());
    }

    #[test]
    fn a_concatenation_at_batch_one_is_written_in_place_by_its_operands() {
        let (graph, memory) = planned(
            "model M(x: [1, 2, 4, 8]) -> [1, 3, 4, 8] {
                let a = conv2d(x, 2, kernel = 1);
                let b = conv2d(x, 2, kernel = 3, padding = 1);
                let c = concat([a, b], axis = 1);
                let y = conv2d(c, 3, kernel = 1);
                y
            }",
        );
        let (base, len) = arena_of(&graph, &memory, "c").unwrap();
        assert_eq!(len, 128);
        assert_eq!(arena_of(&graph, &memory, "a"), Some((base, 64)));
        assert_eq!(arena_of(&graph, &memory, "b"), Some((base + 64, 64)));
        assert_eq!(memory.concats_in_place.len(), 1);
    }

    #[test]
    fn concatenations_that_cannot_be_written_in_place_are_copied() {
        for src in [
            // batch 2: each operand is two runs of the result
            "model M(x: [2, 2, 4, 8]) -> [2, 4, 4, 8] {
                let a = conv2d(x, 2, kernel = 1);
                let b = conv2d(x, 2, kernel = 3, padding = 1);
                concat([a, b], axis = 1)
            }",
            // a model input among the operands
            "model M(x: [1, 2, 4, 8]) -> [1, 4, 4, 8] {
                let b = conv2d(x, 2, kernel = 3, padding = 1);
                sigmoid(concat([x, b], axis = 1))
            }",
            // one operand twice
            "model M(x: [1, 2, 4, 8]) -> [1, 4, 4, 8] {
                let b = conv2d(x, 2, kernel = 3, padding = 1);
                sigmoid(concat([b, b], axis = 1))
            }",
            // operands of 15 floats: the second would start off a cache line
            "model M(x: [1, 1, 3, 5]) -> [1, 2, 3, 5] {
                let a = conv2d(x, 1, kernel = 1);
                let b = conv2d(x, 1, kernel = 3, padding = 1);
                sigmoid(concat([a, b], axis = 1))
            }",
        ] {
            let (_, memory) = planned(src);
            assert!(memory.concats_in_place.is_empty(), "{src}");
        }
    }

    #[test]
    fn derived_parameters_start_on_cache_lines() {
        // two packed weights (load-time panels) after the live biases (300 + 16 + 5
        // floats) and the last layer's 80-float weight: the derived block and each panel
        // start on a line
        let mut models = crate::lower_str(
            "model M(x: [8, 64]) -> [8, 5] {
                let a = linear(x, 300);
                let b = linear(relu(a), 16);
                let c = linear(b, 5);
                c
            }",
        )
        .unwrap();
        let compiled = crate::compile_model(models.remove(0));
        let layout = &compiled.load.as_ref().unwrap().layout;
        assert_eq!(layout.derived.len(), 2, "{layout:?}");
        assert!(!layout.live_len.is_multiple_of(ALIGN_FLOATS), "{layout:?}");
        assert_eq!(
            layout.derived_start,
            layout.live_len.next_multiple_of(ALIGN_FLOATS)
        );
        let mut end = layout.derived_start;
        for &(offset, len) in &layout.derived {
            assert!(
                offset.is_multiple_of(ALIGN_FLOATS) && offset >= end,
                "{layout:?}"
            );
            end = offset + len;
        }
        assert_eq!(layout.run_len(), end);
    }

    #[test]
    fn an_input_returned_as_output_is_copied() {
        let g = chain(4, 0);
        let plan = plan(&g, &FusionPlan::unfused(&g));
        assert_eq!(plan.output_copies, vec![(0, 0)]);
        assert_eq!(plan.arena_len, 0);
    }
}

/// How a model with load-time ops lays out its parameter buffer (see [`layout_params`]).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ParamLayout {
    /// Floats of all loaded parameters, at the start while loading (declaration order).
    pub loaded_len: usize,
    /// Floats of the derived parameters (`prepare`'s outputs).
    pub derived_len: usize,
    /// Floats of the loaded parameters `run` reads.
    pub live_len: usize,
    /// Where the derived parameters start for `run`: `live_len` rounded up to a cache
    /// line ([`ALIGN_FLOATS`]). Each derived parameter starts on a cache line too, so a
    /// kernel's 16-float loads of packed weights touch one line each, not two (mlp's
    /// packed layers, streamed from L3: 0.0287 ms off the lines, 0.0245 on them).
    pub derived_start: usize,
    /// Each derived parameter's `(offset for run, len)`, in `run.params` order.
    pub derived: Vec<(usize, usize)>,
    /// The loaded parameters `run` reads, as `(offset while loading, offset for run,
    /// len)`, in order: `prepare` moves each from the first place to the second.
    pub moves: Vec<(usize, usize, usize)>,
}

impl ParamLayout {
    /// Floats `run` reads, at the start of the buffer once prepared.
    pub fn run_len(&self) -> usize {
        self.derived_start + self.derived_len
    }
}

/// Lays out the parameter buffer of a model whose `prepare` computes derived parameters
/// (`run.params` = the loaded ones, then the derived ones). While loading, the loaded
/// parameters come first in declaration order (where a file's tensors are copied), then
/// the derived ones, then scratch. At its end `prepare` compacts the buffer to what `run`
/// reads, dropping the loaded parameters only `prepare` needed (a weight it packed or
/// folded), so the owner can free the tail:
///
/// ```text
///   loading:  | w1 (packed) | b1 | w2 (folded) | b2 | derived | scratch |
///   run:      | b1 | b2 | derived |             RUN_LEN floats; the rest is free
/// ```
///
/// The derived block and each derived parameter in it start on a cache line (up to 15
/// floats of padding before each; their values are never read).
///
/// Rewrites the `Param` slots of the run plan to the run layout; returns the moves.
pub fn layout_params(
    run: &Graph,
    loaded_params: usize,
    run_memory: &mut MemoryPlan,
) -> ParamLayout {
    let mut read_by_run = vec![false; run.values.len()];
    for &v in run.nodes.iter().flat_map(|n| &n.inputs).chain(&run.outputs) {
        if let Some(r) = read_by_run.get_mut(v) {
            *r = true;
        }
    }
    let len = |p: &crate::ir::Param| -> usize { p.shape.iter().product() };
    let mut layout = ParamLayout::default();
    let (mut load_offset, mut run_offset) = (0, 0);
    for param in run.params.get(..loaded_params).unwrap_or(&[]) {
        if read_by_run.get(param.value).copied().unwrap_or(false) {
            layout.moves.push((load_offset, run_offset, len(param)));
            set_param(run_memory, param.value, run_offset, len(param));
            run_offset += len(param);
        }
        load_offset += len(param);
    }
    layout.loaded_len = load_offset;
    layout.live_len = run_offset;
    layout.derived_start = run_offset.next_multiple_of(ALIGN_FLOATS);
    run_offset = layout.derived_start;
    for param in run.params.get(loaded_params..).unwrap_or(&[]) {
        run_offset = run_offset.next_multiple_of(ALIGN_FLOATS);
        set_param(run_memory, param.value, run_offset, len(param));
        layout.derived.push((run_offset, len(param)));
        run_offset += len(param);
    }
    layout.derived_len = run_offset - layout.derived_start;
    layout
}

/// Points a parameter's slot at `offset`.
fn set_param(memory: &mut MemoryPlan, value: ValueId, offset: usize, len: usize) {
    if let Some(slot) = memory.slots.get_mut(value) {
        *slot = Slot::Param { offset, len };
    }
}

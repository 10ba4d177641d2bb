//! The fusion report: what the compiler did to a model, as numbers (the paper's Table 5
//! metrics). Every model carries it as `FUSION_REPORT`; the `fusion_report` example of
//! `dnnfusion-models` prints it as a table or JSON lines.

use proc_macro2::TokenStream;
use quote::quote;

use crate::fuse::FusionPlan;
use crate::ir::Graph;
use crate::plan::MemoryPlan;

/// One block of the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockSummary {
    /// Op names joined by `+` (`conv2d+batch_norm+relu`).
    pub ops: String,
    /// The block's mapping type.
    pub mapping: &'static str,
    /// Indices (in the report) of the blocks whose outputs this block reads.
    pub inputs: Vec<usize>,
}

/// The numbers of one compiled model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FusionReport {
    /// Model name.
    pub model: String,
    /// Ops after lowering.
    pub ops: usize,
    /// Ops after rewriting (those run per inference plus those run at load time).
    pub ops_after_rewrite: usize,
    /// Ops that read only parameters, run once when the weights load (stage `prepare`).
    pub ops_at_load: usize,
    /// The rewrite rules applied, in order.
    pub rewrites: Vec<&'static str>,
    /// Weighted FLOPs of the graph as declared (`rewrite::graph_cost`).
    pub flops_before: u64,
    /// Weighted FLOPs after rewriting.
    pub flops_after: u64,
    /// Blocks the plan executes (fused kernels; lone reshapes that only alias memory are
    /// not counted).
    pub blocks: usize,
    /// Whether fusion was on.
    pub fusion: bool,
    /// Bytes of intermediate tensors written to memory without fusion.
    pub irs_bytes_before: usize,
    /// Bytes of intermediate tensors written to memory with this plan.
    pub irs_bytes_after: usize,
    /// Bytes of the arena.
    pub arena_bytes: usize,
    /// The blocks.
    pub block_list: Vec<BlockSummary>,
}

impl FusionReport {
    /// Builds the report of a plan; `unfused` is the memory plan of the same graph
    /// without fusion (for the "before" column).
    pub fn new(
        model: &str,
        graph: &Graph,
        fusion: &FusionPlan,
        memory: &MemoryPlan,
        unfused: &MemoryPlan,
        fusion_on: bool,
    ) -> Self {
        // a lone reshape that aliases its operand runs no code: it is not reported, and
        // readers of its output read its operand's block
        let is_alias = |b: &crate::fuse::Block| {
            matches!(
                (
                    b.nodes.as_slice(),
                    graph
                        .nodes
                        .get(b.sink())
                        .and_then(|n| memory.slots.get(n.output))
                ),
                ([_], Some(crate::plan::Slot::Alias(_)))
            )
        };
        let mut reported_block_of_node: Vec<Option<usize>> = vec![None; graph.nodes.len()];
        let mut block_list: Vec<BlockSummary> = Vec::new();
        for b in &fusion.blocks {
            let sink_input = |n: usize| -> Option<usize> {
                match graph
                    .nodes
                    .get(n)?
                    .inputs
                    .first()
                    .and_then(|&v| graph.values.get(v))
                    .map(|v| &v.kind)
                {
                    Some(crate::ir::ValueKind::Node(p)) => {
                        reported_block_of_node.get(*p).copied().flatten()
                    }
                    _ => None,
                }
            };
            if is_alias(b) {
                let via = sink_input(b.sink());
                if let Some(slot) = reported_block_of_node.get_mut(b.sink()) {
                    *slot = via;
                }
                continue;
            }
            let index = block_list.len();
            let mut inputs: Vec<usize> = Vec::new();
            for &n in &b.nodes {
                for &v in graph.nodes.get(n).map_or(&[][..], |n| n.inputs.as_slice()) {
                    if let Some(crate::ir::ValueKind::Node(p)) =
                        graph.values.get(v).map(|v| &v.kind)
                    {
                        if b.nodes.contains(p) {
                            continue;
                        }
                        if let Some(Some(from)) = reported_block_of_node.get(*p) {
                            if !inputs.contains(from) {
                                inputs.push(*from);
                            }
                        }
                    }
                }
            }
            for &n in &b.nodes {
                if let Some(slot) = reported_block_of_node.get_mut(n) {
                    *slot = Some(index);
                }
            }
            block_list.push(BlockSummary {
                ops: b
                    .nodes
                    .iter()
                    .filter_map(|&n| graph.nodes.get(n))
                    .map(|n| n.op.name())
                    .collect::<Vec<_>>()
                    .join("+"),
                mapping: b.mapping.name(),
                inputs,
            });
        }
        FusionReport {
            model: model.to_string(),
            ops: graph.nodes.len(),
            ops_after_rewrite: graph.nodes.len(),
            ops_at_load: 0,
            rewrites: Vec::new(),
            flops_before: 0,
            flops_after: 0,
            blocks: block_list.len(),
            fusion: fusion_on,
            irs_bytes_before: unfused.intermediate_bytes,
            irs_bytes_after: memory.intermediate_bytes,
            arena_bytes: memory.arena_len * 4,
            block_list,
        }
    }

    /// Records the rewrite stage: `ops` becomes the op count after lowering (`graph` was the
    /// rewritten graph) and `rewrites` the applied rules.
    pub fn with_rewrites(mut self, ops_lowered: usize, rewrites: Vec<&'static str>) -> Self {
        self.ops = ops_lowered;
        self.rewrites = rewrites;
        self
    }

    /// Records the weighted FLOPs of the graph before and after rewriting.
    pub fn with_flops(mut self, before: u64, after: u64) -> Self {
        self.flops_before = before;
        self.flops_after = after;
        self
    }

    /// Records the ops moved to load time (`graph` was the per-inference graph).
    pub fn with_load_ops(mut self, ops_at_load: usize) -> Self {
        self.ops_at_load = ops_at_load;
        self.ops_after_rewrite += ops_at_load;
        self
    }

    /// The report as a `::dnnfusion::runtime::FusionReport` constant expression.
    pub fn tokens(&self) -> TokenStream {
        let FusionReport {
            model,
            ops,
            ops_after_rewrite,
            ops_at_load,
            rewrites,
            flops_before,
            flops_after,
            blocks,
            fusion,
            irs_bytes_before,
            irs_bytes_after,
            arena_bytes,
            block_list,
        } = self;
        let block_items = block_list.iter().map(|b| {
            let (ops, mapping, inputs) = (&b.ops, b.mapping, &b.inputs);
            quote! { ::dnnfusion::runtime::BlockReport { ops: #ops, mapping: #mapping, inputs: &[#(#inputs),*] } }
        });
        quote! {
            ::dnnfusion::runtime::FusionReport {
                model: #model,
                ops: #ops,
                ops_after_rewrite: #ops_after_rewrite,
                ops_at_load: #ops_at_load,
                rewrites: &[#(#rewrites),*],
                flops_before: #flops_before,
                flops_after: #flops_after,
                blocks: #blocks,
                fusion: #fusion,
                irs_bytes_before: #irs_bytes_before,
                irs_bytes_after: #irs_bytes_after,
                arena_bytes: #arena_bytes,
                block_list: &[#(#block_items),*],
            }
        }
    }
}

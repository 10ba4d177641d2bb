//! Stage 5, `prepare`: the ops that read only parameters run once, when the weights load.
//!
//! Input: the rewritten [`Graph`]; output: a [`LoadSplit`], the graph `run` executes and
//! the graph the generated `prepare` executes over the loaded parameters. A value
//! computed from parameters alone is the same on every inference (a `batch_norm` folded
//! into a conv's weights, `w * gamma / sqrt(var + eps)`; a transposed weight; a sum of
//! biases), so it is computed once and stored after the loaded parameters, where `run`
//! reads it as one more parameter.
//!
//! ```text
//!   parameter buffer:  | loaded (PARAMS) | derived: prepare's outputs | prepare's scratch |
//!                        read by run       read by run                  used while loading
//! ```
//!
//! Two kinds of parameter-only op stay in `run`, where they cost less: a reshape (there it
//! aliases its operand; at load time it would copy the weight), and an op whose result
//! is larger than its largest operand (an `expand` of a bias: fused into its consumer it
//! is index arithmetic; stored, it would be a tensor of broadcast copies), unless it is a
//! weight layout made for the kernels (Winograd's transform is 16/9 of the taps).

use crate::check;
use crate::ir::{
    BinaryOp, ConvWeights, Graph, Node, Op, Param, ValueId, ValueKind, WEIGHT_TILE_ROWS,
};
use crate::work::{self, Stage};

/// Fewest rows of a `linear` whose weight is packed (see [`pack_weights`]).
const PACK_MIN_ROWS: usize = 4;
/// Fewest outputs of a `linear` whose weight is packed.
const PACK_MIN_OUTPUTS: usize = 16;
/// Fewest weights of a one-row `linear` (a matrix-vector product) whose weight is packed
/// (256 KiB): the product then streams its panels front to back, where row-major
/// weights are read eight rows at once (mlp's 784x512 and 512x256 at batch 1, 2.1 MB read
/// from L3: median 0.0248 -> 0.0235 ms, 2026-12-06). Smaller ones, in cache either way
/// (LeNet's classifier, microcontroller models), keep their weights as they are.
const MATVEC_PACK_MIN_WEIGHTS: usize = 1 << 16;
/// Fewest output channels per group of a `conv2d` whose weight is tiled: one tile.
const TILE_MIN_CHANNELS: usize = WEIGHT_TILE_ROWS;
/// Fewest weight floats of a `conv2d` whose weight is tiled (16 KiB): smaller ones, the
/// convolutions of microcontroller models, keep the register-blocked direct kernels that
/// read row-major weights.
const TILE_MIN_WEIGHTS: usize = 4096;
/// Fewest input and output channels of a 3x3 stride-1 `conv2d` whose weight is
/// transformed for Winograd's F(2x2, 3x3) instead of tiled. At 16 the transforms still
/// cost less than the products save: `conv_classes` puts 16 channels on 128x128 at
/// 1.07-1.14x the tiled GEMM (32 on 64x64 1.6x, 64 on 32x32 1.8x), and unet_small, whose
/// 16->32 and 32->16 convolutions then take it, runs 6-12% faster (2026-12-05, five
/// alternating pairs). With fewer channels on either side the weight is tiled (or kept as
/// it is, when small: [`TILE_MIN_WEIGHTS`] holds for Winograd too, but on maps of
/// [`WINOGRAD_SMALL_WEIGHTS_MIN_PIXELS`]).
const WINOGRAD_MIN_CHANNELS: usize = 16;
/// Fewest output pixels of a 3x3 stride-1 `conv2d` run by Winograd's F(2x2, 3x3): a
/// smaller map's weight is tiled. 7x7 maps (sixteen tiles: one panel) take it since
/// Winograd asks for each block of weights two products ahead (thirty-fifth session):
/// resnet18's 512@7 layers read their transformed weights (16 points per 9 taps: 16.8 MB
/// a layer) from memory at 196 GFLOP/s (direct count, `conv_classes` "cold"), where the
/// tiled direct sum reads its 9.4 MB at 146, and the model runs 11% faster on a Zen 5
/// core (three alternated rounds: 16.0-16.5 -> 14.2-14.8 ms). Before the prefetch the
/// direct sum was 10% faster inside the model (2026-12-06, Zen 4).
const WINOGRAD_MIN_PIXELS: usize = 49;
/// Fewest tiles of 4 x 4 output pixels on a Winograd convolution's map for F(4x4, 3x3)
/// (36 products per 16 pixels, 4x fewer than the direct sum) rather than F(2x2, 3x3) (16
/// per 4, 2.25x): maps of 32 x 32 and up. `conv_classes` (2026-12-05) puts F(4x4) at
/// 1.2-1.3x F(2x2) on unet_small's 32@64 and 64@32 and resnet18's 64@56, 1.1x on 16@128;
/// on 28x28 and 14x14 maps at 1.0-1.2x alone but not measurably faster in resnet18 (three
/// alternating rounds), for 36 / 16 the transformed weights (16 MB more there); on 7x7
/// maps (four tiles in a panel of sixteen) at 0.2x.
const WINOGRAD4_MIN_TILES: usize = 64;
/// Fewest output pixels of a convolution that takes Winograd's transform although its
/// weight is smaller than [`TILE_MIN_WEIGHTS`] (64x64 maps and up): beside such a map's
/// activations the transformed weight (4x the floats for F(4x4)) is small. unet_small's
/// two 16 -> 16 on 128x128 maps (2304 weights, 9216 transformed) 0.391-0.393 -> 0.338-0.344
/// ms each by F(4x4), the model 3.15-3.45 -> 3.06-3.13 ms (two rounds alternated,
/// 2026-12-07, Zen 5); microcontroller models' maps are smaller.
const WINOGRAD_SMALL_WEIGHTS_MIN_PIXELS: usize = 4096;

/// How [`pack_weights`] rewrites one product: its packed op, the shapes of the panels and
/// of the product, and for a `matmul` the shape of its weight transposed to `[n, k]`.
struct Packing {
    product: Op,
    panels: Vec<usize>,
    y: Vec<usize>,
    transposed: Option<Vec<usize>>,
}

/// Stores the weights of large `linear`s packed, in the layout the matrix-product
/// kernel's register tiles read (BLIS's packed panels): `linear(x, W, b)` becomes
/// `matmul_panels(x, pack_panels(W)) + b`, and since `pack_panels(W)` reads only a
/// parameter, [`split`] computes it once at load time; the product then packs nothing per
/// call (it used to repack `Wᵀ`'s panels on every call: a fifth of a 6-layer BERT's time).
/// A `matmul(x, W)` by a 2-d parameter `W [k, n]` (how ONNX exports a linear layer:
/// `MatMul` then `Add`) becomes `matmul_panels(x, pack_panels(transpose(W)))`, both
/// computed at load time: the same product as a `linear`'s (an imported bert_tiny ran
/// 1.4x slower than the DSL's before). A product with two or three rows, or one row and
/// fewer than `MATVEC_PACK_MIN_WEIGHTS` (65,536) weights, or fewer than sixteen outputs
/// keeps its weight as it is; so do nodes listed in `keep`. Likewise a `conv2d` (not depthwise) with
/// at least 16 output channels per group and 4096 weights (`TILE_MIN_CHANNELS`,
/// `TILE_MIN_WEIGHTS`) reads its weight as `tile_conv_weights(W)` (`Op::TileConvWeights`:
/// blocks of 16 output channels interleaved, so the AVX-512 register tile's sixteen
/// broadcasts per step read one cache line; 1.3-1.6x on resnet18's convolutions). Returns
/// the new graph and, per node of `graph`, its index there (the product).
pub fn pack_weights(graph: &Graph, keep: &[usize]) -> (Graph, Vec<Option<usize>>) {
    let param_only = parameter_only(graph);
    work::add(Stage::Prepare, graph.nodes.len() + graph.values.len());
    let mut kept = vec![false; graph.nodes.len()];
    for &k in keep {
        if let Some(x) = kept.get_mut(k) {
            *x = true;
        }
    }
    // a product whose weight packs into panels: a linear (weight `[n, k]`), or a matmul
    // by a 2-d parameter (`[k, n]`, an imported ONNX `MatMul`: transposed first, also at
    // load time); the product op, the shapes `check::infer` gives the panels and the
    // product, and the transposed weight's shape for a matmul
    let packs = |n: usize, node: &Node| -> Option<Packing> {
        let (x, w) = match (&node.op, node.inputs.as_slice()) {
            (Op::Linear, [x, w, ..]) | (Op::MatMul, [x, w]) => (*x, *w),
            _ => return None,
        };
        let (xs, ws) = (graph.shape(x), graph.shape(w));
        let transposed = match (&node.op, ws) {
            (Op::MatMul, &[k, n]) => Some(vec![n, k]),
            (Op::MatMul, _) => return None,
            _ => None,
        };
        let layout = transposed.as_deref().unwrap_or(ws);
        let rows: usize = xs.iter().take(xs.len().saturating_sub(1)).product();
        let outs = layout.first().copied().unwrap_or(0);
        let weights: usize = ws.iter().product();
        let wanted = !kept.get(n).copied().unwrap_or(false)
            && xs.len() >= 2
            && (rows >= PACK_MIN_ROWS || (rows == 1 && weights >= MATVEC_PACK_MIN_WEIGHTS))
            && outs >= PACK_MIN_OUTPUTS
            && param_only.get(w).copied().unwrap_or(false);
        if !wanted {
            return None;
        }
        let panels = check::infer(&Op::PackPanels, &[layout], &[]).ok()?;
        let product = Op::MatMulPanels { n: outs };
        let y = check::infer(&product, &[xs, &panels], &[]).ok()?;
        Some(Packing {
            product,
            panels,
            y,
            transposed,
        })
    };
    // a conv's weight layout: Winograd's transform, tiles, or none (as it is); with the
    // shape `check::infer` gives the transformed weight
    let tiles = |n: usize, node: &Node| -> Option<(Op, Vec<usize>, ConvWeights)> {
        let (Op::Conv2d(attrs), [x, w, ..]) = (&node.op, node.inputs.as_slice()) else {
            return None;
        };
        let (xs, ws) = (graph.shape(*x), graph.shape(*w));
        let (c_in, c_out) = (xs.get(1).copied()?, ws.first().copied()?);
        let groups = attrs.groups.max(1);
        let depthwise = groups == c_in && groups == c_out;
        let pixels = graph.shape(node.output).iter().skip(2).product::<usize>();
        let winograd = attrs.kernel == [3, 3]
            && pixels >= WINOGRAD_MIN_PIXELS
            && attrs.stride == [1, 1]
            && attrs.dilation == [1, 1]
            && groups == 1
            && c_in >= WINOGRAD_MIN_CHANNELS
            && c_out >= WINOGRAD_MIN_CHANNELS;
        let large = ws.iter().product::<usize>() >= TILE_MIN_WEIGHTS
            || (winograd && pixels >= WINOGRAD_SMALL_WEIGHTS_MIN_PIXELS);
        let wanted = !kept.get(n).copied().unwrap_or(false)
            && !depthwise
            && attrs.weights == ConvWeights::RowMajor
            && c_out % groups == 0
            && c_out / groups >= TILE_MIN_CHANNELS
            && large
            && param_only.get(*w).copied().unwrap_or(false);
        let (op, weights) = match (wanted, winograd) {
            (false, _) => return None,
            (true, true) => {
                // the larger tile where the map fills a panel of 16 of them
                let ys = graph.shape(node.output);
                let (oh, ow) = (ys.get(2).copied()?, ys.get(3).copied()?);
                let tile = if oh.div_ceil(4) * ow.div_ceil(4) >= WINOGRAD4_MIN_TILES {
                    4
                } else {
                    2
                };
                (Op::WinogradWeights { tile }, ConvWeights::Winograd { tile })
            }
            (true, false) => (Op::TileConvWeights { groups }, ConvWeights::Tiled),
        };
        let shape = check::infer(&op, &[ws], &[]).ok()?;
        Some((op, shape, weights))
    };
    let mut out = Graph {
        values: graph.values.clone(),
        nodes: Vec::new(),
        inputs: graph.inputs.clone(),
        outputs: graph.outputs.clone(),
        params: graph.params.clone(),
    };
    let mut node_map = vec![None; graph.nodes.len()];
    for (n, node) in graph.nodes.iter().enumerate() {
        // the last node a linear becomes writes the linear's own value: operands keep
        // their ids
        let mut inputs = node.inputs.clone();
        if let (Some((tile_op, shape, weights)), Op::Conv2d(attrs), Some(&w)) =
            (tiles(n, node), &node.op, inputs.get(1))
        {
            let suffix = match weights {
                ConvWeights::Winograd { .. } => "weight_winograd",
                _ => "weight_tiles",
            };
            let name = graph
                .values
                .get(node.output)
                .map_or(String::new(), |v| format!("{}_{suffix}", v.name));
            let id = out.add_value(name, shape, ValueKind::Node(out.nodes.len()));
            out.nodes.push(Node {
                op: tile_op,
                inputs: vec![w],
                output: id,
                span: node.span,
            });
            if let Some(slot) = inputs.get_mut(1) {
                *slot = id;
            }
            let index = out.nodes.len();
            if let Some(v) = out.values.get_mut(node.output) {
                v.kind = ValueKind::Node(index);
            }
            out.nodes.push(Node {
                op: Op::Conv2d(crate::ir::Conv2d { weights, ..*attrs }),
                inputs,
                output: node.output,
                span: node.span,
            });
            if let Some(slot) = node_map.get_mut(n) {
                *slot = Some(index);
            }
            continue;
        }
        let packing = packs(n, node);
        let (Some(packing), Some(&x), Some(&w)) = (packing, inputs.first(), inputs.get(1)) else {
            if let Some(slot) = node_map.get_mut(n) {
                *slot = Some(out.nodes.len());
            }
            let index = out.nodes.len();
            if let Some(v) = out.values.get_mut(node.output) {
                v.kind = ValueKind::Node(index);
            }
            out.nodes.push(Node {
                op: node.op.clone(),
                inputs,
                output: node.output,
                span: node.span,
            });
            continue;
        };
        let name = graph
            .values
            .get(node.output)
            .map_or(String::new(), |v| v.name.clone());
        let push =
            |out: &mut Graph, op: Op, inputs: Vec<ValueId>, name: String, shape: Vec<usize>| {
                let id = out.add_value(name, shape, ValueKind::Node(out.nodes.len()));
                out.nodes.push(Node {
                    op,
                    inputs,
                    output: id,
                    span: node.span,
                });
                id
            };
        let Packing {
            product: product_op,
            panels: packed_shape,
            y: y_shape,
            transposed,
        } = packing;
        let w = match transposed {
            Some(shape) => push(
                &mut out,
                Op::Transpose { perm: vec![1, 0] },
                vec![w],
                format!("{name}_weight_t"),
                shape,
            ),
            None => w,
        };
        let packed = push(
            &mut out,
            Op::PackPanels,
            vec![w],
            format!("{name}_weight_panels"),
            packed_shape,
        );
        let (op, inputs) = match inputs.get(2) {
            None => (product_op, vec![x, packed]),
            Some(&b) => {
                let product = push(
                    &mut out,
                    product_op,
                    vec![x, packed],
                    format!("{name}_product"),
                    y_shape,
                );
                (Op::Binary(BinaryOp::Add), vec![product, b])
            }
        };
        let index = out.nodes.len();
        if let Some(v) = out.values.get_mut(node.output) {
            v.kind = ValueKind::Node(index);
        }
        out.nodes.push(Node {
            op,
            inputs,
            output: node.output,
            span: node.span,
        });
        if let Some(slot) = node_map.get_mut(n) {
            *slot = Some(index);
        }
    }
    (out, node_map)
}

/// The graph split at the values computed from parameters alone.
#[derive(Clone, Debug)]
pub struct LoadSplit {
    /// What `run` executes: the original graph without the load-time ops. Its parameters
    /// are the loaded ones (same order), then one per value of `load.outputs`.
    pub run: Graph,
    /// What `prepare` executes once: no inputs, the loaded parameters (same order, so the
    /// same offsets), and as outputs the derived values `run` reads, in the order of
    /// `run`'s derived parameters. `None` when no op moves.
    pub load: Option<Graph>,
    /// For each node of the original graph, its index in `run` (`None`: moved to load).
    pub node_map: Vec<Option<usize>>,
    /// How many of `run.params` are loaded from the weights file (the rest are derived).
    pub loaded_params: usize,
}

/// Splits `graph` into the load-time part and the per-inference part. Nodes listed in
/// `keep` (those of `fuse { }` groups) always stay in `run`.
pub fn split(graph: &Graph, keep: &[usize]) -> LoadSplit {
    let moves = load_time_nodes(graph, keep);
    let loaded_params = graph.params.len();
    work::add(Stage::Prepare, graph.nodes.len() + graph.values.len());
    if !moves.iter().any(|&m| m) {
        return LoadSplit {
            run: graph.clone(),
            load: None,
            node_map: (0..graph.nodes.len()).map(Some).collect(),
            loaded_params,
        };
    }
    let produced_at_load = produced_by(graph, &moves);
    // the load-time values `run` needs: read by a run-time node or returned
    let mut derived: Vec<ValueId> = Vec::new();
    let mut is_derived = vec![false; graph.values.len()];
    let mut need = |v: ValueId| {
        if produced_at_load.get(v).copied().unwrap_or(false) {
            if let Some(d @ false) = is_derived.get_mut(v) {
                *d = true;
                derived.push(v);
            }
        }
    };
    for (n, node) in graph.nodes.iter().enumerate() {
        if !moves.get(n).copied().unwrap_or(false) {
            node.inputs.iter().for_each(|&v| need(v));
        }
    }
    graph.outputs.iter().for_each(|&v| need(v));

    // the load graph: the loaded parameters, the moved nodes, the derived values as outputs
    let mut load = Graph::default();
    let mut load_ids: Vec<Option<ValueId>> = vec![None; graph.values.len()];
    copy_params(graph, &mut load, &mut load_ids);
    for (n, node) in graph.nodes.iter().enumerate() {
        if moves.get(n).copied().unwrap_or(false) {
            copy_node(graph, node, &mut load, &mut load_ids);
        }
    }
    load.outputs = derived
        .iter()
        .filter_map(|&v| load_ids.get(v).copied().flatten())
        .collect();

    // the run graph: inputs, loaded parameters, derived parameters, the other nodes
    let mut run = Graph::default();
    let mut run_ids: Vec<Option<ValueId>> = vec![None; graph.values.len()];
    for &input in &graph.inputs {
        if let Some(v) = graph.values.get(input) {
            let id = run.add_value(v.name.clone(), v.shape.clone(), v.kind.clone());
            run.inputs.push(id);
            if let Some(slot) = run_ids.get_mut(input) {
                *slot = Some(id);
            }
        }
    }
    copy_params(graph, &mut run, &mut run_ids);
    for &v in &derived {
        let Some(value) = graph.values.get(v) else {
            continue;
        };
        let key = format!("{} (computed at load)", value.name);
        let id = add_param(&mut run, &value.name, &value.shape, key);
        if let Some(slot) = run_ids.get_mut(v) {
            *slot = Some(id);
        }
    }
    let mut node_map = vec![None; graph.nodes.len()];
    for (n, node) in graph.nodes.iter().enumerate() {
        if !moves.get(n).copied().unwrap_or(false) {
            if let Some(slot) = node_map.get_mut(n) {
                *slot = Some(run.nodes.len());
            }
            copy_node(graph, node, &mut run, &mut run_ids);
        }
    }
    run.outputs = graph
        .outputs
        .iter()
        .filter_map(|&v| run_ids.get(v).copied().flatten())
        .collect();
    LoadSplit {
        run,
        load: Some(load),
        node_map,
        loaded_params,
    }
}

/// Which nodes move to load time: those whose operands are all parameters or results of
/// moved nodes, less the ones cheaper at run time (see the module doc) and, since their
/// results are then computed at run time, the nodes that read those.
fn load_time_nodes(graph: &Graph, keep: &[usize]) -> Vec<bool> {
    let mut blocked = vec![false; graph.nodes.len()];
    for &k in keep {
        if let Some(b) = blocked.get_mut(k) {
            *b = true;
        }
    }
    loop {
        let param_only = computed_from_params(graph, &blocked);
        let moves: Vec<bool> = graph
            .nodes
            .iter()
            .map(|node| param_only.get(node.output).copied().unwrap_or(false))
            .collect();
        let mut needed = vec![false; graph.values.len()];
        let run_time_reads = graph
            .nodes
            .iter()
            .zip(&moves)
            .filter(|(_, &moved)| !moved)
            .flat_map(|(node, _)| node.inputs.iter());
        for &v in run_time_reads.chain(&graph.outputs) {
            if let Some(x) = needed.get_mut(v) {
                *x = true;
            }
        }
        let mut changed = false;
        for (n, node) in graph.nodes.iter().enumerate() {
            let boundary = moves.get(n).copied().unwrap_or(false)
                && needed.get(node.output).copied().unwrap_or(false);
            if boundary && cheaper_at_run_time(graph, node) {
                if let Some(b) = blocked.get_mut(n) {
                    *b = true;
                    changed = true;
                }
            }
        }
        if !changed {
            return moves;
        }
    }
}

/// For each value: a parameter, or computed from parameters alone (a node with operands,
/// all of them such values). The rewrite stage prices these nodes at zero: they run once,
/// at load time.
pub fn parameter_only(graph: &Graph) -> Vec<bool> {
    computed_from_params(graph, &[])
}

/// [`parameter_only`], where the nodes marked in `blocked` count as run-time nodes.
fn computed_from_params(graph: &Graph, blocked: &[bool]) -> Vec<bool> {
    work::add(Stage::Prepare, graph.nodes.len() + graph.values.len());
    let mut param_only: Vec<bool> = graph
        .values
        .iter()
        .map(|v| matches!(v.kind, ValueKind::Param(_)))
        .collect();
    for (n, node) in graph.nodes.iter().enumerate() {
        if !blocked.get(n).copied().unwrap_or(false) && reads_only(node, &param_only) {
            if let Some(p) = param_only.get_mut(node.output) {
                *p = true;
            }
        }
    }
    param_only
}

/// `node` has operands, and every one is marked in `marked`.
fn reads_only(node: &Node, marked: &[bool]) -> bool {
    !node.inputs.is_empty()
        && node
            .inputs
            .iter()
            .all(|&v| marked.get(v).copied().unwrap_or(false))
}

/// A reshape (free at run time), or an op whose result outgrows its operands; never a
/// weight layout made for the kernels (packed panels padded to whole panels, Winograd's
/// transform at 16/9 the taps): computing those per call is what they exist to avoid.
fn cheaper_at_run_time(graph: &Graph, node: &Node) -> bool {
    if matches!(
        node.op,
        Op::PackPanels | Op::TileConvWeights { .. } | Op::WinogradWeights { .. }
    ) {
        return false;
    }
    let out = graph.values.get(node.output).map_or(0, |v| v.len());
    let largest_operand = node
        .inputs
        .iter()
        .filter_map(|&v| graph.values.get(v))
        .map(|v| v.len())
        .max()
        .unwrap_or(0);
    matches!(node.op, Op::Reshape(_)) || out > largest_operand
}

/// For each value: is it the output of a node marked in `moves`?
fn produced_by(graph: &Graph, moves: &[bool]) -> Vec<bool> {
    let mut produced = vec![false; graph.values.len()];
    for (n, node) in graph.nodes.iter().enumerate() {
        if moves.get(n).copied().unwrap_or(false) {
            if let Some(p) = produced.get_mut(node.output) {
                *p = true;
            }
        }
    }
    produced
}

/// Adds every parameter of `from` to `to`, in order, recording the new ids.
fn copy_params(from: &Graph, to: &mut Graph, ids: &mut [Option<ValueId>]) {
    for param in &from.params {
        let Some(v) = from.values.get(param.value) else {
            continue;
        };
        let id = add_param(to, &v.name, &param.shape, param.key.clone());
        if let Some(slot) = ids.get_mut(param.value) {
            *slot = Some(id);
        }
    }
}

/// Adds a parameter value to `to` and returns its id.
fn add_param(to: &mut Graph, name: &str, shape: &[usize], key: String) -> ValueId {
    let id = to.add_value(
        name.to_string(),
        shape.to_vec(),
        ValueKind::Param(to.params.len()),
    );
    to.params.push(Param {
        key,
        shape: shape.to_vec(),
        value: id,
    });
    id
}

/// Adds a copy of `node` (operands already copied) to `to`, recording its output's id.
fn copy_node(from: &Graph, node: &Node, to: &mut Graph, ids: &mut [Option<ValueId>]) {
    let Some(out) = from.values.get(node.output) else {
        return;
    };
    let inputs = node
        .inputs
        .iter()
        .filter_map(|&v| ids.get(v).copied().flatten())
        .collect();
    let id = to.add_value(
        out.name.clone(),
        out.shape.clone(),
        ValueKind::Node(to.nodes.len()),
    );
    to.nodes.push(Node {
        op: node.op.clone(),
        inputs,
        output: id,
        span: node.span,
    });
    if let Some(slot) = ids.get_mut(node.output) {
        *slot = Some(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{BinaryOp, ReshapeKind, UnaryOp};

    fn node(g: &mut Graph, op: Op, inputs: Vec<ValueId>, shape: Vec<usize>) -> ValueId {
        let out = g.add_value(
            format!("v{}", g.values.len()),
            shape,
            ValueKind::Node(g.nodes.len()),
        );
        g.nodes.push(Node {
            op,
            inputs,
            output: out,
            span: proc_macro2::Span::call_site(),
        });
        out
    }

    fn param(g: &mut Graph, key: &str, shape: Vec<usize>) -> ValueId {
        let v = g.add_value(key.into(), shape.clone(), ValueKind::Param(g.params.len()));
        g.params.push(Param {
            key: key.into(),
            shape,
            value: v,
        });
        v
    }

    /// `x * exp(w) + reshape(b)`: exp moves, the reshape stays.
    fn sample() -> Graph {
        let mut g = Graph::default();
        let x = g.add_value("x".into(), vec![2, 3], ValueKind::Input(0));
        g.inputs.push(x);
        let w = param(&mut g, "w", vec![2, 3]);
        let b = param(&mut g, "b", vec![3]);
        let e = node(&mut g, Op::Unary(UnaryOp::Exp), vec![w], vec![2, 3]);
        let m = node(&mut g, Op::Binary(BinaryOp::Mul), vec![x, e], vec![2, 3]);
        let r = node(
            &mut g,
            Op::Reshape(ReshapeKind::Reshape),
            vec![b],
            vec![1, 3],
        );
        let y = node(&mut g, Op::Binary(BinaryOp::Add), vec![m, r], vec![2, 3]);
        g.outputs.push(y);
        g
    }

    #[test]
    fn parameter_only_ops_move_and_reshapes_stay() {
        let split = split(&sample(), &[]);
        let load = split.load.as_ref().unwrap();
        assert_eq!(load.nodes.len(), 1);
        assert_eq!(load.nodes[0].op, Op::Unary(UnaryOp::Exp));
        assert_eq!(
            load.params.len(),
            2,
            "every loaded parameter, for the same offsets"
        );
        assert_eq!(load.outputs.len(), 1);
        assert_eq!(split.run.nodes.len(), 3);
        assert_eq!(split.run.params.len(), 3);
        assert_eq!(split.loaded_params, 2);
        assert_eq!(split.node_map, vec![None, Some(0), Some(1), Some(2)]);
        // run reads the derived parameter where it read exp(w)
        let derived = split.run.params[2].value;
        assert_eq!(split.run.nodes[0].inputs[1], derived);
    }

    #[test]
    fn readers_of_a_kept_reshape_stay_too() {
        // cumsum(reshape(neg(w))) with the reshape also returned: the reshape stays in
        // run, so the cumsum that reads it must stay as well; neg still moves
        let mut g = Graph::default();
        let w = param(&mut g, "w", vec![2, 3]);
        let neg = node(&mut g, Op::Unary(UnaryOp::Neg), vec![w], vec![2, 3]);
        let r = node(
            &mut g,
            Op::Reshape(ReshapeKind::Reshape),
            vec![neg],
            vec![6],
        );
        let c = node(
            &mut g,
            Op::Scan {
                kind: crate::ir::ScanKind::Sum,
                axis: 0,
                exclusive: false,
                reverse: false,
            },
            vec![r],
            vec![6],
        );
        g.outputs = vec![c, r];
        let split = split(&g, &[]);
        assert_eq!(split.node_map, vec![None, Some(0), Some(1)]);
        let load = split.load.unwrap();
        assert_eq!(load.nodes.len(), 1);
        assert!(split.run.nodes.iter().all(|n| n.inputs.len() == 1));
    }

    #[test]
    fn large_linears_get_packed_weights_and_small_ones_keep_theirs() {
        let mut g = Graph::default();
        let x = g.add_value("x".into(), vec![1, 4, 8], ValueKind::Input(0));
        let v = g.add_value("v".into(), vec![1, 8], ValueKind::Input(1));
        g.inputs = vec![x, v];
        let w = param(&mut g, "w", vec![16, 8]);
        let b = param(&mut g, "b", vec![16]);
        let big = node(&mut g, Op::Linear, vec![x, w, b], vec![1, 4, 16]);
        let small = node(&mut g, Op::Linear, vec![v, w], vec![1, 16]);
        g.outputs = vec![big, small];
        let (packed, map) = pack_weights(&g, &[]);
        let ops: Vec<&Op> = packed.nodes.iter().map(|n| &n.op).collect();
        assert_eq!(
            ops,
            [
                &Op::PackPanels,
                &Op::MatMulPanels { n: 16 },
                &Op::Binary(BinaryOp::Add),
                &Op::Linear
            ]
        );
        assert_eq!(map, vec![Some(2), Some(3)]);
        assert_eq!(
            packed.nodes[2].output, big,
            "the add writes the linear's value"
        );
        assert_eq!(packed.shape(packed.nodes[0].output), &[1, 8, 16]);
        crate::check::check(&packed).unwrap();
        // the packing reads only a parameter: split moves it to load time
        assert_eq!(split(&packed, &[]).load.map(|l| l.nodes.len()), Some(1));
        // kept nodes (fuse groups) keep their weight
        assert_eq!(pack_weights(&g, &[0]).0.nodes.len(), 2);
    }

    #[test]
    fn matmuls_by_a_parameter_get_packed_weights_transposed_at_load_time() {
        // (ONNX's `MatMul` by an initializer `[k, n]`, as PyTorch exports a linear layer)
        let mut g = Graph::default();
        let x = g.add_value("x".into(), vec![1, 4, 8], ValueKind::Input(0));
        let y = g.add_value("y".into(), vec![1, 8, 16], ValueKind::Input(1));
        g.inputs = vec![x, y];
        let w = param(&mut g, "w", vec![8, 16]);
        let by_param = node(&mut g, Op::MatMul, vec![x, w], vec![1, 4, 16]);
        let by_input = node(&mut g, Op::MatMul, vec![x, y], vec![1, 4, 16]);
        g.outputs = vec![by_param, by_input];
        let (packed, map) = pack_weights(&g, &[]);
        let ops: Vec<&Op> = packed.nodes.iter().map(|n| &n.op).collect();
        assert_eq!(
            ops,
            [
                &Op::Transpose { perm: vec![1, 0] },
                &Op::PackPanels,
                &Op::MatMulPanels { n: 16 },
                &Op::MatMul
            ]
        );
        assert_eq!(map, vec![Some(2), Some(3)]);
        assert_eq!(packed.nodes[2].output, by_param);
        assert_eq!(packed.shape(packed.nodes[0].output), &[16, 8]);
        assert_eq!(packed.shape(packed.nodes[1].output), &[1, 8, 16]);
        crate::check::check(&packed).unwrap();
        // the transpose and the packing read only a parameter: both move to load time
        assert_eq!(split(&packed, &[]).load.map(|l| l.nodes.len()), Some(2));
        // the same product as the matmul, by the reference interpreter
        let xs =
            ndarray::Array::from_shape_fn(vec![1, 4, 8], |i| (i[1] * 8 + i[2]) as f32 * 0.25 - 3.0);
        let ws = ndarray::Array::from_shape_fn(vec![8, 16], |i| {
            (i[0] as f32 - 2.5) * (i[1] as f32 + 1.0) * 0.125
        });
        let ys = ndarray::Array::from_shape_fn(vec![1, 8, 16], |_| 0.0f32);
        let run = |graph: &Graph| {
            let inputs = [xs.clone().into_dyn(), ys.clone().into_dyn()];
            crate::interp::interpret(graph, &inputs, &[ws.clone().into_dyn()]).unwrap()
        };
        let (want, got) = (run(&g), run(&packed));
        assert_eq!(want[0].shape(), got[0].shape());
        // (both sums in f64 and rounded once: the same floats)
        assert_eq!(want[0], got[0]);
    }

    #[test]
    fn one_row_linears_get_packed_weights_from_a_quarter_mebibyte() {
        // (a matrix-vector product: streamed from beyond L2, its panels read in one pass)
        let mut g = Graph::default();
        let x = g.add_value("x".into(), vec![1, 256], ValueKind::Input(0));
        let y = g.add_value("y".into(), vec![1, 255], ValueKind::Input(1));
        g.inputs = vec![x, y];
        let w = param(&mut g, "w", vec![256, 256]);
        let w_less = param(&mut g, "w_less", vec![256, 255]);
        let large = node(&mut g, Op::Linear, vec![x, w], vec![1, 256]);
        let small = node(&mut g, Op::Linear, vec![y, w_less], vec![1, 256]);
        g.outputs = vec![large, small];
        let (packed, map) = pack_weights(&g, &[]);
        let ops: Vec<&Op> = packed.nodes.iter().map(|n| &n.op).collect();
        assert_eq!(
            ops,
            [&Op::PackPanels, &Op::MatMulPanels { n: 256 }, &Op::Linear]
        );
        assert_eq!(map, vec![Some(1), Some(2)]);
        crate::check::check(&packed).unwrap();
        // two or three rows keep their weight, however large
        let mut g = Graph::default();
        let x = g.add_value("x".into(), vec![2, 256], ValueKind::Input(0));
        g.inputs = vec![x];
        let w = param(&mut g, "w", vec![256, 256]);
        g.outputs = vec![node(&mut g, Op::Linear, vec![x, w], vec![2, 256])];
        assert_eq!(pack_weights(&g, &[]).0.nodes.len(), 1);
    }

    #[test]
    fn large_convolutions_read_tiled_weights_and_small_or_depthwise_ones_do_not() {
        let conv = |groups: usize, kernel: usize| {
            let pad = kernel / 2;
            Op::Conv2d(crate::ir::Conv2d {
                kernel: [kernel, kernel],
                stride: [1, 1],
                padding: [pad, pad, pad, pad],
                dilation: [1, 1],
                groups,
                weights: crate::ir::ConvWeights::RowMajor,
            })
        };
        let mut g = Graph::default();
        let x = g.add_value("x".into(), vec![1, 32, 8, 8], ValueKind::Input(0));
        g.inputs = vec![x];
        // 24 x 32 x 5 x 5 = 19200 weights: tiled (5x5: not Winograd's);
        // 16 x 2 x 3 x 3 (groups 16): too few; depthwise 32: never
        let big_w = param(&mut g, "big", vec![24, 32, 5, 5]);
        let small_w = param(&mut g, "small", vec![16, 2, 3, 3]);
        let dw_w = param(&mut g, "dw", vec![32, 1, 3, 3]);
        let big = node(&mut g, conv(1, 5), vec![x, big_w], vec![1, 24, 8, 8]);
        let small = node(&mut g, conv(16, 3), vec![x, small_w], vec![1, 16, 8, 8]);
        let dw = node(&mut g, conv(32, 3), vec![x, dw_w], vec![1, 32, 8, 8]);
        g.outputs = vec![big, small, dw];
        let (tiled, map) = pack_weights(&g, &[]);
        let ops: Vec<&Op> = tiled.nodes.iter().map(|n| &n.op).collect();
        let Op::Conv2d(attrs) = conv(1, 5) else {
            unreachable!("conv builds a conv2d")
        };
        let tiled_conv = Op::Conv2d(crate::ir::Conv2d {
            weights: crate::ir::ConvWeights::Tiled,
            ..attrs
        });
        assert_eq!(
            ops,
            [
                &Op::TileConvWeights { groups: 1 },
                &tiled_conv,
                &conv(16, 3),
                &conv(32, 3)
            ]
        );
        assert_eq!(map, vec![Some(1), Some(2), Some(3)]);
        assert_eq!(tiled.shape(tiled.nodes[0].output), &[24, 32, 5, 5]);
        assert_eq!(tiled.nodes[1].inputs, vec![x, tiled.nodes[0].output]);
        crate::check::check(&tiled).unwrap();
        // the tiling reads only a parameter: split moves it to load time
        assert_eq!(split(&tiled, &[]).load.map(|l| l.nodes.len()), Some(1));
        // kept nodes (fuse groups) keep their weight
        assert_eq!(pack_weights(&g, &[0]).0.nodes.len(), 3);
    }

    /// A 3x3 convolution of one group with padding 1 on row-major weights.
    fn conv3x3(stride: usize) -> Op {
        Op::Conv2d(crate::ir::Conv2d {
            kernel: [3, 3],
            stride: [stride, stride],
            padding: [1, 1, 1, 1],
            dilation: [1, 1],
            groups: 1,
            weights: ConvWeights::RowMajor,
        })
    }

    #[test]
    fn wide_3x3_stride_1_convolutions_read_winograd_weights() {
        let conv = conv3x3;
        let mut g = Graph::default();
        let x = g.add_value("x".into(), vec![1, 128, 9, 9], ValueKind::Input(0));
        let big = g.add_value("big".into(), vec![1, 128, 32, 32], ValueKind::Input(1));
        let small = g.add_value("small".into(), vec![1, 128, 6, 6], ValueKind::Input(2));
        g.inputs = vec![x, big, small];
        // 128 -> 160 stride 1: Winograd (F(2x2) on 9x9, F(4x4) on 32x32: 64 tiles of 4x4);
        // the same with stride 2, or on a map of 36 pixels: tiles
        let w1 = param(&mut g, "w1", vec![160, 128, 3, 3]);
        let w2 = param(&mut g, "w2", vec![160, 128, 3, 3]);
        let w3 = param(&mut g, "w3", vec![160, 128, 3, 3]);
        let w4 = param(&mut g, "w4", vec![160, 128, 3, 3]);
        let y1 = node(&mut g, conv(1), vec![x, w1], vec![1, 160, 9, 9]);
        let y2 = node(&mut g, conv(2), vec![x, w2], vec![1, 160, 5, 5]);
        let y3 = node(&mut g, conv(1), vec![big, w3], vec![1, 160, 32, 32]);
        let y4 = node(&mut g, conv(1), vec![small, w4], vec![1, 160, 6, 6]);
        g.outputs = vec![y1, y2, y3, y4];
        let (packed, _) = pack_weights(&g, &[]);
        let ops: Vec<&str> = packed.nodes.iter().map(|n| n.op.name()).collect();
        assert_eq!(
            ops,
            [
                "winograd_weights",
                "conv2d",
                "tile_conv_weights",
                "conv2d",
                "winograd_weights",
                "conv2d",
                "tile_conv_weights",
                "conv2d"
            ]
        );
        assert_eq!(packed.shape(packed.nodes[0].output), &[16, 160, 128]);
        assert_eq!(packed.shape(packed.nodes[4].output), &[36, 160, 128]);
        let layouts: Vec<ConvWeights> = packed
            .nodes
            .iter()
            .filter_map(|n| match n.op {
                Op::Conv2d(attrs) => Some(attrs.weights),
                _ => None,
            })
            .collect();
        let winograd = |tile| ConvWeights::Winograd { tile };
        let tiled = ConvWeights::Tiled;
        assert_eq!(layouts, [winograd(2), tiled, winograd(4), tiled]);
        crate::check::check(&packed).unwrap();
        assert_eq!(split(&packed, &[]).load.map(|l| l.nodes.len()), Some(4));
    }

    #[test]
    fn small_weights_take_winograd_on_large_maps_only() {
        let conv = conv3x3(1);
        let mut g = Graph::default();
        let large = g.add_value("large".into(), vec![1, 16, 64, 64], ValueKind::Input(0));
        let small = g.add_value("small".into(), vec![1, 16, 32, 32], ValueKind::Input(1));
        g.inputs = vec![large, small];
        // 16 -> 16 (2304 weights, below TILE_MIN_WEIGHTS): F(4x4) on 64x64, as it is on
        // 32x32
        let w1 = param(&mut g, "w1", vec![16, 16, 3, 3]);
        let w2 = param(&mut g, "w2", vec![16, 16, 3, 3]);
        let y1 = node(&mut g, conv.clone(), vec![large, w1], vec![1, 16, 64, 64]);
        let y2 = node(&mut g, conv, vec![small, w2], vec![1, 16, 32, 32]);
        g.outputs = vec![y1, y2];
        let (packed, _) = pack_weights(&g, &[]);
        let ops: Vec<&str> = packed.nodes.iter().map(|n| n.op.name()).collect();
        assert_eq!(ops, ["winograd_weights", "conv2d", "conv2d"]);
        assert_eq!(packed.shape(packed.nodes[0].output), &[36, 16, 16]);
        crate::check::check(&packed).unwrap();
    }

    #[test]
    fn kept_nodes_and_broadcasts_stay() {
        let g = sample();
        assert!(split(&g, &[0]).load.is_none());
        let mut g = Graph::default();
        let x = g.add_value("x".into(), vec![4, 3], ValueKind::Input(0));
        g.inputs.push(x);
        let b = param(&mut g, "b", vec![3]);
        let neg = node(&mut g, Op::Unary(UnaryOp::Neg), vec![b], vec![3]);
        let wide = node(&mut g, Op::Expand, vec![neg], vec![4, 3]);
        let y = node(&mut g, Op::Binary(BinaryOp::Add), vec![x, wide], vec![4, 3]);
        g.outputs.push(y);
        let split = split(&g, &[]);
        // neg moves, the expand of its result stays
        assert_eq!(split.load.as_ref().unwrap().nodes.len(), 1);
        assert_eq!(split.run.nodes.len(), 2);
        assert_eq!(split.run.nodes[0].op, Op::Expand);
    }
}

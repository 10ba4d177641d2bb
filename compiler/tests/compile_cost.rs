//! Compile cost grows linearly with model depth.
//!
//! Each model family is compiled at a depth and at four times that depth, and the work of
//! every stage is divided by the number of ops: a stage whose cost per op grows by more
//! than [`BOUND`] is superlinear (a quadratic stage grows about 4x). The work is counted,
//! not timed ([`dnnfusion_compiler::work`]: nodes and values visited, block pairs examined,
//! rules tried, ...), so the test means the same on a loaded machine. As a net under the
//! counters (a copy of the graph made per node is not counted by them), the bytes
//! allocated by the whole expansion, parsing and lowering included, are held to the same
//! bound.
//!
//! ```sh
//! cargo test -p dnnfusion-compiler --test compile_cost -- --nocapture   # prints the table
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use dnnfusion_compiler::work::{self, Stage, Work};

/// Largest growth of a stage's cost per op, from a model to one four times as deep.
const BOUND: f64 = 1.5;

/// Counts the bytes allocated (this file holds one test, so no other thread allocates
/// while it measures).
struct CountingAllocator;

static ALLOCATED: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is
// added.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on as it is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on as it is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// A BERT-base-width encoder of `layers` layers (the `expand` example's `--bert`).
fn bert(layers: usize) -> String {
    include_str!("../examples/bert_stack.dnn").replace("LAYERS", &layers.to_string())
}

/// A ResNet-like stack of `blocks` residual blocks (convolutions, batch norms folded into
/// them, a classifier).
fn convnet(blocks: usize) -> String {
    const SOURCE: &str = "
        /// A residual block of two 3x3 convolutions with batch norm.
        block residual(x: [B, C, H, W]) {
            let conv1 = conv2d(x, C, kernel = 3, padding = 1, bias = false);
            let bn1 = batch_norm(conv1);
            let conv2 = conv2d(relu(bn1), C, kernel = 3, padding = 1, bias = false);
            let bn2 = batch_norm(conv2);
            relu(bn2 + x)
        }

        /// Residual blocks on 16 channels of 16x16, then a classifier.
        pub model ConvStack(x: [1, 16, 16, 16]) -> [1, 10] {
            let mut h = x;
            for i in 0..BLOCKS {
                #[key = \"blocks.{i}\"]
                h = residual(h);
            }
            let head = linear(flatten(global_avg_pool2d(h)), 10);
            head
        }";
    SOURCE.replace("BLOCKS", &blocks.to_string())
}

/// Models of any depth, and the smaller depth the test compiles.
struct Family {
    name: &'static str,
    source: fn(usize) -> String,
    depth: usize,
}

/// The families measured. A 12-layer BERT offers `rewrite` fewer commutative moves to try
/// than its cap (`ENABLING_TRIALS`), a 48-layer one more: its prepare work per op (the
/// facts each trial prices with) grows 1.2x from 12 to 48 layers, and 1.00x from 48 to 192.
const FAMILIES: [Family; 2] = [
    Family {
        name: "bert",
        source: bert,
        depth: 12,
    },
    Family {
        name: "convnet",
        source: convnet,
        depth: 8,
    },
];

/// What compiling one model cost.
struct Cost {
    /// Ops of the lowered model.
    ops: usize,
    /// Counted work per stage.
    work: Work,
    /// Bytes allocated by the expansion, from the tokens to the tokens.
    allocated: u64,
}

fn cost(source: &str) -> Cost {
    let models = dnnfusion_compiler::lower_str(source).unwrap_or_else(|e| panic!("{e:?}"));
    let ops = models.iter().map(|m| m.graph.nodes.len()).sum();
    let tokens: proc_macro2::TokenStream = source.parse().unwrap();
    let before = ALLOCATED.load(Ordering::Relaxed);
    let (expanded, work) = work::measure(|| dnnfusion_compiler::expand(tokens));
    let allocated = ALLOCATED.load(Ordering::Relaxed) - before;
    assert!(
        !expanded.to_string().contains("compile_error"),
        "the model does not compile"
    );
    Cost {
        ops,
        work,
        allocated,
    }
}

/// Growth of the cost per op from `small` to `large`.
fn growth(small: u64, small_ops: usize, large: u64, large_ops: usize) -> f64 {
    let per_op = |units: u64, ops: usize| units.max(1) as f64 / ops.max(1) as f64;
    per_op(large, large_ops) / per_op(small, small_ops)
}

#[test]
fn compile_cost_per_op_does_not_grow_with_depth() {
    let mut failures = Vec::new();
    for Family {
        name: family,
        source,
        depth,
    } in FAMILIES
    {
        let small = cost(&source(depth));
        let large = cost(&source(4 * depth));
        println!(
            "{family}: {depth} -> {} layers, {} -> {} ops",
            4 * depth,
            small.ops,
            large.ops
        );
        let mut rows: Vec<(&str, u64, u64)> = Stage::ALL
            .iter()
            .map(|&s| (s.name(), small.work.of(s), large.work.of(s)))
            .collect();
        rows.push(("all stages", small.work.total(), large.work.total()));
        rows.push(("bytes allocated", small.allocated, large.allocated));
        for (what, a, b) in rows {
            let g = growth(a, small.ops, b, large.ops);
            println!("  {what:>16}: {a:>12} -> {b:>12} units, per op x{g:.2}");
            if g > BOUND {
                failures.push(format!(
                    "{family}, {what}: cost per op grew x{g:.2} from {depth} to {} layers ({a} -> {b} units for {} -> {} ops); at most x{BOUND} is linear",
                    4 * depth,
                    small.ops,
                    large.ops
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

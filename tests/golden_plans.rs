//! Golden fusion plans of the reference models: what `dnn!` decides for each model of
//! `models/src/reference.rs` (blocks, mapping types, anchors, prologues, ops with their
//! values and shapes, and where each block's sink is stored), as text, compared with
//! `tests/golden/<model>.plan`. A change of the planner shows up as a readable diff.
//!
//! Golden expansions: the Rust `dnn!` generates for LeNet and for one BERT encoder layer
//! (`encoder_layer` of the same source), formatted by `rustfmt`, in
//! `tests/golden/<model>.expansion`. A change of the generated code shows up as a diff.
//! They are compared as tokens, so only blessing needs `rustfmt`.
//!
//! Golden op facts: every op's name, mapping type, fusion role and sign fact as its
//! family file states them (`ops::facts`), one line per op, in `tests/golden/op_facts.txt`
//! (house rule 3's printed table; an op variant without an example does not compile).
//!
//! ```sh
//! cargo test -p dnnfusion-tests --test golden_plans                    # compare
//! DNNFUSION_BLESS=1 cargo test -p dnnfusion-tests --test golden_plans  # rewrite the files, then review them
//! ```
//!
//! The plans are those of `dnnfusion_compiler::compile_model`, the stage `dnn!` runs
//! (explicit `fuse { }` groups and `#![fusion(off)]` included).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use proc_macro2::{Delimiter, TokenTree};

use dnnfusion_compiler::ir::{
    Conv2d, ConvTranspose2d, ConvWeights, CoordMode, Graph, Interpolation, Op, PadMode, Pool2d,
    Resample, ReshapeKind, ResizeMode, ValueId,
};
use dnnfusion_compiler::ops::{facts, reduce, scan, unary, Mapping};
use dnnfusion_compiler::plan::{MemoryPlan, Slot};
use dnnfusion_compiler::{compile_model, lower_str, CompiledModel};

/// File stem of a model's golden plan (the names of `models/reference/`).
fn file_stem(model: &str) -> String {
    match model {
        "Mlp" => "mlp".to_string(),
        "LeNet" => "lenet".to_string(),
        "BertTiny" => "bert_tiny".to_string(),
        "UNetSmall" => "unet_small".to_string(),
        other => other.to_lowercase(),
    }
}

fn fmt_shape(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(", "))
}

fn value_name(graph: &Graph, v: ValueId) -> String {
    graph
        .values
        .get(v)
        .map_or_else(|| format!("?{v}"), |v| v.name.clone())
}

fn slot_text(graph: &Graph, memory: &MemoryPlan, v: ValueId) -> String {
    match memory.slots.get(v) {
        Some(Slot::Input(i)) => format!("input {i}"),
        Some(Slot::Output(i)) => format!("output {i}"),
        Some(Slot::Param { offset, len }) => format!("params {offset}+{len}"),
        Some(Slot::Arena { offset, len }) => format!("arena {offset}+{len}"),
        Some(Slot::Fused) => "fused (never stored)".to_string(),
        Some(Slot::Alias(root)) => format!("alias of {}", value_name(graph, *root)),
        None => "no slot".to_string(),
    }
}

/// The plan of one model, one line per block:
/// `block <i> <mapping> anchor <op#node|-> [prologue <op#node,..>] | <op#node> <value> <shape>; ... -> <slot of the sink>`.
fn plan_text(compiled: &CompiledModel) -> String {
    let graph = &compiled.model.graph;
    let fusion = &compiled.fusion;
    let memory = &compiled.memory;
    let mut s = String::new();
    let fused = fusion.blocks.iter().filter(|b| b.nodes.len() > 1).count();
    let _ = writeln!(
        s,
        "# {}: {} nodes, {} blocks ({} with several nodes), arena {} floats, params {} floats",
        compiled.model.name,
        graph.nodes.len(),
        fusion.blocks.len(),
        fused,
        memory.arena_len,
        memory.param_len
    );
    for (i, block) in fusion.blocks.iter().enumerate() {
        let op_at = |n: usize| format!("{}#{n}", graph.nodes[n].op.name());
        let anchor = block.anchor.map_or_else(|| "-".to_string(), op_at);
        let prologue = dnnfusion_compiler::fuse::prologue_nodes(graph, block);
        let prologue_text = if prologue.is_empty() {
            String::new()
        } else {
            format!(
                " prologue {}",
                prologue
                    .iter()
                    .map(|&n| op_at(n))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        };
        let nodes: Vec<String> = block
            .nodes
            .iter()
            .map(|&n| {
                let out = graph.nodes[n].output;
                format!(
                    "{} {} {}",
                    op_at(n),
                    value_name(graph, out),
                    fmt_shape(graph.shape(out))
                )
            })
            .collect();
        let sink = graph.nodes[block.sink()].output;
        let _ = writeln!(
            s,
            "block {i:>2} {:<12} anchor {anchor}{prologue_text} | {} -> {}",
            block.mapping.name(),
            nodes.join("; "),
            slot_text(graph, memory, sink)
        );
    }
    for &(position, v) in &memory.output_copies {
        let _ = writeln!(s, "copy {} -> output {position}", value_name(graph, v));
    }
    s
}

/// `- old` / `+ new` lines of a longest-common-subsequence diff (unchanged lines left out).
fn line_diff(old: &str, new: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    // lcs[i][j]: length of the LCS of a[i..] and b[j..]
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            let _ = writeln!(out, "  - {}", a[i]);
            i += 1;
        } else {
            let _ = writeln!(out, "  + {}", b[j]);
            j += 1;
        }
    }
    out
}

/// `tests/golden/`: the manifest of these tests is `tests/Cargo.toml`.
fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden")
}

/// The command that rewrites the golden files.
const BLESS: &str = "DNNFUSION_BLESS=1 cargo test -p dnnfusion-tests --test golden_plans";

/// The golden file at `path`; `None`, with the problem noted, when it is missing.
fn read_golden(path: &std::path::Path, problems: &mut Vec<String>) -> Option<String> {
    let found = std::fs::read_to_string(path).ok();
    if found.is_none() {
        problems.push(format!(
            "{}: missing; create it with `{BLESS}` and review it",
            path.display()
        ));
    }
    found
}

/// `DNNFUSION_BLESS=1`: rewrite the golden files instead of comparing.
fn blessing() -> bool {
    std::env::var_os("DNNFUSION_BLESS").is_some_and(|v| v != "0")
}

#[test]
fn reference_model_plans_match_the_golden_files() {
    let models = lower_str(dnnfusion_models::reference::SOURCE).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(
        models.len() >= 4,
        "the reference source declares {} models",
        models.len()
    );
    let bless = blessing();
    let dir = golden_dir();
    let mut problems = Vec::new();
    for model in models {
        let compiled = compile_model(model);
        let name = compiled.model.name.to_string();
        let text = plan_text(&compiled);
        let path = dir.join(format!("{}.plan", file_stem(&name)));
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let Some(golden) = read_golden(&path, &mut problems) else {
            continue;
        };
        if golden != text {
            let diff = line_diff(&golden, &text);
            problems.push(format!(
                "{}: the plan of {name} changed (golden -, now +):\n{diff}if the change is intended, rewrite the file with `{BLESS}` and review the diff",
                path.display()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// One encoder layer of `BertTiny`, declared after the reference models so that it uses
/// their `encoder_layer` block.
const ENCODER_LAYER: &str = r#"
    /// One post-LN BERT encoder layer (the layer `BertTiny` repeats).
    pub model EncoderLayer(input: [1, 128, 128]) -> [1, 128, 128] {
        #[key = "layer"]
        let h = encoder_layer(input);
        h
    }
"#;

/// `code` formatted by `rustfmt` (edition 2021); `Err` says why not.
fn rustfmt(code: &str) -> Result<String, String> {
    let mut child = Command::new("rustfmt")
        .args(["--edition", "2021", "--emit", "stdout"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run rustfmt: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(code.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    String::from_utf8(out.stdout).map_err(|e| e.to_string())
}

/// Code as a canonical token string: formatting and comments do not count, nor the
/// trailing commas `rustfmt` adds, and a negative literal reads the same as `-` and the
/// literal.
fn canonical(code: &str) -> String {
    fn walk(tokens: proc_macro2::TokenStream, out: &mut String) {
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        let last = trees.len().saturating_sub(1);
        for (k, tree) in trees.into_iter().enumerate() {
            match tree {
                TokenTree::Group(g) => {
                    let (open, close) = match g.delimiter() {
                        Delimiter::Parenthesis => ("(", ")"),
                        Delimiter::Brace => ("{", "}"),
                        Delimiter::Bracket => ("[", "]"),
                        Delimiter::None => ("", ""),
                    };
                    out.push_str(open);
                    walk(g.stream(), out);
                    out.push_str(close);
                }
                TokenTree::Punct(p) if p.as_char() == ',' && k == last => {}
                TokenTree::Literal(l) => {
                    let text = l.to_string();
                    match text.strip_prefix('-') {
                        Some(digits) => {
                            let _ = write!(out, "- {digits} ");
                        }
                        None => {
                            let _ = write!(out, "{text} ");
                        }
                    }
                }
                other => {
                    let _ = write!(out, "{other} ");
                }
            }
        }
    }
    let tokens: proc_macro2::TokenStream = code
        .parse()
        .unwrap_or_else(|e| panic!("not Rust tokens: {e}"));
    let mut out = String::new();
    walk(tokens, &mut out);
    out
}

#[test]
fn reference_expansions_match_the_golden_files() {
    let source = format!("{}{ENCODER_LAYER}", dnnfusion_models::reference::SOURCE);
    let models = lower_str(&source).unwrap_or_else(|e| panic!("{e:?}"));
    let bless = blessing();
    let dir = golden_dir();
    let mut problems = Vec::new();
    for model in models {
        let name = model.name.to_string();
        let stem = match name.as_str() {
            "LeNet" => "lenet",
            "EncoderLayer" => "encoder_layer",
            _ => continue,
        };
        let code = compile_model(model).tokens.to_string();
        let path = dir.join(format!("{stem}.expansion"));
        let header = format!(
            "// The code `dnn!` generates for `{name}` (tests/golden_plans.rs), formatted by rustfmt.\n\
             // Rewrite with `{BLESS}`.\n\n"
        );
        if bless {
            let formatted = rustfmt(&code).unwrap_or_else(|e| panic!("blessing {stem}: {e}"));
            std::fs::write(&path, format!("{header}{formatted}")).unwrap();
            continue;
        }
        let Some(golden) = read_golden(&path, &mut problems) else {
            continue;
        };
        if canonical(&golden) != canonical(&code) {
            // show the change formatted like the file when rustfmt is there
            let now = rustfmt(&code).map_or(code, |f| format!("{header}{f}"));
            let diff = line_diff(&golden, &now);
            problems.push(format!(
                "{}: the generated code of {name} changed (golden -, now +):\n{diff}if the change is intended, rewrite the file with `{BLESS}` and review the diff",
                path.display()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// Which variant an op is: one arm per variant and no `_`, so a new op does not compile
/// here until [`every_op_variant`] has an example of it.
fn variant_index(op: &Op) -> usize {
    match op {
        Op::Unary(_) => 0,
        Op::Binary(_) => 1,
        Op::Where => 2,
        Op::Prelu => 3,
        Op::Linear => 4,
        Op::MatMul => 5,
        Op::MatMulPanels { .. } => 6,
        Op::PackPanels => 7,
        Op::TileConvWeights { .. } => 8,
        Op::WinogradWeights { .. } => 9,
        Op::Conv2d(_) => 10,
        Op::ConvTranspose2d(_) => 11,
        Op::MaxPool2d(_) => 12,
        Op::AvgPool2d(_) => 13,
        Op::GlobalAvgPool => 14,
        Op::GlobalMaxPool => 15,
        Op::Reduce { .. } => 16,
        Op::Softmax { .. } => 17,
        Op::LogSoftmax { .. } => 18,
        Op::LayerNorm { .. } => 19,
        Op::BatchNorm { .. } => 20,
        Op::GroupNorm { .. } => 21,
        Op::InstanceNorm { .. } => 22,
        Op::Reshape(_) => 23,
        Op::Transpose { .. } => 24,
        Op::Concat { .. } => 25,
        Op::Slice { .. } => 26,
        Op::Pad { .. } => 27,
        Op::Gather { .. } => 28,
        Op::Expand => 29,
        Op::Resize(_) => 30,
        Op::Resample(_) => 31,
        Op::Scan { .. } => 32,
    }
}

/// Variants of [`variant_index`].
const VARIANTS: usize = 33;

/// The ops whose facts the golden table lists: every elementwise function the DSL calls
/// by name and every binary function (each as the DSL lowers it), every reduce and scan
/// function, and one example of every other variant (its facts do not depend on its
/// attributes, except where a second example shows they do).
fn every_op_variant() -> Vec<Op> {
    let mut ops: Vec<Op> = unary_ops();
    ops.extend(binary_ops());
    let conv = Conv2d {
        kernel: [3, 3],
        stride: [1, 1],
        padding: [1, 1, 1, 1],
        dilation: [1, 1],
        groups: 1,
        weights: ConvWeights::RowMajor,
    };
    let pool = Pool2d {
        kernel: [2, 2],
        stride: [2, 2],
        padding: [0; 4],
        dilation: [1, 1],
        ceil_mode: false,
        count_include_pad: true,
    };
    ops.extend([
        Op::Where,
        Op::Prelu,
        Op::Linear,
        Op::MatMul,
        Op::MatMulPanels { n: 16 },
        Op::PackPanels,
        Op::TileConvWeights { groups: 1 },
        Op::WinogradWeights { tile: 2 },
        Op::Conv2d(conv),
        Op::ConvTranspose2d(ConvTranspose2d {
            kernel: [2, 2],
            stride: [2, 2],
            padding: [0, 0],
            output_padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        }),
        Op::MaxPool2d(pool),
        Op::AvgPool2d(pool),
        Op::GlobalAvgPool,
        Op::GlobalMaxPool,
    ]);
    ops.extend(reduce::ALL.map(|kind| Op::Reduce {
        kind,
        axes: vec![1],
        keepdims: false,
    }));
    ops.extend([
        Op::Softmax { axis: 1 },
        Op::LogSoftmax { axis: 1 },
        Op::LayerNorm { dims: 1, eps: 1e-5 },
        Op::BatchNorm { eps: 1e-5 },
        Op::GroupNorm {
            groups: 2,
            eps: 1e-5,
        },
        Op::InstanceNorm { eps: 1e-5 },
    ]);
    ops.extend(
        [
            ReshapeKind::Reshape,
            ReshapeKind::Flatten,
            ReshapeKind::Squeeze,
            ReshapeKind::Unsqueeze,
        ]
        .map(Op::Reshape),
    );
    ops.extend([
        Op::Transpose { perm: vec![1, 0] },
        Op::Concat { axis: 0 },
        Op::Slice {
            starts: vec![0],
            ends: vec![1],
            steps: vec![1],
        },
        Op::Pad {
            pads: vec![(1, 1)],
            mode: PadMode::Constant(0.0),
        },
        Op::Gather { axis: 0 },
        Op::Expand,
        Op::Resize(ResizeMode::Nearest),
        Op::Resize(ResizeMode::Bilinear {
            align_corners: false,
        }),
        Op::Resample(Box::new(Resample {
            interpolation: Interpolation::Linear,
            coord: CoordMode::HalfPixel,
            exclude_outside: false,
            antialias: false,
            extrapolation: 0.0,
            scales: vec![1.0, 2.0],
            roi: vec![(0.0, 1.0); 2],
        })),
    ]);
    for kind in scan::ALL {
        for exclusive in [false, true] {
            ops.push(Op::Scan {
                kind,
                axis: 0,
                exclusive,
                reverse: false,
            });
        }
    }
    ops
}

/// The elementwise functions of one input: those the DSL calls by name, as `name(x)`
/// lowers them (defaults), then `gelu` and the forms with a constant operand.
fn unary_ops() -> Vec<Op> {
    let calls = unary::SIGNATURES
        .iter()
        .flatten()
        .map(|sig| format!("{}(x)", sig.name));
    let others = [
        "gelu(x)", "x + 2.0", "x - 2.0", "2.0 - x", "x * 2.0", "x / 2.0", "2.0 / x",
    ];
    calls
        .chain(others.map(String::from))
        .map(|call| {
            let source = format!("pub model M(x: [2]) -> [2] {{ {call} }}");
            let models = lower_str(&source).unwrap_or_else(|e| panic!("{call}: {e:?}"));
            models[0].graph.nodes[0].op.clone()
        })
        .collect()
}

/// The binary functions, as `name(a, b)` lowers them.
fn binary_ops() -> Vec<Op> {
    ["add", "sub", "mul", "div", "maximum", "minimum", "pow"]
        .iter()
        .map(|name| {
            let source = format!("pub model M(a: [2], b: [2]) -> [2] {{ {name}(a, b) }}");
            let models = lower_str(&source).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            models[0].graph.nodes[0].op.clone()
        })
        .collect()
}

/// One line per op: its name, mapping type, fusion role and sign fact
/// (`dnnfusion_compiler::ops::facts`, stated in the ops' family files).
fn op_facts_text() -> String {
    let mut text = String::from(
        "# every op's facts (ops::facts): name, mapping type, role (E epilogue, P prologue, \
         S store map, I index preserving), nonneg when\n",
    );
    for op in every_op_variant() {
        let f = facts(&op);
        let mapping = match f.mapping {
            Mapping::Always(t) => t.name().to_string(),
            Mapping::Broadcasting => "one-to-one, one-to-many when broadcasting".to_string(),
        };
        let r = f.role;
        let role: String = [
            (r.epilogue, 'E'),
            (r.prologue, 'P'),
            (r.store_map, 'S'),
            (r.index_preserving, 'I'),
        ]
        .iter()
        .map(|&(on, c)| if on { c } else { '-' })
        .collect();
        let detail = match &op {
            // a binary function with a constant operand
            Op::Unary(u) if format!("{u:?}").contains("Scalar") => format!(" ({u:?})"),
            Op::Scan {
                exclusive: true, ..
            } => " (exclusive)".into(),
            Op::Resize(ResizeMode::Bilinear { .. }) => " (bilinear)".into(),
            Op::Resize(ResizeMode::Nearest) => " (nearest)".into(),
            Op::Resample(_) => " (any axes)".into(),
            _ => String::new(),
        };
        writeln!(
            text,
            "{:<26} {:<42} {role} {:?}",
            format!("{}{detail}", f.name),
            mapping,
            f.nonneg
        )
        .unwrap();
    }
    text
}

#[test]
fn every_ops_facts_match_the_golden_file() {
    let ops = every_op_variant();
    let covered: std::collections::BTreeSet<usize> = ops.iter().map(variant_index).collect();
    let missing: Vec<usize> = (0..VARIANTS).filter(|i| !covered.contains(i)).collect();
    assert!(
        missing.is_empty(),
        "variants without an example: {missing:?}"
    );
    let text = op_facts_text();
    let path = golden_dir().join("op_facts.txt");
    if blessing() {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let mut problems = Vec::new();
    if let Some(golden) = read_golden(&path, &mut problems) {
        if golden != text {
            problems.push(format!(
                "{}: an op's facts changed (golden -, now +):\n{}if the change is intended, rewrite the file with `{BLESS}` and review the diff",
                path.display(),
                line_diff(&golden, &text)
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

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

use dnnfusion_compiler::ir::{Graph, ValueId};
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

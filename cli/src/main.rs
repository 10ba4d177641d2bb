//! `dnnfusion`: the command-line face of the compiler for ONNX models.
//!
//! ```text
//! dnnfusion import model.onnx [--pin batch=1] [--name ResNet18]   # the equivalent dnn! text
//!                                  [--flat]                       # (without blocks)
//! dnnfusion explain model.onnx                                    # fused blocks, mapping types
//! dnnfusion report model.onnx --json                              # the fusion report line
//! dnnfusion dot model.onnx | dot -Tsvg > blocks.svg                # the block graph
//! ```
//!
//! Every command imports the file (`dnnfusion_onnx::import`); all but `import` then
//! compile the text as `dnn!` would and print from the compiled model. Errors are
//! printed in plain words and the exit code is 1 (2 for a usage mistake).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dnnfusion_compiler::report::FusionReport;
use dnnfusion_onnx::{ImportOptions, Imported};

#[derive(Parser)]
#[command(
    name = "dnnfusion",
    version,
    about = "Import ONNX models into dnnfusion and see how they fuse"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What the file and the imported model are called.
#[derive(clap::Args)]
struct Source {
    /// The .onnx file.
    file: PathBuf,
    /// A size for a dynamic dimension, by its name in the file (repeatable): `--pin batch=1`.
    #[arg(long = "pin", value_name = "NAME=SIZE", value_parser = parse_pin)]
    pins: Vec<(String, usize)>,
    /// The model's type name (default: from the file name, `resnet18.onnx` -> `Resnet18`).
    #[arg(long)]
    name: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Prints the equivalent `dnn!` declaration (repeated layers as blocks).
    Import {
        #[command(flatten)]
        source: Source,
        /// Every statement in the model: no blocks for repeated layers.
        #[arg(long)]
        flat: bool,
    },
    /// Prints the fused blocks with their mapping types.
    Explain {
        #[command(flatten)]
        source: Source,
    },
    /// Prints the fusion report (a table, or one JSON object with --json).
    Report {
        #[command(flatten)]
        source: Source,
        /// One JSON object on one line (the keys of `FUSION_REPORT.write_json`).
        #[arg(long)]
        json: bool,
    },
    /// Prints the block graph for Graphviz (`| dot -Tsvg`).
    Dot {
        #[command(flatten)]
        source: Source,
    },
}

fn parse_pin(s: &str) -> Result<(String, usize), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not NAME=SIZE (for example batch=1)"))?;
    let size: usize = value
        .trim()
        .parse()
        .map_err(|_| format!("`{value}` is not a size (a positive integer)"))?;
    if size == 0 {
        return Err("a pinned size must be at least 1".to_string());
    }
    Ok((name.trim().to_string(), size))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<String, String> {
    match command {
        Command::Import { source, flat } => {
            let imported = import(&source)?;
            let dsl = if flat {
                imported.dsl.clone()
            } else {
                dnnfusion_onnx::blocks::with_blocks(&imported.dsl)
            };
            let blocks = dsl.lines().filter(|l| l.starts_with("block ")).count();
            eprintln!(
                "imported {}: {} nodes ({} evaluated at import), opset {}, {} parameters, {blocks} blocks for repeated layers",
                source.file.display(),
                imported.nodes,
                imported.folded,
                imported.opset,
                imported.params.len()
            );
            Ok(format!("dnnfusion::dnn! {{\n{}}}\n", indent(&dsl)))
        }
        Command::Explain { source } => Ok(explain(&compile(&source)?)),
        Command::Report { source, json } => {
            let report = compile(&source)?;
            Ok(if json {
                json_line(&report)
            } else {
                table(&report)
            })
        }
        Command::Dot { source } => Ok(dot(&compile(&source)?)),
    }
}

fn import(source: &Source) -> Result<Imported, String> {
    let bytes = std::fs::read(&source.file)
        .map_err(|e| format!("cannot read {}: {e}", source.file.display()))?;
    let options = ImportOptions {
        name: source
            .name
            .clone()
            .unwrap_or_else(|| type_name(&source.file)),
        public: true,
        pins: source.pins.clone(),
    };
    dnnfusion_onnx::import(&bytes, &options).map_err(|e| format!("{}: {e}", source.file.display()))
}

/// Imports and compiles; returns the fusion report.
fn compile(source: &Source) -> Result<FusionReport, String> {
    let imported = import(source)?;
    let tokens: proc_macro2::TokenStream = imported
        .dsl
        .parse()
        .map_err(|e| format!("internal error: the imported text does not tokenize: {e}"))?;
    let models = dnnfusion_compiler::compile(tokens).map_err(|e| {
        let messages: Vec<String> = e.into_iter().map(|m| m.to_string()).collect();
        format!(
            "the imported model does not compile: {}",
            messages.join("; ")
        )
    })?;
    models
        .into_iter()
        .next()
        .map(|m| m.report)
        .ok_or_else(|| "internal error: no model compiled".to_string())
}

/// `resnet18.onnx` -> `Resnet18`, `bert_tiny.onnx` -> `BertTiny`.
fn type_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let mut out = String::new();
    let mut upper = true;
    for c in stem.chars() {
        if c.is_ascii_alphanumeric() {
            if upper {
                out.push(c.to_ascii_uppercase());
            } else {
                out.push(c);
            }
            upper = false;
        } else {
            upper = true;
        }
    }
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "Model");
    }
    out
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("    {l}\n")
            }
        })
        .collect()
}

fn ops_per_run(r: &FusionReport) -> usize {
    r.ops_after_rewrite.saturating_sub(r.ops_at_load)
}

fn fusion_rate(r: &FusionReport) -> f64 {
    ops_per_run(r) as f64 / r.blocks.max(1) as f64
}

fn explain(r: &FusionReport) -> String {
    let mut out = format!(
        "{}: {} ops, {} after rewriting ({} of them run at load time), in {} blocks (fusion rate {:.2})\n",
        r.model,
        r.ops,
        r.ops_after_rewrite,
        r.ops_at_load,
        r.blocks,
        fusion_rate(r)
    );
    if !r.rewrites.is_empty() {
        out.push_str(&format!("  rewrites: {}\n", r.rewrites.join(", ")));
    }
    for (i, b) in r.block_list.iter().enumerate() {
        out.push_str(&format!("  blk{i:02}  {:<13} {}\n", b.mapping, b.ops));
    }
    out
}

fn table(r: &FusionReport) -> String {
    format!(
        "model {}\nops {}\nops after rewriting {}\nops at load {}\nblocks {}\nfusion rate {:.2}\nintermediate bytes before fusion {}\nintermediate bytes after fusion {}\narena bytes {}\n",
        r.model,
        r.ops,
        r.ops_after_rewrite,
        r.ops_at_load,
        r.blocks,
        fusion_rate(r),
        r.irs_bytes_before,
        r.irs_bytes_after,
        r.arena_bytes
    )
}

/// The same keys and order as the runtime's `FusionReport::write_json`.
fn json_line(r: &FusionReport) -> String {
    let blocks: Vec<String> = r
        .block_list
        .iter()
        .map(|b| {
            let inputs: Vec<String> = b.inputs.iter().map(|i| i.to_string()).collect();
            format!(
                "{{\"ops\":\"{}\",\"mapping\":\"{}\",\"inputs\":[{}]}}",
                b.ops,
                b.mapping,
                inputs.join(",")
            )
        })
        .collect();
    let rewrites: Vec<String> = r.rewrites.iter().map(|n| format!("\"{n}\"")).collect();
    format!(
        "{{\"model\":\"{}\",\"ops\":{},\"ops_after_rewrite\":{},\"ops_at_load\":{},\"flops_before\":{},\"flops_after\":{},\"blocks\":{},\"fusion_rate\":{:.2},\"fusion\":{},\"irs_bytes_before\":{},\"irs_bytes_after\":{},\"arena_bytes\":{},\"block_ops\":[{}],\"rewrites\":[{}]}}\n",
        r.model,
        r.ops,
        r.ops_after_rewrite,
        r.ops_at_load,
        r.flops_before,
        r.flops_after,
        r.blocks,
        fusion_rate(r),
        r.fusion,
        r.irs_bytes_before,
        r.irs_bytes_after,
        r.arena_bytes,
        blocks.join(","),
        rewrites.join(",")
    )
}

fn dot(r: &FusionReport) -> String {
    let colour = |m: &str| match m {
        "one-to-one" => "palegreen",
        "one-to-many" => "lightskyblue",
        "many-to-many" => "salmon",
        "reorganize" => "khaki",
        _ => "plum",
    };
    let mut out = format!(
        "digraph {} {{\n  rankdir=TB; node [shape=box, style=filled, fontname=\"monospace\"];\n",
        r.model
    );
    for (i, b) in r.block_list.iter().enumerate() {
        out.push_str(&format!(
            "  b{i} [label=\"blk{i:02}\\n{}\\n({})\", fillcolor={}];\n",
            b.ops.replace('+', "\\n"),
            b.mapping,
            colour(b.mapping)
        ));
        for from in &b.inputs {
            out.push_str(&format!("  b{from} -> b{i};\n"));
        }
    }
    out.push_str("}\n");
    out
}

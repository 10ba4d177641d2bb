//! Prints the fusion report of every model in the repo.
//!
//! `cargo run --release -p dnnfusion-models --example fusion_report` prints a table;
//! `-- --json` prints one JSON object per line (keys: model, ops, ops_after_rewrite,
//! ops_at_load, flops_before, flops_after, blocks, fusion_rate, irs_bytes_before, irs_bytes_after, arena_bytes, block_ops, rewrites);
//! `-- --explain <model>` lists the blocks of one model with their mapping types, and
//! `-- --dot <model>` prints them as Graphviz (blocks coloured by mapping type).
//! `--fast-math` first (`-- --fast-math --json`) reports the models compiled with
//! `#![rewrite(fast_math)]`.

use dnnfusion::runtime::FusionReport;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let reports = if args.first().map(String::as_str) == Some("--fast-math") {
        args.remove(0);
        let fast = dnnfusion_models::fast_math_reports();
        let unfused = dnnfusion_models::fusion_reports().into_iter().map(|r| r.1);
        fast.into_iter().zip(unfused).collect()
    } else {
        dnnfusion_models::fusion_reports()
    };
    let find = |name: &str| {
        reports
            .iter()
            .map(|r| &r.0)
            .find(|r| r.model.eq_ignore_ascii_case(name) || snake(r.model) == name)
    };
    match args.first().map(String::as_str) {
        Some("--json") => {
            for (fused, _) in &reports {
                let mut line = String::new();
                fused
                    .write_json(&mut line)
                    .expect("writing to a String cannot fail");
                println!("{line}");
            }
        }
        Some("--explain") | Some("--dot") => {
            let Some(name) = args.get(1) else {
                eprintln!("usage: fusion_report {} <model>", args[0]);
                std::process::exit(2);
            };
            let Some(report) = find(name) else {
                let names: Vec<String> = reports.iter().map(|r| snake(r.0.model)).collect();
                eprintln!(
                    "unknown model `{name}`; the models are: {}",
                    names.join(", ")
                );
                std::process::exit(2);
            };
            if args[0] == "--dot" {
                dot(report)
            } else {
                explain(report)
            }
        }
        Some(other) => {
            eprintln!("unknown option `{other}`; use --json, --explain <model> or --dot <model>");
            std::process::exit(2);
        }
        None => table(&reports),
    }
}

/// `BertTiny` -> `bert_tiny`
fn snake(name: &str) -> String {
    let mut out = String::new();
    let mut prev: Option<char> = None;
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            if prev.is_some_and(|p| !p.is_ascii_uppercase()) {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
        prev = Some(c);
    }
    out.replace("le_net", "lenet").replace("u_net", "unet")
}

fn table(reports: &[(FusionReport, FusionReport)]) {
    println!(
        "{:<12} {:>5} {:>9} {:>7} {:>7} {:>12} {:>14} {:>14} {:>12}",
        "model",
        "ops",
        "rewritten",
        "at load",
        "blocks",
        "fusion rate",
        "IRS before",
        "IRS after",
        "arena"
    );
    for (r, _) in reports {
        println!(
            "{:<12} {:>5} {:>9} {:>7} {:>7} {:>12.2} {:>12} B {:>12} B {:>10} B",
            snake(r.model),
            r.ops,
            r.ops_after_rewrite,
            r.ops_at_load,
            r.blocks,
            r.fusion_rate(),
            r.irs_bytes_before,
            r.irs_bytes_after,
            r.arena_bytes
        );
    }
}

fn explain(r: &FusionReport) {
    println!(
        "{}: {} ops, {} after rewriting ({} of them run at load time), in {} blocks (fusion rate {:.2})",
        snake(r.model),
        r.ops,
        r.ops_after_rewrite,
        r.ops_at_load,
        r.blocks,
        r.fusion_rate()
    );
    if !r.rewrites.is_empty() {
        println!("  rewrites: {}", r.rewrites.join(", "));
    }
    for (i, b) in r.block_list.iter().enumerate() {
        println!("  blk{i:02}  {:<13} {}", b.mapping, b.ops);
    }
}

fn dot(r: &FusionReport) {
    let colour = |m: &str| match m {
        "one-to-one" => "palegreen",
        "one-to-many" => "lightskyblue",
        "many-to-many" => "salmon",
        "reorganize" => "khaki",
        _ => "plum",
    };
    println!("digraph {} {{", snake(r.model));
    println!("  rankdir=TB; node [shape=box, style=filled, fontname=\"monospace\"];");
    for (i, b) in r.block_list.iter().enumerate() {
        println!(
            "  b{i} [label=\"blk{i:02}\\n{}\\n({})\", fillcolor={}];",
            b.ops.replace('+', "\\n"),
            b.mapping,
            colour(b.mapping)
        );
        for from in b.inputs {
            println!("  b{from} -> b{i};");
        }
    }
    println!("}}");
}

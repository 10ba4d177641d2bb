//! Prints the Rust code `dnn!` generates for a declaration.
//!
//! `cargo run -p dnnfusion-compiler --example expand -- model.dnn | rustfmt --edition 2021`
//! where `model.dnn` holds what you would write inside `dnn! { ... }` (no file: stdin).
//!
//! `--bert N` expands a BERT-base-width encoder of `N` layers (`bert_stack.dnn`) instead,
//! and `--time` prints how long the expansion took (to stderr) instead of the code:
//!
//! ```sh
//! cargo run -p dnnfusion-compiler --example expand -- --bert 96 --time
//! ```

use std::io::Read;

/// The BERT stack of `bert_stack.dnn` with `layers` layers.
fn bert_source(layers: usize) -> String {
    include_str!("bert_stack.dnn").replace("LAYERS", &layers.to_string())
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let time = args.iter().any(|a| a == "--time");
    args.retain(|a| a != "--time");
    let bert = match args.iter().position(|a| a == "--bert") {
        Some(k) => {
            let layers = args.get(k + 1).and_then(|n| n.parse::<usize>().ok());
            let Some(layers) = layers else {
                eprintln!("--bert takes a number of layers");
                std::process::exit(2)
            };
            args.drain(k..k + 2);
            Some(layers)
        }
        None => None,
    };
    let source = match (bert, args.first()) {
        (Some(layers), _) => bert_source(layers),
        (None, Some(path)) => std::fs::read_to_string(path).unwrap_or_else(|e| {
            eprintln!("cannot read {path}: {e}");
            std::process::exit(2)
        }),
        (None, None) => {
            let mut s = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut s) {
                eprintln!("cannot read stdin: {e}");
                std::process::exit(2)
            }
            s
        }
    };
    let tokens: proc_macro2::TokenStream = match source.parse() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("not Rust tokens: {e}");
            std::process::exit(1)
        }
    };
    let start = std::time::Instant::now();
    match dnnfusion_compiler::compile(tokens) {
        Ok(models) if time => {
            let elapsed = start.elapsed().as_secs_f64();
            let ops: usize = models.iter().map(|m| m.model.graph.nodes.len()).sum();
            let bytes: usize = models.iter().map(|m| m.tokens.to_string().len()).sum();
            eprintln!(
                "expanded in {elapsed:.3} s ({ops} ops after rewriting, {bytes} bytes of code)"
            );
        }
        Ok(models) => {
            for m in models {
                println!("{}", m.tokens);
            }
        }
        Err(errors) => {
            for e in errors {
                let start = e.span().start();
                eprintln!("error at {}:{}: {e}", start.line, start.column + 1);
            }
            std::process::exit(1)
        }
    }
}

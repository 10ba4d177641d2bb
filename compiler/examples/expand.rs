//! Prints the Rust code `dnn!` generates for a declaration.
//!
//! `cargo run -p dnnfusion-compiler --example expand -- model.dnn | rustfmt --edition 2021`
//! where `model.dnn` holds what you would write inside `dnn! { ... }` (no file: stdin).

use std::io::Read;

fn main() {
    let source = match std::env::args().nth(1) {
        Some(path) => std::fs::read_to_string(&path).unwrap_or_else(|e| {
            eprintln!("cannot read {path}: {e}");
            std::process::exit(2)
        }),
        None => {
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
    match dnnfusion_compiler::compile(tokens) {
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

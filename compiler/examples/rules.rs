//! Lists the rewrite rules of the compiler (`tables::RULES`).
//!
//! `cargo run --release -p dnnfusion-compiler --example rules` prints a table; `-- --json`
//! prints one JSON object per line with `name`, `family` (associative, distributive,
//! commutative, folding, identity, strength, cse), `exact` (false: runs only with
//! `#![rewrite(fast_math)]`), `test` (the test that covers it, in
//! `compiler/tests/rewrite_rules.rs`, or null) and `doc`.

use dnnfusion_compiler::tables::{Family, RULES};

/// The rule tests, to name the test of each rule only when it exists.
const TESTS: &str = include_str!("../tests/rewrite_rules.rs");

fn test_of(name: &str) -> Option<String> {
    TESTS
        .contains(&format!("fn {name}()"))
        .then(|| format!("compiler/tests/rewrite_rules.rs::{name}"))
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--json") => {
            for r in RULES {
                let test = test_of(r.name).map_or_else(|| "null".to_string(), |t| json_string(&t));
                println!(
                    "{{\"name\":{},\"family\":\"{}\",\"exact\":{},\"test\":{},\"doc\":{}}}",
                    json_string(r.name),
                    r.family.name(),
                    r.exact,
                    test,
                    json_string(r.doc)
                );
            }
        }
        Some(other) => {
            eprintln!("unknown option `{other}`; use --json or nothing");
            std::process::exit(2);
        }
        None => {
            println!("{:<42} {:<13} {:<6} rewrites", "rule", "family", "exact");
            for r in RULES {
                let mark = if test_of(r.name).is_some() {
                    ""
                } else {
                    "  (no test!)"
                };
                println!(
                    "{:<42} {:<13} {:<6} {}{mark}",
                    r.name,
                    r.family.name(),
                    if r.exact { "yes" } else { "no" },
                    r.doc
                );
            }
            println!();
            let counts: Vec<String> = Family::ALL
                .iter()
                .map(|f| {
                    format!(
                        "{} {}",
                        RULES.iter().filter(|r| r.family == *f).count(),
                        f.name()
                    )
                })
                .collect();
            let exact = RULES.iter().filter(|r| r.exact).count();
            println!(
                "{} rules: {}; {exact} exact, {} value-changing (fast_math)",
                RULES.len(),
                counts.join(", "),
                RULES.len() - exact
            );
        }
    }
}

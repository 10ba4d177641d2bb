//! Generated loop nests carry no bounds checks (issue 13, item 6). Block parameters are
//! arrays of exact length and every index is folded over the loop ranges, so the
//! compiler can prove each read in bounds; this test checks that it does. It builds the
//! `tests/asm-probe` crate (one `dnn!` model whose block is a loop nest of 24 elements: a
//! broadcast, a scalar and a transpose read as index arithmetic) in release with
//! `--emit asm`, then reads the assembly: the model's `run` (with `run_observed`, its
//! body), its block inlined, must contain the block's arithmetic and no call to
//! `panic_bounds_check`, while the crate's control function (an index the compiler cannot
//! bound) must contain one, which shows the search finds what it looks for.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The functions of an assembly file: (symbol, body lines), from each
/// `.type NAME,@function` label to the next `.Lfunc_end`.
fn functions(asm: &str) -> Vec<(String, Vec<&str>)> {
    let mut names = std::collections::HashSet::new();
    for line in asm.lines() {
        if let Some(rest) = line.trim().strip_prefix(".type") {
            if let Some(name) = rest.trim().strip_suffix(",@function") {
                names.insert(name.trim().to_string());
            }
        }
    }
    let mut out: Vec<(String, Vec<&str>)> = Vec::new();
    let mut current: Option<(String, Vec<&str>)> = None;
    for line in asm.lines() {
        if let Some(label) = line.strip_suffix(':') {
            if names.contains(label) {
                current = Some((label.to_string(), Vec::new()));
                continue;
            }
        }
        if line.starts_with(".Lfunc_end") {
            out.extend(current.take());
            continue;
        }
        if let Some((_, body)) = current.as_mut() {
            body.push(line);
        }
    }
    out
}

/// Builds the probe crate and returns its assembly.
fn probe_assembly() -> String {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("asm-probe/Cargo.toml");
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("asm-probe");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["rustc", "--quiet", "--release", "--lib", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .args(["--", "--emit", "asm"])
        // the probe's build is its own: not the outer build's flags or target
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building {} failed", manifest.display());
    let deps = target.join("release/deps");
    let newest = std::fs::read_dir(&deps)
        .expect("the probe's deps directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "s")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("dnnfusion_asm_probe"))
        })
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .expect("the probe's assembly file");
    std::fs::read_to_string(newest).expect("readable assembly")
}

#[test]
fn a_generated_loop_nest_has_no_bounds_check() {
    let asm = probe_assembly();
    let functions = functions(&asm);
    let body = |name: &str| -> Vec<&str> {
        let found: Vec<&str> = functions
            .iter()
            .filter(|(symbol, _)| symbol.contains(name))
            .flat_map(|(_, body)| body.iter().copied())
            .collect();
        assert!(
            !found.is_empty(),
            "no function `{name}` in the probe's assembly"
        );
        found
    };
    let calls_bounds_panic =
        |lines: &[&str]| lines.iter().any(|l| l.contains("panic_bounds_check"));
    // the control shows the search works
    assert!(
        calls_bounds_panic(&body("control_read")),
        "the control keeps its bounds check"
    );
    // the model's run, with the body it calls (`run_observed`, inlined or not) and the
    // block that calls (inlined, or out of line as `blk00_...`)
    let mut run = body("5Probe3run");
    for (symbol, lines) in &functions {
        if symbol.contains("blk00") || symbol.contains("5Probe12run_observed") {
            run.extend(lines.iter().copied());
        }
    }
    let arithmetic = run
        .iter()
        .filter(|l| l.contains("mul") || l.contains("max"))
        .count();
    assert!(
        arithmetic >= 2,
        "the probe's run does not hold the block's loop:\n{}",
        run.join("\n")
    );
    let checks: Vec<&&str> = run
        .iter()
        .filter(|l| l.contains("panic_bounds_check"))
        .collect();
    assert!(
        checks.is_empty(),
        "the generated loop nest keeps bounds checks: {checks:?}"
    );
}

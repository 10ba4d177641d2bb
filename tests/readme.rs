//! The README's op lists cannot drift: the "Supported ops" table names exactly the ops of
//! `ops::ops()`, and the ONNX table is what `onnx::readme_table()` generates from
//! `onnx::ONNX_OPS`, and the op reference (README and `src/op_reference.md`, which the
//! rustdoc of `dnn!` includes) is what `ops::reference_markdown()` generates from
//! `ops::ops()` (`DNNFUSION_BLESS=1` rewrites both).

use std::collections::BTreeSet;

const START: &str = "<!-- onnx-ops:start";
const END: &str = "<!-- onnx-ops:end -->";
/// The repository's README (the manifest of these tests is `tests/Cargo.toml`).
const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");

fn readme() -> String {
    std::fs::read_to_string(README).unwrap()
}

#[test]
fn supported_ops_table_lists_exactly_the_dsl_ops() {
    let text = readme();
    let section = text
        .split("## Supported ops")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    let mut listed = BTreeSet::new();
    for row in section.lines().filter(|l| l.starts_with('|')) {
        for (i, span) in row.split('`').enumerate() {
            if i % 2 == 1 {
                listed.extend(span.split_whitespace().map(str::to_string));
            }
        }
    }
    let ops: BTreeSet<String> = dnnfusion_compiler::ops::ops()
        .map(|o| o.name.to_string())
        .collect();
    let missing: Vec<&String> = ops.difference(&listed).collect();
    let unknown: Vec<&String> = listed.difference(&ops).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "README \"Supported ops\": missing {missing:?}, not ops {unknown:?}"
    );
}

#[test]
fn onnx_table_is_generated_from_the_mapping() {
    check_generated(
        README,
        START,
        END,
        &dnnfusion_onnx::readme_table(),
        "the ONNX table differs from onnx::ONNX_OPS",
    );
}

/// Bless runs rewrite the README from more than one test: one at a time.
static REWRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Replaces what lies between the line holding `start` and `end` in `path` by `want`, or
/// fails saying `what`, unless `DNNFUSION_BLESS` is set (then it rewrites the file).
fn check_generated(path: &str, start: &str, end: &str, want: &str, what: &str) {
    let _one_at_a_time = REWRITING.lock().unwrap_or_else(|e| e.into_inner());
    let text = std::fs::read_to_string(path).unwrap();
    let begin = text
        .find(start)
        .unwrap_or_else(|| panic!("{path} has no `{start}` marker"));
    let body_start = begin + text[begin..].find("-->\n").unwrap() + 4;
    let stop = text
        .find(end)
        .unwrap_or_else(|| panic!("{path} has no `{end}` marker"));
    if text[body_start..stop] != *want {
        if std::env::var_os("DNNFUSION_BLESS").is_some() {
            let updated = format!("{}{want}{}", &text[..body_start], &text[stop..]);
            std::fs::write(path, updated).unwrap();
        } else {
            panic!("{path}: {what}; rewrite it with\n  DNNFUSION_BLESS=1 cargo test -p dnnfusion-tests --test readme");
        }
    }
}

#[test]
fn op_reference_is_generated_from_the_op_definitions() {
    let want = dnnfusion_compiler::ops::reference_markdown();
    for file in ["README.md", "src/op_reference.md"] {
        let path = format!("{}/../{file}", env!("CARGO_MANIFEST_DIR"));
        check_generated(
            &path,
            "<!-- op-reference:start",
            "<!-- op-reference:end -->",
            &want,
            "the op reference differs from ops::ops()",
        );
    }
}

//! The `dnnfusion` command on the six peer ONNX files: `import` prints dnn! text, with
//! blocks for repeated layers (LeNet's, bert_tiny's and resnet18's are the ones
//! `tests/onnx/*_cli.rs` hold and tests/onnx_import.rs checks against PyTorch), `explain`,
//! `report --json` and `dot` print from the compiled model, and mistakes exit non-zero
//! with a plain message.

use std::process::Command;

const PEERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/tools/peers/onnx");

fn dnnfusion(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dnnfusion"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn import_prints_text_that_compiles() {
    for model in [
        "mlp",
        "lenet",
        "bert_tiny",
        "unet_small",
        "mobilenet_v2",
        "resnet18",
    ] {
        let file = format!("{PEERS}/{model}.onnx");
        let (code, out, err) = dnnfusion(&["import", &file]);
        assert_eq!(code, 0, "{model}: {err}");
        let inner = out
            .strip_prefix("dnnfusion::dnn! {\n")
            .and_then(|s| s.strip_suffix("}\n"))
            .unwrap_or_else(|| panic!("{model}: {out}"));
        let tokens: proc_macro2::TokenStream = inner.parse().unwrap();
        let models =
            dnnfusion_compiler::compile(tokens).unwrap_or_else(|e| panic!("{model}: {e}\n{out}"));
        assert_eq!(models.len(), 1);
    }
}

#[test]
fn the_committed_texts_are_what_import_prints() {
    // (file, --name, committed text): tests/onnx_import.rs compiles each and checks it
    // against PyTorch; bert_tiny's and resnet18's repeated layers are blocks
    for (model, name, committed) in [
        ("lenet", "LenetFromCli", "lenet_cli.rs"),
        ("bert_tiny", "BertTinyFromCli", "bert_tiny_cli.rs"),
        ("resnet18", "ResNet18FromCli", "resnet18_cli.rs"),
    ] {
        let file = format!("{PEERS}/{model}.onnx");
        let (code, out, err) = dnnfusion(&["import", &file, "--name", name]);
        assert_eq!(code, 0, "{err}");
        let path = format!("{}/../tests/onnx/{committed}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let body = text.split_once('\n').map_or("", |(_, rest)| rest);
        assert_eq!(
            body, out,
            "tests/onnx/{committed} is stale: regenerate it with the command on its first line"
        );
    }
}

#[test]
fn repeated_layers_become_blocks_and_flat_keeps_every_statement() {
    for (model, blocks) in [
        ("bert_tiny", 1),
        ("resnet18", 1),
        ("mobilenet_v2", 4),
        ("lenet", 0),
    ] {
        let file = format!("{PEERS}/{model}.onnx");
        let (code, out, err) = dnnfusion(&["import", &file]);
        assert_eq!(code, 0, "{err}");
        let found = out
            .lines()
            .filter(|l| l.trim_start().starts_with("block "))
            .count();
        assert_eq!(found, blocks, "{model}: {out}");
        assert!(
            err.contains(&format!("{blocks} blocks for repeated layers")),
            "{err}"
        );
        let (code, flat, _) = dnnfusion(&["import", &file, "--flat"]);
        assert_eq!(code, 0);
        assert!(!flat.contains("block "), "{model}: {flat}");
    }
}

#[test]
fn explain_report_and_dot_describe_the_fused_blocks() {
    let file = format!("{PEERS}/resnet18.onnx");
    let (code, out, err) = dnnfusion(&["explain", &file]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("Resnet18: 49 ops"), "{out}");
    assert!(out.contains("many-to-many"), "{out}");
    let (code, out, _) = dnnfusion(&["report", &file, "--json"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("{\"model\":\"Resnet18\",\"ops\":49,"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 1);
    let (code, out, _) = dnnfusion(&["dot", &file]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("digraph Resnet18 {") && out.contains("->"),
        "{out}"
    );
}

#[test]
fn mistakes_exit_non_zero_in_plain_words() {
    let (code, _, err) = dnnfusion(&["import", "nowhere.onnx"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: cannot read nowhere.onnx: "),
        "{err}"
    );
    let dynamic = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/onnx/dynamic_dim.onnx"
    );
    let (code, _, err) = dnnfusion(&["import", dynamic]);
    assert_eq!(code, 1);
    assert!(
        err.contains("input `x`: dimension 0 is dynamic (`batch`)"),
        "{err}"
    );
    let (code, out, err) = dnnfusion(&["import", dynamic, "--pin", "batch=2"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("(x: [2, 4]) -> [2, 4]"), "{out}");
    let (code, _, err) = dnnfusion(&["import", dynamic, "--pin", "batch"]);
    assert_eq!(code, 2, "{err}");
}

//! The `dnnfusion` command on the six peer ONNX files: `import` prints dnn! text, with
//! blocks for repeated layers (LeNet's, bert_tiny's and resnet18's are the ones
//! `tests/onnx/*_cli.rs` hold and tests/onnx_import.rs checks against PyTorch; all six
//! run in the reference interpreter against PyTorch here), `explain`,
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

/// Runs the text `dnnfusion import` prints for `model` in the reference interpreter, on
/// the weights `from_onnx` would read from the same file, and returns the max abs error
/// against PyTorch's output after checking it against the tolerance
/// `1e-5 * max(1, max |expected|)` (as tests/onnx_import.rs).
fn interpret_imported_text(model: &str) -> f32 {
    use dnnfusion::runtime::{onnx_weights, ParamSpec};
    let file = format!("{PEERS}/{model}.onnx");
    let (code, out, err) = dnnfusion(&["import", &file]);
    assert_eq!(code, 0, "{model}: {err}");
    let inner = out
        .strip_prefix("dnnfusion::dnn! {\n")
        .and_then(|s| s.strip_suffix("}\n"))
        .unwrap();
    let models = dnnfusion_compiler::lower_str(inner).unwrap();
    let graph = &models[0].graph;
    let mut offset = 0;
    let specs: Vec<ParamSpec> = graph
        .params
        .iter()
        .map(|p| {
            let spec = ParamSpec {
                name: Box::leak(p.key.clone().into_boxed_str()),
                shape: Box::leak(p.shape.clone().into_boxed_slice()),
                offset,
            };
            offset += spec.len();
            spec
        })
        .collect();
    let mut buffer = vec![0.0f32; offset];
    onnx_weights::load_into(&std::fs::read(&file).unwrap(), &specs, &mut buffer).unwrap();
    let params: Vec<ndarray::ArrayD<f32>> = specs
        .iter()
        .map(|s| {
            let data = buffer[s.offset..s.offset + s.len()].to_vec();
            ndarray::ArrayD::from_shape_vec(s.shape.to_vec(), data).unwrap()
        })
        .collect();
    let reference = format!("{PEERS}/../../../reference/{model}");
    let read = |f: &str| {
        dnnfusion::npy::read_f32(&std::fs::read(format!("{reference}/{f}")).unwrap()).unwrap()
    };
    let input = read("input.npy");
    let expected = read("output.npy");
    let got = dnnfusion_compiler::interp::interpret(graph, &[input], &params)
        .unwrap()
        .remove(0);
    assert_eq!(got.shape(), expected.shape(), "{model}");
    let err = got
        .iter()
        .zip(expected.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let tol = 1e-5 * expected.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    println!("{model}: max |interpreted import text - torch| = {err:.3e} (tolerance {tol:.3e})");
    assert!(err <= tol, "{model}: {err:.3e} above {tol:.3e}");
    err
}

#[test]
fn the_imported_texts_of_the_six_models_match_pytorch_in_the_interpreter() {
    for model in [
        "mlp",
        "lenet",
        "bert_tiny",
        "unet_small",
        "mobilenet_v2",
        "resnet18",
    ] {
        interpret_imported_text(model);
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

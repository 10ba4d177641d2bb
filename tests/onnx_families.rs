//! Two models of the paper's families that no one here wrote as `dnn!` text, built as
//! ONNX by committed scripts (`models/families/efficientnet.py`, `gpt2.py`: onnx.helper,
//! seeded numpy weights, no torch) and compiled through `onnx(...)`:
//!
//! - an EfficientNet-B0-style CNN: SiLU, depthwise convolutions, squeeze-and-excitation
//!   (global average pool, 1x1 convs, sigmoid gate), batch norms, [1, 3, 64, 64] -> [1, 100];
//! - a GPT-2-style decoder: int64 ids [1, 32], token + position embeddings (positions from
//!   a Shape/Range subgraph), 2 pre-LN layers of 4 heads over hidden 64, causal mask (a
//!   float `Constant`), tanh GELU, logits through the tied token embedding -> [1, 32, 256].
//!
//! Their weights are loaded with `from_onnx` from the same files and the outputs compared
//! with ONNX Runtime 1.32.0's (`*.output.npy`, written by the scripts;
//! `bash models/families/setup.sh` regenerates everything).
//!
//! Tolerance: max |ours - ORT| <= 1e-5 * max(1, max |expected|), the bound of the
//! reference-model tests (fp32 on both sides, other summation orders and exp/tanh).

mod common;
use dnnfusion::{npy, Model, ModelExt};

mod imported {
    dnnfusion::dnn! {
        pub model EfficientNet = onnx("../models/families/onnx/efficientnet.onnx");
        pub model Gpt2 = onnx("../models/families/onnx/gpt2.onnx");
    }
}

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/families/onnx");

fn read(file: &str) -> Vec<u8> {
    let path = format!("{DIR}/{file}");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Loads the weights from the .onnx file, runs the seeded input, returns the max abs
/// error against ORT's output after checking it against the tolerance.
fn check<M: Model + ModelExt>(
    name: &str,
    load: fn(&[u8]) -> Result<M, dnnfusion::LoadError>,
) -> f32 {
    let model = load(&read(&format!("{name}.onnx"))).unwrap_or_else(|e| panic!("{name}: {e}"));
    let input = npy::read_f32(&read(&format!("{name}.input.npy"))).unwrap();
    let expected = npy::read_f32(&read(&format!("{name}.output.npy"))).unwrap();
    let got = model.infer_arrays(&[input.view()]).unwrap().remove(0);
    common::assert_matches_reference(&format!("{name} (imported ONNX vs ORT)"), &got, &expected)
}

#[test]
fn efficientnet_matches_onnx_runtime() {
    check("efficientnet", imported::EfficientNet::from_onnx);
}

#[test]
fn gpt2_matches_onnx_runtime() {
    check("gpt2", imported::Gpt2::from_onnx);
}

#[test]
fn gpt2_ties_its_embeddings_and_reads_its_mask_from_the_constant() {
    let names: Vec<&str> = imported::Gpt2::PARAMS.iter().map(|p| p.name).collect();
    assert_eq!(
        names.iter().filter(|n| **n == "wte").count(),
        1,
        "one token embedding for the lookup and the logits: {names:?}"
    );
    assert!(names.contains(&"causal_mask"), "{names:?}");
}

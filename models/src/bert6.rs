//! A 6-layer BERT encoder (MiniLM-sized): hidden 384, 12 heads, FFN 1536, sequence 128,
//! batch 1, post-LN, erf GELU, LayerNorm eps 1e-12, on embeddings.
//!
//! Its reference data are generated, not shipped (42 MB of weights): `models/bert6/gen.py`
//! writes seeded weights with PyTorch `state_dict` names (`layers.{i}.query.weight`, ...),
//! an input, the same network as ONNX (`bert6.onnx`, built with `onnx.helper`) and ONNX
//! Runtime's output on that input, into [`reference_dir`]. `models/bert6/setup.sh` makes a
//! venv with pinned numpy/onnx/onnxruntime and runs it (CI does so before the tests):
//!
//! ```sh
//! bash models/bert6/setup.sh                  # or: python3 models/bert6/gen.py models/bert6/data
//! cargo test -p dnnfusion-tests --test bert6
//! ```

use std::path::PathBuf;

declare_with_unfused! {
    /// A post-LN BERT encoder layer: self-attention with `heads` heads, residual and
    /// LayerNorm (`ln1`), a GELU feed-forward of width `ffn`, residual and LayerNorm (`ln2`).
    block bert_layer(x: [B, S, D], heads, ffn) {
        let query = linear(x, D);
        let key = linear(x, D);
        let value = linear(x, D);
        let q = transpose(reshape(query, [B, S, heads, D / heads]), 1, 2);
        let k = transpose(reshape(key, [B, S, heads, D / heads]), 1, 2);
        let v = transpose(reshape(value, [B, S, heads, D / heads]), 1, 2);
        let scores = matmul(q, transpose(k, -1, -2)) * (1.0 / sqrt(D / heads));
        let probs = softmax(scores, axis = -1);
        let ctx = reshape(transpose(matmul(probs, v), 1, 2), [B, S, D]);
        let attn_out = linear(ctx, D);
        let ln1 = layer_norm(x + attn_out, eps = 1e-12);
        let ffn_in = linear(ln1, ffn);
        let ffn_out = linear(gelu(ffn_in), D);
        layer_norm(ln1 + ffn_out, eps = 1e-12, key = "ln2")
    }

    /// 6-layer BERT encoder, hidden 384, 12 heads, FFN 1536, on [1, 128, 384] embeddings.
    pub model Bert6(input: [1, 128, 384]) -> [1, 128, 384] {
        let mut h = input;
        for i in 0..6 {
            #[key = "layers.{i}"]
            h = bert_layer(h, 12, 1536);
        }
        h
    }
}

/// Where `models/bert6/gen.py` writes its output and the tests and bench read it:
/// `$DNNFUSION_BERT6_DIR` when set, else `models/bert6/data/` in this repository (ignored
/// by git; found from this crate's manifest directory, so `CARGO_TARGET_DIR` and
/// `cargo clean` do not move or remove it). It holds `weights.safetensors`, `bert6.onnx`,
/// `input.npy`, `output.npy` (ONNX Runtime), `output_fp64.npy` and `meta.json`.
pub fn reference_dir() -> PathBuf {
    match std::env::var_os("DNNFUSION_BERT6_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bert6/data"),
    }
}

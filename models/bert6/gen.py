#!/usr/bin/env python3
"""Reference data of `dnnfusion_models::bert6::Bert6` and its ONNX twin.

A 6-layer post-LN BERT encoder on embeddings: hidden 384, 12 heads, FFN 1536, sequence
128, batch 1, GELU with erf, LayerNorm eps 1e-12. Weights are seeded (untrained).

    python3 models/bert6/gen.py OUT_DIR

writes into OUT_DIR:

- weights.safetensors  PyTorch `state_dict` names of the DSL declaration
                       (`layers.{i}.query.weight` [384, 384] as nn.Linear stores it,
                       [out, in], then `.bias`; `ln1`/`ln2` weight and bias), written here
                       by hand: 8-byte little-endian header length, JSON header, raw data
- bert6.onnx           the same computation built with `onnx.helper` (opset 17: MatMul,
                       Add, Mul, Div, Reshape, Transpose, Softmax, Erf, LayerNormalization),
                       the same weights as initializers (linear weights transposed to
                       [in, out] for MatMul)
- input.npy            float32 [1, 128, 384], seeded standard normal
- output.npy           ONNX Runtime's output on input.npy (CPUExecutionProvider, 1 thread)
- output_fp64.npy      the same network in float64 numpy, for judging both fp32 results
- meta.json            shapes, seeds, versions, max |output| and the ORT-vs-fp64 error

Needs numpy, onnx and onnxruntime (models/bert6/setup.sh installs pinned versions).
Deterministic: same versions, same bytes.
"""

import json
import math
import os
import struct
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

LAYERS = 6
HIDDEN = 384
HEADS = 12
HEAD_DIM = HIDDEN // HEADS
FFN = 1536
SEQ = 128
BATCH = 1
EPS = 1e-12
OPSET = 17
WEIGHT_SEED = 0
INPUT_SEED = 1

# The linear layers of one encoder layer in the DSL's order: name, out, in.
LINEARS = [
    ("query", HIDDEN, HIDDEN),
    ("key", HIDDEN, HIDDEN),
    ("value", HIDDEN, HIDDEN),
    ("attn_out", HIDDEN, HIDDEN),
    ("ffn_in", FFN, HIDDEN),
    ("ffn_out", HIDDEN, FFN),
]


def make_weights():
    """Seeded weights in a fixed order: linear weight and bias N(0, 0.02^2), LayerNorm
    weight 1 + 0.1 N(0, 1), bias 0.1 N(0, 1); all float32."""
    rng = np.random.default_rng(WEIGHT_SEED)
    weights = {}

    def normal(shape, scale):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    for i in range(LAYERS):
        p = f"layers.{i}."
        for name, out_dim, in_dim in LINEARS:
            weights[p + name + ".weight"] = normal((out_dim, in_dim), 0.02)
            weights[p + name + ".bias"] = normal((out_dim,), 0.02)
        for ln in ("ln1", "ln2"):
            weights[p + ln + ".weight"] = (1.0 + normal((HIDDEN,), 0.1)).astype(np.float32)
            weights[p + ln + ".bias"] = normal((HIDDEN,), 0.1)
    return weights


def write_safetensors(path, tensors):
    """safetensors: u64 LE header length, JSON header, then the raw little-endian data,
    tensors in sorted name order; the header is padded with spaces to 8 bytes."""
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    names = sorted(tensors)
    for name in names:
        t = tensors[name]
        assert t.dtype == np.float32
        header[name] = {
            "dtype": "F32",
            "shape": list(t.shape),
            "data_offsets": [offset, offset + t.nbytes],
        }
        offset += t.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name in names:
            f.write(np.ascontiguousarray(tensors[name], dtype="<f4").tobytes())


def build_onnx(weights):
    """The encoder as an ONNX graph, node for node what the DSL declares."""
    nodes = []
    inits = []

    def init(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(op, inputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    shape_heads = init("shape_heads", np.array([BATCH, SEQ, HEADS, HEAD_DIM], np.int64))
    shape_hidden = init("shape_hidden", np.array([BATCH, SEQ, HIDDEN], np.int64))
    # The DSL multiplies the scores by 1 / sqrt(head_dim), rounded to f32 once.
    scale = init("scale", np.array(1.0 / math.sqrt(HEAD_DIM), np.float32))
    sqrt2 = init("sqrt2", np.array(math.sqrt(2.0), np.float32))
    one = init("one", np.array(1.0, np.float32))
    half = init("half", np.array(0.5, np.float32))

    def linear(x, key):
        w = init(key + ".weight_t", weights[key + ".weight"].T.copy())
        b = init(key + ".bias", weights[key + ".bias"])
        return node("Add", [node("MatMul", [x, w], key + ".matmul"), b], key + ".out")

    def layer_norm(x, key):
        w = init(key + ".weight", weights[key + ".weight"])
        b = init(key + ".bias", weights[key + ".bias"])
        return node("LayerNormalization", [x, w, b], key + ".out", axis=-1, epsilon=EPS)

    h = "input"
    for i in range(LAYERS):
        p = f"layers.{i}."

        def heads(x, perm, tag):
            r = node("Reshape", [x, shape_heads], p + tag + ".heads")
            return node("Transpose", [r], p + tag + ".t", perm=perm)

        q = heads(linear(h, p + "query"), [0, 2, 1, 3], "q")
        k_t = heads(linear(h, p + "key"), [0, 2, 3, 1], "k")
        v = heads(linear(h, p + "value"), [0, 2, 1, 3], "v")
        scores = node("MatMul", [q, k_t], p + "scores")
        scaled = node("Mul", [scores, scale], p + "scores_scaled")
        probs = node("Softmax", [scaled], p + "probs", axis=-1)
        ctx = node("MatMul", [probs, v], p + "ctx")
        ctx = node("Transpose", [ctx], p + "ctx.t", perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, shape_hidden], p + "ctx.merged")
        attn = linear(ctx, p + "attn_out")
        ln1 = layer_norm(node("Add", [h, attn], p + "residual1"), p + "ln1")
        f = linear(ln1, p + "ffn_in")
        # GELU(x) = 0.5 x (1 + erf(x / sqrt 2)), the pattern ORT fuses into its Gelu.
        e = node("Erf", [node("Div", [f, sqrt2], p + "gelu.div")], p + "gelu.erf")
        g = node("Mul", [f, node("Add", [e, one], p + "gelu.add")], p + "gelu.mul")
        g = node("Mul", [g, half], p + "gelu")
        f = linear(g, p + "ffn_out")
        h = layer_norm(node("Add", [ln1, f], p + "residual2"), p + "ln2")
    nodes.append(helper.make_node("Identity", [h], ["output"], name="output"))

    graph = helper.make_graph(
        nodes,
        "bert6",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [BATCH, SEQ, HIDDEN])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [BATCH, SEQ, HIDDEN])],
        inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="dnnfusion models/bert6/gen.py",
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def reference_fp64(weights, x):
    """The same network in float64 numpy."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    h = x.astype(np.float64)

    def linear(x, key):
        return x @ w[key + ".weight"].T + w[key + ".bias"]

    def layer_norm(x, key):
        mean = x.mean(axis=-1, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        return (x - mean) / np.sqrt(var + EPS) * w[key + ".weight"] + w[key + ".bias"]

    erf = np.vectorize(math.erf)
    for i in range(LAYERS):
        p = f"layers.{i}."

        def heads(t):
            return t.reshape(BATCH, SEQ, HEADS, HEAD_DIM).transpose(0, 2, 1, 3)

        q, k, v = (heads(linear(h, p + n)) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(HEAD_DIM)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs = scores / scores.sum(axis=-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(BATCH, SEQ, HIDDEN)
        ln1 = layer_norm(h + linear(ctx, p + "attn_out"), p + "ln1")
        f = linear(ln1, p + "ffn_in")
        f = 0.5 * f * (1.0 + erf(f / math.sqrt(2.0)))
        h = layer_norm(ln1 + linear(f, p + "ffn_out"), p + "ln2")
    return h


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: python3 models/bert6/gen.py OUT_DIR")
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)

    weights = make_weights()
    write_safetensors(os.path.join(out, "weights.safetensors"), weights)

    model = build_onnx(weights)
    onnx_path = os.path.join(out, "bert6.onnx")
    onnx.save(model, onnx_path)

    x = np.random.default_rng(INPUT_SEED).standard_normal((BATCH, SEQ, HIDDEN)).astype(np.float32)
    np.save(os.path.join(out, "input.npy"), x)

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    (y,) = session.run(["output"], {"input": x})
    y = np.ascontiguousarray(y, dtype=np.float32)
    np.save(os.path.join(out, "output.npy"), y)

    exact = reference_fp64(weights, x)
    np.save(os.path.join(out, "output_fp64.npy"), exact)

    meta = {
        "model": "bert6",
        "description": "6-layer post-LN BERT encoder on embeddings: hidden 384, 12 heads, "
        "FFN 1536, seq 128, GELU(erf), LayerNorm eps 1e-12; seeded untrained weights",
        "input_name": "input",
        "input_shape": [BATCH, SEQ, HIDDEN],
        "output_name": "output",
        "output_shape": [BATCH, SEQ, HIDDEN],
        "dtype": "float32",
        "params": int(sum(t.size for t in weights.values())),
        # multiply-adds per inference: four projections and the FFN, plus Q K^T and P V
        "macs": BATCH * LAYERS * (
            SEQ * HIDDEN * HIDDEN * 4 + SEQ * HIDDEN * FFN * 2 + 2 * HEADS * SEQ * SEQ * HEAD_DIM
        ),
        "opset": OPSET,
        "seeds": {"weights": WEIGHT_SEED, "input": INPUT_SEED},
        "weight_init": "linear weight and bias 0.02 N(0,1); LayerNorm weight 1 + 0.1 N(0,1), "
        "bias 0.1 N(0,1); numpy default_rng, float32",
        "output_abs_max": float(np.abs(y).max()),
        "max_abs_err_ort_vs_fp64": float(np.abs(y.astype(np.float64) - exact).max()),
        "versions": {
            "numpy": np.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
        },
    }
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(
        f"bert6: wrote {out}: max |output| {meta['output_abs_max']:.4f}, "
        f"max |ORT - fp64| {meta['max_abs_err_ort_vs_fp64']:.3e}"
    )


if __name__ == "__main__":
    main()

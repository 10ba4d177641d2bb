#!/usr/bin/env python3
"""A GPT-2-style decoder as ONNX, built with onnx.helper (no torch).

int64 token ids [1, 32] -> Gather from the token embedding `wte` [256, 64] + Gather
from the position embedding `wpe` [32, 64] at positions Range(0, 32) (built from
Shape -> Gather -> Range -> Unsqueeze, as exporters write it) -> 2 pre-LN decoder
layers -> final LayerNorm -> logits = h @ wte^T (tied embeddings: the same initializer
feeds the Gather and the Transpose) [1, 32, 256].

A layer: LayerNorm -> one QKV projection (MatMul [64, 192] + bias) -> Split into q, k, v
-> 4 heads of 16 -> scores q k^T / 4 + causal mask (a float Constant [1, 1, 32, 32]:
0 on and below the diagonal, -1e9 above) -> Softmax -> context -> projection -> residual;
LayerNorm -> MatMul [64, 256] -> GELU, tanh form as GPT-2 writes it (0.5 x (1 + tanh(
sqrt(2/pi) (x + 0.044715 x^3)))) -> MatMul [256, 64] -> residual.

    python3 models/families/gpt2.py OUT_DIR

writes gpt2.onnx, gpt2.input.npy (the ids as float32, exact) and gpt2.output.npy (ONNX
Runtime's logits, CPU, one thread) into OUT_DIR. Weights and ids are seeded.
"""

import math
import sys

import numpy as np
from onnx import helper

from common import Graph, f32, i64, save

SEED = 20
INPUT_SEED = 21
OPSET = 17
VOCAB = 256
SEQ = 32
HIDDEN = 64
HEADS = 4
HEAD_DIM = HIDDEN // HEADS
LAYERS = 2
FFN = 4 * HIDDEN


def build():
    g = Graph(SEED)
    wte = g.weight("wte", (VOCAB, HIDDEN), 0.5)
    wpe = g.weight("wpe", (SEQ, HIDDEN), 0.1)

    # positions from the ids' shape, as torch.onnx writes `torch.arange(seq)`
    shape = g.node("Shape", ["ids"], "pos.shape")
    seq = g.node("Gather", [shape, g.init("pos.axis", np.array(1, np.int64))], "pos.seq", axis=0)
    zero = g.init("pos.start", np.array(0, np.int64))
    one = g.init("pos.step", np.array(1, np.int64))
    positions = g.node("Range", [zero, seq, one], "pos.range")
    positions = g.node("Unsqueeze", [positions, g.init("pos.unsqueeze", np.array([0], np.int64))], "pos.ids")
    h = g.node(
        "Add",
        [g.node("Gather", [wte, "ids"], "wte.gather"), g.node("Gather", [wpe, positions], "wpe.gather")],
        "embed",
    )
    mask = np.triu(np.full((SEQ, SEQ), -1e9, np.float32), k=1).reshape(1, 1, SEQ, SEQ)
    mask = g.constant("causal_mask", mask)
    heads_shape = g.init("heads.shape", np.array([1, SEQ, HEADS, HEAD_DIM], np.int64))
    merged_shape = g.init("merged.shape", np.array([1, SEQ, HIDDEN], np.int64))
    qkv_split = g.init("qkv.split", np.array([HIDDEN] * 3, np.int64))

    def layer_norm(x, name):
        scale = g.init(name + ".weight", (1.0 + 0.1 * g.rng.standard_normal(HIDDEN)).astype(np.float32))
        bias = g.init(name + ".bias", (0.1 * g.rng.standard_normal(HIDDEN)).astype(np.float32))
        return g.node("LayerNormalization", [x, scale, bias], name, axis=-1, epsilon=1e-5)

    def linear(x, name, cin, cout):
        w = g.weight(name + ".weight", (cin, cout), 1.0 / math.sqrt(cin))
        b = g.weight(name + ".bias", (cout,), 0.02)
        return g.node("Add", [g.node("MatMul", [x, w], name + ".matmul"), b], name)

    for i in range(LAYERS):
        p = f"h.{i}."
        x = layer_norm(h, p + "ln_1")
        qkv = linear(x, p + "attn.c_attn", HIDDEN, 3 * HIDDEN)
        q, k, v = g.node("Split", [qkv, qkv_split], p + "attn.split", outputs=3, axis=-1)

        def heads(t, name):
            t = g.node("Reshape", [t, heads_shape], name + ".reshape")
            return g.node("Transpose", [t], name + ".heads", perm=[0, 2, 1, 3])

        q, k, v = heads(q, p + "attn.q"), heads(k, p + "attn.k"), heads(v, p + "attn.v")
        kt = g.node("Transpose", [k], p + "attn.kt", perm=[0, 1, 3, 2])
        scores = g.node("MatMul", [q, kt], p + "attn.scores")
        scale = g.init(p + "attn.scale", np.array(1.0 / math.sqrt(HEAD_DIM), np.float32))
        scores = g.node("Mul", [scores, scale], p + "attn.scaled")
        scores = g.node("Add", [scores, mask], p + "attn.masked")
        probs = g.node("Softmax", [scores], p + "attn.probs", axis=-1)
        ctx = g.node("MatMul", [probs, v], p + "attn.ctx")
        ctx = g.node("Transpose", [ctx], p + "attn.ctx.t", perm=[0, 2, 1, 3])
        ctx = g.node("Reshape", [ctx, merged_shape], p + "attn.merged")
        h = g.node("Add", [h, linear(ctx, p + "attn.c_proj", HIDDEN, HIDDEN)], p + "residual_1")
        x = layer_norm(h, p + "ln_2")
        f = linear(x, p + "mlp.c_fc", HIDDEN, FFN)
        cube = g.node("Pow", [f, g.init(p + "gelu.three", np.array(3.0, np.float32))], p + "gelu.cube")
        inner = g.node("Add", [f, g.node("Mul", [cube, g.init(p + "gelu.c", np.array(0.044715, np.float32))], p + "gelu.mul0")], p + "gelu.add0")
        inner = g.node("Mul", [inner, g.init(p + "gelu.k", np.array(math.sqrt(2.0 / math.pi), np.float32))], p + "gelu.mul1")
        t = g.node("Add", [g.node("Tanh", [inner], p + "gelu.tanh"), g.init(p + "gelu.one", np.array(1.0, np.float32))], p + "gelu.add1")
        f = g.node("Mul", [g.node("Mul", [f, t], p + "gelu.mul2"), g.init(p + "gelu.half", np.array(0.5, np.float32))], p + "gelu")
        h = g.node("Add", [h, linear(f, p + "mlp.c_proj", FFN, HIDDEN)], p + "residual_2")
    h = layer_norm(h, "ln_f")
    tied = g.node("Transpose", [wte], "lm_head.wte_t", perm=[1, 0])
    g.nodes.append(helper.make_node("MatMul", [h, tied], ["logits"], name="lm_head"))
    return g.model(
        "gpt2",
        [helper.make_tensor_value_info("ids", i64, [1, SEQ])],
        [helper.make_tensor_value_info("logits", f32, [1, SEQ, VOCAB])],
        OPSET,
    )


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: python3 models/families/gpt2.py OUT_DIR")
    ids = np.random.default_rng(INPUT_SEED).integers(0, VOCAB, (1, SEQ), dtype=np.int64)
    save(sys.argv[1], "gpt2", build(), {"ids": ids}, ids.astype(np.float32))


if __name__ == "__main__":
    main()

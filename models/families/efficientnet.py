#!/usr/bin/env python3
"""An EfficientNet-B0-style CNN as ONNX, built with onnx.helper (no torch).

Input [1, 3, 64, 64] -> stem conv 3x3/2 (32) + BN + SiLU -> MBConv blocks (B0's first
stages, narrower): each an optional 1x1 expansion (x6) + BN + SiLU, a depthwise k x k conv
+ BN + SiLU, squeeze-and-excitation (GlobalAveragePool -> 1x1 conv -> SiLU -> 1x1 conv ->
Sigmoid -> Mul, squeeze to 1/4 of the block's input channels), a 1x1 projection + BN, and
the residual when the shape allows -> head conv 1x1 (256) + BN + SiLU -> GlobalAveragePool
-> Flatten -> Gemm (100 classes).

SiLU is written as exporters write it, x * Sigmoid(x); batch norms are real
BatchNormalization nodes (inference mode, seeded statistics). Weights and input are
seeded (numpy default_rng), so the bytes are the same on every run with the same
versions.

    python3 models/families/efficientnet.py OUT_DIR

writes efficientnet.onnx, efficientnet.input.npy and efficientnet.output.npy (ONNX
Runtime's output, CPU, one thread) into OUT_DIR.
"""

import sys

import numpy as np
from onnx import helper

from common import Graph, f32, save

SEED = 10
INPUT_SEED = 11
OPSET = 17
# (expand ratio, kernel, stride, output channels), B0's stage order, narrower
BLOCKS = [
    (1, 3, 1, 16),
    (6, 3, 2, 24),
    (6, 3, 1, 24),
    (6, 5, 2, 40),
    (6, 5, 1, 40),
]
STEM = 32
HEAD = 256
CLASSES = 100


def build():
    g = Graph(SEED)

    def bn(x, name, ch):
        scale = g.init(name + ".weight", (1.0 + 0.1 * g.rng.standard_normal(ch)).astype(np.float32))
        bias = g.init(name + ".bias", (0.1 * g.rng.standard_normal(ch)).astype(np.float32))
        mean = g.init(name + ".running_mean", (0.1 * g.rng.standard_normal(ch)).astype(np.float32))
        var = g.init(name + ".running_var", (1.0 + 0.1 * g.rng.random(ch)).astype(np.float32))
        return g.node("BatchNormalization", [x, scale, bias, mean, var], name, epsilon=1e-3)

    def silu(x, name):
        return g.node("Mul", [x, g.node("Sigmoid", [x], name + ".sigmoid")], name)

    def conv(x, name, cin, cout, k, stride=1, groups=1, bias=False):
        w = g.weight(name + ".weight", (cout, cin // groups, k, k), (2.0 / (cin // groups * k * k)) ** 0.5)
        inputs = [x, w]
        if bias:
            inputs.append(g.weight(name + ".bias", (cout,), 0.1))
        pad = k // 2
        return g.node(
            "Conv", inputs, name, kernel_shape=[k, k], strides=[stride, stride],
            pads=[pad, pad, pad, pad], group=groups,
        )

    h = silu(bn(conv("input", "stem.conv", 3, STEM, 3, 2), "stem.bn", STEM), "stem.act")
    cin = STEM
    for i, (expand, k, stride, cout) in enumerate(BLOCKS):
        p = f"blocks.{i}."
        x = h
        mid = cin * expand
        if expand != 1:
            x = silu(bn(conv(x, p + "expand.conv", cin, mid, 1), p + "expand.bn", mid), p + "expand.act")
        x = silu(bn(conv(x, p + "dw.conv", mid, mid, k, stride, groups=mid), p + "dw.bn", mid), p + "dw.act")
        squeeze = max(1, cin // 4)
        s = g.node("GlobalAveragePool", [x], p + "se.pool")
        s = silu(conv(s, p + "se.reduce", mid, squeeze, 1, bias=True), p + "se.act")
        s = g.node("Sigmoid", [conv(s, p + "se.expand", squeeze, mid, 1, bias=True)], p + "se.gate")
        x = g.node("Mul", [x, s], p + "se.scale")
        x = bn(conv(x, p + "project.conv", mid, cout, 1), p + "project.bn", cout)
        if stride == 1 and cin == cout:
            x = g.node("Add", [h, x], p + "residual")
        h, cin = x, cout
    h = silu(bn(conv(h, "head.conv", cin, HEAD, 1), "head.bn", HEAD), "head.act")
    h = g.node("Flatten", [g.node("GlobalAveragePool", [h], "pool")], "flatten")
    w = g.weight("classifier.weight", (CLASSES, HEAD), (1.0 / HEAD) ** 0.5)
    b = g.weight("classifier.bias", (CLASSES,), 0.1)
    g.nodes.append(helper.make_node("Gemm", [h, w, b], ["logits"], name="classifier", transB=1))
    return g.model(
        "efficientnet",
        [helper.make_tensor_value_info("input", f32, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("logits", f32, [1, CLASSES])],
        OPSET,
    )


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: python3 models/families/efficientnet.py OUT_DIR")
    x = np.random.default_rng(INPUT_SEED).standard_normal((1, 3, 64, 64)).astype(np.float32)
    save(sys.argv[1], "efficientnet", build(), {"input": x}, x)


if __name__ == "__main__":
    main()

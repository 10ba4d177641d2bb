#!/usr/bin/env python3
"""Multiply-add FLOPs (2 per multiply-add) of the products in each benchmarked model,
counted from its ONNX file (independently of dnnfusion's compiler): Conv, ConvTranspose,
MatMul and Gemm, with shapes from ONNX shape inference. Elementwise ops, pooling,
normalization and softmax are left out, so GFLOP/s figures made from these counts are
the products' work per second of the whole model.

    target/bert6-venv/bin/python benches/tools/model_flops.py   # numpy and onnx

Reads ../shared/tools/peers/onnx/*.onnx and models/bert6/data/bert6.onnx (made by
`bash models/bert6/setup.sh`).
"""
import math
import os

import onnx
from onnx import shape_inference

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PEERS = os.path.join(os.path.dirname(REPO), "shared", "tools", "peers", "onnx")
MODELS = ["mlp", "lenet", "bert_tiny", "unet_small", "mobilenet_v2", "resnet18", "bert6"]


def path_of(model):
    if model == "bert6":
        return os.path.join(REPO, "models", "bert6", "data", "bert6.onnx")
    return os.path.join(PEERS, f"{model}.onnx")


def shapes(graph):
    known = {}
    for v in list(graph.value_info) + list(graph.input) + list(graph.output):
        dims = v.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            known[v.name] = [d.dim_value for d in dims]
    for t in graph.initializer:
        known[t.name] = list(t.dims)
    return known


def attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def flops(model):
    m = shape_inference.infer_shapes(onnx.load(path_of(model)))
    known = shapes(m.graph)
    total = 0
    for node in m.graph.node:
        if node.op_type == "Conv":
            w = known[node.input[1]]
            out = known[node.output[0]]
            total += 2 * math.prod(out) * math.prod(w[1:])
        elif node.op_type == "ConvTranspose":
            # W is [C_in, C_out / group, kh, kw]: each input value meets one group's
            # output channels through every tap
            x = known[node.input[0]]
            w = known[node.input[1]]
            total += 2 * math.prod(x) * math.prod(w[1:])
        elif node.op_type in ("MatMul", "Gemm"):
            a = known[node.input[0]]
            out = known[node.output[0]]
            k = a[0] if node.op_type == "Gemm" and attr(node, "transA", 0) else a[-1]
            total += 2 * math.prod(out) * k
    return total


if __name__ == "__main__":
    for model in MODELS:
        print(f"{model}: {flops(model) / 1e6:.1f} MFLOP")

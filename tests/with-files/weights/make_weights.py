"""Writes the small safetensors files the compile-fail cases in ../ui read.

The model they go with: `model Tiny(x: [1, 4]) -> [1, 2] { linear(x, 2, key = "fc") }`,
whose parameters are fc.weight [2, 4] and fc.bias [2] (f32). Each file gets one thing
wrong. Plain Python (struct, json): the format is 8 bytes of little-endian header length,
a JSON header, then the raw data. Run: python3 make_weights.py
"""
import json
import struct
from pathlib import Path

HERE = Path(__file__).parent


def safetensors(tensors):
    """tensors: list of (name, dtype, shape, raw bytes)."""
    header, data = {}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def f32(values):
    return struct.pack(f"<{len(values)}f", *values)


weight = ("fc.weight", "F32", [2, 4], f32([0.5] * 8))
bias = ("fc.bias", "F32", [2], f32([0.25, -0.25]))
files = {
    "missing_bias.safetensors": [weight],
    "extra_tensor.safetensors": [weight, bias, ("fc.scale", "F32", [1], f32([1.0]))],
    "wrong_shape.safetensors": [("fc.weight", "F32", [4, 2], f32([0.5] * 8)), bias],
    "wrong_dtype.safetensors": [weight, ("fc.bias", "I32", [2], struct.pack("<2i", 1, -1))],
}
for name, tensors in files.items():
    (HERE / name).write_bytes(safetensors(tensors))
# not a safetensors file at all: a header length far past the end
(HERE / "corrupt.safetensors").write_bytes(b"\xff" * 8 + b"{}")

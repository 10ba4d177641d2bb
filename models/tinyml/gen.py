"""Reference data for the Cortex-M4F proof (nostd/cortex-m4): three small models and
what they must output, computed independently of dnnfusion with numpy in float64.

  sine       an MLP 1-16-16-1 with ReLU (TensorFlow Lite Micro's "hello world" shape),
             fitted to sin(x) on [0, 2 pi] by full-batch Adam from a seeded start
  tinyconv   keyword spotting, TensorFlow Lite Micro's micro_speech "tiny_conv" shape:
             a 49x40 spectrogram (as [1, 1, 49, 40]), an 8-filter 10x8 convolution with
             stride 2 and TensorFlow's "SAME" padding (rows 4 above and 5 below, columns 3
             on each side: output 25x20), ReLU, flatten (channel-major, NCHW), a fully
             connected layer to 4 classes, softmax; seeded random weights
  unary_probe no weights: every elementwise op of the DSL and the row-wise ops that use
             exp, ln or sqrt, on 64 inputs in [-3, 3]; proves the f32 math on the target

Each goes to models/reference/<name>/: weights.safetensors (written here by hand:
8-byte little-endian header length, JSON header, raw little-endian f32), input.npy,
output.npy (float32 of the float64 result) and meta.json. Run: bash models/tinyml/setup.sh
(a venv with numpy), or python3 models/tinyml/gen.py where numpy is installed.
"""

import json
import math
import os
import struct

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "reference")


def write_safetensors(path, tensors):
    """tensors: list of (name, float32 array). Header padded with spaces to a multiple of
    8 bytes, so the data start 8-byte aligned (as the safetensors library does)."""
    header = {}
    blobs = []
    offset = 0
    for name, array in tensors:
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def save(name, tensors, x, y, meta):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    if tensors:
        write_safetensors(os.path.join(d, "weights.safetensors"), tensors)
    np.save(os.path.join(d, "input.npy"), x.astype(np.float32))
    np.save(os.path.join(d, "output.npy"), y.astype(np.float32))
    meta = dict(meta)
    meta["params"] = int(sum(a.size for _, a in tensors))
    meta["input_shape"] = list(x.shape)
    meta["output_shape"] = list(y.shape)
    meta["output_abs_max"] = float(np.abs(y).max())
    meta["numpy"] = np.__version__
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(f"{name}: {meta['params']} params, output |max| {meta['output_abs_max']:.4g}")


def f64(a):
    return np.asarray(a, dtype=np.float32).astype(np.float64)


# ---------------------------------------------------------------- sine


def sine_forward(p, x):
    """x [n, 1] float64; p: dict of float64 arrays, PyTorch Linear layout [out, in]."""
    h1 = np.maximum(x @ p["fc1.weight"].T + p["fc1.bias"], 0.0)
    h2 = np.maximum(h1 @ p["fc2.weight"].T + p["fc2.bias"], 0.0)
    return h2 @ p["fc3.weight"].T + p["fc3.bias"]


def sine():
    rng = np.random.default_rng(11)
    shapes = [("fc1", 16, 1), ("fc2", 16, 16), ("fc3", 1, 16)]
    p = {}
    for name, n_out, n_in in shapes:
        bound = 1.0 / math.sqrt(n_in)
        p[name + ".weight"] = rng.uniform(-bound, bound, (n_out, n_in))
        p[name + ".bias"] = rng.uniform(-bound, bound, (n_out,))
    # full-batch Adam on sin over [0, 2 pi]
    xs = np.linspace(0.0, 2.0 * math.pi, 512).reshape(-1, 1)
    ys = np.sin(xs)
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(a) for k, a in p.items()}
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    for step in range(1, 6001):
        z1 = xs @ p["fc1.weight"].T + p["fc1.bias"]
        h1 = np.maximum(z1, 0.0)
        z2 = h1 @ p["fc2.weight"].T + p["fc2.bias"]
        h2 = np.maximum(z2, 0.0)
        out = h2 @ p["fc3.weight"].T + p["fc3.bias"]
        g_out = 2.0 * (out - ys) / len(xs)
        g = {"fc3.weight": g_out.T @ h2, "fc3.bias": g_out.sum(0)}
        g_z2 = (g_out @ p["fc3.weight"]) * (z2 > 0)
        g["fc2.weight"], g["fc2.bias"] = g_z2.T @ h1, g_z2.sum(0)
        g_z1 = (g_z2 @ p["fc2.weight"]) * (z1 > 0)
        g["fc1.weight"], g["fc1.bias"] = g_z1.T @ xs, g_z1.sum(0)
        for k in p:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
            mh, vh = m[k] / (1 - b1**step), v[k] / (1 - b2**step)
            p[k] -= lr * mh / (np.sqrt(vh) + eps)
    tensors = [(k, p[k].astype(np.float32)) for k in sorted(p)]
    weights = {k: f64(a) for k, a in tensors}
    fit = float(np.abs(sine_forward(weights, xs) - ys).max())
    # eight points spread over [0, 2 pi): one inference each
    x = (np.arange(8, dtype=np.float64) * (2.0 * math.pi / 8.0) + 0.3).astype(np.float32)
    x = x.reshape(8, 1)
    y = sine_forward(weights, f64(x))
    save(
        "sine",
        tensors,
        x,
        y,
        {
            "model": "sine",
            "description": "MLP 1-16-16-1, ReLU, fitted to sin(x) on [0, 2 pi]",
            "seed": 11,
            "training": "6000 full-batch Adam steps, lr 0.01, 512 points",
            "fit_max_abs_err_vs_sin": fit,
            "macs": 16 + 256 + 16,
            "inferences": 8,
        },
    )


# ---------------------------------------------------------------- tinyconv

CONV_PAD = (4, 3, 5, 3)  # top, left, bottom, right: TensorFlow "SAME" for 49x40, k 10x8, s 2


def tinyconv_forward(p, x):
    """x [1, 1, 49, 40] float64 -> (logits [1, 4], probabilities [1, 4])."""
    top, left, bottom, right = CONV_PAD
    xp = np.pad(x[0, 0], ((top, bottom), (left, right)))
    w, b = p["conv.weight"], p["conv.bias"]
    oh, ow = 25, 20
    conv = np.empty((8, oh, ow))
    for c in range(8):
        for oy in range(oh):
            for ox in range(ow):
                window = xp[2 * oy : 2 * oy + 10, 2 * ox : 2 * ox + 8]
                conv[c, oy, ox] = b[c] + np.sum(window * w[c, 0])
    flat = np.maximum(conv, 0.0).reshape(1, -1)
    logits = flat @ p["fc.weight"].T + p["fc.bias"]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return logits, e / e.sum(axis=1, keepdims=True)


def tinyconv():
    rng = np.random.default_rng(12)
    conv_bound = 1.0 / math.sqrt(10 * 8)
    fc_bound = 6.0 / math.sqrt(4000)  # larger than PyTorch's default: logits of order 1
    tensors = [
        ("conv.bias", rng.uniform(-conv_bound, conv_bound, (8,))),
        ("conv.weight", rng.uniform(-conv_bound, conv_bound, (8, 1, 10, 8))),
        ("fc.bias", rng.uniform(-0.5, 0.5, (4,))),
        ("fc.weight", rng.uniform(-fc_bound, fc_bound, (4, 4000))),
    ]
    tensors = [(k, a.astype(np.float32)) for k, a in tensors]
    # a spectrogram-like input: non-negative, smooth along time, noisy
    t = np.arange(49).reshape(-1, 1)
    f = np.arange(40).reshape(1, -1)
    x = 0.5 + 0.4 * np.sin(t / 5.0 + f / 7.0) * np.cos(f / 11.0) + rng.uniform(-0.1, 0.1, (49, 40))
    x = x.astype(np.float32).reshape(1, 1, 49, 40)
    logits, probs = tinyconv_forward({k: f64(a) for k, a in tensors}, f64(x))
    y = np.concatenate([logits, probs], axis=1)  # [1, 8]: the 4 logits, then the 4 probabilities
    save(
        "tinyconv",
        tensors,
        x,
        y,
        {
            "model": "tinyconv",
            "description": "micro_speech tiny_conv: conv 8x10x8 stride 2 SAME, relu, fc 4000->4, softmax; output = logits then probabilities",
            "seed": 12,
            "conv_padding_top_left_bottom_right": list(CONV_PAD),
            "macs": 8 * 25 * 20 * 80 + 4 * 4000,
        },
    )


# ---------------------------------------------------------------- unary probe


def erf(a):
    return np.vectorize(math.erf)(a)


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def softplus(a):
    return np.log1p(np.exp(a))


def unary_probe():
    """The ops in the order nostd/cortex-m4/src/bin/probe.rs concatenates them."""
    x = np.linspace(-3.0, 3.0, 64).astype(np.float32)
    # no input exactly 0 (reciprocal); floor/ceil/round see exact f32 values
    x[x == 0] = 0.03125
    x = x.reshape(1, 4, 4, 4)
    a = f64(x)
    pos = np.abs(a) + 0.25
    alpha, scale = 1.6732632423543772, 1.0507009873554805
    elementwise = [
        -a,
        np.abs(a),
        np.exp(a),
        np.log(pos),
        np.sqrt(pos),
        1.0 / np.sqrt(pos),
        1.0 / a,
        a * a,
        np.maximum(a, 0.0),
        np.clip(a, 0.0, 6.0),
        np.where(a < 0, 0.1 * a, a),
        np.where(a > 0, a, 1.0 * np.expm1(a)),
        scale * np.where(a > 0, a, alpha * np.expm1(a)),
        sigmoid(a),
        np.tanh(a),
        0.5 * a * (1.0 + erf(a / math.sqrt(2.0))),
        0.5 * a * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (a + 0.044715 * a**3))),
        a * sigmoid(a),
        np.clip(a / 6.0 + 0.5, 0.0, 1.0),
        a * np.clip(a + 3.0, 0.0, 6.0) / 6.0,
        a * np.tanh(softplus(a)),
        softplus(a),
        a / (1.0 + np.abs(a)),  # softsign
        np.where(a > 0, a, np.expm1(a)),  # celu, alpha 1
        np.where(a > 1.0, a, 0.0),  # thresholded_relu, alpha 1
        erf(a),
        np.sin(a),
        np.cos(a),
        np.floor(a),
        np.ceil(a),
        np.round(a),  # half to even
        np.clip(a, -0.5, 1.0),
        pos**1.5,
        pos**a,
        a / pos,
        np.maximum(a, -a * 0.5),
        np.minimum(a, -a * 0.5),
    ]
    rows = [e.reshape(1, -1) for e in elementwise]
    # row-wise ops over the last axis (softmax, log_softmax, layer_norm), per channel
    # (instance_norm), over the spatial axes (reductions)
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    rows.append((e / e.sum(axis=-1, keepdims=True)).reshape(1, -1))
    rows.append((a - a.max(axis=-1, keepdims=True) - np.log(e.sum(axis=-1, keepdims=True))).reshape(1, -1))
    mean, var = a.mean(axis=-1, keepdims=True), a.var(axis=-1, keepdims=True)
    rows.append(((a - mean) / np.sqrt(var + 1e-5)).reshape(1, -1))
    mean, var = a.mean(axis=(2, 3), keepdims=True), a.var(axis=(2, 3), keepdims=True)
    rows.append(((a - mean) / np.sqrt(var + 1e-5)).reshape(1, -1))
    rows.append(np.sqrt((a * a).sum(axis=(2, 3))).reshape(1, -1))
    mx = a.max(axis=(2, 3), keepdims=True)
    lse = mx + np.log(np.exp(a - mx).sum(axis=(2, 3), keepdims=True))
    rows.append(lse.reshape(1, -1))
    rows.append(np.log(pos.sum(axis=(2, 3))).reshape(1, -1))
    y = np.concatenate(rows, axis=1)
    save(
        "unary_probe",
        [],
        x,
        y,
        {
            "model": "unary_probe",
            "description": "every elementwise op of the DSL and softmax, log_softmax, layer_norm, instance_norm, reduce_l2, reduce_log_sum_exp, reduce_log_sum on 64 inputs in [-3, 3]",
        },
    )


if __name__ == "__main__":
    sine()
    tinyconv()
    unary_probe()

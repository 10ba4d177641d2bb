#!/usr/bin/env python3
"""Layer by layer: each block of a dnnfusion model beside ONNX Runtime's node.

Runs `bench --model NAME --blocks --json` (our blocks' median times, in execution order)
and ONNX Runtime on the same ONNX file with its profiler on (`enable_profiling`, 300
calls; each node's median kernel time), both on `--threads` threads (1 by default),
then prints both lists side by side
with ours / ORT per row. The rows pair by position: meaningful where the two list the
same layers in the same order (mobilenet_v2 and resnet18 do: one block per convolution
with its epilogue, as ORT fuses them); the totals line says when the counts differ.
ORT's layout changes (`ReorderInput`, `ReorderOutput`) and `Flatten` are left out of the
rows and counted in its total.

    /tmp/ort/bin/python benches/ort/blocks.py --model mobilenet_v2
"""
import argparse
import collections
import json
import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SHARED = os.path.join(os.path.dirname(REPO), "shared")
SKIPPED = ("Flatten", "ReorderInput", "ReorderOutput")


def ours(model, threads, target):
    cmd = [os.path.join(target, "release", "examples", "bench"), "--model", model,
           "--threads", str(threads), "--blocks", "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def ort_nodes(model, threads, calls):
    import numpy as np
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = "/tmp/dnnfusion-ort-profile"
    path = os.path.join(SHARED, "tools", "peers", "onnx", f"{model}.onnx")
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    x = np.random.default_rng(0).random(first.shape, dtype=np.float32)
    for _ in range(calls):
        session.run(None, {first.name: x})
    with open(session.end_profiling()) as f:
        events = json.load(f)
    times = collections.OrderedDict()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            key = (e["name"][: -len("_kernel_time")], e["args"].get("op_name", "?"))
            times.setdefault(key, []).append(e["dur"] / 1000)
    return [(name, op, sorted(t)[len(t) // 2]) for (name, op), t in times.items()]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    mine = ours(args.model, args.threads, target)
    nodes = ort_nodes(args.model, args.threads, args.calls)
    rows = [n for n in nodes if n[1] not in SKIPPED]
    blocks = mine["blocks"]
    print(f"{args.model}, {args.threads} thread(s): ours {mine['median_ms']:.3f} ms a call, "
          f"{sum(b['median_ms'] for b in blocks):.3f} in {len(blocks)} blocks; "
          f"ORT {sum(n[2] for n in nodes):.3f} ms in {len(nodes)} nodes "
          f"({len(rows)} beside ours)")
    print("block  ours ms   ORT ms  ours/ORT  our ops                          ORT node")
    for k in range(max(len(blocks), len(rows))):
        b = blocks[k] if k < len(blocks) else {"median_ms": 0.0, "ops": ""}
        name, op, ms = rows[k] if k < len(rows) else ("", "", 0.0)
        ratio = f"{b['median_ms'] / ms:8.2f}" if ms and b["median_ms"] else "       -"
        print(f"{k:5}  {b['median_ms']:7.4f}  {ms:7.4f}  {ratio}  {b['ops']:31s}  {op} {name[-48:]}")


if __name__ == "__main__":
    main()

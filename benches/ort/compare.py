#!/usr/bin/env python3
"""Same-run comparison of dnnfusion with ONNX Runtime, model by model.

Alternates the two runtimes (ours, then ORT, per model, for --rounds rounds), each cell
in a fresh process with the peers' timing protocol (warm-up >= 1 s, then >= 30 calls and
>= 3 s; median per cell), and prints a markdown table: the median of each runtime's
round medians, and ours / ORT. Needs the `bench` example built
(`cargo build --release -p dnnfusion-models --example bench`) and a Python with
`onnxruntime==1.32.0 numpy` (`bash benches/ort/setup.sh` makes one in /tmp/ort).

    /tmp/ort/bin/python benches/ort/compare.py --models resnet18,mobilenet_v2 --threads 1
    /tmp/ort/bin/python benches/ort/compare.py --onnx    # also ours imported from ORT's files
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SHARED = os.path.join(os.path.dirname(REPO), "shared")


def ours(model, threads, unfused, target, onnx=False):
    cmd = [os.path.join(target, "release", "examples", "bench"), "--model", model,
           "--threads", str(threads), "--json"]
    if unfused:
        cmd.append("--unfused")
    if onnx:
        cmd.append("--onnx")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["median_ms"]


def ort(model, threads, peers):
    cmd = [sys.executable, os.path.join(peers, "bench.py"), "--worker", "--model", model,
           "--runtime", "ort", "--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=peers).stdout
    line = [l for l in out.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])["median_ms"]


def peers_dir():
    """A writable copy of the peers' bench.py beside links to the shared ONNX files and
    reference data (bench.py reads reference/<model>/ and onnx/<model>.onnx)."""
    d = "/tmp/dnnfusion-peers"
    os.makedirs(os.path.join(d, "reference"), exist_ok=True)
    src = os.path.join(SHARED, "tools", "peers")
    with open(os.path.join(src, "bench.py")) as f, open(os.path.join(d, "bench.py"), "w") as g:
        g.write(f.read())
    os.makedirs(os.path.join(d, "onnx"), exist_ok=True)
    models = {m: os.path.join(SHARED, "reference", m)
              for m in os.listdir(os.path.join(SHARED, "reference"))}
    onnx = {m: os.path.join(src, "onnx", f"{m}.onnx") for m in models}
    # the 6-layer BERT's data and ONNX twin come from models/bert6/setup.sh
    bert6 = os.environ.get("DNNFUSION_BERT6_DIR", os.path.join(REPO, "models", "bert6", "data"))
    models["bert6"], onnx["bert6"] = bert6, os.path.join(bert6, "bert6.onnx")
    for m, path in list(models.items()) + [(None, None)]:
        if m is None:
            break
        for link, target in [(os.path.join(d, "reference", m), path),
                             (os.path.join(d, "onnx", f"{m}.onnx"), onnx[m])]:
            if os.path.lexists(link):
                os.remove(link)
            if os.path.exists(target):
                os.symlink(target, link)
    return d


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="mlp,lenet,bert_tiny,unet_small,mobilenet_v2,resnet18,bert6")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--unfused", action="store_true", help="also time ours with fusion off")
    p.add_argument("--onnx", action="store_true",
                   help="also time ours imported from the ONNX file ORT runs (not bert6)")
    a = p.parse_args()
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    peers = peers_dir()
    rows = []
    for model in a.models.split(","):
        mine, theirs, off, imported = [], [], [], []
        for _ in range(a.rounds):
            mine.append(ours(model, a.threads, False, target))
            theirs.append(ort(model, a.threads, peers))
            if a.unfused:
                off.append(ours(model, a.threads, True, target))
            if a.onnx and model != "bert6":
                imported.append(ours(model, a.threads, False, target, onnx=True))
        m, t = statistics.median(mine), statistics.median(theirs)
        u = statistics.median(off) if off else None
        i = statistics.median(imported) if imported else None
        rows.append((model, m, t, u, i))
        print(f"{model}: ours {m:.3f} ms {mine}, ORT {t:.3f} ms {theirs}"
              + (f", ours unfused {u:.3f} ms {off}" if u else "")
              + (f", ours imported {i:.3f} ms {imported}" if i else ""), file=sys.stderr)
    print(f"| model | threads | dnnfusion ms | ORT 1.32 ms | ours / ORT |"
          + (" fusion off ms |" if a.unfused else "")
          + (" imported from ONNX ms | imported / ORT |" if a.onnx else ""))
    print("|---|---|---|---|---|" + ("---|" if a.unfused else "") + ("---|---|" if a.onnx else ""))
    for model, m, t, u, i in rows:
        extra = f" {u:.3f} |" if a.unfused else ""
        if a.onnx:
            extra += f" {i:.3f} | {i / t:.2f} |" if i else " - | - |"
        print(f"| {model} | {a.threads} | {m:.3f} | {t:.3f} | {m / t:.2f} |{extra}")


if __name__ == "__main__":
    main()

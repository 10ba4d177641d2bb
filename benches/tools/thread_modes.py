#!/usr/bin/env python3
"""One thread against two, block by block, in each of the VM's two modes.

This project's VM moves, minute to minute, between a mode where its two cores share a
cache and one where they do not (BENCHMARKS.md, twenty-eighth session: stores to lines
the other core read run at 2 GB/s there). This script alternates `bench --blocks` on one
thread and on two, sorts the two-thread rounds by the model's median (under `--cut`
milliseconds: fast mode; over: slow), and prints each block's median on one thread, in
each mode, and the speed-up over one thread, blocks that gain least first.

    python3 benches/tools/thread_modes.py --model mobilenet_v2 --cut 7
    python3 benches/tools/thread_modes.py --model bert6 --cut 22 --bench other/bench

With `--against BIN`, it alternates two binaries on two threads instead (fast-mode rounds
only) and prints each block's medians and their ratio, blocks that changed most first.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys


def run(bench, model, threads):
    """The bench's first line and {block: (median ms, ops)}."""
    out = subprocess.run(
        [bench, "--model", model, "--threads", str(threads), "--blocks"],
        capture_output=True, text=True, check=True,
    ).stdout.split("\n")
    blocks = {}
    for line in out[2:]:
        parts = line.split()
        if len(parts) >= 5:
            blocks[int(parts[0])] = (float(parts[1]), " ".join(parts[4:]))
    return out[0], blocks


def model_median(head):
    return float(re.search(r"median ([0-9.]+)", head).group(1))


def medians(rounds):
    return {k: statistics.median(r[k][0] for r in rounds) for k in rounds[0]} if rounds else None


def modes(args):
    one, fast, slow = [], [], []
    for _ in range(args.max_tries):
        if len(fast) >= args.rounds and len(slow) >= args.rounds:
            break
        if len(one) < args.rounds:
            one.append(run(args.bench, args.model, 1)[1])
        head, blocks = run(args.bench, args.model, 2)
        mode = fast if model_median(head) < args.cut else slow
        print(("fast " if mode is fast else "slow ") + head, flush=True)
        if len(mode) < args.rounds:
            mode.append(blocks)
    m1, mf, ms = medians(one), medians(fast), medians(slow)
    total = lambda m: "%.3f" % sum(m.values()) if m else "-"
    print("block sums: one thread %s, two fast %s, two slow %s" % (total(m1), total(mf), total(ms)))
    print("block  one     fast    x     slow    x     ops")
    # (a block under the clock's 0.1 us, a concatenation in place, has no ratio)
    speedup = lambda m, k: m1[k] / m[k] if m[k] > 0 else 1.0
    cell = lambda m, k: "%.4f %.2f" % (m[k], speedup(m, k)) if m else "-"
    for k in sorted(m1, key=lambda k: speedup(ms or mf or m1, k)):
        print("%5d %.4f  %s  %s  %s" % (k, m1[k], cell(mf, k), cell(ms, k), one[0][k][1]))


def against(args):
    rounds = {args.bench: [], args.against: []}
    for _ in range(args.max_tries):
        if min(len(r) for r in rounds.values()) >= args.rounds:
            break
        for bench, kept in rounds.items():
            head, blocks = run(bench, args.model, 2)
            print(bench, head, flush=True)
            if model_median(head) < args.cut and len(kept) < args.rounds:
                kept.append(blocks)
    a, b = medians(rounds[args.bench]), medians(rounds[args.against])
    if a is None or b is None:
        short = [bench for bench, kept in rounds.items() if not kept]
        sys.exit("no fast-mode round (two-thread median under --cut %s ms) in %d tries for %s; "
                 "raise --max-tries or --cut" % (args.cut, args.max_tries, ", ".join(short)))
    print("block sums: %s %.3f, %s %.3f" % (args.bench, sum(a.values()), args.against, sum(b.values())))
    ops = rounds[args.bench][0]
    # (a block under the clock's 0.1 us, a concatenation in place, has no ratio)
    ratio = lambda k: b[k] / a[k] if a[k] > 0 else 1.0
    for k in sorted(a, key=lambda k: -abs(ratio(k) - 1)):
        print("%5d %.4f %.4f %.2f %s" % (k, a[k], b[k], ratio(k), ops[k][1]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    parser.add_argument("--model", required=True)
    parser.add_argument("--bench", default=os.path.join(target, "release/examples/bench"))
    parser.add_argument("--against", help="a second bench binary, both on two threads")
    parser.add_argument("--cut", type=float, required=True,
                        help="two-thread model medians (ms) under this are the fast mode")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tries", type=int, default=40)
    args = parser.parse_args()
    (against if args.against else modes)(args)


if __name__ == "__main__":
    main()

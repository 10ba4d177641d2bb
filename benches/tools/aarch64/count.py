"""Instructions per inference by function, on aarch64 under qemu-user.

Reads two files from `tbcount.so` (one line per translated block: vaddr, instructions,
executions), one from a `bench --calls 1` run and one from `--calls 3`, attributes each
block to the function of the bench binary it starts in (code inlined into a function
counts as that function's), and prints (3 calls - 1 call) / 2 per function: the
instructions of one inference, with the loading, packing and the first call's one-time
work taken out.

    python3 count.py BENCH counts-1.txt counts-3.txt [--top N]
"""
import argparse
import bisect
import collections
import re
import subprocess
import sys

# where qemu-user (7.2, 64-bit host) loads a position-independent aarch64 program
LOAD_BASE = 0x5500000000


def functions(binary):
    """(start, name) of every function, sorted, and the end of the executable segment."""
    nm = subprocess.run(["aarch64-linux-gnu-nm", "-C", "--defined-only", "-n", binary],
                        capture_output=True, text=True, check=True).stdout
    starts = []
    for line in nm.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] in "tTwW":
            name = re.sub(r"::h[0-9a-f]{16}$", "", parts[2])
            starts.append((int(parts[0], 16), name))
    segments = subprocess.run(["aarch64-linux-gnu-readelf", "-lW", binary],
                              capture_output=True, text=True, check=True).stdout
    end = max(int(f[2], 16) + int(f[5], 16) for f in
              (line.split() for line in segments.splitlines())
              if f and f[0] == "LOAD" and "E" in f[6:-1])
    return starts, end


def by_function(path, starts, end):
    addrs = [a for a, _ in starts]
    counts = collections.Counter()
    for line in open(path):
        vaddr, instructions, executions = (int(v, 16) if i == 0 else int(v)
                                           for i, v in enumerate(line.split()))
        offset = vaddr - LOAD_BASE
        i = bisect.bisect_right(addrs, offset) - 1
        inside = 0 <= offset < end and i >= 0
        counts[starts[i][1] if inside else "(outside the program: C library, loader)"] += \
            instructions * executions
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench")
    parser.add_argument("one")
    parser.add_argument("three")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    starts, end = functions(args.bench)
    one, three = by_function(args.one, starts, end), by_function(args.three, starts, end)
    per = {name: (three[name] - one[name]) / 2 for name in three}
    total = sum(per.values())
    if total <= 0 or per.get("(outside the program: C library, loader)", 0) > total / 2:
        sys.exit("count.py: most instructions fall outside %s: was it loaded at %#x?"
                 % (args.bench, LOAD_BASE))
    print("%.2f M instructions per inference (one-time work: %.2f M)"
          % (total / 1e6, (sum(one.values()) - total) / 1e6))
    for name, n in sorted(per.items(), key=lambda kv: -kv[1])[:args.top]:
        print("%6.2f%%  %9.3f M  %s" % (100 * n / total, n / 1e6, name[:160]))


if __name__ == "__main__":
    main()

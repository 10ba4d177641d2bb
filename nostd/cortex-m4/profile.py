"""Instructions executed per function, from a QEMU log of a Cortex-M4 program.

    qemu-system-arm -M mps2-an386 -nographic -monitor none \\
        -semihosting-config enable=on,target=native -kernel ELF \\
        -d in_asm,exec,nochain -D qemu.log -dfilter 0x100..0x400000
    python3 nostd/cortex-m4/profile.py ELF qemu.log

`in_asm` prints each translated block's instructions once, `exec,nochain` one line per
block executed: the sum over executed blocks of their instruction counts, attributed to
the function (from arm-none-eabi-nm) each instruction lies in. `-dfilter` keeps the
reset handler's loops (.bss clearing, stack painting) out of the log; start it past
`Reset`. Python 3 standard library only.
"""

import bisect
import collections
import re
import subprocess
import sys


def functions(elf):
    out = subprocess.run(["arm-none-eabi-nm", "-C", "-n", elf], capture_output=True, text=True, check=True).stdout
    starts, names = [], []
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] in "tTwW":
            starts.append(int(parts[0], 16) & ~1)
            names.append(parts[2])
    return starts, names


def main(elf, log):
    starts, names = functions(elf)
    blocks = {}  # pc -> instruction addresses
    counts = collections.Counter()
    current = None
    insn = re.compile(r"^0x([0-9a-f]+):\s")
    trace = re.compile(r"^Trace \d+: 0x[0-9a-f]+ \[[0-9a-f]+/([0-9a-f]+)/")
    with open(log, errors="replace") as f:
        for line in f:
            m = insn.match(line)
            if m:
                addr = int(m.group(1), 16)
                if current is None:
                    current = addr
                    blocks[current] = []
                blocks[current].append(addr)
                continue
            if line.startswith("IN:") or line.startswith("---"):
                current = None
                continue
            m = trace.match(line)
            if m:
                current = None
                for addr in blocks.get(int(m.group(1), 16), ()):
                    i = bisect.bisect_right(starts, addr) - 1
                    counts[names[i] if i >= 0 else "?"] += 1
    total = sum(counts.values())
    print(f"{total} instructions")
    for name, n in counts.most_common(25):
        print(f"{n:>10} {100 * n / total:5.1f}%  {name[:110]}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

#!/usr/bin/env bash
# Instructions per inference of one model on aarch64, by function, counted under
# qemu-user by a TCG plugin (tbcount.c): what a kernel change does to the work an Arm
# core is given, where no Arm machine is at hand. Emulated time means nothing; the
# counts say nothing of cycles either (a load that misses and one that hits count the
# same), so quote them as instruction counts.
#
#   bash benches/tools/aarch64/count.sh MODEL [BENCH]
#
# BENCH is an aarch64 build of the bench example; without it, this builds one. Needs the
# rustup target aarch64-unknown-linux-gnu, Debian's qemu-user and gcc-aarch64-linux-gnu
# (as `.ci/aarch64`), and a C compiler for the plugin.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/../../.."
model="${1:?usage: count.sh MODEL [BENCH]}"
for tool in qemu-aarch64 aarch64-linux-gnu-gcc aarch64-linux-gnu-nm cc; do
    command -v "$tool" >/dev/null || { echo "count.sh: needs $tool (see .ci/aarch64)" >&2; exit 1; }
done
target_dir="${CARGO_TARGET_DIR:-target}"
work="$target_dir/aarch64-count"
mkdir -p "$work"
cc -O2 -Wall -shared -fPIC -o "$work/tbcount.so" "$here/tbcount.c"
bench="${2:-}"
if [ -z "$bench" ]; then
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
        cargo build --release -p dnnfusion-models --example bench --target aarch64-unknown-linux-gnu
    bench="$target_dir/aarch64-unknown-linux-gnu/release/examples/bench"
fi
for calls in 1 3; do
    qemu-aarch64 -L /usr/aarch64-linux-gnu -plugin "$work/tbcount.so,out=$work/$model-$calls.txt" \
        "$bench" --model "$model" --calls "$calls" >/dev/null
done
python3 "$here/count.py" "$bench" "$work/$model-1.txt" "$work/$model-3.txt"

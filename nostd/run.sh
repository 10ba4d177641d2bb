#!/usr/bin/env bash
# no_std proof: builds the #![no_std] #![no_main] LeNet program (no std, no alloc) and
# runs it; it exits 0 only when the logits match PyTorch. Then a negative check: the same
# program with `extern crate std;` (feature prove-std-breaks) must FAIL to build with
# E0152, showing that a std dependency anywhere would be caught.
# x86_64 Linux only. Usage: bash nostd/run.sh
set -euo pipefail

dir="$(cd "$(dirname "$0")" && pwd)"
manifest="$dir/Cargo.toml"

# The binary's path comes from cargo (CARGO_TARGET_DIR, .cargo/config.toml and
# --target-dir may all move the target directory): the `executable` of the program's
# compiler-artifact message. Diagnostics still go to stderr, rendered as usual.
if ! messages="$(cargo build --release --manifest-path "$manifest" --message-format=json-render-diagnostics)"; then
    echo "nostd: FAIL: the no_std build failed (errors above)" >&2
    exit 1
fi
exe="$(grep '"reason":"compiler-artifact"' <<<"$messages" \
    | grep '"name":"dnnfusion-nostd","src_path"' \
    | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)"
if [ -z "$exe" ] || [ ! -x "$exe" ]; then
    echo "nostd: FAIL: cargo reported no executable for dnnfusion-nostd (got '$exe')" >&2
    exit 1
fi

status=0
"$exe" || status=$?
case "$status" in
    0)   meaning="logits match PyTorch" ;;
    2)   meaning="weights failed to load" ;;
    3)   meaning="bad .npy file" ;;
    4)   meaning="logits differ from PyTorch" ;;
    101) meaning="panic" ;;
    *)   meaning="unexpected" ;;
esac
echo "nostd: exit status $status ($meaning)"
if [ "$status" -ne 0 ]; then
    echo "nostd: FAIL" >&2
    exit 1
fi

# Negative check (`cargo check` is enough: E0152 is found before codegen).
log="$(cargo check --release --manifest-path "$manifest" --features prove-std-breaks 2>&1)" && built=1 || built=0
if [ "$built" -eq 1 ]; then
    echo "nostd: FAIL: the build with extern crate std succeeded; it must not" >&2
    exit 1
elif grep -q "E0152" <<<"$log"; then
    echo "nostd: negative check ok: with extern crate std the build fails (E0152 duplicate lang item)"
else
    echo "$log" >&2
    echo "nostd: FAIL: the build with extern crate std failed, but not with E0152" >&2
    exit 1
fi
echo "nostd: PASS"

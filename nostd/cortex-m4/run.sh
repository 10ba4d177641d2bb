#!/usr/bin/env bash
# Cortex-M4F proof: builds the bare-metal programs of this crate for thumbv7em-none-eabihf
# (opt-level "s", LTO, panic = abort) and runs each on QEMU's mps2-an386 board (a
# Cortex-M4 with FPU), which ends the run through semihosting with the program's exit
# status. Each program exits 0 only when its outputs match numpy's or PyTorch's.
#
#   sine      MLP 1-16-16-1 (models/reference/sine)
#   lenet     LeNet-5 (models/reference/lenet, PyTorch)
#   tinyconv  micro_speech tiny_conv keyword spotting (models/reference/tinyconv)
#   probe     every elementwise op and the exp/ln/sqrt row ops (models/reference/unary_probe),
#             plus the calibration of the instruction count
#
# Then the symbol checks: no software double-precision routine (__aeabi_d*, __adddf3,
# __muldf3, __divdf3, ...) in the probe, and no core::fmt in any program; the double check
# is shown to work by building the probe with `prove-double-caught` (one f64 product),
# which it must then flag.
#
# Needs: rustup target thumbv7em-none-eabihf, qemu-system-arm, arm-none-eabi-nm (Debian
# binutils-arm-none-eabi). Exit 0 when everything passes; 2 when a tool is missing (it
# says which); 1 otherwise. Usage: bash nostd/cortex-m4/run.sh
set -euo pipefail

dir="$(cd "$(dirname "$0")" && pwd)"
manifest="$dir/Cargo.toml"
target=thumbv7em-none-eabihf
qemu=(qemu-system-arm -M mps2-an386 -nographic -monitor none -serial none
      -semihosting-config enable=on,target=native -icount shift=0)

missing=""
rustup target list --installed 2>/dev/null | grep -qx "$target" || missing+=" rustup-target:$target"
command -v qemu-system-arm >/dev/null || missing+=" qemu-system-arm"
command -v arm-none-eabi-nm >/dev/null || missing+=" arm-none-eabi-nm"
if [ -n "$missing" ]; then
    echo "cortex-m4: missing:$missing" >&2
    exit 2
fi

# Builds the programs (extra cargo arguments in "$@") and prints "name path" per program,
# the paths as cargo reports them (CARGO_TARGET_DIR and friends may move them).
build() {
    local messages
    if ! messages="$(cargo build --release --manifest-path "$manifest" --target "$target" \
        --bins --message-format=json-render-diagnostics "$@")"; then
        echo "cortex-m4: FAIL: the build failed (errors above)" >&2
        exit 1
    fi
    grep '"reason":"compiler-artifact"' <<<"$messages" | grep '"executable":"/' \
        | sed -n 's/.*"target":{[^}]*"name":"\([^"]*\)".*"executable":"\([^"]*\)".*/\1 \2/p'
}

declare -A exe
while read -r name path; do exe[$name]="$path"; done < <(build)
for name in sine lenet tinyconv probe; do
    if [ -z "${exe[$name]:-}" ] || [ ! -f "${exe[$name]}" ]; then
        echo "cortex-m4: FAIL: cargo reported no executable for $name" >&2
        exit 1
    fi
done

failed=0
declare -A said
for name in sine lenet tinyconv probe; do
    status=0
    said[$name]="$(timeout 120 "${qemu[@]}" -kernel "${exe[$name]}" 2>&1)" || status=$?
    printf '%s\n' "${said[$name]}"
    case "$status" in
        0)   meaning="outputs match the reference" ;;
        1)   meaning="QEMU failed, or the program stopped without an application exit" ;;
        2)   meaning="weights failed to load" ;;
        3)   meaning="bad .npy file" ;;
        4)   meaning="outputs differ from the reference" ;;
        6)   meaning="instruction-count calibration off (is -icount shift=0 honoured?)" ;;
        101) meaning="panic" ;;
        102) meaning="fault exception (HardFault, BusFault, UsageFault, ...)" ;;
        124) meaning="timed out after 120 s" ;;
        *)   meaning="unexpected" ;;
    esac
    echo "cortex-m4: $name: exit status $status ($meaning)"
    [ "$status" -eq 0 ] || failed=1
done

# Software double-precision routines: compiler-builtins' names and their EABI aliases.
doubles='__aeabi_d[a-z0-9]*|__(add|sub|mul|div|neg)df3|__(eq|ne|lt|le|gt|ge|un)df2|__(extendsf|truncdf)[a-z0-9]*|__fix[a-z]*df[a-z]*|__float[a-z]*df'
check_doubles() { # prints the double routines linked into $1
    arm-none-eabi-nm "$1" | awk '{print $NF}' | grep -E "^($doubles)\$" || true
}
found="$(check_doubles "${exe[probe]}")"
if [ -n "$found" ]; then
    echo "cortex-m4: FAIL: the probe links software double-precision routines:" $found >&2
    failed=1
else
    echo "cortex-m4: no software double-precision routine in the probe (every unary op)"
fi
# ... and the check can fail: one f64 product in the probe must be found
while read -r name path; do [ "$name" = probe ] && caught="$path"; done \
    < <(build --features prove-double-caught)
if [ -z "$(check_doubles "$caught")" ]; then
    echo "cortex-m4: FAIL: the probe built with an f64 product shows no double routine; the check is blind" >&2
    failed=1
else
    echo "cortex-m4: negative check ok: with an f64 product the probe links" $(check_doubles "$caught")
fi
# rebuild the plain probe so that the binary left behind is the checked one
build >/dev/null

fmt_found=0
for name in sine lenet tinyconv probe; do
    fmt="$(arm-none-eabi-nm -C "${exe[$name]}" | grep -c 'core::fmt' || true)"
    if [ "$fmt" -ne 0 ]; then
        echo "cortex-m4: FAIL: $name links $fmt core::fmt symbols (panic messages formatted?)" >&2
        arm-none-eabi-nm -C "${exe[$name]}" | grep 'core::fmt' | head -5 >&2
        fmt_found=1
        failed=1
    fi
done
[ "$fmt_found" -ne 0 ] || echo "cortex-m4: no core::fmt symbol in any program"

if [ "$failed" -ne 0 ]; then
    echo "cortex-m4: FAIL" >&2
    exit 1
fi

# Footprint: flash = vector table + .text + .rodata + .data (its initial values), split
# into the compiled-in weights (the model's `embedded::WEIGHTS` symbol), the test vectors
# (the .npy files, included whole) and code (the rest: model, runtime, startup,
# semihosting, checking); RAM = .data + .bss (arena, input buffer) + the stack's
# high-water mark; instructions from the program's own count (-icount shift=0). LeNet
# reads its test image where it lies, in flash (input 0): a camera's frame buffer in RAM
# would add 784 floats (3,136 B).
echo
echo "| model | flash total | code | weights | test vectors | RAM total | arena | input | stack | instructions / inference | MACs | instructions / MAC |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
repo="$(cd "$dir/../.." && pwd)"
for name in sine lenet tinyconv; do
    elf="${exe[$name]}"
    read -r flash ram < <(arm-none-eabi-size -A "$elf" | awk '
        /^\.(vector_table|text|rodata|data) /{f+=$2} /^\.(data|bss) /{r+=$2} END{print f, r}')
    sym() { # size in bytes of the first symbol whose name matches $1 (0 if none)
        local hex
        hex="$(arm-none-eabi-nm -S -C "$elf" | awk -v s="$1" '$4 ~ s {print $2; exit}')"
        echo $((16#${hex:-0}))
    }
    weights="$(sym 'embedded::WEIGHTS$')"
    arena="$(sym '::ARENA$')"
    input="$(sym '::INPUT$')"
    vectors=$(( $(stat -c %s "$repo/models/reference/$name/input.npy") + $(stat -c %s "$repo/models/reference/$name/output.npy") ))
    stack="$(sed -n 's/.*, stack \([0-9]*\) B.*/\1/p' <<<"${said[$name]}")"
    insns="$(sed -n 's/.*instructions per inference \([0-9]*\).*/\1/p' <<<"${said[$name]}")"
    macs="$(sed -n 's/.*"macs": \([0-9]*\).*/\1/p' "$repo/models/reference/$name/meta.json")"
    per_mac="$(awk -v i="$insns" -v m="$macs" 'BEGIN{printf "%.2f", i / m}')"
    echo "| $name | $flash | $((flash - ${weights:-0} - vectors)) | ${weights:-0} | $vectors | $((ram + stack)) | ${arena:-0} | ${input:-0} | $stack | $insns | $macs | $per_mac |"
done
echo
echo "cortex-m4: PASS"

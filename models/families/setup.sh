#!/usr/bin/env bash
# Regenerates the two ONNX models of the paper's families that tests/onnx_families.rs
# compiles through `onnx(...)` (efficientnet.py, gpt2.py) and ONNX Runtime's outputs on
# their seeded inputs: makes a venv with pinned numpy, onnx and onnxruntime from PyPI (the
# pins and, by default, the venv of models/bert6/setup.sh), then runs both scripts into
# models/families/onnx/.
#
#   bash models/families/setup.sh
#
# The files are committed (900 KB: `onnx(...)` reads the .onnx when the tests compile, so
# they must exist without Python); this script checks they are reproducible: with the same
# pins the .onnx files come out byte for byte the same, and `git diff` shows any change of
# ORT's outputs. The venv is $BERT6_VENV, else target/bert6-venv/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${BERT6_VENV:-$repo/target/bert6-venv}"
pins="numpy==2.4.6 onnx==1.23.2 onnxruntime==1.32.0"

if [ "$(cat "$venv/pins" 2>/dev/null)" != "$pins" ]; then
    echo "families: making a venv in $venv ($pins)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pip install --disable-pip-version-check -q $pins
    echo "$pins" >"$venv/pins"
fi

"$venv/bin/python" "$here/efficientnet.py" "$here/onnx"
"$venv/bin/python" "$here/gpt2.py" "$here/onnx"

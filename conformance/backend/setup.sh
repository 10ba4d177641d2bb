#!/usr/bin/env bash
# Writes ONNX's backend node tests (model.onnx + test_data_set_0/*.pb per test) for
# conformance/src/backend.rs: makes a venv with pinned numpy, onnx and onnxruntime from
# PyPI (the same pins and, by default, the same venv as models/bert6/setup.sh), then runs
# export.py.
#
#   bash conformance/backend/setup.sh
#
# Data go to $DNNFUSION_NODE_TESTS_DIR, else conformance/backend/data/ (ignored by git),
# where dnnfusion_conformance::backend::data_dir() looks. The venv is $BERT6_VENV, else
# target/bert6-venv/. Idempotent: nothing is done when the data's stamp (sha256 of
# export.py and the pins, written last) matches.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
data="${DNNFUSION_NODE_TESTS_DIR:-$here/data}"
venv="${BERT6_VENV:-$repo/target/bert6-venv}"
pins="numpy==2.4.6 onnx==1.23.2 onnxruntime==1.32.0"

stamp="$( (sha256sum "$here/export.py" | cut -d' ' -f1; echo "$pins") | sha256sum | cut -d' ' -f1)"
if [ -d "$data/test_abs" ] && [ "$(cat "$data/stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "node tests: $data is up to date"
    exit 0
fi

if [ "$(cat "$venv/pins" 2>/dev/null)" != "$pins" ]; then
    echo "node tests: making a venv in $venv ($pins)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pip install --disable-pip-version-check -q $pins
    echo "$pins" >"$venv/pins"
fi

rm -rf "$data"
mkdir -p "$data"
"$venv/bin/python" "$here/export.py" "$data"
echo "$stamp" >"$data/stamp"

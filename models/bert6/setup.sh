#!/usr/bin/env bash
# Generates the bert6 reference data (models/bert6/gen.py) for tests/bert6.rs and the bench:
# makes a venv with pinned numpy, onnx and onnxruntime from PyPI, then runs gen.py.
#
#   bash models/bert6/setup.sh
#
# Data go to $DNNFUSION_BERT6_DIR, else models/bert6/data/ (ignored by git), where
# dnnfusion_models::bert6::reference_dir() looks. The venv is $BERT6_VENV, else
# target/bert6-venv/. Idempotent: nothing is done when the data's stamp (sha256 of gen.py
# and the pins, written last) matches and every file is there.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
data="${DNNFUSION_BERT6_DIR:-$here/data}"
venv="${BERT6_VENV:-$repo/target/bert6-venv}"
pins="numpy==2.4.6 onnx==1.23.2 onnxruntime==1.32.0"
files="weights.safetensors bert6.onnx input.npy output.npy output_fp64.npy meta.json"

stamp="$( (sha256sum "$here/gen.py" | cut -d' ' -f1; echo "$pins") | sha256sum | cut -d' ' -f1)"

complete=true
for f in $files; do
    [ -s "$data/$f" ] || complete=false
done
if $complete && [ "$(cat "$data/stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "bert6: $data is up to date"
    exit 0
fi

if [ "$(cat "$venv/pins" 2>/dev/null)" != "$pins" ]; then
    echo "bert6: making a venv in $venv ($pins)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pip install --disable-pip-version-check -q $pins
    echo "$pins" >"$venv/pins"
fi

mkdir -p "$data"
rm -f "$data/stamp"
"$venv/bin/python" "$here/gen.py" "$data"
echo "$stamp" >"$data/stamp"

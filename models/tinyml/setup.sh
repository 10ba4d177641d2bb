#!/usr/bin/env bash
# Regenerates the reference data of the Cortex-M4F proof (models/tinyml/gen.py) into
# models/reference/{sine,tinyconv,unary_probe}/. The outputs are committed; run this
# only to change or check them (git diff shows any change).
#
#   bash models/tinyml/setup.sh
#
# Uses python3 when it has numpy, else a venv with pinned numpy from PyPI ($TINYML_VENV,
# else target/tinyml-venv/).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
pins="numpy==2.4.6"

if python3 -c "import numpy" 2>/dev/null; then
    python=python3
else
    venv="${TINYML_VENV:-$repo/target/tinyml-venv}"
    if [ "$(cat "$venv/pins" 2>/dev/null)" != "$pins" ]; then
        echo "tinyml: making a venv in $venv ($pins)"
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install --disable-pip-version-check -q $pins
        echo "$pins" >"$venv/pins"
    fi
    python="$venv/bin/python"
fi
"$python" "$here/gen.py"

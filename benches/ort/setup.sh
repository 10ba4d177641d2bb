#!/usr/bin/env bash
# A Python with ONNX Runtime for benches/ort/compare.py, in /tmp/ort (no torch needed).
set -euo pipefail
if [ ! -x /tmp/ort/bin/python ]; then
    python3 -m venv /tmp/ort
fi
/tmp/ort/bin/pip install -q onnxruntime==1.32.0 numpy==2.4.6

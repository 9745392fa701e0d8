#!/usr/bin/env bash
# Set up kaldi-compress in ./.venv on a fresh machine (idempotent).
# torch: the CPU build 2.13.0 (never let an install pull a CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip
"${pip[@]}" install torch==2.13.0
"${pip[@]}" install -e '.[test]'
.venv/bin/python - <<'PY'
import torch
assert torch.__version__.startswith("2.13.0"), torch.__version__
assert not torch.cuda.is_available() or "+cpu" in torch.__version__
PY

#!/usr/bin/env bash
# Create or update .venv: CPU torch 2.13.0 first (never let pip choose torch), then the pack's and
# the tests' needs. Idempotent: a stamp file skips the installs when nothing changed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
PY=${PYTHON:-python3.11}
STAMP=$VENV/.pas-venv-stamp
want=$(cat "$ROOT/scripts/setup_venv.sh" "$ROOT/requirements.txt" "$ROOT/requirements-dev.txt" | sha1sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then exit 0; fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check"
$PIP install -q torch==2.13.0
# PyPI's torchvision is a CUDA build; the shim below makes it importable beside CPU torch.
$PIP install -q torch==2.13.0 torchvision==0.28.0 -r "$ROOT/requirements.txt" -r "$ROOT/requirements-dev.txt"
# pytorch-fid would let pip pick a newer (CUDA) torch: install it without its dependencies.
$PIP install -q --no-deps pytorch-fid==0.3.0
SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
cp "$ROOT/scripts/_tv_cpu_shim.py" "$SITE/_tv_cpu_shim.py"
echo "import _tv_cpu_shim" > "$SITE/_tv_cpu_shim.pth"
"$VENV/bin/python" -c "import torch, torchvision, safetensors, pytorch_fid; print('venv ready: torch', torch.__version__)"
echo "$want" > "$STAMP"

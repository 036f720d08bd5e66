#!/usr/bin/env bash
# `make gpu-check`: the host tests on the GPU (no --cpu; ComfyUI picks fp16 where it would), the trainer on a
# tiny model (in those tests) and on a full-size SD1.5-topology UNet with random weights, then the correction
# overhead per solver as a share of one UNet call. Needs an interpreter whose torch sees a CUDA GPU
# (GPU_PYTHON, default python3) with ComfyUI's requirements, and the ComfyUI tree of `make host` in .comfyui/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${GPU_PYTHON:-python3}
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu-check: torch.cuda.is_available() is False for $PY')"
[ -f .comfyui/ComfyUI/main.py ] || { echo "gpu-check: no ComfyUI tree in .comfyui/ComfyUI (run 'make host' first)" >&2; exit 1; }
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} PAS_TEST_DEVICE=cuda PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
# Both parts run even when the first fails, so one failure does not hide the other's figures.
tests=0; "$PY" -m pytest -q -p no:cacheprovider -rf tests/host || tests=$?
bench=0; "$PY" -m train_tools.benches.gpu_check || bench=$?
echo "gpu-check: host tests exit $tests, trainer + overhead exit $bench"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]

#!/usr/bin/env bash
# Start the local ComfyUI host (make host) with this pack linked into its custom_nodes/.
# Everything it writes (models/pas, output, user) lives in a base directory outside the ComfyUI tree.
# Env: COMFYUI_DIR, COMFY_BASE (default .comfyui/base), PORT (8188), LISTEN (127.0.0.1).
# Extra arguments go to ComfyUI's main.py, e.g. `scripts/run_comfy.sh --preview-method auto`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${VENV:-$ROOT/.venv}/bin/python
COMFYUI_DIR=${COMFYUI_DIR:-$ROOT/.comfyui/ComfyUI}
BASE=${COMFY_BASE:-$ROOT/.comfyui/base}
PORT=${PORT:-8188}
LISTEN=${LISTEN:-127.0.0.1}

[ -f "$COMFYUI_DIR/main.py" ] || { echo "No ComfyUI at $COMFYUI_DIR: run 'make host' first." >&2; exit 1; }
mkdir -p "$BASE/custom_nodes" "$BASE/models/pas"
link=$BASE/custom_nodes/ComfyUI-PAS
if [ "$(readlink "$link" 2>/dev/null)" != "$ROOT" ]; then
    rm -f "$link"
    ln -s "$ROOT" "$link"
fi

device_args=()
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    device_args=(--cpu)
fi

cat <<EOF
ComfyUI-PAS: starting ComfyUI with this pack and its Fashion-MNIST demo model.
  Open   http://$LISTEN:$PORT   once "To see the GUI" appears below (about 10-20 s).
  Workflows: Templates (left bar) > ComfyUI-PAS, or drag a file from $ROOT/workflows/ onto the canvas.
  Start with pas_demo_train_and_sample: it trains and samples on the CPU in under a minute.
  Models go under $BASE/models (SD 1.5 checkpoint: models/checkpoints/); PAS files: $BASE/models/pas.
EOF
cd "$COMFYUI_DIR"
exec env OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" "$PY" main.py "${device_args[@]}" --listen "$LISTEN" \
    --port "$PORT" --base-directory "$BASE" --disable-api-nodes "$@"

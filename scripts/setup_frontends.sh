#!/usr/bin/env bash
# A second, newer ComfyUI frontend for the browser tests (idempotent, cached).
# ComfyUI's requirements pin one comfyui-frontend-package (installed in .venv by setup_comfyui.sh); the
# browser tests also run against the newer one below, served by the same ComfyUI host through its
# --front-end-root option. It is installed with --no-deps --target into .cache/frontend-<version>/, outside
# .venv's site-packages, so the pinned package stays what ComfyUI imports.
# The newer version is pinned (with its wheel's sha256) so that a fresh machine tests the same build;
# tests/browser/conftest.py reads NEWER_FRONTEND from this file. To move it: change both lines, rerun.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
NEWER_FRONTEND=1.58.1
NEWER_FRONTEND_SHA256=37912597537a731a8f421179618a736c24184c5bdbfa327f38b2fb7c291852d9
DEST=$ROOT/.cache/frontend-$NEWER_FRONTEND
STATIC=$DEST/comfyui_frontend_package/static
STAMP=$DEST/.pas-frontend-stamp
want=$(sha1sum "$ROOT/scripts/setup_frontends.sh" | cut -c1-16)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -f "$STATIC/index.html" ]; then
    echo "comfyui-frontend-package $NEWER_FRONTEND (newer frontend): $STATIC"
    exit 0
fi
[ -x "$VENV/bin/python" ] || { echo "setup_frontends: no venv at $VENV; run 'make venv' first" >&2; exit 1; }
requirements=$(mktemp)
trap 'rm -f "$requirements"' EXIT
echo "comfyui-frontend-package==$NEWER_FRONTEND --hash=sha256:$NEWER_FRONTEND_SHA256" > "$requirements"
rm -rf "$DEST.partial"
"$VENV/bin/python" -m pip --disable-pip-version-check install -q --no-deps --no-compile --require-hashes \
    --target "$DEST.partial" -r "$requirements"
[ -f "$DEST.partial/comfyui_frontend_package/static/index.html" ] || {
    echo "setup_frontends: comfyui-frontend-package $NEWER_FRONTEND has no static/index.html" >&2; exit 1; }
rm -rf "$DEST"
mv "$DEST.partial" "$DEST"
echo "$want" > "$STAMP"
echo "comfyui-frontend-package $NEWER_FRONTEND (newer frontend): $STATIC"

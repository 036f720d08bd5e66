#!/usr/bin/env bash
# Browser-test prerequisites (idempotent, cached): Debian's chromium and tests/browser's npm packages.
# Playwright's own browser download is never used (PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1); the tests drive
# /usr/bin/chromium (or $CHROMIUM) through playwright-core's executablePath.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BROWSER=${CHROMIUM:-/usr/bin/chromium}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ ! -x "$BROWSER" ]; then
    command -v apt-get >/dev/null || { echo "No $BROWSER and no apt-get: install Chromium and set CHROMIUM=/path/to/it." >&2; exit 1; }
    echo "Installing Debian's chromium (apt-get) ..."
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
fi
"$BROWSER" --version 2>/dev/null   # (Debian's wrapper prints a harmless shell warning on stderr)

if ! command -v npm >/dev/null; then
    command -v apt-get >/dev/null || { echo "npm is missing: install Node.js (>= 20) and npm." >&2; exit 1; }
    echo "Installing Node.js and npm (apt-get) ..."
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm
fi

major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
    echo "Node.js $(node --version) is too old: playwright-core 1.65 needs Node.js >= 20." >&2
    exit 1
fi

cd "$ROOT/tests/browser"
stamp=node_modules/.package-lock.json
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ]; then   # npm ci writes the stamp
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
fi
node -e "console.log('playwright-core ' + require('playwright-core/package.json').version)"

#!/usr/bin/env bash
# Fashion-MNIST (original IDX files) from Debian's dataset-fashion-mnist package. Idempotent.
set -euo pipefail

DATA_DIR=/usr/share/datasets/fashion-mnist
MARKER="$DATA_DIR/t10k-images-idx3-ubyte.gz"

if [[ -f "$MARKER" ]]; then
    echo "Fashion-MNIST already present in $DATA_DIR"
    exit 0
fi

SUDO=""
if [[ "$(id -u)" != "0" ]]; then
    SUDO="sudo"
fi

echo "Installing Fashion-MNIST (apt package dataset-fashion-mnist) ..."
$SUDO apt-get update
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y dataset-fashion-mnist

if [[ ! -f "$MARKER" ]]; then
    echo "error: dataset-fashion-mnist installed but $MARKER is missing" >&2
    exit 1
fi
echo "Fashion-MNIST installed in $DATA_DIR"

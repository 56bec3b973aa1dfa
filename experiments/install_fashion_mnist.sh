#!/usr/bin/env bash
# Installs Fashion-MNIST (Debian package dataset-fashion-mnist) if it is missing.
set -euo pipefail
dir=${PGA_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
if [ -f "$dir/train-images-idx3-ubyte.gz" ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Installing Debian package dataset-fashion-mnist into $dir ..."
  apt-get update -qq >/dev/null && apt-get install -y -qq dataset-fashion-mnist >/dev/null
else
  echo "Fashion-MNIST is not in $dir. Install it with:" >&2
  echo "  sudo apt-get install dataset-fashion-mnist" >&2
  echo "or put the four *-ubyte.gz files in a folder and set PGA_FASHION_MNIST_DIR." >&2
  exit 1
fi

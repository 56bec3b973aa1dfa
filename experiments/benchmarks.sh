#!/usr/bin/env bash
# The speed tables of docs/benchmarks.md: our train steps against the PyTorch
# peer experiments/torch_peer.py (interleaved rounds in one session),
# conv_mnist's layer profile, and the other architectures. Usage:
#   bash experiments/benchmarks.sh [OUT_DIR]
# The peer runs with PEER_PYTHON (default .venv/bin/python, which has torch
# after `make install`: requirements-test.txt); without torch there, the steps
# are timed without the peer.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-docs/benchmarks}
PGA=${PGA:-.venv/bin/pga}
PY=${PY:-.venv/bin/python}
PEER_PYTHON=${PEER_PYTHON:-$PY}
mkdir -p "$OUT"
PEER_ARGS=()
if "$PEER_PYTHON" -c 'import torch' 2>/dev/null; then
  PEER_ARGS=(--peer_command="$PEER_PYTHON experiments/torch_peer.py --steps {steps} --batch {batch} --methods {method}"
             --peer_rounds=5)
else
  echo "benchmarks.sh: no torch in $PEER_PYTHON; timing without the PyTorch peer" >&2
fi
# conv_mnist, batch 64, the peer's settings (no batch norm; z 12 for AE/LPGA, 32 otherwise).
for method in ae vae lpga vpga; do
  config=experiments/configs/mnist_lpga.py
  extra=()
  case $method in
    ae) extra=(--config.method=ae) ;;
    vae) config=experiments/configs/mnist_vae.py ;;
    vpga) config=experiments/configs/mnist_vpga.py ;;
  esac
  "$PGA" benchmark --config=$config "${extra[@]}" --config.batch_size=64 --steps=20 \
    "${PEER_ARGS[@]}" --json="$OUT/conv_mnist_$method.json"
done
"$PY" experiments/layer_profile.py --steps=20 --json="$OUT/conv_mnist_layers.json"
# The other architectures (LPGA with the paper's settings for their dataset).
"$PGA" benchmark --config=experiments/configs/cifar10_lpga.py --steps=10 --json="$OUT/conv_32_lpga.json"
"$PGA" benchmark --config=experiments/configs/celeba_lpga.py --steps=5 --json="$OUT/conv_64_lpga.json"
"$PGA" benchmark --config=experiments/configs/cifar10_lpga.py --config.arch=resnet_32 --steps=3 \
  --warmup=1 --json="$OUT/resnet_32_lpga.json"

#!/usr/bin/env bash
# One unattended check of pga_jax on an accelerator, in at most
# 8 minutes on one NVIDIA GPU, with no network and without TensorFlow:
#
#   experiments/accelerator_check.sh OUT_DIR [--wheels DIR] [--dry-run]
#
# Needs: Python with jax (a CUDA build), flax, optax, chex and
# orbax-checkpoint installed. The pure-Python packages beyond those
# (ml_collections, pytest and its dependencies; requirements-accelerator.txt)
# come from --wheels DIR, filled here by `make accelerator-wheels`: they are
# unpacked into OUT_DIR/site and put on PYTHONPATH (no pip, no network). The
# repository is used in place (PYTHONPATH); nothing is installed.
#
# Stages (experiments/accelerator_check.py; each a process of its own, with
# `import tensorflow` made to raise and recorded):
#   env        versions, device, measured matmul peak FLOP/s (float32, bfloat16)
#   tests      the gradient and fast-vs-plain tests on the device (float32
#              matmuls at 'highest' precision, so TF32 does not blur them)
#   train      2,000 LPGA steps on IDX files of synthetic digits: images/s
#   benchmark  `pga benchmark` of LPGA for every architecture in float32 and
#              bfloat16: images/s, achieved FLOP/s, fraction of the peaks
#   summary    OUT_DIR/summary.json; exit status 0 only if every stage passed
#              and TensorFlow was imported nowhere
# Every result is JSON in OUT_DIR. Each stage gets a time limit and the whole
# run a budget (ACCELERATOR_CHECK_BUDGET seconds, default 460; 2400 for
# --dry-run, whose limits allow for a heavily loaded CPU), so it ends in
# time even if a stage hangs; a stage that ran out of time says so in its
# JSON. The convolution forms measured on the device are kept in
# OUT_DIR/kernel_cache/conv_impl_v2.json (or $PGA_JAX_CACHE_DIR if set) and
# listed in each benchmark's JSON (conv_forms). A JAX_COMPILATION_CACHE_DIR set
# in the environment is read and written by every stage as usual (the stages
# set EPATH_USE_TF=false, so refusing TensorFlow does not break the cache).
#
# --dry-run: the same on CPU with tiny sizes (three tests, batch 2, one timed
# benchmark step, 10 train steps; convolution forms measured for conv_mnist
# only; bfloat16 benchmarked for conv_mnist only; resnet_32 benchmarked with
# its AE step), for CI.
set -u -o pipefail

usage() { echo "usage: $0 OUT_DIR [--wheels DIR] [--dry-run]" >&2; exit 2; }

OUT=""
WHEELS=""
DRY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) [ $# -ge 2 ] || usage; WHEELS="$2"; shift 2 ;;
    --wheels=*) WHEELS="${1#--wheels=}"; shift ;;
    --dry-run) DRY="--dry-run"; shift ;;
    -h|--help) usage ;;
    -*) echo "accelerator_check: unknown option $1" >&2; usage ;;
    *) [ -z "$OUT" ] || usage; OUT="$1"; shift ;;
  esac
done
[ -n "$OUT" ] || usage

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
BUDGET="${ACCELERATOR_CHECK_BUDGET:-460}"
[ -z "$DRY" ] || BUDGET="${ACCELERATOR_CHECK_BUDGET:-2400}"   # a shared CPU can be slow
START=$SECONDS
mkdir -p "$OUT" || { echo "accelerator_check: cannot create $OUT" >&2; exit 2; }
OUT="$(cd "$OUT" && pwd)"
rm -f "$OUT"/*.json

SITE="$OUT/site"
if [ -n "$WHEELS" ]; then
  [ -d "$WHEELS" ] || { echo "accelerator_check: --wheels $WHEELS is not a folder; run \`make accelerator-wheels\` and pass its folder" >&2; exit 2; }
  rm -rf "$SITE" && mkdir -p "$SITE"
  "$PYTHON" - "$WHEELS" "$SITE" <<'EOF' || exit 2
import glob, os, sys, zipfile
wheels, site = sys.argv[1], sys.argv[2]
found = sorted(glob.glob(os.path.join(wheels, '*.whl')))
if not found:
  sys.exit(f'accelerator_check: no .whl files in {wheels}; run `make accelerator-wheels`')
for wheel in found:
  if not wheel.endswith('-none-any.whl'):
    sys.exit(f'accelerator_check: {wheel} is not a pure-Python wheel; only those can be used here')
  zipfile.ZipFile(wheel).extractall(site)
print(f'accelerator_check: unpacked {len(found)} wheels into {site}', file=sys.stderr)
EOF
fi

export PYTHONPATH="$REPO:$SITE${PYTHONPATH:+:$PYTHONPATH}"
# The measured convolution forms: in OUT_DIR unless a cache folder is given
# (a persistent one skips the measurements on the next run).
export PGA_JAX_CACHE_DIR="${PGA_JAX_CACHE_DIR:-$OUT/kernel_cache}"
export TF_CPP_MIN_LOG_LEVEL=3
if [ -n "$DRY" ]; then
  export JAX_PLATFORMS=cpu
  export CUDA_VISIBLE_DEVICES=""
else
  # One GPU; fail rather than fall back to the CPU (the env stage checks).
  export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"
  export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"
fi

HELPER="$REPO/experiments/accelerator_check.py"
# run NAME LIMIT_SECONDS ARGS...: one stage, bounded by its limit and the budget.
run() {
  local name="$1" limit="$2"; shift 2
  local left=$((BUDGET - (SECONDS - START)))
  [ "$limit" -le "$left" ] || limit="$left"
  if [ "$limit" -le 5 ]; then
    printf '{"status": "skipped", "error": "the %s-second budget ran out before this stage"}\n' \
      "$BUDGET" > "$OUT/$name.json"
    echo "accelerator_check: $name skipped (budget)" >&2
    return
  fi
  echo "accelerator_check: $name (limit ${limit} s)" >&2
  timeout --kill-after=10 "$limit" "$PYTHON" "$HELPER" "$@" > "$OUT/$name.log" 2>&1
  local status=$?
  if [ $status -eq 124 ] || [ $status -eq 137 ]; then
    printf '{"status": "timeout", "error": "stopped after %s s; see %s.log"}\n' "$limit" \
      "$name" > "$OUT/$name.json"
  elif [ ! -f "$OUT/$name.json" ]; then
    printf '{"status": "error", "error": "exit status %s and no JSON; see %s.log"}\n' \
      "$status" "$name" > "$OUT/$name.json"
  fi
  echo "accelerator_check: $name done in $((SECONDS - START)) s so far (exit $status)" >&2
}

if [ -n "$DRY" ]; then
  LIMITS=(300 400 400 400)   # env, tests, each benchmark, train
else
  LIMITS=(45 150 75 60)
fi
run env "${LIMITS[0]}" env "$OUT" $DRY
if grep -q '"status": "ok"' "$OUT/env.json"; then
  export JAX_DEFAULT_MATMUL_PRECISION=highest
  run tests "${LIMITS[1]}" tests "$OUT" $DRY
  unset JAX_DEFAULT_MATMUL_PRECISION
  run train "${LIMITS[3]}" train "$OUT" $DRY
  for arch in conv_mnist conv_32 conv_64 resnet_32; do
    for dtype in float32 bfloat16; do
      # The dry run checks that each stage runs: bfloat16 for conv_mnist, the
      # other architectures in float32 (each costs a compile of its step).
      if [ -n "$DRY" ] && [ "$dtype" = bfloat16 ] && [ "$arch" != conv_mnist ]; then
        continue
      fi
      run "benchmark_${arch}_${dtype}" "${LIMITS[2]}" benchmark "$OUT" "$arch" "$dtype" $DRY
    done
  done
else
  echo "accelerator_check: the env stage failed (see $OUT/env.json); nothing else ran" >&2
fi
"$PYTHON" "$HELPER" summary "$OUT" > "$OUT/summary.log" 2>&1
status=$?
echo "accelerator_check: finished in $((SECONDS - START)) s; $OUT/summary.json (exit $status)" >&2
exit $status

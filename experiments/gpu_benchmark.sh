#!/usr/bin/env bash
# The search-throughput measurements on a GPU machine, in one script:
#
#   bash experiments/gpu_benchmark.sh [RESULTS_DIR]    # default: gpu_benchmark_results
#
# Needs requirements.txt installed with the CUDA build of JAX (README, Set-up) and
# nvidia-smi; for the optional peer comparison, PyTorch with CUDA and the peer's script.
#
# Steps, most wanted first, sized for about 9 minutes on one H100/H200 in all:
#   - bench_search serial (cold, then warm compilation cache), pipelined, 2 and 4 children
#     per device, the epoch as one device-side loop, float32 and bfloat16: 4 children of
#     2 epochs on synthetic CIFAR-shaped data (compile + 12 x the per-epoch time gives the
#     12-epoch figure);
#   - the PyTorch peer on the same reference blocks and template, when TORCH_PEER names
#     its script (TORCH_PEER=path/to/torch_child.py);
#   - the medium block in bfloat16 with JAX_DEBUG_NANS=True, to find where a NaN starts.
# Each step's status, time and JSON lines go to RESULTS_DIR/summary.txt, its whole output
# to RESULTS_DIR/logs.txt.
#
# Environment: SCALE=cpu runs the same steps at toy size (a dry run on any machine);
# BUDGET=SECONDS cuts the step running when that much time is spent and skips the rest
# (default: no limit); PYTHON, the interpreter (default python3).
set -u
OUT=$(realpath -m "${1:-gpu_benchmark_results}")
PEER=${TORCH_PEER:+$(realpath -m "$TORCH_PEER")}
PYTHON=${PYTHON:-python3}
BUDGET=${BUDGET:-0}
cd "$(dirname "$0")/.."  # the repository root: the benchmarks run as python -m experiments.NAME
mkdir -p "$OUT"
: > "$OUT/logs.txt"
export PYTHONUNBUFFERED=1
if [ "${SCALE:-gpu}" = cpu ]; then
  SIZE="--children=3 --epochs=1 --max_train_examples=256 --filters=8 --repeats=1"
  SIZE="$SIZE --batch_size=64 --dataset=synthetic"
  CHILD="--epochs=1 --max_train_examples=256 --batch_size=64"
  PEER_SIZE="--epochs 1 --train 256 --val 256 --batch 64 --no-compile"
else
  SIZE="--children=4 --epochs=2 --dataset=synthetic"
  CHILD="--epochs=1"
  PEER_SIZE="--epochs 2"
fi
CACHE=$(mktemp -d)  # a cold compilation cache, outside $OUT: thousands of files
STEP_LOG=$(mktemp)
trap 'rm -rf "$CACHE" "$STEP_LOG"' EXIT
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
  > "$OUT/summary.txt" 2>&1 || echo "no nvidia-smi" > "$OUT/summary.txt"

measure() {  # NAME COMMAND...: its status, wall time and JSON lines into summary.txt
  local name=$1; shift
  local start=$SECONDS status limit=()
  if [ "$BUDGET" -gt 0 ]; then
    if [ $((BUDGET - SECONDS)) -lt 20 ]; then
      echo "$name skipped: the ${BUDGET} s budget is spent" >> "$OUT/summary.txt"
      return
    fi
    limit=(timeout $((BUDGET - SECONDS)))
  fi
  ${limit[@]+"${limit[@]}"} "$@" > "$STEP_LOG" 2>&1
  status=$?
  echo "$name rc=$status $((SECONDS - start))s" >> "$OUT/summary.txt"
  grep '^{' "$STEP_LOG" >> "$OUT/summary.txt" || tail -n 3 "$STEP_LOG" >> "$OUT/summary.txt"
  { echo "=== $name: $*"; cat "$STEP_LOG"; } >> "$OUT/logs.txt"
}

BENCH="$PYTHON -m experiments.bench_search $SIZE --compilation_cache_dir=$CACHE"
measure serial_cold $BENCH --compile_ahead=0
measure serial_warm $BENCH --compile_ahead=0
measure pipelined $BENCH --compile_ahead=1
if [ -n "$PEER" ]; then
  measure torch_peer "$PYTHON" "$PEER" --blocks small,medium,deep $PEER_SIZE
fi
measure bfloat16_nans env JAX_DEBUG_NANS=True "$PYTHON" -m experiments.bench_child \
  --blocks=medium --dtype=bfloat16 $CHILD
measure per_device_2 $BENCH --children_per_device=2
measure bfloat16 $BENCH --dtype=bfloat16 --compile_ahead=1
measure device_loop $BENCH --epoch_loop=device --compile_ahead=1
measure per_device_4 $BENCH --children_per_device=4
cat "$OUT/summary.txt"

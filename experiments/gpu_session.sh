#!/usr/bin/env bash
# Every GPU measurement the search-throughput work still lacks, in one call of about 9
# minutes on one H100/H200: each step's status, time and JSON lines in $OUT/summary.txt,
# its whole output in $OUT/logs.txt (two files: the device tool returns at most eight):
#   - bench_search serial (cold, then warm cache), pipelined, 2 and 4 children per device,
#     the epoch as one device-side scan, float32 and bfloat16, on the same device;
#   - the PyTorch peer on the same three reference blocks and template;
#   - the medium block in bfloat16 with jax_debug_nans, to find where its NaN starts.
# Sized to fit: 4 children and 2 epochs (the per-epoch time gives the 12-epoch figure:
# compile + 12 x epoch), synthetic CIFAR-shaped data (TFDS is not on the GPU image).
#
# Prepared here (the GPU image lacks ml_collections; ../shared does not travel):
#   echo /.whl/ >> .git/info/exclude; echo /.peer/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_17_x86_64 -d .whl ml_collections==1.1.0
#   mkdir -p .peer && cp ../shared/peers/torch_child.py .peer/
# Then, with the device tool: carry [".whl", ".peer"], timeout_s 600, command
#   bash experiments/gpu_session.sh
# SCALE=cpu runs the same steps at toy size (a dry run of the script here).
set -u
OUT=${OUT:-/tmp/gpu_session}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=".:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
if [ "${SCALE:-gpu}" = cpu ]; then
  SIZE="--children=3 --epochs=1 --max_train_examples=256 --filters=8 --repeats=1 --batch_size=64 --dataset=synthetic"
  CHILD="--epochs=1 --max_train_examples=256 --batch_size=64"
  PEER="--epochs 1 --train 256 --val 256 --batch 64 --no-compile"
  BUDGET=${BUDGET:-900}
else
  SIZE="--children=4 --epochs=2 --dataset=synthetic"
  CHILD="--epochs=1"
  PEER="--epochs 2"
  BUDGET=${BUDGET:-540}  # seconds: the device tool's 600 s limit, less start-up
fi
CACHE=/tmp/gpu_session_jax_cache  # outside $OUT: thousands of files
rm -rf "$CACHE"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
  > "$OUT/summary.txt" 2>&1 || echo "no nvidia-smi" > "$OUT/summary.txt"

measure() {  # NAME COMMAND...: its status, wall time and JSON lines into summary.txt
  local name=$1; shift
  local start=$SECONDS status left=$((BUDGET - SECONDS))
  if [ "$left" -lt 20 ]; then
    echo "$name skipped: the ${BUDGET} s budget is spent" >> "$OUT/summary.txt"
    return
  fi
  timeout "$left" "$@" > /tmp/gpu_session_step.log 2>&1
  status=$?
  echo "$name rc=$status $((SECONDS - start))s" >> "$OUT/summary.txt"
  grep '^{' /tmp/gpu_session_step.log >> "$OUT/summary.txt" ||
    tail -n 3 /tmp/gpu_session_step.log >> "$OUT/summary.txt"
  { echo "=== $name: $*"; cat /tmp/gpu_session_step.log; } >> "$OUT/logs.txt"
}

# Most wanted first: a step that would overrun the budget is cut, and the rest skipped.
BENCH="python3 experiments/bench_search.py $SIZE --compilation_cache_dir=$CACHE"
PEER_SCRIPT=.peer/torch_child.py
[ -f "$PEER_SCRIPT" ] || PEER_SCRIPT=../shared/peers/torch_child.py
measure serial_cold $BENCH --compile_ahead=0
measure serial_warm $BENCH --compile_ahead=0
measure pipelined $BENCH --compile_ahead=1
measure torch_peer python3 "$PEER_SCRIPT" --blocks small,medium,deep $PEER
measure bfloat16_nans env JAX_DEBUG_NANS=True python3 experiments/bench_child.py --blocks=medium --dtype=bfloat16 $CHILD
measure per_device_2 $BENCH --children_per_device=2
measure bfloat16 $BENCH --dtype=bfloat16 --compile_ahead=1
measure device_loop $BENCH --epoch_loop=device --compile_ahead=1
measure per_device_4 $BENCH --children_per_device=4
cat "$OUT/summary.txt"

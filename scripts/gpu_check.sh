#!/usr/bin/env bash
# One prepared GPU check (at most 8 minutes on one H200), run from the source tree:
#   1. `python -m jaxcnn.bench` on the GPU: jaxcnn against torch on the same device, by precision
#      pair (fp32 full, each framework's fp32 default, bf16; torch.compile in the bf16 pair),
#      mnist_cnn, resnet50 (224), cifar_resnet18, densenet121 (224, bf16) as time allows;
#   2. the parity suite's quick part with JAX at `highest` precision (oneDNN cases skip off the CPU);
#   3. a short CLI training run (`jaxcnn train --model mnist_cnn` on the bundled digits data;
#      the dry run trains the mlp on 64 examples).
# Writes OUT_DIR/benchmark-gpu.json (the benchmark's JSON) and OUT_DIR/benchmark-gpu.md (its table,
# the date, the machine, the parity and training results).
#
# Usage: scripts/gpu_check.sh [--dry-run] [--out-dir DIR] [--log FILE]
#   --dry-run   tiny sizes (seconds, runs on a CPU): checks the script, not the GPU
#   --out-dir   where the two files go (default: docs)
#   --log       also keep the whole output here
# Uses ${PYTHON:-python3} as it is (no installs, no virtual environment) with the tree on PYTHONPATH.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT_DIR=docs
DRY=0
LOG=
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out-dir) OUT_DIR=$2; shift ;;
    --log) LOG=$2; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
JSON="$OUT_DIR/benchmark-gpu.json"
MD="$OUT_DIR/benchmark-gpu.md"
start=$SECONDS

if [ "$DRY" = 1 ]; then
  BENCH=(--models mlp --steps 2 --batch-size 8 --max-seconds 0.2 --no-compile --no-peak --host-devices 1)
  BENCH_LIMIT=300
  PARITY=(parity_tests/test_ops_errors.py -k "conv or pool")
  PARITY_LIMIT=200
  TRAIN=(--model mlp --epochs 1 --train-limit 64 --eval-limit 64 --batch-size 32)
  TRAIN_LIMIT=200
else
  # Budget (s): bench 300 (no model starts after 230), parity 100, training 60, start-ups ~20.
  BENCH=(--models mnist_cnn resnet50 cifar_resnet18 densenet121 --steps 10 --max-seconds 1.5
         --compile-pairs bf16 --time-budget 230)
  BENCH_LIMIT=300
  PARITY=(parity_tests/test_ops_conv.py parity_tests/test_ops_pooling.py parity_tests/test_ops_norm.py
          parity_tests/test_ops_misc.py parity_tests/test_models_mnist_cnn.py)
  PARITY_LIMIT=100
  TRAIN=(--model mnist_cnn --epochs 3 --batch-size 128)
  TRAIN_LIMIT=60
fi

status=0
echo "== gpu_check: benchmark (limit ${BENCH_LIMIT} s)"
timeout "$BENCH_LIMIT" "$PYTHON" -m jaxcnn.bench "${BENCH[@]}" --out "$JSON" 2>&1 | tee "$TMP/bench.log"
bench_rc=${PIPESTATUS[0]}
[ "$bench_rc" = 0 ] || status=1

echo "== gpu_check: parity, quick part, JAX at highest precision (limit ${PARITY_LIMIT} s)"
JAX_DEFAULT_MATMUL_PRECISION=highest timeout "$PARITY_LIMIT" "$PYTHON" -m pytest -q -p no:cacheprovider \
  "${PARITY[@]}" 2>&1 | tee "$TMP/parity.log"
parity_rc=${PIPESTATUS[0]}
[ "$parity_rc" = 0 ] || status=1
parity=$(grep -E '[0-9]+ (passed|failed|error)' "$TMP/parity.log" | tail -1 | tr -d '=' | sed 's/^ *//;s/ *$//')
[ "$parity_rc" = 124 ] && parity="stopped at the ${PARITY_LIMIT} s limit after $(grep -cE 'PASSED|FAILED' "$TMP/parity.log" || true) reported; ${parity:-no summary}"

echo "== gpu_check: CLI training (limit ${TRAIN_LIMIT} s)"
train_start=$SECONDS
timeout "$TRAIN_LIMIT" "$PYTHON" -m jaxcnn.cli train --dataset digits "${TRAIN[@]}" \
  --out "$TMP/run" --no-progress --no-tensorboard --no-plots 2>&1 | tee "$TMP/train.log"
train_rc=${PIPESTATUS[0]}
[ "$train_rc" = 0 ] || status=1
train_s=$((SECONDS - train_start))
accuracy=$(grep -E '^test accuracy' "$TMP/train.log" | tail -1)

total=$((SECONDS - start))
notes=(
  --note "Parity, quick part (\`${PARITY[*]}\`) with \`JAX_DEFAULT_MATMUL_PRECISION=highest\`: ${parity:-no result} (exit ${parity_rc})."
  --note "Training: \`jaxcnn train --model mnist_cnn --dataset digits ${TRAIN[*]}\`: ${accuracy:-no result}, ${train_s} s wall including start-up and compilation (exit ${train_rc})."
  --note "Whole \`scripts/gpu_check.sh$([ "$DRY" = 1 ] && echo ' --dry-run')\`: ${total} s; benchmark exit ${bench_rc}."
)
if [ -f "$JSON" ]; then
  "$PYTHON" -m jaxcnn.bench.report "$JSON" --markdown "$MD" "${notes[@]}" || status=1
else
  printf '# jaxcnn GPU check\n\nThe benchmark wrote no results (exit %s).\n' "$bench_rc" > "$MD"
  status=1
fi
[ -n "$LOG" ] && cat "$TMP/bench.log" "$TMP/parity.log" "$TMP/train.log" > "$LOG"
echo "== gpu_check: wrote $JSON and $MD in ${total} s (status ${status})"
exit "$status"

#!/usr/bin/env bash
# The prepared GPU check (issue 5: seed protocol through the TensorFlow-free path; issue 6: step time
# of jaxres and PyTorch, fp32 and bf16, batch 128 and 1024; a bfloat16 training run), for a session that is lent a GPU.
#
# Here, once:   make gpu-carry       (copies the dataset files the GPU image needs into the ignored .gpu/)
# On the GPU:   bash benchmarks/gpu_check.sh   with .gpu carried; logs and JSON land in $OUT.
# DATASETS (default mnist), PROTOCOL (default seed), SEEDS (default 0: one seed fits the device time) and
# BENCH_STEPS (default 40), BF16_EPOCHS (default 3), FRAMEWORKS (default jaxres,pytorch) override the plan,
# PYTHON (default python3) names the interpreter; a dry run on a CPU: make gpu-carry, then
# PROTOCOL=tiny BENCH_STEPS=4 BF16_EPOCHS=1 DATASETS=mnist,cifar10 FRAMEWORKS=jaxres PYTHON=.venv/bin/python OUT=/tmp/gpu-dry bash benchmarks/gpu_check.sh
set -uo pipefail
OUT=${OUT:-/tmp/jaxres-gpu}
DATASETS=${DATASETS:-mnist}
PROTOCOL=${PROTOCOL:-seed}
SEEDS=${SEEDS:-0}
BENCH_STEPS=${BENCH_STEPS:-40}
RAW=${RAW:-/tmp/jaxres-raw}
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
if ! $PY -c "import pydantic" 2>/dev/null; then  # not in the GPU image: the wheels make gpu-carry brought
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/jaxres-site .gpu/wheels/*.whl || exit 1
  export PYTHONPATH=$PWD:/tmp/jaxres-site
fi
mkdir -p "$OUT" "$RAW/mnist" "$RAW/cifar10"
(nvidia-smi -L || echo "no nvidia-smi") > "$OUT/device.txt" 2>&1
$PY -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())" | tee -a "$OUT/device.txt"

cp .gpu/mnist/*.gz "$RAW/mnist/"
if [[ $DATASETS == *cifar10* && ! -f $RAW/cifar10/cifar-10-binary.tar.gz ]]; then
  $PY .gpu/rebuild_cifar10_binary.py .gpu/cifar10-jpeg.tar.xz "$RAW/cifar10"
fi
(cd "$RAW" && sha256sum mnist/*.gz cifar10/*.tar.gz 2>/dev/null) > "$OUT/raw_sha256.txt"

echo "== seed protocol: $DATASETS"
time $PY -m experiments.compare --study "$PROTOCOL" --datasets "$DATASETS" --seeds "$SEEDS" --raw-dir "$RAW" \
  --out /tmp/jaxres-seed --no-progress > "$OUT/compare.log" 2>&1
echo "compare exit $?"; tail -5 "$OUT/compare.log"
cp /tmp/jaxres-seed/summary.md /tmp/jaxres-seed/report.md "$OUT/" 2>/dev/null

echo "== seed protocol in bfloat16: mnist seed_cnn seed 0, ${BF16_EPOCHS:-3} epochs"
time $PY -m experiments.compare --study "$PROTOCOL" --datasets mnist --models seed_cnn --seeds 0 \
  --set compute.precision=bfloat16 --epochs "${BF16_EPOCHS:-3}" --raw-dir "$RAW" --out /tmp/jaxres-bf16 --no-progress \
  > "$OUT/compare_bf16.log" 2>&1
echo "compare bfloat16 exit $?"; tail -3 "$OUT/compare_bf16.log"
cp /tmp/jaxres-bf16/summary.md "$OUT/summary_bf16.md" 2>/dev/null

for batch in 128 1024; do  # float32 and bfloat16 side by side in the same rounds
  echo "== step time float32,bfloat16 batch $batch"
  $PY -m benchmarks.step_time --frameworks "${FRAMEWORKS:-jaxres,pytorch}" --dtype float32,bfloat16 --batch $batch \
    --steps "$BENCH_STEPS" --rounds 4 --json "$OUT/step_${batch}.json" > "$OUT/step_${batch}.txt" 2>&1
  echo "exit $?"; sed -n '/^| case/,$p' "$OUT/step_${batch}.txt"
done

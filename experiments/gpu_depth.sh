#!/usr/bin/env bash
# He et al.'s depth study (`python -m experiments.compare --study depth`: plain and resnet 20 ... 110 on
# CIFAR-10, 64k iterations) on a GPU machine without TensorFlow: CIFAR-10 is rebuilt from the carried
# JPEG archive and read with numpy; batches are made on the device (data.source=device, the default).
#
# Here, once:   make gpu-carry      (copies what the GPU image needs into the ignored .gpu/, ~30 MB)
# On the GPU:   bash experiments/gpu_depth.sh   with .gpu carried; results, report and figures land in $OUT.
# A dry run on a CPU (seconds per network):   DRY_RUN=1 MODELS=plain20,resnet20 bash experiments/gpu_depth.sh
#
# MODELS (default: the preset's ten), SEEDS (default 0,1,2), BUDGET_S (default 540: the study is stopped
# with SIGINT after that many seconds, so finished epochs and the files below still come back; a run
# continues from its checkpoint when the same RUNS folder is there again), RUNS (default /tmp/jaxres-depth),
# PYTHON (default python3). The full preset is about 30 x 64k steps: many device sessions, or a longer lease.
set -uo pipefail
OUT=${OUT:-/tmp/jaxres-gpu-depth}
RUNS=${RUNS:-/tmp/jaxres-depth}
RAW=${RAW:-/tmp/jaxres-raw}
SEEDS=${SEEDS:-0,1,2}
BUDGET_S=${BUDGET_S:-540}
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
if ! $PY -c "import pydantic" 2>/dev/null; then  # not in the GPU image: the wheels make gpu-carry brought
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/jaxres-site .gpu/wheels/*.whl || exit 1
  export PYTHONPATH=$PWD:/tmp/jaxres-site
fi
mkdir -p "$OUT" "$RAW/cifar10"
(nvidia-smi -L || echo "no nvidia-smi") > "$OUT/device.txt" 2>&1
$PY -c "import jax; print('jax', jax.__version__, jax.devices())" | tee -a "$OUT/device.txt"

if [[ ! -f $RAW/cifar10/cifar-10-binary.tar.gz ]]; then
  if [[ -f .gpu/cifar10-jpeg.tar.xz ]]; then
    $PY .gpu/rebuild_cifar10_binary.py .gpu/cifar10-jpeg.tar.xz "$RAW/cifar10" || exit 1
  else
    echo "gpu_depth: no CIFAR-10 in $RAW/cifar10 and no .gpu/cifar10-jpeg.tar.xz (run make gpu-carry here first)" >&2
    exit 2
  fi
fi

args=(--study depth --seeds "$SEEDS" --raw-dir "$RAW" --out "$RUNS" --no-progress)
[[ -n ${MODELS:-} ]] && args+=(--models "$MODELS")
if [[ -n ${DRY_RUN:-} ]]; then  # the same code path at a tiny size: 2 steps an epoch, the schedule's steps inside
  args+=(--epochs 2 --train-subset 256 --test-subset 200 --set "schedule.boundaries=[1,3]")
fi
echo "== python -m experiments.compare ${args[*]}"
timeout -s INT "$BUDGET_S" $PY -m experiments.compare "${args[@]}" 2>&1 | tee "$OUT/compare.log"
status=${PIPESTATUS[0]}
echo "compare exit $status"
[[ $status == 124 || $status == 130 ]] && echo "stopped after BUDGET_S=$BUDGET_S s: run the script again to continue"
$PY -m experiments.compare --report-only "$RUNS" > /dev/null 2>&1 || echo "no finished run to report yet"
# everything but the checkpoints (they stay in $RUNS for the next call on this machine)
(cd "$RUNS" && find . -maxdepth 2 \( -name '*.json' -o -name '*.md' -o -name '*.csv' -o -name '*.png' \
  -o -name 'layer_norms.npz' \) -print0 | xargs -0 -r cp --parents -t "$OUT")
exit "$status"

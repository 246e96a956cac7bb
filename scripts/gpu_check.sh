#!/usr/bin/env bash
# The GPU checks of issue 13, as one prepared run for a lent GPU machine (device tool).
#
# Why one script: a session gets a few minutes of one GPU at most, and each start costs a
# minute, so every check that needs a GPU runs in one call, each with its own time limit,
# and writes its figures under $OUT. Nothing here is needed on a machine without a GPU.
#
# The machine's python3 holds torch, numpy, scipy, safetensors, tqdm and matplotlib, but no
# SimpleITK and no network. Prepare once, here (the folder is ignored by git):
#   mkdir -p .gpu/wheels && .venv/bin/python -m pip download SimpleITK --python-version 3.12 \
#       --only-binary=:all: --no-deps -d .gpu/wheels
#   .venv/bin/python -c 'from napari_vae_anomaly.data.mni_template import save_template_npz
#   save_template_npz(".gpu/mni152.npz")'
# then call the device tool's run with carry [".gpu/wheels", ".gpu/mni152.npz"] and the command
#   bash scripts/gpu_check.sh
# (timeout_s 540 leaves room for a second try). Dry run on a CPU, a few minutes:
#   DEVICE=cpu QUICK=1 PY=.venv/bin/python bash scripts/gpu_check.sh
#
# Writes to $OUT: env.txt, tests.txt, predictors.txt, training.txt, precision.txt, cohort.txt.
# Their tables go into docs/benchmarks.md (GPU section) by hand, with this command.
set -u
OUTD=${OUT:-/tmp/gpu_check}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
QUICK=${QUICK:-}
mkdir -p "$OUTD"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 PYTHONUTF8=1
# the MNI152 template the realistic data is made from (bench_precision), carried as a file
[ -f .gpu/mni152.npz ] && export NAPARI_VAE_ANOMALY_TEMPLATE=$PWD/.gpu/mni152.npz
if ls .gpu/wheels/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps .gpu/wheels/*.whl > "$OUTD/env.txt" 2>&1
fi

step() {  # step NAME SECONDS COMMAND...: run with a limit, keep its output and its status
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" > "$OUTD/$name.txt" 2>&1
    local rc=$?
    echo "$name: exit $rc after $((SECONDS - t0)) s" | tee -a "$OUTD/env.txt"
}

{
    date -u
    nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
    $PY -c 'import torch, numpy, SimpleITK; print("torch", torch.__version__, "cuda",
torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "",
"numpy", numpy.__version__, "SimpleITK", SimpleITK.Version_VersionString())'
} >> "$OUTD/env.txt" 2>&1

# every map on the device against the CPU's (1e-3 of its range), and the precision rule
step tests 120 $PY -m pytest -q -p no:cacheprovider -o "filterwarnings=ignore::DeprecationWarning" \
    tests/test_detection_device.py tests/test_precision.py

if [ -n "$QUICK" ]; then
    step predictors 300 $PY benchmarks/bench_predictors.py --device "$DEVICE" --quick
    step training 120 $PY benchmarks/bench_training.py --device "$DEVICE" --sizes 64 --steps 2
    step precision 300 $PY benchmarks/bench_precision.py --device "$DEVICE" --predictors rec elbo_grad \
        --precisions bf16
    step cohort 120 $PY benchmarks/bench_cohort.py --device "$DEVICE" --cases 6
else
    # goals on one H200 (issue 13): gradient maps of 155x240x240 < 0.5 s, energy T=50 < 5 s
    step predictors 200 $PY benchmarks/bench_predictors.py --device "$DEVICE" --naive-slices 6 \
        --energy-slices 155 --threads 8
    # goal: the training pipeline >= 80 % of the bare step's throughput
    step training 90 $PY benchmarks/bench_training.py --device "$DEVICE" --steps 20
    step precision 120 $PY benchmarks/bench_precision.py --device "$DEVICE" --threads 8
    step cohort 60 $PY benchmarks/bench_cohort.py --device "$DEVICE" --cases 40 --threads 8
fi
echo "done: $(ls "$OUTD")" | tee -a "$OUTD/env.txt"

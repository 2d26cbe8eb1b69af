#!/usr/bin/env bash
# Train on a lent GPU machine (the device tool's `run`), with Keras on its JAX backend: that machine has JAX with
# CUDA but neither TensorFlow nor Keras, and reaches no package index. Quantising, model cards and everything else
# that needs TensorFlow stay on the developer machine; the trained .keras files load on either backend.
#
# First, on the developer machine: bash fer_batch/training/device_prepare.sh (fills the git-ignored gpu/ folder).
# Then call the device tool with carry ["gpu"], timeout_s at least SECONDS + 60, and a command such as
#   bash fer_batch/training/device_train.sh 'python3 -m fer_batch train "$DATA" --out "$RUNS/r1" --recipe resnet ...' 420
# The quoted commands run with $DATA (the unpacked dataset folder) and $RUNS (a folder for run outputs) set, until
# SECONDS (default 420) after this script started; then they are stopped (every run keeps its best and its last
# finished epoch) and the results packed, before the device tool's own limit ends the call. Several runs may share
# the GPU (`cmd1 & cmd2 & wait`). Size --epochs to the budget: a run stopped early keeps a learning-rate schedule
# sized for all its epochs.
# What comes back, as $OUT/runs.tar.part-NN (15 MiB parts; the tool returns at most 8 files and 64 MiB, so at most
# three resnet runs, 20 MB each, a call): every .keras model under $RUNS (a run's model.keras, a reproduce plan's
# ensembles), history.csv, train_config.json and, for finished runs, metrics.json. Checkpoints stay behind unless
# DEVICE_TRAIN_CHECKPOINTS=1 (about 40 MB each for a resnet, with its optimizer state), which lets a later call or
# this machine --resume. Join the parts here with
#   cat runs.tar.part-* | tar -x
# The exit status is 0 when the commands ended well or at the budget (the normal case) and every run folder holds
# at least one finished epoch, else 1.
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root
began=$(date +%s)
say() { echo "device_train [$(( $(date +%s) - began ))s]: $*"; }

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: bash fer_batch/training/device_train.sh 'COMMANDS' [SECONDS]  (see the comment at the top of this file)" >&2
    exit 2
fi
budget="${2:-420}"
if ! python3 -c "import keras" 2>/dev/null; then
    site=$(ls gpu/site-keras-*.tar.xz 2>/dev/null | head -n 1)
    [ -n "$site" ] || { echo "device_train: no Keras here and no gpu/site-keras-*.tar.xz (device_prepare.sh)" >&2; exit 2; }
    mkdir -p /tmp/fer_site && tar -xJf "$site" -C /tmp/fer_site
    export PYTHONPATH="/tmp/fer_site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export KERAS_BACKEND=jax
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # runs that share the GPU each take only what they use
python3 -c "import jax, keras; print('device_train: keras', keras.__version__, 'on', jax.devices())"

export DATA=/tmp/fer_data RUNS=/tmp/fer_runs
mkdir -p "$RUNS"
if [ ! -d "$DATA/train" ]; then
    python3 -m fer_batch.training.dataset_pack unpack gpu/fer2013.pack --out "$DATA"
fi
say "dataset ready in $DATA"

left=$(( budget - ($(date +%s) - began) ))
if [ "$left" -lt 10 ]; then
    echo "device_train: the set-up took $(( $(date +%s) - began )) of the $budget s budget" >&2
    exit 2
fi
status=0
# timeout signals the whole process group, so runs started in the background stop too.
timeout -k 20 "$left" bash -c "$1" || status=$?
failed=0
case "$status" in
    0) say "commands finished" ;;
    124|137) say "commands stopped at the budget ($budget s)" ;;
    *) say "commands ended with status $status"; failed=1 ;;
esac
for run in "$RUNS"/*/; do
    [ -d "$run" ] || continue
    if [ -s "$run/history.csv" ]; then
        say "$(basename "$run"): $(( $(wc -l < "$run/history.csv") - 1 )) epoch(s) finished"
    else
        say "$(basename "$run"): no epoch finished"
        failed=1
    fi
done

out="${OUT:-/tmp/fer_out}"
mkdir -p "$out"
keep=(-name '*.keras' -o -name history.csv -o -name metrics.json -o -name train_config.json)
if [ "${DEVICE_TRAIN_CHECKPOINTS:-0}" = 1 ]; then
    skip=(-false)
else
    skip=(-name checkpoints -prune)
fi
(cd "$RUNS" && find . \( "${skip[@]}" \) -o -type f \( "${keep[@]}" -o -path '*/checkpoints/*' \) -print0 \
    | tar --null -T - -cf "$out/runs.tar")
split -b 15M -d "$out/runs.tar" "$out/runs.tar.part-" && rm "$out/runs.tar"
ls -l "$out"
say "done"
exit "$failed"

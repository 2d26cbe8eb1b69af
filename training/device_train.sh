#!/usr/bin/env bash
# Train on a lent GPU machine (the device tool's `run`), with Keras on its JAX backend: that machine has JAX with
# CUDA but neither TensorFlow nor Keras, and reaches no package index. Quantising, model cards and everything else
# that needs TensorFlow stay on the developer machine; the trained .keras files load on either backend.
#
# First, on the developer machine: bash training/device_prepare.sh (fills the git-ignored gpu/ folder). Then call
# the device tool with carry ["gpu"], timeout_s at least SECONDS + 120, and a command such as
#   bash training/device_train.sh 'python3 -m fer_batch train "$DATA" --out "$RUNS/r1" --recipe resnet ...' 420
# The quoted commands run with $DATA (the unpacked dataset folder) and $RUNS (a folder for run outputs) set, for
# SECONDS (default 420); then they are stopped (every run keeps its last finished epoch) and the results packed,
# before the device tool's own limit ends the call. Several runs may share the GPU (`cmd1 & cmd2 & wait`).
# Every run's model.keras, history.csv, metrics.json and train_config.json (checkpoints left out) come back as
# $OUT/runs.tar.part-NN, 15 MiB parts: the tool returns at most 8 files and 64 MiB, so at most three resnet runs
# (20 MB each) a call. Join them here with
#   cat runs.tar.part-* | tar -x
set -euo pipefail
cd "$(dirname "$0")/.."
began=$(date +%s)
say() { echo "device_train [$(( $(date +%s) - began ))s]: $*"; }

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: bash training/device_train.sh 'COMMANDS' [SECONDS]  (see the comment at the top of this file)" >&2
    exit 2
fi
budget="${2:-420}"
if ! python3 -c "import keras" 2>/dev/null; then
    [ -f gpu/site.tar.xz ] || { echo "device_train: no Keras here and no gpu/site.tar.xz (device_prepare.sh)" >&2; exit 2; }
    mkdir -p /tmp/fer_site && tar -xJf gpu/site.tar.xz -C /tmp/fer_site
    export PYTHONPATH="/tmp/fer_site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export KERAS_BACKEND=jax
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # runs that share the GPU each take only what they use
python3 -c "import jax, keras; print('device_train: keras', keras.__version__, 'on', jax.devices())"

export DATA=/tmp/fer_data RUNS=/tmp/fer_runs
mkdir -p "$RUNS"
if [ ! -d "$DATA/train" ]; then
    python3 -m training.dataset_pack unpack gpu/fer2013.pack --out "$DATA"
fi
say "dataset ready in $DATA"

status=0
# timeout signals the whole process group, so runs started in the background stop too.
timeout -k 20 "$budget" bash -c "$1" || status=$?
say "commands ended with status $status (124: stopped after $budget s)"

out="${OUT:-/tmp/fer_out}"
mkdir -p "$out"
(cd "$RUNS" && find . -maxdepth 2 \( -name model.keras -o -name history.csv -o -name metrics.json \
    -o -name train_config.json \) -print0 | tar --null -T - -cf "$out/runs.tar")
split -b 15M -d "$out/runs.tar" "$out/runs.tar.part-" && rm "$out/runs.tar"
ls -l "$out"
say "done"
exit "$status"

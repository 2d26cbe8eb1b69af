#!/usr/bin/env bash
# Prepare gpu/ (git-ignored) for fer_batch/training/device_train.sh, on the developer machine, from the repository root:
#   bash fer_batch/training/device_prepare.sh [DATASET]      # DATASET: folder or .npz.xz, default ../shared/data/fer2013_train_validation.npz.xz
# It writes
#   gpu/fer2013.pack   the dataset, packed losslessly (python -m fer_batch.training.dataset_pack; about 2 minutes)
#   gpu/site-keras-VERSION.tar.xz
#                      Keras (this venv's version) and the two packages it needs that the GPU machine lacks (namex,
#                      optree), unpacked for that machine's Python 3.12, so nothing is installed there
# Delete gpu/fer2013.pack to pack another dataset; a site archive of another Keras version is replaced.
# and prints what a device call with carry ["gpu"] will send against the tool's 64 MiB limit.
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root
dataset="${1:-../shared/data/fer2013_train_validation.npz.xz}"
python="${PYTHON:-.venv/bin/python}"
keras_version="$("$python" -c 'from importlib.metadata import version; print(version("keras"))')"
mkdir -p gpu

if [ ! -f gpu/fer2013.pack ]; then
    "$python" -m fer_batch.training.dataset_pack pack "$dataset" --out gpu/fer2013.pack
fi

site="gpu/site-keras-$keras_version.tar.xz"
if [ ! -f "$site" ]; then
    rm -f gpu/site-keras-*.tar.xz
    tmp="$(mktemp -d)"
    "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_28_x86_64 -d "$tmp/wheels" "keras==$keras_version" namex optree
    mkdir "$tmp/site"
    for wheel in "$tmp"/wheels/*.whl; do
        "$python" -m zipfile -e "$wheel" "$tmp/site"
    done
    tar -C "$tmp/site" -cJf "$site" .
    rm -rf "$tmp"
fi

# What the device tool sends: tracked files, untracked files git does not ignore, and the carried gpu/.
# (A file deleted but still in the index does not travel: stat skips it.)
tree=$(git ls-files -z --cached --others --exclude-standard | { xargs -0 stat -c %s 2>/dev/null || true; } \
    | awk '{s+=$1} END {print s+0}')
carried=$(find gpu -type f -printf '%s\n' | awk '{s+=$1} END {print s}')
limit=$((64 * 1024 * 1024))
total=$((tree + carried))
echo "device_prepare: keras $keras_version; working tree $tree bytes + gpu/ $carried bytes = $total of $limit"
if [ "$total" -gt "$limit" ]; then
    echo "device_prepare: over the device tool's limit by $((total - limit)) bytes" >&2
    exit 1
fi

"""What each training recipe costs before it is trained: training speed and int8 inference speed.

    python benchmarks/recipe_benchmark.py                     # every recipe
    python benchmarks/recipe_benchmark.py resnet wide         # some of them

Prints, per recipe and on random weights and random pixels (speed does not depend on what was learnt):
* parameters;
* training images/s with ``train_on_batch`` at batch 64 (SGD with Nesterov momentum), in float32 and with
  ``--mixed-precision`` (bfloat16 compute), after warm-up steps. The augmentation pipeline of a real run
  costs roughly another 15% on top;
* int8 inference faces/s, one pass per face at batch 256, through the same TFLite runner ``--precision int8``
  uses (mirror averaging halves it). The int8 copy is calibrated on random pixels, which is fine for speed
  and meaningless for accuracy.

Use it to pick an architecture that fits a speed target before spending hours training it.
Machines are noisy: run it on an idle machine and read the figures as rates.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fer_batch.analysis.classify import Int8Runner  # noqa: E402
from fer_batch.model_file import EMOTIONS, ModelInfo  # noqa: E402
from fer_batch.runtime import import_tensorflow_quietly  # noqa: E402

SHAPE = (48, 48, 1)


def training_rate(recipe: str, mixed: bool, steps: int) -> tuple[int, float]:
    import keras  # noqa: PLC0415

    from fer_batch.training.models import MIXED_POLICY, build_model, with_dtype_policy  # noqa: PLC0415

    model = build_model(recipe, SHAPE, len(EMOTIONS))
    if mixed:
        model = with_dtype_policy(model, MIXED_POLICY)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True),
                  loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (64, *SHAPE)).astype(np.float32)
    y = rng.integers(0, len(EMOTIONS), 64)
    for _ in range(3):
        model.train_on_batch(x, y)
    began = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return model.count_params(), steps * 64 / (time.perf_counter() - began)


def int8_rate(recipe: str, repeats: int) -> float:
    from fer_batch.training.models import build_model  # noqa: PLC0415
    from fer_batch.training.quantize import convert_int8  # noqa: PLC0415

    info = ModelInfo(class_names=EMOTIONS, input_size=SHAPE[:2], channels=1)
    rng = np.random.default_rng(1)
    calibration = rng.uniform(0, 255, (32, *SHAPE)).astype(np.float32)
    runner = Int8Runner(convert_int8(build_model(recipe, SHAPE, len(EMOTIONS)), info, calibration), info)
    batch = rng.uniform(0, 255, (256, *SHAPE)).astype(np.float32)
    runner(batch)
    began = time.perf_counter()
    for _ in range(repeats):
        runner(batch)
    return repeats * 256 / (time.perf_counter() - began)


def main() -> None:
    from fer_batch.training.models import RECIPES  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("recipes", nargs="*", default=list(RECIPES), help="recipe names (default: all)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per recipe and precision")
    parser.add_argument("--repeats", type=int, default=8, help="timed int8 batches of 256 per recipe")
    args = parser.parse_args()
    unknown = sorted(set(args.recipes) - set(RECIPES))
    if unknown:
        parser.error(f"unknown recipe(s) {', '.join(unknown)}; choose from {', '.join(RECIPES)}")
    import_tensorflow_quietly()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(f"{'recipe':<10}{'params':>12}{'train f32':>12}{'train bf16':>12}{'int8 faces/s':>14}")
    for recipe in args.recipes:
        params, f32 = training_rate(recipe, mixed=False, steps=args.steps)
        _, bf16 = training_rate(recipe, mixed=True, steps=args.steps)
        int8 = int8_rate(recipe, args.repeats)
        print(f"{recipe:<10}{params:>12,}{f32:>12.0f}{bf16:>12.0f}{int8:>14,.0f}", flush=True)


if __name__ == "__main__":
    main()

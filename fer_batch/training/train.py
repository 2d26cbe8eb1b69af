"""``fer-batch train``: fit a model on ``<dataset>/train`` and pick the best epoch on ``<dataset>/validation``.

Training is a generator of :class:`EpochResult` so the caller decides how to
show progress; every epoch ends with a checkpoint (model and optimizer state)
and a row in ``history.csv``, so an interrupted run continues with ``resume``.

Output folder::

    model.keras            best epoch by validation accuracy, with fer-batch metadata (pass the folder to --model)
    history.csv            one row per epoch: loss, accuracy, val_loss, val_accuracy, learning_rate, seconds
    curves.png             accuracy and loss, train vs validation
    confusion_matrix.png   validation confusion matrix of model.keras
    metrics.json           validation metrics of model.keras (same schema as ``fer-batch evaluate``)
    train_config.json      the options of the run
    checkpoints/last.keras the latest epoch, with optimizer state, for --resume
"""

from __future__ import annotations

import json
import math
import platform
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fer_batch.errors import UsageError
from fer_batch.model_file import ModelInfo, save_model
from fer_batch.training.data import (
    TRAIN_SPLIT,
    VALIDATION_SPLIT,
    ImageSet,
    load_dataset,
    load_image_folder,
    make_batches,
)
from fer_batch.training.metrics import format_report
from fer_batch.training.options import Optimizer, Recipe, Schedule, Selection, TrainConfig, config_from_json
from fer_batch.training.plots import plot_history
from fer_batch.training.targets import crowd_majority_set, training_targets

MODEL_FILE = "model.keras"
CHECKPOINT_FILE = "checkpoints/last.keras"
STATE_FILE = "checkpoints/state.json"
HISTORY_FILE = "history.csv"
CONFIG_FILE = "train_config.json"


@dataclass(frozen=True)
class EpochResult:
    """What one finished epoch reports."""

    epoch: int  # 1-based
    epochs: int
    metrics: dict[str, float]
    seconds: float
    best: bool  # this epoch improved validation accuracy and was saved as model.keras


@dataclass
class TrainResult:
    out: Path
    model_path: Path
    best_epoch: int
    report: dict[str, Any] = field(default_factory=dict)


def _class_weights(data: ImageSet, power: float = 1.0) -> dict[int, float]:
    """Inverse class frequency of what the run fits (the soft targets' class mass when set, else the labels),
    raised to ``power``: 1 balances the classes fully, 0.5 halfway on a log scale, 0 not at all."""
    if data.targets is not None:
        counts = data.targets.sum(axis=0).astype(float)
    else:
        counts = np.bincount(data.labels, minlength=len(data.class_names)).astype(float)
    weights = (len(data) / (len(counts) * np.maximum(counts, 1.0))) ** power
    return {i: float(w) for i, w in enumerate(weights)}


def _initial_model(config: TrainConfig, input_shape: tuple[int, int, int], num_classes: int) -> Any:
    """A new network of ``config.recipe``, or the weights of ``config.init_from`` to fine-tune.

    With ``config.mixed_precision`` its layers compute in bfloat16 (the output layer stays float32).
    """
    from fer_batch.training.models import MIXED_POLICY, build_model, with_dtype_policy  # noqa: PLC0415

    if config.init_from is not None:
        from fer_batch.model_file import load_keras_model  # noqa: PLC0415
        from fer_batch.models import resolve_model  # noqa: PLC0415

        model, _ = load_keras_model(resolve_model(config.init_from))
        if tuple(model.input_shape[1:]) != input_shape or model.output_shape[-1] != num_classes:
            raise UsageError(f"{config.init_from} takes {model.input_shape[1:]} and has {model.output_shape[-1]} "
                             f"classes; this dataset needs {input_shape} and {num_classes}")
    else:
        try:
            model = build_model(config.recipe, input_shape, num_classes)
        except KeyError as exc:
            raise UsageError(str(exc.args[0])) from exc
    return with_dtype_policy(model, MIXED_POLICY) if config.mixed_precision else model


def _base_recipe(init_from: Path, fallback: Recipe) -> Recipe:
    """The recipe a fine-tuned model was first built with, from its metadata (so the run records it)."""
    from fer_batch.model_file import read_info  # noqa: PLC0415
    from fer_batch.models import resolve_model  # noqa: PLC0415

    recipe = read_info(resolve_model(init_from)).training.get("config", {}).get("recipe")
    # None recorded (an ensemble), or one this version does not know: the run records its own --recipe.
    return Recipe(recipe) if recipe in {r.value for r in Recipe} else fallback


OPTIMIZERS = {Optimizer.ADAM: "Adam", Optimizer.ADAMW: "AdamW", Optimizer.SGD: "SGD with Nesterov momentum 0.9"}
PLATEAU_PATIENCE = 3
PLATEAU_FACTOR = 0.5
PLATEAU_FLOOR = 0.01  # the smallest learning rate, as a share of the initial one


def _compile(model: Any, config: TrainConfig, steps_per_epoch: int) -> None:
    import keras  # noqa: PLC0415

    lr: Any = config.learning_rate
    if config.schedule is Schedule.COSINE:
        lr = keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=max(1, config.epochs * steps_per_epoch), alpha=0.01
        )
    decay = config.weight_decay or None
    if config.optimizer is Optimizer.ADAMW:
        optimizer = keras.optimizers.AdamW(learning_rate=lr, weight_decay=config.weight_decay)
    elif config.optimizer is Optimizer.SGD:
        optimizer = keras.optimizers.SGD(learning_rate=lr, momentum=0.9, nesterov=True, weight_decay=decay)
    else:
        optimizer = keras.optimizers.Adam(learning_rate=lr, weight_decay=decay)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
    )


def _plateau_step(model: Any, config: TrainConfig, plateau: dict[str, Any], val_loss: float) -> dict[str, Any]:
    """The plateau schedule after one epoch: lower the learning rate when validation loss stalls.

    Its state lives in the run's state file, so a resumed run continues it.
    """
    best, wait = float(plateau.get("best_val_loss", math.inf)), int(plateau.get("wait", 0))
    if val_loss < best:
        return {"best_val_loss": val_loss, "wait": 0}
    wait += 1
    if wait >= PLATEAU_PATIENCE:
        lr = max(_current_lr(model) * PLATEAU_FACTOR, config.learning_rate * PLATEAU_FLOOR)
        model.optimizer.learning_rate.assign(lr)
        wait = 0
    return {"best_val_loss": best, "wait": wait}


def _current_lr(model: Any) -> float:
    opt = model.optimizer
    lr = opt.learning_rate
    return float(lr.numpy() if hasattr(lr, "numpy") else lr)


def _model_info(config: TrainConfig, class_names: Sequence[str], extra: dict[str, Any]) -> ModelInfo:
    return ModelInfo(
        class_names=tuple(class_names),
        input_size=config.image_size,
        channels=1,
        crop_margin=config.crop_margin,
        flip_average=config.flip_average,
        name=config.name,
        training={"config": config.to_json(), **extra},
    )


def epoch_seed(config: TrainConfig, epoch: int) -> int:
    """The seed of the shuffle and augmentation of ``epoch`` (0-based) of the run ``config`` describes.

    It depends on the run's seed, its name and the epoch, so a resumed run goes on with new
    orders and augmentations instead of replaying those its first epochs saw, and a stage
    started from another model (``--init-from``, under another ``--name``) sees different
    ones from the run it starts from. The same run and epoch always get the same seed.
    """
    return zlib.crc32(f"{config.seed}:{config.name}:{epoch}".encode()) & 0x3FFFFFFF  # room for the layer offsets


def epoch_batches(data: ImageSet, config: TrainConfig, epoch: int) -> Any:
    """The shuffled (and, with ``config.augment``, augmented) training batches of ``epoch``."""
    seed = epoch_seed(config, epoch)
    augmenter = None
    if config.augment:
        from fer_batch.training.models import build_augmenter  # noqa: PLC0415

        augmenter = build_augmenter(seed, random_erasing=config.random_erasing,
                                    crop_padding=config.crop_padding, image_size=config.image_size)
    return make_batches(data, config.batch_size, training=True, augmenter=augmenter, seed=seed)


def load_state(out: Path) -> dict[str, Any]:
    """The checkpoint state of the run in ``out`` (epochs done, best accuracy, options); empty when there is none."""
    path = Path(out) / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def run_finished(out: Path) -> bool:
    """Whether the run in ``out`` trained every epoch it was started for and wrote its report."""
    state = load_state(out)
    return (bool(state) and int(state["epochs_done"]) >= int(state["config"]["epochs"])
            and (Path(out) / MODEL_FILE).is_file() and (Path(out) / "metrics.json").is_file())


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def iter_epochs(
    config: TrainConfig,
    *,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
    data: tuple[ImageSet, ImageSet] | None = None,
) -> Iterator[EpochResult]:
    """Train epoch by epoch, yielding after each one's checkpoint is on disk.

    ``resume`` continues from ``checkpoints/last.keras``; without it, an output
    folder that already holds a checkpoint is refused rather than overwritten.
    ``data`` lets tests pass small in-memory sets instead of a folder.
    """
    import keras  # noqa: PLC0415

    from fer_batch.training.models import with_dtype_policy  # noqa: PLC0415

    out = Path(config.out)
    state = load_state(out)
    if state and not resume:
        raise UsageError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")
    if resume and not state:
        raise UsageError(f"nothing to resume in {out}: no {STATE_FILE}")
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)

    if resume:
        # A resumed run keeps every saved option: the learning-rate schedule spans the original epoch count.
        config = config_from_json(state["config"])
    keras.utils.set_random_seed(config.seed)

    train_set, val_set = data if data is not None else load_dataset(config.dataset, config.image_size)
    train_set = training_targets(train_set, dataset=config.dataset, split=TRAIN_SPLIT,
                                 ferplus_weight=config.ferplus_weight, drop_non_faces=config.drop_non_faces,
                                 teachers=config.teachers, teacher_weight=config.teacher_weight)
    if config.select_by is Selection.FERPLUS:
        val_set = crowd_majority_set(config.dataset, VALIDATION_SPLIT, val_set)
    input_shape = (*config.image_size, 1)
    steps = math.ceil(len(train_set) / config.batch_size)
    if resume:
        model = keras.saving.load_model(out / CHECKPOINT_FILE, compile=True)
        start = int(state["epochs_done"])
        best = float(state["best_val_accuracy"])
        plateau = dict(state.get("plateau", {}))
    else:
        model = _initial_model(config, input_shape, len(train_set.class_names))
        if config.init_from is not None:
            config = replace(config, recipe=_base_recipe(config.init_from, config.recipe))
        _compile(model, config, steps)
        start, best, plateau = 0, -1.0, {}
        _write_json(out / CONFIG_FILE, config.to_json())

    val_ds = make_batches(val_set, 256, training=False)
    weights = _class_weights(train_set, config.class_weight_power) if config.class_weights else None
    history_path = out / HISTORY_FILE

    for epoch in range(start, config.epochs):
        began = time.perf_counter()
        fit = model.fit(
            epoch_batches(train_set, config, epoch),
            validation_data=val_ds,
            initial_epoch=epoch,
            epochs=epoch + 1,
            class_weight=weights,
            callbacks=list(callbacks),
            shuffle=False,  # epoch_batches already shuffles, seeded by the epoch
            verbose=0,
        )
        seconds = time.perf_counter() - began
        metrics = {k: float(v[-1]) for k, v in fit.history.items()}
        metrics["learning_rate"] = _current_lr(model)  # the rate this epoch ended with
        if config.schedule is Schedule.PLATEAU and "val_loss" in metrics:
            plateau = _plateau_step(model, config, plateau, metrics["val_loss"])
        improved = metrics.get("val_accuracy", -1.0) > best
        if improved:
            best = metrics["val_accuracy"]
            # A mixed-precision run saves a float32 copy, so inference never computes in bfloat16.
            saved = with_dtype_policy(model, "float32") if config.mixed_precision else model
            save_model(saved, out / MODEL_FILE, _model_info(config, train_set.class_names, {
                "epoch": epoch + 1, "val_accuracy": best, "selected_by": str(config.select_by),
                "train_images": len(train_set),
                "validation_images": len(val_set), "machine": platform.machine(),
                "processor": platform.processor() or platform.machine(),
            }))
        model.save(out / CHECKPOINT_FILE)
        row = {"epoch": epoch + 1, **metrics, "seconds": round(seconds, 1)}
        pd.DataFrame([row]).to_csv(history_path, mode="a", header=not history_path.exists(), index=False)
        _write_json(out / STATE_FILE, {"epochs_done": epoch + 1, "best_val_accuracy": best,
                                       "plateau": plateau, "config": config.to_json()})
        yield EpochResult(epoch=epoch + 1, epochs=config.epochs, metrics=metrics, seconds=seconds, best=improved)


def write_report(out: Path, validation: ImageSet | None = None) -> dict[str, Any]:
    """Curves, validation metrics and confusion matrix of the best model in ``out``."""
    from fer_batch.analysis.classify import EmotionClassifier  # noqa: PLC0415
    from fer_batch.training.evaluate import dataset_votes, evaluate_images  # noqa: PLC0415

    out = Path(out)
    plot_history(pd.read_csv(out / HISTORY_FILE), out / "curves.png", title=f"Training: {out.name}")
    classifier = EmotionClassifier.load(out / MODEL_FILE)
    votes = None
    if validation is None:
        config = json.loads((out / CONFIG_FILE).read_text())
        folder = Path(config["dataset"]) / VALIDATION_SPLIT
        validation = load_image_folder(folder, tuple(config["image_size"]), class_names=classifier.class_names)
        # The crowd's scores beside the folder labels', whichever picked the epoch.
        votes = dataset_votes(Path(config["dataset"]), folder, validation)
    return evaluate_images(classifier, validation, out, title="Validation confusion matrix", votes=votes).report


def run_training(
    config: TrainConfig,
    *,
    resume: bool = False,
    on_epoch: Callable[[EpochResult], None] | None = None,
    callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Train to the last epoch, then write the report; the library entry point behind ``fer-batch train``."""
    best_epoch = 0
    for result in iter_epochs(config, resume=resume, callbacks=callbacks):
        if result.best:
            best_epoch = result.epoch
        if on_epoch is not None:
            on_epoch(result)
    report = write_report(config.out)
    if not best_epoch:
        best_epoch = int(pd.read_csv(Path(config.out) / HISTORY_FILE)["val_accuracy"].idxmax()) + 1
    return TrainResult(out=Path(config.out), model_path=Path(config.out) / MODEL_FILE, best_epoch=best_epoch,
                       report=report)


__all__ = [
    "EpochResult",
    "TrainConfig",
    "TrainResult",
    "config_from_json",
    "format_report",
    "iter_epochs",
    "run_training",
    "write_report",
]

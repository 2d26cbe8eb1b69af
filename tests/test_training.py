"""Training, checkpoints and resume, the report, and `evaluate`, on a tiny drawn dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from fer_batch.analysis.classify import EmotionClassifier
from fer_batch.errors import DatasetError, UsageError
from fer_batch.model_file import EMOTIONS, load_keras_model, read_info
from fer_batch.training.data import ImageSet, load_dataset
from fer_batch.training.evaluate import evaluate_folder
from fer_batch.training.models import RECIPES, build_augmenter, build_model
from fer_batch.training.options import Recipe
from fer_batch.training.train import TrainConfig, epoch_batches, iter_epochs, run_training
from tests.conftest import write_drawn_dataset


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    return write_drawn_dataset(tmp_path / "data")


def test_dataset_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="validation"):
        (tmp_path / "train" / "happy").mkdir(parents=True)
        load_dataset(tmp_path)


def test_recipes_take_raw_pixels_and_output_probabilities() -> None:
    assert list(RECIPES) == list(Recipe)  # --recipe offers what build_model builds
    for recipe in RECIPES:
        model = build_model(recipe, (48, 48, 1), 7)
        probs = model(np.full((2, 48, 48, 1), 255.0, np.float32), training=False).numpy()
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    aug = build_augmenter(0)(np.full((4, 48, 48, 1), 100.0, np.float32), training=True)
    assert tuple(aug.shape) == (4, 48, 48, 1)


def test_train_writes_a_usable_model_folder(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_training(TrainConfig(dataset=dataset, out=out, epochs=2, batch_size=8, name="unit"))
    for name in ("model.keras", "history.csv", "curves.png", "confusion_matrix.png", "metrics.json",
                 "train_config.json", "checkpoints/last.keras"):
        assert (out / name).is_file(), name
    history = pd.read_csv(out / "history.csv")
    assert list(history["epoch"]) == [1, 2]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(history.columns)
    info = read_info(out / "model.keras")
    assert info.class_names == EMOTIONS and info.name == "unit" and info.training["epoch"] == result.best_epoch
    assert result.report["count"] == 28
    # The folder is ready for --model.
    assert EmotionClassifier.load(out / "model.keras").predict_proba(np.zeros((1, 48, 48))).shape == (1, 7)


def test_interrupted_run_resumes_from_its_checkpoint(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = TrainConfig(dataset=dataset, out=out, epochs=3, batch_size=8)
    for result in iter_epochs(config):
        break  # "Ctrl-C" after the first epoch's checkpoint
    assert result.epoch == 1
    with pytest.raises(UsageError, match="--resume"):
        next(iter_epochs(config))  # a fresh run must not overwrite the interrupted one
    done = [r.epoch for r in iter_epochs(TrainConfig(dataset=dataset, out=out), resume=True)]
    assert done == [2, 3]
    assert list(pd.read_csv(out / "history.csv")["epoch"]) == [1, 2, 3]
    with pytest.raises(UsageError, match="nothing to resume"):
        next(iter_epochs(TrainConfig(dataset=dataset, out=tmp_path / "other"), resume=True))


def test_evaluate_writes_metrics_and_chart(dataset: Path, tiny_model_path: Path, tmp_path: Path) -> None:
    result = evaluate_folder(dataset / "validation", tiny_model_path, tmp_path / "report")
    metrics = json.loads(result.metrics_path.read_text())
    assert metrics["count"] == 28
    assert set(metrics) >= {"accuracy", "macro_f1", "per_class", "confusion_matrix"}
    assert np.array(metrics["confusion_matrix"]).sum() == 28
    assert set(metrics["per_class"]["sad"]) == {"precision", "recall", "f1", "support"}
    assert result.confusion_path.stat().st_size > 1000


def test_fine_tune_from_a_trained_model(dataset: Path, tmp_path: Path) -> None:
    first = run_training(TrainConfig(dataset=dataset, out=tmp_path / "a", epochs=1, batch_size=8, recipe="wide"))
    tuned = run_training(TrainConfig(dataset=dataset, out=tmp_path / "b", epochs=1, batch_size=8, augment=False,
                                     learning_rate=1e-4, init_from=tmp_path / "a", flip_average=True))
    assert tuned.model_path.is_file() and first.model_path.is_file()
    assert read_info(tuned.model_path).flip_average and not read_info(first.model_path).flip_average
    saved = json.loads((tmp_path / "b" / "train_config.json").read_text())
    assert saved["init_from"] == str(tmp_path / "a") and saved["recipe"] == "wide"  # recorded from the base model
    with pytest.raises(UsageError, match="classes"):
        other = tmp_path / "two"
        for split in ("train", "validation"):
            for name in ("x", "y"):
                (other / split / name).mkdir(parents=True)
                cv2.imwrite(str(other / split / name / "0.png"), np.zeros((48, 48), np.uint8))
        next(iter_epochs(TrainConfig(dataset=other, out=tmp_path / "c", init_from=tmp_path / "a")))


def test_distil_from_a_teacher_with_crowd_votes(dataset: Path, tiny_model_path: Path, tmp_path: Path) -> None:
    votes = pd.DataFrame({"file": ["train/angry/0.png", "train/happy/1.png"], "neutral": [1, 0],
                          "happiness": [0, 0], "surprise": [0, 0], "sadness": [0, 0], "anger": [9, 0],
                          "disgust": [0, 0], "fear": [0, 0], "contempt": [0, 0], "unknown": [0, 0], "NF": [0, 10]})
    votes.to_csv(dataset / "ferplus_labels.csv", index=False)
    config = TrainConfig(dataset=dataset, out=tmp_path / "student", epochs=1, batch_size=8, ferplus_weight=0.3,
                         drop_non_faces=True, teachers=(tiny_model_path, tiny_model_path), teacher_weight=0.5)
    result = run_training(config)
    info = read_info(result.model_path)
    assert info.training["train_images"] == 7 * 4 - 1  # the non-face is left out
    saved = json.loads((tmp_path / "student" / "train_config.json").read_text())
    assert saved["teachers"] == [str(tiny_model_path)] * 2 and saved["ferplus_weight"] == 0.3
    (dataset / "ferplus_labels.csv").unlink()
    with pytest.raises(DatasetError, match="ferplus_labels.csv"):
        next(iter_epochs(TrainConfig(dataset=dataset, out=tmp_path / "x", ferplus_weight=0.5)))


def test_each_epoch_and_each_run_gets_its_own_order_and_augmentation(tmp_path: Path) -> None:
    # A resumed run used to restart the shuffle and augmentation sequence, so its first epochs
    # replayed the exact batches the run had already seen.
    rng = np.random.default_rng(0)
    data = ImageSet(images=rng.integers(0, 256, (96, 48, 48, 1), dtype=np.uint8), labels=np.arange(96) % 7,
                    class_names=EMOTIONS, files=tuple(f"{i}.png" for i in range(96)))
    plain = TrainConfig(dataset=tmp_path, out=tmp_path, batch_size=32, augment=False, name="a")

    def first_batch(config: TrainConfig, epoch: int) -> np.ndarray:
        return next(iter(epoch_batches(data, config, epoch)))[0].numpy()

    np.testing.assert_array_equal(first_batch(plain, 3), first_batch(plain, 3))  # reproducible
    assert not np.array_equal(first_batch(plain, 3), first_batch(plain, 4))
    assert not np.array_equal(first_batch(plain, 3), first_batch(replace(plain, name="b"), 3))


def test_augmenter_erasing_and_padded_crops_change_images_but_not_their_shape() -> None:
    images = np.full((16, 48, 48, 1), 100.0, np.float32)
    plain = build_augmenter(0, random_erasing=0.0)(images, training=True).numpy()
    erased = build_augmenter(0, random_erasing=1.0)(images, training=True).numpy()
    assert erased.shape == plain.shape == images.shape
    assert np.mean(np.abs(erased - plain) > 20, axis=(1, 2, 3)).min() > 0  # a noise patch on every image
    cropped = build_augmenter(0, crop_padding=8)(images, training=True).numpy()
    assert cropped.shape == images.shape and (cropped < 5).any()  # zero padding shows at some borders


@pytest.mark.parametrize(("optimizer", "schedule"), [("sgd", "plateau"), ("adamw", "constant")])
def test_optimizers_and_schedules_train_and_resume(dataset: Path, tmp_path: Path, optimizer: str,
                                                   schedule: str) -> None:
    out = tmp_path / "run"
    config = TrainConfig(dataset=dataset, out=out, epochs=3, batch_size=8, optimizer=optimizer, schedule=schedule,
                         weight_decay=1e-4, learning_rate=0.05 if optimizer == "sgd" else 1e-3,
                         random_erasing=0.5, crop_padding=4)
    for _ in iter_epochs(config):
        break  # stop after one epoch, as an interrupted run would
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert state["config"]["optimizer"] == optimizer and ("plateau" in state)
    run_training(config, resume=True)
    history = pd.read_csv(out / "history.csv")
    assert list(history["epoch"]) == [1, 2, 3]
    if schedule == "constant":
        assert np.allclose(history["learning_rate"], 1e-3)


def test_plateau_halves_the_rate_after_three_flat_epochs(tmp_path: Path) -> None:
    import keras

    from fer_batch.training.train import _plateau_step

    model = build_model("compact", (48, 48, 1), 7)
    config = TrainConfig(dataset=tmp_path, out=tmp_path, learning_rate=0.1, schedule="plateau")
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="categorical_crossentropy")
    state: dict = {}
    for loss in (1.0, 1.1, 1.2):
        state = _plateau_step(model, config, state, loss)
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.1)
    state = _plateau_step(model, config, state, 1.05)  # third epoch without beating 1.0
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.05) and state["wait"] == 0
    assert _plateau_step(model, config, state, 0.9) == {"best_val_loss": 0.9, "wait": 0}


def test_unknown_optimizer_or_schedule_is_refused_before_reading_data(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="optimizer"):
        run_training(TrainConfig(dataset=tmp_path / "absent", out=tmp_path / "run", optimizer="rmsprop"))
    with pytest.raises(UsageError, match="schedule"):
        run_training(TrainConfig(dataset=tmp_path / "absent", out=tmp_path / "run", schedule="step"))


def _policies(model) -> set[str]:  # type: ignore[no-untyped-def]
    return {layer.dtype_policy.name for layer in model.layers[1:-1]}  # between the input and the output layer


def test_mixed_precision_trains_in_bfloat16_and_saves_float32(dataset: Path, tmp_path: Path) -> None:
    import keras

    out = tmp_path / "mixed"
    config = TrainConfig(dataset=dataset, out=out, epochs=2, batch_size=8, mixed_precision=True)
    for result in iter_epochs(config):
        break
    assert result.epoch == 1
    assert keras.mixed_precision.global_policy().name == "float32"  # nothing leaks into later models
    checkpoint = keras.saving.load_model(out / "checkpoints" / "last.keras")
    assert _policies(checkpoint) == {"mixed_bfloat16"}
    assert checkpoint.layers[-1].dtype_policy.name == "float32"  # probabilities are never rounded to bfloat16
    saved = EmotionClassifier.load(out / "model.keras", precision="float32")
    assert read_info(out / "model.keras").training["config"]["mixed_precision"] is True
    images = np.random.default_rng(0).uniform(0, 255, (4, 48, 48, 1)).astype(np.float32)
    np.testing.assert_allclose(saved.predict_proba(images[..., 0]), checkpoint.predict(images, verbose=0),
                               atol=0.02)  # the same weights; only bfloat16 rounding differs
    assert [r.epoch for r in iter_epochs(TrainConfig(dataset=dataset, out=out), resume=True)] == [2]
    # A fine-tune of a float32 model can run in bfloat16 too; what it saves is float32 again.
    tuned = tmp_path / "tuned"
    list(iter_epochs(TrainConfig(dataset=dataset, out=tuned, epochs=1, batch_size=8, init_from=out,
                                 mixed_precision=True)))
    assert _policies(keras.saving.load_model(tuned / "checkpoints" / "last.keras")) == {"mixed_bfloat16"}
    assert _policies(load_keras_model(tuned / "model.keras")[0]) == {"float32"}


def test_array_batches_feed_what_the_tf_pipeline_feeds(dataset: Path) -> None:
    from fer_batch.training.data import array_batches, make_tf_dataset

    train, _ = load_dataset(dataset)
    batches = array_batches(train, 8, training=False)
    assert len(batches) == 4  # 28 images
    x, y = batches[0]
    tf_x, tf_y = next(iter(make_tf_dataset(train, 8, training=False)))
    np.testing.assert_array_equal(x, tf_x.numpy())
    np.testing.assert_array_equal(y, tf_y.numpy())
    # Training order: every image once per epoch, in a seeded order; augmentation changes the pixels.
    shuffled = array_batches(train, 8, training=True, seed=5)
    labels = np.concatenate([shuffled[i][1].argmax(axis=1) for i in range(len(shuffled))])
    assert sorted(labels) == sorted(train.labels) and list(labels) != list(train.labels)
    again = array_batches(train, 8, training=True, seed=5)
    np.testing.assert_array_equal(again[0][1], shuffled[0][1])
    augmented = array_batches(train, 8, training=True, seed=5, augmenter=build_augmenter(5))
    assert augmented[0][0].shape == (8, 48, 48, 1) and not np.array_equal(augmented[0][0], shuffled[0][0])


# TensorFlow hidden, as on the lent GPU machine, which has none.
_HIDE_TENSORFLOW = """
import sys
class NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoTensorFlow())
"""
# `fer-batch ARGS`
_RUN_CLI = """
import runpy
sys.argv = ["fer-batch", *sys.argv[1:]]
try:
    runpy.run_module("fer_batch", run_name="__main__", alter_sys=True)
finally:
    assert "tensorflow" not in sys.modules
"""


# XLA's CPU compiler without its costly optimisations: most of these tests' time was compiling (49 programs, 131 s
# of a 174 s run), and they check the path, not its speed.
_XLA_QUICK = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def _run_on_jax_without_tensorflow(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` with ARGS in a fresh process on Keras's JAX backend, TensorFlow hidden."""
    pytest.importorskip("jax", reason="JAX is not installed (it comes with the test extras)")
    return subprocess.run([sys.executable, "-c", _HIDE_TENSORFLOW + code, *args], check=False, capture_output=True,
                          text=True, timeout=300, cwd=Path(__file__).resolve().parents[1],
                          env={**os.environ, "KERAS_BACKEND": "jax", "XLA_FLAGS": _XLA_QUICK})


def test_training_runs_on_the_jax_backend_without_tensorflow(dataset: Path, tmp_path: Path) -> None:
    """The path fer_batch/training/device_train.sh takes on a GPU machine without TensorFlow: Keras on JAX."""
    out = tmp_path / "jax-run"
    done = _run_on_jax_without_tensorflow(_RUN_CLI, "train", str(dataset), "--out", str(out), "--recipe", "compact",
                                          "--epochs", "2", "--batch-size", "8", "--crop-padding", "2",
                                          "--random-erasing", "0.3", "--mixed-precision", "--name", "jax-unit")
    assert done.returncode == 0, done.stderr[-2000:]
    assert list(pd.read_csv(out / "history.csv")["epoch"]) == [1, 2]
    assert json.loads((out / "metrics.json").read_text())["count"] == 28
    # The saved model is an ordinary fer-batch model file: it loads and runs here, on TensorFlow.
    info = read_info(out / "model.keras")
    assert info.name == "jax-unit" and info.training["config"]["mixed_precision"] is True
    probs = EmotionClassifier.load(out / "model.keras").predict_proba(np.zeros((2, 48, 48)))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


_JAX_AUGMENTATION_CHECK = """
import numpy as np, keras
from fer_batch.training.data import compiled_augmenter
from fer_batch.training.models import RandomPadCrop, build_augmenter
x = np.random.default_rng(0).uniform(0, 255, (16, 48, 48, 1)).astype(np.float32)
for seed in (3, 11):  # the second augmenter reuses the first one's compiled function
    eager = build_augmenter(seed, random_erasing=0.5, crop_padding=4)
    compiled = compiled_augmenter(build_augmenter(seed, random_erasing=0.5, crop_padding=4))
    for _ in range(2):
        expected, got = keras.ops.convert_to_numpy(eager(x, training=True)), compiled(x)
        assert np.abs(expected - got).max() < 0.01 and np.abs(got - x).mean() > 1, seed
shifted = keras.ops.convert_to_numpy(RandomPadCrop(2, seed=1)(x[:4, :8, :8], training=True))
offsets = set()
for image, out in zip(x[:4, :8, :8, 0], shifted[..., 0]):
    padded = np.pad(image, 2)
    offsets |= {(dy, dx) for dy in range(5) for dx in range(5) if np.array_equal(padded[dy:dy + 8, dx:dx + 8], out)}
assert len(offsets) == 1  # one offset for the batch, as Keras's RandomCrop
print("ok")
"""


def test_jax_augmentation_is_compiled_and_draws_what_the_layers_draw() -> None:
    done = _run_on_jax_without_tensorflow(_JAX_AUGMENTATION_CHECK)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]

"""int8 quantisation: the TFLite copy inside a model file, and choosing a precision at run time."""

from __future__ import annotations

import json
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fer_batch.analysis.classify import EmotionClassifier
from fer_batch.errors import ModelError, UsageError
from fer_batch.model_file import (
    INT8_MEMBER,
    METADATA_MEMBER,
    drop_float32,
    read_info,
    read_int8,
    stored_precisions,
    write_info,
    write_int8,
)
from fer_batch.training.quantize import calibration_sample, quantize_model
from tests.conftest import write_drawn_dataset

from .test_cli import fer_batch


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_drawn_dataset(tmp_path_factory.mktemp("quantize-data"), per_class=3)


@pytest.fixture(scope="module")
def quantized(tiny_model_path: Path, dataset: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("quantized") / "tiny-int8.keras"
    return quantize_model(tiny_model_path, dataset, out, name="tiny-int8", calibration_images=15, seed=3)


def _crops(seed: int, n: int = 12) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 48, 48, 1), dtype=np.uint8)


def test_quantized_file_runs_int8_by_default_and_keeps_float32(quantized, tiny_model_path: Path) -> None:  # type: ignore[no-untyped-def]
    info = read_info(quantized.path)
    assert info.precision == "int8" and info.name == "tiny-int8"
    parameters = EmotionClassifier.load(tiny_model_path).keras_model.count_params()
    assert info.training["quantized"] == {"from": "tiny-test", "calibration_images": 15, "calibration_split": "train",
                                          "seed": 3, "parameters": parameters, "int8_only": False}
    assert stored_precisions(quantized.path) == ("float32", "int8")
    assert info.int8_output == "logits"
    int8 = EmotionClassifier.load(quantized.path)
    float32 = EmotionClassifier.load(quantized.path, precision="float32")
    assert int8.precision == "int8" and int8.keras_model is None
    assert float32.precision == "float32" and float32.keras_model is not None
    crops = _crops(0)
    p8, p32 = int8.predict_proba(crops), float32.predict_proba(crops)
    np.testing.assert_allclose(p8.sum(axis=1), 1.0, atol=1e-5)  # softmax in float over int8 logits
    assert len(np.unique(p8)) > 0.9 * p8.size  # no 1/256 steps: small probabilities stay distinct
    np.testing.assert_allclose(p8, p32, atol=0.03)  # 8-bit rounding, not a different network
    np.testing.assert_allclose(p32, EmotionClassifier.load(tiny_model_path).predict_proba(crops), atol=1e-6)


def test_validation_accuracy_of_both_versions_is_measured(quantized) -> None:  # type: ignore[no-untyped-def]
    assert quantized.float32_accuracy is not None and quantized.int8_accuracy is not None
    assert 0.0 <= quantized.int8_accuracy <= 1.0 and 0.0 <= quantized.agreement <= 1.0
    assert quantized.int8_bytes == len(read_int8(quantized.path) or b"")


def test_int8_batches_and_mirror_averaging(tiny_model_path: Path, dataset: Path, tmp_path: Path) -> None:
    out = quantize_model(tiny_model_path, dataset, tmp_path / "flip.keras", flip_average=True,
                         calibration_images=10, evaluate=False).path
    clf = EmotionClassifier.load(out)
    assert clf.precision == "int8" and clf.info.flip_average
    crops = _crops(1, n=10)
    whole = clf.predict_proba(crops)
    np.testing.assert_allclose(clf.predict_proba(crops, batch_size=3), whole, atol=1e-6)  # resized tensors
    np.testing.assert_allclose(clf.predict_proba(crops[:, :, ::-1]), whole, atol=1e-6)  # symmetric by design


def test_an_int8_only_file_runs_the_same_int8_network_without_keras(quantized, dataset: Path,  # type: ignore[no-untyped-def]
                                                                    tmp_path: Path) -> None:
    out = quantize_model(quantized.path, dataset, tmp_path / "only.keras", calibration_images=15, seed=3,
                         int8_only=True)
    with zipfile.ZipFile(out.path) as zf:
        assert sorted(zf.namelist()) == sorted([METADATA_MEMBER, INT8_MEMBER])
    assert stored_precisions(out.path) == ("int8",) and read_info(out.path).training["quantized"]["int8_only"]
    assert out.float32_accuracy is not None  # measured before the float32 network was left out
    assert out.path.stat().st_size < quantized.path.stat().st_size / 2
    crops = _crops(4)
    np.testing.assert_allclose(EmotionClassifier.load(out.path).predict_proba(crops),  # same calibration: same
                               EmotionClassifier.load(quantized.path).predict_proba(crops), atol=1e-6)  # network
    with pytest.raises(ModelError, match="holds only its int8 network.*tiny-int8"):
        EmotionClassifier.load(out.path, precision="float32")
    from fer_batch.training.data import load_image_folder
    from fer_batch.training.targets import teacher_probabilities

    taught = teacher_probabilities([out.path], load_image_folder(dataset / "validation"))  # it can still teach
    np.testing.assert_allclose(taught.sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(ModelError, match="holds only its int8 network"):
        quantize_model(out.path, dataset, tmp_path / "again.keras", calibration_images=5)
    with pytest.raises(UsageError, match="needs --precision int8"):
        quantize_model(quantized.path, dataset, tmp_path / "f32.keras", precision="float32", int8_only=True)


def test_only_an_int8_default_file_can_drop_float32(tiny_model_path: Path, quantized, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ModelError, match="no int8 version"):
        drop_float32(tiny_model_path)
    path = tmp_path / "float32-default.keras"
    path.write_bytes(quantized.path.read_bytes())
    write_info(path, replace(read_info(path), precision="float32"))
    with pytest.raises(ModelError, match="must default to int8"):
        drop_float32(path)
    assert stored_precisions(path) == ("float32", "int8")  # left as it was


def test_int8_needs_an_int8_member(tiny_model_path: Path) -> None:
    assert read_int8(tiny_model_path) is None
    with pytest.raises(ModelError, match="fer-batch quantize"):
        EmotionClassifier.load(tiny_model_path, precision="int8")
    with pytest.raises(ModelError, match="unknown precision"):
        EmotionClassifier.load(tiny_model_path, precision="int4")


def test_members_are_replaced_not_duplicated(quantized, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "copy.keras"
    path.write_bytes(quantized.path.read_bytes())
    write_int8(path, b"not really a model")
    write_info(path, read_info(path))
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist().count(INT8_MEMBER) == 1
    assert read_int8(path) == b"not really a model"
    with pytest.raises(ModelError, match="int8"):
        EmotionClassifier.load(path)  # a broken int8 member is a clear error, not a crash


def test_calibration_draws_training_images_reproducibly(dataset: Path) -> None:
    from fer_batch.training.data import load_image_folder

    train = load_image_folder(dataset / "train")
    a, b = calibration_sample(train, 5, seed=1), calibration_sample(train, 5, seed=1)
    assert a.shape == (5, 48, 48, 1) and a.dtype == np.float32 and np.array_equal(a, b)
    assert calibration_sample(train, 1000, seed=1).shape[0] == len(train)


def test_command_line_quantize_then_evaluate_at_each_precision(tiny_model_path: Path, dataset: Path,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "q.keras"
    proc = fer_batch("quantize", tiny_model_path, dataset, "--out", out, "--calibration-images", "10",
                     "--no-flip-average", "--name", "cli-int8")
    assert proc.returncode == 0, proc.stderr
    assert "validation accuracy: float32" in proc.stderr and proc.stdout == ""  # a report on the product: stderr
    assert "XNNPACK" not in proc.stderr  # TFLite's start-up notice stays off the user's terminal
    for precision in ("int8", "float32"):
        report = tmp_path / precision
        proc = fer_batch("evaluate", dataset / "validation", "--model", out, "--precision", precision,
                         "--out", report)
        assert proc.returncode == 0, proc.stderr
        assert json.loads((report / "metrics.json").read_text())["precision"] == precision
    proc = fer_batch("evaluate", dataset / "validation", "--model", tiny_model_path, "--precision", "int8",
                     "--out", tmp_path / "never")
    assert proc.returncode != 0 and "fer-batch quantize" in proc.stderr
    proc = fer_batch("quantize", tiny_model_path, dataset, "--out", tmp_path / "only.keras", "--int8-only",
                     "--calibration-images", "10")
    assert proc.returncode == 0 and "int8 only" in proc.stderr, proc.stderr
    proc = fer_batch("evaluate", dataset / "validation", "--model", tmp_path / "only.keras", "--precision", "float32",
                     "--out", tmp_path / "never")
    assert proc.returncode != 0 and "holds only its int8 network" in proc.stderr
    proc = fer_batch("quantize", tiny_model_path, dataset, "--out", tmp_path / "no.keras", "--int8-only",
                     "--precision", "float32")
    assert proc.returncode == 2 and "needs --precision int8" in proc.stderr
    proc = fer_batch("quantize", tiny_model_path, dataset, "--out", tmp_path / "no.keras", "--precision", "int4")
    assert proc.returncode == 2 and "'int4' is not one of 'int8', 'float32'" in proc.stderr


def test_an_ensemble_quantizes_to_int8_logits(tiny_model_path: Path, dataset: Path, tmp_path: Path) -> None:
    from fer_batch.training.ensemble import ensemble_models

    from .test_ensemble import _second_model

    both = ensemble_models([tiny_model_path, _second_model(tmp_path / "second.keras")], tmp_path / "both.keras",
                           name="both")
    out = quantize_model(both, dataset, tmp_path / "both-int8.keras", calibration_images=15, evaluate=False).path
    assert read_info(out).int8_output == "logits"  # the ensemble's one softmax was split off
    crops = _crops(5)
    int8 = EmotionClassifier.load(out).predict_proba(crops)
    float32 = EmotionClassifier.load(out, precision="float32").predict_proba(crops)
    np.testing.assert_allclose(int8.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(int8 - float32).max() < 0.1


def test_a_network_without_a_softmax_keeps_its_output() -> None:
    import keras

    from fer_batch.training.models import logits_model

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="sigmoid")(inputs))
    same, split = logits_model(model)
    assert same is model and not split

"""The self-describing model file and model-name resolution."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from fer_batch.errors import ModelError
from fer_batch.model_file import EMOTIONS, ModelInfo, load_keras_model, read_info, stored_precisions, write_info
from fer_batch.models import resolve_model, shipped_models


def test_metadata_round_trip_and_keras_still_loads(tiny_model_path: Path) -> None:
    info = read_info(tiny_model_path)
    assert info.class_names == EMOTIONS
    assert info.input_size == (48, 48)
    model, info2 = load_keras_model(tiny_model_path)
    assert info2 == info
    assert model.output_shape == (None, len(EMOTIONS))


def test_metadata_can_be_replaced(tiny_model_path: Path, tmp_path: Path) -> None:
    copy = tmp_path / "m.keras"
    copy.write_bytes(tiny_model_path.read_bytes())
    write_info(copy, ModelInfo(class_names=("a", "b"), input_size=(64, 64), crop_margin=0.3))
    assert read_info(copy).crop_margin == 0.3
    with zipfile.ZipFile(copy) as zf:
        assert [n for n in zf.namelist() if n == "fer_batch.json"] == ["fer_batch.json"]


def test_plain_keras_file_and_non_model_are_rejected(tmp_path: Path) -> None:
    plain = tmp_path / "plain.keras"
    with zipfile.ZipFile(plain, "w") as zf:
        zf.writestr("config.json", "{}")
    with pytest.raises(ModelError, match="without fer-batch metadata"):
        read_info(plain)
    junk = tmp_path / "junk.keras"
    junk.write_text("not a zip")
    with pytest.raises(ModelError, match="not a .keras"):
        read_info(junk)
    with pytest.raises(ModelError, match="not found"):
        read_info(tmp_path / "missing.keras")


def test_resolve_model_by_folder_file_and_name(tiny_model_path: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(tiny_model_path.read_bytes())
    assert resolve_model(run) == run / "model.keras"
    assert resolve_model(tiny_model_path) == tiny_model_path
    with pytest.raises(ModelError, match="no model"):
        resolve_model(tmp_path / "nothing")
    assert set(shipped_models()) == {"accurate", "accurate-fer2013", "fast", "fast-fer2013"}, "the package ships these models"
    assert resolve_model(None) == shipped_models()["accurate"]


def test_int8_output_is_validated_and_read_from_older_files() -> None:
    base = {"class_names": list(EMOTIONS), "input_size": [48, 48]}
    assert ModelInfo.from_dict(base).int8_output == "probabilities"
    assert ModelInfo.from_dict({**base, "int8_output": "logits"}).int8_output == "logits"
    # Files quantised before the field existed said so under training.quantized.output.
    older = {**base, "training": {"quantized": {"output": "logits"}}}
    assert ModelInfo.from_dict(older).int8_output == "logits"
    with pytest.raises(ModelError, match="int8_output"):
        ModelInfo.from_dict({**base, "int8_output": "log-probabilities"})


def test_shipped_models_stay_small_and_say_what_they_hold() -> None:
    # A package of four models, not of checkpoints: each file well under 10 MB.
    shipped = shipped_models()
    for name, path in shipped.items():
        assert path.stat().st_size < 10_000_000, f"{name}: {path.stat().st_size / 1e6:.1f} MB"
    # the accurate models' float32 weights (42 MB each) stay out of the package; fast keeps both versions.
    assert stored_precisions(shipped["accurate"]) == stored_precisions(shipped["accurate-fer2013"]) == ("int8",)
    assert stored_precisions(shipped["fast"]) == ("float32", "int8")
    # accurate and fast follow the crowd (issue 26); the -fer2013 models are the FER2013-trained ones they replaced,
    # renamed only.
    assert read_info(shipped["accurate"]).training["quantized"]["from"] == "crowd-ensemble"
    assert read_info(shipped["accurate-fer2013"]).name == "accurate-fer2013"
    assert read_info(shipped["accurate-fer2013"]).training["quantized"]["from"] == "resnets-wide"
    assert read_info(shipped["fast"]).training["quantized"]["from"] == "fast-crowd-b"
    assert read_info(shipped["fast"]).training["config"]["select_by"] == "ferplus"
    assert read_info(shipped["fast-fer2013"]).name == "fast-fer2013"
    assert read_info(shipped["fast-fer2013"]).training["quantized"]["from"] == "wide-v4-ft"

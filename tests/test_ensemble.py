"""Ensembles: one model file that averages several models' logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fer_batch.analysis.classify import EmotionClassifier
from fer_batch.errors import ModelError
from fer_batch.model_file import EMOTIONS, ModelInfo, read_info, save_model
from fer_batch.training.ensemble import ensemble_models, main
from tests.conftest import build_tiny_model


def _second_model(path: Path, **info: object) -> Path:
    import keras

    model = build_tiny_model()
    model.set_weights([w + 0.3 for w in model.get_weights()])  # different outputs from the first
    keras.utils.set_random_seed(1)
    return save_model(model, path, ModelInfo(class_names=EMOTIONS, input_size=(48, 48), name="second",
                                             **info))  # type: ignore[arg-type]


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_ensemble_averages_member_logits(tiny_model_path: Path, tmp_path: Path) -> None:
    second = _second_model(tmp_path / "second.keras")
    out = ensemble_models([tiny_model_path, second], tmp_path / "both.keras", name="both")
    crops = np.random.default_rng(0).integers(0, 256, (5, 48, 48, 1), dtype=np.uint8)
    a = EmotionClassifier.load(tiny_model_path).predict_proba(crops)
    b = EmotionClassifier.load(second).predict_proba(crops)
    both = EmotionClassifier.load(out)
    assert not np.allclose(a, b)
    # softmax of the mean logits = the members' probabilities' geometric mean, renormalised
    assert np.allclose(both.predict_proba(crops), _softmax((np.log(a) + np.log(b)) / 2), atol=1e-5)
    info = read_info(out)
    assert info.name == "both" and [m["name"] for m in info.training["ensemble"]] == ["tiny-test", "second"]


def test_members_must_agree(tiny_model_path: Path, tmp_path: Path) -> None:
    other = _second_model(tmp_path / "other.keras", crop_margin=0.5)
    with pytest.raises(ModelError, match="crop_margin"):
        ensemble_models([tiny_model_path, other], tmp_path / "x.keras", name="x")
    with pytest.raises(ModelError, match="at least two"):
        ensemble_models([tiny_model_path], tmp_path / "x.keras", name="x")


def test_command_line(tiny_model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main([str(tiny_model_path), str(tiny_model_path), "--out", str(tmp_path / "e.keras"), "--name", "pair"])
    assert "wrote" in capsys.readouterr().out and read_info(tmp_path / "e.keras").name == "pair"


def test_mixed_precision_reaches_the_members(tiny_model_path: Path, tmp_path: Path) -> None:
    from fer_batch.model_file import load_keras_model
    from fer_batch.training.models import MIXED_POLICY, with_dtype_policy

    def policies(model) -> dict[str, str]:  # type: ignore[no-untyped-def]
        found = {}
        for layer in model.layers[1:]:
            inner = getattr(layer, "layers", None)
            for sub in inner[1:] if inner else [layer]:
                found[f"{layer.name}/{sub.name}"] = sub.dtype_policy.name
        return found

    second = _second_model(tmp_path / "second.keras")
    model, _ = load_keras_model(ensemble_models([tiny_model_path, second], tmp_path / "both.keras", name="both"))
    mixed = with_dtype_policy(model, MIXED_POLICY)
    found = policies(mixed)
    output = found.pop(f"{mixed.layers[-1].name}/{mixed.layers[-1].name}")
    assert output == "float32" and set(found.values()) == {MIXED_POLICY}
    assert any(name.startswith("member_") for name in found)  # the members' own layers were rewritten
    crops = np.random.default_rng(0).uniform(0, 255, (4, 48, 48, 1)).astype(np.float32)
    np.testing.assert_allclose(mixed.predict(crops, verbose=0), model.predict(crops, verbose=0), atol=0.02)
    assert set(policies(with_dtype_policy(mixed, "float32")).values()) == {"float32"}

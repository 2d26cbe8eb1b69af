"""Dequantising: float32 Keras networks rebuilt from an int8-only ensemble file match the networks it was made from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fer_batch.errors import ModelError
from fer_batch.model_file import EMOTIONS, ModelInfo, drop_float32, load_keras_model, read_info, save_model, write_int8
from fer_batch.training.dequantize import calibrate_batch_norm, dequantize_members, int8_member_logits, save_members


def _member(seed: int):  # type: ignore[no-untyped-def]
    """A `compact` network with random weights and batch norms that are not the identity (so folding them shows)."""
    import keras

    from fer_batch.training.models import build_model

    keras.utils.set_random_seed(seed)
    model = build_model("compact", (48, 48, 1), len(EMOTIONS))
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.2, n), rng.normal(0, 0.2, n),
                               rng.uniform(0.2, 2.0, n)])
    dense = model.layers[-1]
    dense.set_weights([dense.get_weights()[0] * 20, rng.normal(0, 0.3, len(EMOTIONS))])  # logits that differ
    return model


@pytest.fixture(scope="module")
def int8_ensemble(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """An int8-only ensemble file of two `compact` networks (as `accurate` is made), and the float32 networks."""
    from fer_batch.training.ensemble import build_ensemble
    from fer_batch.training.models import logits_model
    from fer_batch.training.quantize import convert_int8

    members = [_member(1), _member(2)]
    config = {"recipe": "compact", "flip_average": True, "epochs": 3}
    info = ModelInfo(class_names=EMOTIONS, input_size=(48, 48), name="pair", flip_average=True, precision="int8",
                     int8_output="logits",
                     training={"ensemble": [{"name": name, "config": {**config, "name": name}, "val_accuracy": 0.5}
                                            for name in ("first", "second")],
                               "quantized": {"from": "pair-float32"}})
    calibration = np.random.default_rng(0).integers(0, 256, (24, 48, 48, 1)).astype(np.float32)
    ensemble = build_ensemble(members, name="pair")
    path = save_model(ensemble, tmp_path_factory.mktemp("dequantize") / "pair.keras", info)
    write_int8(path, convert_int8(logits_model(ensemble)[0], info, calibration))
    drop_float32(path)
    return path, [logits_model(m)[0] for m in members]


def _crops(n: int = 32) -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (n, 48, 48, 1)).astype(np.float32)


def test_rebuilt_members_match_the_int8_network_and_the_original(int8_ensemble) -> None:  # type: ignore[no-untyped-def]
    from fer_batch.training.models import logits_model

    path, originals = int8_ensemble
    members = dequantize_members(path)
    assert [m.name for m in members] == ["first", "second"]
    crops = _crops()
    int8_logits, output = int8_member_logits(path, members, crops)
    # the graph's output is the mean of these (up to its own 8-bit rounding): they are the members' logits
    np.testing.assert_allclose(output, (int8_logits[0] + int8_logits[1]) / 2, atol=0.02 * np.ptp(output))
    for member, original, logits in zip(members, originals, int8_logits):
        rebuilt = np.asarray(logits_model(member.model)[0]([crops], training=False))
        spread = float(np.std(rebuilt))
        assert spread > 0.5  # the check below means something
        # the rebuilt network differs from the original by its weights' 8-bit rounding only; from the int8 graph
        # by the activations' rounding too
        assert np.abs(rebuilt - np.asarray(original([crops], training=False))).max() < 0.05 * spread
        assert np.abs(rebuilt - logits).max() < 0.15 * spread
        assert (rebuilt.argmax(1) == logits.argmax(1)).mean() >= 0.9


def test_saved_members_keep_their_network_and_calibrated_batch_norms(  # type: ignore[no-untyped-def]
        int8_ensemble, tmp_path: Path) -> None:
    path, _ = int8_ensemble
    members = dequantize_members(path)
    crops = _crops()
    before = [np.asarray(m.model(crops, training=False)) for m in members]
    paths = save_members(members, tmp_path / "out", calibration=crops, calibration_source="drawn")
    assert [p.name for p in paths] == ["first.keras", "second.keras"]
    model, info = load_keras_model(paths[0])  # what `fer-batch train --init-from` loads
    assert info.precision == "float32" and info.flip_average and info.name == "first"
    assert info.training["config"]["recipe"] == "compact"  # the recipe train records for a fine-tune
    assert info.training["dequantized"]["batch_norm"] == "calibrated on 32 images of drawn"
    assert read_info(paths[1]).training["dequantized"]["member"] == 1
    # calibrating changes nothing at inference, and training-mode batch norms then see what they were set to
    np.testing.assert_allclose(np.asarray(model(crops, training=False)), before[0], atol=1e-5)
    norm = next(layer for layer in model.layers if type(layer).__name__ == "BatchNormalization")
    assert not np.allclose(np.asarray(norm.moving_variance), 1.0 - norm.epsilon)
    calibrate_batch_norm(model, crops)  # calibrating again on the same images: the same network
    np.testing.assert_allclose(np.asarray(model(crops, training=False)), before[0], atol=1e-5)


def test_a_network_of_another_recipe_is_refused(int8_ensemble) -> None:  # type: ignore[no-untyped-def]
    path, _ = int8_ensemble
    with pytest.raises(ModelError, match="int8 graph"):
        dequantize_members(path, recipes=["wide", "wide"])
    with pytest.raises(ModelError, match="2 networks"):
        dequantize_members(path, recipes=["compact"])

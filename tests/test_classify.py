"""Batch classification with a model file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fer_batch.analysis.classify import EmotionClassifier


def test_probabilities_have_one_row_per_crop_and_sum_to_one(tiny_model_path: Path) -> None:
    clf = EmotionClassifier.load(tiny_model_path, batch_size=8)
    crops = np.random.default_rng(0).integers(0, 256, (21, 48, 48), dtype=np.uint8)
    probs = clf.predict_proba(crops)
    assert probs.shape == (21, 7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_batch_size_does_not_change_results(tiny_model_path: Path) -> None:
    clf = EmotionClassifier.load(tiny_model_path)
    crops = np.random.default_rng(1).integers(0, 256, (10, 48, 48, 1), dtype=np.uint8)
    np.testing.assert_allclose(clf.predict_proba(crops, batch_size=1), clf.predict_proba(crops, batch_size=64),
                               rtol=1e-4, atol=1e-6)


def test_empty_and_wrong_shapes(tiny_model_path: Path) -> None:
    clf = EmotionClassifier.load(tiny_model_path)
    assert clf.predict_proba(np.zeros((0, 48, 48, 1))).shape == (0, 7)
    with pytest.raises(ValueError, match="shape"):
        clf.predict_proba(np.zeros((2, 32, 32)))


def test_flip_average_is_symmetric(tiny_model_path: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    from fer_batch.model_file import read_info

    base = EmotionClassifier.load(tiny_model_path)
    flip = EmotionClassifier.from_keras(base.keras_model, replace(read_info(tiny_model_path), flip_average=True))
    crops = np.random.default_rng(2).integers(0, 256, (5, 48, 48, 1), dtype=np.uint8)
    mirrored = crops[:, :, ::-1]
    np.testing.assert_allclose(flip.predict_proba(crops), flip.predict_proba(mirrored), rtol=1e-4, atol=1e-6)
    expected = (base.predict_proba(crops) + base.predict_proba(mirrored)) / 2
    np.testing.assert_allclose(flip.predict_proba(crops), expected, rtol=1e-4, atol=1e-6)

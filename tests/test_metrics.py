"""Classification metrics."""

from __future__ import annotations

import numpy as np
import pytest

from fer_batch.training.metrics import classification_report, confusion_matrix, format_report


def test_confusion_matrix_rows_are_true_classes() -> None:
    m = confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), 3)
    assert m.tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]


def test_report_values() -> None:
    r = classification_report(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), ["a", "b", "c"])
    assert r["accuracy"] == 0.5 and r["count"] == 4
    assert r["per_class"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert r["per_class"]["b"]["precision"] == pytest.approx(1 / 3)
    assert r["per_class"]["c"]["f1"] == 0.0  # never predicted: counts as 0, not skipped
    assert r["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 0) / 3)
    assert "accuracy 0.5000" in format_report(r)

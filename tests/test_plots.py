"""Training curves and confusion-matrix charts."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from fer_batch.training.plots import _integer_epochs, plot_confusion_matrix, plot_history


@pytest.mark.parametrize("epochs", [1, 2, 5, 40])
def test_epoch_ticks_are_whole_epochs(epochs: int) -> None:
    fig, ax = plt.subplots()
    ax.plot(range(1, epochs + 1), range(epochs))
    _integer_epochs(ax, pd.Series(range(1, epochs + 1)))
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    plt.close(fig)
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert 1 in ticks or epochs > 10


def test_charts_are_written(tmp_path: Path) -> None:
    history = pd.DataFrame({"epoch": [1, 2, 3], "accuracy": [0.3, 0.4, 0.5], "val_accuracy": [0.3, 0.35, 0.4],
                            "loss": [1.5, 1.2, 1.0], "val_loss": [1.6, 1.4, 1.3]})
    assert plot_history(history, tmp_path / "curves.png").stat().st_size > 10_000
    matrix = [[5, 1], [2, 7]]
    assert plot_confusion_matrix(matrix, ["happy", "sad"], tmp_path / "cm.png", "t").stat().st_size > 5_000

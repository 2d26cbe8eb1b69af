"""Training curves and confusion-matrix charts (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

if TYPE_CHECKING:  # pandas is in the tensorflow extra: only training's history plot is given a DataFrame
    import pandas as pd


def _integer_epochs(ax: plt.Axes, epochs: pd.Series) -> None:
    """Ticks at whole epochs only: matplotlib's default puts a 5-epoch run's ticks at 1.5, 2.5..."""
    if len(epochs) == 0:
        return
    first, last = int(epochs.min()), int(epochs.max())
    if last - first < 10:
        ax.set_xticks(range(first, last + 1))  # a short run: one tick per epoch
        if first == last:
            ax.set_xlim(first - 1, last + 1)  # one point: the default range is a fraction of an epoch wide
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_history(history: pd.DataFrame, path: Path, title: str = "Training") -> Path:
    """Accuracy and loss per epoch, train vs validation, side by side."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for ax, metric in zip(axes, ("accuracy", "loss")):
        if metric in history:
            ax.plot(history["epoch"], history[metric], label="train", marker=".")
        if f"val_{metric}" in history:
            ax.plot(history["epoch"], history[f"val_{metric}"], label="validation", marker=".")
        ax.set_xlabel("epoch")
        _integer_epochs(ax, history["epoch"])
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    if "val_accuracy" in history and len(history):
        best = history.loc[history["val_accuracy"].idxmax()]
        axes[0].set_title(f"best validation accuracy {best['val_accuracy']:.4f} (epoch {int(best['epoch'])})")
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: Path, title: str,
                          true_label: str = "true class") -> Path:
    """Row-normalised confusion matrix (recall per true class) with the raw counts in each cell."""
    counts = np.asarray(matrix, dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 * n + 2, 1.0 * n + 1), constrained_layout=True)
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel(true_label)
    for i in range(n):
        for j in range(n):
            colour = "white" if norm[i, j] > 0.5 else "black"
            ax.text(j, i, f"{norm[i, j]:.2f}\n{int(counts[i, j])}", ha="center", va="center", fontsize=8, color=colour)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of true class")
    ax.set_title(title)
    # bbox_inches="tight": constrained layout sizes the square image first and left the y label cut off at the
    # figure's left edge; the tight box grows the saved canvas to hold every label.
    fig.savefig(path, dpi=100, bbox_inches="tight", pad_inches=0.15)
    plt.close(fig)
    return path

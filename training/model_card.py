"""Write a model card from a training run: the figures come from the run's own files, never typed by hand.

    python -m training.model_card RUN_DIR model_cards/NAME --command "fer-batch train ..." \
        --hardware "2-core x86-64 CPU, no GPU" --throughput 2500

copies ``history.csv``, ``curves.png`` and the validation ``metrics.json`` /
``confusion_matrix.png`` next to a generated ``README.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd


def _matrix_table(report: dict[str, Any]) -> list[str]:
    names = report["class_names"]
    lines = ["| true \\ predicted | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for name, row in zip(names, report["confusion_matrix"]):
        lines.append(f"| **{name}** | " + " | ".join(str(v) for v in row) + " |")
    return lines


def render_card(run: Path, name: str, command: str, hardware: str, throughput: str | None) -> str:
    report = json.loads((run / "metrics.json").read_text())
    history = pd.read_csv(run / "history.csv")
    config = json.loads((run / "train_config.json").read_text())
    best = history.loc[history["val_accuracy"].idxmax()]
    hours = history["seconds"].sum() / 3600
    lines = [
        f"# Model card: `{name}`",
        "",
        f"* Architecture: recipe `{config['recipe']}` (`training/models.py`), input 48x48 grayscale, raw 0..255 "
        "pixels (rescaling is inside the model), 7 classes.",
        f"* Trained with: `{command}`",
        f"* Options: {config['epochs']} epochs, batch size {config['batch_size']}, Adam, learning rate "
        f"{config['learning_rate']} with a {config['schedule']} schedule, label smoothing {config['label_smoothing']}, "
        f"augmentation {'on' if config['augment'] else 'off'}, seed {config['seed']}.",
        f"* Data: FER2013 `train/` (28,709 images); the epoch kept is the one with the best accuracy on "
        "`validation/` (PublicTest, 3,589 images). PrivateTest was never used.",
        f"* Hardware and time: {hardware}; {hours:.2f} h of training ({len(history)} epochs, "
        f"{history['seconds'].mean():.0f} s per epoch on average).",
        f"* Best epoch: {int(best['epoch'])} (train accuracy {best['accuracy']:.4f}).",
        "",
        "## Validation results (FER2013 PublicTest)",
        "",
        f"Measured with `fer-batch evaluate ../shared/data/fer2013/validation --model {name}`:",
        "",
        f"* **Accuracy {report['accuracy']:.4f}**, macro F1 {report['macro_f1']:.4f}, {report['count']} images.",
    ]
    if throughput:
        lines.append(f"* Classification throughput: {throughput}.")
    lines += ["", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for cls, row in report["per_class"].items():
        lines.append(f"| {cls} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {row['support']} |")
    lines += ["", "Confusion matrix (rows: true class, columns: predicted):", "", *_matrix_table(report), "",
              "![confusion matrix](confusion_matrix.png)", "", "![training curves](curves.png)", "",
              "Files: `history.csv` (per-epoch metrics), `metrics.json` (the evaluation above).", "",
              "## Limits", "",
              "* FER2013 faces are low-resolution, mostly frontal, and its labels are noisy (human agreement with "
              "them is about 65%). Accuracy on your photos depends on how alike they are.",
              "* `disgust` has only 436 training images; its recall is the weakest.",
              "* Expression is not emotion: the model reads facial muscle patterns, not inner states.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a model card from a training output folder.")
    parser.add_argument("run", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--command", required=True)
    parser.add_argument("--hardware", required=True)
    parser.add_argument("--throughput")
    parser.add_argument("--metrics", type=Path, help="metrics.json from fer-batch evaluate (default: the run's)")
    args = parser.parse_args()
    args.dest.mkdir(parents=True, exist_ok=True)
    for file in ("history.csv", "curves.png", "train_config.json"):
        shutil.copy(args.run / file, args.dest / file)
    metrics_dir = args.metrics.parent if args.metrics else args.run
    for file in ("metrics.json", "confusion_matrix.png"):
        shutil.copy(metrics_dir / file, args.dest / file)
    (args.dest / "README.md").write_text(render_card(args.dest, args.name, args.command, args.hardware,
                                                     args.throughput))
    print(f"model card written to {args.dest / 'README.md'}")


if __name__ == "__main__":
    main()

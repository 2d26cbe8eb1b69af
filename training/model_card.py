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


def _stage_lines(title: str, folder: Path, prefix: str) -> list[str]:
    history = pd.read_csv(folder / f"{prefix}history.csv")
    config = json.loads((folder / f"{prefix}train_config.json").read_text())
    best = history.loc[history["val_accuracy"].idxmax()]
    return [
        f"* {title}: {config['epochs']} epochs from "
        f"{'`' + str(config['init_from']) + '`' if config.get('init_from') else 'scratch, recipe `' + config['recipe'] + '`'}, "
        f"batch size {config['batch_size']}, Adam at {config['learning_rate']} with a {config['schedule']} schedule, "
        f"label smoothing {config['label_smoothing']}, augmentation {'on' if config['augment'] else 'off'}, "
        f"seed {config['seed']}; {history['seconds'].sum() / 3600:.2f} h ({history['seconds'].mean():.0f} s per epoch); "
        f"best validation accuracy {best['val_accuracy']:.4f} at epoch {int(best['epoch'])} "
        f"(`{prefix}history.csv`, `{prefix}curves.png`).",
    ]


def render_card(run: Path, name: str, command: str, hardware: str, throughput: str | None) -> str:
    report = json.loads((run / "metrics.json").read_text())
    config = json.loads((run / "train_config.json").read_text())
    stages = []
    if (run / "base_history.csv").is_file():
        stages += _stage_lines("Stage 1", run, "base_")
    stages += _stage_lines("Stage 2" if stages else "Training", run, "")
    lines = [
        f"# Model card: `{name}`",
        "",
        f"* Architecture: recipe `{config['recipe']}` (`training/models.py`), input 48x48 grayscale, raw 0..255 "
        "pixels (rescaling is inside the model), 7 classes.",
        "* Reproduce with:",
        "",
        "  ```bash",
        *[f"  {line}" for line in command.split(" && ")],
        "  ```",
        "",
        *stages,
        f"* Data: FER2013 `train/` (28,709 images); the epoch kept is the one with the best accuracy on "
        "`validation/` (PublicTest, 3,589 images). PrivateTest was never used.",
        f"* Hardware: {hardware}.",
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
    parser.add_argument("--base", type=Path, help="the run a fine-tuning run started from (stage 1)")
    args = parser.parse_args()
    args.dest.mkdir(parents=True, exist_ok=True)
    for file in ("history.csv", "curves.png", "train_config.json"):
        shutil.copy(args.run / file, args.dest / file)
    if args.base:
        for file in ("history.csv", "curves.png", "train_config.json"):
            shutil.copy(args.base / file, args.dest / f"base_{file}")
    metrics_dir = args.metrics.parent if args.metrics else args.run
    for file in ("metrics.json", "confusion_matrix.png"):
        shutil.copy(metrics_dir / file, args.dest / file)
    (args.dest / "README.md").write_text(render_card(args.dest, args.name, args.command, args.hardware,
                                                     args.throughput))
    print(f"model card written to {args.dest / 'README.md'}")


if __name__ == "__main__":
    main()

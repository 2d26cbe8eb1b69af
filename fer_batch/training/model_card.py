"""Write a shipped model's card from its reproduce plan: every figure comes from the runs' own files.

    python -m fer_batch.training.model_card accurate runs/shipped model_cards/accurate \
        --hardware "2-core x86-64 CPU, no GPU" --throughput "436 faces/s (python benchmarks/images_benchmark.py)"

For each stage of the plan (see :mod:`fer_batch.training.reproduce`) it copies the
stage's ``history.csv`` and ``curves.png`` as ``<stage>_history.csv`` and
``<stage>_curves.png`` and describes its options, time and best epoch; then it
evaluates the final model on the dataset's ``validation/`` split, writing
``metrics.json`` and ``confusion_matrix.png``, and renders ``README.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from fer_batch.training.reproduce import PLANS, Stage, stage_paths
from fer_batch.training.train import OPTIMIZERS


def _matrix_table(report: dict[str, Any]) -> list[str]:
    names = report["class_names"]
    lines = ["| true \\ predicted | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for name, row in zip(names, report["confusion_matrix"]):
        lines.append(f"| **{name}** | " + " | ".join(str(v) for v in row) + " |")
    return lines


def _stage_line(stage: Stage, folder: Path) -> str:
    """One bullet describing a finished stage, from its ``train_config.json`` and ``history.csv``."""
    if stage.members:
        return (f"* `{stage.name}`: the mean of the logits of "
                + ", ".join(f"`{m}`" for m in stage.members) + " (`python -m fer_batch.training.ensemble`).")
    if stage.quantize_from:
        from fer_batch.model_file import read_info, stored_precisions  # noqa: PLC0415

        info = read_info(folder)
        quantized = info.training["quantized"]
        # What the file holds, not what its metadata recorded when it was written.
        kept = ("the int8 network only (`--int8-only`)" if stored_precisions(folder) == ("int8",)
                else f"both networks, runs at {info.precision} by default")
        return (f"* `{stage.name}`: `{stage.quantize_from}` with an int8 copy calibrated on "
                f"{quantized['calibration_images']} training images; keeps {kept}, mirror averaging "
                f"{'on' if info.flip_average else 'off'} (`fer-batch quantize`).")
    config = json.loads((folder / "train_config.json").read_text())
    history = pd.read_csv(folder / "history.csv")
    best = history.loc[history["val_accuracy"].idxmax()]
    if stage.init_from:
        start = f"continued from `{stage.init_from}`'s weights"
    else:
        start = f"recipe `{config['recipe']}` from scratch"
    extras = []
    if stage.teachers:
        extras.append("distilled from " + ", ".join(f"`{t}`" for t in stage.teachers)
                      + f" at teacher weight {config['teacher_weight']}")
    if config.get("ferplus_weight"):
        extras.append(f"FER+ vote weight {config['ferplus_weight']}")
    if config.get("drop_non_faces"):
        extras.append("FER+ non-faces left out")
    if config.get("flip_average"):
        extras.append("inference averages each face with its mirror image")
    if config.get("label_smoothing"):
        extras.append(f"label smoothing {config['label_smoothing']}")
    if config.get("weight_decay"):
        extras.append(f"weight decay {config['weight_decay']}")
    if config["augment"] and config.get("random_erasing"):
        extras.append(f"random erasing on {config['random_erasing']:.0%} of images")
    if config["augment"] and config.get("crop_padding"):
        extras.append(f"random crops after {config['crop_padding']}-pixel padding")
    if config.get("mixed_precision"):
        extras.append("bfloat16 mixed precision")
    if config.get("class_weights"):
        power = config.get("class_weight_power", 1.0)
        extras.append("loss weighted by inverse class frequency"
                      + ("" if power == 1.0 else f" to the power {power}"))
    score = "FER+ majority accuracy" if config.get("select_by") == "ferplus" else "accuracy"
    optimizer = OPTIMIZERS[config.get("optimizer", "adam")]
    return (f"* `{stage.name}`: {start}, {config['epochs']} epochs, batch size {config['batch_size']}, {optimizer} at "
            f"{config['learning_rate']} with a {config['schedule']} schedule, augmentation "
            f"{'on' if config['augment'] else 'off'}, seed {config['seed']}"
            + "".join(f", {e}" for e in extras)
            + f"; {history['seconds'].sum() / 3600:.2f} h ({history['seconds'].mean():.0f} s per epoch); best "
            f"validation {score} {best['val_accuracy']:.4f} at epoch {int(best['epoch'])} "
            f"(`{stage.name}_history.csv`, `{stage.name}_curves.png`).")


def crowd_lines(crowd: dict[str, Any]) -> list[str]:
    """The card's bullets for a :func:`fer_batch.training.metrics.crowd_report`."""
    return [
        (f"* Against the FER+ crowd (ten annotators per face, `ferplus_labels.csv`): **majority accuracy "
         f"{crowd['accuracy']:.4f}**, macro F1 {crowd['macro_f1']:.4f} over the {crowd['count']} faces with a "
         f"clear majority; annotator agreement {crowd['annotator_agreement']:.4f}, cross-entropy "
         f"{crowd['cross_entropy']:.4f}, calibration error {crowd['calibration_error']:.4f} "
         "(`confusion_matrix_ferplus.png`)."),
        "* FER+ majority recall per class: " + ", ".join(
            f"{name} {row['recall']:.3f}" for name, row in crowd["per_class"].items()) + ".",
    ]


def kept_stage_lines(card: str) -> dict[str, str]:
    """Stage name -> its bullet in an earlier card (``* `name`: ...``), for stages whose run is not on this machine."""
    lines = {}
    for line in card.splitlines():
        line = line.strip()
        if line.startswith("* `") and "`: " in line:
            lines[line[3:line.index("`: ")]] = line
    return lines


def render_card(plan: str, root: Path, report: dict[str, Any], hardware: str,
                throughput: str | None, note: str | None, parameters: int,
                other_precisions: dict[str, tuple[float, str]] | None = None,
                previous_card: str | None = None) -> str:
    """The card's Markdown; ``other_precisions`` maps precisions other than the default to their accuracy and
    how to run them. A stage whose run folder is missing keeps its line from ``previous_card`` (the card's text
    before), with the history and curves files that card already has."""
    paths = stage_paths(plan, root)
    stages = PLANS[plan]
    kept = kept_stage_lines(previous_card) if previous_card is not None else {}
    lines = [f"# Model card: `{plan}`", ""]
    if note:
        lines += [note, ""]
    lines += [
        (f"* {parameters:,} parameters; input 48x48 grayscale, raw 0..255 pixels (rescaling is inside the model), "
         "7 classes. Recipes are in `fer_batch/training/models.py`."),
        "* Reproduce every stage with one command (it skips finished stages and resumes an interrupted one):",
        "",
        "  ```bash",
        f"  python -m fer_batch.training.reproduce {plan} ../shared/data/fer2013 --out runs/shipped",
        (f"  cp {'runs/shipped/' + stages[-1].name + ('.keras' if stages[-1].produces_file else '/model.keras')} "
         f"fer_batch/models/{plan}.keras"),
        "  ```",
        "",
        "* Stages, in order:",
        *[f"  {kept[stage.name]}" if stage.name in kept and not paths[stage.name].exists()
          else f"  {_stage_line(stage, paths[stage.name])}" for stage in stages],
        ("* Data: FER2013 `train/` (28,709 images); each run keeps the epoch with the best accuracy on "
         "`validation/` (PublicTest, 3,589 images), against the folder labels or, where the stage says so, "
         "against the FER+ crowd majority. PrivateTest was never used."),
        f"* Hardware: {hardware}.",
        "",
        "## Validation results (FER2013 PublicTest)",
        "",
        f"Measured with `fer-batch evaluate ../shared/data/fer2013/validation --model {plan}`:",
        "",
        (f"* **Accuracy {report['accuracy']:.4f}** at {report['precision']} (the default), macro F1 "
         f"{report['macro_f1']:.4f}, {report['count']} images."),
    ]
    for precision, (accuracy, how) in (other_precisions or {}).items():
        lines.append(f"* at {precision}: accuracy {accuracy:.4f} ({how}).")
    if report.get("ferplus"):
        lines += crowd_lines(report["ferplus"])
    if throughput:
        lines.append(f"* Classification throughput: {throughput}.")
    lines += ["", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for cls, row in report["per_class"].items():
        lines.append(f"| {cls} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {row['support']} |")
    curves = [f"![{s.name} training curves]({s.name}_curves.png)" for s in stages if not s.produces_file]
    lines += ["", "Confusion matrix (rows: true class, columns: predicted):", "", *_matrix_table(report), "",
              "![confusion matrix](confusion_matrix.png)", "", *curves, "",
              ("Files: `<stage>_history.csv` (per-epoch metrics of each stage), `metrics.json` (the evaluation "
               "above)."), "",
              "## Limits", "",
              ("* FER2013 faces are low-resolution, mostly frontal, and its labels are noisy (human agreement with "
               "them is about 65%). Accuracy on your photos depends on how alike they are."),
              "* `disgust` has only 436 training images; its recall is the weakest.",
              "* Expression is not emotion: the model reads facial muscle patterns, not inner states.", ""]
    return "\n".join(lines)


def write_card(plan: str, root: Path, dest: Path, hardware: str, throughput: str | None = None,
               note: str | None = None) -> Path:
    from fer_batch.analysis.classify import EmotionClassifier  # noqa: PLC0415
    from fer_batch.model_file import load_keras_model, stored_precisions  # noqa: PLC0415
    from fer_batch.models import resolve_model  # noqa: PLC0415
    from fer_batch.training.data import VALIDATION_SPLIT, load_image_folder  # noqa: PLC0415
    from fer_batch.training.evaluate import dataset_votes, evaluate_images, predicted_classes  # noqa: PLC0415

    paths = stage_paths(plan, root)
    dest.mkdir(parents=True, exist_ok=True)
    previous = (dest / "README.md").read_text() if (dest / "README.md").is_file() else None
    kept = kept_stage_lines(previous) if previous else {}
    dataset = None
    for stage in PLANS[plan]:
        if stage.produces_file:
            continue
        folder = paths[stage.name]
        if not folder.exists() and stage.name in kept:  # an earlier session's run: its card files stay
            continue
        for file in ("history.csv", "curves.png"):
            shutil.copy(folder / file, dest / f"{stage.name}_{file}")
        dataset = Path(json.loads((folder / "train_config.json").read_text())["dataset"])
    if dataset is None:
        raise ValueError(f"plan {plan} has no training stage")
    final = resolve_model(paths[PLANS[plan][-1].name])
    classifier = EmotionClassifier.load(final)
    validation = load_image_folder(dataset / VALIDATION_SPLIT, classifier.input_size,
                                   class_names=classifier.class_names)
    votes = dataset_votes(dataset, dataset / VALIDATION_SPLIT, validation)
    report = evaluate_images(classifier, validation, dest, title=f"{plan} on validation", votes=votes).report
    # Each other precision is measured on the final file, except float32 for an int8-only file: that is measured
    # on the file it was quantised from, which is also where the parameters are counted.
    stored = stored_precisions(final)
    others = {p: (final, f"`--precision {p}`") for p in stored if p != classifier.precision}
    float32_file, source = final, PLANS[plan][-1].quantize_from
    if "float32" not in stored and source:
        float32_file = resolve_model(paths[source])
        others["float32"] = (float32_file, f"the `{source}` network it was quantised from; not in the shipped file")
    other_accuracy = {p: (float((predicted_classes(file, validation, p) == validation.labels).mean()), how)
                      for p, (file, how) in others.items()}
    parameters = load_keras_model(float32_file)[0].count_params()
    card = dest / "README.md"
    card.write_text(render_card(plan, root, report, hardware, throughput, note, parameters, other_accuracy,
                                previous_card=previous))
    return card


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a shipped model's card from its reproduce plan.")
    parser.add_argument("plan", choices=sorted(PLANS))
    parser.add_argument("root", type=Path, help="the --out folder of python -m fer_batch.training.reproduce")
    parser.add_argument("dest", type=Path)
    parser.add_argument("--hardware", required=True)
    parser.add_argument("--throughput")
    parser.add_argument("--note", help="a paragraph placed at the top of the card")
    args = parser.parse_args()
    from fer_batch.runtime import import_tensorflow_quietly  # noqa: PLC0415

    import_tensorflow_quietly()
    card = write_card(args.plan, args.root, args.dest, args.hardware, args.throughput, args.note)
    print(f"model card written to {card}")


if __name__ == "__main__":
    main()

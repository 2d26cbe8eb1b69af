"""``fer-batch evaluate``: score a model on a folder of labelled face images.

The folder holds one sub-folder per class (``DIR/<class>/*.png``), with images
that are already face crops (as in FER2013); no detection is run. The report
(``metrics.json``, ``confusion_matrix.png``) has the same schema as the one
``fer-batch train`` writes for its validation split.

Where FER+ crowd votes exist for the images (``ferplus_labels.csv`` in the
folder or its parent, or a file named with ``votes``), the report also scores
the predictions against the ten annotators (``metrics.json``'s ``ferplus``
entry, :func:`fer_batch.training.metrics.crowd_report`) and draws a second
confusion matrix, ``confusion_matrix_ferplus.png``, against their majority.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fer_batch.analysis.classify import DEFAULT_BATCH_SIZE, EmotionClassifier
from fer_batch.errors import DatasetError
from fer_batch.models import resolve_model
from fer_batch.training.data import ImageSet, load_image_folder
from fer_batch.training.metrics import classification_report, crowd_report
from fer_batch.training.plots import plot_confusion_matrix
from fer_batch.training.votes import FERPLUS_FILE, VoteTable, find_vote_file, read_vote_table

log = logging.getLogger(__name__)
CROWD_CONFUSION_FILE = "confusion_matrix_ferplus.png"


@dataclass(frozen=True)
class Evaluation:
    report: dict[str, Any]
    metrics_path: Path
    confusion_path: Path
    crowd_confusion_path: Path | None = None  # against the FER+ majority, when votes were found


def predicted_classes(model_path: Path, data: ImageSet, precision: str = "auto") -> np.ndarray:
    """The class index the model file predicts for each image, at ``precision``."""
    return EmotionClassifier.load(model_path, precision=precision).predict_proba(data.images).argmax(axis=1)


def image_votes(votes: VoteTable, folder: Path, data: ImageSet) -> np.ndarray:
    """The (N, 10) FER+ vote counts of ``data`` (the images of ``folder``); a DatasetError when none is listed."""
    counts, listed = votes.align(votes.keys_for_images(folder, data.files))
    if len(data) and not listed.any():
        raise DatasetError(f"none of the images in {folder} is listed in {votes.path} (its 'file' column holds "
                           f"paths relative to {votes.path.parent})")
    return counts


def dataset_votes(dataset: Path, folder: Path, data: ImageSet) -> np.ndarray | None:
    """The FER+ vote counts of ``data`` (the images of ``folder``) from ``dataset``'s ``ferplus_labels.csv``;
    None when the dataset has no votes file or the file lists none of these images (votes for training only)."""
    vote_file = Path(dataset) / FERPLUS_FILE
    if not vote_file.is_file():
        return None
    try:
        return image_votes(read_vote_table(vote_file), folder, data)
    except DatasetError as exc:
        log.info("%s not scored against crowd votes: %s", folder, exc)
        return None


def evaluate_images(classifier: EmotionClassifier, data: ImageSet, out: Path, title: str,
                    extra: dict[str, Any] | None = None, votes: np.ndarray | None = None) -> Evaluation:
    """Classify labelled crops and write ``metrics.json`` (with ``extra`` entries) and ``confusion_matrix.png``.

    ``votes``, the images' FER+ vote counts (see :func:`image_votes`), adds the crowd scores as the report's
    ``ferplus`` entry and their confusion matrix as ``confusion_matrix_ferplus.png``.
    """
    began = time.perf_counter()
    probs = classifier.predict_proba(data.images)
    seconds = time.perf_counter() - began
    report = classification_report(data.labels, probs.argmax(axis=1), classifier.class_names)
    report["model_name"] = classifier.info.name
    report["precision"] = classifier.precision
    report["seconds"] = round(seconds, 3)
    report.update(extra or {})
    if votes is not None:
        report["ferplus"] = crowd_report(votes, probs, classifier.class_names)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps(report, indent=2))
    confusion_path = plot_confusion_matrix(report["confusion_matrix"], classifier.class_names,
                                           out / "confusion_matrix.png", title=f"{title}: accuracy "
                                           f"{report['accuracy']:.4f} (folder labels)")
    crowd_path = None
    if votes is not None:
        crowd = report["ferplus"]
        crowd_path = plot_confusion_matrix(crowd["confusion_matrix"], classifier.class_names,
                                           out / CROWD_CONFUSION_FILE, title=f"{title}: FER+ majority accuracy "
                                           f"{crowd['accuracy']:.4f}", true_label="FER+ majority class")
    return Evaluation(report=report, metrics_path=metrics_path, confusion_path=confusion_path,
                      crowd_confusion_path=crowd_path)


def evaluate_folder(
    data_dir: Path,
    model: str | Path | None = None,
    out: Path = Path("evaluation"),
    batch_size: int = DEFAULT_BATCH_SIZE,
    precision: str = "auto",
    votes: Path | None = None,
) -> Evaluation:
    """Classify every image under ``data_dir/<class>/`` and write the metrics report into ``out``.

    ``votes`` names a FER+ votes file; without it, ``ferplus_labels.csv`` in ``data_dir`` or its parent is used
    when there is one (and skipped, with a warning, when it lists none of the images).
    """
    data_dir = Path(data_dir)
    vote_file = Path(votes) if votes is not None else find_vote_file(data_dir)
    table = read_vote_table(vote_file) if vote_file is not None else None  # a bad file fails before the model loads
    model_path = resolve_model(model)
    classifier = EmotionClassifier.load(model_path, batch_size=batch_size, precision=precision)
    data = load_image_folder(data_dir, classifier.input_size, class_names=classifier.class_names)
    counts = None
    extra: dict[str, Any] = {"model": str(model_path), "data": str(data_dir)}
    if table is not None:
        try:
            counts = image_votes(table, data_dir, data)
            extra["votes"] = str(table.path)
        except DatasetError as exc:
            if votes is not None:
                raise
            log.warning("crowd votes not scored: %s", exc)
    return evaluate_images(classifier, data, out, title=f"{classifier.info.name} on {data_dir.name}",
                           extra=extra, votes=counts)

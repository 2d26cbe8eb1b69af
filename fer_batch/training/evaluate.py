"""``fer-batch evaluate``: score a model on a folder of labelled face images.

The folder holds one sub-folder per class (``DIR/<class>/*.png``), with images
that are already face crops (as in FER2013); no detection is run. The report
(``metrics.json``, ``confusion_matrix.png``) has the same schema as the one
``fer-batch train`` writes for its validation split.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fer_batch.classify import DEFAULT_BATCH_SIZE, EmotionClassifier
from fer_batch.models import resolve_model
from fer_batch.training.data import ImageSet, load_image_folder
from fer_batch.training.metrics import classification_report
from fer_batch.training.plots import plot_confusion_matrix


@dataclass(frozen=True)
class Evaluation:
    report: dict[str, Any]
    metrics_path: Path
    confusion_path: Path


def predicted_classes(model_path: Path, data: ImageSet, precision: str = "auto") -> np.ndarray:
    """The class index the model file predicts for each image, at ``precision``."""
    return EmotionClassifier.load(model_path, precision=precision).predict_proba(data.images).argmax(axis=1)


def evaluate_images(classifier: EmotionClassifier, data: ImageSet, out: Path, title: str,
                    extra: dict[str, Any] | None = None) -> Evaluation:
    """Classify labelled crops and write ``metrics.json`` (with ``extra`` entries) and ``confusion_matrix.png``."""
    began = time.perf_counter()
    probs = classifier.predict_proba(data.images)
    seconds = time.perf_counter() - began
    report = classification_report(data.labels, probs.argmax(axis=1), classifier.class_names)
    report["model_name"] = classifier.info.name
    report["precision"] = classifier.precision
    report["seconds"] = round(seconds, 3)
    report.update(extra or {})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps(report, indent=2))
    confusion_path = plot_confusion_matrix(report["confusion_matrix"], classifier.class_names,
                                           out / "confusion_matrix.png", title=f"{title}: accuracy "
                                           f"{report['accuracy']:.4f}")
    return Evaluation(report=report, metrics_path=metrics_path, confusion_path=confusion_path)


def evaluate_folder(
    data_dir: Path,
    model: str | Path | None = None,
    out: Path = Path("evaluation"),
    batch_size: int = DEFAULT_BATCH_SIZE,
    precision: str = "auto",
) -> Evaluation:
    """Classify every image under ``data_dir/<class>/`` and write the metrics report into ``out``."""
    model_path = resolve_model(model)
    classifier = EmotionClassifier.load(model_path, batch_size=batch_size, precision=precision)
    data = load_image_folder(Path(data_dir), classifier.input_size, class_names=classifier.class_names)
    return evaluate_images(classifier, data, out, title=f"{classifier.info.name} on {Path(data_dir).name}",
                           extra={"model": str(model_path), "data": str(data_dir)})

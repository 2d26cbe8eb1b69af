"""Classification metrics from label arrays, and agreement with crowd votes (NumPy only, no scikit-learn)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fer_batch.training.votes import class_columns, class_distribution, majority_classes, non_faces


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts with true classes as rows and predicted classes as columns."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return matrix


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro F1, per-class precision/recall/F1/support and the confusion matrix.

    A class that is never predicted has precision 0 (and likewise recall for a
    class with no examples), so the macro average is not flattered by it.
    """
    num_classes = len(class_names)
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(matrix).astype(float)
    predicted = matrix.sum(axis=0).astype(float)
    actual = matrix.sum(axis=1).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    count = int(matrix.sum())
    return {
        "count": count,
        "accuracy": float(tp.sum() / count) if count else 0.0,
        "macro_f1": float(f1.mean()),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(actual[i]),
            }
            for i, name in enumerate(class_names)
        },
        "class_names": list(class_names),
        "confusion_matrix": matrix.tolist(),
    }


def format_report(report: dict[str, Any]) -> str:
    """A fixed-width text table of a :func:`classification_report`."""
    lines = [f"{'class':<10} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>8}"]
    for name, row in report["per_class"].items():
        lines.append(
            f"{name:<10} {row['precision']:>9.3f} {row['recall']:>7.3f} {row['f1']:>6.3f} {row['support']:>8d}"
        )
    lines.append(f"accuracy {report['accuracy']:.4f}   macro F1 {report['macro_f1']:.4f}   count {report['count']}")
    return "\n".join(lines)


CALIBRATION_BINS = 10  # equal-width bins of the top probability, for the expected calibration error


def crowd_report(counts: np.ndarray, probs: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """How well predictions agree with FER+'s annotators: majority accuracy, agreement, cross-entropy, calibration.

    ``counts`` are the (N, 10) vote counts of :data:`fer_batch.training.votes.ALL_VOTE_COLUMNS` for each image
    (all zero for an image without votes), ``probs`` the model's (N, C) probabilities over ``class_names``.

    * **Majority** scores (accuracy, macro F1, per-class precision/recall, confusion matrix, in the schema of
      :func:`classification_report`) cover the faces whose votes have one winner and that winner is one of the
      model's classes; ties and contempt, unknown or not-a-face winners are left out and counted.
    * **Annotator agreement**: for each face, the share of all its annotators who chose the predicted class.
    * **Cross-entropy** of the probabilities against the vote distribution over the model's classes, and the
      **expected calibration error**: over bins of the top probability, the gap between the mean top probability
      and the mean share of annotators (among the model's classes) who chose that class, weighted by bin size.

    Agreement, cross-entropy and calibration cover every face with a vote for one of the model's classes,
    except those most annotators called not a face.
    """
    counts = np.asarray(counts, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    columns = np.asarray(class_columns(class_names))
    predicted = probs.argmax(axis=1)
    total = counts.sum(axis=1)
    majority = majority_classes(counts, class_names)
    has_majority = majority.labels >= 0
    report = classification_report(majority.labels[has_majority], predicted[has_majority], class_names)
    report["excluded"] = majority.excluded

    distribution = class_distribution(counts, class_names)
    faces = (distribution.sum(axis=1) > 0) & ~non_faces(counts, total > 0)
    rows = np.flatnonzero(faces)
    chosen = counts[rows, columns[predicted[rows]]]
    agreement = chosen / total[rows]
    cross_entropy = -(distribution[rows] * np.log(np.clip(probs[rows], 1e-7, 1.0))).sum(axis=1)
    confidence = probs[rows].max(axis=1)
    share = distribution[rows, predicted[rows]]
    bins = np.minimum((confidence * CALIBRATION_BINS).astype(int), CALIBRATION_BINS - 1)
    calibration = []
    error = 0.0
    for b in range(CALIBRATION_BINS):
        in_bin = bins == b
        if not in_bin.any():
            continue
        gap = float(confidence[in_bin].mean() - share[in_bin].mean())
        error += in_bin.mean() * abs(gap)
        calibration.append({"bin": [b / CALIBRATION_BINS, (b + 1) / CALIBRATION_BINS], "count": int(in_bin.sum()),
                            "mean_probability": float(confidence[in_bin].mean()),
                            "mean_vote_share": float(share[in_bin].mean())})
    report.update({
        "distribution_count": int(len(rows)),
        "annotator_agreement": float(agreement.mean()) if len(rows) else 0.0,
        "cross_entropy": float(cross_entropy.mean()) if len(rows) else 0.0,
        "calibration_error": float(error),
        "calibration_bins": calibration,
    })
    return report


def format_crowd_report(report: dict[str, Any]) -> str:
    """A fixed-width text table of a :func:`crowd_report`: majority scores per class, then the crowd figures."""
    excluded = report["excluded"]
    left_out = ", ".join(f"{count} {reason.replace('_', ' ')}" for reason, count in excluded.items() if count)
    lines = [f"{'class':<10} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>8}   (FER+ majority)"]
    lines += format_report(report).splitlines()[1:-1]
    lines.append(f"majority accuracy {report['accuracy']:.4f}   macro F1 {report['macro_f1']:.4f}   "
                 f"faces {report['count']} (left out: {left_out or 'none'})")
    lines.append(f"annotator agreement {report['annotator_agreement']:.4f}   cross-entropy "
                 f"{report['cross_entropy']:.4f}   calibration error {report['calibration_error']:.4f}   "
                 f"faces {report['distribution_count']}")
    return "\n".join(lines)

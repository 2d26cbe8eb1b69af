"""Training targets beyond the folder label: FER+ crowd votes, non-face cleaning and a teacher's probabilities.

FER2013's single labels are noisy (FER+'s ten annotators agree with them on
only about 62% of images), so a run can train towards a blend of

* the folder label as a one-hot vector,
* the FER+ vote distribution of the image (``ferplus_weight``), and
* the mean class probabilities of already trained models, the teachers
  (``teacher_weight``; knowledge distillation from one model or an ensemble),

and can drop the images FER+ marks as not a face. Validation always uses the
folder labels, so accuracy stays comparable with every other run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fer_batch.errors import DatasetError
from fer_batch.training.data import ImageSet
from fer_batch.training.votes import (
    FERPLUS_FILE,
    class_columns,
    class_distribution,
    majority_classes,
    non_faces,
    read_vote_table,
)


@dataclass(frozen=True)
class CrowdVotes:
    """FER+ votes aligned with an :class:`ImageSet`'s images."""

    distribution: np.ndarray  # (N, C) float32 over the set's classes; all zero where an image has no usable votes
    non_face: np.ndarray  # (N,) bool: most annotators said "not a face", or the listed image has no votes


def read_crowd_votes(dataset: Path, split: str, data: ImageSet) -> CrowdVotes:
    """Align ``<dataset>/ferplus_labels.csv`` with ``data`` (the images of ``<dataset>/<split>/``)."""
    path = Path(dataset) / FERPLUS_FILE
    if not path.is_file():
        raise DatasetError(f"FER+ votes requested but {path} is missing")
    class_columns(data.class_names)  # refuse classes without votes before reading the file
    counts, listed = read_vote_table(path).align([f"{split}/{name}" for name in data.files])
    return CrowdVotes(distribution=class_distribution(counts, data.class_names).astype(np.float32),
                      non_face=non_faces(counts, listed))


def crowd_majority_set(dataset: Path, split: str, data: ImageSet) -> ImageSet:
    """The images of ``data`` with a clear FER+ majority among its classes, labelled with that majority.

    Validation against it (``--select-by ferplus``) measures agreement with the crowd instead of with the
    single FER2013 annotator; ties and contempt, unknown or not-a-face majorities are left out.
    """
    path = Path(dataset) / FERPLUS_FILE
    if not path.is_file():
        raise DatasetError(f"selecting by FER+ majority needs {path}, which is missing")
    class_columns(data.class_names)
    counts, _ = read_vote_table(path).align([f"{split}/{name}" for name in data.files])
    labels = majority_classes(counts, data.class_names).labels
    keep = labels >= 0
    if not keep.any():
        raise DatasetError(f"no image of {Path(dataset) / split} has a FER+ majority in {path}")
    return replace(data.subset(keep), labels=labels[keep], targets=None)


def one_hot(data: ImageSet) -> np.ndarray:
    return np.eye(len(data.class_names), dtype=np.float32)[data.labels]


def blend(base: np.ndarray, other: np.ndarray, weight: float) -> np.ndarray:
    """``(1 - weight) * base + weight * other`` per row, keeping ``base`` where ``other`` is all zero."""
    has_other = other.sum(axis=1, keepdims=True) > 0
    return np.where(has_other, (1.0 - weight) * base + weight * other, base).astype(np.float32)


def teacher_probabilities(teachers: Sequence[str | Path], data: ImageSet, batch_size: int = 256) -> np.ndarray:
    """The teachers' mean class probabilities for every image, each averaged over the image and its mirror.

    Each teacher runs at its file's default precision, so an int8-only model (the shipped ``accurate``) can teach.
    """
    from fer_batch.analysis.classify import EmotionClassifier  # noqa: PLC0415
    from fer_batch.models import resolve_model  # noqa: PLC0415

    total = np.zeros((len(data), len(data.class_names)), dtype=np.float64)
    for teacher in teachers:
        loaded = EmotionClassifier.load(resolve_model(teacher), batch_size=batch_size)
        if tuple(loaded.class_names) != tuple(data.class_names):
            raise DatasetError(f"teacher {teacher} predicts {', '.join(loaded.class_names)}; "
                               f"the dataset has {', '.join(data.class_names)}")
        # The classifier's own test-time mirroring, switched on whatever the teacher's file says.
        classifier = EmotionClassifier(loaded.runner, replace(loaded.info, flip_average=True), batch_size=batch_size)
        total += classifier.predict_proba(data.images)
    return (total / len(teachers)).astype(np.float32)


def training_targets(
    data: ImageSet,
    *,
    dataset: Path,
    split: str,
    ferplus_weight: float = 0.0,
    drop_non_faces: bool = False,
    teachers: Sequence[str | Path] = (),
    teacher_weight: float = 0.0,
) -> ImageSet:
    """``data`` with blended ``targets`` (and without FER+ non-faces when asked); unchanged when nothing is asked."""
    use_votes = ferplus_weight > 0 or drop_non_faces
    use_teachers = bool(teachers) and teacher_weight > 0
    if not (use_votes or use_teachers):
        return data
    targets = one_hot(data)
    keep = np.ones(len(data), dtype=bool)
    if use_votes:
        votes = read_crowd_votes(dataset, split, data)
        targets = blend(targets, votes.distribution, ferplus_weight)
        if drop_non_faces:
            keep = ~votes.non_face
    if use_teachers:
        targets = blend(targets, teacher_probabilities(teachers, data), teacher_weight)
    return data.with_targets(targets).subset(keep)

"""FER+ crowd votes: ten annotators' choices for each FER2013 image, read without pandas.

``ferplus_labels.csv`` (one row per image file, as in ``../shared/data/fer2013/``) gives for each image its vote
counts over FER+'s ten columns: the seven FER2013 expressions under FER+'s names, plus contempt, unknown and
``NF`` (not a face). A row with empty vote fields is an image FER+ left out (in FER2013, the non-faces).

This module only reads and aligns the counts; what is made of them lives with its user: training targets in
:mod:`fer_batch.training.targets`, agreement scores in :mod:`fer_batch.training.metrics`. It needs nothing but
the standard library and NumPy, so ``fer-batch evaluate`` scores against the crowd on the default install.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fer_batch.errors import DatasetError

FERPLUS_FILE = "ferplus_labels.csv"
# FER+ vote column for each FER2013 class folder name; contempt, unknown and NF have no FER2013 class.
FERPLUS_VOTE_COLUMN = {
    "angry": "anger",
    "disgust": "disgust",
    "fear": "fear",
    "happy": "happiness",
    "neutral": "neutral",
    "sad": "sadness",
    "surprise": "surprise",
}
NON_FACE_COLUMN = "NF"
OTHER_VOTE_COLUMNS = ("contempt", "unknown", NON_FACE_COLUMN)
ALL_VOTE_COLUMNS = (*FERPLUS_VOTE_COLUMN.values(), *OTHER_VOTE_COLUMNS)


@dataclass(frozen=True)
class VoteTable:
    """The vote counts of a ``ferplus_labels.csv``, keyed by each image's path relative to the file's folder."""

    path: Path
    counts: dict[str, np.ndarray]  # "validation/angry/PublicTest_1.png" -> (10,) counts in ALL_VOTE_COLUMNS order

    def align(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(counts, listed)`` for ``keys``: (N, 10) float counts (zero where unlisted or unvoted), (N,) bool."""
        zero = np.zeros(len(ALL_VOTE_COLUMNS))
        listed = np.array([key in self.counts for key in keys], dtype=bool)
        counts = np.array([self.counts.get(key, zero) for key in keys], dtype=np.float64).reshape(-1, len(zero))
        return counts, listed

    def keys_for_images(self, folder: Path, files: Sequence[str]) -> list[str]:
        """The table keys of ``files`` (paths relative to ``folder``), as paths relative to the table's folder."""
        base = self.path.parent.resolve()
        folder = Path(folder).resolve()
        keys = []
        for name in files:
            relative = os.path.relpath(folder / name, base)
            keys.append(Path(relative).as_posix())
        return keys


def read_vote_table(path: Path) -> VoteTable:
    """Read ``path``; a :class:`DatasetError` when it is missing, is not a CSV or lacks a vote column."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"FER+ votes file {path} does not exist")
    counts: dict[str, np.ndarray] = {}
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = sorted({"file", *ALL_VOTE_COLUMNS} - set(reader.fieldnames or ()))
            if missing:
                raise DatasetError(f"{path} is not a FER+ votes file: it lacks the column(s) {', '.join(missing)}")
            for line, row in enumerate(reader, start=2):
                try:
                    counts[row["file"]] = np.array([float(row[c] or 0) for c in ALL_VOTE_COLUMNS])
                except (TypeError, ValueError):
                    raise DatasetError(f"{path}, line {line}: a vote count is not a number") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{path} is not a text CSV file") from None
    return VoteTable(path=path, counts=counts)


def find_vote_file(folder: Path) -> Path | None:
    """``ferplus_labels.csv`` in ``folder`` or its parent (a dataset root beside its split folders), if any."""
    for candidate in (Path(folder) / FERPLUS_FILE, Path(folder).parent / FERPLUS_FILE):
        if candidate.is_file():
            return candidate
    return None


def class_columns(class_names: Sequence[str]) -> list[int]:
    """The vote column index of each class; a :class:`DatasetError` for a class FER+ has no votes for."""
    unknown = sorted(set(class_names) - set(FERPLUS_VOTE_COLUMN))
    if unknown:
        raise DatasetError(f"FER+ votes cover the seven FER2013 classes; these classes have none: {', '.join(unknown)}")
    return [ALL_VOTE_COLUMNS.index(FERPLUS_VOTE_COLUMN[name]) for name in class_names]


def non_faces(counts: np.ndarray, listed: np.ndarray) -> np.ndarray:
    """Listed images most of whose annotators said "not a face", or that FER+ gave no votes at all."""
    total = counts.sum(axis=1)
    not_face = counts[:, ALL_VOTE_COLUMNS.index(NON_FACE_COLUMN)]
    return listed & ((total == 0) | (not_face * 2 > total))


def class_distribution(counts: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """Votes over the model's classes only, each row summing to 1 (all zero where no annotator chose one)."""
    votes = counts[:, class_columns(class_names)]
    total = votes.sum(axis=1, keepdims=True)
    return np.divide(votes, total, out=np.zeros_like(votes), where=total > 0)


@dataclass(frozen=True)
class Majority:
    """Each image's crowd majority among the model's classes, or why it has none."""

    labels: np.ndarray  # (N,) class index of the clear winner, -1 where there is none
    excluded: dict[str, int]  # images without a majority class, by reason: no_votes, tie, contempt, unknown, not_a_face


def majority_classes(counts: np.ndarray, class_names: Sequence[str]) -> Majority:
    """The class most annotators chose, for images whose votes have one winner and that winner is a class.

    Ties, and images where contempt, unknown or "not a face" won, get -1 and are counted in ``excluded``.
    """
    counts = np.asarray(counts, dtype=np.float64)
    columns = class_columns(class_names)
    voted = counts.sum(axis=1) > 0
    winner = counts.argmax(axis=1)
    tie = voted & ((counts == counts.max(axis=1, keepdims=True)).sum(axis=1) > 1)
    clear = voted & ~tie
    labels = np.full(len(counts), -1, dtype=np.int64)
    for index, column in enumerate(columns):
        labels[clear & (winner == column)] = index
    excluded = {"no_votes": int((~voted).sum()), "tie": int(tie.sum())}
    for reason, column in (("contempt", "contempt"), ("unknown", "unknown"), ("not_a_face", NON_FACE_COLUMN)):
        excluded[reason] = int((clear & (winner == ALL_VOTE_COLUMNS.index(column))).sum())
    return Majority(labels=labels, excluded=excluded)

"""Soft training targets: FER+ votes, non-face cleaning and a teacher's probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fer_batch.errors import DatasetError
from fer_batch.model_file import EMOTIONS
from fer_batch.training.data import ImageSet, make_tf_dataset
from fer_batch.training.targets import (
    blend,
    read_crowd_votes,
    teacher_probabilities,
    training_targets,
)
from fer_batch.training.votes import ALL_VOTE_COLUMNS, FERPLUS_FILE


def _image_set(labels: list[int]) -> ImageSet:
    images = np.arange(len(labels) * 48 * 48, dtype=np.int64).reshape(len(labels), 48, 48, 1) % 256
    return ImageSet(images=images.astype(np.uint8), labels=np.asarray(labels), class_names=EMOTIONS,
                    files=tuple(f"{EMOTIONS[y]}/{i}.png" for i, y in enumerate(labels)))


def _write_votes(root: Path, rows: dict[str, dict[str, int]]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    table = [{"file": f, "split": "Training", **{c: votes.get(c, 0) for c in ALL_VOTE_COLUMNS}}
             for f, votes in rows.items()]
    pd.DataFrame(table).to_csv(root / FERPLUS_FILE, index=False)


@pytest.fixture()
def voted(tmp_path: Path) -> tuple[Path, ImageSet]:
    data = _image_set([0, 3, 4, 6])  # angry, happy, neutral, surprise
    _write_votes(tmp_path, {
        "train/angry/0.png": {"anger": 6, "disgust": 2, "contempt": 2},  # contempt has no FER2013 class
        "train/happy/1.png": {"NF": 8, "happiness": 2},  # not a face
        "train/neutral/2.png": {},  # listed, no votes: FER+ left it out as a non-face
        # surprise/3.png is not listed at all: its target stays the folder label
    })
    return tmp_path, data


def test_votes_are_aligned_by_split_class_and_file(voted: tuple[Path, ImageSet]) -> None:
    root, data = voted
    votes = read_crowd_votes(root, "train", data)
    angry, disgust, happy = EMOTIONS.index("angry"), EMOTIONS.index("disgust"), EMOTIONS.index("happy")
    assert votes.distribution[0, angry] == pytest.approx(0.75)
    assert votes.distribution[0, disgust] == pytest.approx(0.25)
    assert votes.distribution[1, happy] == pytest.approx(1.0)  # only class votes count towards the distribution
    assert votes.distribution[2].sum() == 0 and votes.distribution[3].sum() == 0
    assert votes.non_face.tolist() == [False, True, True, False]


def test_training_targets_blend_votes_and_drop_non_faces(voted: tuple[Path, ImageSet]) -> None:
    root, data = voted
    out = training_targets(data, dataset=root, split="train", ferplus_weight=0.5, drop_non_faces=True)
    assert out.files == ("angry/0.png", "surprise/3.png")
    assert out.targets is not None and np.allclose(out.targets.sum(axis=1), 1.0)
    assert out.targets[0, EMOTIONS.index("angry")] == pytest.approx(0.5 + 0.5 * 0.75)
    assert out.targets[1].tolist() == np.eye(7)[EMOTIONS.index("surprise")].tolist()
    assert training_targets(data, dataset=root, split="train") is data  # nothing asked: untouched


def test_missing_or_foreign_vote_files_are_dataset_errors(tmp_path: Path) -> None:
    data = _image_set([0, 1])
    with pytest.raises(DatasetError, match="missing"):
        read_crowd_votes(tmp_path, "train", data)
    pd.DataFrame({"file": ["train/angry/0.png"], "anger": [3]}).to_csv(tmp_path / FERPLUS_FILE, index=False)
    with pytest.raises(DatasetError, match="lacks the column"):
        read_crowd_votes(tmp_path, "train", data)
    other = ImageSet(images=data.images, labels=data.labels, class_names=("cat", "dog"), files=data.files)
    with pytest.raises(DatasetError, match="cat"):
        read_crowd_votes(tmp_path, "train", other)


def test_blend_keeps_rows_without_other_targets() -> None:
    base = np.eye(3, dtype=np.float32)
    other = np.array([[0, 1, 0], [0, 0, 0], [0.5, 0, 0.5]], dtype=np.float32)
    out = blend(base, other, 0.25)
    assert out[0].tolist() == [0.75, 0.25, 0.0]
    assert out[1].tolist() == [0.0, 1.0, 0.0]
    assert out[2].tolist() == [0.125, 0.0, 0.875]


def test_teacher_probabilities_average_the_mirror(tiny_model_path: Path) -> None:
    data = _image_set([0, 1, 2])
    probs = teacher_probabilities([tiny_model_path], data)
    assert probs.shape == (3, 7) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    mirrored = ImageSet(images=data.images[:, :, ::-1].copy(), labels=data.labels, class_names=EMOTIONS,
                        files=data.files)
    assert np.allclose(teacher_probabilities([tiny_model_path], mirrored), probs, atol=1e-5)


def test_tf_dataset_feeds_the_targets() -> None:
    data = _image_set([0, 1]).with_targets(np.full((2, 7), 1 / 7, dtype=np.float32))
    _, y = next(iter(make_tf_dataset(data, 2, training=False)))
    assert np.allclose(y.numpy(), 1 / 7)
    _, y = next(iter(make_tf_dataset(_image_set([0, 1]), 2, training=False)))
    assert y.numpy().tolist() == np.eye(7)[[0, 1]].tolist()

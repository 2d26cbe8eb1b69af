"""End-to-end runs on real data in ../shared (skipped with the reason where it is absent).

* Every annotated face in ../shared/media/photos/face_boxes.csv is found (IoU >= 0.3) and
  the two photos without a human face come out as ``no_face``.
* Each shipped model keeps its measured accuracy on the FER2013 validation split (a regression guard
  just under the figure in its model card).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from fer_batch.analysis.pipeline import Analyzer
from fer_batch.records import Box, Status

from .conftest import shared_path

MIN_IOU = 0.3
# Regression guards, a little under what was measured (in the comments; model_cards/<name>/metrics.json) for each
# shipped model and precision: (accuracy on FER2013's folder labels, accuracy against the FER+ crowd majority).
SHIPPED_MIN_ACCURACY = {
    ("accurate", "int8"): (0.626, 0.848),  # 0.6297 and 0.8511, the default: trained toward the crowd (issue 26)
    ("accurate-fer2013", "int8"): (0.717, 0.678),  # 0.7203 and 0.6812 (the default until 2026-12-07)
    # Both accurate models ship int8 only; their float32 networks (fer_batch.training.reproduce's crowd-ensemble.keras
    # and resnets-wide.keras) measured 0.6303 / 0.8514 and 0.7166.
    ("fast", "int8"): (0.611, 0.820),  # 0.6144 and 0.8235: trained toward the crowd (issue 26)
    ("fast", "float32"): (0.611, 0.825),  # 0.6144 and 0.8286
    ("fast-fer2013", "int8"): (0.682, 0.665),  # 0.6843 and 0.6679 (issue 4 asked 0.68 of FER2013's labels)
    ("fast-fer2013", "float32"): (0.682, 0.660),  # 0.6835 and 0.6637
}
# The crowd-trained models must not buy agreement by calling quiet faces neutral (issue 26): macro F1 against the
# crowd majority at least this, and every class's crowd-majority recall at least 0.55 but disgust's (31 faces).
CROWD_MIN_MACRO_F1 = {"accurate": 0.72, "fast": 0.68}
CROWD_MIN_RECALL = 0.55


@pytest.fixture(scope="module")
def photo_results() -> dict[str, object]:
    photos = shared_path("media", "photos")
    analyzer = Analyzer()  # the shipped model and the default detector, as a user runs it
    return {Path(r.source).name: r for r in analyzer.analyze_paths([photos])}


def test_every_annotated_face_is_found(photo_results: dict) -> None:
    boxes = shared_path("media", "photos", "face_boxes.csv")
    missed = []
    with boxes.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 18
    for row in rows:
        truth = Box(int(row["left"]), int(row["top"]), int(row["width"]), int(row["height"]))
        found = photo_results[row["file"]].faces
        best = max((truth.iou(face.box) for face in found), default=0.0)
        if best < MIN_IOU:
            missed.append((row["file"], truth, round(best, 2)))
    assert not missed, f"annotated faces not found: {missed}"


def test_photos_without_a_human_face_yield_no_face(photo_results: dict) -> None:
    for name in ("dlib_dogs.jpg", "fer_no-faces.jpg"):
        assert photo_results[name].status is Status.NO_FACE, name


def test_every_photo_is_reported(photo_results: dict) -> None:
    photos = shared_path("media", "photos")
    images = [p for p in photos.iterdir() if p.suffix.lower() in {".jpg", ".png"}]
    assert set(photo_results) == {p.name for p in images}
    assert all(r.status is not Status.ERROR for r in photo_results.values())


@pytest.fixture(scope="module")
def validation_set() -> tuple[Path, object, object]:
    """FER2013 validation and its FER+ votes, read once for every model (3,589 PNGs take seconds to decode)."""
    from fer_batch.model_file import EMOTIONS
    from fer_batch.training.data import load_image_folder
    from fer_batch.training.evaluate import image_votes
    from fer_batch.training.votes import FERPLUS_FILE, read_vote_table

    folder = shared_path("data", "fer2013", "validation")
    data = load_image_folder(folder, (48, 48), class_names=EMOTIONS)
    return folder, data, image_votes(read_vote_table(folder.parent / FERPLUS_FILE), folder, data)


@pytest.mark.parametrize(("model", "precision"), sorted(SHIPPED_MIN_ACCURACY))
def test_shipped_model_accuracy_on_fer2013_validation(model: str, precision: str, tmp_path: Path,
                                                      validation_set: tuple) -> None:
    from fer_batch.analysis.classify import EmotionClassifier
    from fer_batch.models import resolve_model
    from fer_batch.training.evaluate import evaluate_images

    _, data, votes = validation_set
    classifier = EmotionClassifier.load(resolve_model(model), precision=precision)
    report = evaluate_images(classifier, data, tmp_path, title=model, votes=votes).report
    assert report["count"] == 3589 and report["precision"] == precision
    folder_labels, crowd = SHIPPED_MIN_ACCURACY[(model, precision)]
    assert report["accuracy"] >= folder_labels
    assert report["ferplus"]["count"] == 3372 and report["ferplus"]["accuracy"] >= crowd
    if model in CROWD_MIN_MACRO_F1:
        assert report["ferplus"]["macro_f1"] >= CROWD_MIN_MACRO_F1[model]
        recalls = {name: row["recall"] for name, row in report["ferplus"]["per_class"].items() if name != "disgust"}
        assert min(recalls.values()) >= CROWD_MIN_RECALL, recalls

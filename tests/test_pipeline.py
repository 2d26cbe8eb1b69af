"""The Analyzer API: files in, one record per input, faces classified in batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from fer_batch.analysis.classify import EmotionClassifier
from fer_batch.analysis.pipeline import Analyzer, GrowingChunks
from fer_batch.inputs.frames import Analysed, Event, Frame, Idle, SourceEnd
from fer_batch.records import Box, Detection, Status

from .conftest import SAMPLE_MEDIA


class FixedDetector:
    """Returns the same two boxes for every image: isolates the pipeline from detection."""

    name = "fixed"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        self.calls.append(len(images))
        return [[Detection(Box(0, 0, 20, 20), 0.9), Detection(Box(20, 20, 30, 30), 0.8)] for _ in images]


class CountingClassifier(EmotionClassifier):
    def __init__(self, base: EmotionClassifier) -> None:
        super().__init__(base.runner, base.info, base.batch_size)
        self.calls: list[int] = []

    def predict_proba(self, crops: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        self.calls.append(len(crops))
        return super().predict_proba(crops, batch_size)


def _images(tmp_path: Path, n: int) -> list[Path]:
    import cv2

    paths = []
    for i in range(n):
        p = tmp_path / f"img{i:02d}.png"
        cv2.imwrite(str(p), np.full((60, 60, 3), 10 * i, np.uint8))
        paths.append(p)
    return paths


def test_faces_of_many_images_are_classified_together(tiny_model_path: Path, tmp_path: Path) -> None:
    clf = CountingClassifier(EmotionClassifier.load(tiny_model_path))
    det = FixedDetector()
    analyzer = Analyzer(clf, det, chunk_size=8)
    results = list(analyzer.analyze_paths([tmp_path] if _images(tmp_path, 20) else []))
    assert len(results) == 20 and all(r.status is Status.OK and len(r.faces) == 2 for r in results)
    assert det.calls == [2, 4, 8, 6]  # chunks start small (the first rows come at once) and double up to 8
    assert clf.calls == [4, 8, 16, 12]  # one classifier call per chunk, never one per face
    face = results[0].faces[1]
    assert face.face == 1 and face.det_score == 0.8
    assert face.emotion == max(face.probabilities, key=face.probabilities.get)
    assert sum(face.probabilities.values()) == pytest.approx(1.0, rel=1e-5)


def test_every_input_appears_once_in_order_with_its_status(tiny_model_path: Path, tmp_path: Path) -> None:
    good = _images(tmp_path, 2)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")
    analyzer = Analyzer(tiny_model_path, "yunet", chunk_size=2)
    results = list(analyzer.analyze_paths([good[0], bad, tmp_path / "missing.png", good[1]]))
    assert [r.status for r in results] == [Status.NO_FACE, Status.ERROR, Status.ERROR, Status.NO_FACE]
    assert results[1].error == "empty file (0 bytes)"
    assert results[0].width == 60


def test_real_photos_with_a_real_detector(tiny_model_path: Path, tmp_path: Path) -> None:
    crops = tmp_path / "crops"
    analyzer = Analyzer(tiny_model_path, save_crops=crops)
    results = {Path(r.source).name: r for r in analyzer.analyze_paths([SAMPLE_MEDIA])}
    assert len(results["two_people_composite.jpg"].faces) == 2
    assert results["chelsea_cat.png"].status is Status.NO_FACE
    assert results["grace_hopper.jpg"].status is Status.OK
    assert len(list(crops.glob("*.png"))) == 4  # one crop per face found


def test_analyze_array(tiny_model_path: Path) -> None:
    analyzer = Analyzer(tiny_model_path, FixedDetector())
    result = analyzer.analyze_array(np.zeros((64, 64, 3), np.uint8))
    assert result.status is Status.OK and len(result.faces) == 2 and result.width == 64


class FailingDetector(FixedDetector):
    """Raises on images whose first pixel is 30 (the fourth of ``_images``), as a detector bug would."""

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        if any(int(image[0, 0, 0]) == 30 for image in images):
            raise RuntimeError("detector broke")
        return super().detect(images)


def test_a_failing_detection_gives_that_image_an_error_row_and_the_rest_goes_on(
        tiny_model_path: Path, tmp_path: Path) -> None:
    paths = _images(tmp_path, 6)
    analyzer = Analyzer(tiny_model_path, FailingDetector(), chunk_size=4)
    results = list(analyzer.analyze_paths(paths))
    assert [Path(r.source).name for r in results] == [p.name for p in paths]
    assert [r.status for r in results] == [Status.OK] * 3 + [Status.ERROR] + [Status.OK] * 2
    assert results[3].error == "face detection failed: RuntimeError: detector broke"


def test_a_failing_classification_gives_that_image_an_error_row(tiny_model_path: Path, tmp_path: Path) -> None:
    paths = _images(tmp_path, 4)
    analyzer = Analyzer(tiny_model_path, FixedDetector(), chunk_size=4)
    classify = analyzer.classify

    def fragile(images, detections, names=None, frames=None):  # type: ignore[no-untyped-def]
        if any(int(image[0, 0, 0]) == 20 for image in images):
            raise ValueError("bad crop")
        return classify(images, detections, names, frames)

    analyzer.classify = fragile  # type: ignore[method-assign]
    results = list(analyzer.analyze_paths(paths))
    assert [r.status for r in results] == [Status.OK, Status.OK, Status.ERROR, Status.OK]
    assert results[2].error == "classification failed: ValueError: bad crop"


def test_parallel_detection_keeps_input_order_and_equals_one_worker(tiny_model_path: Path) -> None:
    photos = sorted(SAMPLE_MEDIA.glob("*.*g")) * 3
    one = list(Analyzer(tiny_model_path, "yunet", workers=1).analyze_paths(photos))
    many = Analyzer(tiny_model_path, "yunet", workers=3, chunk_size=4)
    assert many._pool is not None  # detection really runs in threads
    assert list(many.analyze_paths(photos)) == one
    assert [r.source for r in one] == [str(p) for p in photos]


def _photo(name: str, image: np.ndarray) -> list[Event]:
    return [Frame(name, image), SourceEnd(name)]


def test_growing_chunks_are_cut_short_when_the_source_is_idle(drawn_face: np.ndarray) -> None:
    """Paths on stdin: the photos read when the source must wait make a chunk at once, ending with Idle."""
    events: list[Event] = [Idle(), *_photo("a", drawn_face), Idle(), *_photo("b", drawn_face),
                           *_photo("c", drawn_face), Idle(), Frame("d", drawn_face), Idle(), SourceEnd("d"),
                           *(e for name in "efg" for e in _photo(name, drawn_face))]
    chunks = list(GrowingChunks(16).split(events))
    names = [[type(e).__name__ if isinstance(e, Idle) else e.source for e in chunk if not isinstance(e, Frame)]
             for chunk in chunks]
    # an idle flush keeps the chunk size growing as before (2, then 4); an Idle within a photo is ignored
    assert names == [["Idle"], ["a", "Idle"], ["b", "c"], ["Idle"], ["d", "e", "f", "g"]]


def test_an_idle_source_gets_its_rows_before_it_is_read_further(tiny_model_path: Path,
                                                                  drawn_face: np.ndarray) -> None:
    """The rows of every photo before an Idle come out before the analysis asks the source for more (the next
    path may take minutes to come); a chunk waiting for the next one to overlap with is finished too."""
    analyzer = Analyzer(tiny_model_path, FixedDetector(), chunk_size=16, workers=1)
    read_past_idle: list[bool] = []

    def events() -> Iterator[Event]:
        for name in ("p0", "p1", "p2"):  # a chunk of 2 (it would wait for the next one) and one more photo
            yield from _photo(name, drawn_face)
        yield Idle()
        read_past_idle.append(True)
        yield from _photo("p3", drawn_face)

    outcomes = analyzer.analyze_frames(events())
    first = [next(outcomes) for _ in range(6)]
    assert not read_past_idle
    assert [(type(o).__name__, o.result.source if isinstance(o, Analysed) else o.source) for o in first] == [
        (kind, name) for name in ("p0", "p1", "p2") for kind in ("Analysed", "SourceEnd")]
    rest = list(outcomes)
    assert read_past_idle and [type(o).__name__ for o in rest] == ["Analysed", "SourceEnd"]
    assert all(o.result.status is Status.OK for o in (*first, *rest) if isinstance(o, Analysed))

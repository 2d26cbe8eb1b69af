"""Face detectors on real (shipped, public-domain) photos and on images without faces."""

from __future__ import annotations

import numpy as np
import pytest

from fer_batch.detect import HaarDetector, MtcnnDetector, make_detector
from fer_batch.sources import read_image

from .conftest import SAMPLE_MEDIA


@pytest.fixture(scope="module")
def mtcnn() -> MtcnnDetector:
    return MtcnnDetector()


def test_mtcnn_finds_each_portrait_face_and_both_faces_of_the_composite(mtcnn: MtcnnDetector) -> None:
    images = [read_image(SAMPLE_MEDIA / n) for n in ("grace_hopper.jpg", "astronaut.png",
                                                      "two_people_composite.jpg")]
    found = mtcnn.detect(images)
    assert [len(f) for f in found] == [1, 1, 2]
    left, right = sorted(found[2], key=lambda d: d.box.x)
    assert left.box.x + left.box.w <= 341 <= right.box.x  # one face on each half of the composite
    for dets in found:
        assert all(d.score >= 0.9 for d in dets)


def test_mtcnn_finds_no_face_on_a_cat_or_a_blank_image(mtcnn: MtcnnDetector) -> None:
    cat = read_image(SAMPLE_MEDIA / "chelsea_cat.png")
    blank = np.full((240, 320, 3), 127, np.uint8)
    assert mtcnn.detect([cat, blank]) == [[], []]


def test_min_face_size_filters_small_faces() -> None:
    small = make_detector("mtcnn", min_face_size=400)
    assert small.detect([read_image(SAMPLE_MEDIA / "two_people_composite.jpg")]) == [[]]


def test_haar_finds_the_portrait_face() -> None:
    haar = HaarDetector()
    dets = haar.detect([read_image(SAMPLE_MEDIA / "grace_hopper.jpg")])[0]
    assert len(dets) >= 1
    assert dets[0].box.w > 80  # the largest detection comes first

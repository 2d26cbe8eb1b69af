"""Face detectors on real (shipped, public-domain) photos and on images without faces."""

from __future__ import annotations

import numpy as np
import pytest

from fer_batch.analysis.detect import HaarDetector, MtcnnDetector, YunetDetector, detector_name, make_detector
from fer_batch.errors import UsageError
from fer_batch.inputs.images import read_image

from .conftest import SAMPLE_MEDIA, shared_path


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


def test_yunet_is_the_default_and_finds_each_portrait_face_and_both_faces_of_the_composite() -> None:
    yunet = make_detector()
    assert isinstance(yunet, YunetDetector)
    images = [read_image(SAMPLE_MEDIA / n) for n in ("grace_hopper.jpg", "astronaut.png",
                                                      "two_people_composite.jpg")]
    found = yunet.detect(images)
    assert [len(f) for f in found] == [1, 1, 2]
    left, right = sorted(found[2], key=lambda d: d.box.x)
    assert left.box.x + left.box.w <= 341 <= right.box.x
    assert all(0.8 <= d.score <= 1.0 for dets in found for d in dets)


def test_yunet_finds_no_face_on_a_cat_or_a_blank_image_and_honours_min_face_size() -> None:
    cat = read_image(SAMPLE_MEDIA / "chelsea_cat.png")
    blank = np.full((240, 320, 3), 127, np.uint8)
    assert make_detector("yunet").detect([cat, blank]) == [[], []]
    assert make_detector("yunet", min_face_size=400).detect([read_image(SAMPLE_MEDIA / "grace_hopper.jpg")]) == [[]]


def test_yunet_boxes_are_in_full_size_pixels_on_a_large_image() -> None:
    import cv2

    portrait = read_image(SAMPLE_MEDIA / "grace_hopper.jpg")
    small = make_detector("yunet").detect([portrait])[0][0].box
    big = make_detector("yunet").detect([cv2.resize(portrait, None, fx=4, fy=4)])[0][0].box  # detected downscaled
    assert abs(big.x - 4 * small.x) < 0.1 * big.w and abs(big.w - 4 * small.w) < 0.15 * big.w


def test_yunet_second_look_keeps_the_dogs_out() -> None:
    """The first pass scores two dog faces at 0.71-0.82; the second look rejects them."""
    dogs = read_image(shared_path("media", "photos", "dlib_dogs.jpg"))
    assert make_detector("yunet").detect([dogs]) == [[]]


def test_an_unknown_detector_is_rejected_not_replaced() -> None:
    with pytest.raises(UsageError, match="unknown detector 'retina'; choose from yunet, mtcnn, haar"):
        make_detector("retina")
    with pytest.raises(UsageError):
        detector_name("Haar ")

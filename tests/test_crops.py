"""Square, margin-framed, model-sized face crops."""

from __future__ import annotations

import numpy as np
import pytest

from fer_batch.analysis.crops import DEFAULT_EDGE_FILL, EdgeFill, fill_edges, square_crop
from fer_batch.records import Box


def test_crop_is_square_gray_and_model_sized(drawn_face: np.ndarray) -> None:
    crop = square_crop(drawn_face, Box(45, 15, 70, 90), (48, 48), margin=0.2)
    assert crop.shape == (48, 48) and crop.dtype == np.uint8


def test_crop_centre_follows_the_box() -> None:
    img = np.zeros((100, 100, 3), np.uint8)
    img[40:60, 40:60] = 255  # a white square in the middle
    crop = square_crop(img, Box(40, 40, 20, 20), (20, 20), margin=0.0)
    assert crop.min() == 255  # the crop is exactly the white square


@pytest.mark.parametrize("fill", list(EdgeFill))
def test_box_at_the_edge_is_filled_not_black(fill: EdgeFill) -> None:
    img = np.full((50, 50, 3), 180, np.uint8)
    crop = square_crop(img, Box(0, 0, 30, 30), (48, 48), margin=0.5, fill=fill)
    assert crop.shape == (48, 48) and crop.min() == 180


def test_edge_fills_mirror_stretch_or_average_the_visible_part() -> None:
    patch = np.array([[10, 20, 30, 40]], np.uint8).repeat(2, axis=0)
    assert fill_edges(patch, 0, 0, 2, 0, EdgeFill.REFLECT)[0].tolist() == [30, 20, 10, 20, 30, 40]
    assert fill_edges(patch, 0, 0, 2, 0, EdgeFill.REPLICATE)[0].tolist() == [10, 10, 10, 20, 30, 40]
    assert fill_edges(patch, 0, 0, 0, 1, EdgeFill.MEAN)[0].tolist() == [10, 20, 30, 40, 25]
    # More missing than the patch holds: mirrored as far as it goes, the rest stretched.
    assert fill_edges(patch, 0, 0, 5, 0, EdgeFill.REFLECT)[0].tolist() == [40, 40, 40, 30, 20, 10, 20, 30, 40]
    assert fill_edges(patch, 0, 0, 0, 0) is patch
    assert DEFAULT_EDGE_FILL is EdgeFill.REFLECT  # the fill benchmarks/edge_fill_benchmark.py measured best


def test_margin_zooms_out() -> None:
    img = np.zeros((200, 200, 3), np.uint8)
    img[90:110, 90:110] = 255
    tight = square_crop(img, Box(90, 90, 20, 20), (48, 48), margin=0.0)
    loose = square_crop(img, Box(90, 90, 20, 20), (48, 48), margin=1.0)
    assert (loose > 128).sum() < (tight > 128).sum()

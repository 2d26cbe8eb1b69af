"""Input discovery and image reading, including every kind of bad input."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from fer_batch.errors import InputError
from fer_batch.inputs.images import read_image, to_bgr8
from fer_batch.inputs.sources import iter_sources


def _touch_image(path: Path, shape: tuple[int, ...] = (10, 12, 3)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.zeros(shape, np.uint8))
    return path


def test_folder_is_recursive_sorted_and_case_insensitive(tmp_path: Path) -> None:
    for name in ("b.JPG", "a.png", "sub/c.jpeg", "sub/deeper/d.TIFF", "notes.txt", ".hidden/e.png"):
        if name.endswith(".txt"):
            (tmp_path / name).write_text("x")
        else:
            _touch_image(tmp_path / name)
    items = list(iter_sources([tmp_path]))
    assert [Path(i.source).relative_to(tmp_path).as_posix() for i in items] == [
        "a.png", "b.JPG", "sub/c.jpeg", "sub/deeper/d.TIFF"]
    assert all(i.error is None for i in items)


def test_equal_file_names_in_different_folders_stay_distinct(tmp_path: Path) -> None:
    _touch_image(tmp_path / "x" / "face.png")
    _touch_image(tmp_path / "y" / "face.png")
    sources = [i.source for i in iter_sources([tmp_path])]
    assert len(set(sources)) == 2


def test_missing_path_and_empty_folder_become_error_items(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    items = list(iter_sources([tmp_path / "nope.jpg", tmp_path / "empty"]))
    assert [i.error for i in items] == ["no such file or folder",
                                        ("no supported files in folder (looked for .bmp .jpeg .jpg .png .tif "
                                         ".tiff .webp)")]


def test_stdin_paths(tmp_path: Path) -> None:
    a = _touch_image(tmp_path / "a.png")
    b = _touch_image(tmp_path / "b.png")
    items = list(iter_sources(["-"], stdin=io.StringIO(f"{b}\n\n{a}\n")))
    assert [i.path for i in items] == [b, a]


def test_empty_stdin_is_an_input_error_as_an_empty_folder_is() -> None:
    # `fer-batch images - </dev/null`: a row says why, so the run exits with code 1 rather than 0 with no rows
    items = list(iter_sources(["-"], stdin=io.StringIO("\n")))
    assert [(i.source, i.path, i.error) for i in items] == [("-", None, "no paths on stdin")]


def test_zero_byte_truncated_and_fake_files_raise_input_error(tmp_path: Path) -> None:
    zero = tmp_path / "zero.jpg"
    zero.write_bytes(b"")
    good = tmp_path / "good.jpg"
    cv2.imwrite(str(good), np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8))
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    fake = tmp_path / "text.png"
    fake.write_text("this is not a picture")
    for path, reason in ((zero, "empty"), (truncated, "truncated"), (fake, "not a readable image")):
        with pytest.raises(InputError, match=reason):
            read_image(path)
    assert read_image(good).shape == (200, 200, 3)


def _with_exif_thumbnail(jpeg: bytes, thumbnail: bytes) -> bytes:
    """A JPEG with a whole smaller JPEG inside an APP1 segment after its start marker, as cameras write EXIF."""
    payload = b"Exif\x00\x00" + thumbnail
    return jpeg[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


def test_cut_off_files_are_called_truncated_with_their_format(tmp_path: Path) -> None:
    picture = np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    jpeg = cv2.imencode(".jpg", picture)[1].tobytes()
    camera = _with_exif_thumbnail(jpeg, cv2.imencode(".jpg", picture[::4, ::4])[1].tobytes())
    whole = tmp_path / "camera.jpg"
    whole.write_bytes(camera + b"maker notes after the end marker")
    assert read_image(whole).shape == (120, 160, 3)  # thumbnail and trailing data are no reason to refuse
    cut = len(camera) - len(jpeg) + 40  # after the thumbnail, before the photo's own image data
    cases = {
        "before_scan.jpg": (camera[:cut], "truncated JPEG"),  # the thumbnail's end marker must not fool the check
        "in_scan.jpg": (camera[: len(camera) - 500], "truncated JPEG"),
        "cut.png": (cv2.imencode(".png", picture)[1].tobytes()[:3000], "truncated PNG"),
        "cut.webp": (cv2.imencode(".webp", picture)[1].tobytes()[:500], "truncated WebP"),
        "cut.bmp": (cv2.imencode(".bmp", picture)[1].tobytes()[:3000], "truncated BMP"),
        "bad.png": (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40 + b"IEND", "corrupt PNG"),
    }
    for name, (data, reason) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(InputError, match=reason):
            read_image(path)


def test_gray_alpha_and_16_bit_images_become_bgr8(tmp_path: Path) -> None:
    gray = _touch_image(tmp_path / "gray.png", (20, 30))
    rgba = tmp_path / "rgba.png"
    cv2.imwrite(str(rgba), np.full((20, 30, 4), 128, np.uint8))
    deep = tmp_path / "deep.png"
    cv2.imwrite(str(deep), np.full((20, 30), 65535, np.uint16))
    for path in (gray, rgba, deep):
        img = read_image(path)
        assert img.shape == (20, 30, 3) and img.dtype == np.uint8
    assert read_image(deep).max() == 255


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # A 40x20 (landscape) JPEG tagged "rotate 90 degrees" must come out as 20x40 (portrait).
    img = Image.fromarray(np.zeros((20, 40, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif.tobytes())
    assert read_image(path).shape[:2] == (40, 20)


def test_to_bgr8_float_input() -> None:
    out = to_bgr8(np.full((4, 4), 0.5, np.float32))
    assert out.dtype == np.uint8 and out.shape == (4, 4, 3) and out[0, 0, 0] == 127

"""fer_batch.training.dataset_pack: a dataset folder packed into one file and back, pixel for pixel."""

from __future__ import annotations

import lzma
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_batch.errors import DatasetError
from fer_batch.training.dataset_pack import decode, encode, main, pack, unpack
from tests.conftest import write_drawn_dataset


def _pixels(root: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(root)): cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sorted(root.glob("*/*/*.png"))}


def test_encode_decode_is_lossless_on_any_pixels() -> None:
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (20, 48, 48), dtype=np.uint8)
    images[0] = 0
    images[1] = 255
    images[2, ::2] = 255  # hard edges, where the predictor switches branch
    residuals = encode(images)
    assert residuals.dtype == np.uint8 and residuals.shape == images.shape
    np.testing.assert_array_equal(decode(residuals), images)


def test_smooth_images_pack_smaller_than_their_pixels() -> None:
    ramp = np.add.outer(np.arange(48), np.arange(48)).astype(np.uint8)[None].repeat(10, axis=0)
    ramp = ramp + np.random.default_rng(0).integers(0, 3, ramp.shape, dtype=np.uint8)
    assert len(lzma.compress(encode(ramp).tobytes())) < len(lzma.compress(ramp.tobytes()))


def test_pack_and_unpack_a_folder(tmp_path: Path) -> None:
    source = write_drawn_dataset(tmp_path / "data", per_class=3)
    packed = pack(source, tmp_path / "data.pack")
    counts = unpack(packed, tmp_path / "copy")
    assert counts == {"train": 21, "validation": 21}
    before, after = _pixels(source), _pixels(tmp_path / "copy")
    assert before.keys() == after.keys()
    for name, image in before.items():
        np.testing.assert_array_equal(after[name], image, err_msg=name)


def test_pack_reads_the_npz_carrier(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    arrays = {"classes": np.asarray(["happy", "sad"])}
    for split, n in (("train", 5), ("validation", 2)):
        arrays[f"x_{split}"] = rng.integers(0, 256, (n, 48, 48), dtype=np.uint8)
        arrays[f"y_{split}"] = np.arange(n, dtype=np.uint8) % 2
        arrays[f"name_{split}"] = np.asarray([f"{'happy' if i % 2 == 0 else 'sad'}/{split}_{i}.png" for i in range(n)])
    carrier = tmp_path / "set.npz"
    np.savez(carrier, **arrays)
    carrier_xz = tmp_path / "set.npz.xz"
    carrier_xz.write_bytes(lzma.compress(carrier.read_bytes()))
    unpack(pack(carrier_xz, tmp_path / "set.pack"), tmp_path / "copy")
    image = cv2.imread(str(tmp_path / "copy" / "train" / "sad" / "train_3.png"), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(image, arrays["x_train"][3])
    assert len(list((tmp_path / "copy" / "validation").glob("*/*.png"))) == 2


def test_bad_files_are_clear_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pack"
    junk.write_bytes(b"not a pack")
    with pytest.raises(DatasetError, match="not a packed dataset"):
        unpack(junk, tmp_path / "out")
    with pytest.raises(DatasetError, match="neither"):
        pack(tmp_path / "missing.zip", tmp_path / "x.pack")
    with pytest.raises(DatasetError, match="could not read"):
        pack(tmp_path / "missing.npz.xz", tmp_path / "x.pack")
    incomplete = tmp_path / "incomplete.npz"
    np.savez(incomplete, classes=np.asarray(["happy"]))
    (tmp_path / "incomplete.npz.xz").write_bytes(lzma.compress(incomplete.read_bytes()))
    with pytest.raises(DatasetError, match="lacks x_train"):
        pack(tmp_path / "incomplete.npz.xz", tmp_path / "x.pack")
    with pytest.raises(SystemExit) as exit_info:
        main(["unpack", str(junk), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 4


def test_empty_class_folders_and_other_formats_survive(tmp_path: Path) -> None:
    source = write_drawn_dataset(tmp_path / "data", per_class=2)
    for image in (source / "train" / "disgust").iterdir():
        image.unlink()  # a class without training images: still a class
    jpeg = cv2.imread(str(source / "train" / "happy" / "0.png"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(source / "train" / "happy" / "extra.jpg"), jpeg)
    unpack(pack(source, tmp_path / "data.pack"), tmp_path / "copy")
    assert (tmp_path / "copy" / "train" / "disgust").is_dir()
    assert not list((tmp_path / "copy" / "train" / "disgust").iterdir())
    # Written as PNG: the pixels training read from the JPEG, kept exactly.
    read = cv2.imread(str(source / "train" / "happy" / "extra.jpg"), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "copy" / "train" / "happy" / "extra.png"),
                                             cv2.IMREAD_GRAYSCALE), read)

"""A dataset folder in one compact, lossless file, to carry to a machine that has no copy of it.

    python -m fer_batch.training.dataset_pack pack ../shared/data/fer2013 --out gpu/fer2013.pack
    python -m fer_batch.training.dataset_pack pack ../shared/data/fer2013_train_validation.npz.xz --out gpu/fer2013.pack
    python -m fer_batch.training.dataset_pack unpack gpu/fer2013.pack --out /tmp/fer2013

The device tool that lends a GPU copies the working tree and at most 64 MiB in all, and FER2013's
own carrier (``fer2013_train_validation.npz.xz``, 55 MB) does not fit beside the repository's
16 MB. Each image is stored as the residual of the median edge detector (LOCO-I / JPEG-LS)
prediction from its left, upper and upper-left pixels, which xz compresses better than the
pixels: 47.9 MB for FER2013's train and validation splits, against 55 MB. ``unpack`` writes the
``<split>/<class>/<file>.png`` layout that ``fer-batch train`` reads, pixel for pixel as training reads them: a
folder source is read as ``fer-batch train`` reads it (grayscale, resized to 48x48), so PNGs of that size come
back unchanged and any other image as the 48x48 grayscale PNG training would have seen.
"""

from __future__ import annotations

import argparse
import io
import lzma
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from fer_batch.errors import DatasetError
from fer_batch.training.data import TRAIN_SPLIT, VALIDATION_SPLIT, load_dataset

SPLITS = (TRAIN_SPLIT, VALIDATION_SPLIT)
FORMAT = "fer-batch-pack-1"
# xz at its strongest, with literals modelled on the previous byte alone (lc=4, no position bits): about 1.3%
# smaller than the default on FER2013's residuals.
_XZ_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "lc": 4, "lp": 0, "pb": 0}]


def _neighbours(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left, upper and upper-left neighbour of every pixel of (N, H, W) images (0 outside the image)."""
    x = images.astype(np.int16)
    left = np.pad(x, ((0, 0), (0, 0), (1, 0)))[:, :, :-1]
    up = np.pad(x, ((0, 0), (1, 0), (0, 0)))[:, :-1, :]
    up_left = np.pad(x, ((0, 0), (1, 0), (1, 0)))[:, :-1, :-1]
    return left, up, up_left


def _med(left: np.ndarray, up: np.ndarray, up_left: np.ndarray) -> np.ndarray:
    """The median edge detector: min or max of left and up at an edge, else their plane through up-left."""
    low, high = np.minimum(left, up), np.maximum(left, up)
    return np.where(up_left >= high, low, np.where(up_left <= low, high, left + up - up_left))


def encode(images: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8 images -> residuals, uint8, same shape.

    A residual is image - prediction, wrapped to -128..127 (mod 256) and zigzag-mapped (0, -1, 1, -2, ... ->
    0, 1, 2, 3, ...), so small errors of either sign become small bytes for the compressor.
    """
    wrapped = (images.astype(np.int16) - _med(*_neighbours(images)) + 128) % 256 - 128
    return np.where(wrapped >= 0, 2 * wrapped, -2 * wrapped - 1).astype(np.uint8)


def decode(residuals: np.ndarray) -> np.ndarray:
    """The inverse of :func:`encode`: rebuilds the pixels in raster order, all images at once."""
    n, height, width = residuals.shape
    out = np.zeros((n, height + 1, width + 1), dtype=np.int16)  # a zero row and column before the image
    zigzag = residuals.astype(np.int16)
    res = np.where(zigzag % 2 == 0, zigzag // 2, -(zigzag + 1) // 2)
    for row in range(height):
        for col in range(width):
            pred = _med(out[:, row + 1, col], out[:, row, col + 1], out[:, row, col])
            out[:, row + 1, col + 1] = (res[:, row, col] + pred) % 256
    return out[:, 1:, 1:].astype(np.uint8)


def _read_source(source: Path) -> dict[str, np.ndarray]:
    """Arrays per split from a dataset folder or from FER2013's ``.npz.xz`` carrier."""
    if source.is_dir():
        train, validation = load_dataset(source)
        arrays: dict[str, np.ndarray] = {"classes": np.asarray(train.class_names)}
        for split, data in zip(SPLITS, (train, validation)):
            arrays[f"x_{split}"] = data.images[..., 0]
            arrays[f"y_{split}"] = data.labels.astype(np.uint8)
            arrays[f"name_{split}"] = np.asarray(data.files)
        return arrays
    if not source.name.endswith(".npz.xz"):
        raise DatasetError(f"{source} is neither a dataset folder nor a .npz.xz file")
    try:
        with lzma.open(source) as fh, np.load(io.BytesIO(fh.read()), allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, lzma.LZMAError, ValueError) as exc:
        raise DatasetError(f"could not read {source}: {exc}") from exc
    missing = [f"{kind}_{split}" for split in SPLITS for kind in ("x", "y", "name") if f"{kind}_{split}" not in arrays]
    if missing or "classes" not in arrays:
        raise DatasetError(f"{source} lacks {', '.join(missing or ['classes'])}")
    return arrays


def pack(source: Path, out: Path) -> Path:
    """Write ``source`` (a dataset folder or a ``.npz.xz`` carrier) as one packed file; returns ``out``."""
    arrays = _read_source(Path(source))
    packed = {"format": np.asarray(FORMAT), "classes": arrays["classes"]}
    for split in SPLITS:
        packed[f"residuals_{split}"] = encode(arrays[f"x_{split}"])
        packed[f"labels_{split}"] = arrays[f"y_{split}"].astype(np.uint8)
        packed[f"files_{split}"] = arrays[f"name_{split}"]
    buffer = io.BytesIO()
    np.savez(buffer, **packed)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(lzma.compress(buffer.getvalue(), format=lzma.FORMAT_XZ, filters=_XZ_FILTERS))
    return out


def unpack(packed: Path, out: Path) -> dict[str, int]:
    """Write a packed file as ``out/<split>/<class>/<file>.png``; returns the number of images per split."""
    try:
        with np.load(io.BytesIO(lzma.decompress(Path(packed).read_bytes())), allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, lzma.LZMAError, ValueError) as exc:
        raise DatasetError(f"{packed} is not a packed dataset: {exc}") from exc
    if str(arrays.get("format")) != FORMAT:
        raise DatasetError(f"{packed} is not a {FORMAT} file")
    classes = [str(c) for c in arrays["classes"]]
    counts = {}
    for split in SPLITS:
        for name in classes:  # every class folder, an empty one too: the folders are the class list
            (Path(out) / split / name).mkdir(parents=True, exist_ok=True)
        images = decode(arrays[f"residuals_{split}"])
        for image, label, name in zip(images, arrays[f"labels_{split}"], arrays[f"files_{split}"]):
            # Carriers name files "<class>/<file>"; the class folder comes from the label either way, and every
            # image is written as PNG (lossless), whatever its name's suffix was.
            path = Path(out) / split / classes[int(label)] / Path(str(name)).with_suffix(".png").name
            if not cv2.imwrite(str(path), image):
                raise DatasetError(f"could not write {path}")
        counts[split] = len(images)
    return counts


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    pack_cmd = sub.add_parser("pack", help="dataset folder or .npz.xz -> one packed file")
    pack_cmd.add_argument("source", type=Path)
    pack_cmd.add_argument("--out", type=Path, required=True)
    unpack_cmd = sub.add_parser("unpack", help="packed file -> <split>/<class>/<file>.png folders")
    unpack_cmd.add_argument("packed", type=Path)
    unpack_cmd.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "pack":
            path = pack(args.source, args.out)
            print(f"packed {args.source} into {path} ({path.stat().st_size / 1e6:.1f} MB)")
        else:
            counts = unpack(args.packed, args.out)
            print(f"unpacked {args.packed} into {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    except DatasetError as exc:
        parser.exit(4, f"dataset_pack: error: {exc}\n")


if __name__ == "__main__":
    main()

"""Input discovery and image reading: files, folders (recursive) and ``-`` (paths on stdin).

This is the only module that reads image files. Each input becomes a
:class:`SourceItem`; reading it yields a decoded BGR image or raises
:class:`~fer_batch.errors.InputError` with a one-line reason, so one bad file
never ends a run.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np

from fer_batch.errors import InputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
STDIN = "-"


@dataclass(frozen=True)
class SourceItem:
    """One input to analyse.

    ``source`` is what the output records: the path as given for a file named
    on the command line, or ``<folder>/<path relative to the folder>`` for a
    file found in a folder, so equal file names in different folders stay
    distinct. ``error`` is set for an input that cannot even be opened (a
    missing path, an empty folder); it still appears in the output.
    """

    source: str
    path: Path | None
    error: str | None = None


def file_slug(text: str, default: str) -> str:
    """``text`` (a source path) made safe as one file-name part: other characters become ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or default


def _walk_folder(folder: Path, suffixes: frozenset[str]) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in filenames if Path(f).suffix.lower() in suffixes)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix().lower())


def _stdin_paths(stream: TextIO) -> Iterator[str]:
    for line in stream:
        line = line.strip()
        if line:
            yield line


def iter_sources(
    inputs: Iterable[str | Path],
    *,
    suffixes: frozenset[str] = IMAGE_SUFFIXES,
    stdin: TextIO | None = None,
) -> Iterator[SourceItem]:
    """Expand inputs into items, in order: files as given, folders recursively and sorted, ``-`` from stdin.

    A file named explicitly is taken whatever its suffix (reading it decides);
    folders contribute only files with one of ``suffixes`` (case-insensitive).
    """
    for raw in inputs:
        text = str(raw)
        if text == STDIN:
            yield from iter_sources(_stdin_paths(stdin or sys.stdin), suffixes=suffixes)
            continue
        path = Path(text).expanduser()
        if path.is_dir():
            files = _walk_folder(path, suffixes)
            if not files:
                wanted = " ".join(sorted(suffixes))
                yield SourceItem(source=text, path=None, error=f"no supported files in folder (looked for {wanted})")
            for file in files:
                yield SourceItem(source=(Path(text) / file.relative_to(path)).as_posix(), path=file)
        elif path.is_file():
            yield SourceItem(source=text, path=path)
        elif path.exists():
            yield SourceItem(source=text, path=None, error="not a regular file or folder")
        else:
            yield SourceItem(source=text, path=None, error="no such file or folder")


def to_bgr8(image: np.ndarray) -> np.ndarray:
    """Normalise any decoded image (gray, gray+alpha, BGR, BGRA; 8/16-bit or float) to 8-bit BGR."""
    if image.dtype == np.uint16:
        image = (image // 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        img = image.astype(np.float32)
        if img.size and float(img.max()) <= 1.0:
            img = img * 255.0
        image = np.clip(img, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image[..., 0], cv2.COLOR_GRAY2BGR)
    if channels == 2:  # gray + alpha: drop alpha
        return cv2.cvtColor(image[..., 0], cv2.COLOR_GRAY2BGR)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image[..., :3]


def _is_truncated_jpeg(data: np.ndarray) -> bool:
    """True for a JPEG whose last scan has no end-of-image marker after it.

    OpenCV decodes a truncated JPEG without error, filling the missing part
    with gray, which would silently give wrong results. The check looks after
    the last start-of-scan marker, because an EXIF thumbnail carries its own
    end marker earlier in the file and some cameras append data after the end.
    """
    if data.size < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return False
    raw = data.tobytes()
    last_scan = raw.rfind(b"\xff\xda")
    return last_scan == -1 or raw.find(b"\xff\xd9", last_scan) == -1


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to 8-bit BGR, applying its EXIF orientation.

    Raises :class:`InputError` with a short reason for empty, truncated or
    non-image files.
    """
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}") from exc
    if data.size == 0:
        raise InputError("empty file (0 bytes)")
    if _is_truncated_jpeg(data):
        raise InputError("truncated JPEG (no end-of-image marker after the image data)")
    # ANYDEPTH|ANYCOLOR keeps 16-bit and gray data for to_bgr8; unlike IMREAD_UNCHANGED, these flags
    # still let OpenCV rotate the image by its EXIF orientation tag.
    image = cv2.imdecode(data, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if image is None:
        raise InputError("not a readable image (unknown format or corrupt data)")
    if image.size == 0:
        raise InputError("image has no pixels")
    return to_bgr8(image)

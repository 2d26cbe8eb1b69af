"""Image reading: image files decoded to 8-bit BGR, or an :class:`~fer_batch.errors.InputError` saying why not.

This is the only module that reads image files. A file that cannot be read raises
:class:`~fer_batch.errors.InputError` with a one-line reason (empty, truncated,
not an image), so one bad file never ends a run.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from fer_batch.errors import InputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


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


# Magic numbers of the image formats OpenCV reads, so that a file that fails to decode gets a precise reason.
_IMAGE_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"BM", "BMP"),
                (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM and RSTn: markers without a length field
_JPEG_SOS, _JPEG_EOI = 0xDA, b"\xff\xd9"


def image_kind(head: bytes) -> str | None:
    """The image format a file's first bytes announce (``JPEG``, ``PNG``, ``BMP``, ``TIFF``, ``WebP``), or None.

    GIF is left out on purpose: ``fer-batch video`` refuses images by this test, and an animated GIF is a video.
    """
    for magic, kind in _IMAGE_MAGIC:
        if head.startswith(magic):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return None


def _jpeg_truncation(raw: bytes) -> str | None:
    """Why a JPEG is cut off, or None when its structure is whole.

    OpenCV decodes a truncated JPEG without error, filling the missing part
    with gray, which would silently give wrong results. The marker segments
    are walked from the start, each by its length, so an EXIF thumbnail (a
    whole JPEG inside the APP1 segment) is stepped over rather than taken for
    the image; the image data runs from the first start-of-scan marker to the
    end-of-image marker, after which some cameras append more data.
    """
    pos = 2
    while True:
        if pos + 4 > len(raw):
            return "truncated JPEG (the file ends before the image data)"
        if raw[pos] != 0xFF:
            return None  # no marker where one belongs: corrupt, not cut off; decoding will say so
        marker = raw[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
        elif marker in _JPEG_STANDALONE:
            pos += 2
        elif marker == _JPEG_SOS:
            break
        else:
            pos += 2 + int.from_bytes(raw[pos + 2:pos + 4], "big")
    if raw.find(_JPEG_EOI, pos) == -1:
        return "truncated JPEG (no end-of-image marker after the image data)"
    return None


def _png_truncation(raw: bytes) -> str | None:
    """Why a PNG is cut off (its chunks end before the IEND chunk), or None."""
    pos = 8  # after the signature; each chunk is length (4 bytes), type (4), data, CRC (4)
    while pos + 8 <= len(raw):
        if raw[pos + 4:pos + 8] == b"IEND":
            return None
        pos += 12 + int.from_bytes(raw[pos:pos + 4], "big")
    return "truncated PNG (the file ends before its last chunk)"


def truncation_reason(raw: bytes) -> str | None:
    """Why an image file is cut off, for the formats whose structure says so (JPEG, PNG, WebP); None otherwise.

    Checked before decoding: OpenCV fills a cut-off JPEG with gray instead of
    failing, and its PNG decoder prints errors on stderr.
    """
    kind = image_kind(raw[:16])
    if kind == "JPEG":
        return _jpeg_truncation(raw)
    if kind == "PNG":
        return _png_truncation(raw)
    if kind == "WebP" and len(raw) < 8 + int.from_bytes(raw[4:8], "little"):  # the RIFF header gives the size
        return "truncated WebP (shorter than its header says)"
    return None


def _undecodable_reason(raw: bytes) -> str:
    """Why a file that OpenCV could not decode is not an image, as precisely as its first bytes tell."""
    kind = image_kind(raw[:16])
    if kind is None:
        return "not a readable image (unknown format or corrupt data)"
    # A BMP states its file size; only trusted once decoding failed, as some writers leave it wrong.
    if kind == "BMP" and int.from_bytes(raw[2:6], "little") > len(raw):
        return "truncated BMP (shorter than its header says)"
    return f"corrupt {kind} data (or cut off): it starts as a {kind} image but does not decode"


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to 8-bit BGR, applying its EXIF orientation.

    Raises :class:`InputError` with a short reason for empty, truncated or
    non-image files.
    """
    return decode_image(read_raw(path))


def read_raw(path: Path) -> np.ndarray:
    """An image file's bytes, undecoded; :class:`InputError` with the reason when it cannot be read."""
    try:
        return np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}") from exc


def decode_image(data: np.ndarray | bytes) -> np.ndarray:
    """Decode an image file's bytes to 8-bit BGR, as :func:`read_image` does (for bytes read elsewhere)."""
    if isinstance(data, bytes | bytearray | memoryview):
        data = np.frombuffer(data, dtype=np.uint8)
    if data.size == 0:
        raise InputError("empty file (0 bytes)")
    raw = data.tobytes()
    truncated = truncation_reason(raw)
    if truncated:
        raise InputError(truncated)
    # ANYDEPTH|ANYCOLOR keeps 16-bit and gray data for to_bgr8; unlike IMREAD_UNCHANGED, these flags
    # still let OpenCV rotate the image by its EXIF orientation tag.
    image = cv2.imdecode(data, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if image is None:
        raise InputError(_undecodable_reason(raw))
    if image.size == 0:
        raise InputError("image has no pixels")
    return to_bgr8(image)

"""Face detection behind one small interface, :class:`FaceDetector`.

Three detectors ship:

* ``yunet`` (default): YuNet, a 0.3 MB ONNX network that ships inside the
  package (``fer_batch/models/yunet/``, Apache-2.0, see its ``NOTICE``), run by
  OpenCV's ``cv2.FaceDetectorYN``: no TensorFlow, about 15 ms a photo on two
  cores. Each candidate gets a *second look* (see :class:`YunetDetector`),
  which keeps animal faces out.
* ``mtcnn``: the MTCNN cascade from the ``mtcnn`` package (weights inside its
  wheel). Needs TensorFlow (``pip install "fer-batch[tensorflow]"``); about
  10-20 times slower than YuNet.
* ``haar``: OpenCV's frontal-face Haar cascade, bundled with OpenCV. Fast, but
  misses turned faces and fires on some non-faces.

All take 8-bit BGR images of any size and return :class:`~fer_batch.records.Detection`
lists in the image's own pixels, largest face first. Each detector decides on
what scale it looks (large photos are detected on a downscaled copy).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Protocol

import cv2
import numpy as np

from fer_batch.errors import UsageError
from fer_batch.models import MODELS_DIR
from fer_batch.records import Box, Detection
from fer_batch.runtime import import_tensorflow_quietly

DEFAULT_MIN_FACE_SIZE = 20  # pixels; smaller faces hold too little expression detail at 48x48
CASCADE_MAX_SIDE = 1600  # pixels; MTCNN and Haar look at larger photos on a copy scaled down to this


class DetectorName(str, Enum):
    YUNET = "yunet"
    MTCNN = "mtcnn"
    HAAR = "haar"


DEFAULT_DETECTOR = DetectorName.YUNET
# The default of --threshold per detector; Haar gives no confidence, so it has none.
DEFAULT_THRESHOLDS: dict[DetectorName, float] = {DetectorName.YUNET: 0.8, DetectorName.MTCNN: 0.9}
DEFAULT_THRESHOLD = DEFAULT_THRESHOLDS[DEFAULT_DETECTOR]

YUNET_MODEL = MODELS_DIR / "yunet" / "yunet_n_640_640.onnx"
YUNET_MAX_SIDE = 640  # pixels; YuNet looks at a photo scaled so that its longer side is at most this...
YUNET_SMALLEST_FACE = 10  # ...unless --min-face-size faces would then be smaller than this (pixels), YuNet's limit
YUNET_CANDIDATE_SCORE = 0.5  # first-pass score that earns a candidate its second look
SECOND_LOOK_SIZE = 96  # pixels: the side of the canonical view of a candidate
SECOND_LOOK_SPAN = 1.6  # that view covers the candidate's longer side times this, centred on it
NMS_IOU = 0.3


class FaceDetector(Protocol):
    """Finds faces in a batch of BGR images; one list of detections per image, in that image's pixels."""

    name: str

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]: ...


def _sorted_by_size(detections: list[Detection]) -> list[Detection]:
    return sorted(detections, key=lambda d: (-d.box.area, d.box.x, d.box.y))


def _clip_box(x: float, y: float, w: float, h: float, width: int, height: int) -> Box | None:
    x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
    x1, y1 = min(width, int(round(x + w))), min(height, int(round(y + h)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return Box(x0, y0, x1 - x0, y1 - y0)


def _resized(image: np.ndarray, factor: float) -> np.ndarray:
    if factor == 1.0:
        return image
    return cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)


def _cascade_factor(image: np.ndarray) -> float:
    side = max(image.shape[:2])
    return min(1.0, CASCADE_MAX_SIDE / side) if side else 1.0


def _unscaled(detections: list[Detection], factor: float, image: np.ndarray) -> list[Detection]:
    """Boxes found on a copy scaled by ``factor``, in the pixels of ``image``."""
    if factor == 1.0:
        return detections
    height, width = image.shape[:2]
    out = []
    for d in detections:
        box = _clip_box(d.box.x / factor, d.box.y / factor, d.box.w / factor, d.box.h / factor, width, height)
        if box is not None:
            out.append(Detection(box, d.score))
    return out


class YunetDetector:
    """YuNet through ``cv2.FaceDetectorYN``, with a second look at each candidate.

    First pass: the image, scaled so its longer side is at most
    :data:`YUNET_MAX_SIDE` pixels (less downscaling when ``min_face_size``
    faces would shrink below :data:`YUNET_SMALLEST_FACE`), gives candidates
    scoring at least :data:`YUNET_CANDIDATE_SCORE`. Second look: each candidate
    is cut from the full-size image as a :data:`SECOND_LOOK_SIZE`-pixel square
    spanning :data:`SECOND_LOOK_SPAN` times its longer side, and YuNet runs on
    that view and on its mirror image. A real face is found again, centred,
    at 0.89-0.94 in both; the dog faces the first pass scores at up to 0.82
    are not found again, or at most at 0.62 (measured on the project's photos).
    ``det_score`` is the lowest of the three scores, and a face needs
    ``threshold`` (default 0.8) in it. The second look costs about 2 ms a
    candidate on two cores.

    Not thread-safe (OpenCV's network keeps state): one instance per thread.
    """

    name = DetectorName.YUNET.value

    def __init__(self, min_face_size: int = DEFAULT_MIN_FACE_SIZE,
                 threshold: float = DEFAULT_THRESHOLDS[DetectorName.YUNET]) -> None:
        if not YUNET_MODEL.is_file():
            raise RuntimeError(f"the YuNet model is missing from the package: {YUNET_MODEL}")
        self.min_face_size = int(min_face_size)
        self.threshold = float(threshold)
        self._first = cv2.FaceDetectorYN.create(str(YUNET_MODEL), "", (YUNET_MAX_SIDE, YUNET_MAX_SIDE),
                                                YUNET_CANDIDATE_SCORE, NMS_IOU, 5000)
        self._second = cv2.FaceDetectorYN.create(str(YUNET_MODEL), "", (SECOND_LOOK_SIZE, SECOND_LOOK_SIZE),
                                                 0.1, NMS_IOU, 20)
        self._size: tuple[int, int] | None = None

    def _factor(self, image: np.ndarray) -> float:
        side = max(image.shape[:2])
        if not side:
            return 1.0
        return min(1.0, max(YUNET_MAX_SIDE / side, YUNET_SMALLEST_FACE / max(1, self.min_face_size)))

    def _run(self, net: cv2.FaceDetectorYN, image: np.ndarray) -> np.ndarray:
        _, found = net.detect(image)
        return np.zeros((0, 15), np.float32) if found is None else found

    def _second_look(self, image: np.ndarray, x: float, y: float, w: float, h: float) -> float:
        """The lower of YuNet's best scores on the candidate's canonical view and on its mirror image."""
        span = max(w, h) * SECOND_LOOK_SPAN
        scale = SECOND_LOOK_SIZE / span
        cx, cy = x + w / 2.0, y + h / 2.0
        warp = np.float32([[scale, 0, SECOND_LOOK_SIZE / 2 - cx * scale],
                           [0, scale, SECOND_LOOK_SIZE / 2 - cy * scale]])
        view = cv2.warpAffine(image, warp, (SECOND_LOOK_SIZE, SECOND_LOOK_SIZE),
                              flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        scores = []
        for candidate in (view, np.ascontiguousarray(view[:, ::-1])):
            found = self._run(self._second, candidate)
            scores.append(float(found[:, 14].max()) if len(found) else 0.0)
        return min(scores)

    def detect_one(self, image: np.ndarray) -> list[Detection]:
        """Faces in one BGR image, largest first."""
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        factor = self._factor(image)
        small = _resized(image, factor)
        size = (small.shape[1], small.shape[0])
        if size != self._size:
            self._first.setInputSize(size)
            self._size = size
        height, width = image.shape[:2]
        found = []
        for row in self._run(self._first, small):
            x, y, w, h = (float(v) / factor for v in row[:4])
            if max(w, h) < self.min_face_size:
                continue
            score = min(float(row[14]), self._second_look(image, x, y, w, h))
            if score < self.threshold:
                continue
            box = _clip_box(x, y, w, h, width, height)
            if box is not None:
                found.append(Detection(box, score))
        return _sorted_by_size(found)

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        return [self.detect_one(image) for image in images]


class MtcnnDetector:
    """MTCNN (P-Net, R-Net, O-Net). Images of equal size are detected in one batched call."""

    name = DetectorName.MTCNN.value

    def __init__(self, min_face_size: int = DEFAULT_MIN_FACE_SIZE,
                 threshold: float = DEFAULT_THRESHOLDS[DetectorName.MTCNN]) -> None:
        try:
            import_tensorflow_quietly()  # without its start-up noise, as in the CLI
            from mtcnn import MTCNN  # noqa: PLC0415 - pulls in TensorFlow
        except ImportError as exc:
            raise UsageError('--detector mtcnn needs TensorFlow and the mtcnn package: '
                             'pip install "fer-batch[tensorflow]" (or use --detector yunet, the default)') from exc

        self._mtcnn = MTCNN(stages="face_and_landmarks_detection", device="CPU:0")
        self.min_face_size = int(min_face_size)
        self.threshold = float(threshold)

    def _detect_same_size(self, images: list[np.ndarray]) -> list[list[Detection]]:
        results: list[list[Detection]] = [[] for _ in images]
        rgb = [cv2.cvtColor(image, cv2.COLOR_BGR2RGB) for image in images]
        rows = self._mtcnn.detect_faces(
            rgb,
            output_type="numpy",
            box_format="xyxy",
            min_face_size=self.min_face_size,
            threshold_onet=self.threshold,
        )
        for row in np.asarray(rows).reshape(-1, 16):
            local = int(row[0])
            height, width = images[local].shape[:2]
            x0, y0, x1, y1, score = (float(v) for v in row[1:6])
            if score < self.threshold:
                continue
            box = _clip_box(x0, y0, x1 - x0, y1 - y0, width, height)
            if box is not None and min(box.w, box.h) >= self.min_face_size * 0.75:
                results[local].append(Detection(box, score))
        return results

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        factors = [_cascade_factor(image) for image in images]
        scaled = [_resized(image, f) for image, f in zip(images, factors)]
        results: list[list[Detection]] = [[] for _ in images]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(scaled):
            groups.setdefault(image.shape, []).append(i)
        for indices in groups.values():
            for i, dets in zip(indices, self._detect_same_size([scaled[i] for i in indices])):
                results[i] = dets
        return [_sorted_by_size(_unscaled(dets, f, image)) for dets, f, image in zip(results, factors, images)]


class HaarDetector:
    """OpenCV's frontal-face Haar cascade; ``det_score`` is 1.0 (the cascade gives no probability)."""

    name = DetectorName.HAAR.value

    def __init__(self, min_face_size: int = DEFAULT_MIN_FACE_SIZE, min_neighbors: int = 5) -> None:
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise RuntimeError(f"could not load the OpenCV Haar cascade from {path}")
        self.min_face_size = int(min_face_size)
        self.min_neighbors = int(min_neighbors)

    def detect_one(self, image: np.ndarray) -> list[Detection]:
        """Faces in one BGR image, largest first."""
        factor = _cascade_factor(image)
        small = _resized(image, factor)
        gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
        gray = cv2.equalizeHist(gray)
        smallest = max(1, int(round(self.min_face_size * factor)))
        found = self._cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=self.min_neighbors,
                                               minSize=(smallest, smallest))
        height, width = gray.shape
        dets = []
        for x, y, w, h in np.asarray(found).reshape(-1, 4):
            box = _clip_box(x, y, w, h, width, height)
            if box is not None:
                dets.append(Detection(box, 1.0))
        return _sorted_by_size(_unscaled(dets, factor, image))

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        return [self.detect_one(image) for image in images]


def detector_name(name: str | DetectorName) -> DetectorName:
    """The :class:`DetectorName` for ``name``; an unknown name is a :class:`UsageError`, never a fallback."""
    try:
        return DetectorName(name)
    except ValueError:
        choices = ", ".join(d.value for d in DetectorName)
        raise UsageError(f"unknown detector {str(name)!r}; choose from {choices}") from None


def make_detector(
    name: str | DetectorName = DEFAULT_DETECTOR,
    *,
    min_face_size: int = DEFAULT_MIN_FACE_SIZE,
    threshold: float | None = None,
) -> FaceDetector:
    """Build a detector by name (``yunet``, ``mtcnn`` or ``haar``); ``threshold`` None: the detector's default."""
    chosen = detector_name(name)
    if chosen is DetectorName.HAAR:
        return HaarDetector(min_face_size=min_face_size)
    score = DEFAULT_THRESHOLDS[chosen] if threshold is None else float(threshold)
    if chosen is DetectorName.MTCNN:
        return MtcnnDetector(min_face_size=min_face_size, threshold=score)
    return YunetDetector(min_face_size=min_face_size, threshold=score)


def detects_per_image(detector: FaceDetector) -> bool:
    """Whether ``detector`` works one image at a time on its own state, so copies of it can run in threads."""
    return isinstance(detector, YunetDetector | HaarDetector)

"""Face detection behind one small interface, :class:`FaceDetector`.

Two detectors ship:

* ``mtcnn`` (default): the MTCNN cascade from the ``mtcnn`` package, whose
  weights ship inside its wheel. Accurate on group photos and small faces.
* ``haar``: OpenCV's frontal-face Haar cascade, bundled with OpenCV 4.x.
  Much faster, but misses turned faces and fires on some non-faces.

Both take 8-bit BGR images and return :class:`~fer_batch.records.Detection`
lists, largest face first.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Protocol

import cv2
import numpy as np

from fer_batch.records import Box, Detection

DEFAULT_MIN_FACE_SIZE = 20  # pixels; smaller faces hold too little expression detail at 48x48
DEFAULT_THRESHOLD = 0.9  # MTCNN final-stage confidence


class DetectorName(str, Enum):
    MTCNN = "mtcnn"
    HAAR = "haar"


class FaceDetector(Protocol):
    """Finds faces in a batch of BGR images; one list of detections per image."""

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


class MtcnnDetector:
    """MTCNN (P-Net, R-Net, O-Net). Images of equal size are detected in one batched call."""

    name = DetectorName.MTCNN.value

    def __init__(self, min_face_size: int = DEFAULT_MIN_FACE_SIZE, threshold: float = DEFAULT_THRESHOLD) -> None:
        from mtcnn import MTCNN  # noqa: PLC0415 - pulls in TensorFlow

        self._mtcnn = MTCNN(stages="face_and_landmarks_detection", device="CPU:0")
        self.min_face_size = int(min_face_size)
        self.threshold = float(threshold)

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        results: list[list[Detection]] = [[] for _ in images]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(image.shape, []).append(i)
        for indices in groups.values():
            rgb = [cv2.cvtColor(images[i], cv2.COLOR_BGR2RGB) for i in indices]
            rows = self._mtcnn.detect_faces(
                rgb,
                output_type="numpy",
                box_format="xyxy",
                min_face_size=self.min_face_size,
                threshold_onet=self.threshold,
            )
            for row in np.asarray(rows).reshape(-1, 16):
                local = int(row[0])
                target = indices[local]
                height, width = images[target].shape[:2]
                x0, y0, x1, y1, score = (float(v) for v in row[1:6])
                if score < self.threshold:
                    continue
                box = _clip_box(x0, y0, x1 - x0, y1 - y0, width, height)
                if box is not None and min(box.w, box.h) >= self.min_face_size * 0.75:
                    results[target].append(Detection(box, score))
        return [_sorted_by_size(r) for r in results]


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

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        out: list[list[Detection]] = []
        for image in images:
            gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
            gray = cv2.equalizeHist(gray)
            found = self._cascade.detectMultiScale(
                gray, scaleFactor=1.1, minNeighbors=self.min_neighbors,
                minSize=(self.min_face_size, self.min_face_size),
            )
            height, width = gray.shape
            dets = []
            for x, y, w, h in np.asarray(found).reshape(-1, 4):
                box = _clip_box(x, y, w, h, width, height)
                if box is not None:
                    dets.append(Detection(box, 1.0))
            out.append(_sorted_by_size(dets))
        return out


def make_detector(
    name: str | DetectorName = DetectorName.MTCNN,
    *,
    min_face_size: int = DEFAULT_MIN_FACE_SIZE,
    threshold: float = DEFAULT_THRESHOLD,
) -> FaceDetector:
    """Build a detector by name (``mtcnn`` or ``haar``)."""
    name = DetectorName(name)
    if name is DetectorName.MTCNN:
        return MtcnnDetector(min_face_size=min_face_size, threshold=threshold)
    return HaarDetector(min_face_size=min_face_size)

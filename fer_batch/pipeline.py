"""The images pipeline: sources -> read -> detect -> crop -> classify in batches -> records.

:class:`Analyzer` is the Python API behind ``fer-batch images`` (and the
building block of the video pipeline). Images are processed in chunks: the
next chunk is decoded in background threads while the current one is
detected, and all face crops of a chunk go through the classifier together.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np

from fer_batch.classify import DEFAULT_BATCH_SIZE, EmotionClassifier
from fer_batch.crops import square_crop
from fer_batch.detect import DEFAULT_MIN_FACE_SIZE, DEFAULT_THRESHOLD, FaceDetector, make_detector
from fer_batch.errors import InputError
from fer_batch.models import resolve_model
from fer_batch.records import Box, Detection, FaceResult, FrameResult, Status
from fer_batch.sources import SourceItem, file_slug, iter_sources, read_image

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 16  # images decoded and detected per step; bounds memory whatever the folder size
DETECT_MAX_SIDE = 1600  # pixels; larger photos are detected on a downscaled copy (boxes mapped back)


def _detect_scaled(detector: FaceDetector, images: Sequence[np.ndarray]) -> list[list[Detection]]:
    """Run the detector on copies no larger than DETECT_MAX_SIDE and map boxes back to full size."""
    scaled, factors = [], []
    for image in images:
        side = max(image.shape[:2])
        f = min(1.0, DETECT_MAX_SIDE / side) if side else 1.0
        factors.append(f)
        scaled.append(image if f == 1.0 else cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_AREA))
    found = detector.detect(scaled)
    out = []
    for dets, f, image in zip(found, factors, images):
        if f == 1.0:
            out.append(dets)
            continue
        height, width = image.shape[:2]
        mapped = []
        for d in dets:
            x, y = int(d.box.x / f), int(d.box.y / f)
            w, h = min(width - x, int(round(d.box.w / f))), min(height - y, int(round(d.box.h / f)))
            mapped.append(Detection(Box(x, y, w, h), d.score))
        out.append(mapped)
    return out


def _crop_name(source: str, face: int, frame: int | None = None) -> str:
    stem = file_slug(source, "input")
    return f"{stem}_f{frame:06d}_face{face}.png" if frame is not None else f"{stem}_face{face}.png"


class Analyzer:
    """Detects faces and classifies their expressions, many images at a time.

    ``model`` is a shipped model name, a model file or training folder, or a
    ready :class:`EmotionClassifier`; ``batch_size`` applies when the analyzer
    loads the model (a classifier passed in keeps its own), and so does
    ``precision`` (auto, float32 or int8; see :class:`EmotionClassifier`).

    >>> analyzer = Analyzer()                              # shipped model, MTCNN
    >>> for result in analyzer.analyze_paths(["photos/"]):  # doctest: +SKIP
    ...     print(result.source, [f.emotion for f in result.faces])
    """

    def __init__(
        self,
        model: str | Path | EmotionClassifier | None = None,
        detector: str | FaceDetector = "mtcnn",
        *,
        min_face_size: int = DEFAULT_MIN_FACE_SIZE,
        threshold: float = DEFAULT_THRESHOLD,
        batch_size: int = DEFAULT_BATCH_SIZE,
        chunk_size: int = DEFAULT_CHUNK,
        save_crops: str | Path | None = None,
        precision: str = "auto",
    ) -> None:
        if isinstance(model, EmotionClassifier):
            self.classifier = model
        else:
            self.classifier = EmotionClassifier.load(resolve_model(model), batch_size=batch_size,
                                                     precision=precision)
        self.detector = (make_detector(detector, min_face_size=min_face_size, threshold=threshold)
                         if isinstance(detector, str) else detector)
        self.chunk_size = max(1, chunk_size)
        self.save_crops = Path(save_crops) if save_crops else None
        if self.save_crops:
            self.save_crops.mkdir(parents=True, exist_ok=True)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.classifier.class_names

    # -- the core: many decoded images in, faces with probabilities out -------------------------------

    def analyze_arrays(
        self, images: Sequence[np.ndarray], names: Sequence[str] | None = None,
        frames: Sequence[int | None] | None = None,
    ) -> list[list[FaceResult]]:
        """Detect and classify faces in BGR images; one list of faces per image (largest first)."""
        detections = _detect_scaled(self.detector, images)
        info = self.classifier.info
        crops: list[np.ndarray] = []
        owners: list[tuple[int, Detection]] = []
        for i, (image, dets) in enumerate(zip(images, detections)):
            for det in dets:
                crops.append(square_crop(image, det.box, info.input_size, info.crop_margin, info.channels == 1))
                owners.append((i, det))
        results: list[list[FaceResult]] = [[] for _ in images]
        if not crops:
            return results
        probs = self.classifier.predict_proba(np.stack(crops))
        names_ = self.class_names
        for (i, det), p, crop in zip(owners, probs, crops):
            top = int(np.argmax(p))
            face = FaceResult(face=len(results[i]), box=det.box, det_score=det.score, emotion=names_[top],
                              confidence=float(p[top]), probabilities={n: float(v) for n, v in zip(names_, p)})
            results[i].append(face)
            if self.save_crops is not None:
                name = _crop_name(names[i] if names else f"image{i}", face.face,
                                  frames[i] if frames else None)
                cv2.imwrite(str(self.save_crops / name), crop)
        return results

    def analyze_array(self, image_bgr: np.ndarray, source: str = "<array>") -> FrameResult:
        """One in-memory BGR image (as from ``cv2.imread``) to a :class:`FrameResult`."""
        faces = self.analyze_arrays([image_bgr], [source])[0]
        h, w = image_bgr.shape[:2]
        return FrameResult(source=source, status=Status.OK if faces else Status.NO_FACE, faces=tuple(faces),
                           width=w, height=h)

    # -- files ----------------------------------------------------------------------------------------

    def analyze_items(self, items: Iterable[SourceItem]) -> Iterator[FrameResult]:
        """Results for source items, in order, one per item; a bad item yields a ``status=error`` record."""
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="fer-read") as pool:
            pending: list[tuple[SourceItem, Future[np.ndarray] | None]] = []
            iterator = iter(items)
            exhausted = False
            while True:
                # Keep up to two chunks of reads in flight: the one to process now and the next.
                while not exhausted and len(pending) < 2 * self.chunk_size:
                    item = next(iterator, None)
                    if item is None:
                        exhausted = True
                        break
                    future = pool.submit(read_image, item.path) if item.path is not None else None
                    pending.append((item, future))
                if not pending:
                    return
                chunk, pending = pending[: self.chunk_size], pending[self.chunk_size :]
                yield from self._process_chunk(chunk)

    def _process_chunk(self, chunk: list[tuple[SourceItem, Future[np.ndarray] | None]]) -> list[FrameResult]:
        loaded: list[tuple[SourceItem, np.ndarray | None, str | None]] = []
        for item, future in chunk:
            if future is None:
                loaded.append((item, None, item.error or "cannot open"))
                continue
            try:
                loaded.append((item, future.result(), None))
            except InputError as exc:
                loaded.append((item, None, str(exc)))
            except Exception as exc:  # noqa: BLE001 - one odd file must not end the run
                loaded.append((item, None, f"{type(exc).__name__}: {exc}"))
        good = [(item, img) for item, img, _ in loaded if img is not None]
        faces_of_good = iter(self.analyze_arrays([img for _, img in good], [it.source for it, _ in good])
                             if good else [])
        results = []
        for item, img, err in loaded:
            if img is None:
                log.warning("%s: %s", item.source, err)
                results.append(FrameResult(source=item.source, status=Status.ERROR, error=err))
                continue
            faces = next(faces_of_good)
            h, w = img.shape[:2]
            results.append(FrameResult(source=item.source, status=Status.OK if faces else Status.NO_FACE,
                                       faces=tuple(faces), width=w, height=h))
        return results

    def analyze_paths(self, inputs: Iterable[str | Path], stdin: TextIO | None = None) -> Iterator[FrameResult]:
        """Files, folders (recursive) and ``-`` (paths on stdin) to results, in input order."""
        return self.analyze_items(iter_sources(inputs, stdin=stdin))

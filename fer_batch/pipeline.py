"""The images pipeline: sources -> read -> detect -> crop -> classify in batches -> records.

:class:`Analyzer` is the Python API behind ``fer-batch images`` (and the
building block of the video pipeline). Images are processed in chunks, with
every core busy (``workers`` threads, default: the usable CPUs): images are
decoded by a pool of reader threads two chunks ahead, the images of a chunk
are detected in parallel (one detector per thread; OpenCV releases the GIL),
and the next chunk's detection runs while the current chunk's face crops go
through the classifier together. Results still come out in input order, and
at most three chunks are in memory at once, whatever the folder's size.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np

from fer_batch.classify import DEFAULT_BATCH_SIZE, EmotionClassifier
from fer_batch.crops import square_crop
from fer_batch.detect import DEFAULT_DETECTOR, DEFAULT_MIN_FACE_SIZE, FaceDetector, detects_per_image, make_detector
from fer_batch.errors import InputError
from fer_batch.models import resolve_model
from fer_batch.records import Detection, FaceResult, FrameResult, Status
from fer_batch.runtime import usable_cpus
from fer_batch.sources import SourceItem, file_slug, iter_sources, read_image

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 16  # images decoded and detected per step; bounds memory whatever the folder size


@dataclass
class _Chunk:
    """Images read for one step of the pipeline (or the reason each could not be), and their detections."""

    loaded: list[tuple[SourceItem, np.ndarray | None, str | None]]
    detections: list[Future[list[Detection]]]  # one per image that was read, in order


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
        detector: str | FaceDetector = DEFAULT_DETECTOR.value,
        *,
        min_face_size: int = DEFAULT_MIN_FACE_SIZE,
        threshold: float | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        chunk_size: int = DEFAULT_CHUNK,
        save_crops: str | Path | None = None,
        precision: str = "auto",
        workers: int | None = None,
    ) -> None:
        self.workers = max(1, workers or usable_cpus())
        if isinstance(detector, str):  # built before the model: an unknown name fails fast
            self.detector = make_detector(detector, min_face_size=min_face_size, threshold=threshold)
            self._new_detector = lambda: make_detector(detector, min_face_size=min_face_size, threshold=threshold)
        else:
            self.detector = detector
            self._new_detector = None
        if isinstance(model, EmotionClassifier):
            self.classifier = model
        else:
            self.classifier = EmotionClassifier.load(resolve_model(model), batch_size=batch_size,
                                                     precision=precision, threads=self.workers)
        self.chunk_size = max(1, chunk_size)
        self.save_crops = Path(save_crops) if save_crops else None
        if self.save_crops:
            self.save_crops.mkdir(parents=True, exist_ok=True)
        # Images of a chunk are detected in parallel when the detector works image by image on its own state
        # (YuNet, Haar: one copy per thread); MTCNN batches a chunk itself, on TensorFlow's threads.
        parallel = self.workers > 1 and self._new_detector is not None and detects_per_image(self.detector)
        self._local = threading.local()
        self._pool = (ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="fer-detect")
                      if parallel else None)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.classifier.class_names

    # -- the core: many decoded images in, faces with probabilities out -------------------------------

    def _thread_detector(self) -> FaceDetector:
        detector = getattr(self._local, "detector", None)
        if detector is None:
            detector = self._local.detector = self._new_detector()  # type: ignore[misc]
        return detector

    def _detect_one(self, image: np.ndarray) -> list[Detection]:
        return self._thread_detector().detect([image])[0]

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Faces in BGR images, one list per image (largest first), the images spread over the workers."""
        if self._pool is None or len(images) < 2:
            return self.detector.detect(images)
        return list(self._pool.map(self._detect_one, images))

    def _detect_later(self, images: Sequence[np.ndarray]) -> list[Future[list[Detection]]]:
        """Detection of each image, started now (in the background when the detector allows it)."""
        if self._pool is not None:
            return [self._pool.submit(self._detect_one, image) for image in images]
        futures: list[Future[list[Detection]]] = []
        try:
            found = self.detector.detect(images) if images else []
        except Exception:  # noqa: BLE001 - a batch that fails is retried image by image, to isolate the cause
            found = None
        for i, image in enumerate(images):
            future: Future[list[Detection]] = Future()
            try:
                future.set_result(found[i] if found is not None else self.detector.detect([image])[0])
            except Exception as exc:  # noqa: BLE001 - this image gets an error row, the rest of its chunk goes on
                future.set_exception(exc)
            futures.append(future)
        return futures

    def analyze_arrays(
        self, images: Sequence[np.ndarray], names: Sequence[str] | None = None,
        frames: Sequence[int | None] | None = None,
    ) -> list[list[FaceResult]]:
        """Detect and classify faces in BGR images; one list of faces per image (largest first)."""
        return self.classify(images, self.detect(images), names, frames)

    def classify(
        self, images: Sequence[np.ndarray], detections: Sequence[Sequence[Detection]],
        names: Sequence[str] | None = None, frames: Sequence[int | None] | None = None,
    ) -> list[list[FaceResult]]:
        """Classify the detected faces of each image, all crops in one batch; one list of faces per image."""
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
        """Results for source items, in order, one per item; a bad item yields a ``status=error`` record.

        Three stages overlap: reading (``workers`` threads, up to two chunks ahead), detection of one chunk,
        and classification of the chunk before it. Chunks start small and double up to ``chunk_size``, so the
        first results (and the progress bar) come at once.
        """
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="fer-read") as pool:
            reads: list[tuple[SourceItem, Future[np.ndarray] | None]] = []
            iterator = iter(items)
            exhausted = False
            size = min(2, self.chunk_size)
            detecting: _Chunk | None = None
            while True:
                while not exhausted and len(reads) < 2 * self.chunk_size:
                    item = next(iterator, None)
                    if item is None:
                        exhausted = True
                        break
                    reads.append((item, pool.submit(read_image, item.path) if item.path is not None else None))
                chunk = None
                if reads:
                    batch, reads = reads[:size], reads[size:]
                    size = min(2 * size, self.chunk_size)
                    chunk = self._start_chunk(batch)
                if detecting is not None:
                    yield from self._finish_chunk(detecting)
                if chunk is None:
                    return
                detecting = chunk

    def _start_chunk(self, batch: list[tuple[SourceItem, Future[np.ndarray] | None]]) -> _Chunk:
        """Wait for a chunk's images and start their detection."""
        loaded: list[tuple[SourceItem, np.ndarray | None, str | None]] = []
        for item, future in batch:
            if future is None:
                loaded.append((item, None, item.error or "cannot open"))
                continue
            try:
                loaded.append((item, future.result(), None))
            except InputError as exc:
                loaded.append((item, None, str(exc)))
            except Exception as exc:  # noqa: BLE001 - one odd file must not end the run
                loaded.append((item, None, f"{type(exc).__name__}: {exc}"))
        images = [img for _, img, _ in loaded if img is not None]
        return _Chunk(loaded, self._detect_later(images))

    def _finish_chunk(self, chunk: _Chunk) -> list[FrameResult]:
        """Classify a detected chunk; an image whose detection or classification failed gets an error row."""
        errors = {n: err for n, (_, img, err) in enumerate(chunk.loaded) if img is None}
        detected: list[tuple[int, SourceItem, np.ndarray, list[Detection]]] = []
        for (n, (item, img, _)), future in zip(((n, x) for n, x in enumerate(chunk.loaded) if n not in errors),
                                               chunk.detections):
            try:
                detected.append((n, item, img, future.result()))  # type: ignore[arg-type] - read fine
            except Exception as exc:  # noqa: BLE001 - this image only
                errors[n] = f"face detection failed: {type(exc).__name__}: {exc}"
        done: dict[int, FrameResult] = {}
        for (n, item, img, _), faces in zip(detected, self._classify_isolated(detected)):
            if isinstance(faces, str):
                errors[n] = faces
                continue
            h, w = img.shape[:2]
            done[n] = FrameResult(source=item.source, status=Status.OK if faces else Status.NO_FACE,
                                  faces=tuple(faces), width=w, height=h)
        for n, reason in sorted(errors.items()):
            source = chunk.loaded[n][0].source
            log.warning("%s: %s", source, reason)
            done[n] = FrameResult(source=source, status=Status.ERROR, error=reason)
        return [done[n] for n in range(len(chunk.loaded))]

    def _classify_isolated(
        self, found: list[tuple[int, SourceItem, np.ndarray, list[Detection]]],
    ) -> list[list[FaceResult] | str]:
        """Faces per image, all in one classifier batch; if the batch fails, image by image (a reason for each
        image that fails on its own)."""
        if not found:
            return []
        try:
            return list(self.classify([img for _, _, img, _ in found], [d for *_, d in found],
                                      [it.source for _, it, _, _ in found]))
        except Exception:  # noqa: BLE001 - find the image that causes it; the others go on
            out: list[list[FaceResult] | str] = []
            for _, item, img, dets in found:
                try:
                    out.append(self.classify([img], [dets], [item.source])[0])
                except Exception as exc:  # noqa: BLE001 - this image only
                    out.append(f"classification failed: {type(exc).__name__}: {exc}")
            return out

    def analyze_paths(self, inputs: Iterable[str | Path], stdin: TextIO | None = None) -> Iterator[FrameResult]:
        """Files, folders (recursive) and ``-`` (paths on stdin) to results, in input order."""
        return self.analyze_items(iter_sources(inputs, stdin=stdin))

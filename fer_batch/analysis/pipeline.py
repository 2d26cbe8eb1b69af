"""The analysis: frames -> detect -> crop -> classify in batches -> records.

:class:`Analyzer` is the Python API behind ``fer-batch images`` and the
detection and classification stage of ``fer-batch video``. It takes the events
of a :class:`~fer_batch.inputs.frames.FrameSource` in chunks, with every core busy
(``workers`` threads, default: the usable CPUs): the frames of a chunk are
detected in parallel (one detector per thread; OpenCV releases the GIL), and
the next chunk's detection runs while the current chunk's face crops go
through the classifier together. Results come out in input order, and at most
three chunks are in memory at once, whatever the number of inputs.

A frame whose detection or classification raises gets an ``error`` record
with the reason, and the rest of its chunk goes on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Self, TextIO

import cv2
import numpy as np

from fer_batch.analysis.classify import DEFAULT_BATCH_SIZE, EmotionClassifier
from fer_batch.analysis.crops import square_crop
from fer_batch.analysis.detect import (
    DEFAULT_DETECTOR,
    DEFAULT_MIN_FACE_SIZE,
    FaceDetector,
    detects_per_image,
    make_detector,
)
from fer_batch.inputs.frames import Analysed, Event, Frame, FrameError, FrameSource, Idle, Outcome, SourceEnd
from fer_batch.inputs.sources import SourceItem, file_slug
from fer_batch.models import resolve_model
from fer_batch.records import Detection, FaceResult, FrameResult, Status
from fer_batch.runtime import usable_cpus

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 16  # photos decoded and detected per step; bounds memory whatever the folder size


def classified_face(index: int, detection: Detection, probabilities: np.ndarray,
                    class_names: Sequence[str]) -> FaceResult:
    """Face ``index`` of its image: the detection and the classifier's probabilities (in ``class_names`` order)."""
    top = int(np.argmax(probabilities))
    return FaceResult(face=index, box=detection.box, det_score=detection.score, emotion=class_names[top],
                      confidence=float(probabilities[top]),
                      probabilities={n: float(v) for n, v in zip(class_names, probabilities)})


class Chunking(Protocol):
    """Splits a stream of events into the chunks that are detected and classified together."""

    def split(self, events: Iterable[Event]) -> Iterator[list[Event]]: ...


@dataclass(frozen=True)
class GrowingChunks:
    """Photos: chunks of 2, 4, 8... up to ``size`` photos, so the first rows and the progress bar come at once
    (``first``: the first chunk's size; a Ray task, whose rows reach the driver together, starts at ``size``).

    When the source is :class:`~fer_batch.inputs.frames.Idle` (paths on stdin, the next one not there yet), the photos
    gathered so far make a chunk at once, ending with that Idle event (alone if there are none), so the
    analysis finishes them and the chunk before them now (see ``_Chunk.finish_now``).
    """

    size: int = DEFAULT_CHUNK
    first: int = 2

    def split(self, events: Iterable[Event]) -> Iterator[list[Event]]:
        chunk: list[Event] = []
        frames = 0
        limit = min(self.first, self.size)
        for event in events:
            if isinstance(event, Idle):
                if not chunk or isinstance(chunk[-1], SourceEnd):  # never within a photo's events
                    yield [*chunk, event]
                    chunk, frames = [], 0
                continue
            chunk.append(event)
            frames += isinstance(event, Frame) and event.analyse
            if frames >= limit and isinstance(event, SourceEnd):  # a photo's end closes the chunk it is in
                yield chunk
                chunk, frames, limit = [], 0, min(2 * limit, self.size)
        if chunk:
            yield chunk


def _frame_name(source: str, face: int, frame: int | None = None) -> str:
    stem = file_slug(source, "input")
    return f"{stem}_f{frame:06d}_face{face}.png" if frame is not None else f"{stem}_face{face}.png"


@dataclass
class _Chunk:
    """Events of one step of the analysis, and the detection of each of its frames to analyse (in order)."""

    events: list[Event]
    detections: list[Future[list[Detection]]]

    @property
    def finish_now(self) -> bool:
        """Whether to finish this chunk without waiting for the next one to be read and detected.

        A chunk of a live input (its rows are not held back), the last chunk of a video (its outputs are
        written when it ends, not once the next input has opened, which for a stream can take seconds), and a
        chunk that ends with :class:`~fer_batch.inputs.frames.Idle` (the source waits for its next input, which may
        take minutes: the rows of the inputs read so far are not held back).
        Photos overlap: each chunk of photos ends with a photo's end, and is finished after the next starts.
        """
        if self.events and isinstance(self.events[-1], Idle):
            return True
        if any(isinstance(e, Frame) and e.stream is not None and e.stream.live for e in self.events):
            return True
        ends_input = bool(self.events) and isinstance(self.events[-1], SourceEnd)
        return ends_input and not any(isinstance(e, Frame) and e.stream is None for e in self.events)


def _frame_record(frame: Frame, status: Status, faces: Sequence[FaceResult] = (),
                  error: str | None = None) -> FrameResult:
    extra = {"duration_s": frame.stream.duration_s} if frame.stream is not None else {}
    return FrameResult(source=frame.source, status=status, faces=tuple(faces), error=error, width=frame.width,
                       height=frame.height, frame=frame.index, time_s=frame.time_s, extra=extra)


class Analyzer:
    """Detects faces and classifies their expressions, many images at a time.

    ``model`` is a shipped model name, a model file or training folder, or a
    ready :class:`EmotionClassifier`; ``batch_size`` applies when the analyzer
    loads the model (a classifier passed in keeps its own), and so does
    ``precision`` (auto, float32 or int8; see :class:`EmotionClassifier`).

    >>> analyzer = Analyzer()                              # shipped model, YuNet
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

    def close(self) -> None:
        """Stop the detection threads (the analyzer cannot detect in parallel afterwards)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
            face = classified_face(len(results[i]), det, p, names_)
            results[i].append(face)
            if self.save_crops is not None:
                name = _frame_name(names[i] if names else f"image{i}", face.face, frames[i] if frames else None)
                cv2.imwrite(str(self.save_crops / name), crop)
        return results

    def analyze_array(self, image_bgr: np.ndarray, source: str = "<array>") -> FrameResult:
        """One in-memory BGR image (as from ``cv2.imread``) to a :class:`FrameResult`."""
        faces = self.analyze_arrays([image_bgr], [source])[0]
        h, w = image_bgr.shape[:2]
        return FrameResult(source=source, status=Status.OK if faces else Status.NO_FACE, faces=tuple(faces),
                           width=w, height=h)

    # -- streams of frames ----------------------------------------------------------------------------

    def analyze_frames(self, events: Iterable[Event], chunking: Chunking | None = None) -> Iterator[Outcome]:
        """The events of a frame source, analysed, in order.

        Yields an :class:`~fer_batch.inputs.frames.Analysed` (record and frame) for each frame to analyse and for each
        :class:`~fer_batch.inputs.frames.FrameError`, and passes the other frames and the
        :class:`~fer_batch.inputs.frames.SourceEnd` markers along (not :class:`~fer_batch.inputs.frames.Idle`). Detection of one
        chunk overlaps classification of the one before it; a chunk of a live input, the last of a video, or one
        that ends because the source is idle is finished at once, with the chunk before it (see ``_Chunk``).
        """
        waiting: _Chunk | None = None
        for part in (chunking or GrowingChunks(self.chunk_size)).split(events):
            chunk = self._start_chunk(part)
            if waiting is not None:
                yield from self._finish_chunk(waiting)
                waiting = None
            if chunk.finish_now:
                yield from self._finish_chunk(chunk)
            else:
                waiting = chunk
        if waiting is not None:
            yield from self._finish_chunk(waiting)

    def _start_chunk(self, events: list[Event]) -> _Chunk:
        images = [e.image for e in events if isinstance(e, Frame) and e.analyse]
        return _Chunk(events, self._detect_later(images))

    def _finish_chunk(self, chunk: _Chunk) -> list[Outcome]:
        """Classify a detected chunk; a frame whose detection or classification failed gets an error record."""
        frames = [e for e in chunk.events if isinstance(e, Frame) and e.analyse]
        records: dict[int, FrameResult] = {}  # by id() of the frame
        detected: list[tuple[Frame, list[Detection]]] = []
        for frame, future in zip(frames, chunk.detections):
            try:
                detected.append((frame, future.result()))
            except Exception as exc:  # noqa: BLE001 - this frame only
                records[id(frame)] = self._failed(frame, f"face detection failed: {type(exc).__name__}: {exc}")
        for (frame, _), faces in zip(detected, self._classify_isolated(detected)):
            if isinstance(faces, str):
                records[id(frame)] = self._failed(frame, faces)
            else:
                records[id(frame)] = _frame_record(frame, Status.OK if faces else Status.NO_FACE, faces)
        out: list[Outcome] = []
        for event in chunk.events:
            if isinstance(event, FrameError):
                out.append(Analysed(event.to_result()))
            elif isinstance(event, Frame) and event.analyse:
                out.append(Analysed(records[id(event)], event))
            elif not isinstance(event, Idle):  # a frame passed along, or an input's end
                out.append(event)
        return out

    @staticmethod
    def _failed(frame: Frame, reason: str) -> FrameResult:
        where = f" (frame {frame.index})" if frame.index is not None else ""
        log.warning("%s%s: %s", frame.source, where, reason)
        return _frame_record(frame, Status.ERROR, error=reason)

    def _classify_isolated(self, found: list[tuple[Frame, list[Detection]]]) -> list[list[FaceResult] | str]:
        """Faces per frame, all in one classifier batch; if the batch fails, frame by frame (a reason for each
        frame that fails on its own)."""
        if not found:
            return []
        try:
            return list(self.classify([f.image for f, _ in found], [d for _, d in found],
                                      [f.source for f, _ in found], [f.index for f, _ in found]))
        except Exception:  # noqa: BLE001 - find the frame that causes it; the others go on
            out: list[list[FaceResult] | str] = []
            for frame, dets in found:
                try:
                    out.append(self.classify([frame.image], [dets], [frame.source], [frame.index])[0])
                except Exception as exc:  # noqa: BLE001 - this frame only
                    out.append(f"classification failed: {type(exc).__name__}: {exc}")
            return out

    # -- files ----------------------------------------------------------------------------------------

    def analyze_source(self, source: FrameSource) -> Iterator[FrameResult]:
        """One record per photo of a frame source, in input order (a bad photo gets an ``error`` record)."""
        for outcome in self.analyze_frames(source):
            if isinstance(outcome, Analysed):
                yield outcome.result

    def analyze_items(self, items: Iterable[SourceItem]) -> Iterator[FrameResult]:
        """Results for source items, in order, one per item; a bad item yields a ``status=error`` record."""
        return self.analyze_source(FrameSource.of_items(items, workers=self.workers))

    def analyze_paths(self, inputs: Iterable[str | Path], stdin: TextIO | None = None) -> Iterator[FrameResult]:
        """Files, folders (recursive) and ``-`` (paths on stdin) to results, in input order."""
        return self.analyze_source(FrameSource(inputs, workers=self.workers, stdin=stdin))

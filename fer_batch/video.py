"""Video decoding and the video pipeline: sampled frames -> detect + classify in batches -> face tracks -> records.

Videos are decoded with OpenCV's FFmpeg backend one frame at a time, so memory
stays flat however long the video is. Frame times come from the decoder
(``CAP_PROP_POS_MSEC``), not from the frame index times a nominal rate, so
variable-frame-rate video is timed right. Rotation metadata (phone videos) is
applied by the decoder. The container's frame count is used only as a
progress hint and to notice a file that ends long before it says it does.

:class:`VideoAnalyzer` is the Python API behind ``fer-batch video``::

    analyzer = VideoAnalyzer(Analyzer(), Sampling(fps=5))
    for result in analyzer.analyze_paths(["clip.mp4"]):
        print(result.time_s, [(f.track, f.emotion) for f in result.faces])
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Self, TextIO, TypeVar

import cv2
import numpy as np

from fer_batch.errors import InputError, UsageError
from fer_batch.records import FrameResult, Status
from fer_batch.sources import SourceItem, image_kind, iter_sources
from fer_batch.tracking import IouTracker, Tracker

if TYPE_CHECKING:
    from fer_batch.pipeline import Analyzer

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv",
                            ".3gp", ".ts", ".mts", ".m2ts", ".ogv", ".gif"})
DEFAULT_FPS = 5.0  # analysed frames per second of video: expressions last ~0.5-4 s; faster than real time on 2 CPUs
DEFAULT_VIDEO_CHUNK = 16  # sampled frames detected and classified per batch
MAX_CONSECUTIVE_FAILURES = 300  # failed grabs in a row before we call it the end (a damaged GOP can be long)
TIME_TOLERANCE_S = 0.001  # decoder times are rounded to the stream's time base
EARLY_END_FRACTION = 0.9  # a file that stops before this share of its announced length...
EARLY_END_MIN_S = 1.0  # ...and more than this many seconds short is reported as truncated
CHUNK_PIXELS = 8 * 1920 * 1080  # pixels per detection batch: 8 frames of 1080p, all 16 of 720p or less
PREFETCH_FRAMES = 2 * DEFAULT_VIDEO_CHUNK  # decoded frames waiting for analysis; bounds memory
# Scene cuts end all face tracks. Bhattacharyya distance between colour histograms of consecutive sampled
# frames: 0.37-0.45 at the cuts of the developer clips, at most 0.2 for motion and lighting within a shot.
SCENE_CUT_DISTANCE = 0.3


@dataclass(frozen=True)
class Sampling:
    """Which decoded frames to analyse: every ``every``-th frame, and at most ``fps`` per second of video.

    ``fps=None`` lifts the rate limit; ``Sampling(fps=None, every=1)`` analyses every frame.
    """

    fps: float | None = DEFAULT_FPS
    every: int = 1

    def __post_init__(self) -> None:
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise UsageError(f"--fps must be a positive number, not {self.fps}")
        if self.every < 1:
            raise UsageError(f"--every must be 1 or more, not {self.every}")

    @classmethod
    def from_options(cls, fps: float | None = None, every: int | None = None) -> Sampling:
        """The default when neither is given; otherwise exactly what was asked (``--every 1``: every frame)."""
        if fps is None and every is None:
            return cls()
        return cls(fps=fps, every=every or 1)

    def describe(self) -> str:
        """In words, for logs: ``every frame``, ``1 frame in 3, at most 5 frames per second of video``..."""
        parts = []
        if self.every > 1:
            parts.append(f"1 frame in {self.every}")
        if self.fps:
            parts.append(f"at most {self.fps:g} frames per second of video")
        return ", ".join(parts) or "every frame"


class _Sampler:
    """Per-video state of a :class:`Sampling`: keeps at most one frame per 1/fps slot of video time."""

    def __init__(self, sampling: Sampling) -> None:
        self.sampling = sampling
        self.next_due = -math.inf

    def take(self, index: int, time_s: float) -> bool:
        if index % self.sampling.every:
            return False
        if not self.sampling.fps:
            return True
        if time_s + TIME_TOLERANCE_S < self.next_due:
            return False
        period = 1.0 / self.sampling.fps
        # The next slot starts at the next multiple of the period: no drift, and no burst after a gap.
        self.next_due = (math.floor((time_s + TIME_TOLERANCE_S) / period) + 1) * period
        return True


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video, and the size frames really decode to."""

    width: int  # after rotation
    height: int
    nominal_fps: float | None  # the stream's average rate; only for writing video and estimates
    frame_count_hint: int | None  # the container's frame count: for progress only, never trusted
    rotation: int  # degrees of rotation metadata, already applied to decoded frames

    @property
    def duration_hint_s(self) -> float | None:
        """The length the container announces, in seconds (None when it does not say)."""
        if self.frame_count_hint and self.nominal_fps:
            return self.frame_count_hint / self.nominal_fps
        return None


@dataclass(frozen=True)
class DecodedFrame:
    """One decoded frame: its index in decode order (failed frames included), decoder time, BGR pixels."""

    index: int
    time_s: float
    image: np.ndarray


def _quiet_decoder_logs() -> None:
    # FFmpeg prints every damaged packet to stderr; fer-batch counts them and reports once instead.
    # setdefault: a user debugging a file can still set OPENCV_FFMPEG_LOGLEVEL themselves.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


class VideoReader:
    """Decodes one video file frame by frame (context manager).

    Raises :class:`InputError` with a one-line reason when the file cannot be
    opened as a video. Frames that fail to decode are skipped and counted in
    :attr:`failed_frames`.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            with self.path.open("rb") as fh:
                head = fh.read(16)
        except FileNotFoundError:
            raise InputError("no such file") from None
        except IsADirectoryError:
            raise InputError("is a folder, not a video file") from None
        except OSError as exc:
            raise InputError(f"cannot read file: {exc.strerror or exc}") from exc
        if not head:
            raise InputError("empty file (0 bytes): a zero-length video")
        kind = image_kind(head)  # FFmpeg would open a photo as a one-frame video
        if kind:
            raise InputError(f"this is a {kind} image, not a video (use `fer-batch images` for photos)")
        _quiet_decoder_logs()
        logging_ = cv2.utils.logging
        previous = logging_.getLogLevel()
        logging_.setLogLevel(logging_.LOG_LEVEL_ERROR)  # OpenCV warns on stderr for every file it cannot open
        try:
            self._cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        finally:
            logging_.setLogLevel(previous)
        if not self._cap.isOpened():
            self._cap.release()
            raise InputError("cannot open as a video: no video stream, an unsupported format, "
                             "or a corrupt or truncated file")
        self._cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)  # rotate phone videos upright (OpenCV's default, made sure)
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        count = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.info = VideoInfo(
            width=int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            nominal_fps=float(fps) if math.isfinite(fps) and 0 < fps < 1000 else None,
            frame_count_hint=int(count) if math.isfinite(count) and 0 < count < 1e9 else None,
            rotation=int(self._cap.get(cv2.CAP_PROP_ORIENTATION_META) or 0),
        )
        self.decoded_frames = 0
        self.failed_frames = 0
        self.last_time_s: float | None = None

    def frames(self, sampling: Sampling | None = None) -> Iterator[DecodedFrame]:
        """Decoded frames in presentation order; only the sampled ones are converted and yielded.

        ``sampling=None`` yields every frame. Can be iterated once.
        """
        sampler = _Sampler(sampling or Sampling(fps=None, every=1))
        index = 0  # position in the stream, counting frames that failed to decode
        failures = 0  # consecutive failed grabs; at the end of the file grab() fails too
        while True:
            if not self._cap.grab():
                failures += 1
                if failures > MAX_CONSECUTIVE_FAILURES:
                    return  # the trailing failures were the end of the stream, not damaged frames
                continue
            if failures:
                self.failed_frames += failures
                index += failures
                failures = 0
            time_s = self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if self.last_time_s is not None and time_s < self.last_time_s:
                time_s = self.last_time_s  # a broken timestamp must not send time backwards
            self.last_time_s = time_s
            self.decoded_frames += 1
            current, index = index, index + 1
            if not sampler.take(current, time_s):
                continue
            ok, image = self._cap.retrieve()
            if not ok or image is None or image.size == 0:
                self.failed_frames += 1
                continue
            yield DecodedFrame(current, time_s, image)

    @property
    def ended_early(self) -> bool:
        """True when decoding stopped well before the length the container announces (a truncated file)."""
        announced = self.info.duration_hint_s
        if announced is None or self.last_time_s is None:
            return False
        reached = self.last_time_s + (1.0 / self.info.nominal_fps if self.info.nominal_fps else 0.0)
        return reached < EARLY_END_FRACTION * announced and announced - reached > EARLY_END_MIN_S

    def close(self) -> None:
        self._cap.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


T = TypeVar("T")


def _prefetched(source: Iterator[T], maxsize: int) -> Iterator[T]:
    """Run ``source`` in a background thread, ``maxsize`` items ahead (decoding overlaps analysis).

    OpenCV releases the GIL while it decodes. Closing the returned generator
    stops the thread before it returns, so the caller may release the decoder.
    """
    items: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=maxsize)
    stop = threading.Event()

    def put(kind: str, value: object) -> bool:
        while not stop.is_set():
            try:
                items.put((kind, value), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in source:
                if not put("item", item):
                    return
            put("end", None)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            put("error", exc)

    thread = threading.Thread(target=work, name="fer-decode", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = items.get()
            if kind == "end":
                return
            if kind == "error":
                raise value  # type: ignore[misc]
            yield value  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()


def frame_signature(image: np.ndarray) -> np.ndarray:
    """A normalised HSV colour histogram of a thumbnail: cheap, and stable under motion within a shot."""
    small = cv2.resize(image, (160, 90), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, [8, 4, 4], [0, 180, 0, 256, 0, 256])
    return cv2.normalize(hist, hist, 1.0, 0.0, cv2.NORM_L1)


def is_scene_cut(previous: np.ndarray | None, current: np.ndarray) -> bool:
    """True when two frame signatures differ as much as frames from different shots do."""
    if previous is None:
        return False
    return float(cv2.compareHist(previous, current, cv2.HISTCMP_BHATTACHARYYA)) > SCENE_CUT_DISTANCE


def _chunks(frames: Iterator[DecodedFrame], size: int) -> Iterator[list[DecodedFrame]]:
    """Lists of ``size`` frames; the last few frames in power-of-two lists (16, then 8, 4, 2, 1).

    TensorFlow prepares the detector once per batch shape, which takes seconds at 1080p: a video
    whose length leaves any remainder would otherwise add a new shape for each remainder.
    """
    chunk: list[DecodedFrame] = []
    for frame in frames:
        chunk.append(frame)
        if len(chunk) == size:
            yield chunk
            chunk = []
    while chunk:
        step = 1 << (len(chunk).bit_length() - 1)
        yield chunk[:step]
        chunk = chunk[step:]


def chunk_size_for(width: int, height: int, limit: int = DEFAULT_VIDEO_CHUNK) -> int:
    """Frames per detection batch for a frame size: ``limit`` up to 720p, fewer for larger frames.

    Measured on 2 CPUs with MTCNN: 16-frame batches are fastest at 640x360, 4-8 at 1920x1080
    (16 is ~20% slower there), and the cap also bounds memory for 4K video.
    """
    if width <= 0 or height <= 0:
        return limit
    return max(1, min(limit, CHUNK_PIXELS // (width * height)))


def _error(source: str, reason: str) -> FrameResult:
    log.warning("%s: %s", source, reason)
    return FrameResult(source=source, status=Status.ERROR, error=reason)


class VideoAnalyzer:
    """Faces, expressions and face tracks over time, for video files.

    Wraps an :class:`~fer_batch.pipeline.Analyzer` (model + detector): sampled
    frames are gathered into chunks and each chunk is detected and classified
    in one batch. Yields one :class:`~fer_batch.records.FrameResult` per
    sampled frame (``frame``, ``time_s`` set; each face has a ``track``), and
    one ``status=error`` record for a video that cannot be read. Each record's
    ``extra["duration_s"]`` holds the video's announced length, for progress.
    With ``scene_cuts`` (default), tracks end at a cut between shots.
    """

    def __init__(
        self,
        analyzer: Analyzer | None = None,
        sampling: Sampling | None = None,
        *,
        chunk_size: int = DEFAULT_VIDEO_CHUNK,
        tracker_factory: Callable[[], Tracker] = IouTracker,
        scene_cuts: bool = True,
    ) -> None:
        if analyzer is None:
            from fer_batch.pipeline import Analyzer  # noqa: PLC0415 - loads TensorFlow

            analyzer = Analyzer()
        self.analyzer = analyzer
        self.sampling = sampling or Sampling()
        self.chunk_size = max(1, chunk_size)
        self.tracker_factory = tracker_factory
        self.scene_cuts = scene_cuts

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.analyzer.class_names

    def analyze_video(self, path: str | Path, source: str | None = None) -> Iterator[FrameResult]:
        """Records for one video file, in time order; a bad file yields one ``status=error`` record."""
        source = str(path) if source is None else source
        try:
            reader = VideoReader(path)
        except InputError as exc:
            yield _error(source, str(exc))
            return
        with reader:
            info = reader.info
            extra = {"duration_s": info.duration_hint_s}
            log.debug("%s: %dx%d, %s fps, ~%s frames, rotation %d", source, info.width, info.height,
                      info.nominal_fps, info.frame_count_hint, info.rotation)
            tracker = self.tracker_factory()
            signature: np.ndarray | None = None
            frames = _prefetched(reader.frames(self.sampling), PREFETCH_FRAMES)
            try:
                for chunk in _chunks(frames, chunk_size_for(info.width, info.height, self.chunk_size)):
                    faces_per_frame = self.analyzer.analyze_arrays(
                        [f.image for f in chunk], [source] * len(chunk), [f.index for f in chunk])
                    for frame, faces in zip(chunk, faces_per_frame):
                        if self.scene_cuts:
                            previous, signature = signature, frame_signature(frame.image)
                            if is_scene_cut(previous, signature):
                                log.debug("%s: scene cut at %.2f s", source, frame.time_s)
                                tracker.reset()
                        ids = tracker.update([face.box for face in faces], frame.time_s)
                        tracked = tuple(replace(face, track=track) for face, track in zip(faces, ids))
                        height, width = frame.image.shape[:2]
                        yield FrameResult(source=source, status=Status.OK if tracked else Status.NO_FACE,
                                          faces=tracked, width=width, height=height, frame=frame.index,
                                          time_s=frame.time_s, extra=extra)
            finally:
                frames.close()  # stops the decoding thread before the reader is released
            if reader.failed_frames:
                log.warning("%s: %d frame(s) could not be decoded and were skipped", source, reader.failed_frames)
            if reader.decoded_frames == 0:
                yield _error(source, "no frame could be decoded: a zero-length or corrupt video")
            elif reader.ended_early:
                announced = info.duration_hint_s or 0.0
                yield _error(source, f"decoding stopped at {reader.last_time_s:.1f} s of the {announced:.1f} s the "
                                     "file announces: truncated or corrupt (the rows before this one are valid)")

    def analyze_items(self, items: Iterable[SourceItem]) -> Iterator[FrameResult]:
        """Records for source items, video after video, in input order."""
        for item in items:
            if item.path is None:
                yield _error(item.source, item.error or "cannot open")
                continue
            yield from self.analyze_video(item.path, item.source)

    def analyze_paths(self, inputs: Iterable[str | Path], stdin: TextIO | None = None) -> Iterator[FrameResult]:
        """Files, folders (searched recursively for video suffixes) and ``-`` (paths on stdin) to records."""
        return self.analyze_items(iter_sources(inputs, suffixes=VIDEO_SUFFIXES, stdin=stdin))


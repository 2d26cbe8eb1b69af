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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Self, TextIO

import cv2
import numpy as np

from fer_batch.errors import InputError, UsageError
from fer_batch.frames import Analysed, Event, Frame, FrameSource, Idle, LiveOptions, Outcome, SourceEnd
from fer_batch.records import FrameResult, Status
from fer_batch.sources import SourceItem, image_kind
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
# Frames held in one chunk, analysed or passed along (--annotate): 16 frames of 1080p, 100 MB. Bounds memory
# when every frame is kept for the annotated copy; the chunk then closes before it has its analysed frames.
HELD_PIXELS = 16 * 1920 * 1080
LIVE_CHUNK = 2  # sampled frames of a live input analysed together: its rows are not held back
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
    """One decoded frame: its index in decode order (failed frames included), decoder time, BGR pixels.

    ``sampled`` is False for a frame that the sampling skips, yielded only when every frame is asked for.
    """

    index: int
    time_s: float
    image: np.ndarray
    sampled: bool = True


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

    def frames(self, sampling: Sampling | None = None, *, all_frames: bool = False) -> Iterator[DecodedFrame]:
        """Decoded frames in presentation order; only the sampled ones are converted and yielded.

        ``sampling=None`` yields every frame; with ``all_frames`` the frames that ``sampling`` skips are
        yielded too, marked ``sampled=False`` (for an annotated copy). Can be iterated once.
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
            sampled = sampler.take(current, time_s)
            if not (sampled or all_frames):
                continue
            ok, image = self._cap.retrieve()
            if not ok or image is None or image.size == 0:
                self.failed_frames += 1
                continue
            yield DecodedFrame(current, time_s, image, sampled)

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


def chunk_size_for(width: int, height: int, limit: int = DEFAULT_VIDEO_CHUNK) -> int:
    """Frames per detection batch for a frame size: ``limit`` up to 720p, fewer for larger frames.

    Measured on 2 CPUs with MTCNN: 16-frame batches are fastest at 640x360, 4-8 at 1920x1080
    (16 is ~20% slower there), and the cap also bounds memory for 4K video.
    """
    if width <= 0 or height <= 0:
        return limit
    return max(1, min(limit, CHUNK_PIXELS // (width * height)))


def _power_of_two_pieces(chunk: list[Event]) -> Iterator[list[Event]]:
    """A chunk cut into pieces of 8, 4, 2, 1 analysed frames (the other events stay in order between them).

    TensorFlow prepares MTCNN once per batch shape, which takes seconds at 1080p: a video whose length leaves
    any remainder would otherwise add a new shape for each remainder.
    """
    left = sum(isinstance(e, Frame) and e.analyse for e in chunk)
    piece: list[Event] = []
    frames = 0
    target = 1 << (left.bit_length() - 1) if left else 0
    for event in chunk:
        piece.append(event)
        if isinstance(event, Frame) and event.analyse:
            frames += 1
            if frames == target:
                left -= frames
                yield piece
                piece, frames = [], 0
                target = 1 << (left.bit_length() - 1) if left else 0
    if piece:
        yield piece


@dataclass(frozen=True)
class VideoChunks:
    """Video frames in chunks of up to ``size`` analysed frames (fewer for large frames, see
    :func:`chunk_size_for`; :data:`LIVE_CHUNK` for live inputs), the end of each video in power-of-two pieces.
    A chunk also closes when the frames it holds (passed-along ones included) reach :data:`HELD_PIXELS`.
    """

    size: int = DEFAULT_VIDEO_CHUNK

    def split(self, events: Iterable[Event]) -> Iterator[list[Event]]:
        chunk: list[Event] = []
        frames = held = 0
        for event in events:
            if isinstance(event, Idle):  # nothing to flush: a video's last chunk is finished at once anyway
                continue
            chunk.append(event)
            if isinstance(event, Frame):
                held += event.width * event.height
                frames += event.analyse
                live = event.stream is not None and event.stream.live
                limit = LIVE_CHUNK if live else chunk_size_for(event.width, event.height, self.size)
                if frames >= limit or held >= HELD_PIXELS:
                    yield chunk
                    chunk, frames, held = [], 0, 0
            elif isinstance(event, SourceEnd):
                yield from _power_of_two_pieces(chunk)
                chunk, frames, held = [], 0, 0
        if chunk:
            yield from _power_of_two_pieces(chunk)


class VideoAnalyzer:
    """Faces, expressions and face tracks over time, for video files and live inputs.

    Wraps an :class:`~fer_batch.pipeline.Analyzer` (model + detector): sampled
    frames are gathered into chunks (:class:`VideoChunks`) and each chunk is
    detected and classified in one batch; then each face gets a track ID.
    Yields one :class:`~fer_batch.records.FrameResult` per sampled frame
    (``frame``, ``time_s`` set; each face has a ``track``), and one
    ``status=error`` record for a video that cannot be read. Each record's
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
            from fer_batch.pipeline import Analyzer  # noqa: PLC0415 - loads the model

            analyzer = Analyzer()
        self.analyzer = analyzer
        self.sampling = sampling or Sampling()
        self.chunk_size = max(1, chunk_size)
        self.tracker_factory = tracker_factory
        self.scene_cuts = scene_cuts

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.analyzer.class_names

    def analyze_frames(self, events: Iterable[Event]) -> Iterator[Outcome]:
        """The events of a frame source, analysed and tracked, in order (see ``Analyzer.analyze_frames``)."""
        outcomes = self.analyzer.analyze_frames(events, VideoChunks(self.chunk_size))
        return self._tracked(outcomes)

    def _tracked(self, outcomes: Iterator[Outcome]) -> Iterator[Outcome]:
        """Track IDs on the faces of each analysed frame; a new tracker for each input, and at scene cuts."""
        tracker: Tracker | None = None
        signature: np.ndarray | None = None
        try:
            for outcome in outcomes:
                if isinstance(outcome, SourceEnd):
                    tracker, signature = None, None
                elif isinstance(outcome, Analysed) and outcome.frame is not None \
                        and outcome.result.status is not Status.ERROR and outcome.result.time_s is not None:
                    frame, result = outcome.frame, outcome.result
                    if tracker is None:
                        tracker = self.tracker_factory()
                    if self.scene_cuts:
                        previous, signature = signature, frame_signature(frame.image)
                        if is_scene_cut(previous, signature):
                            log.debug("%s: scene cut at %.2f s", frame.source, result.time_s)
                            tracker.reset()
                    ids = tracker.update([face.box for face in result.faces], result.time_s)
                    faces = tuple(replace(face, track=track) for face, track in zip(result.faces, ids))
                    outcome = Analysed(replace(result, faces=faces), frame)
                yield outcome
        finally:
            outcomes.close()  # type: ignore[attr-defined] - a generator: stops the decoding threads

    def source(self, inputs: Iterable[str | Path], **options: object) -> FrameSource:
        """A frame source of videos with this analyzer's sampling (options as :class:`FrameSource`'s)."""
        return FrameSource(inputs, video=True, sampling=self.sampling, workers=self.analyzer.workers,
                           **options)  # type: ignore[arg-type]

    def _records(self, source: FrameSource) -> Iterator[FrameResult]:
        for outcome in self.analyze_frames(source):
            if isinstance(outcome, Analysed):
                yield outcome.result

    def analyze_video(self, path: str | Path, source: str | None = None) -> Iterator[FrameResult]:
        """Records for one video file, in time order; a bad file yields one ``status=error`` record."""
        item = SourceItem(str(path) if source is None else source, Path(path))
        return self.analyze_items([item])

    def analyze_items(self, items: Iterable[SourceItem]) -> Iterator[FrameResult]:
        """Records for source items, video after video, in input order."""
        return self._records(FrameSource.of_items(items, video=True, sampling=self.sampling,
                                                  workers=self.analyzer.workers))

    def analyze_paths(self, inputs: Iterable[str | Path], stdin: TextIO | None = None,
                      live: LiveOptions | None = None) -> Iterator[FrameResult]:
        """Files, folders (searched recursively for video suffixes), ``-`` (paths on stdin), stream URLs and
        cameras (``camera:0``) to records."""
        return self._records(self.source(inputs, stdin=stdin, live=live))

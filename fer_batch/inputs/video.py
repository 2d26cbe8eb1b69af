"""Video decoding: video files frame by frame, sampled (:class:`VideoReader`, :class:`Sampling`).

Videos are decoded with OpenCV's FFmpeg backend one frame at a time, so memory
stays flat however long the video is. Frame times come from the decoder
(``CAP_PROP_POS_MSEC``), not from the frame index times a nominal rate, so
variable-frame-rate video is timed right. Rotation metadata (phone videos) is
applied by the decoder. The container's frame count is used only as a
progress hint and to notice a file that ends long before it says it does.
The video analysis (chunks, face tracks, scene cuts) is :mod:`fer_batch.analysis.video`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import cv2
import numpy as np

from fer_batch.errors import InputError, UsageError
from fer_batch.inputs.images import image_kind

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv",
                            ".3gp", ".ts", ".mts", ".m2ts", ".ogv", ".gif"})
DEFAULT_FPS = 5.0  # analysed frames per second of video: expressions last ~0.5-4 s; faster than real time on 2 CPUs
MAX_CONSECUTIVE_FAILURES = 300  # failed grabs in a row before we call it the end (a damaged GOP can be long)
TIME_TOLERANCE_S = 0.001  # decoder times are rounded to the stream's time base
EARLY_END_FRACTION = 0.9  # a file that stops before this share of its announced length...
EARLY_END_MIN_S = 1.0  # ...and more than this many seconds short is reported as truncated


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


class Sampler:
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


def quiet_decoder_logs() -> None:
    """Silence FFmpeg's per-packet messages (for every decoder: files here, streams in :mod:`.streams`)."""
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
        quiet_decoder_logs()
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
        sampler = Sampler(sampling or Sampling(fps=None, every=1))
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

    def frame_at(self, index: int, *, forward: int = 0) -> np.ndarray | None:
        """The frame at decode position ``index`` (as the rows' ``frame``), or None past the end.

        For a few frames, not a pass over the video: it seeks (FFmpeg decodes from the keyframe before), or
        decodes forward when ``index`` lies at most ``forward`` frames after the current position. Do not mix
        with :meth:`frames`.
        """
        position = int(self._cap.get(cv2.CAP_PROP_POS_FRAMES))
        if not 0 <= index - position <= forward:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, index)
            position = index
        for _ in range(index - position):
            if not self._cap.grab():
                return None
        ok, image = self._cap.read()
        return image if ok and image is not None and image.size else None

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

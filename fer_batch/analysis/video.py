"""The video analysis: sampled frames -> detect + classify in batches -> face tracks -> records.

:class:`VideoAnalyzer` is the Python API behind ``fer-batch video``::

    analyzer = VideoAnalyzer(Analyzer(), Sampling(fps=5))
    for result in analyzer.analyze_paths(["clip.mp4"]):
        print(result.time_s, [(f.track, f.emotion) for f in result.faces])

Decoding and sampling are :mod:`fer_batch.inputs.video`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np

from fer_batch.analysis.pipeline import Analyzer
from fer_batch.analysis.tracking import IouTracker, Tracker
from fer_batch.inputs.frames import Analysed, Event, Frame, FrameSource, Idle, LiveOptions, Outcome, SourceEnd
from fer_batch.inputs.sources import SourceItem
from fer_batch.inputs.video import Sampling
from fer_batch.records import FrameResult, Status

log = logging.getLogger(__name__)

DEFAULT_VIDEO_CHUNK = 16  # sampled frames detected and classified per batch
CHUNK_PIXELS = 8 * 1920 * 1080  # pixels per detection batch: 8 frames of 1080p, all 16 of 720p or less
# Frames held in one chunk, analysed or passed along (--annotate): 16 frames of 1080p, 100 MB. Bounds memory
# when every frame is kept for the annotated copy; the chunk then closes before it has its analysed frames.
HELD_PIXELS = 16 * 1920 * 1080
LIVE_CHUNK = 2  # sampled frames of a live input analysed together: its rows are not held back
# Scene cuts end all face tracks. Bhattacharyya distance between colour histograms of consecutive sampled
# frames: 0.37-0.45 at the cuts of the developer clips, at most 0.2 for motion and lighting within a shot.
SCENE_CUT_DISTANCE = 0.3


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

    Wraps an :class:`~fer_batch.analysis.pipeline.Analyzer` (model + detector): sampled
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
            analyzer = Analyzer()  # loads the model
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

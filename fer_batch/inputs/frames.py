"""One source of frames for every kind of input: photos, video files, live streams and cameras.

:class:`FrameSource` turns what a user names (files, folders, ``-`` for paths
on stdin, video files, stream URLs, ``camera:N``) into one ordered stream of
events that the analysis and the sinks share:

* :class:`Frame`: decoded pixels with their source, index and time (a photo
  is one frame without index or time);
* :class:`FrameError`: an input, or a part of one, that could not be read,
  with a one-line reason; it becomes an ``error`` row, and the run goes on;
* :class:`SourceEnd`: one input is finished (so per-video outputs can be
  written, and the progress bar can advance);
* :class:`Idle`: the source has nothing more ready and is about to wait for
  its next input (paths on stdin that come one at a time): the analysis
  finishes what it holds instead of waiting for inputs that may be long in
  coming. It is no input, and no row; consumers that only look at frames,
  errors and ends may ignore it.

Photos are decoded by a pool of reader threads ahead of the analysis (inputs
not known in advance, such as paths on stdin, are read by a thread of their
own, so the photos already named are analysed while the next path is
awaited); a video is decoded in a background thread a few frames ahead; a
live input is read by its own thread that keeps up with real time (see
:mod:`fer_batch.inputs.streams`). Memory stays bounded whatever the number of inputs
or the video's length.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter, deque
from collections.abc import Collection, Generator, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TextIO, TypeVar

import numpy as np

from fer_batch.errors import InputError, UsageError
from fer_batch.inputs.images import IMAGE_SUFFIXES, read_image
from fer_batch.inputs.sources import STDIN, SourceItem, iter_sources
from fer_batch.inputs.streams import DEFAULT_STREAM_TIMEOUT_S, LiveReader
from fer_batch.inputs.video import VIDEO_SUFFIXES, Sampling, VideoReader
from fer_batch.records import FrameResult, Status
from fer_batch.runtime import usable_cpus

log = logging.getLogger(__name__)

IMAGES_AHEAD = 32  # photos decoded (or being decoded) ahead of the analysis: two chunks; bounds memory
INPUTS_AHEAD = 1024  # inputs not known in advance (paths on stdin) read ahead of the photos; bounds memory
PREFETCH_FRAMES = 32  # decoded video frames waiting for analysis; bounds memory


@dataclass(frozen=True)
class StreamInfo:
    """What is known of a video or live input before its end: for progress, charts and annotated copies."""

    width: int
    height: int
    nominal_fps: float | None  # the stream's average frame rate, when it states one
    duration_s: float | None  # the length a file announces (None for live inputs): for progress only
    live: bool = False


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded image: a photo, or a frame of a video or live input.

    ``analyse`` is False for a video frame between two sampled ones, passed
    along only for sinks that need every frame (an annotated copy, a window).
    """

    source: str
    image: np.ndarray  # 8-bit BGR
    index: int | None = None  # video: the frame's position in the stream, counting frames that failed
    time_s: float | None = None  # video: presentation time in seconds
    analyse: bool = True
    stream: StreamInfo | None = None  # None for a photo

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


@dataclass(frozen=True)
class FrameError:
    """An input that could not be read, or a video that broke off: becomes one ``error`` row."""

    source: str
    reason: str

    def to_result(self) -> FrameResult:
        return FrameResult(source=self.source, status=Status.ERROR, error=self.reason)


@dataclass(frozen=True)
class SourceEnd:
    """One input is finished; ``dropped_frames`` counts the frames a live input lost to keep up with real time."""

    source: str
    dropped_frames: int = 0


@dataclass(frozen=True)
class Idle:
    """The source has yielded everything it has ready and now waits for its next input (a path on stdin).

    Yielded only between inputs, at most once per wait, and only by a source of photos whose inputs are not
    known in advance (``-``). The analysis finishes the inputs it holds when it sees one (see
    :class:`~fer_batch.analysis.pipeline.GrowingChunks`), so their rows come out now rather than after later inputs;
    it passes no Idle on to the sinks.
    """


@dataclass(frozen=True, eq=False)
class Analysed:
    """A result with the frame it was computed on (None for an input that could not be read)."""

    result: FrameResult
    frame: Frame | None = None


Event = Frame | FrameError | SourceEnd | Idle  # what a frame source yields
Outcome = Analysed | Frame | SourceEnd  # what the analysis yields: results, frames passed along, ends (no Idle)


@dataclass(frozen=True)
class LiveOptions:
    """How live inputs are read: see :class:`fer_batch.inputs.streams.LiveReader`."""

    timeout_s: float | None = None  # None: the reader's documented default
    reconnect: int = 0
    duration_s: float | None = None  # stop each live input after this much stream time

    def __post_init__(self) -> None:
        for name, value in (("--stream-timeout", self.timeout_s), ("--duration", self.duration_s)):
            if value is not None and not value > 0:
                raise UsageError(f"{name} must be a positive number of seconds, not {value:g}")


class FrameSource:
    """Inputs as one ordered stream of :class:`Frame`, :class:`FrameError` and :class:`SourceEnd` events.

    ``video=False``: photos (files, folders searched for image suffixes, ``-``); when the inputs are not known
    in advance (``-``), an :class:`Idle` event comes before each wait for the next input.
    ``video=True``: video files (folders searched for video suffixes), stream
    URLs and cameras; ``sampling`` picks the frames to analyse, and with
    ``all_frames`` the others are passed along too (``analyse=False``).
    Sources in ``skip`` are left out (a resumed run). :attr:`items` lists the
    inputs when they are known in advance (not for ``-``).
    """

    def __init__(
        self,
        inputs: Iterable[str | Path],
        *,
        video: bool = False,
        sampling: Sampling | None = None,
        all_frames: bool = False,
        workers: int | None = None,
        live: LiveOptions | None = None,
        skip: Collection[str] | Mapping[str, int] = (),
        stdin: TextIO | None = None,
    ) -> None:
        inputs = [str(i) for i in inputs]
        self.video = video
        self.sampling = sampling if sampling is not None else Sampling()
        self.all_frames = all_frames
        self.workers = max(1, workers or usable_cpus())
        self.live = live or LiveOptions()
        self.skip = skip
        found = iter_sources(inputs, suffixes=VIDEO_SUFFIXES if video else IMAGE_SUFFIXES, stdin=stdin, live=video)
        self.items: list[SourceItem] | None = None if STDIN in inputs else list(found)
        self._found: Iterable[SourceItem] = self.items if self.items is not None else found

    @classmethod
    def of_items(cls, items: Iterable[SourceItem], **options: object) -> FrameSource:
        """A source over items already found (by :func:`~fer_batch.inputs.sources.iter_sources`)."""
        source = cls((), **options)  # type: ignore[arg-type]
        source.items = items if isinstance(items, list) else None
        source._found = items
        return source

    @property
    def openable(self) -> bool:
        """False when every input is known in advance and none left to do can be opened: no model is needed."""
        return self.items is None or any(item.error is None for item in self._left(self.items))

    @property
    def remaining(self) -> int | None:
        """Inputs left to do, when they are known in advance (for the progress bar)."""
        return None if self.items is None else sum(1 for _ in self._left(self.items))

    def pending(self) -> list[SourceItem]:
        """The inputs left to do, in order (``-``: read to the end of stdin), for an engine that needs them all
        before it starts (:mod:`fer_batch.engines.ray_engine`)."""
        return list(self._wanted())

    def _wanted(self) -> Iterator[SourceItem]:
        return self._left(self._found)

    def _left(self, items: Iterable[SourceItem]) -> Iterator[SourceItem]:
        """``items`` less the skipped ones: a source in a mapping ``skip`` is skipped as many times as it
        counts (an input named twice and done once is done again), a source in a plain collection always."""
        if isinstance(self.skip, Mapping):
            left = Counter(self.skip)
            for item in items:
                if left[item.source] > 0:
                    left[item.source] -= 1
                else:
                    yield item
            return
        for item in items:
            if item.source not in self.skip:
                yield item

    def __iter__(self) -> Iterator[Event]:
        if not self.video:
            return self._photos(self._wanted())
        return self._videos(self._wanted())

    # -- photos -----------------------------------------------------------------------------------------

    def _photos(self, items: Iterator[SourceItem]) -> Iterator[Event]:
        """Photos decoded by ``workers`` threads ahead of the consumer, yielded in input order.

        Inputs known in advance are read ahead at once. Inputs that are not (paths on stdin, which may come one
        at a time, as from ``inotifywait``) are read by a background thread: the read-ahead takes only those
        that have arrived, and when none is left to yield an :class:`Idle` event comes before the wait for the
        next one, so the analysis can finish the photos it holds.
        """
        ahead = max(IMAGES_AHEAD, self.workers)  # at least one photo per reader thread
        arrivals = BackgroundReader(items, INPUTS_AHEAD, "fer-inputs") if self.items is None else None
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="fer-read")
        pending: deque[tuple[SourceItem, Future[np.ndarray] | None]] = deque()

        def add(item: SourceItem) -> None:
            readable = item.error is None and item.path is not None
            pending.append((item, pool.submit(read_image, item.path) if readable else None))

        try:
            idle = True  # nothing yielded since the last wait: no Idle is owed
            while True:
                while len(pending) < ahead:
                    item = next(items, None) if arrivals is None else arrivals.get(wait=False)
                    if item is None:
                        break
                    add(item)
                if not pending:
                    if arrivals is None or arrivals.ended:
                        return
                    if not idle:
                        idle = True
                        yield Idle()
                    item = arrivals.get()
                    if item is None:
                        return
                    add(item)
                    continue
                item, future = pending.popleft()
                idle = False
                yield _photo_event(item, future)
                yield SourceEnd(item.source)
        finally:  # also when the consumer stops early (Ctrl-C): photos not started yet are not read
            pool.shutdown(wait=True, cancel_futures=True)
            if arrivals is not None:
                arrivals.close()  # not joined: its thread may be blocked reading stdin, and is a daemon

    # -- videos and live inputs -------------------------------------------------------------------------

    def _videos(self, items: Iterator[SourceItem]) -> Iterator[Event]:
        for item in items:
            dropped = 0
            if item.error is not None:
                yield _error(item.source, item.error)
            elif item.live is not None:
                dropped = yield from self._live(item)
            else:
                yield from self._video_file(item)
            yield SourceEnd(item.source, dropped_frames=dropped)

    def _video_file(self, item: SourceItem) -> Iterator[Event]:
        """A video file's frames, then an error record if it broke off (its SourceEnd: :meth:`_videos`)."""
        try:
            reader = VideoReader(item.path)  # type: ignore[arg-type] - an item without error has a path
        except InputError as exc:
            yield _error(item.source, str(exc))
            return
        with reader:
            info = reader.info
            stream = StreamInfo(info.width, info.height, info.nominal_fps, info.duration_hint_s)
            log.debug("%s: %dx%d, %s fps, ~%s frames, rotation %d", item.source, info.width, info.height,
                      info.nominal_fps, info.frame_count_hint, info.rotation)
            frames = prefetched(reader.frames(self.sampling, all_frames=self.all_frames), PREFETCH_FRAMES)
            try:
                for f in frames:
                    yield Frame(item.source, f.image, f.index, f.time_s, analyse=f.sampled, stream=stream)
            finally:
                frames.close()  # stops the decoding thread before the reader is released
            if reader.failed_frames:
                log.warning("%s: %d frame(s) could not be decoded and were skipped", item.source,
                            reader.failed_frames)
            if reader.decoded_frames == 0:
                yield _error(item.source, "no frame could be decoded: a zero-length or corrupt video")
            elif reader.ended_early:
                announced = info.duration_hint_s or 0.0
                yield _error(item.source, f"decoding stopped at {reader.last_time_s:.1f} s of the {announced:.1f} s "
                                          "the file announces: truncated or corrupt (the rows before this one are "
                                          "valid)")

    def _live(self, item: SourceItem) -> Generator[Event, None, int]:
        """A live input's frames, then an error record if it stalled; returns the frames it dropped."""
        options = self.live
        timeout = options.timeout_s if options.timeout_s is not None else DEFAULT_STREAM_TIMEOUT_S
        dropped = 0
        try:
            reader = LiveReader(item.live, timeout_s=timeout, reconnect=options.reconnect)
        except InputError as exc:
            yield _error(item.source, str(exc))
            return 0
        with reader:
            info = reader.info
            stream = StreamInfo(info.width, info.height, info.nominal_fps, None, live=True)
            try:
                for f in reader.frames(self.sampling, duration_s=options.duration_s):
                    yield Frame(item.source, f.image, f.index, f.time_s, stream=stream)
            except InputError as exc:
                yield _error(item.source, str(exc))
            finally:
                dropped = reader.dropped_frames
                if dropped:
                    log.warning("%s: %d sampled frame(s) dropped to keep up with real time", item.source, dropped)
        return dropped


def _error(source: str, reason: str) -> FrameError:
    log.warning("%s: %s", source, reason)
    return FrameError(source, reason)


def _photo_event(item: SourceItem, future: Future[np.ndarray] | None) -> Frame | FrameError:
    if future is None:
        return _error(item.source, item.error or "cannot open")
    try:
        return Frame(item.source, future.result())
    except InputError as exc:
        return _error(item.source, str(exc))
    except Exception as exc:  # noqa: BLE001 - one odd file must not end the run
        return _error(item.source, f"{type(exc).__name__}: {exc}")


T = TypeVar("T")


class BackgroundReader(Generic[T]):
    """An iterator run in a daemon thread, up to ``maxsize`` items ahead of the consumer.

    :meth:`get` takes the next item, waiting for it or (``wait=False``) only if it has already arrived; it
    returns None at the end (then :attr:`ended` is set) or when no item is ready, and raises what the iterator
    raised. The iterator must not yield None. :meth:`close` stops the thread at its next item; with ``join``,
    it waits for that (the caller may then release what the iterator reads), without, it does not (a thread
    blocked reading stdin cannot be stopped, and being a daemon it does not keep the process alive).
    """

    def __init__(self, source: Iterator[T], maxsize: int, name: str) -> None:
        self.ended = False
        self._items: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=maxsize)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(source,), name=name, daemon=True)
        self._thread.start()

    def _put(self, kind: str, value: object) -> bool:
        while not self._stop.is_set():
            try:
                self._items.put((kind, value), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, source: Iterator[T]) -> None:
        try:
            for item in source:
                if not self._put("item", item):
                    return
            self._put("end", None)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            self._put("error", exc)

    def get(self, *, wait: bool = True) -> T | None:
        if self.ended:
            return None
        try:
            kind, value = self._items.get(block=wait)
        except queue.Empty:
            return None
        if kind == "item":
            return value  # type: ignore[return-value]
        self.ended = True
        if kind == "error":
            raise value  # type: ignore[misc]
        return None

    def close(self, *, join: bool = False) -> None:
        self._stop.set()
        if join:
            self._thread.join()


def prefetched(source: Iterator[T], maxsize: int) -> Iterator[T]:
    """Run ``source`` in a background thread, ``maxsize`` items ahead (decoding overlaps analysis).

    OpenCV releases the GIL while it decodes. Closing the returned generator
    stops the thread before it returns, so the caller may release the decoder.
    """
    reader = BackgroundReader(source, maxsize, "fer-decode")
    try:
        while (item := reader.get()) is not None:
            yield item
    finally:
        reader.close(join=True)

"""Where the outcomes of a run go: rows, progress, charts and track summaries (annotation: :mod:`fer_batch.outputs.annotate`).

Every sink has the same small interface (:class:`Sink`): it receives each
record with the frame it was computed on, optionally the frames passed along
between sampled ones, the end of each input, and is closed once, whatever
ended the run. A sink that cannot write an output besides the rows logs why
and counts it in :attr:`Sink.failures`; the run then exits with code 1.

Per-video file names: with one input video, ``--plot-path``/``--annotate``
name the file itself. With several, each video's name is added before the
extension (``results.clip.png``); the video's name without extension when all
of them differ, its whole path (slashes turned into ``_``) otherwise, so
``a/x.mp4`` and ``b/x.mp4`` never overwrite each other.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from fer_batch.errors import FerBatchError, UsageError
from fer_batch.inputs.sources import file_slug
from fer_batch.outputs.summary import (
    TrackSummary,
    VideoTracks,
    check_summary_path,
    format_table,
    summarize,
    write_summary,
)
from fer_batch.outputs.writers import (
    BINARY_FORMATS,
    OutputFormat,
    ResultWriter,
    check_format,
    format_for_path,
    get_writer,
)
from fer_batch.records import FrameResult

if TYPE_CHECKING:
    from fer_batch.inputs.frames import Frame, SourceEnd

log = logging.getLogger(__name__)

PLOT_SUFFIX = ".png"


class Sink:
    """Receives a run's outcomes in order; :meth:`close` is called once at the end, also after Ctrl-C."""

    failures: int = 0  # outputs this sink could not write
    # Whether a resumed run first gives it the records its output already holds (fer_batch.outputs.resume.resume_run):
    # for sinks that summarise whole inputs, not for those that wrote their outputs as each input ended.
    replay: bool = False

    def receive(self, result: FrameResult, frame: Frame | None) -> None:
        """One record (a photo, a sampled video frame, or an error), with its frame when it was read."""

    def pass_frame(self, frame: Frame) -> None:
        """A video frame between sampled ones (only when the source passes every frame along)."""

    def end_source(self, end: SourceEnd) -> None:
        """One input is finished."""

    def close(self) -> None:
        """The run is over; write what is left (also after Ctrl-C: the part that was done)."""

    def _attempt(self, what: str, make: Callable[[], Path]) -> None:
        """Write one output; a failure is logged and counted, and the run goes on."""
        try:
            path = make()
        except (FerBatchError, OSError, ValueError) as exc:
            log.error("could not write the %s: %s", what, exc)
            self.failures += 1
            return
        log.info("wrote %s", path)


class RecordSink(Sink):
    """Rows through a :class:`~fer_batch.outputs.writers.ResultWriter`, written and flushed as they arrive."""

    def __init__(self, writer: ResultWriter, stream: IO[Any] | None = None) -> None:
        self.writer = writer
        self._stream = stream  # closed with the sink when it is not stdout

    @classmethod
    def to_path(cls, out: str | Path, class_names: Sequence[str], *, fmt: str | OutputFormat | None = None,
                video: bool = False, append: bool = False) -> RecordSink:
        """A sink writing to the file ``out`` (``-``: stdout) in ``fmt`` (default: from the extension).

        ``append``: continue an output that :func:`fer_batch.outputs.resume.resume_output` has prepared.
        """
        output_format = format_for_path(out, fmt)
        check_format(out, output_format)
        if str(out) == "-":
            return cls(get_writer(output_format, sys.stdout, class_names, video=video))
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        stream: IO[Any]
        if output_format in BINARY_FORMATS:
            stream = path.open("ab" if append else "wb")
        else:
            stream = path.open("a" if append else "w", newline="", encoding="utf-8")
        try:
            writer = get_writer(output_format, stream, class_names, video=video, append=append)
        except BaseException:
            stream.close()
            raise
        return cls(writer, stream)

    @property
    def count(self) -> int:
        """Records written by this run."""
        return self.writer.count

    def receive(self, result: FrameResult, frame: Frame | None) -> None:
        self.writer.write(result)

    def close(self) -> None:
        try:
            self.writer.close()
        finally:
            if self._stream is not None:
                self._stream.close()


class ProgressSink(Sink):
    """A progress bar on stderr: inputs done for photos, seconds of the current video for video."""

    def __init__(self, *, total: int | None = None, video: bool = False, enabled: bool = True) -> None:
        from tqdm import tqdm  # noqa: PLC0415 - only runs that show progress need it

        self.video = video
        self.bar = tqdm(total=total, unit="s" if video else "img", disable=not enabled, file=sys.stderr,
                        dynamic_ncols=True)
        self._source: str | None = None

    def receive(self, result: FrameResult, frame: Frame | None) -> None:
        if not self.video:
            return
        if result.source != self._source:
            self._source = result.source
            total = result.extra.get("duration_s")
            self.bar.bar_format = ("{desc}{percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}]"
                                   if total else "{desc}{n:.1f} s [{elapsed}]")
            self.bar.set_description(Path(result.source).name, refresh=False)
            self.bar.reset(total=total)  # type: ignore[arg-type]
        if result.time_s is not None and result.time_s > self.bar.n:
            self.bar.update(result.time_s - self.bar.n)

    def end_source(self, end: SourceEnd) -> None:
        if not self.video:
            self.bar.update(1)
        elif self.bar.total and end.source == self._source:
            # The last sampled frame lies up to 1/fps before the end: a finished video fills its bar.
            self.bar.n = self.bar.total
            self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def video_names(sources: Sequence[str]) -> dict[str, str]:
    """A short, distinct file-name part per video: its name without extension, or its slugged path on a clash."""
    stems = [file_slug(Path(s).stem, "video") for s in sources]
    if len(set(stems)) == len(stems):
        return dict(zip(sources, stems))
    return {s: file_slug(s, "video") for s in sources}


class PerVideoPaths:
    """The file of one per-video output (chart, annotated copy) from the path the user gave.

    ``base`` is the file itself when there is one input video; with several (or inputs on stdin), each
    video's name goes before the extension. ``folder_suffix`` (charts): a ``base`` without that suffix is a
    folder, holding ``<video>.emotions<suffix>`` per video.
    """

    def __init__(self, base: Path, sources: Sequence[str] | None, folder_suffix: str | None = None) -> None:
        self.base = base
        self.single = sources is not None and len(sources) == 1
        self.folder = folder_suffix is not None and base.suffix.lower() != folder_suffix
        self.folder_suffix = folder_suffix or base.suffix
        self._names = video_names(sources) if sources is not None else {}

    def name(self, source: str) -> str:
        """The video's part of the file name (its whole path without extension when the inputs are not known
        in advance, so two inputs never share it)."""
        return self._names.get(source) or file_slug(str(Path(source).with_suffix("")), "video")

    def __call__(self, source: str) -> Path:
        if self.folder:
            return self.base / f"{self.name(source)}.emotions{self.folder_suffix}"
        if self.single:
            return self.base
        return self.base.with_name(f"{self.base.stem}.{self.name(source)}{self.base.suffix}")


def default_plot_path(out: str) -> Path:
    """Where ``--plot`` puts charts: ``results.png`` beside ``--out results.csv``; the current folder for stdout."""
    return Path(".") if out == "-" else Path(out).with_suffix(PLOT_SUFFIX)


class _PerVideoTracks(Sink):
    """Gathers each input's face tracks; :meth:`_video_done` runs when an input ends, or at close for the
    input that was cut short (its chart or summary covers the part that was done)."""

    def __init__(self, class_names: Sequence[str]) -> None:
        self.class_names = tuple(class_names)
        self._tracks: VideoTracks | None = None

    def receive(self, result: FrameResult, frame: Frame | None) -> None:
        if self._tracks is None:
            self._tracks = VideoTracks(result.source, self.class_names)
        self._tracks.add(result)

    def end_source(self, end: SourceEnd) -> None:
        self._finish()

    def close(self) -> None:
        self._finish()

    def _finish(self) -> None:
        tracks, self._tracks = self._tracks, None
        if tracks is not None and tracks.frames:  # an unreadable input: its error record says why
            self._video_done(tracks)

    def _video_done(self, tracks: VideoTracks) -> None:
        raise NotImplementedError


class ChartSink(_PerVideoTracks):
    """One emotion-over-time chart per video (see :func:`fer_batch.outputs.charts.plot_video`)."""

    def __init__(self, path: Path, class_names: Sequence[str], *, sources: Sequence[str] | None = None,
                 smooth_s: float = 0.0) -> None:
        if smooth_s < 0:
            raise UsageError("--smooth must be 0 (off) or more seconds")
        if path.suffix.lower() != PLOT_SUFFIX and path.exists() and not path.is_dir():
            raise UsageError(f"the chart path {path} must be a .png file or a folder")
        super().__init__(class_names)
        self.paths = PerVideoPaths(path, sources, folder_suffix=PLOT_SUFFIX)
        self.smooth_s = smooth_s

    def _video_done(self, tracks: VideoTracks) -> None:
        from fer_batch.outputs.charts import plot_video  # noqa: PLC0415 - imports matplotlib

        path = self.paths(tracks.source)
        self._attempt(f"chart of {tracks.source}", lambda: plot_video(tracks, path, smooth_s=self.smooth_s))


class TrackSummarySink(_PerVideoTracks):
    """Per-track summaries of every video, written to ``path`` (.csv or .json) when the run ends.

    A resumed run replays the rows already in its output into it, so the summary covers every video.
    """

    replay = True

    def __init__(self, path: Path, class_names: Sequence[str]) -> None:
        check_summary_path(path)
        super().__init__(class_names)
        self.path = path
        self.summaries: list[TrackSummary] = []

    def _video_done(self, tracks: VideoTracks) -> None:
        self.summaries.extend(summarize(tracks))

    def close(self) -> None:
        super().close()
        self._attempt(f"summary {self.path}", lambda: write_summary(self.path, self.summaries, self.class_names))

    def table(self) -> str:
        """The summaries as a short text table."""
        return format_table(self.summaries)

"""What ``fer-batch video`` makes besides the records: charts, annotated copies and the track summary.

:class:`VideoOutputs` runs a :class:`~fer_batch.video.VideoAnalyzer` over
source items and passes every record through unchanged, while it gathers each
video's face tracks. When a video ends it draws the video's chart and writes
its annotated copy; :meth:`VideoOutputs.finish` writes the summary of all
tracks. A run interrupted with Ctrl-C still gets the chart of the part of the
video that was done, and the summary.

File names: with one input video, ``--plot-path``/``--annotate`` name the file
itself. With several, each video's name is added before the extension
(``results.clip.png``); the video's name without extension when all of
them differ, its whole path (slashes turned into ``_``) otherwise, so ``a/x.mp4`` and
``b/x.mp4`` never overwrite each other.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fer_batch.errors import FerBatchError, UsageError
from fer_batch.records import FrameResult, Status
from fer_batch.sources import SourceItem, file_slug
from fer_batch.summary import TrackSummary, VideoTracks, check_summary_path, format_table, summarize, write_summary
from fer_batch.video import VideoAnalyzer

log = logging.getLogger(__name__)

ANNOTATE_SUFFIXES = (".mp4", ".m4v", ".mov")
PLOT_SUFFIX = ".png"


def _slug(source: str) -> str:
    return file_slug(source, "video")


def video_names(sources: Sequence[str]) -> dict[str, str]:
    """A short, distinct file-name part per video: its name without extension, or its slugged path on a clash."""
    stems = [_slug(Path(s).stem) for s in sources]
    if len(set(stems)) == len(stems):
        return dict(zip(sources, stems))
    return {s: _slug(s) for s in sources}


@dataclass
class VideoOutputs:
    """Per-video charts and annotated copies, and the summary of all tracks.

    ``plot``: a ``.png`` file, or a folder for one ``<video>.emotions.png`` per
    video; ``None`` for no chart. ``annotate``: an ``.mp4`` path or ``None``.
    ``sources``: every input's source string when known in advance (names the
    files); ``None`` when inputs arrive on stdin. Raises :class:`UsageError`
    for paths that cannot work, before any video is analysed.
    """

    plot: Path | None = None
    smooth_s: float = 0.0
    annotate: Path | None = None
    summary: Path | None = None
    sources: Sequence[str] | None = None
    class_names: tuple[str, ...] = ()  # the model's, set by :meth:`run`
    summaries: list[TrackSummary] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    failures: int = 0

    def __post_init__(self) -> None:
        if self.smooth_s < 0:
            raise UsageError("--smooth must be 0 (off) or more seconds")
        if self.summary is not None:
            check_summary_path(self.summary)
        if self.annotate is not None and self.annotate.suffix.lower() not in ANNOTATE_SUFFIXES:
            raise UsageError(f"--annotate must name an .mp4 file, not {self.annotate.name!r}")
        if self.plot is not None and self.plot.suffix.lower() != PLOT_SUFFIX and self.plot.exists() \
                and not self.plot.is_dir():
            raise UsageError(f"the chart path {self.plot} must be a .png file or a folder")
        self._names = video_names(self.sources) if self.sources is not None else {}

    @staticmethod
    def default_plot_path(out: str) -> Path:
        """Where ``--plot`` puts charts: ``results.png`` beside ``--out results.csv``; the current folder for stdout."""
        return Path(".") if out == "-" else Path(out).with_suffix(PLOT_SUFFIX)

    @property
    def _single(self) -> bool:
        return self.sources is not None and len(self.sources) == 1

    def _name(self, source: str) -> str:
        return self._names.get(source) or _slug(source)

    def plot_path(self, source: str) -> Path | None:
        """The chart file for one video (None when no chart was asked for)."""
        if self.plot is None:
            return None
        if self.plot.suffix.lower() != PLOT_SUFFIX:
            return self.plot / f"{self._name(source)}.emotions{PLOT_SUFFIX}"
        if self._single:
            return self.plot
        return self.plot.with_name(f"{self.plot.stem}.{self._name(source)}{PLOT_SUFFIX}")

    def annotate_path(self, source: str) -> Path | None:
        """The annotated copy of one video (None when none was asked for)."""
        if self.annotate is None:
            return None
        if self._single:
            return self.annotate
        return self.annotate.with_name(f"{self.annotate.stem}.{self._name(source)}{self.annotate.suffix}")

    def run(self, analyzer: VideoAnalyzer, items: Iterable[SourceItem]) -> Iterator[FrameResult]:
        """The analyzer's records for ``items``, unchanged; charts and copies are written as each video ends."""
        self.class_names = tuple(analyzer.class_names)
        for item in items:
            if item.path is None:
                yield from analyzer.analyze_items([item])
                continue
            tracks = VideoTracks(item.source, self.class_names)
            kept: list[FrameResult] | None = [] if self.annotate is not None else None
            complete = False
            try:
                for result in analyzer.analyze_video(item.path, item.source):
                    tracks.add(result)
                    if kept is not None and result.status is not Status.ERROR:
                        kept.append(result)
                    yield result
                complete = True
            finally:
                # Also on Ctrl-C: the chart and summary of the part that was done are still worth having.
                self._finish_video(item, tracks, kept if complete else None)

    def _finish_video(self, item: SourceItem, tracks: VideoTracks, kept: list[FrameResult] | None) -> None:
        if tracks.frames == 0:
            return  # unreadable: its error record says why
        self.summaries.extend(summarize(tracks))
        plot_path = self.plot_path(item.source)
        if plot_path is not None:
            self._attempt(f"chart of {item.source}", lambda: self._plot(tracks, plot_path))
        out = self.annotate_path(item.source)
        if out is not None and kept is not None and item.path is not None:
            if out.resolve() == item.path.resolve():
                log.error("%s: --annotate would overwrite the input video; skipped", item.source)
                self.failures += 1
                return
            self._attempt(f"annotated copy of {item.source}", lambda: self._annotate(item.path, out, kept))

    def _plot(self, tracks: VideoTracks, path: Path) -> Path:
        from fer_batch.charts import plot_video  # noqa: PLC0415 - imports matplotlib

        return plot_video(tracks, path, smooth_s=self.smooth_s)

    def _annotate(self, video: Path, out: Path, results: list[FrameResult]) -> Path:
        from fer_batch.annotate import write_annotated  # noqa: PLC0415

        return write_annotated(video, out, results, self.class_names)

    def _attempt(self, what: str, make) -> None:  # type: ignore[no-untyped-def]
        try:
            path = make()
        except (FerBatchError, OSError, ValueError) as exc:
            log.error("could not write the %s: %s", what, exc)
            self.failures += 1
            return
        self.written.append(path)
        log.info("wrote %s", path)

    def finish(self) -> str:
        """Write the summary file if asked for; returns the summary as a short text table."""
        if self.summary is not None:
            try:
                write_summary(self.summary, self.summaries, self.class_names)
                self.written.append(self.summary)
                log.info("wrote %s", self.summary)
            except OSError as exc:
                log.error("could not write the summary %s: %s", self.summary, exc)
                self.failures += 1
        return format_table(self.summaries)

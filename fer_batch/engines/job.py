"""The whole ``fer-batch images`` or ``video`` job as one library call: :class:`Job`.

::

    job = Job(["photos/"], AnalysisOptions(out="rows.csv", overwrite=True))
    summary = job.run()  # checks everything that needs no model, then loads the model and runs
    raise SystemExit(summary.exit_code)

A job checks every option that needs no model before the model loads (:meth:`Job.check`: a mistake is told at
once, not after the model's start-up), then runs here or on Ray, into one file or (Ray) a folder of part files,
fresh, resumed (``resume``) or replacing the output (``overwrite``), and ends with the lines the command prints
(through the ``fer_batch`` logger). The command line declares its options from the fields of
:class:`~fer_batch.engines.options.AnalysisOptions` and :class:`~fer_batch.engines.options.VideoOptions` and
calls :meth:`Job.run`; the
:class:`~fer_batch.engines.run.RunSummary` it returns gives the command's exit code.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fer_batch.analysis.classify import runs_float32
from fer_batch.analysis.detect import DetectorName
from fer_batch.analysis.pipeline import Analyzer
from fer_batch.analysis.video import VideoAnalyzer
from fer_batch.engines.options import AnalysisOptions, ImageOptions, VideoOptions
from fer_batch.engines.ray_engine import Engine, RayConfig, part_count, ray_outcomes, require_ray, write_parts
from fer_batch.engines.run import RunSummary, run
from fer_batch.errors import UsageError
from fer_batch.inputs.frames import FrameSource, LiveOptions
from fer_batch.inputs.video import Sampling
from fer_batch.model_file import read_info
from fer_batch.models import resolve_model, shipped_models
from fer_batch.outputs.annotate import AnnotateSink, PhotoAnnotateSink, ShowSink
from fer_batch.outputs.resume import ResumePoint, check_output, resume_run
from fer_batch.outputs.sinks import ChartSink, ProgressSink, RecordSink, Sink, TrackSummarySink, default_plot_path
from fer_batch.outputs.writers import BINARY_FORMATS, OutputFormat, check_format, format_for_path
from fer_batch.records import Status
from fer_batch.runtime import load_backend

log = logging.getLogger(__name__)

PART_SUFFIXES = (".parquet", ".csv", ".json", ".jsonl")  # what part files are called (.json: by older runs)


@dataclass
class _Plan:
    """What :meth:`Job.check` found: everything the run needs besides the model."""

    source: FrameSource
    model_path: Path
    class_names: tuple[str, ...]
    output_format: OutputFormat
    sinks: list[Sink] = field(default_factory=list)
    parts: Path | None = None  # --out DIR/: the Ray tasks' part files go there


class Job:
    """One photo job (``video`` None) or video job: its inputs, its options; checked, then run.

    ``inputs`` as the command takes them: files, folders, ``-`` (paths on stdin); for video also stream URLs and
    cameras (``camera:0``). ``images``: the options only a photo job has (``--annotate DIR``).
    """

    def __init__(self, inputs: Iterable[str | Path], options: AnalysisOptions | None = None,
                 video: VideoOptions | None = None, *, images: ImageOptions | None = None) -> None:
        if video is not None and images is not None:
            raise TypeError("a job is a photo job (images) or a video job (video), not both")
        self.inputs = [str(i) for i in inputs]
        self.options = options or AnalysisOptions()
        self.video = video
        self.images = images or ImageOptions()
        self._plan: _Plan | None = None

    def check(self) -> None:
        """Check everything that needs no model (inputs, options, outputs); load nothing, write nothing.

        Raises a :class:`~fer_batch.errors.FerBatchError` (its ``exit_code`` the command's) for the first
        mistake. :meth:`run` calls it first; calling it before lets a caller tell mistakes apart from the run.
        """
        self._prepared()

    def run(self) -> RunSummary:
        """Check, load the model, run, and say how it went; the summary's ``exit_code`` is the command's.

        Raises :class:`~fer_batch.errors.FerBatchError` for a mistake found before the run (nothing written)
        and for a run that failed as a whole (a Ray job); a bad input is a row, not an exception.
        """
        options, video = self.options, self.video is not None
        try:  # everything that needs no model is checked before the model (or TensorFlow) loads
            plan = self._prepared()
            if plan.parts is not None:
                return self._run_parts(plan, plan.parts)
            analysis, events, point, rows = self._started(plan)
        except OSError as exc:
            raise UsageError(f"cannot write {options.out}: {exc.strerror or exc}") from None
        except KeyboardInterrupt:  # while the model loads: nothing was written yet
            log.warning("interrupted before the run started; no output was written")
            raise
        source = plan.source
        total = source.remaining if not video else None
        progress = ProgressSink(total=total, video=video, enabled=not options.quiet and sys.stderr.isatty())
        summary = run(events, analysis, [rows, progress, *plan.sinks])
        if summary.broken_pipe:
            return summary  # nobody reads any more: no summary line either
        log.info("%s%s", summary.describe(video=video), "" if options.out == "-" else f"; results in {options.out}")
        self._hint_no_faces(summary)
        if summary.interrupted:
            again = ("" if options.out == "-" else "; run the same command with --overwrite to redo it"
                     if plan.output_format in BINARY_FORMATS else "; the same command with --resume finishes it")
            log.warning("interrupted: the output holds the %d %s finished so far%s", point.kept + rows.count,
                        "frame(s)" if video else "input(s)", again)
        tables = [sink.table() for sink in plan.sinks if isinstance(sink, TrackSummarySink)]
        if tables and not options.quiet:  # the summaries were asked for; otherwise one log line ends a run
            print("\n".join(tables), file=sys.stderr, flush=True)
        return summary

    def _prepared(self) -> _Plan:
        if self._plan is None:
            try:
                self._plan = self._checked()
            except OSError as exc:
                raise UsageError(f"cannot write {self.options.out}: {exc.strerror or exc}") from None
        return self._plan

    def _source(self) -> FrameSource:
        options, video = self.options, self.video
        if video is None:
            return FrameSource(self.inputs, workers=options.workers)
        return FrameSource(self.inputs, video=True, sampling=Sampling.from_options(video.fps, video.every),
                           all_frames=video.annotate is not None or video.show, workers=options.workers,
                           live=LiveOptions(video.stream_timeout, video.reconnect, video.duration))

    def _checked(self) -> _Plan:
        options, on_ray = self.options, self.options.engine is Engine.RAY
        source = self._source()
        if self.video is not None:
            self._warn_video_options(self.video, source)
        if on_ray:
            _check_ray_options(options, source)
            if self.images.annotate is not None:  # as --save-crops: the decoded photos stay on the workers
                raise UsageError("--annotate draws on the decoded photos, which stay on the Ray workers: use it "
                                 "with --engine local")
        elif options.ray_address is not None:
            log.warning("--ray-address does nothing without --engine ray; ignored")
        if _is_folder(options.out):
            if not on_ray:
                raise UsageError(f"--out {options.out} is a folder: a folder of part files needs --engine ray; "
                                 "name a file for a local run")
            return self._checked_parts(source)
        output_format = format_for_path(options.out, options.fmt)
        check_format(options.out, output_format)
        if options.resume and output_format in BINARY_FORMATS:
            raise UsageError(f"--resume does not work with {output_format.value} output (a Parquet file cannot "
                             "be appended to): use CSV or JSON Lines to resume, or --overwrite to start again")
        check_output(options.out, resume=options.resume, overwrite=options.overwrite)
        _check_writable(options.out)
        model_path, class_names = self._model()
        sinks = self._sinks(source, class_names)
        if on_ray and any(isinstance(sink, AnnotateSink | PhotoAnnotateSink | ShowSink) for sink in sinks):
            raise UsageError("--annotate and --show draw on the decoded frames, which stay on the Ray workers: use "
                             "them with --engine local")
        return _Plan(source, model_path, class_names, output_format, sinks)

    def _checked_parts(self, source: FrameSource) -> _Plan:
        """``--engine ray --out DIR/``: the Ray tasks write part files into DIR, one row per face (the CSV columns)."""
        options = self.options
        folder = Path(options.out)
        fmt = options.fmt or OutputFormat.PARQUET
        if fmt is OutputFormat.JSON:
            fmt = OutputFormat.JSONL  # parts of JSON are JSON Lines (a row object per line)
        check_format(str(folder / f"part.{fmt.value}"), fmt)
        if options.resume:
            raise UsageError("--resume does not apply to a folder of part files: write one file (--out FILE.csv) "
                             "to resume, or --overwrite to start again")
        stale_parts(folder, source, overwrite=options.overwrite)
        model_path, class_names = self._model()
        if self._sinks(source, class_names):
            raise UsageError("--plot, --plot-path, --summary, --annotate and --show need the rows in one place: "
                             "use --out FILE with --engine ray")
        return _Plan(source, model_path, class_names, fmt, parts=folder)

    def _model(self) -> tuple[Path, tuple[str, ...]]:
        """The model file and its class names, from its metadata alone (no TensorFlow): the output's columns."""
        options = self.options
        model_path = resolve_model(options.model)
        if options.detector is DetectorName.HAAR and options.threshold is not None:
            log.warning("--threshold does nothing with --detector haar (the cascade gives no confidence); ignored")
        return model_path, tuple(read_info(model_path).class_names)

    def _warn_video_options(self, video: VideoOptions, source: FrameSource) -> None:
        if video.smooth > 0 and self._chart() is None:
            log.warning("--smooth applies to charts only; without --plot or --plot-path it does nothing")
        if source.items is not None and not any(item.live for item in source.items):
            ignored = [f"--{name.replace('_', '-')}" for name, unset in (
                ("duration", video.duration is None), ("stream_timeout", video.stream_timeout is None),
                ("reconnect", video.reconnect == 0)) if not unset]
            if ignored:
                log.warning("%s only for stream URLs and cameras; ignored for video files", ", ".join(ignored))

    def _chart(self) -> Path | None:
        video = self.video
        if video is None:
            return None
        return video.plot_path if video.plot_path is not None else \
            default_plot_path(self.options.out) if video.plot else None

    def _sinks(self, source: FrameSource, class_names: tuple[str, ...]) -> list[Sink]:
        """The sinks besides the rows and the progress bar; they check their paths when built, and open nothing
        yet."""
        video = self.video
        if video is None:
            return self._photo_sinks(class_names)
        names = [item.source for item in source.items] if source.items is not None else None
        sinks: list[Sink] = []
        chart = self._chart()
        if chart is not None:
            sinks.append(ChartSink(chart, class_names, sources=names, smooth_s=video.smooth))
        if video.summary_path is not None:
            sinks.append(TrackSummarySink(video.summary_path, class_names))
        if video.annotate is not None:
            sinks.append(AnnotateSink(video.annotate, class_names, sources=names))
        if video.show:
            sinks.append(ShowSink(class_names))
        return sinks

    def _photo_sinks(self, class_names: tuple[str, ...]) -> list[Sink]:
        images = self.images
        if images.annotate is None:
            if images.annotate_faces_only:
                log.warning("--annotate-faces-only does nothing without --annotate; ignored")
            return []
        folder = images.annotate.resolve()
        inside = [name for name in self.inputs if Path(name).is_dir() and folder.is_relative_to(Path(name).resolve())]
        if inside:  # not refused: the copies are this run's output; a later run of that folder would read them
            log.warning("--annotate %s is inside the input folder %s: a later run on that folder would analyse the "
                        "annotated copies too", images.annotate, inside[0])
        return [PhotoAnnotateSink(images.annotate, class_names, faces_only=images.annotate_faces_only)]

    def _analyzer(self, model_path: Path) -> Analyzer:
        """The pipeline; TensorFlow is loaded only where the run needs it.

        The int8 networks run on LiteRT and YuNet on OpenCV, so a default run never imports TensorFlow; MTCNN
        and ``--precision float32`` (or a model without an int8 network) do.
        """
        options = self.options
        if options.detector is DetectorName.MTCNN or runs_float32(model_path, options.precision):
            load_backend()
        return Analyzer(model_path, options.detector.value, min_face_size=options.min_face_size,
                        threshold=options.threshold, batch_size=options.batch_size, save_crops=options.save_crops,
                        precision=options.precision.value, workers=options.workers)

    def _started(self, plan: _Plan) -> tuple[Analyzer | VideoAnalyzer | None, Any, ResumePoint, RecordSink]:
        """The model loaded, a resumed output cut, the Ray job planned, the rows' writer open."""
        options, video, source = self.options, self.video is not None, plan.source
        on_ray = options.engine is Engine.RAY
        analysis: Analyzer | VideoAnalyzer | None = None
        if not on_ray and source.openable:
            analysis = self._analyzer(plan.model_path)
            if video:
                analysis = VideoAnalyzer(analysis, source.sampling)
        point = ResumePoint()
        if options.resume:  # once the model has loaded: cuts the output after its last complete input
            point = resume_run(options.out, plan.output_format, plan.class_names, source, plan.sinks, video=video)
            if point.redone:  # its last input may have been cut off: say so, so that the counts add up
                log.info("resuming %s: it holds %d input(s); the first %d are skipped, the last is redone (it may "
                         "have been cut off)", options.out, point.sources + 1, point.sources)
        events: Any = source
        if on_ray:  # connects to the cluster and plans the job here
            events = ray_outcomes(source.pending(), self._ray_config(plan), video=video)
        if video and (analysis is not None or on_ray):
            log.info("sampling: %s", source.sampling.describe())
        rows = RecordSink.to_path(options.out, plan.class_names, fmt=plan.output_format, video=video,
                                  append=point.append)
        return analysis, events, point, rows

    def _run_parts(self, plan: _Plan, folder: Path) -> RunSummary:
        video = self.video is not None
        clear_parts_folder(folder, plan.source, overwrite=self.options.overwrite)
        summary = write_parts(plan.source.pending(), self._ray_config(plan), plan.class_names, folder,
                              plan.output_format, video=video)
        parts = part_count(folder) if folder.is_dir() else 0
        log.info("%s; %d part file(s) in %s", summary.describe(video=video), parts, folder)
        if summary.interrupted:
            log.warning("interrupted: the part files written so far are in %s", folder)
        return summary

    def _ray_config(self, plan: _Plan) -> RayConfig:
        options = self.options
        # A shipped model by name: each worker finds it in its own install. Any other model by its full path,
        # which every machine of the cluster must be able to read.
        model = options.model if options.model in shipped_models() else str(plan.model_path.resolve())
        return RayConfig(model=model, detector=options.detector.value, min_face_size=options.min_face_size,
                         threshold=options.threshold, batch_size=options.batch_size,
                         precision=options.precision.value, workers=options.workers, address=options.ray_address,
                         sampling=plan.source.sampling)

    def _hint_no_faces(self, summary: RunSummary) -> None:
        """Why a crowd seen from above gave nothing: the likeliest cause is a setting the user can change.

        For video, each video in which no analysed frame had a face is named; for photos (where a photo without
        a face is common), only a run in which no photo had one gets the hint.
        """
        video = self.video is not None
        if summary.interrupted or not summary.faceless or (not video and summary.counts[Status.OK]):
            return
        where = "any image" if not video else (
            "any analysed frame" if summary.counts[Status.OK] == 0 else
            f"{summary.faceless} of {summary.inputs} input(s) ({', '.join(summary.faceless_examples)}"
            f"{', ...' if summary.faceless > len(summary.faceless_examples) else ''})")
        log.info("no face found in %s: faces smaller than --min-face-size (%d px) or scored below --threshold are "
                 "not reported (or there are none); try a smaller --min-face-size or a lower --threshold", where,
                 self.options.min_face_size)


def _check_writable(out: str) -> None:
    """Refuse an output whose folder cannot be made or written, before the model loads."""
    if out == "-":
        return
    folder = Path(out).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot write {out}: cannot make its folder {folder}: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK):
        raise UsageError(f"cannot write {out}: the folder {folder} is not writable")


def _is_folder(out: str) -> bool:
    """``--out DIR/`` (a trailing slash) or an existing folder: the Ray tasks write their part files there."""
    return out != "-" and (out.endswith(("/", os.sep)) or Path(out).is_dir())


def _check_ray_options(options: AnalysisOptions, source: FrameSource) -> None:
    """``--engine ray``: Ray must be installed (else exit 2 with the command that adds it), and the options
    must be ones a Ray job can honour."""
    require_ray()
    if options.save_crops is not None:
        raise UsageError("--save-crops writes on the machine that runs the analysis: use it with --engine local")
    if source.items is not None and any(item.live is not None for item in source.items):
        raise UsageError("--engine ray runs video files (one per task), not streams or cameras: use --engine local")


def stale_parts(folder: Path, source: FrameSource, *, overwrite: bool) -> list[Path]:
    """The part files of an earlier run in ``--out DIR/``, to be replaced; refuses a folder that holds more.

    Only part files (by suffix) are ever removed, and only with ``--overwrite``: a folder that holds anything
    else, or any of the inputs, is refused, so no user file can be lost.
    """
    if not folder.is_dir():
        return []
    root = folder.resolve()
    inside = [item.source for item in source.items or () if item.path is not None
              and root in item.path.resolve().parents]
    if inside:
        raise UsageError(f"--out {folder} holds inputs of this run ({inside[0]}...): choose another folder")
    entries = [p for p in folder.iterdir() if not p.name.startswith((".", "_"))]
    others = [p for p in entries if not (p.is_file() and p.suffix.lower() in PART_SUFFIXES)]
    if others:
        raise UsageError(f"--out {folder} holds other files ({others[0].name}...): a folder of part files must be "
                         "empty or hold only an earlier run's parts")
    if entries and not overwrite:
        raise UsageError(f"{folder} already holds part files: pass --overwrite to replace them")
    return entries


def clear_parts_folder(folder: Path, source: FrameSource, *, overwrite: bool) -> None:
    """Make sure ``--out DIR/`` holds nothing but the part files of an earlier run (removed with --overwrite)."""
    for part in stale_parts(folder, source, overwrite=overwrite):
        part.unlink()


"""``fer-batch images`` and ``fer-batch video``: options declared once, checked before the model loads, one run.

Each command builds a :class:`~fer_batch.inputs.frames.FrameSource`, the sinks its options ask for, and calls
:func:`fer_batch.engines.run.run` (or the Ray engine); the run's :class:`~fer_batch.engines.run.RunSummary` gives the exit code.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from fer_batch.analysis.classify import DEFAULT_BATCH_SIZE, Precision
from fer_batch.analysis.detect import DEFAULT_DETECTOR, DEFAULT_MIN_FACE_SIZE, DEFAULT_THRESHOLDS, DetectorName
from fer_batch.cli.common import (
    ModelOption,
    PrecisionOption,
    app,
    choice_of,
    discard_stdout,
    fail,
    given,
    load_backend,
    log,
    model_class_names,
    runs_float32,
    setup_logging,
    show_progress,
)
from fer_batch.engines.ray_engine import Engine
from fer_batch.errors import ExitCode, FerBatchError, UsageError
from fer_batch.models import DEFAULT_MODEL, resolve_model, shipped_models
from fer_batch.outputs.writers import OutputFormat
from fer_batch.records import Status

if TYPE_CHECKING:
    from fer_batch.analysis.pipeline import Analyzer
    from fer_batch.engines.ray_engine import RayConfig
    from fer_batch.engines.run import RunSummary
    from fer_batch.inputs.frames import FrameSource
    from fer_batch.outputs.sinks import Sink


@dataclass(frozen=True)
class AnalysisOptions:
    """The options that ``images`` and ``video`` share, declared once (see :func:`_analysis_command`)."""

    out: Annotated[str, typer.Option("--out", "-o", metavar="FILE", help=(
        "Output file, or - for stdout; with --engine ray also a folder (DIR/) for Ray's part files."))] = "-"
    fmt: Annotated[OutputFormat | None, typer.Option(
        "--format", "-f", **choice_of(OutputFormat),
        help="Output format; default: from --out's extension, csv for stdout, parquet for a folder of parts.")] = None
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue an interrupted run: skip the inputs already complete in --out, append the "
                         "rest.")] = False
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an existing --out file (without it, an existing file is refused).")] = False
    model: ModelOption = DEFAULT_MODEL
    detector: Annotated[DetectorName, typer.Option("--detector", "-d", **choice_of(DetectorName), help=(
        "Face detector: yunet (shipped in the package, fast, the default), mtcnn (needs TensorFlow), haar."))
    ] = DEFAULT_DETECTOR
    min_face_size: Annotated[int, typer.Option(min=8, metavar="PIXELS", help="Smallest face to detect, in pixels.")
                             ] = DEFAULT_MIN_FACE_SIZE
    threshold: Annotated[float | None, typer.Option(min=0.0, max=1.0, show_default=False, metavar="SCORE", help=(
        "Minimum face confidence (det_score); default: "
        + ", ".join(f"{d.value} {v}" for d, v in DEFAULT_THRESHOLDS.items()) + ". Not used by haar."))] = None
    batch_size: Annotated[int, typer.Option(min=1, metavar="N", help="Faces per classifier call.")
                          ] = DEFAULT_BATCH_SIZE
    precision: PrecisionOption = Precision.AUTO
    workers: Annotated[int | None, typer.Option(min=1, show_default=False, metavar="N", help=(
        "Threads for decoding, detection and classification (default: the CPUs this process may use); with "
        "--engine ray, actors per stage (default: half the cluster's CPUs)."))] = None
    engine: Annotated[Engine, typer.Option(**choice_of(Engine), help=(
        "Where the job runs: this process, or a Ray cluster (needs the ray extra: pip install "
        "\"fer-batch[ray]\")."))] = Engine.LOCAL
    ray_address: Annotated[str | None, typer.Option(show_default=False, metavar="HOST:PORT", help=(
        "With --engine ray: the cluster to run on (HEAD:6379, or auto); default: a local cluster on this "
        "machine's CPUs."))] = None
    save_crops: Annotated[Path | None, typer.Option(
        metavar="DIR", help="Write every face crop as a PNG into this folder.", file_okay=False)] = None
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="No progress bar, summary table or info messages.")] = False


def _analysis_command(command: Callable[..., None]) -> Callable[..., None]:
    """Give a command every :class:`AnalysisOptions` option; the command receives them as ``options``.

    The options are declared once, on the dataclass; Typer reads the combined signature.
    """
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "options"]
    hints = inspect.get_annotations(AnalysisOptions, eval_str=True)
    for f in fields(AnalysisOptions):  # mistakes here would only show as odd Typer behaviour: say them at import
        if f.default is dataclasses.MISSING:
            raise TypeError(f"AnalysisOptions.{f.name} needs a plain default: Typer takes it as the option's")
        if any(p.name == f.name for p in own):
            raise TypeError(f"{command.__name__}() declares {f.name!r}, which AnalysisOptions already declares")
    shared = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name])
              for f in fields(AnalysisOptions)]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        options = AnalysisOptions(**{f.name: kwargs.pop(f.name) for f in fields(AnalysisOptions)})
        command(options=options, **kwargs)

    # Arguments first, then the shared options, then the command's own options (all keyword-only: Typer names
    # every parameter when it calls the command).
    keyword = inspect.Parameter.KEYWORD_ONLY
    first = [p.replace(kind=keyword) for p in own if p.default is inspect.Parameter.empty]
    last = [p.replace(kind=keyword) for p in own if p.default is not inspect.Parameter.empty]
    parameters = [*first, *shared, *last]
    wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    return wrapper


def _analyzer(model_path: Path, options: AnalysisOptions) -> Analyzer:
    """The pipeline for ``images`` and ``video``; TensorFlow is loaded only where the run needs it.

    The int8 networks run on LiteRT and YuNet on OpenCV, so a default run never imports TensorFlow; MTCNN and
    ``--precision float32`` (or a model without an int8 network) do.
    """
    from fer_batch.analysis.pipeline import Analyzer  # noqa: PLC0415

    if options.detector is DetectorName.MTCNN or runs_float32(model_path, options.precision):
        load_backend()
    return Analyzer(model_path, options.detector.value, min_face_size=options.min_face_size,
                    threshold=options.threshold, batch_size=options.batch_size, save_crops=options.save_crops,
                    precision=options.precision.value, workers=options.workers)


def _warn_detector_options(ctx: typer.Context, detector: DetectorName) -> None:
    if detector is DetectorName.HAAR and given(ctx, "threshold"):
        log.warning("--threshold does nothing with --detector haar (the cascade gives no confidence); ignored")


def _run_command(ctx: typer.Context, options: AnalysisOptions, source: FrameSource, *, video: bool,
                 outputs: Callable[[tuple[str, ...]], list[Sink]] = lambda names: []) -> NoReturn:
    """Check every option that needs no model, load the model, run, and exit with the run's code.

    ``outputs(class_names)`` builds the sinks besides the rows and the progress bar (charts, summaries,
    annotated copies); they check their paths when built, before the model loads, and open nothing yet.
    With ``--engine ray`` the records come from the Ray job, in input order, and go to the same sinks.
    """
    from fer_batch.engines.run import run  # noqa: PLC0415
    from fer_batch.outputs.resume import ResumePoint, check_output, resume_run  # noqa: PLC0415
    from fer_batch.outputs.sinks import ProgressSink, RecordSink, TrackSummarySink  # noqa: PLC0415
    from fer_batch.outputs.writers import BINARY_FORMATS, check_format, format_for_path  # noqa: PLC0415

    noun = "frame(s)" if video else "input(s)"
    on_ray = options.engine is Engine.RAY
    try:  # everything that needs no model is checked before the model (or TensorFlow) loads
        if on_ray:
            _check_ray_options(options, source)
        elif options.ray_address is not None:
            log.warning("--ray-address does nothing without --engine ray; ignored")
        if _is_folder(options.out):
            if not on_ray:
                raise UsageError(f"--out {options.out} is a folder: a folder of part files needs --engine ray; "
                                 "name a file for a local run")
            _run_parts(ctx, options, source, video=video, outputs=outputs)
        output_format = format_for_path(options.out, options.fmt)
        check_format(options.out, output_format)
        if options.resume and output_format in BINARY_FORMATS:
            raise UsageError(f"--resume does not work with {output_format.value} output (a Parquet file cannot "
                             "be appended to): use CSV or JSON Lines to resume, or --overwrite to start again")
        check_output(options.out, resume=options.resume, overwrite=options.overwrite)
        _check_writable(options.out)
        model_path = resolve_model(options.model)
        _warn_detector_options(ctx, options.detector)
        class_names = model_class_names(model_path)
        sinks = outputs(class_names)
        if on_ray:
            _refuse_frame_sinks(sinks)
        analysis = _analyzer(model_path, options) if not on_ray and source.openable else None
        if analysis is not None and video:
            from fer_batch.analysis.video import VideoAnalyzer  # noqa: PLC0415

            analysis = VideoAnalyzer(analysis, source.sampling)  # type: ignore[assignment]
        point = ResumePoint()
        if options.resume:  # once the model has loaded: cuts the output after its last complete input
            point = resume_run(options.out, output_format, class_names, source, sinks, video=video)
            if point.redone:  # its last input may have been cut off: say so, so that the counts add up
                log.info("resuming %s: it holds %d input(s); the first %d are skipped, the last is redone (it may "
                         "have been cut off)", options.out, point.sources + 1, point.sources)
        events: Any = source
        if on_ray:
            from fer_batch.engines.ray_engine import ray_outcomes  # noqa: PLC0415

            events = ray_outcomes(source.pending(), _ray_config(options, model_path, source),
                                  video=video)  # connects to the cluster and plans the job here
        if video and (analysis is not None or on_ray):
            log.info("sampling: %s", source.sampling.describe())
        rows = RecordSink.to_path(options.out, class_names, fmt=output_format, video=video, append=point.append)
    except FerBatchError as exc:
        raise fail(exc) from None
    except OSError as exc:
        raise fail(UsageError(f"cannot write {options.out}: {exc.strerror or exc}")) from None
    except KeyboardInterrupt:  # while the model loads: nothing was written yet
        log.warning("interrupted before the run started; no output was written")
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    total = source.remaining if not video else None
    progress = ProgressSink(total=total, video=video, enabled=show_progress(options.quiet))
    try:
        summary = run(events, analysis, [rows, progress, *sinks])
    except FerBatchError as exc:  # the run itself failed (a Ray job); every output was closed first
        raise fail(exc) from None
    if summary.broken_pipe:
        discard_stdout()
        raise typer.Exit(int(summary.exit_code))  # nobody reads any more: no summary line either
    log.info("%s%s", summary.describe(video=video), "" if options.out == "-" else f"; results in {options.out}")
    _hint_no_faces(summary, options, video=video)
    if summary.interrupted:
        again = ("" if options.out == "-" else "; run the same command with --overwrite to redo it"
                 if output_format in BINARY_FORMATS else "; the same command with --resume finishes it")
        log.warning("interrupted: the output holds the %d %s finished so far%s", point.kept + rows.count, noun,
                    again)
    tables = [sink.table() for sink in sinks if isinstance(sink, TrackSummarySink)]
    if tables and not options.quiet:
        typer.echo("\n".join(tables), err=True)  # the summaries were asked for; otherwise one log line ends a run
    raise typer.Exit(int(summary.exit_code))


def _hint_no_faces(summary: RunSummary, options: AnalysisOptions, *, video: bool) -> None:
    """Why a crowd seen from above gave nothing: the likeliest cause is a setting the user can change.

    For video, each video in which no analysed frame had a face is named; for photos (where a photo without a
    face is common), only a run in which no photo had one gets the hint.
    """
    if summary.interrupted or not summary.faceless or (not video and summary.counts[Status.OK]):
        return
    where = "any image" if not video else (
        "any analysed frame" if summary.counts[Status.OK] == 0 else
        f"{summary.faceless} of {summary.inputs} input(s) ({', '.join(summary.faceless_examples)}"
        f"{', ...' if summary.faceless > len(summary.faceless_examples) else ''})")
    log.info("no face found in %s: faces smaller than --min-face-size (%d px) or scored below --threshold are not "
             "reported (or there are none); try a smaller --min-face-size or a lower --threshold", where,
             options.min_face_size)


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
    """``--out DIR/`` (a trailing slash) or an existing folder: Ray writes its part files there."""
    return out != "-" and (out.endswith(("/", os.sep)) or Path(out).is_dir())


def _check_ray_options(options: AnalysisOptions, source: FrameSource) -> None:
    """``--engine ray``: Ray must be installed (else exit 2 with the command that adds it), and the options
    must be ones a Ray job can honour."""
    from fer_batch.engines.ray_engine import require_ray  # noqa: PLC0415

    require_ray()
    if options.save_crops is not None:
        raise UsageError("--save-crops writes on the machine that runs the analysis: use it with --engine local")
    if source.items is not None and any(item.live is not None for item in source.items):
        raise UsageError("--engine ray runs video files (one per task), not streams or cameras: use --engine local")


def _refuse_frame_sinks(sinks: list[Sink]) -> None:
    from fer_batch.outputs.annotate import AnnotateSink, ShowSink  # noqa: PLC0415

    if any(isinstance(sink, AnnotateSink | ShowSink) for sink in sinks):
        raise UsageError("--annotate and --show draw on the decoded frames, which stay on the Ray workers: use "
                         "them with --engine local")


def _ray_config(options: AnalysisOptions, model_path: Path, source: FrameSource) -> RayConfig:
    from fer_batch.engines.ray_engine import RayConfig  # noqa: PLC0415

    # A shipped model by name: each worker finds it in its own install. Any other model by its full path,
    # which every machine of the cluster must be able to read.
    model = options.model if options.model in shipped_models() else str(model_path.resolve())
    return RayConfig(model=model, detector=options.detector.value, min_face_size=options.min_face_size,
                     threshold=options.threshold, batch_size=options.batch_size, precision=options.precision.value,
                     workers=options.workers, address=options.ray_address, sampling=source.sampling)


def _run_parts(ctx: typer.Context, options: AnalysisOptions, source: FrameSource, *, video: bool,
               outputs: Callable[[tuple[str, ...]], list[Sink]]) -> NoReturn:
    """``--engine ray --out DIR/``: Ray writes part files into DIR, one row per face (the CSV columns)."""
    from fer_batch.engines.ray_engine import part_count, write_parts  # noqa: PLC0415
    from fer_batch.outputs.writers import check_format  # noqa: PLC0415

    folder = Path(options.out)
    fmt = options.fmt or OutputFormat.PARQUET
    if fmt is OutputFormat.JSON:
        fmt = OutputFormat.JSONL  # Ray writes JSON as JSON Lines parts
    check_format(str(folder / f"part.{fmt.value}"), fmt)
    if options.resume:
        raise UsageError("--resume does not apply to a folder of part files: write one file (--out FILE.csv) "
                         "to resume, or --overwrite to start again")
    _clear_parts_folder(folder, source, overwrite=options.overwrite)
    model_path = resolve_model(options.model)
    _warn_detector_options(ctx, options.detector)
    class_names = model_class_names(model_path)
    if outputs(class_names):
        raise UsageError("--plot, --plot-path, --summary, --annotate and --show need the rows in one place: use "
                         "--out FILE with --engine ray")
    summary = write_parts(source.pending(), _ray_config(options, model_path, source), class_names, folder, fmt,
                          video=video)
    parts = part_count(folder) if folder.is_dir() else 0
    log.info("%s; %d part file(s) in %s", summary.describe(video=video), parts, folder)
    if summary.interrupted:
        log.warning("interrupted: the part files written so far are in %s", folder)
    raise typer.Exit(int(summary.exit_code))


PART_SUFFIXES = (".parquet", ".csv", ".json", ".jsonl")  # what Ray's part files are called


def _clear_parts_folder(folder: Path, source: FrameSource, *, overwrite: bool) -> None:
    """Make sure ``--out DIR/`` holds nothing but the part files of an earlier run (removed with --overwrite).

    Ray's own overwrite mode empties the whole folder, subfolders included; fer-batch never asks for it, and
    refuses a folder that holds anything else or any of the inputs, so no user file can be lost.
    """
    if not folder.is_dir():
        return
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
    for part in entries:
        part.unlink()


@app.command(short_help="Faces and their expressions in images: one row per face.")
@_analysis_command
def images(
    ctx: typer.Context,
    # The argument is described in the docstring: Typer's Arguments section adds the raw type (<list[str]>).
    inputs: Annotated[list[str], typer.Argument(metavar="INPUT", hidden=True)],
    options: AnalysisOptions,
) -> None:
    """Detect faces in images and classify their expressions: one row per face.

    INPUT: image files, folders (searched recursively) or - for paths on stdin, one per line.
    """
    setup_logging(options.quiet)
    from fer_batch.inputs.frames import FrameSource  # noqa: PLC0415

    _run_command(ctx, options, FrameSource(inputs, workers=options.workers), video=False)


@app.command(short_help="Faces, expressions and face tracks over time in videos, streams and cameras.")
@_analysis_command
def video(
    ctx: typer.Context,
    inputs: Annotated[list[str], typer.Argument(metavar="INPUT", hidden=True)],  # described in the docstring
    options: AnalysisOptions,
    fps: Annotated[float | None, typer.Option(metavar="FPS", show_default=False, help=(
        "Analyse at most this many frames per second of video (default: 5, unless --every is given)."))] = None,
    every: Annotated[int | None, typer.Option(min=1, metavar="N", show_default=False,
                                              help="Analyse every Nth frame (--every 1: all frames).")] = None,
    plot: Annotated[bool, typer.Option("--plot", help="Write an emotion-over-time PNG per video, beside --out "
                                                      "(current folder for stdout).")] = False,
    plot_path: Annotated[Path | None, typer.Option(metavar="PATH",
                                                   help="Chart file (.png) or folder; implies --plot.")] = None,
    smooth: Annotated[float, typer.Option(min=0.0, metavar="SECONDS", help=(
        "Smooth the chart lines over this many seconds (0: off); charts only, not the rows or --annotate."))] = 0.0,
    summary_path: Annotated[Path | None, typer.Option("--summary", metavar="FILE", help=(
        "Write per-track summaries here (.csv or .json) and print a short table of them."))] = None,
    annotate: Annotated[Path | None, typer.Option(metavar="FILE", dir_okay=False, help=(
        "Write a copy of the video with boxes, track IDs and expressions to this .mp4 (one per video)."))] = None,
    show: Annotated[bool, typer.Option("--show", help="Show the annotated frames in a window (needs a display "
                                                      "and OpenCV with window support); q stops.")] = False,
    duration: Annotated[float | None, typer.Option(min=0.0, show_default=False, metavar="SECONDS", help=(
        "Stop each stream or camera after this many seconds of stream time (default: until it ends)."))] = None,
    stream_timeout: Annotated[float | None, typer.Option(min=0.0, show_default=False, metavar="SECONDS", help=(
        "Seconds without a frame before a stream or camera counts as stalled: an error row (default: "
        "10).") )] = None,
    reconnect: Annotated[int, typer.Option(min=0, metavar="N",
                                           help="Times to reopen a stream that stalls or disconnects.")] = 0,
) -> None:
    """Faces and expressions over time in videos: one row per face per analysed frame, with a track ID.

    INPUT: video files, folders (searched recursively for video suffixes), stream URLs (rtsp://, http://,
    udp://...), cameras (camera:0) or - for paths on stdin.
    """
    setup_logging(options.quiet)
    from fer_batch.inputs.frames import FrameSource, LiveOptions  # noqa: PLC0415
    from fer_batch.inputs.video import Sampling  # noqa: PLC0415
    from fer_batch.outputs.annotate import AnnotateSink, ShowSink  # noqa: PLC0415
    from fer_batch.outputs.sinks import ChartSink, TrackSummarySink, default_plot_path  # noqa: PLC0415

    try:
        source = FrameSource(inputs, video=True, sampling=Sampling.from_options(fps, every),
                             all_frames=annotate is not None or show, workers=options.workers,
                             live=LiveOptions(stream_timeout, reconnect, duration))
    except FerBatchError as exc:
        raise fail(exc) from None
    names = [item.source for item in source.items] if source.items is not None else None
    chart = plot_path if plot_path is not None else default_plot_path(options.out) if plot else None
    if smooth > 0 and chart is None:
        log.warning("--smooth applies to charts only; without --plot or --plot-path it does nothing")
    if source.items is not None and not any(item.live for item in source.items):
        ignored = [f"--{name.replace('_', '-')}" for name in ("duration", "stream_timeout", "reconnect")
                   if given(ctx, name)]
        if ignored:
            log.warning("%s only for stream URLs and cameras; ignored for video files", ", ".join(ignored))

    def outputs(class_names: tuple[str, ...]) -> list[Sink]:
        sinks: list[Sink] = []
        if chart is not None:
            sinks.append(ChartSink(chart, class_names, sources=names, smooth_s=smooth))
        if summary_path is not None:
            sinks.append(TrackSummarySink(summary_path, class_names))
        if annotate is not None:
            sinks.append(AnnotateSink(annotate, class_names, sources=names))
        if show:
            sinks.append(ShowSink(class_names))
        return sinks

    _run_command(ctx, options, source, video=True, outputs=outputs)

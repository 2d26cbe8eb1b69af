"""The ``fer-batch`` command line: each command parses options and calls one library function.

This is the only module that imports Typer. Library exceptions become exit
codes here (see :class:`fer_batch.errors.ExitCode`); a run's exit code comes
from its :class:`fer_batch.run.RunSummary`.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from fer_batch import __version__
from fer_batch.classify import DEFAULT_BATCH_SIZE, Precision
from fer_batch.detect import DEFAULT_DETECTOR, DEFAULT_MIN_FACE_SIZE, DEFAULT_THRESHOLDS, DetectorName
from fer_batch.errors import ExitCode, FerBatchError, UsageError
from fer_batch.models import DEFAULT_MODEL, resolve_model, shipped_models
from fer_batch.ray_engine import Engine
from fer_batch.sources import IMAGE_SUFFIXES
from fer_batch.training.options import DefaultPrecision, Optimizer, Recipe, Schedule, TrainConfig, config_from_json
from fer_batch.writers import OutputFormat

if TYPE_CHECKING:
    from fer_batch.frames import FrameSource
    from fer_batch.pipeline import Analyzer
    from fer_batch.ray_engine import RayConfig
    from fer_batch.resume import ResumePoint
    from fer_batch.sinks import Sink

app = typer.Typer(
    name="fer-batch",
    help="Facial expression recognition for photo folders and video, in batches.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Click's plain help, not rich's panels: rich cuts option names to fit (`--no-class-wei…`) in terminals
    # and pipes of 80 columns, while Click wraps the descriptions and keeps every name whole.
    rich_markup_mode=None,
    context_settings={"max_content_width": 120},  # Click's default is 80 even in a wide terminal
)
log = logging.getLogger("fer_batch")

ModelOption = Annotated[str, typer.Option(
    "--model", "-m", help="accurate, fast, a .keras file or a training output folder.")]
PrecisionOption = Annotated[Precision, typer.Option(
    help="Network to run: auto (the model's own choice), float32, or int8 (several times faster on a CPU; "
         "made by fer-batch quantize).")]


@dataclass(frozen=True)
class AnalysisOptions:
    """The options that ``images`` and ``video`` share, declared once (see :func:`_analysis_command`)."""

    out: Annotated[str, typer.Option("--out", "-o", help=(
        "Output file, or - for stdout; with --engine ray also a folder (DIR/) for Ray's part files."))] = "-"
    fmt: Annotated[OutputFormat | None, typer.Option(
        "--format", "-f", help="Output format; default: from --out's extension, csv for stdout, parquet for a "
                               "folder of parts.")] = None
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue an interrupted run: skip the inputs already complete in --out, append the "
                         "rest.")] = False
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an existing --out file (without it, an existing file is refused).")] = False
    model: ModelOption = DEFAULT_MODEL
    detector: Annotated[DetectorName, typer.Option("--detector", "-d", help=(
        "Face detector: yunet (shipped in the package, fast, the default), mtcnn (needs TensorFlow), haar."))
    ] = DEFAULT_DETECTOR
    min_face_size: Annotated[int, typer.Option(min=8, help="Smallest face to detect, in pixels.")
                             ] = DEFAULT_MIN_FACE_SIZE
    threshold: Annotated[float | None, typer.Option(min=0.0, max=1.0, show_default=False, help=(
        "Minimum face confidence (det_score); default: "
        + ", ".join(f"{d.value} {v}" for d, v in DEFAULT_THRESHOLDS.items()) + ". Not used by haar."))] = None
    batch_size: Annotated[int, typer.Option(min=1, help="Faces per classifier call.")] = DEFAULT_BATCH_SIZE
    precision: PrecisionOption = Precision.AUTO
    workers: Annotated[int | None, typer.Option(min=1, show_default=False, help=(
        "Threads for decoding, detection and classification (default: the CPUs this process may use); with "
        "--engine ray, actors per stage (default: half the cluster's CPUs)."))] = None
    engine: Annotated[Engine, typer.Option(help=(
        "Where the job runs: this process, or a Ray cluster (needs the ray extra: pip install "
        "\"fer-batch[ray]\")."))] = Engine.LOCAL
    ray_address: Annotated[str | None, typer.Option(show_default=False, help=(
        "With --engine ray: the cluster to run on (HEAD:6379, or auto); default: a local cluster on this "
        "machine's CPUs."))] = None
    save_crops: Annotated[Path | None, typer.Option(
        help="Write every face crop as a PNG into this folder.", file_okay=False)] = None
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="No progress bar, summary table or info messages.")] = False


def _analysis_command(command: Callable[..., None]) -> Callable[..., None]:
    """Give a command every :class:`AnalysisOptions` option; the command receives them as ``options``.

    The options are declared once, on the dataclass; Typer reads the combined signature.
    """
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "options"]
    hints = inspect.get_annotations(AnalysisOptions, eval_str=True)
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


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"fer-batch {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Facial expression recognition for photo folders and video, in batches."""


def _setup_logging(quiet: bool, verbose: bool = False) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("fer-batch: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def _load_backend() -> None:
    """Import TensorFlow, with its start-up noise silenced, before the first output.

    Called once the options have been checked: a mistake that needs no model is
    reported at once, not after the seconds TensorFlow takes to load.
    """
    from fer_batch.runtime import import_backend_quietly  # noqa: PLC0415

    try:
        import_backend_quietly()
    except ImportError:
        pass  # an inference-only install: what needed TensorFlow says so, with the command that installs it


def _analyzer(model_path: Path, options: AnalysisOptions) -> Analyzer:
    """The pipeline for ``images`` and ``video``; TensorFlow is loaded only where the run needs it.

    The int8 networks run on LiteRT and YuNet on OpenCV, so a default run never imports TensorFlow; MTCNN and
    ``--precision float32`` (or a model without an int8 network) do.
    """
    from fer_batch.model_file import read_info  # noqa: PLC0415
    from fer_batch.pipeline import Analyzer  # noqa: PLC0415

    precision = options.precision
    chosen = read_info(model_path).precision if precision is Precision.AUTO else precision.value
    if options.detector is DetectorName.MTCNN or chosen != "int8":
        _load_backend()
    return Analyzer(model_path, options.detector.value, min_face_size=options.min_face_size,
                    threshold=options.threshold, batch_size=options.batch_size, save_crops=options.save_crops,
                    precision=precision.value, workers=options.workers)


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether the user set option ``name`` (on the command line or through the environment)."""
    source = ctx.get_parameter_source(name)  # by name: Typer's Click is private to it (typer._click)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _warn_detector_options(ctx: typer.Context, detector: DetectorName) -> None:
    if detector is DetectorName.HAAR and _given(ctx, "threshold"):
        log.warning("--threshold does nothing with --detector haar (the cascade gives no confidence); ignored")


def _model_class_names(model_path: Path) -> tuple[str, ...]:
    """The model's class names from its metadata alone (no TensorFlow): the output's columns."""
    from fer_batch.model_file import read_info  # noqa: PLC0415

    return tuple(read_info(model_path).class_names)


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush at exit cannot fail on the closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _fail(exc: FerBatchError) -> typer.Exit:
    typer.echo(f"fer-batch: error: {exc}", err=True)
    return typer.Exit(int(exc.exit_code))


def _show_progress(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


def _run_command(ctx: typer.Context, options: AnalysisOptions, source: FrameSource, *, video: bool,
                 outputs: Callable[[tuple[str, ...]], list[Sink]] = lambda names: []) -> NoReturn:
    """Check every option that needs no model, load the model, run, and exit with the run's code.

    ``outputs(class_names)`` builds the sinks besides the rows and the progress bar (charts, summaries,
    annotated copies); they check their paths when built, before the model loads, and open nothing yet.
    With ``--engine ray`` the records come from the Ray job, in input order, and go to the same sinks.
    """
    from fer_batch.resume import ResumePoint, check_output, resume_output  # noqa: PLC0415
    from fer_batch.run import run  # noqa: PLC0415
    from fer_batch.sinks import ProgressSink, RecordSink, TrackSummarySink  # noqa: PLC0415
    from fer_batch.writers import BINARY_FORMATS, check_format, format_for_path  # noqa: PLC0415

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
        model_path = resolve_model(options.model)
        _warn_detector_options(ctx, options.detector)
        class_names = _model_class_names(model_path)
        sinks = outputs(class_names)
        if on_ray:
            _refuse_frame_sinks(sinks)
        point = ResumePoint()
        if options.resume:  # cuts the output after its last complete input: from here on it is being resumed
            point = resume_output(options.out, output_format, class_names, video=video)
            source.skip = point.done
            _replay(options.out, output_format, class_names, point, sinks)
            log.info("resuming %s: %d input(s) complete in it are skipped", options.out, len(point.done))
        events: Any = source
        analysis = None
        if on_ray:
            from fer_batch.ray_engine import ray_outcomes  # noqa: PLC0415

            events = ray_outcomes(source.pending(), _ray_config(options, model_path, source), class_names,
                                  video=video)
        elif source.openable:
            analysis = _analyzer(model_path, options)
        if analysis is not None and video:
            from fer_batch.video import VideoAnalyzer  # noqa: PLC0415

            analysis = VideoAnalyzer(analysis, source.sampling)  # type: ignore[assignment]
        if video and (analysis is not None or on_ray):
            log.info("sampling: %s", source.sampling.describe())
        rows = RecordSink.to_path(options.out, class_names, fmt=output_format, video=video, append=point.append)
    except FerBatchError as exc:
        raise _fail(exc) from None
    total = source.remaining if not video else None
    progress = ProgressSink(total=total, video=video, enabled=_show_progress(options.quiet))
    summary = run(events, analysis, [rows, progress, *sinks])
    if summary.broken_pipe:
        _discard_stdout()
        raise typer.Exit(int(summary.exit_code))  # nobody reads any more: no summary line either
    log.info("%s%s", summary.describe(noun), "" if options.out == "-" else f"; results in {options.out}")
    if summary.interrupted:
        log.warning("interrupted: the output holds the %d %s finished so far%s", point.kept + rows.count, noun,
                    "" if options.out == "-" else "; the same command with --resume finishes it")
    tables = [sink.table() for sink in sinks if isinstance(sink, TrackSummarySink)]
    if tables and not options.quiet:
        typer.echo("\n".join(tables), err=True)  # the summaries were asked for; otherwise one log line ends a run
    raise typer.Exit(int(summary.exit_code))


def _is_folder(out: str) -> bool:
    """``--out DIR/`` (a trailing slash) or an existing folder: Ray writes its part files there."""
    return out != "-" and (out.endswith(("/", os.sep)) or Path(out).is_dir())


def _check_ray_options(options: AnalysisOptions, source: FrameSource) -> None:
    """``--engine ray``: Ray must be installed (else exit 2 with the command that adds it), and the options
    must be ones a Ray job can honour."""
    from fer_batch.ray_engine import require_ray  # noqa: PLC0415

    require_ray()
    if options.save_crops is not None:
        raise UsageError("--save-crops writes on the machine that runs the analysis: use it with --engine local")
    if source.items is not None and any(item.live is not None for item in source.items):
        raise UsageError("--engine ray runs video files (one per task), not streams or cameras: use --engine local")


def _refuse_frame_sinks(sinks: list[Sink]) -> None:
    from fer_batch.annotate import AnnotateSink, ShowSink  # noqa: PLC0415

    if any(isinstance(sink, AnnotateSink | ShowSink) for sink in sinks):
        raise UsageError("--annotate and --show draw on the decoded frames, which stay on the Ray workers: use "
                         "them with --engine local")


def _ray_config(options: AnalysisOptions, model_path: Path, source: FrameSource) -> RayConfig:
    from fer_batch.ray_engine import RayConfig  # noqa: PLC0415

    # A shipped model by name: each worker finds it in its own install. Any other model by its full path,
    # which every machine of the cluster must be able to read.
    model = options.model if options.model in shipped_models() else str(model_path.resolve())
    return RayConfig(model=model, detector=options.detector.value, min_face_size=options.min_face_size,
                     threshold=options.threshold, batch_size=options.batch_size, precision=options.precision.value,
                     workers=options.workers, address=options.ray_address, sampling=source.sampling)


def _run_parts(ctx: typer.Context, options: AnalysisOptions, source: FrameSource, *, video: bool,
               outputs: Callable[[tuple[str, ...]], list[Sink]]) -> NoReturn:
    """``--engine ray --out DIR/``: Ray writes part files into DIR, one row per face (the CSV columns)."""
    from fer_batch.ray_engine import part_count, write_parts  # noqa: PLC0415
    from fer_batch.writers import check_format  # noqa: PLC0415

    folder = Path(options.out)
    fmt = options.fmt or OutputFormat.PARQUET
    if fmt is OutputFormat.JSON:
        fmt = OutputFormat.JSONL  # Ray writes JSON as JSON Lines parts
    check_format(str(folder / f"part.{fmt.value}"), fmt)
    if options.resume:
        raise UsageError("--resume does not apply to a folder of part files: write one file (--out FILE.csv) "
                         "to resume, or --overwrite to start again")
    if folder.is_dir() and any(folder.iterdir()) and not options.overwrite:
        raise UsageError(f"{folder} already holds files: pass --overwrite to replace them")
    model_path = resolve_model(options.model)
    _warn_detector_options(ctx, options.detector)
    class_names = _model_class_names(model_path)
    if outputs(class_names):
        raise UsageError("--plot, --plot-path, --summary, --annotate and --show need the rows in one place: use "
                         "--out FILE with --engine ray")
    noun = "frame(s)" if video else "input(s)"
    summary = write_parts(source.pending(), _ray_config(options, model_path, source), class_names, folder, fmt,
                          video=video, overwrite=options.overwrite)
    log.info("%s; %d part file(s) in %s", summary.describe(noun), part_count(folder) if folder.is_dir() else 0,
             folder)
    if summary.interrupted:
        log.warning("interrupted: the part files written so far are in %s", folder)
    raise typer.Exit(int(summary.exit_code))


def _replay(out: str, output_format: OutputFormat, class_names: tuple[str, ...], point: ResumePoint,
            sinks: list[Sink]) -> None:
    """Give the track summaries the records a resumed output already holds, so they cover every video."""
    from fer_batch.frames import SourceEnd  # noqa: PLC0415
    from fer_batch.resume import read_records  # noqa: PLC0415
    from fer_batch.sinks import TrackSummarySink  # noqa: PLC0415

    summaries = [sink for sink in sinks if isinstance(sink, TrackSummarySink)]
    if not summaries or not point.kept:
        return
    current: str | None = None
    for record in read_records(out, output_format, class_names, video=True):
        if current is not None and record.source != current:
            for sink in summaries:
                sink.end_source(SourceEnd(current))
        current = record.source
        for sink in summaries:
            sink.receive(record, None)
    if current is not None:
        for sink in summaries:
            sink.end_source(SourceEnd(current))


@app.command(short_help="Faces and their expressions in images: one row per face.")
@_analysis_command
def images(
    ctx: typer.Context,
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders (searched recursively) or - for paths "
                                                     "on stdin, one per line.")],
    options: AnalysisOptions,
) -> None:
    """Detect faces in images and classify their expressions: one row per face."""
    _setup_logging(options.quiet)
    from fer_batch.frames import FrameSource  # noqa: PLC0415

    _run_command(ctx, options, FrameSource(inputs, workers=options.workers), video=False)


@app.command(short_help="Faces, expressions and face tracks over time in videos, streams and cameras.")
@_analysis_command
def video(
    ctx: typer.Context,
    inputs: Annotated[list[str], typer.Argument(help="Video files, folders (searched recursively for video "
                                                     "suffixes), stream URLs (rtsp://, http://, udp://...), "
                                                     "cameras (camera:0) or - for paths on stdin.")],
    options: AnalysisOptions,
    fps: Annotated[float | None, typer.Option(help="Analyse at most this many frames per second of video "
                                                   "(default: 5, unless --every is given).",
                                              show_default=False)] = None,
    every: Annotated[int | None, typer.Option(min=1, help="Analyse every Nth frame (--every 1: all frames).",
                                              show_default=False)] = None,
    plot: Annotated[bool, typer.Option("--plot", help="Write an emotion-over-time PNG per video, beside --out "
                                                      "(current folder for stdout).")] = False,
    plot_path: Annotated[Path | None, typer.Option(help="Chart file (.png) or folder; implies --plot.")] = None,
    smooth: Annotated[float, typer.Option(min=0.0, help="Smooth the chart lines over this many seconds (0: off); "
                                                        "charts only, not the rows or --annotate.")] = 0.0,
    summary_path: Annotated[Path | None, typer.Option("--summary", help="Write per-track summaries here "
                                                      "(.csv or .json) and print a short table of them.")] = None,
    annotate: Annotated[Path | None, typer.Option(help="Write a copy of the video with boxes, track IDs and "
                                                       "expressions to this .mp4 (one per video).",
                                                  dir_okay=False)] = None,
    show: Annotated[bool, typer.Option("--show", help="Show the annotated frames in a window (needs a display "
                                                      "and OpenCV with window support); q stops.")] = False,
    duration: Annotated[float | None, typer.Option(min=0.0, show_default=False, help=(
        "Stop each stream or camera after this many seconds of stream time (default: until it ends)."))] = None,
    stream_timeout: Annotated[float | None, typer.Option(min=0.0, show_default=False, help=(
        "Seconds without a frame before a stream or camera counts as stalled: an error row (default: "
        "10).") )] = None,
    reconnect: Annotated[int, typer.Option(min=0, help="Times to reopen a stream that stalls or disconnects.")
                         ] = 0,
) -> None:
    """Faces and expressions over time in videos: one row per face per analysed frame, with a track ID."""
    _setup_logging(options.quiet)
    from fer_batch.annotate import AnnotateSink, ShowSink  # noqa: PLC0415
    from fer_batch.frames import FrameSource, LiveOptions  # noqa: PLC0415
    from fer_batch.sinks import ChartSink, TrackSummarySink, default_plot_path  # noqa: PLC0415
    from fer_batch.video import Sampling  # noqa: PLC0415

    try:
        source = FrameSource(inputs, video=True, sampling=Sampling.from_options(fps, every),
                             all_frames=annotate is not None or show, workers=options.workers,
                             live=LiveOptions(stream_timeout, reconnect, duration))
    except FerBatchError as exc:
        raise _fail(exc) from None
    names = [item.source for item in source.items] if source.items is not None else None
    chart = plot_path if plot_path is not None else default_plot_path(options.out) if plot else None
    if smooth > 0 and chart is None:
        log.warning("--smooth applies to charts only; without --plot or --plot-path it does nothing")
    if source.items is not None and not any(item.live for item in source.items):
        ignored = [f"--{name.replace('_', '-')}" for name in ("duration", "stream_timeout", "reconnect")
                   if _given(ctx, name)]
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


@app.command(short_help="Train an expression classifier on a folder dataset.")
def train(
    ctx: typer.Context,
    # Every parameter but --resume and --quiet is the TrainConfig field of its name, whose default it takes.
    dataset: Annotated[Path, typer.Argument(help="Folder with train/<class>/ and validation/<class>/ images.",
                                            exists=True, file_okay=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (model.keras, history, charts).")] = Path(
        "runs/train"),
    recipe: Annotated[Recipe, typer.Option(help="Architecture: compact (quickest to train; the default), wide, vgg "
                                                "or resnet.")] = TrainConfig.recipe,
    epochs: Annotated[int, typer.Option(min=1)] = TrainConfig.epochs,
    batch_size: Annotated[int, typer.Option(min=1)] = TrainConfig.batch_size,
    learning_rate: Annotated[float, typer.Option(min=0.0)] = TrainConfig.learning_rate,
    schedule: Annotated[Schedule, typer.Option(help="cosine (decay to 1% over all epochs), constant, or plateau "
                                                    "(halve after 3 epochs without a lower validation loss).")
                        ] = TrainConfig.schedule,
    optimizer: Annotated[Optimizer, typer.Option(help="adam, adamw, or sgd (Nesterov momentum 0.9).")
                         ] = TrainConfig.optimizer,
    weight_decay: Annotated[float, typer.Option(min=0.0, help="Decoupled weight decay (any optimizer).")
                            ] = TrainConfig.weight_decay,
    label_smoothing: Annotated[float, typer.Option(min=0.0, max=0.5)] = TrainConfig.label_smoothing,
    class_weights: Annotated[bool, typer.Option(help="Weight the loss by inverse class frequency.")
                             ] = TrainConfig.class_weights,
    augment: Annotated[bool, typer.Option(help="Random flips, rotations, shifts, zoom, brightness/contrast.")
                       ] = TrainConfig.augment,
    random_erasing: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="With --augment: share of images with one random patch replaced by noise.")
                              ] = TrainConfig.random_erasing,
    crop_padding: Annotated[int, typer.Option(
        min=0, help="With --augment: zero-pad by this many pixels, then crop back at a random position.")
                            ] = TrainConfig.crop_padding,
    seed: Annotated[int, typer.Option()] = TrainConfig.seed,
    name: Annotated[str, typer.Option(help="Model name stored in the model file; it also seeds each epoch's "
                                           "shuffle and augmentation, so give a fine-tune its own.")
                    ] = TrainConfig.name,
    init_from: Annotated[str | None, typer.Option(help="Fine-tune this model (fast, a .keras file or a training "
                                                       "folder; not accurate, which holds int8 only) instead of a "
                                                       "new --recipe.")] = None,
    ferplus_weight: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Blend this much of the FER+ vote distribution (DATASET/ferplus_labels.csv) into "
                               "each training target.")] = TrainConfig.ferplus_weight,
    drop_non_faces: Annotated[bool, typer.Option(
        help="Leave out training images that FER+ annotators marked as not a face.")] = TrainConfig.drop_non_faces,
    flip_average: Annotated[bool, typer.Option(
        help="Store in the model that inference averages each face with its mirror image (twice the cost).")
                            ] = TrainConfig.flip_average,
    teachers: Annotated[list[str] | None, typer.Option(
        "--teacher", help="Distil from this model (shipped name, .keras file or training folder): blend its "
                          "probabilities into the targets. Repeat for an ensemble of teachers.")] = None,
    teacher_weight: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of the teacher in each target.")
                              ] = TrainConfig.teacher_weight,
    mixed_precision: Annotated[bool, typer.Option(
        help="Compute in bfloat16 with float32 weights: faster on CPUs with bfloat16 instructions and on GPUs. "
             "The saved model is float32.")] = TrainConfig.mixed_precision,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Train an expression classifier; the output folder can be passed to --model."""
    _setup_logging(quiet)
    from fer_batch.training.metrics import format_report  # noqa: PLC0415
    from fer_batch.training.train import run_training  # noqa: PLC0415

    # TrainConfig turns the names of paths and choices into Path and enum values.
    config = TrainConfig(**{key: value for key, value in ctx.params.items() if key not in ("resume", "quiet")})
    plan = _training_plan(config, resume)
    if plan:
        log.info("%s", plan)  # at once: the first epoch can take minutes, and TensorFlow seconds to load
    _warn_training_options(ctx, config, resume)
    _load_backend()

    def on_epoch(r):  # type: ignore[no-untyped-def]
        m = r.metrics
        log.info("epoch %d/%d  loss %.4f  acc %.4f  val_loss %.4f  val_acc %.4f  lr %.2e  %.0fs%s",
                 r.epoch, r.epochs, m.get("loss", 0), m.get("accuracy", 0), m.get("val_loss", 0),
                 m.get("val_accuracy", 0), m.get("learning_rate", 0), r.seconds, "  *best" if r.best else "")

    try:
        result = run_training(config, resume=resume, on_epoch=on_epoch)
    except FerBatchError as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt:
        log.warning("interrupted; continue with: fer-batch train %s --out %s --resume", dataset, out)
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    if not quiet:  # on stderr: train's product is the model file; the report describes it
        typer.echo(f"validation report of {result.model_path} (epoch {result.best_epoch}):", err=True)
        typer.echo(format_report(result.report), err=True)
    log.info("best epoch %d; model written to %s", result.best_epoch, result.model_path)


def _warn_training_options(ctx: typer.Context, config: TrainConfig, resume: bool) -> None:
    """One warning for each group of options that do nothing in this run."""
    flags = {param.name: param.opts[0] for param in ctx.command.params}  # the option of each parameter
    if resume:
        ignored = [flags[name] for name in ctx.params
                   if name not in ("dataset", "out", "resume", "quiet") and _given(ctx, name)]
        if ignored:
            log.warning("--resume continues with the options the run was started with; ignored: %s",
                        ", ".join(ignored))
        return
    if not config.augment:
        ignored = [flags[name] for name in ("random_erasing", "crop_padding") if _given(ctx, name)]
        if ignored:
            log.warning("%s %s only with --augment; ignored with --no-augment", " and ".join(ignored),
                        "applies" if len(ignored) == 1 else "apply")
    if not config.teachers and _given(ctx, "teacher_weight"):
        log.warning("--teacher-weight does nothing without --teacher; ignored")
    if config.init_from is not None and _given(ctx, "recipe"):
        log.warning("--init-from keeps the architecture of the model it starts from; --recipe is ignored")


def _count_split(split_dir: Path) -> tuple[int, list[str]]:
    """Images and class folders of one dataset split, by their names alone (no decoding)."""
    if not split_dir.is_dir():
        return 0, []
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    images = sum(1 for name in classes for entry in os.scandir(split_dir / name)
                 if Path(entry.name).suffix.lower() in IMAGE_SUFFIXES)
    return images, classes


def _training_plan(config: TrainConfig, resume: bool) -> str | None:
    """What ``train`` is about to do, in one line; None when training is about to refuse (it says why)."""
    from fer_batch.training.data import TRAIN_SPLIT, VALIDATION_SPLIT  # noqa: PLC0415
    from fer_batch.training.train import load_state  # noqa: PLC0415

    start = ""
    if resume:
        state = load_state(config.out)
        if not state:
            return None
        config = config_from_json(state["config"])
        start = f"resuming the run in {config.out} after epoch {state['epochs_done']}, with its saved options: "
    train_images, classes = _count_split(Path(config.dataset) / TRAIN_SPLIT)
    val_images, _ = _count_split(Path(config.dataset) / VALIDATION_SPLIT)
    if not (train_images and val_images):
        return None
    shown = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
    model = f"fine-tuning {config.init_from}" if config.init_from else f"training recipe {config.recipe}"
    teachers = (f", distilling from {', '.join(map(str, config.teachers))} (weight {config.teacher_weight:g})"
                if config.teachers else "")
    return (f"{start}{model} on {config.dataset}: {train_images:,} training and {val_images:,} validation images, "
            f"{len(classes)} classes ({shown}); {config.epochs} epochs at batch size {config.batch_size}, "
            f"{config.optimizer} at {config.learning_rate:g} ({config.schedule}), augmentation "
            f"{'on' if config.augment else 'off'}{teachers}; writing {config.out}")


@app.command(short_help="Score a model on labelled face crops.")
def evaluate(
    data: Annotated[Path, typer.Argument(help="Folder of labelled face crops: DIR/<class>/*.png.",
                                         exists=True, file_okay=False)],
    model: ModelOption = DEFAULT_MODEL,
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder (metrics.json, confusion_matrix.png).")
                   ] = Path("evaluation"),
    batch_size: Annotated[int, typer.Option(min=1)] = DEFAULT_BATCH_SIZE,
    precision: PrecisionOption = Precision.AUTO,
) -> None:
    """Score a model on labelled face crops: accuracy, macro F1, per-class metrics, confusion matrix."""
    _setup_logging(False)
    from fer_batch.training.evaluate import evaluate_folder  # noqa: PLC0415
    from fer_batch.training.metrics import format_report  # noqa: PLC0415

    try:
        model_path = resolve_model(model)  # before TensorFlow loads: a wrong name is reported at once
        _load_backend()
        result = evaluate_folder(data, model_path, out, batch_size=batch_size, precision=precision.value)
    except FerBatchError as exc:
        raise _fail(exc) from None
    # On stdout: the scores are evaluate's data. The heading says which model (and network) was scored.
    report = result.report
    typer.echo(f"model {report['model_name']} ({model_path}, {report['precision']}) on {data}:")
    typer.echo(format_report(report))
    log.info("report written to %s and %s", result.metrics_path, result.confusion_path)


@app.command(short_help="Add an int8 network to a model and measure what it costs.")
def quantize(
    model: Annotated[str, typer.Argument(help="The model to quantise: fast, a .keras file or a training output "
                                              "folder (not accurate, which holds int8 only).")],
    dataset: Annotated[Path, typer.Argument(help="Folder with train/<class>/ (calibration images) and, optionally, "
                                                 "validation/<class>/ (to measure the cost in accuracy).",
                                            exists=True, file_okay=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="The new model file (.keras).", dir_okay=False)],
    precision: Annotated[DefaultPrecision, typer.Option(help="What the new file runs by default: int8 or float32.")
                         ] = DefaultPrecision.INT8,
    flip_average: Annotated[bool | None, typer.Option(
        help="Average each face with its mirror image at inference (default: as the source model).")] = None,
    name: Annotated[str | None, typer.Option(help="Model name stored in the file (default: the source's).")
                 ] = None,
    calibration_images: Annotated[int, typer.Option(min=1, help="Training images used to measure activation "
                                                                "ranges.")] = 500,
    seed: Annotated[int, typer.Option()] = 1337,
    int8_only: Annotated[bool, typer.Option(
        help="Leave the float32 network out of the new file (a fraction of the size; it then runs at int8 only).")
    ] = False,
) -> None:
    """Add an int8 copy of a model's network (several times faster on a CPU) and measure what it costs."""
    _setup_logging(False)
    from fer_batch.training.quantize import quantize_model  # noqa: PLC0415

    try:
        model_path = resolve_model(model)  # before TensorFlow loads: a wrong name is reported at once
        _load_backend()
        result = quantize_model(model_path, dataset, out, name=name, precision=precision,
                                flip_average=flip_average, calibration_images=calibration_images, seed=seed,
                                int8_only=int8_only)
    except FerBatchError as exc:
        raise _fail(exc) from None
    log.info("int8 network: %.0f kB, calibrated on %d training images; written to %s (%.1f MB%s)",
             result.int8_bytes / 1024, result.info.training["quantized"]["calibration_images"], result.path,
             result.path.stat().st_size / 1e6, ", int8 only" if int8_only else "")
    if result.int8_accuracy is not None:  # on stderr: quantize's product is the model file
        typer.echo(f"validation accuracy: float32 {result.float32_accuracy:.4f}, int8 {result.int8_accuracy:.4f}; "
                   f"same class for {result.agreement:.1%} of images", err=True)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="fer-batch")  # also under `python -m fer_batch`, so usage lines match the README

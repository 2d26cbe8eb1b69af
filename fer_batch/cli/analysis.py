"""``fer-batch images`` and ``fer-batch video``: their options declared once, and one job run.

The options are :class:`~fer_batch.engines.options.AnalysisOptions`'s and (``images``)
:class:`~fer_batch.engines.options.ImageOptions`'s or (``video``) :class:`~fer_batch.engines.options.VideoOptions`'s
fields, declared here for Typer with their help; each command
calls :meth:`fer_batch.engines.job.Job.run`, whose :class:`~fer_batch.engines.run.RunSummary` gives the exit code.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any, NoReturn

import typer

from fer_batch.analysis.detect import DEFAULT_THRESHOLDS, DetectorName
from fer_batch.cli.common import ModelOption, PrecisionOption, app, choice_of, discard_stdout, fail, setup_logging
from fer_batch.engines.options import AnalysisOptions, ImageOptions, VideoOptions
from fer_batch.engines.ray_engine import Engine
from fer_batch.errors import ExitCode, FerBatchError
from fer_batch.outputs.writers import OutputFormat

# The Typer declaration of each option (its type and default are the field's), in --help's order.
ANALYSIS_OPTIONS: dict[str, Any] = {
    "out": typer.Option("--out", "-o", metavar="FILE", help=(
        "Output file, or - for stdout; with --engine ray also a folder (DIR/) of part files, one per task.")),
    "fmt": typer.Option(
        "--format", "-f", **choice_of(OutputFormat),
        help="Output format; default: from --out's extension, csv for stdout, parquet for a folder of parts."),
    "resume": typer.Option(
        "--resume", help="Continue an interrupted run: skip the inputs already complete in --out, append the "
                         "rest."),
    "overwrite": typer.Option(
        "--overwrite", help="Replace an existing --out file (without it, an existing file is refused)."),
    "model": ModelOption.__metadata__[0],
    "detector": typer.Option("--detector", "-d", **choice_of(DetectorName), help=(
        "Face detector: yunet (shipped in the package, fast, the default), mtcnn (needs TensorFlow), haar.")),
    "min_face_size": typer.Option(min=8, metavar="PIXELS", help="Smallest face to detect, in pixels."),
    "threshold": typer.Option(min=0.0, max=1.0, show_default=False, metavar="SCORE", help=(
        "Minimum face confidence (det_score); default: "
        + ", ".join(f"{d.value} {v}" for d, v in DEFAULT_THRESHOLDS.items()) + ". Not used by haar.")),
    "batch_size": typer.Option(min=1, metavar="N", help="Faces per classifier call."),
    "precision": PrecisionOption.__metadata__[0],
    "workers": typer.Option(min=1, show_default=False, metavar="N", help=(
        "Threads for decoding, detection and classification (default: the CPUs this process may use); with "
        "--engine ray, tasks at once, on an equal share of the cluster's CPUs each (default: one per CPU).")),
    "engine": typer.Option(**choice_of(Engine), help=(
        "Where the job runs: this process, or a Ray cluster (needs the ray extra: pip install "
        "\"fer-batch[ray]\").")),
    "ray_address": typer.Option(show_default=False, metavar="HOST:PORT", help=(
        "With --engine ray: the cluster to run on (HEAD:6379, or auto); default: a local cluster on this "
        "machine's CPUs.")),
    "save_crops": typer.Option(
        metavar="DIR", help="Write every face crop as a PNG into this folder.", file_okay=False),
    "quiet": typer.Option(
        "--quiet", "-q", help="No progress bar, summary table or info messages."),
}
IMAGE_OPTIONS: dict[str, Any] = {
    "annotate": typer.Option(metavar="DIR", file_okay=False, help=(
        "Write a copy of each photo with its face boxes, face index and top expression into this folder, under "
        "the photo's own path (JPEG for JPEG photos, PNG otherwise); photos without a face are copied too.")),
    "annotate_faces_only": typer.Option(
        "--annotate-faces-only", help="With --annotate: copy only the photos in which a face was found."),
}
VIDEO_OPTIONS: dict[str, Any] = {
    "fps": typer.Option(metavar="FPS", show_default=False, help=(
        "Analyse at most this many frames per second of video (default: 5, unless --every is given).")),
    "every": typer.Option(min=1, metavar="N", show_default=False,
                          help="Analyse every Nth frame (--every 1: all frames)."),
    "plot": typer.Option("--plot", help="Write an emotion-over-time PNG per video, beside --out "
                                        "(current folder for stdout)."),
    "plot_path": typer.Option(metavar="PATH", help="Chart file (.png) or folder; implies --plot."),
    "smooth": typer.Option(min=0.0, metavar="SECONDS", help=(
        "Smooth the chart lines over this many seconds (0: off); charts only, not the rows or --annotate.")),
    "summary_path": typer.Option("--summary", metavar="FILE", help=(
        "Write per-track summaries here (.csv or .json) and print a short table of them.")),
    "annotate": typer.Option(metavar="FILE", dir_okay=False, help=(
        "Write a copy of the video with boxes, track IDs and expressions to this .mp4 (one per video).")),
    "show": typer.Option("--show", help="Show the annotated frames in a window (needs a display "
                                        "and OpenCV with window support); q stops."),
    "duration": typer.Option(min=0.0, show_default=False, metavar="SECONDS", help=(
        "Stop each stream or camera after this many seconds of stream time (default: until it ends).")),
    "stream_timeout": typer.Option(min=0.0, show_default=False, metavar="SECONDS", help=(
        "Seconds without a frame before a stream or camera counts as stalled: an error row (default: "
        "10).")),
    "reconnect": typer.Option(min=0, metavar="N", help="Times to reopen a stream that stalls or disconnects."),
}
DECLARED: dict[type, dict[str, Any]] = {AnalysisOptions: ANALYSIS_OPTIONS, ImageOptions: IMAGE_OPTIONS,
                                         VideoOptions: VIDEO_OPTIONS}


def _declares_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give a command every option of the option classes its parameters name (``options: AnalysisOptions``);
    the command receives each class built from them.

    The options are declared once, as the classes' fields and :data:`DECLARED`; Typer reads the combined
    signature: the command's arguments first, then each class's options in its fields' order.
    """
    own = list(inspect.signature(command, eval_str=True).parameters.values())
    groups = {p.name: p.annotation for p in own if p.annotation in DECLARED}
    keyword = inspect.Parameter.KEYWORD_ONLY
    parameters = [p.replace(kind=keyword) for p in own if p.name not in groups]
    for kind in groups.values():  # mistakes here would only show as odd Typer behaviour: say them at import
        hints = inspect.get_annotations(kind, eval_str=True)
        fields = dataclasses.fields(kind)
        if [f.name for f in fields] != list(DECLARED[kind]):
            raise TypeError(f"the options declared for {kind.__name__} are not its fields, in their order")
        for f in fields:
            if f.default is dataclasses.MISSING:
                raise TypeError(f"{kind.__name__}.{f.name} needs a plain default: Typer takes it as the option's")
            parameters.append(inspect.Parameter(f.name, keyword, default=f.default,
                                                annotation=Annotated[hints[f.name], DECLARED[kind][f.name]]))
    names = [p.name for p in parameters]
    if len(set(names)) != len(names):
        raise TypeError(f"{command.__name__}() declares an option that an option class already declares")

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        for name, kind in groups.items():
            kwargs[name] = kind(**{f.name: kwargs.pop(f.name) for f in dataclasses.fields(kind)})
        command(**kwargs)

    wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    return wrapper


def _run_job(inputs: list[str], options: AnalysisOptions, video: VideoOptions | None = None,
             images: ImageOptions | None = None) -> NoReturn:
    """Run the job and exit with its code; a mistake found before the run is one line and its exit code."""
    setup_logging(options.quiet)
    from fer_batch.engines.job import Job  # noqa: PLC0415 - the analysis code: not for --help

    try:
        summary = Job(inputs, options, video, images=images).run()
    except FerBatchError as exc:
        raise fail(exc) from None
    except KeyboardInterrupt:  # before the run started (the run itself ends on Ctrl-C with its summary)
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    if summary.broken_pipe:
        discard_stdout()
    raise typer.Exit(int(summary.exit_code))


@app.command(short_help="Faces and their expressions in images: one row per face.")
@_declares_options
def images(
    # The argument is described in the docstring: Typer's Arguments section adds the raw type (<list[str]>).
    inputs: Annotated[list[str], typer.Argument(metavar="INPUT", hidden=True)],
    options: AnalysisOptions,
    image_options: ImageOptions,
) -> None:
    """Detect faces in images and classify their expressions: one row per face.

    INPUT: image files, folders (searched recursively) or - for paths on stdin, one per line.
    """
    _run_job(inputs, options, images=image_options)


@app.command(short_help="Faces, expressions and face tracks over time in videos, streams and cameras.")
@_declares_options
def video(
    inputs: Annotated[list[str], typer.Argument(metavar="INPUT", hidden=True)],  # described in the docstring
    options: AnalysisOptions,
    video_options: VideoOptions,
) -> None:
    """Faces and expressions over time in videos: one row per face per analysed frame, with a track ID.

    INPUT: video files, folders (searched recursively for video suffixes), stream URLs (rtsp://, http://,
    udp://...), cameras (camera:0) or - for paths on stdin.
    """
    _run_job(inputs, options, video_options)

"""The options of a job, as the command line takes them: :class:`AnalysisOptions`, :class:`ImageOptions`,
:class:`VideoOptions`.

Light to import (no model code): the command line declares its ``images`` and ``video`` options from these
fields, with their defaults, and :class:`fer_batch.engines.job.Job` runs a job from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fer_batch.analysis.classify import DEFAULT_BATCH_SIZE, Precision
from fer_batch.analysis.detect import DEFAULT_DETECTOR, DEFAULT_MIN_FACE_SIZE, DetectorName
from fer_batch.engines.ray_engine import Engine
from fer_batch.models import DEFAULT_MODEL
from fer_batch.outputs.writers import OutputFormat


@dataclass(frozen=True)
class AnalysisOptions:
    """The options of a photo or video job: those that ``fer-batch images`` and ``video`` share.

    Each field is one command-line option (``min_face_size`` is ``--min-face-size``; ``fmt`` is ``--format``),
    with the same default; ``--help`` tells what each does.
    """

    out: str = "-"  # a file, "-" for stdout, or with Engine.RAY a folder (a trailing "/") of part files
    fmt: OutputFormat | None = None  # default: from out's extension, csv for stdout, parquet for parts
    resume: bool = False
    overwrite: bool = False
    model: str = DEFAULT_MODEL
    detector: DetectorName = DEFAULT_DETECTOR
    min_face_size: int = DEFAULT_MIN_FACE_SIZE
    threshold: float | None = None  # default: the detector's own (DEFAULT_THRESHOLDS)
    batch_size: int = DEFAULT_BATCH_SIZE
    precision: Precision = Precision.AUTO
    workers: int | None = None  # default: the CPUs this process may use; with Ray, one task per CPU
    engine: Engine = Engine.LOCAL
    ray_address: str | None = None
    save_crops: Path | None = None
    quiet: bool = False  # no progress bar and no summary table (the log level is the caller's)


@dataclass(frozen=True)
class ImageOptions:
    """The options that only ``fer-batch images`` has: annotated copies of the photos."""

    annotate: Path | None = None  # a folder: each photo's copy under its own path there
    annotate_faces_only: bool = False  # no copy of a photo without a face


@dataclass(frozen=True)
class VideoOptions:
    """The options that only ``fer-batch video`` has: sampling, live inputs, charts, summaries, annotation."""

    fps: float | None = None  # default: 5, unless ``every`` is given
    every: int | None = None
    plot: bool = False
    plot_path: Path | None = None  # implies plot
    smooth: float = 0.0
    summary_path: Path | None = None
    annotate: Path | None = None
    show: bool = False
    duration: float | None = None
    stream_timeout: float | None = None
    reconnect: int = 0

"""The same job on a Ray cluster (``--engine ray``): Ray tasks run the local pipeline; the driver writes.

The job is a list of Ray tasks, each over a batch of inputs in input order (one dict per
input: its ``source``, its path, the reason it cannot be opened, and its place in the input order, ``index``).
Each task runs the local pipeline over its inputs, as ``--engine local`` does in one process: the photos of a
batch (up to 128) are read, decoded and detected, and their faces classified, in chunks of 16 photos (the decoded
photos a local run holds at once); a video (one per task) is sampled, detected, classified and tracked by the local
:class:`~fer_batch.analysis.video.VideoAnalyzer`. Only paths go in and records come out (faces as JSON, no
pixels), so nothing large crosses Ray's object store. Each worker process loads the model on its first task and
keeps it for the next ones (:func:`_analysis`).

By default one task runs per CPU of the cluster, on one CPU with one thread (OpenCV, LiteRT and the readers):
the cores are filled and none is shared. ``--workers W`` runs W at once, on an equal share of the CPUs each, no
more than the largest node has, with as many threads as whole CPUs in the share.

Plain Ray tasks (``ray.remote``), not Ray Data: the driver keeps a few tasks per worker submitted and takes their
results in input order (:func:`_in_input_order`), and nothing else of Ray's runs beside them (Ray Data, used
before, added a stats actor, an autoscaling coordinator and its scheduling loop in the driver: with Ray's other
processes about 8% of a 2-core machine, against 2.5% now). Tasks, not actors: a task whose worker process dies,
or whose whole node is lost, is run again on another node (:data:`TASK_RETRIES` times), and a task's result
reaches the driver once, so a lost worker or node neither loses nor duplicates an input. (An actor lost with its
node would wait for a restart on a node that may never come back.)

:func:`ray_outcomes` yields the same :class:`~fer_batch.inputs.frames.Analysed` records and
:class:`~fer_batch.inputs.frames.SourceEnd` markers, in the same order, as a local run, and
:func:`fer_batch.engines.run.run` feeds them to the same sinks (rows, progress, charts, summaries), with the same
summary and exit code. :func:`write_parts` instead has each task (:func:`write_part`) write its rows as a part
file of a folder, named in input order; only the records' statuses come back to the driver, for the summary.

Files are read by the cluster's workers at the paths the driver found: on a cluster of several machines, the
inputs must be on storage that every machine mounts at the same path, and fer-batch installed on every machine.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fer_batch.errors import ExitCode, FerBatchError, UsageError
from fer_batch.inputs.sources import SourceItem
from fer_batch.records import FaceResult, FrameResult, Status

if TYPE_CHECKING:
    from fer_batch.analysis.pipeline import Analyzer
    from fer_batch.analysis.video import VideoAnalyzer
    from fer_batch.engines.run import RunSummary
    from fer_batch.inputs.frames import Outcome
    from fer_batch.inputs.video import Sampling
    from fer_batch.outputs.writers import OutputFormat

log = logging.getLogger(__name__)

RAY_VERSION = "2.60.0"  # the version tested (pyproject.toml's ray extra pins it)
RAY_INSTALL = 'pip install "fer-batch[ray]"'
MAX_IMAGES_PER_TASK = 128  # photos per task (in chunks of 16, as a local run): a task costs Ray 0.1-0.2 s
MIN_IMAGES_PER_TASK = 8  # ... but a few tasks per worker, so that a small job keeps every CPU busy to its end
TASKS_PER_WORKER = 4  # a job has at least this many tasks per worker; the driver submits one more at once
TASK_RETRIES = 8  # runs again of a task whose worker process or node died (a photo that crashes every worker fails)
MIN_TASK_CPUS = 0.05
PARTIAL_SUFFIX = ".partial"  # a part file being written: hidden (.part-00000.csv.partial), then renamed


class Engine(str, Enum):
    """Where a job runs: this process (``local``, the default) or a Ray cluster (``ray``)."""

    LOCAL = "local"
    RAY = "ray"


def require_ray() -> None:
    """Refuse ``--engine ray`` on an install without Ray, with the command that adds it (exit code 2)."""
    try:
        import ray  # noqa: F401, PLC0415 - the optional ray extra
    except ImportError:
        raise UsageError(f"--engine ray needs Ray, which is not installed: {RAY_INSTALL}") from None


@dataclass(frozen=True)
class RayConfig:
    """What a Ray job runs: the analysis options of a local run, plus where and how wide.

    ``workers``: tasks at once (default: one per CPU of the cluster; see :func:`_sizes`). ``address``: an existing
    cluster (``HEAD:6379``, or ``auto``); None starts a local one on this machine's usable CPUs, unless this
    process is already connected to one (``ray.init()`` called before).
    """

    model: str = "accurate"  # a shipped name (found in each worker's own install) or a path every worker can read
    detector: str = "yunet"
    min_face_size: int = 20
    threshold: float | None = None
    batch_size: int = 256
    precision: str = "auto"
    workers: int | None = None
    address: str | None = None
    sampling: Sampling | None = None  # video only


def connect(address: str | None = None) -> None:
    """Connect to the cluster at ``address``, or start a local one; nothing when already connected."""
    require_ray()
    import ray  # noqa: PLC0415 - the optional ray extra

    if ray.is_initialized():
        return
    from fer_batch.runtime import usable_cpus  # noqa: PLC0415

    options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR,
                               "log_to_driver": False}
    if address is None:
        options["num_cpus"] = usable_cpus()
        # Ray starts its workers at nice 15, below every other process; the analysis of a local run is this
        # command's own work, at its priority (as with --engine local). A cluster's nodes keep their own setting.
        os.environ.setdefault("RAY_worker_niceness", str(os.nice(0)))
    else:
        _check_reachable(address)  # ray.init() retries an address nobody answers on for ever
    try:
        ray.init(address=address, **options)
    except ConnectionError as exc:
        hint = ""
        if address is not None and os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
            hint = ("; if the cluster uses token authentication (started with RAY_AUTH_MODE=token), set "
                    "RAY_AUTH_MODE=token, and RAY_AUTH_TOKEN=<its token> off the head machine")
        raise UsageError(f"cannot reach the Ray cluster at {address}: {exc}{hint}") from exc


CONNECT_TIMEOUT_S = 10.0  # seconds to reach a cluster's head before saying it cannot be reached


def _check_reachable(address: str) -> None:
    """Raise UsageError when nothing answers at ``HOST:PORT`` (``auto`` and ``ray://`` are left to Ray)."""
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--ray-address must be HOST:PORT (the head's GCS port, 6379 by default), not {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise UsageError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc} (is `ray start "
                         "--head` running there, and the port open?)") from None


# -- the stage, run in Ray's worker processes ---------------------------------------------------------------

_ANALYSES: dict[tuple[Any, ...], Analyzer | VideoAnalyzer] = {}  # per worker process: the models it has loaded


def _analysis(config: RayConfig, video: bool, threads: int) -> Analyzer | VideoAnalyzer:
    """This worker process's analyzer for ``config``: loaded by its first task, kept for the next ones (Ray
    reuses a worker process for the tasks of a job), so a model loads once per process, not once per batch."""
    key = (config.model, config.detector, config.min_face_size, config.threshold, config.batch_size,
           config.precision, threads, video, config.sampling)
    analysis = _ANALYSES.get(key)
    if analysis is None:
        import cv2  # noqa: PLC0415 - in a Ray worker

        from fer_batch.analysis.pipeline import Analyzer  # noqa: PLC0415
        from fer_batch.analysis.video import VideoAnalyzer  # noqa: PLC0415

        cv2.setNumThreads(threads)  # Ray sets OMP_NUM_THREADS to the task's CPUs; OpenCV keeps its own pool
        analyzer = Analyzer(config.model, config.detector, min_face_size=config.min_face_size,
                            threshold=config.threshold, batch_size=config.batch_size, precision=config.precision,
                            workers=threads)
        analysis = VideoAnalyzer(analyzer, config.sampling) if video else analyzer
        _ANALYSES.clear()  # one job's models at a time
        _ANALYSES[key] = analysis
    return analysis


def _analyse(inputs: Sequence[dict[str, Any]], config: RayConfig, video: bool,
             threads: int) -> list[tuple[int, FrameResult]]:
    """The local pipeline over a task's inputs, in a Ray worker: each record with its input's ``index``.

    ``inputs``: one dict per input, ``index`` (its place in the job), ``source``, ``path`` and ``error`` (why it
    cannot be opened). ``threads`` reader and detector threads (the task's CPUs) decode and detect the photos,
    and their faces go through the classifier, chunk by chunk as in a local run (the first chunk as large as the
    others: the task's records are returned together); a video is sampled, detected, classified and tracked as a
    local run does. One record per photo or per sampled frame, in input order.
    """
    from fer_batch.analysis.pipeline import GrowingChunks  # noqa: PLC0415 - in a Ray worker
    from fer_batch.inputs.frames import Analysed, FrameSource, SourceEnd  # noqa: PLC0415

    analysis = _analysis(config, video, threads)
    items = [SourceItem(row["source"], Path(row["path"]) if row["path"] is not None else None, row["error"])
             for row in inputs]
    frames = FrameSource.of_items(items, video=video, sampling=config.sampling, workers=threads)
    if video:
        outcomes = analysis.analyze_frames(frames)  # type: ignore[call-arg]
    else:  # the decoded photos held at once: as many as a local run holds
        size = analysis.chunk_size  # type: ignore[union-attr]
        outcomes = analysis.analyze_frames(frames, GrowingChunks(size, first=size))  # type: ignore[call-arg]
    records: list[tuple[int, FrameResult]] = []
    done = 0  # inputs of the batch ended so far: the record's input is the next one
    for outcome in outcomes:
        if isinstance(outcome, Analysed):
            records.append((inputs[done]["index"], outcome.result))
        elif isinstance(outcome, SourceEnd):
            done += 1
    return records


def analyse_inputs(inputs: Sequence[dict[str, Any]], config: RayConfig, video: bool,
                   threads: int) -> list[dict[str, Any]]:
    """A task of a job whose driver writes (:func:`ray_outcomes`): a batch of inputs (paths) in, their records
    out, as rows of :func:`_record_row` (faces as JSON, no pixels: nothing large crosses Ray's object store)."""
    return [_record_row(index, result) for index, result in _analyse(inputs, config, video, threads)]


def write_part(inputs: Sequence[dict[str, Any]], config: RayConfig, video: bool, threads: int,
               class_names: Sequence[str], path: str, fmt: str) -> list[tuple[str, int]]:
    """A task of a ``--out DIR/`` job: analyse a batch of inputs and write their rows as one part file at
    ``path`` (see :func:`write_part_file`); returns each record's status and face count, for the summary."""
    results = [result for _, result in _analyse(inputs, config, video, threads)]
    write_part_file(results, Path(path), class_names, fmt, video=video)
    return [(result.status.value, len(result.faces)) for result in results]


def write_part_file(results: Sequence[FrameResult], path: Path, class_names: Sequence[str], fmt: str, *,
                    video: bool = False) -> None:
    """One part file: the records' rows in the per-face layout of the CSV (one row per face, one status row for
    a record without a face), as Parquet (typed), CSV (a local run's CSV, with its header) or JSON Lines (one
    row object per line). Written beside ``path`` under a hidden name, then renamed: a part is whole or absent,
    and a task run again replaces its own part."""
    from fer_batch.outputs.writers import OutputFormat, face_rows, get_writer  # noqa: PLC0415 - in a Ray worker

    fmt = OutputFormat(fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}{PARTIAL_SUFFIX}")
    if fmt is OutputFormat.JSONL:
        with partial.open("w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(row) + "\n" for result in results for row in face_rows(result, class_names, video))
    else:
        binary = fmt is OutputFormat.PARQUET
        with (partial.open("wb") if binary else partial.open("w", encoding="utf-8", newline="")) as fh, \
                get_writer(fmt, fh, class_names, video=video) as writer:
            for result in results:
                writer.write(result)
    os.replace(partial, path)


def _faces_json(faces: Iterable[FaceResult]) -> str:
    """A record's faces as they go to the driver: the JSON writers' face objects, with every digit (the outputs
    round them when they are written, as a local run's); :func:`to_result` reads them."""
    from fer_batch.outputs.writers import face_to_dict  # noqa: PLC0415 - in a Ray worker

    return json.dumps([face_to_dict(face, decimals=None) for face in faces])


def _record_row(index: int, result: FrameResult) -> dict[str, Any]:
    """One record as a task returns it to the driver: ``index`` (its input's place in the job), ``source``,
    ``status``, ``error``, ``width``, ``height``, ``frame``, ``time_s``, ``duration_s`` (photos leave these three
    empty) and ``faces`` (JSON, see :func:`_faces_json`)."""
    duration = result.extra.get("duration_s")
    return {"index": index, "source": result.source, "status": result.status.value, "error": result.error,
            "width": result.width, "height": result.height, "frame": result.frame, "time_s": result.time_s,
            "duration_s": float(duration) if isinstance(duration, int | float) else None,
            "faces": _faces_json(result.faces)}


# -- the driver ---------------------------------------------------------------------------------------------

def to_result(row: dict[str, Any]) -> FrameResult:
    """A record as a task returns it (:func:`_record_row`) as the :class:`FrameResult` a local run yields."""
    from fer_batch.outputs.writers import face_from_dict  # noqa: PLC0415

    faces = tuple(face_from_dict(f) for f in json.loads(row["faces"]))
    extra = {"duration_s": row["duration_s"]} if row.get("duration_s") is not None else {}
    return FrameResult(source=row["source"], status=Status(row["status"]), faces=faces, error=row["error"],
                       width=row["width"], height=row["height"], frame=row.get("frame"), time_s=row.get("time_s"),
                       extra=extra)


def _sizes(config: RayConfig) -> tuple[int, float, int]:
    """Tasks at once, the CPUs each asks for and the threads it runs (see the module's docstring).

    By default one task per CPU of the cluster, each on one CPU with one thread: the cores are filled and none
    is shared. ``--workers W`` runs W tasks at once, on an equal share of the CPUs each (no more than the
    largest node has), with as many threads as whole CPUs in the share (at least one).
    """
    import ray  # noqa: PLC0415 - the optional ray extra

    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    largest = max((float(node["Resources"].get("CPU", 0.0)) for node in ray.nodes() if node["Alive"]),
                  default=cpus)
    workers = config.workers or max(1, int(cpus))
    share = min(max(largest, MIN_TASK_CPUS), max(MIN_TASK_CPUS, cpus / workers))
    return workers, share, max(1, int(share))


def images_per_task(photos: int, workers: int) -> int:
    """Photos per task: as many as :data:`MAX_IMAGES_PER_TASK`, fewer when that leaves a worker without work."""
    return max(MIN_IMAGES_PER_TASK, min(MAX_IMAGES_PER_TASK, math.ceil(photos / (workers * TASKS_PER_WORKER))))


def _plan(items: Sequence[SourceItem], config: RayConfig, video: bool) -> tuple[list[list[dict[str, Any]]],
                                                                                 int, float, int]:
    """The job's tasks (their inputs, in input order), and the tasks at once, CPUs and threads of each."""
    if any(item.live is not None for item in items):
        raise UsageError("--engine ray runs video files only, one per task; run streams and cameras with "
                         "--engine local")
    workers, cpus, threads = _sizes(config)
    inputs = [{"index": i, "source": item.source, "path": None if item.path is None else str(item.path),
               "error": item.error} for i, item in enumerate(items)]
    per_task = 1 if video else images_per_task(len(inputs), workers)
    return [inputs[start:start + per_task] for start in range(0, len(inputs), per_task)], workers, cpus, threads


def _in_input_order(function: Callable[..., Any], calls: Iterable[tuple[Any, ...]], workers: int,
                    cpus: float) -> Iterator[Any]:
    """Run ``function(*call)`` for each call as a Ray task; yield their results in the calls' order.

    The tasks start as the results are taken, up to ``TASKS_PER_WORKER + 1`` per worker submitted at once (the
    one the driver waits for included), so that a worker's next task is already at its node when one ends. A
    task whose worker process or node dies runs again (:data:`TASK_RETRIES` times); one that raises fails the
    job. The tasks of a driver that exits (interrupted) end with it; a driver that stops taking results and lives
    on leaves its submitted tasks to finish (``ray.cancel`` races with a task's end in Ray 2.60 and can crash the
    driver). Connect first (:func:`connect`).
    """
    import ray  # noqa: PLC0415 - the optional ray extra

    task = ray.remote(function).options(num_cpus=cpus, max_retries=TASK_RETRIES, retry_exceptions=False)
    submitted: deque[ray.ObjectRef] = deque()  # in the calls' order
    ahead = iter(calls)
    while True:
        submitted.extend(task.remote(*call) for call in islice(ahead, workers * (TASKS_PER_WORKER + 1)
                                                                  - len(submitted)))
        if not submitted:
            return
        try:
            result = ray.get(submitted[0])
        except Exception as exc:
            last_line = (str(exc).strip().splitlines() or [""])[-1]  # Ray's errors carry the remote traceback
            raise RayJobError(f"the Ray job failed: {type(exc).__name__}: {last_line}") from exc
        submitted.popleft()
        yield result


class RayJobError(FerBatchError):
    """The Ray job failed (a task or actor raised, the cluster went away): the run cannot go on."""

    exit_code = ExitCode.INPUT_ERRORS


def ray_outcomes(items: Sequence[SourceItem], config: RayConfig, *, video: bool = False) -> Iterator[Outcome]:
    """Run the job on Ray; yield each record (:class:`Analysed`) and each input's end (:class:`SourceEnd`), in
    input order, as a local analysis does: ``run(ray_outcomes(...), None, sinks)`` writes the same outputs.
    The records' probabilities are keyed by the class names of the workers' model (``config.model``).

    Connects to the cluster and plans the job at once (a cluster that cannot be reached, or inputs Ray cannot
    run, raise :class:`UsageError` here, before any output is opened); the job runs as the outcomes are taken.
    A job that fails on the way raises :class:`RayJobError`.
    """
    connect(config.address)
    import ray  # noqa: PLC0415 - the optional ray extra

    tasks, workers, cpus, threads = _plan(items, config, video)
    shared = ray.put(config)
    calls = ((task, shared, video, threads) for task in tasks)
    return _outcomes(_in_input_order(analyse_inputs, calls, workers, cpus), items)


def _outcomes(batches: Iterator[list[dict[str, Any]]], items: Sequence[SourceItem]) -> Iterator[Outcome]:
    from fer_batch.inputs.frames import Analysed, SourceEnd  # noqa: PLC0415

    ended = 0  # inputs whose SourceEnd has been yielded
    for batch in batches:
        for row in batch:
            while ended < row["index"]:  # the inputs before this row are finished
                yield SourceEnd(items[ended].source)
                ended += 1
            result = to_result(row)
            if result.status is Status.ERROR:
                where = f" (frame {result.frame})" if result.frame is not None else ""
                log.warning("%s%s: %s", result.source, where, result.error)
            yield Analysed(result)
    while ended < len(items):
        yield SourceEnd(items[ended].source)
        ended += 1


def write_parts(items: Sequence[SourceItem], config: RayConfig, class_names: Sequence[str], folder: Path,
                fmt: OutputFormat, *, video: bool = False) -> RunSummary:
    """Run the job on Ray, each task writing its rows as one part file into ``folder``: one row per face (every
    input with its status row), the CSV columns, in Parquet, CSV or JSON Lines (``fmt``; see
    :func:`write_part_file`). The parts are named in input order (``part-00000.parquet``, ...). Returns the run's
    summary (its exit code is a local run's); an interrupted run keeps the parts finished so far."""
    import ray  # noqa: PLC0415 - the optional ray extra

    from fer_batch.engines.run import RunSummary  # noqa: PLC0415

    connect(config.address)
    tasks, workers, cpus, threads = _plan(items, config, video)
    if folder.is_dir():  # an interrupted run's half-written parts (hidden names of this engine's own)
        for partial in folder.glob(f".part-*{PARTIAL_SUFFIX}"):
            partial.unlink(missing_ok=True)
    shared = ray.put(config)
    digits = max(5, len(str(len(tasks) - 1)))
    calls = ((task, shared, video, threads, tuple(class_names), str(folder / f"part-{n:0{digits}d}.{fmt.value}"),
              fmt.value) for n, task in enumerate(tasks))
    summary = RunSummary()
    parts = _in_input_order(write_part, calls, workers, cpus)
    try:
        for task, records in zip(tasks, parts, strict=False):
            for status, faces in records:
                summary.counts[Status(status)] += 1
                summary.faces += faces
            summary.inputs += len(task)
    except KeyboardInterrupt:
        summary.interrupted = True
    return summary


def part_count(folder: Path) -> int:
    """Part files in ``folder`` (for the run's last log line)."""
    return sum(1 for p in folder.iterdir() if p.is_file() and not p.name.startswith((".", "_")))

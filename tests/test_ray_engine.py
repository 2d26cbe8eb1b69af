"""--engine ray: the same rows as a local run, the CLI's Parquet file and folder of parts, a worker killed
mid-run, and the message without Ray. One local Ray cluster (2 CPUs) serves the whole test session; the CLI runs
join it with --ray-address, so no test starts a second one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fer_batch.inputs.frames import Analysed, FrameSource, SourceEnd
from fer_batch.model_file import read_info
from fer_batch.models import resolve_model
from fer_batch.records import FrameResult, Status
from tests.conftest import REPO, SAMPLE_MEDIA, interrupt_when, shared_path

ray = pytest.importorskip("ray", reason='--engine ray needs the ray extra: pip install "fer-batch[ray]"')
pq = pytest.importorskip("pyarrow.parquet", reason="comes with the ray extra")

from fer_batch.engines.ray_engine import RayConfig, ray_outcomes  # noqa: E402

MODEL = "fast"  # the quicker shipped model (int8 on LiteRT): the engine, not the model, is under test
NAMES = read_info(resolve_model(MODEL)).class_names


@pytest.fixture(scope="session")
def cluster() -> str:
    """The session's local Ray cluster; its address, for CLI runs that join it."""
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield context.address_info["address"]
    ray.shutdown()


def _local(inputs: list[str]) -> list[FrameResult]:
    from fer_batch.analysis.pipeline import Analyzer

    return list(Analyzer(MODEL).analyze_paths(inputs))


def _on_ray(inputs: list[str], **options: object) -> list[FrameResult | SourceEnd]:
    items = FrameSource(inputs).pending()
    out = ray_outcomes(items, RayConfig(model=MODEL, **options))  # type: ignore[arg-type]
    return [o.result if isinstance(o, Analysed) else o for o in out]


def _assert_same_rows(local: list[FrameResult], remote: list[FrameResult]) -> None:
    assert [r.source for r in remote] == [r.source for r in local]
    for a, b in zip(local, remote):
        assert (b.status, b.error, b.width, b.height) == (a.status, a.error, a.width, a.height), a.source
        assert [(f.box, f.emotion) for f in b.faces] == [(f.box, f.emotion) for f in a.faces], a.source
        for fa, fb in zip(a.faces, b.faces):
            assert all(abs(fa.probabilities[n] - fb.probabilities[n]) <= 0.02 for n in NAMES)


def test_same_rows_as_local_on_real_photos(cluster: str) -> None:
    photos = str(shared_path("media", "photos"))
    inputs = [photos, str(Path(photos) / "missing.jpg")]
    outcomes = _on_ray(inputs)
    remote = [o for o in outcomes if isinstance(o, FrameResult)]
    _assert_same_rows(_local(inputs), remote)
    assert sum(r.status is Status.OK for r in remote) >= 10 and remote[-1].status is Status.ERROR
    # each record is followed by its input's end, as in a local run
    assert [type(o) for o in outcomes] == [FrameResult, SourceEnd] * len(remote)


def _fer_batch(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fer_batch", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=REPO, check=False)


def test_cli_parquet_file_and_folder_of_parts(cluster: str, tmp_path: Path) -> None:
    inputs = [SAMPLE_MEDIA, tmp_path / "missing.jpg"]
    common = ["--engine", "ray", "--ray-address", cluster, "--model", MODEL, "--workers", "1"]
    proc = _fer_batch("images", *inputs, *common, "--out", tmp_path / "rows.parquet")
    assert proc.returncode == 1, proc.stderr  # an input could not be read: the same code as a local run
    table = pq.read_table(tmp_path / "rows.parquet")
    assert table.column_names[:9] == ["source", "face", "x", "y", "w", "h", "det_score", "emotion", "confidence"]
    assert str(table.schema.field("x").type) == "int64" and str(table.schema.field("happy").type) == "double"
    rows = table.to_pylist()
    local = _local([str(i) for i in inputs])
    assert len(rows) == sum(max(1, len(r.faces)) for r in local)  # one row per face, one for a photo without
    assert list(dict.fromkeys(r["source"] for r in rows)) == [r.source for r in local]
    assert [r["status"] for r in rows if r["face"] is None] == ["no_face", "error"]
    assert rows[-1]["error"] == "no such file or folder" and rows[-1]["x"] is None

    parts = tmp_path / "parts"
    proc = _fer_batch("images", *inputs, *common, "--out", f"{parts}/")
    assert proc.returncode == 1, proc.stderr
    key = ("source", "face", "x", "y", "w", "h", "emotion", "status")
    from_parts = pq.read_table(parts).to_pylist()
    assert sorted(tuple(str(r[k]) for k in key) for r in from_parts) == sorted(tuple(str(r[k]) for k in key)
                                                                               for r in rows)
    assert from_parts == rows  # the parts, read in name order, are the file's rows in input order
    proc = _fer_batch("images", *inputs, *common, "--out", f"{parts}/")
    assert proc.returncode == 2 and "--overwrite" in proc.stderr  # parts already there are never mixed

    # more photos than one task takes: a part per task, named in input order
    many = tmp_path / "many"
    many.mkdir()
    originals = sorted(SAMPLE_MEDIA.glob("*.[jp][pn]g"))
    for i in range(20):
        os.link(originals[i % len(originals)], many / f"photo_{i:03d}{originals[i % len(originals)].suffix}")
    inputs = [many, tmp_path / "missing.jpg"]
    assert _fer_batch("images", *inputs, *common, "--out", tmp_path / "many.parquet").returncode == 1
    rows = pq.read_table(tmp_path / "many.parquet").to_pylist()
    proc = _fer_batch("images", *inputs, *common, "--out", f"{parts}/", "--overwrite")
    assert proc.returncode == 1, proc.stderr
    names = sorted(p.name for p in parts.iterdir())
    assert len(names) == 3 and names == [f"part-{i:05d}.parquet" for i in range(3)]  # 8 photos a task
    assert pq.read_table(parts).to_pylist() == rows

    # CSV parts: a local run's CSV, cut at task boundaries (each part with the header); JSON: row objects
    (parts / ".part-00009.csv.partial").write_text("half a part of an interrupted run")
    proc = _fer_batch("images", *inputs, *common, "--out", f"{parts}/", "--format", "csv", "--overwrite")
    assert proc.returncode == 1, proc.stderr
    assert sorted(p.name for p in parts.iterdir()) == [n.replace(".parquet", ".csv") for n in names]
    whole = _fer_batch("images", *inputs, *common[:-2], "--engine", "local", "--out", tmp_path / "rows.csv")
    assert whole.returncode == 1, whole.stderr
    local_lines = (tmp_path / "rows.csv").read_text().splitlines()
    part_lines = [part.read_text().splitlines() for part in sorted(parts.iterdir())]
    assert all(lines[0] == local_lines[0] for lines in part_lines)
    assert [line for lines in part_lines for line in lines[1:]] == local_lines[1:]
    proc = _fer_batch("images", *inputs, *common, "--out", f"{parts}/", "--format", "json", "--overwrite")
    assert proc.returncode == 1, proc.stderr
    objects = [json.loads(line) for part in sorted(parts.iterdir()) for line in part.read_text().splitlines()]
    assert [o["source"] for o in objects] == [r["source"] for r in rows] and objects[0].keys() == rows[0].keys()


def _task_pids(stage: str) -> list[int]:
    """Ray worker processes running a task of one stage, by the title Ray gives them
    (ray::analyse_inputs while it runs one, ray::IDLE between tasks)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            title = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if entry.name.isdigit() and title.startswith(b"ray::") and stage.encode() in title:
            pids.append(int(entry.name))
    return pids


def test_a_killed_worker_loses_and_duplicates_no_input(cluster: str, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    originals = sorted(SAMPLE_MEDIA.glob("*.[jp][pn]g"))
    for i in range(96):
        os.link(originals[i % len(originals)], folder / f"photo_{i:03d}{originals[i % len(originals)].suffix}")
    items = FrameSource([folder]).pending()
    results: list[FrameResult] = []
    killed = None
    for outcome in ray_outcomes(items, RayConfig(model=MODEL, workers=1)):
        if isinstance(outcome, Analysed):
            results.append(outcome.result)
            if killed is None:  # the first row is out: the other batches are being analysed
                deadline = time.monotonic() + 30
                while not (pids := _task_pids("analyse_inputs")) and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert pids, "no worker running a task found"
                killed = pids[0]
                os.kill(killed, signal.SIGKILL)
    assert [r.source for r in results] == [item.source for item in items]  # each once, in order
    expected = {p.name: r for p, r in zip(originals, _local([str(p) for p in originals]))}
    for r in results:
        want = expected[originals[int(Path(r.source).stem.split("_")[1]) % len(originals)].name]
        assert (r.status, [(f.box, f.emotion) for f in r.faces]) == (want.status, [(f.box, f.emotion)
                                                                                  for f in want.faces])
    assert killed not in _task_pids("analyse_inputs")  # it was really gone, and another worker ran its batch again


_WITHOUT_RAY = """
import runpy, sys
class NoRay:
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoRay())
sys.argv = ["fer-batch", *sys.argv[1:]]
runpy.run_module("fer_batch", run_name="__main__", alter_sys=True)
"""


def test_records_reach_the_driver_with_every_digit() -> None:
    """Faces go between the stages in the JSON writers' layout, unrounded: the outputs round them as a local
    run's do, when they are written."""
    import numpy as np

    from fer_batch.analysis.pipeline import classified_face
    from fer_batch.engines.ray_engine import _faces_json, _record_row, to_result
    from fer_batch.records import Box, Detection, FaceResult

    probs = np.array([[0.1, 0.2, 0.05, 0.3, 0.15, 0.1, 0.1]], np.float32) / np.float32(1.0000001)
    row = {"source": "a.jpg", "status": "ok", "error": None, "width": 9, "height": 8,
           "faces": _faces_json([classified_face(0, Detection(Box(1, 2, 3, 4), 0.912345678), probs[0], NAMES)])}
    (face,) = to_result(row).faces
    assert face.det_score == 0.912345678 and face.emotion == NAMES[3]
    assert face.probabilities == {n: float(p) for n, p in zip(NAMES, probs[0])} and face.confidence == float(probs[0, 3])
    frame = FrameResult("v.mp4", Status.OK, (FaceResult(0, Box(1, 2, 3, 4), 0.987654321, "sad", 0.123456789,
                                                        dict.fromkeys(NAMES, 1 / 7), track=3),),
                        width=9, height=8, frame=5, time_s=0.2, extra={"duration_s": 4.0})
    back = to_result(_record_row(0, frame))
    assert back == frame and back.extra == frame.extra


def test_without_ray_engine_ray_says_how_to_install_it_and_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", _WITHOUT_RAY, "images", str(SAMPLE_MEDIA), "--engine", "ray",
                           "--out", str(tmp_path / "rows.csv")], capture_output=True, text=True, timeout=60,
                          cwd=REPO, check=False)
    assert proc.returncode == 2, proc.stderr
    assert 'pip install "fer-batch[ray]"' in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "rows.csv").exists()


def test_ray_address_without_engine_ray_is_a_warning(tmp_path: Path) -> None:
    proc = _fer_batch("images", SAMPLE_MEDIA / "grace_hopper.jpg", "--ray-address", "auto", "--model", MODEL,
                      "--out", tmp_path / "rows.csv")
    assert proc.returncode == 0, proc.stderr
    assert "--ray-address does nothing without --engine ray" in proc.stderr


def test_video_one_video_per_task_same_rows_and_tracks_as_local(cluster: str) -> None:
    from fer_batch.analysis.pipeline import Analyzer
    from fer_batch.analysis.video import VideoAnalyzer
    from fer_batch.inputs.video import Sampling

    clip = str(shared_path("media", "video", "fer_test.mp4"))
    sampling = Sampling(fps=2)
    local = [o.result for o in VideoAnalyzer(Analyzer(MODEL), sampling).analyze_frames(
        FrameSource([clip], video=True, sampling=sampling)) if isinstance(o, Analysed)]
    items = FrameSource([clip], video=True, sampling=sampling).pending()
    remote = [o.result for o in ray_outcomes(items, RayConfig(model=MODEL, sampling=sampling), video=True)
              if isinstance(o, Analysed)]
    assert [(r.frame, r.time_s) for r in remote] == [(r.frame, r.time_s) for r in local] and len(local) >= 8
    _assert_same_rows(local, remote)
    assert [[f.track for f in r.faces] for r in remote] == [[f.track for f in r.faces] for r in local]
    assert remote[0].extra["duration_s"] == pytest.approx(local[0].extra["duration_s"])


def test_cli_unreachable_cluster_is_a_clear_error_and_writes_nothing(tmp_path: Path) -> None:
    from .streaming import closed_port

    out = tmp_path / "rows.csv"
    proc = _fer_batch("images", SAMPLE_MEDIA, "--engine", "ray", "--ray-address", f"127.0.0.1:{closed_port()}",
                      "--model", MODEL, "--out", out)
    assert proc.returncode == 2 and "cannot reach the Ray cluster" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


class _KillsItsWorker:
    """A config field that ends the worker process that unpickles it: a task that crashes every worker it meets."""

    def __reduce__(self) -> tuple[object, tuple[int]]:
        return os._exit, (7,)


def test_a_task_that_raises_or_crashes_every_worker_fails_the_job_clearly(cluster: str, tmp_path: Path) -> None:
    from fer_batch.engines.ray_engine import TASK_RETRIES, RayJobError

    items = FrameSource([str(SAMPLE_MEDIA / "grace_hopper.jpg")]).pending()
    missing = tmp_path / "no_such_model.tflite"
    with pytest.raises(RayJobError, match="the Ray job failed: .*no_such_model"):
        list(ray_outcomes(items, RayConfig(model=str(missing))))  # raised in the task: not run again
    began = time.monotonic()
    # dies on each of its 1 + TASK_RETRIES runs, then the job fails instead of retrying for ever
    with pytest.raises(RayJobError, match="the Ray job failed"):
        list(ray_outcomes(items, RayConfig(model=MODEL, sampling=_KillsItsWorker())))  # type: ignore[arg-type]
    assert TASK_RETRIES < 20 and time.monotonic() - began < 120
    assert [o.result.status for o in ray_outcomes(items, RayConfig(model=MODEL))  # the cluster goes on
            if isinstance(o, Analysed)] == [Status.OK]


def test_an_interrupted_parts_run_leaves_whole_parts_and_a_rerun_writes_them_all(cluster: str,
                                                                                  tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    originals = sorted(SAMPLE_MEDIA.glob("*.[jp][pn]g"))
    for i in range(96):  # 4 tasks of 24 photos on one worker
        os.link(originals[i % len(originals)], photos / f"photo_{i:03d}{originals[i % len(originals)].suffix}")
    parts = tmp_path / "parts"
    common = ["--engine", "ray", "--ray-address", cluster, "--model", MODEL, "--workers", "1", "--quiet",
              "--out", f"{parts}/", "--format", "csv"]
    code, stderr = interrupt_when(["images", str(photos), *common],
                                  lambda: parts.is_dir() and any(p.suffix == ".csv" for p in parts.iterdir()))
    assert code == 130, stderr
    assert "the part files written so far are in" in stderr and "Traceback" not in stderr
    written = sorted(p for p in parts.iterdir() if not p.name.startswith("."))
    assert written and all(p.name.startswith("part-") for p in written)
    sources = [line.split(",")[0] for part in written for line in part.read_text().splitlines()[1:]]
    assert 0 < len(set(sources)) < 96  # whole parts of the photos finished so far

    (parts / ".part-00003.csv.partial").write_text("cut off")  # as a killed task leaves it
    proc = _fer_batch("images", photos, *common, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in parts.iterdir()) == [f"part-{i:05d}.csv" for i in range(4)]
    whole = _fer_batch("images", photos, "--model", MODEL, "--quiet", "--out", tmp_path / "rows.csv")
    assert whole.returncode == 0, whole.stderr
    assert [line for part in sorted(parts.iterdir()) for line in part.read_text().splitlines()[1:]] == \
        (tmp_path / "rows.csv").read_text().splitlines()[1:]

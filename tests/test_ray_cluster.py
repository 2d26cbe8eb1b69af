"""--engine ray on a real cluster of two Ray nodes (1 CPU each), started with `ray start` as docs/ray.md tells a user,
with token authentication: the same rows as a local run, a wrong or missing token refused, a driver stopped with
Ctrl-C (a clean end, and --resume finishes the job), and a whole node killed mid-run (nothing lost, nothing twice).

Every run is the command a user types (`fer-batch images ... --engine ray --ray-address HEAD:PORT`), in its own
process; the nodes are found and killed by their own folders (tests/ray_nodes.py), never another Ray on the machine.
The node-killing test comes last: the cluster has one node fewer after it.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import pytest

from tests.conftest import REPO, SAMPLE_MEDIA, with_default_sigint

pytest.importorskip("ray", reason='--engine ray needs the ray extra: pip install "fer-batch[ray]"')

from tests.ray_nodes import Cluster, Node

MODEL = "fast"  # the quicker shipped model: the cluster, not the model, is under test
PROBABILITY_TOLERANCE = 1e-4
EXACT_COLUMNS = ("source", "face", "x", "y", "w", "h", "emotion", "status", "error")
PHOTOS = 96  # enough batches of 16 to keep both nodes busy for a few seconds


@pytest.fixture(scope="module")
def nodes() -> Iterator[Cluster]:
    with Cluster(cpus=(1, 1)) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of PHOTOS photos (the sample photos, hard-linked under distinct names)."""
    folder = tmp_path_factory.mktemp("cluster") / "photos"
    folder.mkdir()
    originals = sorted(SAMPLE_MEDIA.glob("*.[jp][pn]g"))
    for i in range(PHOTOS):
        original = originals[i % len(originals)]
        os.link(original, folder / f"photo_{i:03d}{original.suffix}")
    return folder


def _command(*args: object) -> list[str]:
    return [sys.executable, "-m", "fer_batch", "images", *map(str, args), "--model", MODEL, "--quiet"]


def _on(cluster: Cluster, *args: object, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_command(*args), "--engine", "ray", "--ray-address", cluster.address], cwd=REPO,
                          env=cluster.env(**env), capture_output=True, text=True, timeout=300, check=False)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _local_rows(tmp_path: Path, *inputs: object) -> list[dict[str, str]]:
    out = tmp_path / "local.csv"
    subprocess.run(_command(*inputs, "--out", out), cwd=REPO, capture_output=True, text=True, timeout=300,
                   check=False)
    return _rows(out)


def _assert_same_rows(local: list[dict[str, str]], remote: list[dict[str, str]]) -> None:
    """The same rows in the same order: every column equal, the probabilities within float precision."""
    assert len(remote) == len(local) and list(remote[0]) == list(local[0])
    numbers = [c for c in local[0] if c not in EXACT_COLUMNS]  # det_score, confidence, one per class
    for a, b in zip(local, remote):
        assert {k: v for k, v in b.items() if k not in numbers} == {k: v for k, v in a.items() if k not in numbers}
        for column in numbers:
            assert (a[column] == b[column] == "") or abs(float(a[column]) - float(b[column])) <= PROBABILITY_TOLERANCE


class _TaskWatch:
    """Which nodes ran a task of the job's stage, watched from outside while a run goes on."""

    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = nodes
        self.seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            self.seen |= {i for i, node in enumerate(self.nodes) if node.running_tasks()}

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_two_nodes_write_the_same_rows_as_local_and_refuse_a_wrong_token(nodes: Cluster, photos: Path,
                                                                           tmp_path: Path) -> None:
    inputs = [photos, tmp_path / "missing.jpg"]
    out = tmp_path / "rows.csv"
    with _TaskWatch(nodes.nodes) as watch:
        proc = _on(nodes, *inputs, "--out", out)
    assert proc.returncode == 1, proc.stderr  # the missing input is an error row, as in a local run
    _assert_same_rows(_local_rows(tmp_path, *inputs), _rows(out))
    assert watch.seen == {0, 1}  # both nodes analysed photos

    quick = {"RAY_NUM_REDIS_GET_RETRIES": "2"}  # a refused driver gives up after 2 tries (Ray's default: 20)
    for env in ({"RAY_AUTH_TOKEN": "0" * 64}, {"RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN": ""}):
        refused = tmp_path / "refused.csv"
        proc = _on(nodes, *inputs, "--out", refused, **quick, **env)
        assert proc.returncode == 2 and "cannot reach the Ray cluster" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and not refused.exists()
        # without token mode, fer-batch says what to set
        assert ("set RAY_AUTH_MODE=token" in proc.stderr) is (env.get("RAY_AUTH_MODE") == "disabled")


def _wait_for(condition, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_an_interrupted_driver_ends_cleanly_and_resume_finishes_the_job(nodes: Cluster, photos: Path,
                                                                         tmp_path: Path) -> None:
    out = tmp_path / "rows.csv"
    # SIGINT at its default action: a suite started in the background inherits it ignored (tests/conftest.py)
    run = subprocess.Popen(with_default_sigint([*_command(photos, "--out", out), "--engine", "ray", "--ray-address",
                                                nodes.address]),
                           cwd=REPO, env=nodes.env(), stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: out.exists() and len(out.read_text().splitlines()) > 5, 120, "the first rows")
        run.send_signal(signal.SIGINT)  # Ctrl-C
        _, stderr = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    partial = _rows(out)  # a valid file: whole rows of the photos finished so far
    assert 0 < len({r["source"] for r in partial}) < PHOTOS and all(None not in r.values() for r in partial)
    # the job ends with its driver: no node goes on analysing for it
    _wait_for(lambda: not any(node.running_tasks() for node in nodes.nodes), 30, "the job's tasks to end")

    proc = _on(nodes, photos, "--out", out, "--resume")
    assert proc.returncode == 0, proc.stderr
    _assert_same_rows(_local_rows(tmp_path, photos), _rows(out))  # each photo once, none missing


def test_a_node_killed_mid_run_loses_and_duplicates_no_input(nodes: Cluster, photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "rows.csv"
    worker = nodes.nodes[1]
    run = subprocess.Popen([*_command(photos, "--out", out), "--engine", "ray", "--ray-address", nodes.address],
                           cwd=REPO, env=nodes.env(), stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(worker.running_tasks, 120, "a task on the worker node")
        worker.kill()  # the whole node: raylet, agents, workers, its part of the object store
        _, stderr = run.communicate(timeout=240)
    finally:
        run.kill()
    assert run.returncode == 0, stderr
    assert not worker.pids()  # the node is gone; the head finished its batches
    _assert_same_rows(_local_rows(tmp_path, photos), _rows(out))  # in order, each photo once

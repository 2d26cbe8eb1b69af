"""`--engine ray` against `--engine local` on the same cores, and on 1 and 2 Ray nodes of 1 CPU each.

    python benchmarks/ray_benchmark.py                     # 3,600 photos, 24 videos, 2 repeats
    python benchmarks/ray_benchmark.py --count 1200 --videos 0 --repeat 1 --options "--model fast"

The photos are copies (hard links, under distinct names) of real photos (../shared/media/photos when it is there,
else sample_media/), the videos copies of ../shared/media/video's clips. Each run is the command a user types, as
a whole process, timed from its start to its exit (start-up, connection, the workers' model loading included):

    fer-batch images FOLDER --out rows.csv --quiet --engine local                  # all usable cores
    fer-batch images FOLDER --out rows.csv --quiet --engine ray                    # the local cluster it starts
    taskset -c 0 fer-batch images FOLDER ... --engine local                        # one core
    taskset -c 0 fer-batch images FOLDER ... --engine ray --ray-address HEAD:PORT  # 1 node, then 2 nodes

The nodes are real Ray nodes started with `ray start` (tests/ray_nodes.py: own ports and folders, token
authentication), each of 1 CPU and pinned to its own core (node 0 on core 0, node 1 on core 1), as two 1-core
machines; the driver runs on the head's core, as it does on a cluster's head. They are started before the timed
runs, as a user's cluster is, and their workers run at nice 0 (RAY_worker_niceness=0, which fer-batch sets for the
local cluster it starts), so that they and the local runs compete alike with whatever else runs on the machine.

Each configuration runs ``--repeat`` times, the configurations interleaved so that a change of the machine's load
falls on all of them; the machine's load average is printed before and after. For each it prints images/s (best
and worst), Ray's start-up (a run on one photo, whole process) and its share of the run, the efficiency against
local on the same cores (Ray's images/s over local's), and the scaling from 1 to 2 nodes. Needs 2 usable cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fer_batch.runtime import cpu_description  # noqa: E402
from tests.ray_nodes import Cluster  # noqa: E402

SHARED = REPO.parent / "shared" / "media"
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
NICE_WORKERS = {"RAY_worker_niceness": "0"}


def copies(originals: list[Path], count: int, folder: Path) -> Path:
    """``count`` hard links to ``originals`` in turn, under distinct names, in a new ``folder``."""
    folder.mkdir(parents=True)
    for i in range(count):
        original = originals[i % len(originals)]
        os.link(original, folder / f"{i:05d}_{original.name}")
    return folder


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def timed(command: list[str], env: dict[str, str] | None = None) -> float:
    """Wall seconds of one whole process (it must succeed)."""
    began = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def rows_of(out: Path) -> set[str]:
    import csv  # noqa: PLC0415

    with out.open(newline="") as fh:
        return {row["source"] for row in csv.DictReader(fh)}


class Config:
    """One way of running a job: a name, the cores it may use, and how to run a command (local or on nodes)."""

    def __init__(self, name: str, cores: int, engine: list[str], pin: str | None = None,
                 cluster: Callable[[], Cluster | None] = lambda: None) -> None:
        self.name, self.cores, self.engine, self.pin, self.cluster = name, cores, engine, pin, cluster()

    def command(self, job: list[str]) -> tuple[list[str], dict[str, str]]:
        command = [sys.executable, "-m", "fer_batch", *job, "--quiet", "--overwrite", *self.engine]
        env = {**os.environ, **NICE_WORKERS}
        if self.cluster is not None:
            command += ["--ray-address", self.cluster.address]
            env = self.cluster.env()
        if self.pin is not None:
            command = ["taskset", "-c", self.pin, *command]
        return command, env


def measure(configs: list[Config], job: Callable[[Path], list[str]], small: Path, large: Path, count: int,
            repeat: int, out: Path, unit: str) -> dict[str, list[float]]:
    """Runs of every configuration on ``large`` (interleaved, ``repeat`` times) and once on ``small``."""
    walls: dict[str, list[float]] = {c.name: [] for c in configs}
    starts: dict[str, float] = {}
    for c in configs:
        command, env = c.command([*job(small), "--out", str(out)])
        starts[c.name] = timed(command, env)
    for _ in range(repeat):
        for c in configs:
            command, env = c.command([*job(large), "--out", str(out)])
            wall = timed(command, env)
            if unit == "images" and len(rows_of(out)) != count:
                raise SystemExit(f"{c.name}: {len(rows_of(out))} photos in the output, not {count}")
            walls[c.name].append(wall)
            print(f"  {c.name:<28} {count} {unit} in {wall:6.1f} s: {count / wall:6.1f} {unit}/s  (load {load()})",
                  flush=True)
    print(f"{unit}: best and worst of {repeat} run(s); start-up = the same command on one input")
    for c in configs:
        rates = sorted(count / w for w in walls[c.name])
        share = starts[c.name] / min(walls[c.name])
        print(f"  {c.name:<28} {rates[-1]:6.1f} .. {rates[0]:6.1f} {unit}/s; start-up {starts[c.name]:5.1f} s "
              f"({share:.0%} of the run)")
    return {c.name: [count / w for w in walls[c.name]] for c in configs}


def ratio(a: list[float], b: list[float]) -> str:
    """The ratio of two series of rates: best over best, and the range over the pairs run side by side."""
    pairs = sorted(x / y for x, y in zip(a, b))
    return f"{max(a) / max(b):.2f} (side-by-side pairs {pairs[0]:.2f}..{pairs[-1]:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=3600, help="photos (copies of the real photos)")
    parser.add_argument("--videos", type=int, default=24, help="videos (copies of the shared clips); 0: none")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--photos", type=Path, default=SHARED / "photos" if SHARED.is_dir() else REPO / "sample_media")
    parser.add_argument("--options", default="", help='Extra options for fer-batch, e.g. "--model fast".')
    parser.add_argument("--no-nodes", action="store_true",
                        help="only local against the local cluster on both cores (no 1- and 2-node runs)")
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs 2 usable cores (one per node)")
    extra = args.options.split()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # killed: still stop the nodes (finally below)
    print(f"cpu: {cpu_description()}\nload average before: {load()}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="fer-batch-ray-"))
    clusters: list[Cluster] = []

    def nodes(cpus: tuple[int, ...]) -> Cluster:
        clusters.append(Cluster(cpus=cpus, pin=True, extra_env=NICE_WORKERS).start())
        return clusters[-1]

    try:
        originals = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
        large = copies(originals, args.count, tmp / "photos")
        small = copies(originals[:1], 1, tmp / "one")
        both = ",".join(str(c) for c in sorted(os.sched_getaffinity(0))[:2])
        configs = [Config("local, 2 cores", 2, ["--engine", "local"], pin=both),
                   Config("ray, local cluster, 2 cores", 2, ["--engine", "ray"], pin=both)]
        if not args.no_nodes:
            configs += [
                Config("local, 1 core", 1, ["--engine", "local"], pin="0"),
                Config("ray, 1 node of 1 CPU", 1, ["--engine", "ray"], pin="0", cluster=lambda: nodes((1,))),
                Config("ray, 2 nodes of 1 CPU", 2, ["--engine", "ray"], pin="0", cluster=lambda: nodes((1, 1)))]
        print(f"photos: {args.count} copies of {len(originals)} real photos in {args.photos}", flush=True)
        rates = measure(configs, lambda folder: ["images", str(folder), *extra], small, large, args.count,
                        args.repeat, tmp / "rows.csv", "images")
        print(f"efficiency, ray on the local cluster against local, 2 cores: "
              f"{ratio(rates['ray, local cluster, 2 cores'], rates['local, 2 cores'])}")
        if not args.no_nodes:
            print(f"efficiency, 1 node of 1 CPU against local on 1 core: "
                  f"{ratio(rates['ray, 1 node of 1 CPU'], rates['local, 1 core'])}")
            print(f"efficiency, 2 nodes of 1 CPU against local on 2 cores: "
                  f"{ratio(rates['ray, 2 nodes of 1 CPU'], rates['local, 2 cores'])}")
            print(f"scaling, 1 -> 2 nodes: {ratio(rates['ray, 2 nodes of 1 CPU'], rates['ray, 1 node of 1 CPU'])}",
                  flush=True)
        clips = sorted((SHARED / "video").glob("*.mp4")) if (SHARED / "video").is_dir() else []
        if args.videos and clips:
            videos = copies(clips, args.videos, tmp / "videos")
            one = copies(clips[:1], 1, tmp / "one_video")
            print(f"videos: {args.videos} copies of {len(clips)} clips, one video per task", flush=True)
            video_rates = measure(configs[:2], lambda folder: ["video", str(folder), *extra], one, videos,
                                  args.videos, args.repeat, tmp / "video.csv", "videos")
            print(f"efficiency, video, ray on the local cluster against local, 2 cores: "
                  f"{ratio(video_rates['ray, local cluster, 2 cores'], video_rates['local, 2 cores'])}")
        print(f"load average after: {load()}")
    finally:
        for cluster in clusters:
            cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""fer-batch against the peer tool, the PyPI ``fer`` package (justinshenk/fer), on one folder of photos.

    python benchmarks/peer_benchmark.py --peer-python /path/to/peer-venv/bin/python
    python benchmarks/peer_benchmark.py --peer-python PY --runs 3 --fer-batch-args "--detector haar"

Both tools are timed as **whole processes, start-up and model loading included**, the way a user runs them:

* fer-batch: ``python -m fer_batch images FOLDER --out TMP.csv --quiet`` with this interpreter, from the
  repository root (so the working tree's code runs, not an installed copy), plus ``--fer-batch-args``;
  images are the distinct sources it read (status ``ok`` or ``no_face``), faces its ``ok`` rows;
* fer: a small script run with ``--peer-python`` that builds ``FER()`` (its default detector: OpenCV's Haar
  cascade; ``--peer-mtcnn`` gives ``FER(mtcnn=True)``, facenet-pytorch's MTCNN) and calls ``detect_emotions``
  on ``cv2.imread`` of every image in the folder (fer-batch's suffixes, recursive, sorted), skipping images
  OpenCV cannot read.

It installs nothing. ``fer`` needs its own environment (its pins clash with fer-batch's), for example
``python3 -m venv peer-venv && peer-venv/bin/pip install fer``; without it only fer-batch is timed. Each run
times both tools once, one after the other; the table shows each run and the best (shortest) of each, and the
ratio is fer-batch images/s over fer images/s for the best runs. Wall time of two short processes is noisy:
run it on an idle machine and several times (``--runs``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fer_batch.inputs.images import IMAGE_SUFFIXES  # noqa: E402

SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
PEER_INSTALL = "python3 -m venv /path/to/peer-venv && /path/to/peer-venv/bin/pip install fer"
PEER_MISSING = 3  # the peer script's exit code when ``fer`` cannot be imported

# Run by the peer's interpreter: argv is FOLDER MTCNN(0/1) SUFFIX...; prints one JSON object on stdout.
PEER_SCRIPT = '''
import json, os, sys
from pathlib import Path

try:
    import cv2
    try:
        from fer.fer import FER
    except ImportError:
        from fer import FER
    import fer
except ImportError as exc:
    print(f"cannot import fer: {exc}", file=sys.stderr)
    sys.exit(3)

folder, mtcnn, suffixes = Path(sys.argv[1]), sys.argv[2] == "1", {s.lower() for s in sys.argv[3:]}
paths = []
for dirpath, dirnames, filenames in os.walk(folder):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    paths.extend(Path(dirpath) / f for f in filenames if Path(f).suffix.lower() in suffixes)
paths.sort(key=lambda p: p.relative_to(folder).as_posix().lower())

detector = FER(mtcnn=True) if mtcnn else FER()
images = faces = unreadable = 0
for path in paths:
    image = cv2.imread(str(path))
    if image is None:
        unreadable += 1
        continue
    images += 1
    faces += len(detector.detect_emotions(image))
print(json.dumps({"images": images, "faces": faces, "unreadable": unreadable,
                  "version": getattr(fer, "__version__", "?"), "detector": "mtcnn" if mtcnn else "haar"}))
'''


@dataclass(frozen=True)
class Timing:
    """One timed process: wall and CPU seconds (user + system, all its threads), images and faces it reported."""

    wall_s: float
    cpu_s: float
    images: int
    faces: int

    @property
    def images_per_s(self) -> float:
        return self.images / self.wall_s if self.wall_s > 0 else 0.0


class PeerUnavailable(Exception):
    """``fer`` cannot be imported in the peer interpreter."""


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """Run ``cmd`` to completion; its result, wall seconds and CPU seconds."""
    cpu_before = children_cpu_s()
    began = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    wall = time.perf_counter() - began
    return proc, wall, children_cpu_s() - cpu_before


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_fer_batch(folder: Path, extra: list[str], workdir: Path) -> Timing:
    out = workdir / "fer_batch.csv"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "fer_batch", "images", str(folder), "--out", str(out), "--quiet", *extra]
    proc, wall, cpu = timed(cmd, REPO)
    if proc.returncode not in (0, 1) or not out.exists():  # 1: some inputs unreadable, the run still finished
        raise SystemExit(f"fer-batch failed (exit {proc.returncode}): {shlex.join(cmd)}\n{tail(proc.stderr)}")
    with out.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    images = len({row["source"] for row in rows if row["status"] in ("ok", "no_face")})
    faces = sum(row["status"] == "ok" for row in rows)
    return Timing(wall, cpu, images, faces)


def peer_importable(peer_python: str) -> str | None:
    """None when ``fer`` can be found by ``peer_python``, else why not (cheap: imports nothing heavy)."""
    code = "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('fer') else 1)"
    try:
        proc = subprocess.run([peer_python, "-c", code], capture_output=True, text=True, check=False)
    except OSError as exc:
        return f"cannot run {peer_python}: {exc}"
    return None if proc.returncode == 0 else f"the package fer is not installed for {peer_python}"


def run_peer(peer_python: str, folder: Path, mtcnn: bool, workdir: Path) -> tuple[Timing, dict[str, object]]:
    script = workdir / "peer_fer.py"
    script.write_text(PEER_SCRIPT)
    cmd = [peer_python, str(script), str(folder), "1" if mtcnn else "0", *sorted(IMAGE_SUFFIXES)]
    proc, wall, cpu = timed(cmd, workdir)
    if proc.returncode == PEER_MISSING:
        raise PeerUnavailable(tail(proc.stderr, 3))
    if proc.returncode != 0:
        raise SystemExit(f"fer failed (exit {proc.returncode}): {shlex.join(cmd)}\n{tail(proc.stderr)}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return Timing(wall, cpu, int(report["images"]), int(report["faces"])), report


def cpu_description() -> tuple[str, list[str]]:
    """The CPU model name and which of :data:`SPEED_FLAGS` it has (from /proc/cpuinfo where there is one)."""
    model, flags = "", set[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name" and not model:
                model = value
            elif key == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), [flag for flag in SPEED_FLAGS if flag in flags]


def print_table(rows: list[tuple[str, Timing]]) -> None:
    print(f"{'tool':<22} {'wall s':>8} {'cpu s':>8} {'images':>7} {'faces':>6} {'images/s':>9}")
    for name, t in rows:
        print(f"{name:<22} {t.wall_s:>8.2f} {t.cpu_s:>8.2f} {t.images:>7} {t.faces:>6} {t.images_per_s:>9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, default=REPO.parent / "shared" / "media" / "photos")
    parser.add_argument("--peer-python", default=sys.executable,
                        help="Python interpreter in which fer is importable (default: this one)")
    parser.add_argument("--peer-mtcnn", action="store_true", help="time FER(mtcnn=True) instead of FER()")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--fer-batch-args", default="", help='extra fer-batch options, e.g. "--detector haar"')
    args = parser.parse_args()
    if not args.folder.is_dir():
        parser.error(f"--folder {args.folder} is not a folder")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    folder = args.folder.resolve()
    extra = shlex.split(args.fer_batch_args)

    model, flags = cpu_description()
    print(f"date: {datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"cpu: {model}, {os.cpu_count()} CPUs, flags: {' '.join(flags) or 'none of ' + ' '.join(SPEED_FLAGS)}")
    print(f"folder: {folder}")
    print(f"fer-batch: {shlex.join([sys.executable, '-m', 'fer_batch', 'images', 'FOLDER', *extra])}")

    missing = peer_importable(args.peer_python)
    if missing:
        print(f"peer: NOT TIMED: {missing}. Install it into a separate venv: {PEER_INSTALL}, "
              "then pass --peer-python /path/to/peer-venv/bin/python")
    print(flush=True)

    ours: list[Timing] = []
    theirs: list[Timing] = []
    peer_report: dict[str, object] = {}
    rows: list[tuple[str, Timing]] = []
    with tempfile.TemporaryDirectory(prefix="peer_benchmark_") as tmp:
        workdir = Path(tmp)
        for run in range(1, args.runs + 1):
            ours.append(run_fer_batch(folder, extra, workdir))
            rows.append((f"fer-batch (run {run})", ours[-1]))
            if missing is None:
                try:
                    timing, peer_report = run_peer(args.peer_python, folder, args.peer_mtcnn, workdir)
                except PeerUnavailable as exc:
                    missing = str(exc)
                    print(f"peer: NOT TIMED: {missing}. Install it into a separate venv: {PEER_INSTALL}")
                else:
                    theirs.append(timing)
                    rows.append((f"fer (run {run})", timing))

    best_ours = min(ours, key=lambda t: t.wall_s)
    best_theirs = min(theirs, key=lambda t: t.wall_s) if theirs else None
    if peer_report:
        print(f"peer: fer {peer_report['version']}, detector {peer_report['detector']}, "
              f"{peer_report['unreadable']} unreadable images skipped")
    if args.runs > 1:
        rows.append(("fer-batch (best)", best_ours))
        if best_theirs:
            rows.append(("fer (best)", best_theirs))
    print_table(rows)
    if best_theirs and best_theirs.images_per_s > 0:
        ratio = best_ours.images_per_s / best_theirs.images_per_s
        print(f"\nratio (fer-batch images/s / fer images/s): {ratio:.2f}x")
    else:
        print("\nratio: not available (fer was not timed)")


if __name__ == "__main__":
    main()

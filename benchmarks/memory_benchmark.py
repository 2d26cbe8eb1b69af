"""Peak memory of a whole `fer-batch images` run over generated folders of growing size.

    python benchmarks/memory_benchmark.py                      # 1,000 and 10,000 photos
    python benchmarks/memory_benchmark.py --counts 1000 10000 100000

Each folder holds N photos made from the shipped sample_media photos (scaled to 320 px on their longer side,
each written once and hard-linked N/4 times, so the folder costs little disk), spread over subfolders of 1,000.
The run is the command a user types (`python -m fer_batch images FOLDER --out rows.csv --quiet`), timed as a
whole process, start-up included; its peak resident memory comes from the kernel (``ru_maxrss`` of the child).
Memory that stays flat from one size to the next is what lets a run over 100,000 or 1,000,000 photos finish: the
pipeline keeps at most three chunks of images in memory, and the writers stream.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fer_batch.runtime import cpu_description  # noqa: E402

SAMPLES = ("grace_hopper.jpg", "astronaut.png", "two_people_composite.jpg", "chelsea_cat.png")
PER_FOLDER = 1000


def make_folder(root: Path, count: int) -> Path:
    """``count`` photos under ``root``: four distinct images, hard-linked (copied where links fail)."""
    originals = []
    for name in SAMPLES:
        image = cv2.imread(str(REPO / "sample_media" / name))
        scale = 320 / max(image.shape[:2])
        path = root / f"original_{Path(name).stem}.jpg"
        cv2.imwrite(str(path), cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
        originals.append(path)
    folder = root / f"photos_{count}"
    for i in range(count):
        sub = folder / f"{i // PER_FOLDER:04d}"
        sub.mkdir(parents=True, exist_ok=True)
        target = sub / f"photo_{i:07d}.jpg"
        try:
            os.link(originals[i % len(originals)], target)
        except OSError:
            target.write_bytes(originals[i % len(originals)].read_bytes())
    return folder


def run(folder: Path, out: Path, options: list[str]) -> tuple[float, float, int]:
    """Wall seconds, peak resident MiB of the child, and the rows written."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fer_batch", "images", str(folder), "--out", str(out), "--overwrite",
                    "--quiet", *options], check=True, cwd=REPO)
    wall = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux: the largest child so far
    if peak <= before:
        print("  (peak not above an earlier, larger run's: the kernel reports the largest child only)")
    with out.open() as fh:
        rows = sum(1 for _ in csv.DictReader(fh))
    return wall, peak / 1024, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--options", default="", help='Extra options for fer-batch images, e.g. "--model fast".')
    args = parser.parse_args()
    print(f"cpu: {cpu_description()}")
    print(f"{'photos':>8} {'rows':>8} {'wall s':>8} {'images/s':>9} {'peak MiB':>9}")
    with tempfile.TemporaryDirectory(prefix="fer-batch-memory-") as tmp:
        for count in sorted(args.counts):  # smallest first: ru_maxrss only ever grows
            folder = make_folder(Path(tmp), count)
            wall, peak, rows = run(folder, Path(tmp) / f"rows_{count}.csv", args.options.split())
            print(f"{count:>8} {rows:>8} {wall:>8.1f} {count / wall:>9.1f} {peak:>9.0f}", flush=True)


if __name__ == "__main__":
    main()

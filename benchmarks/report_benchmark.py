"""The report page of a large run: its size and build time, ``fer-batch report`` timed as a whole process.

    python benchmarks/report_benchmark.py                        # 100,000 rows, CSV
    python benchmarks/report_benchmark.py --rows 1000000 --format jsonl

It writes a synthetic results file of ``fer-batch images`` with the project's own writer: ``--rows`` rows (one
per face, one per photo without a face or unreadable) over photos that are links to the four photos of ``sample_media/`` (about 2.2 faces a photo, boxes inside the
photo, random probabilities; 5% of the photos without a face, 1% unreadable), so the thumbnails are cut from real
images. Then it runs ``fer-batch report`` on it as a new process, as a user does (Python's start-up and the
imports included; no model is loaded: a report reads results, not faces), and prints the results file's size,
the HTML's size, its thumbnail count and the wall time; where Chromium is installed, also the wall time of
headless Chromium opening the page and taking a screenshot (the browser's own start-up included). Machines are
noisy: read the figures as rates.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fer_batch.model_file import EMOTIONS  # noqa: E402
from fer_batch.outputs.writers import OutputFormat, get_writer  # noqa: E402
from fer_batch.records import Box, FaceResult, FrameResult, Status  # noqa: E402

PHOTOS = ("grace_hopper.jpg", "two_people_composite.jpg", "astronaut.png", "chelsea_cat.png")


def synthesise(folder: Path, rows: int, fmt: OutputFormat, seed: int = 0) -> Path:
    """A results file of about ``rows`` rows over links to sample_media/'s photos, in ``folder``."""
    rng = np.random.default_rng(seed)
    sizes = {}
    for name in PHOTOS:
        image = cv2.imread(str(REPO / "sample_media" / name))
        sizes[name] = (image.shape[1], image.shape[0])
    photos = folder / "photos"
    photos.mkdir()
    path = folder / f"results.{fmt.value}"
    binary = fmt is OutputFormat.PARQUET
    written, index = 0, 0
    with (path.open("wb") if binary else path.open("w", newline="", encoding="utf-8")) as fh, \
            get_writer(fmt, fh, EMOTIONS) as writer:
        while written < rows:
            name = PHOTOS[index % len(PHOTOS)]
            link = photos / f"{index:07d}_{name}"
            os.symlink(REPO / "sample_media" / name, link)
            index += 1
            roll = rng.random()
            if roll < 0.01:
                writer.write(FrameResult(str(link), Status.ERROR, error="corrupt JPEG data (or cut off)"))
                written += 1
                continue
            if roll < 0.06:
                writer.write(FrameResult(str(link), Status.NO_FACE, width=sizes[name][0], height=sizes[name][1]))
                written += 1
                continue
            width, height = sizes[name]
            faces = []
            for face in range(int(rng.integers(1, 4))):
                w = int(rng.integers(min(width, height) // 8, min(width, height) // 3))
                x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - w))
                probs = rng.dirichlet(np.full(len(EMOTIONS), 0.4))
                top = int(np.argmax(probs))
                faces.append(FaceResult(face, Box(x, y, w, w), float(rng.uniform(0.6, 1.0)), EMOTIONS[top],
                                        float(probs[top]), dict(zip(EMOTIONS, map(float, probs)))))
            writer.write(FrameResult(str(link), Status.OK, tuple(faces), width=width, height=height))
            written += len(faces)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the synthetic results file (faces, and photos without one)")
    parser.add_argument("--format", dest="fmt", default="csv", choices=[f.value for f in OutputFormat],
                        help="the results file's format")
    parser.add_argument("--repeat", type=int, default=3, help="runs of fer-batch report; the best is printed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fer-batch-report-bench-") as tmp:
        folder = Path(tmp)
        began = time.perf_counter()
        results = synthesise(folder, args.rows, OutputFormat(args.fmt))
        print(f"synthesised {args.rows:,} rows ({results.stat().st_size / 1e6:.1f} MB {args.fmt}) in "
              f"{time.perf_counter() - began:.1f} s")
        times = []
        for _ in range(args.repeat):
            command = [sys.executable, "-m", "fer_batch", "report", str(results), "--out", str(folder / "report.html"),
                       "--quiet"]
            began = time.perf_counter()
            subprocess.run(command, check=True, cwd=REPO)
            times.append(time.perf_counter() - began)
        page = (folder / "report.html").read_text(encoding="utf-8")
        thumbnails = page.count('<img class="thumb"')
        print(f"fer-batch report, whole process: best {min(times):.2f} s of {args.repeat} "
              f"({', '.join(f'{t:.2f}' for t in times)}); HTML {len(page.encode()) / 1e6:.2f} MB, "
              f"{thumbnails} thumbnails")
        browser = shutil.which("chromium")
        if browser:
            began = time.perf_counter()
            subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,2000",
                            f"--screenshot={folder / 'report.png'}", (folder / "report.html").as_uri()],
                           check=True, capture_output=True)
            print(f"headless Chromium, open and screenshot (its start-up included): {time.perf_counter() - began:.2f} s")


if __name__ == "__main__":
    main()

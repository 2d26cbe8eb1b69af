"""`fer-batch images --engine ray` with 1 and 2 workers against `--engine local`, on a generated folder.

    python benchmarks/ray_benchmark.py                   # 2,000 photos
    python benchmarks/ray_benchmark.py --count 5000 --options "--model fast"

The folder holds N photos made from the shipped sample_media photos (scaled to 320 px on their longer side,
each written once and hard-linked: see memory_benchmark.py). Each run is the command a user types, as a whole
process (start-up, Ray's local cluster and model loading included):

    fer-batch images FOLDER --engine ray --workers W --out rows.parquet --quiet
    fer-batch images FOLDER --engine local --out rows.parquet --quiet

It prints images/s for each, the scaling from 1 to 2 workers, and Ray's overhead against the local engine on the
same folder and machine, with the CPU it ran on. Every run must write one row per photo at least.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from memory_benchmark import make_folder  # noqa: E402

from fer_batch.runtime import cpu_description  # noqa: E402


def run(folder: Path, out: Path, options: list[str]) -> tuple[float, int]:
    """Wall seconds of one whole `fer-batch images` process, and the distinct sources in its output."""
    import pyarrow.parquet as pq  # noqa: PLC0415 - the parquet extra

    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fer_batch", "images", str(folder), "--out", str(out), "--quiet",
                    "--overwrite", *options], check=True, cwd=REPO)
    wall = time.perf_counter() - began
    sources = len(set(pq.read_table(out, columns=["source"]).column("source").to_pylist()))
    return wall, sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--options", default="", help='Extra options for fer-batch images, e.g. "--model fast".')
    args = parser.parse_args()
    extra = args.options.split()
    print(f"cpu: {cpu_description()}")
    with tempfile.TemporaryDirectory(prefix="fer-batch-ray-") as tmp:
        folder = make_folder(Path(tmp), args.count)
        out = Path(tmp) / "rows.parquet"
        rates: dict[str, float] = {}
        for name, options in (("local", ["--engine", "local"]), ("ray, 1 worker", ["--engine", "ray", "--workers", "1"]),
                              ("ray, 2 workers", ["--engine", "ray", "--workers", "2"])):
            wall, sources = run(folder, out, [*options, *extra])
            if sources != args.count:
                raise SystemExit(f"{name}: {sources} photos in the output, not {args.count}")
            rates[name] = args.count / wall
            print(f"{name:>15}: {args.count} photos in {wall:6.1f} s, {rates[name]:6.1f} images/s", flush=True)
    scaling = rates["ray, 2 workers"] / rates["ray, 1 worker"]
    print(f"scaling 1 -> 2 workers: {scaling:.2f}x")
    for name in ("ray, 1 worker", "ray, 2 workers"):
        overhead = rates["local"] / rates[name] - 1
        print(f"Ray's overhead against --engine local ({name}): {overhead:+.0%} time per photo")


if __name__ == "__main__":
    main()

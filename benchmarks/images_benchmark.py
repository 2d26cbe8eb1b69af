"""Throughput of the classifier alone and of the whole images pipeline.

    python benchmarks/images_benchmark.py                          # shipped model, sample_media
    python benchmarks/images_benchmark.py --model fast --folder ../shared/media/photos --detector haar
    python benchmarks/images_benchmark.py --model accurate --precision int8 --skip-pipeline

Prints:
* classification: faces/s at the default batch size (256), median of several timed passes over
  4,096 crops, after a warm-up pass (the first call traces the TensorFlow graph);
* end to end: images/s and faces/s for ``Analyzer.analyze_paths`` over the folder (decode,
  detect, crop, classify), also after one warm-up pass.

Machines are noisy: run it on an idle machine and read the figures as rates, not as test results.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fer_batch.classify import DEFAULT_BATCH_SIZE, PRECISION_CHOICES, EmotionClassifier  # noqa: E402
from fer_batch.models import DEFAULT_MODEL, resolve_model  # noqa: E402
from fer_batch.runtime import import_tensorflow_quietly  # noqa: E402


def classification_throughput(model: str, batch_size: int, faces: int, repeats: int,
                              precision: str = "auto") -> tuple[float, str]:
    clf = EmotionClassifier.load(resolve_model(model), batch_size=batch_size, precision=precision)
    h, w = clf.input_size
    crops = np.random.default_rng(0).integers(0, 256, (faces, h, w, clf.info.channels), dtype=np.uint8)
    clf.predict_proba(crops[: batch_size * 2])  # warm-up: graph tracing and oneDNN kernel selection
    rates = []
    for _ in range(repeats):
        began = time.perf_counter()
        clf.predict_proba(crops)
        rates.append(faces / (time.perf_counter() - began))
    return statistics.median(rates), f"{clf.info.name} ({clf.precision})"


def pipeline_throughput(model: str, folder: Path, detector: str, batch_size: int,
                        precision: str = "auto") -> tuple[float, float, int, int]:
    from fer_batch.pipeline import Analyzer  # noqa: PLC0415

    analyzer = Analyzer(model, detector, batch_size=batch_size, precision=precision)
    list(analyzer.analyze_paths([folder]))  # warm-up
    began = time.perf_counter()
    results = list(analyzer.analyze_paths([folder]))
    seconds = time.perf_counter() - began
    faces = sum(len(r.faces) for r in results)
    return len(results) / seconds, faces / seconds, len(results), faces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--precision", default="auto", choices=PRECISION_CHOICES)
    parser.add_argument("--faces", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--folder", type=Path, default=REPO / "sample_media")
    parser.add_argument("--detector", default="mtcnn", choices=["mtcnn", "haar"])
    parser.add_argument("--skip-pipeline", action="store_true")
    args = parser.parse_args()

    tf = import_tensorflow_quietly()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, TensorFlow {tf.__version__}, "
          f"intra-op threads {tf.config.threading.get_intra_op_parallelism_threads() or 'auto'}")
    rate, name = classification_throughput(args.model, args.batch_size, args.faces, args.repeats, args.precision)
    print(f"classification: model {name}: {rate:,.0f} faces/s (batch size {args.batch_size}, "
          f"{args.faces} crops, median of {args.repeats})")
    if not args.skip_pipeline:
        ips, fps, n, faces = pipeline_throughput(args.model, args.folder, args.detector, args.batch_size,
                                                 args.precision)
        print(f"end to end ({args.detector}): {ips:.2f} images/s, {fps:.2f} faces/s "
              f"({n} images, {faces} faces in {args.folder})")


if __name__ == "__main__":
    main()

"""Throughput of the classifier alone, of the detector alone, and of the whole images pipeline (warm).

    python benchmarks/images_benchmark.py                          # shipped model, sample_media
    python benchmarks/images_benchmark.py --model fast --folder ../shared/media/photos --detector haar
    python benchmarks/images_benchmark.py --model accurate --precision int8 --skip-pipeline

Prints the CPU and the instruction-set flags int8 speed depends on (AVX2, AVX-512, VNNI), then:
* classification: faces/s at the default batch size (256), median of several timed passes over
  4,096 crops, after a warm-up pass; at int8, once per runtime that is installed (LiteRT, which
  fer-batch uses, and TensorFlow's own TFLite interpreter);
* detection: milliseconds per image for the detector alone over the folder (one thread);
* end to end: images/s and faces/s for ``Analyzer.analyze_paths`` over the folder (decode,
  detect, crop, classify), after one warm-up pass.

None of these include start-up (imports, model loading): ``benchmarks/peer_benchmark.py`` times whole
processes. Machines are noisy: run it on an idle machine and read the figures as rates, not as test results.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fer_batch.classify import (  # noqa: E402
    DEFAULT_BATCH_SIZE,
    PRECISION_CHOICES,
    EmotionClassifier,
    Int8Runner,
    tflite_interpreter_class,
)
from fer_batch.detect import DEFAULT_DETECTOR, DetectorName, make_detector  # noqa: E402
from fer_batch.model_file import read_info, read_int8  # noqa: E402
from fer_batch.models import DEFAULT_MODEL, resolve_model  # noqa: E402
from fer_batch.runtime import cpu_description, import_tensorflow_quietly  # noqa: E402
from fer_batch.sources import iter_sources, read_image  # noqa: E402


def int8_runtimes() -> dict[str, object]:
    """Interpreter classes by name: LiteRT's (what fer-batch runs) and TensorFlow's, where installed."""
    found: dict[str, object] = {}
    try:
        from ai_edge_litert import __version__ as litert_version  # noqa: PLC0415

        found[f"LiteRT {litert_version}"] = tflite_interpreter_class()
    except ImportError:
        pass
    try:
        tf = import_tensorflow_quietly()
        found[f"TensorFlow {tf.__version__} tf.lite"] = tf.lite.Interpreter
    except ImportError:
        pass
    return found


def classification_throughput(model: str, batch_size: int, faces: int, repeats: int,
                              precision: str = "auto", interpreter: object | None = None) -> tuple[float, str]:
    if interpreter is not None:  # the int8 network on a given interpreter
        path = resolve_model(model)
        info = read_info(path)
        clf = EmotionClassifier(Int8Runner(read_int8(path) or b"", info, interpreter=interpreter), info,
                                batch_size=batch_size)
    else:
        clf = EmotionClassifier.load(resolve_model(model), batch_size=batch_size, precision=precision)
    h, w = clf.input_size
    crops = np.random.default_rng(0).integers(0, 256, (faces, h, w, clf.info.channels), dtype=np.uint8)
    clf.predict_proba(crops[: batch_size * 2])  # warm-up: tensor allocation, graph tracing, kernel selection
    rates = []
    for _ in range(repeats):
        began = time.perf_counter()
        clf.predict_proba(crops)
        rates.append(faces / (time.perf_counter() - began))
    return statistics.median(rates), f"{clf.info.name} ({clf.precision})"


def detection_ms(folder: Path, detector: str) -> tuple[float, int, int]:
    """Mean milliseconds per image for the detector alone (one thread, images decoded beforehand)."""
    images = [read_image(item.path) for item in iter_sources([folder]) if item.path is not None]
    found = make_detector(detector)
    found.detect(images[:1])  # warm-up
    began = time.perf_counter()
    faces = sum(len(found.detect([image])[0]) for image in images)
    return 1000 * (time.perf_counter() - began) / max(1, len(images)), len(images), faces


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
    parser.add_argument("--detector", default=DEFAULT_DETECTOR.value, choices=[d.value for d in DetectorName])
    parser.add_argument("--skip-pipeline", action="store_true")
    args = parser.parse_args()

    print(f"cpu: {cpu_description()}")
    int8 = args.precision == "int8" or (args.precision == "auto"
                                        and read_info(resolve_model(args.model)).precision == "int8")
    runtimes = int8_runtimes() if int8 else {"Keras (float32)": None}
    for runtime, interpreter in runtimes.items():
        rate, name = classification_throughput(args.model, args.batch_size, args.faces, args.repeats,
                                               args.precision, interpreter)
        print(f"classification: model {name} on {runtime}: {rate:,.0f} faces/s (batch size {args.batch_size}, "
              f"{args.faces} crops, median of {args.repeats})")
    if not args.skip_pipeline:
        ms, n, faces = detection_ms(args.folder, args.detector)
        print(f"detection alone ({args.detector}, one thread): {ms:.1f} ms per image ({n} images, {faces} faces)")
        ips, fps, n, faces = pipeline_throughput(args.model, args.folder, args.detector, args.batch_size,
                                                 args.precision)
        print(f"end to end ({args.detector}): {ips:.2f} images/s, {fps:.2f} faces/s "
              f"({n} images, {faces} faces in {args.folder})")


if __name__ == "__main__":
    main()

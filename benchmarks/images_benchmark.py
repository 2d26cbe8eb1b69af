"""Throughput of the classifier alone, of the detector alone, and of the whole images pipeline (warm).

    python benchmarks/images_benchmark.py                          # shipped model, sample_media
    python benchmarks/images_benchmark.py --model fast --folder ../shared/media/photos --detector haar
    python benchmarks/images_benchmark.py --model accurate --precision int8 --skip-pipeline
    python benchmarks/images_benchmark.py --model fast --skip-pipeline --crops ../shared/data/fer2013/validation
    python benchmarks/images_benchmark.py --model fast --skip-pipeline --emulate-avx2   # on an AVX-512 CPU

Prints the CPU and the instruction-set flags int8 speed depends on (AVX2, AVX-512, VNNI), then:
* classification: faces/s at the default batch size (256), median of several timed passes over
  4,096 crops (noise, or real face crops with ``--crops``, which also prints each runtime's agreement
  with LiteRT), after a warm-up pass, once per runtime the machine can run the network on: LiteRT int8
  (what fer-batch runs); where the model file carries its float32 network and TensorFlow is installed,
  that network converted to float32, float16-weight and dynamic-range TFLite on LiteRT; TensorFlow's own
  tf.lite, OpenVINO (reads the TFLite file) and ONNX Runtime (after tf2onnx) where they are installed;
  ``--emulate-avx2`` limits LiteRT's XNNPACK to the kernels a CPU without AVX-512 gets
  (see ``benchmarks/xnnpack_isa.py``);
* detection: milliseconds per image for the detector alone over the folder (one thread);
* end to end: images/s and faces/s for ``Analyzer.analyze_paths`` over the folder (decode,
  detect, crop, classify), after one warm-up pass.

None of these include start-up (imports, model loading): ``benchmarks/peer_benchmark.py`` times whole
processes. Machines are noisy: run it on an idle machine and read the figures as rates, not as test results.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fer_batch.analysis.classify import (  # noqa: E402
    DEFAULT_BATCH_SIZE,
    PRECISION_CHOICES,
    EmotionClassifier,
    Int8Runner,
    softmax,
    tflite_interpreter_class,
)
from fer_batch.analysis.detect import DEFAULT_DETECTOR, DetectorName, make_detector  # noqa: E402
from fer_batch.inputs.images import read_image  # noqa: E402
from fer_batch.inputs.sources import iter_sources  # noqa: E402
from fer_batch.model_file import (  # noqa: E402
    ModelInfo,
    load_keras_model,
    read_info,
    read_int8,
    stored_precisions,
)
from fer_batch.models import DEFAULT_MODEL, resolve_model  # noqa: E402
from fer_batch.runtime import (  # noqa: E402
    cpu_description,
    import_tensorflow_quietly,
    silenced_stderr,
    usable_cpus,
)


class OpenVinoRunner:
    """The same int8 TFLite network compiled by OpenVINO's CPU plugin (it reads TFLite files directly)."""

    precision = "int8"

    def __init__(self, tflite_model: bytes, info: ModelInfo, threads: int) -> None:
        import openvino as ov  # noqa: PLC0415

        with tempfile.NamedTemporaryFile(suffix=".tflite") as fh:
            fh.write(tflite_model)
            fh.flush()
            self._core = ov.Core()
            self._model = self._core.read_model(fh.name)
        self._threads, self._batch, self._logits = threads, -1, info.int8_output == "logits"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if x.shape[0] != self._batch:
            self._model.reshape(list(x.shape))
            compiled = self._core.compile_model(self._model, "CPU", {"INFERENCE_NUM_THREADS": self._threads})
            self._request, self._batch = compiled.create_infer_request(), x.shape[0]
        out = np.asarray(self._request.infer({0: x})[0], dtype=np.float32)
        return softmax(out) if self._logits else out


class OnnxRuntimeRunner:
    """The same int8 TFLite network converted by tf2onnx and run by ONNX Runtime's CPU provider."""

    precision = "int8"

    def __init__(self, tflite_model: bytes, info: ModelInfo, threads: int) -> None:
        import onnxruntime as ort  # noqa: PLC0415
        import tf2onnx  # noqa: PLC0415

        with tempfile.NamedTemporaryFile(suffix=".tflite") as fh, silenced_stderr():
            fh.write(tflite_model)
            fh.flush()
            proto, _ = tf2onnx.convert.from_tflite(fh.name, opset=17)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self._session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self._input, self._logits = self._session.get_inputs()[0].name, info.int8_output == "logits"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = np.asarray(self._session.run(None, {self._input: x})[0], dtype=np.float32)
        return softmax(out) if self._logits else out


FLOAT_VARIANTS = ("float32", "float16 weights", "dynamic-range int8 weights")


def float_tflite(path: Path, variant: str) -> bytes:
    """The model file's float32 Keras network converted to TFLite as ``variant`` (one of FLOAT_VARIANTS)."""
    tf = import_tensorflow_quietly()
    from fer_batch.training.quantize import convert_tflite  # noqa: PLC0415 - training code imports Keras

    model, info = load_keras_model(path)

    def configure(converter: Any) -> None:
        if variant != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if variant == "float16 weights":
            converter.target_spec.supported_types = [tf.float16]

    return convert_tflite(model, info, configure)


def runtimes(model: str, precision: str, emulated: bool, threads: int) -> list[tuple[str, Callable[[], Any]]]:
    """(label, runner factory) for every runtime this machine can run the model on, LiteRT int8 first.

    Runtimes that are not installed are left out, with a line saying so. Under ``--emulate-avx2`` only LiteRT
    runs (the limit applies to LiteRT's own XNNPACK, not to the copies inside TensorFlow, OpenVINO or ONNX Runtime).
    """
    path = resolve_model(model)
    info = read_info(path)
    if precision == "float32" or (precision == "auto" and info.precision == "float32"):
        return [("Keras float32 (TensorFlow)", lambda: EmotionClassifier.load(path, precision="float32").runner)]
    tflite_model = read_int8(path) or b""
    litert = tflite_interpreter_class()
    found: list[tuple[str, Callable[[], Any]]] = [
        ("LiteRT int8", lambda: Int8Runner(tflite_model, info, threads=threads, interpreter=litert))]
    probabilities = replace(info, int8_output="probabilities")  # the float variants keep the Keras softmax
    if "float32" not in stored_precisions(path):
        print(f"  (float TFLite variants skipped: {path.name} holds its int8 network only)")
    elif importlib.util.find_spec("tensorflow") is None:
        print("  (float TFLite variants skipped: converting the Keras network needs TensorFlow)")
    else:
        found += [(f"LiteRT {variant}", lambda v=variant: Int8Runner(float_tflite(path, v), probabilities,
                                                                     threads=threads, interpreter=litert))
                  for variant in FLOAT_VARIANTS]
    if emulated:
        print("  (TensorFlow tf.lite, OpenVINO and ONNX Runtime skipped: the AVX2 limit applies to LiteRT only)")
        return found
    optional: list[tuple[str, str, Callable[[], Any]]] = [
        ("tensorflow", "TensorFlow tf.lite int8",
         lambda: Int8Runner(tflite_model, info, threads=threads, interpreter=import_tensorflow_quietly().lite.Interpreter)),
        ("openvino", "OpenVINO int8", lambda: OpenVinoRunner(tflite_model, info, threads)),
        ("onnxruntime", "ONNX Runtime int8 (tf2onnx)", lambda: OnnxRuntimeRunner(tflite_model, info, threads)),
    ]
    for module, label, factory in optional:
        if importlib.util.find_spec(module) is None:
            print(f"  ({label} skipped: {module} is not installed)")
        else:
            found.append((label, factory))
    return found


def classification_throughput(runner: Any, info: ModelInfo, crops: np.ndarray, batch_size: int,
                              repeats: int) -> tuple[float, np.ndarray]:
    """Median faces/s over ``repeats`` passes over ``crops`` (after a warm-up pass), and the classes predicted."""
    clf = EmotionClassifier(runner, info, batch_size=batch_size)
    clf.predict_proba(crops[: batch_size * 2])  # warm-up: tensor allocation, graph tracing, kernel selection
    rates, classes = [], np.empty(0)
    for _ in range(repeats):
        began = time.perf_counter()
        classes = clf.predict_proba(crops).argmax(axis=1)
        rates.append(len(crops) / (time.perf_counter() - began))
    return statistics.median(rates), classes


def benchmark_crops(info: ModelInfo, faces: int, folder: Path | None) -> np.ndarray:
    """``faces`` crops: face images from ``folder`` (searched recursively, repeated as needed), else noise."""
    height, width = info.input_size
    if folder is None:
        return np.random.default_rng(0).integers(0, 256, (faces, height, width, info.channels), dtype=np.uint8)
    flag = cv2.IMREAD_GRAYSCALE if info.channels == 1 else cv2.IMREAD_COLOR
    images = [cv2.resize(cv2.imread(str(p), flag), (width, height)) for p in sorted(folder.rglob("*.png"))[:faces]]
    if not images:
        raise SystemExit(f"no .png face crops under {folder}")
    crops = np.stack(images).reshape(len(images), height, width, info.channels)
    return np.resize(crops, (faces, *crops.shape[1:]))


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
    from fer_batch.analysis.pipeline import Analyzer  # noqa: PLC0415

    analyzer = Analyzer(model, detector, batch_size=batch_size, precision=precision)
    list(analyzer.analyze_paths([folder]))  # warm-up
    began = time.perf_counter()
    results = list(analyzer.analyze_paths([folder]))
    seconds = time.perf_counter() - began
    faces = sum(len(r.faces) for r in results)
    return len(results) / seconds, faces / seconds, len(results), faces


def measure_runtime(args: argparse.Namespace) -> None:
    """Measure runtime number ``args.runtime`` and print its line (run in a process of its own)."""
    if args.emulate_avx2:
        from xnnpack_isa import limit_to_avx2  # noqa: PLC0415 - beside this script

        limit_to_avx2()  # before any network loads
    threads = usable_cpus()
    with contextlib.redirect_stdout(io.StringIO()):  # the parent already said which runtimes are skipped
        label, factory = runtimes(args.model, args.precision, args.emulate_avx2, threads)[args.runtime]
    info = read_info(resolve_model(args.model))
    crops = benchmark_crops(info, args.faces, args.crops)
    try:
        runner = factory()
    except Exception as exc:  # noqa: BLE001 - an optional runtime that cannot load this network
        print(f"  ({label} skipped: {type(exc).__name__}: {exc})")
        return
    rate, classes = classification_throughput(runner, info, crops, args.batch_size, args.repeats)
    np.save(args.classes_dir / f"{args.runtime}.npy", classes)
    reference = np.load(args.classes_dir / "0.npy")  # LiteRT int8, measured first
    agreement = f", same class as LiteRT int8 on {np.mean(classes == reference):.1%}" if args.crops else ""
    print(f"classification: model {info.name} on {label}: {rate:,.0f} faces/s (batch size {args.batch_size}, "
          f"{threads} threads, {len(crops)} {'face crops' if args.crops else 'noise crops'}, "
          f"median of {args.repeats}{agreement})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--precision", default="auto", choices=PRECISION_CHOICES)
    parser.add_argument("--faces", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--crops", type=Path, help="classify these face crops (.png, e.g. FER2013's validation/) "
                                                  "instead of noise, and report each runtime's agreement")
    parser.add_argument("--emulate-avx2", action="store_true",
                        help="limit LiteRT's XNNPACK to its AVX2 kernels (on an AVX-512 CPU: as a CPU without it)")
    parser.add_argument("--folder", type=Path, default=REPO / "sample_media")
    parser.add_argument("--detector", default=DEFAULT_DETECTOR.value, choices=[d.value for d in DetectorName])
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--runtime", type=int, help=argparse.SUPPRESS)  # internal: the child measuring one runtime
    parser.add_argument("--classes-dir", type=Path, help=argparse.SUPPRESS)  # internal: where children keep classes
    args = parser.parse_args()

    if args.runtime is not None:  # a child process: one runtime, nothing else
        measure_runtime(args)
        return
    print(f"cpu: {cpu_description()}")
    if args.emulate_avx2:
        print("emulating a CPU without AVX-512: LiteRT's XNNPACK limited to its AVX2 kernels (xnnpack_isa.py)")
    labels = [label for label, _ in runtimes(args.model, args.precision, args.emulate_avx2, usable_cpus())]
    with tempfile.TemporaryDirectory(prefix="fer-batch-bench-") as tmp:
        for index, label in enumerate(labels):  # each in a fresh process: no runtime's threads or state in another's way
            child = [sys.executable, __file__, *sys.argv[1:], "--runtime", str(index), "--classes-dir", tmp]
            done = subprocess.run(child, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=False)
            lines = [line for line in done.stdout.splitlines() if line.startswith(("classification:", "  ("))]
            print("\n".join(lines) if lines and done.returncode == 0 else f"  ({label} failed: exit {done.returncode})")
    if not args.skip_pipeline:
        ms, n, faces = detection_ms(args.folder, args.detector)
        print(f"detection alone ({args.detector}, one thread): {ms:.1f} ms per image ({n} images, {faces} faces)")
        ips, fps, n, faces = pipeline_throughput(args.model, args.folder, args.detector, args.batch_size,
                                                 args.precision)
        print(f"end to end ({args.detector}): {ips:.2f} images/s, {fps:.2f} faces/s "
              f"({n} images, {faces} faces in {args.folder})")


if __name__ == "__main__":
    main()

"""Batch emotion classification of face crops with a fer-batch model file.

A model file holds a Keras network and, after ``fer-batch quantize``, an int8
TFLite copy of it, or the int8 copy alone (see :mod:`fer_batch.model_file`).
:class:`EmotionClassifier` runs either one through the same interface;
``precision`` picks which ("auto": the one the file names as its default).
"""

from __future__ import annotations

import warnings
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fer_batch.errors import ModelError
from fer_batch.model_file import ModelInfo, load_keras_model, read_info, read_int8
from fer_batch.runtime import import_backend_quietly, import_tensorflow_quietly, silenced_stderr, usable_cpus

DEFAULT_BATCH_SIZE = 256  # faces per model call; large batches amortise TensorFlow's per-call overhead


class Precision(str, Enum):
    """Which version of a model file's network runs (``--precision``)."""

    AUTO = "auto"  # the one the model file names as its default
    FLOAT32 = "float32"  # the Keras network
    INT8 = "int8"  # the quantised TFLite copy: several times faster on a CPU


PRECISION_CHOICES: tuple[str, ...] = tuple(p.value for p in Precision)  # "auto" plus model_file.PRECISIONS


class Runner(Protocol):
    """One version of the network: float32 (N, H, W, C) batch in 0..255 -> (N, classes) probabilities."""

    precision: str

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


def tflite_interpreter_class() -> Any:
    """LiteRT's ``Interpreter`` class, else TensorFlow's (imported quietly); a :class:`ModelError` without both."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415 - loaded with the first int8 model
    except ImportError:
        pass
    else:
        return Interpreter
    try:
        tf = import_tensorflow_quietly()
    except ImportError as exc:
        raise ModelError('int8 models need LiteRT: pip install ai-edge-litert (a dependency of fer-batch)') from exc
    return tf.lite.Interpreter


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities from a batch of logits (N, classes), computed in float (int8 networks stop before it)."""
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return probs / probs.sum(axis=1, keepdims=True)


def _mirrored(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x, x[:, :, ::-1]], axis=0)


def _unmirrored(probs: np.ndarray) -> np.ndarray:
    n = probs.shape[0] // 2
    return (probs[:n] + probs[n:]) / 2.0


class KerasRunner:
    """The float32 Keras network: on TensorFlow behind one ``tf.function``, traced once for any batch size.

    Calling the graph directly avoids ``Model.predict``'s per-call overhead
    (several times slower for batches of a few hundred). On another Keras
    backend (JAX, for training on a GPU machine without TensorFlow) it runs
    through ``predict_on_batch``.
    """

    precision = "float32"

    def __init__(self, model: Any, info: ModelInfo) -> None:
        from fer_batch.runtime import keras_backend  # noqa: PLC0415

        self.model = model
        if keras_backend() != "tensorflow":
            self._forward = lambda x: np.asarray(model.predict_on_batch(x))
            return
        import tensorflow as tf  # noqa: PLC0415

        height, width = info.input_size
        spec = tf.TensorSpec((None, height, width, info.channels), tf.float32)
        graph = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        self._forward = lambda x: graph(x).numpy()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._forward(x)


class Int8Runner:
    """The int8 TFLite copy of the network, run by LiteRT's interpreter (XNNPACK kernels), without TensorFlow.

    LiteRT (``ai-edge-litert``, about 60 MB) loads in a few milliseconds, where
    TensorFlow's start-up takes seconds; where it is not installed, TensorFlow's
    own ``tf.lite.Interpreter`` (the same kernels) runs the network instead.
    Input and output stay float32 (the model quantises and dequantises inside),
    so callers see no difference but speed and a small numerical one.
    """

    precision = "int8"

    def __init__(self, tflite_model: bytes, info: ModelInfo, threads: int | None = None,
                 interpreter: Any | None = None) -> None:
        interpreter = interpreter or tflite_interpreter_class()  # a class: LiteRT's (default) or TensorFlow's
        with warnings.catch_warnings():  # TensorFlow's tf.lite.Interpreter warns that it moved to LiteRT
            warnings.simplefilter("ignore")
            self._interpreter = interpreter(model_content=tflite_model, num_threads=threads or usable_cpus())
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        # Quantised without its softmax (see fer_batch.training.quantize): the softmax runs here, in float.
        self._logits = info.int8_output == "logits"
        self._batch = -1  # the batch size the interpreter's tensors are allocated for

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if x.shape[0] != self._batch:
            self._interpreter.resize_tensor_input(self._input, list(x.shape))
            with silenced_stderr():  # TFLite announces its XNNPACK delegate on stderr at the first allocation
                self._interpreter.allocate_tensors()
            self._batch = x.shape[0]
        self._interpreter.set_tensor(self._input, np.ascontiguousarray(x, dtype=np.float32))
        self._interpreter.invoke()
        probs = self._interpreter.get_tensor(self._output).astype(np.float32)
        return softmax(probs) if self._logits else probs


class EmotionClassifier:
    """A model file's network plus its metadata; classifies many crops per call.

    A model whose metadata sets ``flip_average`` is also run on the mirrored
    crops (in the same network call), and the two probability vectors are
    averaged, whichever version of the network runs.
    """

    def __init__(self, runner: Runner, info: ModelInfo, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.runner = runner
        self.info = info
        self.batch_size = batch_size

    @classmethod
    def from_keras(cls, model: Any, info: ModelInfo, batch_size: int = DEFAULT_BATCH_SIZE) -> EmotionClassifier:
        """A classifier for a Keras model already in memory (float32)."""
        return cls(KerasRunner(model, info), info, batch_size=batch_size)

    @classmethod
    def load(cls, path: Path | str, batch_size: int = DEFAULT_BATCH_SIZE, precision: str = "auto",
             threads: int | None = None) -> EmotionClassifier:
        """Load a model file at ``precision`` (auto, float32 or int8); ``threads`` is for int8 only."""
        path = Path(path)
        if precision not in PRECISION_CHOICES:
            raise ModelError(f"unknown precision {precision!r}; choose from {', '.join(PRECISION_CHOICES)}")
        info = read_info(path)
        chosen = info.precision if precision == "auto" else precision
        if chosen == "int8":
            tflite_model = read_int8(path)
            if tflite_model is None:
                raise ModelError(f"{path} has no int8 version; make one with `fer-batch quantize`")
            try:
                runner: Runner = Int8Runner(tflite_model, info, threads=threads)
            except (RuntimeError, ValueError) as exc:
                raise ModelError(f"could not load the int8 model in {path}: {exc}") from exc
        else:
            try:
                import_backend_quietly()
                model, info = load_keras_model(path)
            except ImportError as exc:
                raise ModelError(f'--precision float32 runs the Keras network, which needs TensorFlow: pip install '
                                 f'"fer-batch[tensorflow]" (or run {path.name} at int8) ({exc})') from exc
            runner = KerasRunner(model, info)
        return cls(runner, info, batch_size=batch_size)

    @property
    def keras_model(self) -> Any | None:
        """The Keras network when running at float32; None for the int8 version."""
        return self.runner.model if isinstance(self.runner, KerasRunner) else None

    @property
    def precision(self) -> str:
        return self.runner.precision

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.info.class_names

    @property
    def input_size(self) -> tuple[int, int]:
        return self.info.input_size

    def predict_proba(self, crops: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Class probabilities, shape (N, classes), for crops of shape (N, H, W[, C]) in 0..255."""
        step = batch_size or self.batch_size
        crops = np.asarray(crops)
        if crops.ndim == 3:
            crops = crops[..., None]
        height, width = self.info.input_size
        expected = (height, width, self.info.channels)
        if crops.ndim != 4 or crops.shape[1:] != expected:
            raise ValueError(f"crops must have shape (N, {height}, {width}, {self.info.channels}), got {crops.shape}")
        n = crops.shape[0]
        out = np.empty((n, len(self.class_names)), dtype=np.float32)
        if n == 0:
            return out
        for start in range(0, n, step):
            chunk = np.ascontiguousarray(crops[start : start + step], dtype=np.float32)
            if self.info.flip_average:
                out[start : start + chunk.shape[0]] = _unmirrored(self.runner(_mirrored(chunk)))
            else:
                out[start : start + chunk.shape[0]] = self.runner(chunk)
        return out


def runs_float32(model_path: Path, precision: Precision) -> bool:
    """Whether a model runs its float32 Keras network (TensorFlow) rather than its int8 one (LiteRT) here."""
    chosen = read_info(model_path).precision if precision is Precision.AUTO else precision.value
    return chosen != "int8"

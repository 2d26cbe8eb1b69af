"""int8 quantisation: add a TFLite copy of a model's network, with 8-bit weights and activations.

    fer-batch quantize runs/shipped/wide-v4-ft ../shared/data/fer2013 --out fast.keras --name fast --no-flip-average

Full-integer post-training quantisation needs the range of every activation,
which the converter measures on calibration images: a random sample of the
dataset's ``train/`` split (never the validation split the result is judged
on). The output is a copy of the source model file with the int8 network added
(see :mod:`fer_batch.model_file`), so the float32 network stays available with
``--precision float32``, unless ``--int8-only`` leaves it out to make a file a
fraction of the size. When the dataset has a ``validation/`` split, both
versions are evaluated on it (before the float32 network is left out) so the
cost in accuracy is measured, not assumed.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from fer_batch.errors import DatasetError
from fer_batch.model_file import PRECISIONS, ModelInfo, drop_float32, load_keras_model, save_model, write_int8
from fer_batch.runtime import silenced_stderr
from fer_batch.training.data import TRAIN_SPLIT, VALIDATION_SPLIT, ImageSet, load_image_folder
from fer_batch.training.models import logits_model
from fer_batch.training.options import DefaultPrecision, check_precision

DEFAULT_CALIBRATION_IMAGES = 500


@dataclass(frozen=True)
class QuantizeResult:
    path: Path
    info: ModelInfo
    int8_bytes: int
    float32_accuracy: float | None = None  # on the validation split, when there is one
    int8_accuracy: float | None = None
    agreement: float | None = None  # share of validation images where both versions predict the same class


def calibration_sample(train: ImageSet, count: int, seed: int) -> np.ndarray:
    """``count`` training images drawn at random (without replacement), as float32."""
    if len(train) == 0:
        raise DatasetError("no training images to calibrate the int8 model on")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(train), size=min(count, len(train)), replace=False)
    return train.images[np.sort(pick)].astype(np.float32)


def convert_tflite(model: Any, info: ModelInfo, configure: Callable[[Any], None] = lambda converter: None) -> bytes:
    """The Keras ``model`` as a TFLite model with float32 input and output; ``configure`` sets the converter's
    options (quantisation) before it converts."""
    import tensorflow as tf  # noqa: PLC0415

    height, width = info.input_size
    spec = tf.TensorSpec((None, height, width, info.channels), tf.float32)
    # The converter logs dozens of C++ lines per run; its failures still arrive as Python exceptions.
    with tempfile.TemporaryDirectory(prefix="fer-batch-quantize-") as tmp, silenced_stderr():
        exported = Path(tmp) / "saved_model"
        model.export(str(exported), format="tf_saved_model", input_signature=[spec], verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(exported))
        configure(converter)
        return bytes(converter.convert())


def convert_int8(model: Any, info: ModelInfo, calibration: np.ndarray) -> bytes:
    """The Keras ``model`` as a full-integer TFLite model with float32 input and output."""
    import tensorflow as tf  # noqa: PLC0415

    def representative() -> Iterator[list[np.ndarray]]:
        for image in calibration:
            yield [image[None]]

    def full_integer(converter: Any) -> None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative

    return convert_tflite(model, info, full_integer)


def quantize_model(
    source: Path,
    dataset: Path,
    out: Path,
    *,
    name: str | None = None,
    precision: DefaultPrecision | str = DefaultPrecision.INT8,
    flip_average: bool | None = None,
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
    seed: int = 1337,
    evaluate: bool = True,
    int8_only: bool = False,
) -> QuantizeResult:
    """Write ``out``: ``source`` plus its int8 network, running at ``precision`` by default.

    ``flip_average`` (None: keep the source's) and ``name`` update the
    metadata; the metadata's ``training["quantized"]`` records how the int8
    network was made and the network's parameter count. ``int8_only`` leaves
    the float32 network out of ``out`` (see :func:`fer_batch.model_file.drop_float32`).
    """
    precision = check_precision(precision, int8_only)
    source, dataset, out = Path(source), Path(dataset), Path(out)
    model, info = load_keras_model(source)
    train = load_image_folder(dataset / TRAIN_SPLIT, info.input_size, class_names=info.class_names)
    sample = calibration_sample(train, calibration_images, seed)
    # An int8 softmax output has 1/256 steps, so small probabilities would read 0; int8 logits followed by a
    # float softmax (in the runner) keep them smooth.
    network, logits = logits_model(model)
    tflite_model = convert_int8(network, info, sample)

    quantized = {"from": info.name, "calibration_images": int(sample.shape[0]), "calibration_split": TRAIN_SPLIT,
                 "seed": seed, "parameters": int(model.count_params()), "int8_only": int8_only}
    new_info = replace(
        info,
        name=name or info.name,
        precision=precision.value,
        int8_output="logits" if logits else "probabilities",
        flip_average=info.flip_average if flip_average is None else flip_average,
        training={**info.training, "quantized": quantized},
    )
    # Saved afresh rather than copied: the model was loaded without its optimizer, whose state (twice the
    # weights' size for Adam) inference never needs.
    tmp = save_model(model, out.with_name(out.stem + ".partial.keras"), new_info)
    write_int8(tmp, tflite_model)
    result = QuantizeResult(path=tmp, info=new_info, int8_bytes=len(tflite_model))
    validation_dir = dataset / VALIDATION_SPLIT
    if evaluate and validation_dir.is_dir():
        result = _with_validation(result, validation_dir)
    if int8_only:
        drop_float32(tmp)
    tmp.replace(out)  # atomic: an interrupted run never leaves a half-written model
    return replace(result, path=out)


def _with_validation(result: QuantizeResult, validation_dir: Path) -> QuantizeResult:
    from fer_batch.training.evaluate import predicted_classes  # noqa: PLC0415

    data = load_image_folder(validation_dir, result.info.input_size, class_names=result.info.class_names)
    predictions = {p: predicted_classes(result.path, data, precision=p) for p in PRECISIONS}
    return replace(
        result,
        float32_accuracy=float((predictions["float32"] == data.labels).mean()),
        int8_accuracy=float((predictions["int8"] == data.labels).mean()),
        agreement=float((predictions["float32"] == predictions["int8"]).mean()),
    )

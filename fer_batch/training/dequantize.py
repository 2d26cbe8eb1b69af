"""Float32 Keras networks rebuilt from a model file's int8 network, to fine-tune a model whose float32 weights are gone.

    python -m fer_batch.training.dequantize fer_batch/models/accurate.keras --out runs/dequantized \\
        --dataset ../shared/data/fer2013

An int8-only file (``fer-batch quantize --int8-only``, the shipped ``accurate``) holds a TFLite network and no
Keras weights. This module reads that network's ops and constant tensors with the LiteRT interpreter, builds a
fresh network of each member's recipe (``fer_batch.training.models``) and fills it with the dequantised weights
(int8 value minus zero point, times the per-channel scale), so that it computes what the int8 network computes,
without the 8-bit rounding of the activations. For an ensemble (``fer_batch.training.ensemble``) each member comes
out as a model file of its own, with its training configuration from the ensemble's metadata, ready for
``fer-batch train --init-from``.

How the int8 graph maps onto Keras layers. The TFLite converter folds each ``BatchNormalization`` into the
convolution before it (kernel scaled per output channel, a bias added), fuses the ReLUs into the ops before them,
and folds the input ``Rescaling`` into the first convolution (the graph takes raw pixels). The rebuild walks the
Keras graph in topological order beside the TFLite graph, starting from the quantised input: each Keras tensor is
held by one TFLite tensor, times a factor (1/255 after the rescaling, which the next kernel takes back out), and
each layer is matched to the one op of its kind that consumes that tensor, with the kernel shape and output shape
checked (the convolutions of an ensemble's members are told apart by the member's name in the weight tensors'
names). A folded bias goes to the ``BatchNormalization`` that follows its convolution, which is set to pass its
input through: gamma 1, beta the bias, moving mean 0, moving variance 1 - epsilon. Every weighted op must be used
once, or the rebuild fails.

An identity ``BatchNormalization`` is exact at inference, but training normalises by each batch's statistics,
which such a layer does not match: fine-tuning would start from a different network. With calibration images
(``--dataset``), :func:`calibrate_batch_norm` measures each layer's input statistics and sets the moving mean and
variance to them, with gamma and beta changed so that inference stays the same function; training-mode outputs
then start close to the inference ones, as in a network trained with its batch norms.
"""

from __future__ import annotations

import argparse
import importlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fer_batch.analysis.classify import tflite_interpreter_class
from fer_batch.errors import ModelError
from fer_batch.model_file import ModelInfo, read_info, read_int8, save_model
from fer_batch.models import resolve_model
from fer_batch.runtime import silenced_stderr

WEIGHTED_OPS: tuple[str, ...] = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
DEFAULT_CALIBRATION_IMAGES = 2000


def _interpreter(tflite_model: bytes, preserve_all_tensors: bool = False) -> Any:
    """A TFLite interpreter without default delegates: XNNPACK would replace the ops whose structure is read here
    (and would not keep intermediate tensors). LiteRT's, else TensorFlow's."""
    interpreter_class = tflite_interpreter_class()
    resolvers = importlib.import_module(interpreter_class.__module__).OpResolverType  # beside either Interpreter
    with warnings.catch_warnings(), silenced_stderr():  # preserve_all_tensors warns that it is for debugging
        warnings.simplefilter("ignore")
        interpreter = interpreter_class(model_content=tflite_model,
                                        experimental_op_resolver_type=resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                                        experimental_preserve_all_tensors=preserve_all_tensors)
        interpreter.allocate_tensors()
    return interpreter


@dataclass(frozen=True)
class Op:
    """One op of a TFLite graph: its kind (``CONV_2D``...) and its input and output tensor indices."""

    index: int
    kind: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


class Int8Graph:
    """The ops and constant tensors of a TFLite network, read with the interpreter (no flatbuffer parser needed)."""

    def __init__(self, tflite_model: bytes) -> None:
        self._interpreter = _interpreter(tflite_model)
        self.tensors = {t["index"]: t for t in self._interpreter.get_tensor_details()}
        self.ops = [Op(int(d["index"]), str(d["op_name"]), tuple(int(i) for i in d["inputs"]),
                       tuple(int(i) for i in d["outputs"])) for d in self._interpreter._get_ops_details()]
        self.input = int(self._interpreter.get_input_details()[0]["index"])
        self.output = int(self._interpreter.get_output_details()[0]["index"])
        quantize = [op for op in self.ops if op.kind == "QUANTIZE" and op.inputs[0] == self.input]
        self.network_input = quantize[0].outputs[0] if len(quantize) == 1 else self.input  # what the first ops read

    def name(self, tensor: int) -> str:
        return str(self.tensors[tensor]["name"])

    def shape(self, tensor: int) -> tuple[int, ...]:
        return tuple(int(d) for d in self.tensors[tensor]["shape"])

    def value(self, tensor: int) -> np.ndarray:
        """A constant tensor's real values (float64): (q - zero point) * scale, per channel where it has several."""
        details = self.tensors[tensor]
        q = np.asarray(self._interpreter.get_tensor(tensor), dtype=np.float64)
        params = details["quantization_parameters"]
        scales, zero_points = params["scales"].astype(np.float64), params["zero_points"].astype(np.float64)
        if scales.size == 0:
            if np.issubdtype(details["dtype"], np.floating):
                return q
            raise ModelError(f"tensor {self.name(tensor)!r} is {details['dtype'].__name__} without a scale")
        if scales.size == 1:
            return (q - zero_points[0]) * scales[0]
        shape = [1] * q.ndim
        shape[int(params["quantized_dimension"])] = -1
        return (q - zero_points.reshape(shape)) * scales.reshape(shape)

    def weighted_ops(self, member: str | None) -> list[Op]:
        """The convolutions and dense ops whose weights belong to ``member`` (a name marker; None: all)."""
        return [op for op in self.ops
                if op.kind in WEIGHTED_OPS and (member is None or member in self.name(op.inputs[1]))]


@dataclass
class _Held:
    """Where a Keras tensor's value is in the TFLite graph: ``factor`` times tensor ``tensor``, plus ``bias`` still
    to be added (a convolution's folded bias, which the ``BatchNormalization`` after it takes)."""

    tensor: int
    factor: float = 1.0
    bias: np.ndarray | None = None


@dataclass
class _Walk:
    graph: Int8Graph
    member: str | None
    used: set[int] = field(default_factory=set)

    def consumer(self, layer: Any, tensor: int, kind: str, weights: tuple[int, ...] | None = None) -> Op:
        """The one unused op of ``kind`` reading ``tensor`` first (and, with ``weights``, with a weight tensor of
        that shape and of this member)."""
        found = [op for op in self.graph.ops if op.kind == kind and op.inputs and op.inputs[0] == tensor
                 and op.index not in self.used]
        if weights is not None:
            found = [op for op in found if self.graph.shape(op.inputs[1]) == weights
                     and (self.member is None or self.member in self.graph.name(op.inputs[1]))]
        if len(found) != 1:
            with_weights = f" with weights {weights}" if weights else ""
            raise ModelError(f"layer {layer.name} ({type(layer).__name__}): {len(found)} {kind} ops in the int8 "
                             f"graph read tensor {self.graph.name(tensor)!r}{with_weights}; expected exactly one")
        self.used.add(found[0].index)
        return found[0]

    def check_shape(self, layer: Any, tensor: int) -> None:
        expected = tuple(int(d) for d in layer.output.shape[1:])
        if self.graph.shape(tensor)[1:] != expected:
            raise ModelError(f"layer {layer.name} gives {expected}; its int8 op gives {self.graph.shape(tensor)[1:]}")

    def bias(self, op: Op, channels: int) -> np.ndarray:
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            return self.graph.value(op.inputs[2])
        return np.zeros(channels)


def _no_bias(layer: Any, held: _Held) -> None:
    if held.bias is not None:
        raise ModelError(f"layer {layer.name} follows a convolution without its own bias and is no "
                         "BatchNormalization to take the folded bias")


def _set_identity_batch_norm(layer: Any, bias: np.ndarray) -> None:
    """Gamma 1, beta ``bias``, mean 0, variance 1 - epsilon: at inference, the input plus ``bias``."""
    channels = bias.shape[0]
    layer.gamma.assign(np.ones(channels, np.float32))
    layer.beta.assign(bias.astype(np.float32))
    layer.moving_mean.assign(np.zeros(channels, np.float32))
    layer.moving_variance.assign(np.full(channels, 1.0 - layer.epsilon, np.float32))


def load_weights_from_int8(model: Any, graph: Int8Graph, member: str | None = None) -> int:
    """Fill ``model`` (a fresh network of the recipe the int8 graph was made from) with the graph's dequantised
    weights; returns the TFLite tensor that holds the model's logits. ``member`` picks an ensemble member's ops
    (a marker in their weight tensors' names, such as ``/member_0_``). A :class:`ModelError` when the graph does
    not match the model."""
    from keras import layers  # noqa: PLC0415

    walk = _Walk(graph, member)
    held: dict[int, _Held] = {id(model.inputs[0]): _Held(graph.network_input)}
    logits = -1
    for layer in model.layers:
        if isinstance(layer, layers.InputLayer):
            continue
        sources = [held[id(t)] for t in (layer.input if isinstance(layer.input, list) else [layer.input])]
        src = sources[0]
        if isinstance(layer, layers.Rescaling):
            if np.any(np.asarray(layer.offset) != 0) or np.ndim(layer.scale) != 0:
                raise ModelError(f"layer {layer.name}: only a Rescaling by one scale without offset is supported")
            _no_bias(layer, src)
            out = _Held(src.tensor, src.factor * float(layer.scale))
        elif isinstance(layer, layers.SeparableConv2D):  # a depthwise op, then a 1x1 CONV_2D
            depthwise, pointwise = layer.depthwise_kernel, layer.pointwise_kernel
            kh, kw, channels, multiplier = depthwise.shape
            dw = walk.consumer(layer, src.tensor, "DEPTHWISE_CONV_2D", (1, kh, kw, channels * multiplier))
            filters = pointwise.shape[-1]
            pw = walk.consumer(layer, dw.outputs[0], "CONV_2D", (filters, 1, 1, channels * multiplier))
            dw_kernel = graph.value(dw.inputs[1])[0].reshape(kh, kw, channels, multiplier) / src.factor
            pw_kernel = graph.value(pw.inputs[1]).transpose(1, 2, 3, 0)  # (1, 1, C*m, filters)
            # pointwise(depthwise(x) + b_dw) + b_pw = pointwise(depthwise(x)) + (b_dw @ W_pw + b_pw)
            bias = walk.bias(pw, filters) + walk.bias(dw, channels * multiplier) @ pw_kernel[0, 0]
            out = _Held(pw.outputs[0])
            if layer.use_bias:
                layer.set_weights([dw_kernel.astype(np.float32), pw_kernel.astype(np.float32), bias.astype(np.float32)])
            else:
                layer.set_weights([dw_kernel.astype(np.float32), pw_kernel.astype(np.float32)])
                out.bias = bias
            walk.check_shape(layer, out.tensor)
        elif isinstance(layer, layers.Conv2D):
            kh, kw, channels, filters = layer.kernel.shape
            op = walk.consumer(layer, src.tensor, "CONV_2D", (filters, kh, kw, channels))
            kernel = (graph.value(op.inputs[1]).transpose(1, 2, 3, 0) / src.factor).astype(np.float32)
            bias = walk.bias(op, filters)
            out = _Held(op.outputs[0])
            if layer.use_bias:
                layer.set_weights([kernel, bias.astype(np.float32)])
            else:
                layer.set_weights([kernel])
                out.bias = bias
            walk.check_shape(layer, out.tensor)
        elif isinstance(layer, layers.BatchNormalization):
            if src.bias is None:
                raise ModelError(f"layer {layer.name}: the int8 graph has no folded convolution bias before it")
            _set_identity_batch_norm(layer, src.bias)
            out = _Held(src.tensor, src.factor)
        elif isinstance(layer, (layers.ReLU, layers.Dropout)) or (
                isinstance(layer, layers.Activation) and layer.get_config()["activation"] == "relu"):
            _no_bias(layer, src)  # a ReLU is fused into the op before it; dropout is not in an inference graph
            out = _Held(src.tensor, src.factor)
        elif isinstance(layer, layers.MaxPooling2D):
            _no_bias(layer, src)
            out = _Held(walk.consumer(layer, src.tensor, "MAX_POOL_2D").outputs[0], src.factor)
            walk.check_shape(layer, out.tensor)
        elif isinstance(layer, layers.GlobalAveragePooling2D):
            _no_bias(layer, src)
            out = _Held(walk.consumer(layer, src.tensor, "MEAN").outputs[0], src.factor)
        elif isinstance(layer, layers.Add):
            for s in sources:
                _no_bias(layer, s)
            if len({s.factor for s in sources}) != 1:
                raise ModelError(f"layer {layer.name} adds tensors of different scales")
            wanted = sorted(s.tensor for s in sources)
            adds = [op for op in graph.ops if op.kind == "ADD" and sorted(op.inputs) == wanted]
            if len(adds) != 1:
                raise ModelError(f"layer {layer.name}: {len(adds)} ADD ops in the int8 graph add its inputs")
            out = _Held(adds[0].outputs[0], src.factor)
        elif isinstance(layer, layers.Dense):
            _no_bias(layer, src)
            units, features = layer.kernel.shape[1], layer.kernel.shape[0]
            op = walk.consumer(layer, src.tensor, "FULLY_CONNECTED", (units, features))
            kernel = graph.value(op.inputs[1]).T / src.factor
            layer.set_weights([kernel.astype(np.float32), walk.bias(op, units).astype(np.float32)])
            out = _Held(op.outputs[0])
            logits = out.tensor
        else:
            raise ModelError(f"cannot rebuild layer {layer.name}: {type(layer).__name__} is not supported")
        held[id(layer.output)] = out
    unused = [graph.name(op.inputs[1]) for op in graph.weighted_ops(member) if op.index not in walk.used]
    if unused:
        raise ModelError(f"{len(unused)} weighted ops of the int8 graph have no layer in the rebuilt network, "
                         f"such as {unused[0]!r}: it was not made from this recipe")
    if logits < 0:
        raise ModelError("the rebuilt network has no Dense layer to end in logits")
    return logits


@dataclass(frozen=True)
class Member:
    """One network rebuilt from an int8 file, with the metadata to save it under."""

    name: str
    model: Any  # keras.Model
    info: ModelInfo
    logits_tensor: int  # where the int8 graph holds this network's logits (see int8_member_logits)


def _member_specs(info: ModelInfo, recipes: Sequence[str] | None) -> list[tuple[str, str, str | None, dict[str, Any]]]:
    """(name, recipe, marker, ensemble entry) for each network of the file."""
    entries = info.training.get("ensemble")
    if entries:
        specs = [(str(e.get("name", f"member-{i}")), (e.get("config") or {}).get("recipe"), f"/member_{i}_", e)
                 for i, e in enumerate(entries)]
    else:
        specs = [(info.name, info.training.get("config", {}).get("recipe"), None, info.training)]
    if recipes is not None:
        if len(recipes) != len(specs):
            raise ModelError(f"{len(recipes)} recipes given for {len(specs)} networks")
        specs = [(name, recipe, marker, entry) for (name, _, marker, entry), recipe in zip(specs, recipes)]
    missing = [name for name, recipe, _, _ in specs if not recipe]
    if missing:
        raise ModelError(f"the metadata names no recipe for {', '.join(missing)}; pass the recipes")
    return specs  # type: ignore[return-value]


def dequantize_members(model_path: Path | str, recipes: Sequence[str] | None = None) -> list[Member]:
    """Each network of a model file's int8 version (each member of an ensemble, else the one network) as a float32
    Keras model of its recipe with the dequantised weights; BatchNormalization layers pass their input through.

    ``recipes`` overrides the recipe names the metadata records (``training.config.recipe``, per member for an
    ensemble). A :class:`ModelError` when the file has no int8 network or a network does not match its recipe.
    """
    from fer_batch.training.models import build_model  # noqa: PLC0415

    path = resolve_model(model_path)
    info = read_info(path)
    tflite_model = read_int8(path)
    if tflite_model is None:
        raise ModelError(f"{path} has no int8 network to dequantise")
    graph = Int8Graph(tflite_model)
    input_shape = (*info.input_size, info.channels)
    members = []
    for index, (name, recipe, marker, entry) in enumerate(_member_specs(info, recipes)):
        model = build_model(recipe, input_shape, len(info.class_names))
        logits = load_weights_from_int8(model, graph, marker)
        config = dict(entry.get("config") or {})
        dequantized = {"from": str(model_path), "model": info.name, "member": index, "recipe": recipe,
                       "source_val_accuracy": entry.get("val_accuracy"),
                       "quantized": info.training.get("quantized"), "batch_norm": "identity"}
        member_info = ModelInfo(class_names=info.class_names, input_size=info.input_size, channels=info.channels,
                                crop_margin=info.crop_margin, pixel_range=info.pixel_range,
                                flip_average=bool(config.get("flip_average", info.flip_average)),
                                precision="float32", name=name,
                                training={"config": {**config, "recipe": recipe}, "dequantized": dequantized})
        members.append(Member(name=name, model=model, info=member_info, logits_tensor=logits))
    return members


def calibrate_batch_norm(model: Any, images: np.ndarray, batch_size: int = 256) -> None:
    """Set every BatchNormalization's moving mean and variance to its input's statistics over ``images``
    (N, H, W, C) in 0..255, changing gamma and beta so that the layer computes the same at inference.

    A layer computes ``a * x + c`` at inference (``a = gamma / sqrt(var + eps)``, ``c = beta - mean * a``); with the
    measured mean m and variance v, gamma ``a * sqrt(v + eps)`` and beta ``c + a * m`` keep that, and a training
    batch like the calibration images is then normalised as at inference.
    """
    import keras  # noqa: PLC0415

    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not norms:
        return
    probe = keras.Model(model.inputs[0], [layer.input for layer in norms])
    sums = [np.zeros(layer.moving_mean.shape, np.float64) for layer in norms]
    squares = [np.zeros(layer.moving_mean.shape, np.float64) for layer in norms]
    count = [0] * len(norms)
    for start in range(0, len(images), batch_size):
        outputs = probe(np.asarray(images[start : start + batch_size], np.float32), training=False)
        for i, x in enumerate(outputs):
            x = np.asarray(x, np.float64).reshape(-1, x.shape[-1])  # statistics per channel, as BatchNormalization
            sums[i] += x.sum(axis=0)
            squares[i] += (x * x).sum(axis=0)
            count[i] += x.shape[0]
    for layer, total, square, n in zip(norms, sums, squares, count):
        mean = total / n
        variance = np.maximum(square / n - mean * mean, 0.0)
        gamma, beta = (np.asarray(v, np.float64) for v in (layer.gamma, layer.beta))
        old_mean, old_variance = (np.asarray(v, np.float64) for v in (layer.moving_mean, layer.moving_variance))
        a = gamma / np.sqrt(old_variance + layer.epsilon)
        c = beta - old_mean * a
        layer.gamma.assign((a * np.sqrt(variance + layer.epsilon)).astype(np.float32))
        layer.beta.assign((c + a * mean).astype(np.float32))
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(variance.astype(np.float32))


def int8_member_logits(model_path: Path | str, members: Sequence[Member], images: np.ndarray,
                       batch_size: int = 256) -> tuple[list[np.ndarray], np.ndarray]:
    """What the int8 network computes for ``images``: each member's logits (read from the graph's intermediate
    tensors) and the network's own output, without mirror averaging."""
    graph_bytes = read_int8(resolve_model(model_path))
    if graph_bytes is None:
        raise ModelError(f"{model_path} has no int8 network")
    interpreter = _interpreter(graph_bytes, preserve_all_tensors=True)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    source = interpreter.get_input_details()[0]["index"]
    output = interpreter.get_output_details()[0]["index"]

    def real(index: int) -> np.ndarray:
        q = interpreter.get_tensor(index).astype(np.float32)
        scale, zero_point = tensors[index]["quantization"]
        return (q - zero_point) * scale if scale else q

    per_member: list[list[np.ndarray]] = [[] for _ in members]
    outputs = []
    shape = -1
    for start in range(0, len(images), batch_size):
        batch = np.ascontiguousarray(images[start : start + batch_size], np.float32)
        if batch.shape[0] != shape:
            interpreter.resize_tensor_input(source, list(batch.shape))
            interpreter.allocate_tensors()
            shape = batch.shape[0]
        interpreter.set_tensor(source, batch)
        interpreter.invoke()
        for i, member in enumerate(members):
            per_member[i].append(real(member.logits_tensor))
        outputs.append(real(output))
    return [np.concatenate(m) for m in per_member], np.concatenate(outputs)


def save_members(members: Sequence[Member], out: Path, calibration: np.ndarray | None = None,
                 calibration_source: str = "") -> list[Path]:
    """Write each member as ``out/<name>.keras``, a float32 model file that ``fer-batch train --init-from`` takes;
    with ``calibration`` images, its batch norms are first calibrated on them (:func:`calibrate_batch_norm`)."""
    paths = []
    for member in members:
        info = member.info
        if calibration is not None:
            calibrate_batch_norm(member.model, calibration)
            record = {**info.training["dequantized"],
                      "batch_norm": f"calibrated on {len(calibration)} images of {calibration_source}".strip()}
            info = replace(info, training={**info.training, "dequantized": record})
        paths.append(save_model(member.model, Path(out) / f"{member.name}.keras", info))
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a shipped model name or a model file with an int8 network")
    parser.add_argument("--out", type=Path, required=True, help="the folder to write <member>.keras files into")
    parser.add_argument("--dataset", type=Path, help="a dataset (DATASET/train/<class>/) to calibrate the batch norms "
                        "on, for fine-tuning; its validation split, when present, is scored against the int8 network")
    parser.add_argument("--calibration-images", type=int, default=DEFAULT_CALIBRATION_IMAGES)
    parser.add_argument("--seed", type=int, default=1337, help="which training images calibrate")
    parser.add_argument("--recipes", nargs="+", help="the recipe of each network, where the metadata has none")
    args = parser.parse_args(argv)

    from fer_batch.training.data import TRAIN_SPLIT, VALIDATION_SPLIT, load_image_folder  # noqa: PLC0415
    from fer_batch.training.quantize import calibration_sample  # noqa: PLC0415

    members = dequantize_members(args.model, args.recipes)
    info = read_info(resolve_model(args.model))
    calibration = None
    if args.dataset is not None:
        train = load_image_folder(args.dataset / TRAIN_SPLIT, info.input_size, class_names=info.class_names)
        calibration = calibration_sample(train, args.calibration_images, args.seed)
        validation_dir = args.dataset / VALIDATION_SPLIT
        if validation_dir.is_dir():
            _report_agreement(args.model, members, load_image_folder(validation_dir, info.input_size,
                                                                     class_names=info.class_names))
    for path in save_members(members, args.out, calibration, str(args.dataset / TRAIN_SPLIT) if args.dataset else ""):
        print(f"wrote {path}")


def _report_agreement(model: str, members: Sequence[Member], validation: Any) -> None:
    """Print, per member, how often the float32 network picks the class its int8 version picks, and both
    accuracies (one pass each, no mirror averaging)."""
    int8_logits, _ = int8_member_logits(model, members, validation.images)
    for member, logits in zip(members, int8_logits):
        float32 = np.asarray(member.model.predict(validation.images.astype(np.float32), batch_size=256, verbose=0))
        same = float((float32.argmax(1) == logits.argmax(1)).mean())
        accuracy = [float((p.argmax(1) == validation.labels).mean()) for p in (float32, logits)]
        print(f"{member.name}: same class as int8 {same:.4f}; accuracy float32 {accuracy[0]:.4f}, "
              f"int8 {accuracy[1]:.4f}")


if __name__ == "__main__":
    main()

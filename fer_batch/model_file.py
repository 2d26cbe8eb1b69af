"""The self-describing model file: a Keras ``.keras`` archive plus fer-batch metadata.

A ``.keras`` file is a zip archive. fer-batch adds one more member,
``fer_batch.json``, holding what inference needs besides the weights: the
class names in output order, the input size and colour mode, how face crops
must be framed, and where the model came from. Keras ignores the extra members,
so the file still loads with plain ``keras.saving.load_model``.

A model file may also carry ``fer_batch_int8.tflite``: the same network
quantised to 8-bit integers (``fer-batch quantize``), which runs several times
faster on a CPU. ``ModelInfo.precision`` says which of the two runs unless the
caller asks for the other.

An *int8-only* file (``fer-batch quantize --int8-only``) keeps just the two
fer-batch members and leaves the Keras network out: a fraction of the size, for
networks whose float32 weights are too large to ship. It runs at int8 only;
anything that needs the Keras network (``--precision float32``, fine-tuning,
quantising again) names the float32 file it was made from instead.

Pixel scaling lives inside the model (a ``Rescaling`` layer), so callers feed
raw 0..255 pixels.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fer_batch.errors import ModelError

METADATA_MEMBER = "fer_batch.json"
INT8_MEMBER = "fer_batch_int8.tflite"
KERAS_MEMBER = "config.json"  # present in every archive Keras writes; absent from int8-only files
PRECISIONS: tuple[str, ...] = ("float32", "int8")  # float32: the Keras model; int8: the embedded TFLite model
INT8_OUTPUTS: tuple[str, ...] = ("probabilities", "logits")  # what the int8 network's output tensor holds
FORMAT_VERSION = 1
EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


@dataclass(frozen=True)
class ModelInfo:
    """What a fer-batch model file says about itself."""

    class_names: tuple[str, ...]
    input_size: tuple[int, int]  # (height, width) in pixels
    channels: int = 1  # 1 = grayscale input, 3 = BGR input
    crop_margin: float = 0.2  # extra border around a detector box, as a fraction of its side
    pixel_range: tuple[float, float] = (0.0, 255.0)  # what the model's input expects
    flip_average: bool = False  # average the probabilities of each crop and its mirror image
    precision: str = "float32"  # which version runs by default (see PRECISIONS)
    int8_output: str = "probabilities"  # "logits": the int8 network stops before its softmax (see INT8_OUTPUTS)
    name: str = "custom"
    training: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        data = asdict(self)
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        precision = str(data.get("precision", "float32"))
        if precision not in PRECISIONS:
            raise ModelError(f"invalid fer-batch metadata: unknown precision {precision!r}")
        # Files quantised before the field existed recorded it under training.quantized.output.
        legacy_output = dict(data.get("training", {})).get("quantized", {}).get("output", "probabilities")
        int8_output = str(data.get("int8_output", legacy_output))
        if int8_output not in INT8_OUTPUTS:
            raise ModelError(f"invalid fer-batch metadata: unknown int8_output {int8_output!r}")
        try:
            return cls(
                class_names=tuple(data["class_names"]),
                input_size=(int(data["input_size"][0]), int(data["input_size"][1])),
                channels=int(data.get("channels", 1)),
                crop_margin=float(data.get("crop_margin", 0.2)),
                pixel_range=tuple(data.get("pixel_range", (0.0, 255.0))),  # type: ignore[arg-type]
                flip_average=bool(data.get("flip_average", False)),
                precision=precision,
                int8_output=int8_output,
                name=str(data.get("name", "custom")),
                training=dict(data.get("training", {})),
                format_version=int(data.get("format_version", FORMAT_VERSION)),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelError(f"invalid fer-batch metadata: {exc}") from exc


def _write_member(path: Path, member: str, data: str | bytes) -> None:
    """Add (or replace) one member of an existing ``.keras`` archive."""
    path = Path(path)
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    if member in names:
        # zipfile cannot replace a member in place: rewrite the archive without it.
        tmp = path.with_suffix(path.suffix + ".tmp")
        with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
            for item in src.infolist():
                if item.filename != member:
                    dst.writestr(item, src.read(item.filename))
        tmp.replace(path)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(member, data)


def write_info(path: Path, info: ModelInfo) -> None:
    """Add (or replace) the metadata member of an existing ``.keras`` archive."""
    _write_member(path, METADATA_MEMBER, info.to_json())


def write_int8(path: Path, tflite_model: bytes) -> None:
    """Add (or replace) the int8 TFLite version of the network in an existing ``.keras`` archive."""
    _write_member(path, INT8_MEMBER, tflite_model)


def _member_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    except (OSError, zipfile.BadZipFile) as exc:
        raise ModelError(f"{path} is not a .keras model archive") from exc


def stored_precisions(path: Path) -> tuple[str, ...]:
    """Which versions of the network a model file holds, in ``PRECISIONS`` order."""
    names = _member_names(path)
    members = {"float32": KERAS_MEMBER, "int8": INT8_MEMBER}
    return tuple(p for p in PRECISIONS if members[p] in names)


def drop_float32(path: Path) -> None:
    """Rewrite a quantised model file as int8-only: keep the fer-batch members, leave the Keras network out."""
    path = Path(path)
    if INT8_MEMBER not in _member_names(path):
        raise ModelError(f"{path} has no int8 version to keep; make one with `fer-batch quantize`")
    info = read_info(path)
    if info.precision != "int8":
        raise ModelError(f"{path} runs at {info.precision} by default; an int8-only file must default to int8")
    tmp = path.with_suffix(path.suffix + ".tmp")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for member in (METADATA_MEMBER, INT8_MEMBER):
            dst.writestr(src.getinfo(member), src.read(member))
    tmp.replace(path)


def read_int8(path: Path) -> bytes | None:
    """The int8 TFLite model stored in a model file, or None when it has none."""
    if INT8_MEMBER not in _member_names(path):
        return None
    with zipfile.ZipFile(path) as zf:
        return zf.read(INT8_MEMBER)


def read_info(path: Path) -> ModelInfo:
    """Read the metadata of a fer-batch model file without loading TensorFlow."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        with zipfile.ZipFile(path) as zf:
            raw = zf.read(METADATA_MEMBER)
    except KeyError as exc:
        raise ModelError(f"{path} is a Keras file without fer-batch metadata ({METADATA_MEMBER})") from exc
    except zipfile.BadZipFile as exc:
        raise ModelError(f"{path} is not a .keras model archive") from exc
    try:
        return ModelInfo.from_dict(json.loads(raw))
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: unreadable fer-batch metadata: {exc}") from exc


def save_model(model: Any, path: Path, info: ModelInfo) -> Path:
    """Save a Keras model with its fer-batch metadata; returns the path written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".partial.keras")
    model.save(tmp)
    write_info(tmp, info)
    tmp.replace(path)  # atomic: an interrupted save never leaves a half-written model
    return path


def require_float32(path: Path) -> None:
    """A :class:`ModelError` for a model file without its float32 network (an int8-only file); no Keras needed."""
    if "float32" not in stored_precisions(path):
        source = read_info(path).training.get("quantized", {}).get("from", "unknown")
        raise ModelError(f"{path} holds only its int8 network (the float32 weights were left out to keep the file "
                         f"small): run it at int8, or use the float32 model it was quantised from ({source!r}; "
                         "for a shipped model, `python -m fer_batch.training.reproduce` rebuilds it), or rebuild "
                         "float32 networks from the int8 one with `python -m fer_batch.training.dequantize`")


def load_keras_model(path: Path) -> tuple[Any, ModelInfo]:
    """Load the Keras model and its metadata (imports Keras lazily)."""
    info = read_info(path)
    require_float32(path)
    import keras  # noqa: PLC0415 - TensorFlow is heavy; load it only when a model is needed

    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for a broken archive
        raise ModelError(f"could not load Keras model {path}: {exc}") from exc
    return model, info

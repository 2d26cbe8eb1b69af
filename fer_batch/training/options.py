"""The options of ``fer-batch train`` and ``quantize``: their choices and :class:`TrainConfig`.

This module imports neither TensorFlow nor pandas, so the command line imports it at start-up: the choices
become ``--help``'s lists and the dataclass defaults become the options' defaults, each written once here.
Every choice is a ``StrEnum``, so it compares equal to its name, formats as its name and is written to JSON
as its name; configs and ``train_config.json`` files that hold plain strings load unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any, TypeVar

from fer_batch.errors import UsageError


class Recipe(StrEnum):
    """The architecture of a new network (``--recipe``; the builders are in :mod:`fer_batch.training.models`)."""

    COMPACT = "compact"
    WIDE = "wide"
    VGG = "vgg"
    RESNET = "resnet"


class Schedule(StrEnum):
    """How the learning rate changes over a run (``--schedule``)."""

    COSINE = "cosine"  # decays to 1% over all epochs
    CONSTANT = "constant"
    PLATEAU = "plateau"  # halved after epochs without a lower validation loss (see train._plateau_step)


class Optimizer(StrEnum):
    """The optimizer (``--optimizer``)."""

    ADAM = "adam"
    ADAMW = "adamw"
    SGD = "sgd"  # with Nesterov momentum 0.9


class Selection(StrEnum):
    """Which validation score picks the epoch that is kept as ``model.keras`` (``--select-by``)."""

    ACCURACY = "accuracy"  # accuracy against the validation folder labels
    FERPLUS = "ferplus"  # accuracy against the FER+ crowd majority (DATASET/ferplus_labels.csv), faces that have one


class DefaultPrecision(StrEnum):
    """Which network a quantised model file runs by default (``quantize --precision``)."""

    INT8 = "int8"
    FLOAT32 = "float32"


E = TypeVar("E", bound=Enum)


def parse_choice(kind: type[E], value: object, what: str) -> E:
    """``value`` as a member of ``kind``; a :class:`UsageError` that lists the choices when it is none."""
    try:
        return kind(value)
    except ValueError:
        raise UsageError(f"unknown {what} {value!r}; use {', '.join(str(m.value) for m in kind)}") from None


@dataclass
class TrainConfig:
    """Every option of a training run (all have defaults except the paths).

    Values may come as JSON gives them (strings for paths and choices, lists for tuples); they are converted
    on construction, and an unknown recipe, schedule or optimizer is refused with a :class:`UsageError`.
    """

    dataset: Path
    out: Path
    recipe: Recipe = Recipe.COMPACT
    epochs: int = 50
    batch_size: int = 64
    learning_rate: float = 1e-3
    schedule: Schedule = Schedule.COSINE
    optimizer: Optimizer = Optimizer.ADAM
    weight_decay: float = 0.0  # decoupled weight decay, for any optimizer
    label_smoothing: float = 0.0
    class_weights: bool = False  # weight the loss by inverse class frequency
    class_weight_power: float = 1.0  # with class_weights: raise the inverse frequency to this power (0.5: its root)
    augment: bool = True
    random_erasing: float = 0.0  # with augmentation: the share of images with one random patch replaced by noise
    crop_padding: int = 0  # with augmentation: pad by this many pixels, then crop back at a random position
    seed: int = 1337
    image_size: tuple[int, int] = (48, 48)
    crop_margin: float = 0.2  # stored in the model: how inference frames detector boxes
    flip_average: bool = False  # stored in the model: inference averages each crop with its mirror (2x the cost)
    name: str = "custom"
    init_from: Path | None = None  # start from this model's weights (fine-tuning) instead of a new `recipe`
    ferplus_weight: float = 0.0  # blend the FER+ vote distribution into the targets (fer_batch.training.targets)
    drop_non_faces: bool = False  # leave out training images FER+ marks as not a face
    teachers: tuple[Path, ...] = ()  # distil: blend these models' mean probabilities into the targets
    teacher_weight: float = 0.5
    mixed_precision: bool = False  # compute in bfloat16 (float32 weights); the saved model.keras is float32
    select_by: Selection = Selection.ACCURACY

    def __post_init__(self) -> None:
        self.dataset, self.out = Path(self.dataset), Path(self.out)
        self.recipe = parse_choice(Recipe, self.recipe, "model recipe")
        self.schedule = parse_choice(Schedule, self.schedule, "schedule")
        self.optimizer = parse_choice(Optimizer, self.optimizer, "optimizer")
        self.select_by = parse_choice(Selection, self.select_by, "selection score")
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        self.init_from = Path(self.init_from) if self.init_from else None
        self.teachers = tuple(Path(t) for t in self.teachers or ())

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update({key: value.value for key, value in data.items() if isinstance(value, Enum)})
        data["dataset"] = str(self.dataset)
        data["out"] = str(self.out)
        data["init_from"] = str(self.init_from) if self.init_from else None
        data["teachers"] = [str(t) for t in self.teachers]
        return data


def config_from_json(data: dict[str, Any]) -> TrainConfig:
    """Rebuild a :class:`TrainConfig` written by :meth:`TrainConfig.to_json` (by this or an earlier version)."""
    return TrainConfig(**data)


def check_precision(precision: DefaultPrecision | str, int8_only: bool) -> DefaultPrecision:
    """The precision a quantised file runs by default; UsageError for one an int8-only file cannot run."""
    precision = parse_choice(DefaultPrecision, precision, "precision")
    if int8_only and precision is not DefaultPrecision.INT8:
        raise UsageError("an int8-only model file (--int8-only) runs at int8: it needs --precision int8")
    return precision

"""Combine trained models into one model file that averages their predictions.

    python -m fer_batch.training.ensemble runs/wide-ft runs/compact-ft --out ensemble.keras --name accurate

The result is an ordinary fer-batch model (one ``.keras`` file, one Keras
graph), so the classifier batches it like any other and its cost is the sum of
its members' costs. Members must agree on classes, input size and crop framing.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fer_batch.errors import ModelError
from fer_batch.model_file import ModelInfo, load_keras_model, save_model
from fer_batch.models import resolve_model


def _check_compatible(infos: Sequence[ModelInfo], specs: Sequence[str | Path]) -> None:
    first = infos[0]
    for info, spec in zip(infos[1:], specs[1:]):
        for key in ("class_names", "input_size", "channels", "crop_margin", "pixel_range"):
            if getattr(info, key) != getattr(first, key):
                raise ModelError(f"{spec} differs from {specs[0]} in {key}: "
                                 f"{getattr(info, key)} != {getattr(first, key)}")


def build_ensemble(members: Sequence[Any], name: str = "ensemble") -> Any:
    """One Keras model that averages the members' logits for the same input, then applies one softmax.

    Averaging logits (a normalised geometric mean of the members' probabilities) rather than probabilities
    keeps the ensemble one network with one softmax at its end, so ``fer-batch quantize`` can split the
    softmax off and quantise the whole ensemble to int8 logits like a single model. Members that do not end
    in a softmax are averaged as they are.
    """
    import keras  # noqa: PLC0415

    from fer_batch.training.models import logits_model  # noqa: PLC0415

    if len(members) < 2:
        raise ModelError("an ensemble needs at least two models")
    split = [logits_model(member) for member in members]
    all_logits = all(ok for _, ok in split)
    nets = [net for net, _ in split] if all_logits else list(members)
    inputs = keras.Input(shape=members[0].input_shape[1:], name="pixels")
    outputs = []
    for i, (member, net) in enumerate(zip(members, nets)):
        # Members are often built by the same recipe and share a name; a graph needs unique layer names.
        wrapped = keras.Model(net.inputs[0], net.outputs[0], name=f"member_{i}_{member.name}")
        outputs.append(wrapped(inputs))
    if not all_logits:
        return keras.Model(inputs, keras.layers.Average(name="probabilities")(outputs), name=name)
    mean = keras.layers.Average(name="mean_logits")(outputs)
    return keras.Model(inputs, keras.layers.Activation("softmax", name="probabilities")(mean), name=name)


def ensemble_models(specs: Sequence[str | Path], out: Path, name: str, flip_average: bool | None = None) -> Path:
    """Load each model (shipped name, file or training folder), build the ensemble and save it with metadata.

    ``flip_average``: whether the ensemble averages each face with its mirror; None: only when all its members
    do (as they were trained to run)."""
    loaded = [load_keras_model(resolve_model(spec)) for spec in specs]
    infos = [info for _, info in loaded]
    _check_compatible(infos, specs)
    model = build_ensemble([model for model, _ in loaded], name=name)
    members = [{"name": info.name, "source": str(spec),
                "val_accuracy": info.training.get("val_accuracy"),
                "config": info.training.get("config")} for info, spec in zip(infos, specs)]
    first = infos[0]
    info = ModelInfo(class_names=first.class_names, input_size=first.input_size, channels=first.channels,
                     crop_margin=first.crop_margin, pixel_range=first.pixel_range, name=name,
                     flip_average=all(i.flip_average for i in infos) if flip_average is None else flip_average,
                     training={"ensemble": members})
    return save_model(model, out, info)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="shipped model names, .keras files or training folders")
    parser.add_argument("--out", type=Path, required=True, help="the .keras file to write")
    parser.add_argument("--name", default="ensemble", help="model name stored in the file")
    parser.add_argument("--flip-average", action=argparse.BooleanOptionalAction, default=None,
                        help="average each face with its mirror image (default: when every member does)")
    args = parser.parse_args(argv)
    path = ensemble_models(args.models, args.out, args.name, flip_average=args.flip_average)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

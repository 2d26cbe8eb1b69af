"""Model architectures ("recipes") and the augmentation used to train them.

Every builder is a pure function ``(input_shape, num_classes) -> keras.Model``
whose input is raw 0..255 pixels: rescaling is the model's first layer, so
inference code never needs to know how the network was normalised.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import layers

from fer_batch.training.options import Recipe


def _softmax_head(x: Any, num_classes: int) -> Any:
    return layers.Dense(num_classes, activation="softmax", name="probabilities")(x)


def _conv_bn_relu(x: Any, filters: int, *, separable: bool = False) -> Any:
    conv = layers.SeparableConv2D if separable else layers.Conv2D
    x = conv(filters, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.ReLU()(x)


def _residual_stage(x: Any, filters: int, dropout: float) -> Any:
    """Two separable 3x3 convolutions and a strided 1x1 shortcut; halves the resolution."""
    shortcut = layers.Conv2D(filters, 1, strides=2, padding="same", use_bias=False)(x)
    shortcut = layers.BatchNormalization()(shortcut)
    x = _conv_bn_relu(x, filters, separable=True)
    x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
    x = layers.Add()([x, shortcut])
    x = layers.ReLU()(x)
    if dropout:
        x = layers.Dropout(dropout)(x)
    return x


def _residual_net(input_shape: tuple[int, int, int], num_classes: int, *, stem: tuple[int, ...],
                  stages: tuple[int, ...], head_dropout: float, name: str) -> keras.Model:
    """Full 3x3 convolutions (the first at input resolution, the rest after one pooling), then residual stages."""
    inputs = keras.Input(shape=input_shape, name="pixels")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = _conv_bn_relu(x, stem[0])
    x = layers.MaxPooling2D()(x)
    for filters in stem[1:]:
        x = _conv_bn_relu(x, filters)
    for filters in stages:
        x = _residual_stage(x, filters, dropout=0.1)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(head_dropout)(x)
    return keras.Model(inputs, _softmax_head(x, num_classes), name=name)


def build_compact(input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """A residual CNN with depthwise-separable stages (about 0.19M parameters).

    One full 3x3 convolution at 48x48 learns edge features; then three
    residual stages of separable convolutions (64, 128, 256 filters) halve the
    resolution each, which keeps the cost near 10M multiply-adds per face so
    that a 2-core CPU classifies thousands of faces per second.
    """
    return _residual_net(input_shape, num_classes, stem=(32,), stages=(64, 128, 256), head_dropout=0.4,
                         name="fer_compact")


def build_wide(input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """A wider residual CNN (about 0.7M parameters): a full convolution at 24x24, then separable stages to 512.

    Roughly twice the cost of ``compact`` per face (about 20M multiply-adds),
    for more capacity in the late, low-resolution stages where it is cheap.
    """
    return _residual_net(input_shape, num_classes, stem=(32, 64), stages=(128, 256, 512), head_dropout=0.5,
                         name="fer_wide")


def build_vgg(input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """A plain VGG-style CNN (Conv2D blocks, max pooling, dropout, dense head; about 1.2M parameters)."""
    inputs = keras.Input(shape=input_shape, name="pixels")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    for filters in (32, 64, 128, 256):
        x = _conv_bn_relu(x, filters)
        x = _conv_bn_relu(x, filters)
        x = layers.MaxPooling2D()(x)
        x = layers.Dropout(0.25)(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(256, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    return keras.Model(inputs, _softmax_head(x, num_classes), name="fer_vgg")


def _basic_block(x: Any, filters: int, strides: int) -> Any:
    """A ResNet basic block: two full 3x3 convolutions plus an identity (or strided 1x1) shortcut."""
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=strides, use_bias=False)(x)
        shortcut = layers.BatchNormalization()(shortcut)
    y = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
    y = layers.BatchNormalization()(y)
    y = layers.ReLU()(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
    y = layers.BatchNormalization()(y)
    return layers.ReLU()(layers.Add()([y, shortcut]))


def build_resnet(input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """A ResNet-10 for 48x48 faces (about 4.9M parameters, about 140M multiply-adds per face).

    One 3x3 convolution (64) at full resolution, a pooling to 24x24, then one
    basic block per stage at 64, 128, 256 and 512 filters (24, 12, 6, 3 pixels).
    Full convolutions cost more to train than ``wide``'s separable ones, but
    they run well at int8: about 2,200 faces/s on a 2-core CPU in one pass.
    """
    inputs = keras.Input(shape=input_shape, name="pixels")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = _conv_bn_relu(x, 64)
    x = layers.MaxPooling2D()(x)
    for stage, filters in enumerate((64, 128, 256, 512)):
        x = _basic_block(x, filters, strides=1 if stage == 0 else 2)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.5)(x)
    return keras.Model(inputs, _softmax_head(x, num_classes), name="fer_resnet")


MIXED_POLICY = "mixed_bfloat16"


def with_dtype_policy(model: keras.Model, policy: str) -> keras.Model:
    """A copy of a functional ``model`` whose layers compute in ``policy``, with the same weights.

    The output layers stay float32 whatever ``policy`` is, so probabilities never round to bfloat16. Nested
    models (an ensemble's members) are rewritten too. Used to train a new or a loaded float32 model in bfloat16
    (``MIXED_POLICY``), and to save a float32 copy.
    """
    config = model.get_config()
    _set_layer_policies(config, policy, keep_outputs_float32=True)
    copy = keras.Model.from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def _set_layer_policies(config: dict[str, Any], policy: str, keep_outputs_float32: bool) -> None:
    """Rewrite, in place, the dtype policy of every layer in a functional model's config, nested models included."""
    entries = config["output_layers"]
    if entries and not isinstance(entries[0], (list, tuple)):  # a single output is stored unnested
        entries = [entries]
    outputs = {entry[0] for entry in entries} if keep_outputs_float32 else set()
    for layer in config["layers"]:
        if "layers" in layer["config"]:  # a nested model: float32 outputs only if they are this model's outputs
            _set_layer_policies(layer["config"], policy, keep_outputs_float32=layer["config"]["name"] in outputs)
        elif layer["class_name"] != "InputLayer" and "dtype" in layer["config"]:
            name = "float32" if layer["config"]["name"] in outputs else policy
            layer["config"]["dtype"] = {"module": "keras", "class_name": "DTypePolicy",
                                        "config": {"name": name}, "registered_name": None}


RECIPES: dict[Recipe, Callable[[tuple[int, int, int], int], keras.Model]] = {
    Recipe.COMPACT: build_compact,
    Recipe.WIDE: build_wide,
    Recipe.VGG: build_vgg,
    Recipe.RESNET: build_resnet,
}


def build_model(recipe: Recipe | str, input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """Build the named architecture; raises ``KeyError`` listing the known names."""
    try:
        builder = RECIPES[recipe]
    except KeyError:
        raise KeyError(f"unknown model recipe {recipe!r}; choose from {', '.join(sorted(RECIPES))}") from None
    return builder(input_shape, num_classes)


def logits_model(model: keras.Model) -> tuple[keras.Model, bool]:
    """The network up to its logits (same weights, no final softmax), and whether it ends in a softmax at all.

    Handles the two endings fer-batch builds: a recipe's ``Dense(..., activation="softmax")`` and an ensemble's
    ``Activation("softmax")``. Any other model is returned unchanged, with False.
    """
    last = model.layers[-1]
    if isinstance(last, layers.Activation) and last.get_config().get("activation") == "softmax":
        return keras.Model(model.inputs, last.input), True
    if isinstance(last, layers.Dense) and last.get_config().get("activation") == "softmax":
        dense = layers.Dense.from_config({**last.get_config(), "activation": "linear", "name": f"{last.name}_logits"})
        outputs = dense(last.input)
        dense.set_weights(last.get_weights())
        return keras.Model(model.inputs, outputs), True
    return model, False


class RandomPadCrop(layers.Layer):
    """Zero-pad by ``padding`` pixels, then crop back to the input size at a random offset.

    What ``ZeroPadding2D`` + ``RandomCrop`` do (like Keras's ``RandomCrop``, one offset per batch), in
    ``keras.ops`` alone (a gather at the drawn offset), so that it also runs inside ``jax.jit``;
    :func:`build_augmenter` uses it on backends other than TensorFlow.
    """

    def __init__(self, padding: int, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.padding = padding
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images: Any, training: bool = True) -> Any:
        if not training:
            return images
        ops, pad = keras.ops, self.padding
        height, width = ops.shape(images)[1], ops.shape(images)[2]
        padded = ops.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        offsets = keras.random.randint((1, 2), 0, 2 * pad + 1, seed=self.seed_generator)
        rows = offsets[:, :1] + ops.arange(height)[None, :]  # (1, H): the padded rows the batch keeps
        cols = offsets[:, 1:] + ops.arange(width)[None, :]
        kept = ops.take_along_axis(padded, rows[:, :, None, None], axis=1)
        return ops.take_along_axis(kept, cols[:, None, :, None], axis=2)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "padding": self.padding, "seed": self.seed}


def build_augmenter(seed: int = 0, random_erasing: float = 0.0, crop_padding: int = 0,
                    image_size: tuple[int, int] = (48, 48)) -> keras.Sequential:
    """Random flips, small rotations, shifts, zoom and brightness/contrast changes, applied per batch.

    Faces in FER2013 are roughly aligned; the ranges stay small so an augmented
    face still looks like one a face detector would crop. ``crop_padding`` adds
    a random crop after zero-padding by that many pixels, and ``random_erasing``
    replaces one random patch (2-25% of the image) with noise in that share of
    the images.
    """
    from fer_batch.runtime import keras_backend  # noqa: PLC0415

    extra: list[keras.layers.Layer] = []
    if crop_padding > 0 and keras_backend() == "tensorflow":
        extra += [layers.ZeroPadding2D(crop_padding), layers.RandomCrop(*image_size, seed=seed + 6)]
    elif crop_padding > 0:  # Keras's RandomCrop cannot be compiled by jax.jit (fer_batch.training.data compiles the augmenter)
        extra.append(RandomPadCrop(crop_padding, seed=seed + 6))
    if random_erasing > 0:
        extra.append(layers.RandomErasing(factor=(random_erasing, random_erasing), scale=(0.02, 0.25),
                                          value_range=(0.0, 255.0), seed=seed + 7))
    return keras.Sequential(
        [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomRotation(0.04, fill_mode="reflect", seed=seed + 1),  # +-14 degrees
            layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=seed + 2),
            layers.RandomZoom(0.1, fill_mode="reflect", seed=seed + 3),
            layers.RandomBrightness(0.15, value_range=(0.0, 255.0), seed=seed + 4),
            layers.RandomContrast(0.2, seed=seed + 5),
            *extra,
        ],
        name="augment",
    )

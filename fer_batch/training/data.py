"""Dataset loading: ``<root>/<split>/<class>/*.png`` folders into arrays, and batches for ``Model.fit``.

FER2013 is small (28,709 images of 48x48 bytes, about 66 MB), so each split is
decoded once into a NumPy array and fed from memory: every epoch after the
first then costs no file I/O or PNG decoding. :func:`make_batches` feeds it
through ``tf.data`` on Keras's TensorFlow backend (the default) and through a
``keras.utils.PyDataset`` on any other (JAX on a GPU machine without TensorFlow).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fer_batch.errors import DatasetError
from fer_batch.inputs.images import IMAGE_SUFFIXES

TRAIN_SPLIT = "train"
VALIDATION_SPLIT = "validation"


@dataclass(frozen=True)
class ImageSet:
    """Images of one split as arrays: ``images`` is (N, H, W, 1) uint8, ``labels`` (N,) int.

    ``targets`` (N, classes) float, when set, replaces the one-hot labels as
    what training fits (see :mod:`fer_batch.training.targets`).
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    files: tuple[str, ...]  # "<class>/<file>" for each image, for error analysis
    targets: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def with_targets(self, targets: np.ndarray) -> ImageSet:
        if targets.shape != (len(self), len(self.class_names)):
            raise ValueError(f"targets of shape {targets.shape} for {len(self)} images of {len(self.class_names)} "
                             "classes")
        return replace(self, targets=targets.astype(np.float32))

    def subset(self, keep: np.ndarray) -> ImageSet:
        """The images where the boolean mask ``keep`` is true."""
        return replace(self, images=self.images[keep], labels=self.labels[keep],
                       files=tuple(f for f, k in zip(self.files, keep) if k),
                       targets=None if self.targets is None else self.targets[keep])


def class_folders(split_dir: Path) -> list[str]:
    """The class names of a split: its sub-folder names, sorted."""
    if not split_dir.is_dir():
        raise DatasetError(f"dataset folder not found: {split_dir}")
    names = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise DatasetError(f"{split_dir} has no class sub-folders (expected {split_dir}/<class>/*.png)")
    return names


def load_image_folder(
    split_dir: Path,
    image_size: tuple[int, int] = (48, 48),
    class_names: Sequence[str] | None = None,
) -> ImageSet:
    """Read every image under ``split_dir/<class>/`` as grayscale at ``image_size``.

    ``class_names`` fixes the label order (the training split's order when
    loading validation data); folders of other names are an error, and a class
    with no folder simply has no images.
    """
    split_dir = Path(split_dir)
    found = class_folders(split_dir)
    names = tuple(class_names) if class_names is not None else tuple(found)
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise DatasetError(f"{split_dir} has classes the model does not know: {', '.join(unknown)}")
    height, width = image_size
    images: list[np.ndarray] = []
    labels: list[int] = []
    files: list[str] = []
    unreadable: list[str] = []
    for label, name in enumerate(names):
        folder = split_dir / name
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if img is None:
                unreadable.append(str(path))
                continue
            if img.shape != (height, width):
                img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
            images.append(img)
            labels.append(label)
            files.append(f"{name}/{path.name}")
    if unreadable:
        shown = ", ".join(unreadable[:3])
        raise DatasetError(f"{len(unreadable)} unreadable image(s) in {split_dir}: {shown}")
    if not images:
        raise DatasetError(f"no images found under {split_dir}/<class>/")
    return ImageSet(
        images=np.stack(images)[..., None],
        labels=np.asarray(labels, dtype=np.int64),
        class_names=names,
        files=tuple(files),
    )


def load_dataset(root: Path, image_size: tuple[int, int] = (48, 48)) -> tuple[ImageSet, ImageSet]:
    """Load ``root/train`` and ``root/validation`` with one class order."""
    root = Path(root)
    for split in (TRAIN_SPLIT, VALIDATION_SPLIT):
        if not (root / split).is_dir():
            raise DatasetError(f"{root} needs {split}/<class>/ folders; {root / split} is missing")
    train = load_image_folder(root / TRAIN_SPLIT, image_size)
    validation = load_image_folder(root / VALIDATION_SPLIT, image_size, class_names=train.class_names)
    return train, validation


def make_tf_dataset(
    data: ImageSet,
    batch_size: int,
    *,
    training: bool,
    augmenter: Any = None,
    seed: int = 0,
) -> Any:
    """A batched ``tf.data.Dataset`` of (float32 images 0..255, one-hot labels or the set's ``targets``).

    Training data is reshuffled every epoch and augmented per batch (batched
    augmentation is far cheaper than per image on a CPU).
    """
    import tensorflow as tf  # noqa: PLC0415

    num_classes = len(data.class_names)
    targets = data.targets if data.targets is not None else np.eye(num_classes, dtype=np.float32)[data.labels]
    ds = tf.data.Dataset.from_tensor_slices((data.images, targets))
    if training:
        ds = ds.shuffle(len(data), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=False)

    def to_float(x: Any, y: Any) -> tuple[Any, Any]:
        return tf.cast(x, tf.float32), y

    ds = ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
    if training and augmenter is not None:
        ds = ds.map(lambda x, y: (augmenter(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def make_batches(data: ImageSet, batch_size: int, *, training: bool, augmenter: Any = None, seed: int = 0) -> Any:
    """Batches of (float32 images 0..255, targets) for ``Model.fit``, on whichever backend Keras runs.

    TensorFlow gets :func:`make_tf_dataset`; other backends get :func:`array_batches`, the same
    shuffling and augmentation without ``tf.data``.
    """
    from fer_batch.runtime import keras_backend  # noqa: PLC0415

    if keras_backend() == "tensorflow":
        return make_tf_dataset(data, batch_size, training=training, augmenter=augmenter, seed=seed)
    return array_batches(data, batch_size, training=training, augmenter=augmenter, seed=seed)


def array_batches(data: ImageSet, batch_size: int, *, training: bool, augmenter: Any = None, seed: int = 0) -> Any:
    """A ``keras.utils.PyDataset`` of (float32 images 0..255, targets) from in-memory arrays, for any backend.

    Training order is one permutation drawn from ``seed`` (:func:`fer_batch.training.train.epoch_batches` makes a new
    one each epoch); the augmenter runs on each training batch.
    """
    return _array_batches_class()(data, batch_size, training=training, augmenter=augmenter, seed=seed)


@functools.cache
def _array_batches_class() -> type:
    """The PyDataset subclass behind :func:`array_batches`, defined on first use so importing this module skips Keras."""
    import keras  # noqa: PLC0415

    class _ArrayBatches(keras.utils.PyDataset):
        def __init__(self, data: ImageSet, batch_size: int, *, training: bool, augmenter: Any = None,
                     seed: int = 0) -> None:
            super().__init__()
            num_classes = len(data.class_names)
            self._images = data.images
            self._targets = (data.targets if data.targets is not None
                             else np.eye(num_classes, dtype=np.float32)[data.labels])
            n = len(data)
            self._order = np.random.default_rng(seed).permutation(n) if training else np.arange(n)
            self._batch_size = batch_size
            self._augmenter = compiled_augmenter(augmenter) if training and augmenter is not None else None

        def __len__(self) -> int:
            return math.ceil(len(self._order) / self._batch_size)

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            rows = self._order[index * self._batch_size : (index + 1) * self._batch_size]
            x = self._images[rows].astype(np.float32)
            if self._augmenter is not None:
                x = self._augmenter(x)
            return x, self._targets[rows]

    return _ArrayBatches


_COMPILED: dict[str, Any] = {}  # one compiled augmentation per augmenter structure, shared by every epoch's augmenter


def _structure(config: Any) -> Any:
    """A model config without its layers' names and seeds: equal for augmenters that differ only in their draws."""
    if isinstance(config, dict):
        is_layer = "trainable" in config  # a layer's own config (a dtype policy's "name" is kept)
        return {k: _structure(v) for k, v in config.items() if not (is_layer and k in ("name", "seed"))}
    if isinstance(config, list):
        return [_structure(v) for v in config]
    return config


def compiled_augmenter(augmenter: Any) -> Callable[[np.ndarray], np.ndarray]:
    """``augmenter`` (a Keras model of random layers) as a function of a float32 NumPy batch.

    On JAX it runs as one ``jax.jit``-compiled function of the batch and the random layers' seed states,
    which draws what the eager layers would draw: eager JAX dispatches every operation on its own, which
    on a GPU costs far more than the arithmetic. The compiled function is traced once per augmenter
    structure and batch shape, so the new augmenter each epoch brings (new seeds) does not compile again.
    Other backends run the layers as they are.
    """
    import keras  # noqa: PLC0415

    from fer_batch.runtime import keras_backend  # noqa: PLC0415

    if keras_backend() != "jax":
        return lambda x: keras.ops.convert_to_numpy(augmenter(x, training=True)).astype(np.float32)
    import jax  # noqa: PLC0415

    key = json.dumps(_structure(augmenter.get_config()), sort_keys=True, default=str)
    if key not in _COMPILED:
        template, template_vars = augmenter, list(augmenter.variables)

        def stateless(states: list[Any], x: Any) -> tuple[Any, list[Any]]:
            with keras.StatelessScope(state_mapping=list(zip(template_vars, states))) as scope:
                y = template(x, training=True)
            updated = [scope.get_current_value(v) for v in template_vars]
            return y, [s if u is None else u for s, u in zip(states, updated)]

        _COMPILED[key] = jax.jit(stateless)
    compiled, variables = _COMPILED[key], list(augmenter.variables)

    def run(x: np.ndarray) -> np.ndarray:
        y, states = compiled([v.value for v in variables], x)
        for variable, state in zip(variables, states):
            variable.assign(state)
        return np.asarray(y, dtype=np.float32)

    return run

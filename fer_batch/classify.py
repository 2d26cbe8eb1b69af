"""Batch emotion classification of face crops with a fer-batch model file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fer_batch.model_file import ModelInfo, load_keras_model

DEFAULT_BATCH_SIZE = 256  # faces per model call; large batches amortise TensorFlow's per-call overhead


class EmotionClassifier:
    """A loaded model plus its metadata; classifies many crops per call.

    Inference goes through one ``tf.function`` traced once for any batch size,
    so every call runs the graph directly, without ``Model.predict``'s
    per-call overhead (several times slower for batches of a few hundred).
    A model whose metadata sets ``flip_average`` is also run on the mirrored
    crops, and the two probability vectors are averaged.
    """

    def __init__(self, model: Any, info: ModelInfo, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.model = model
        self.info = info
        self.batch_size = batch_size
        self._forward: Any = None

    @classmethod
    def load(cls, path: Path | str, batch_size: int = DEFAULT_BATCH_SIZE) -> "EmotionClassifier":
        model, info = load_keras_model(Path(path))
        return cls(model, info, batch_size=batch_size)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.info.class_names

    @property
    def input_size(self) -> tuple[int, int]:
        return self.info.input_size

    def _compiled(self) -> Any:
        if self._forward is None:
            import tensorflow as tf  # noqa: PLC0415

            height, width = self.info.input_size
            spec = tf.TensorSpec((None, height, width, self.info.channels), tf.float32)
            model = self.model

            if self.info.flip_average:
                # Test-time augmentation: one model call on the crops and their mirror images together.
                def forward(x: Any) -> Any:
                    n = tf.shape(x)[0]
                    probs = model(tf.concat([x, tf.reverse(x, axis=[2])], axis=0), training=False)
                    return (probs[:n] + probs[n:]) / 2.0
            else:
                def forward(x: Any) -> Any:
                    return model(x, training=False)

            self._forward = tf.function(forward, input_signature=[spec])
        return self._forward

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
        forward = self._compiled()
        for start in range(0, n, step):
            chunk = np.ascontiguousarray(crops[start : start + step], dtype=np.float32)
            out[start : start + chunk.shape[0]] = forward(chunk).numpy()
        return out

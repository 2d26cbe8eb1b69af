"""fer_batch.runtime: which Keras backend runs, found without importing Keras."""

from __future__ import annotations

from pathlib import Path

import pytest

from fer_batch.runtime import import_backend_quietly, keras_backend


def test_keras_backend_is_found_as_keras_finds_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert keras_backend() == "tensorflow"  # no config file
    (tmp_path / "keras.json").write_text('{"backend": "jax", "floatx": "float32"}')
    assert keras_backend() == "jax"
    assert import_backend_quietly() is None  # TensorFlow is imported only when it is the backend
    monkeypatch.setenv("KERAS_BACKEND", "")  # empty: ignored, as Keras ignores it
    assert keras_backend() == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert keras_backend() == "torch"
    (tmp_path / "keras.json").write_text("not json")
    monkeypatch.delenv("KERAS_BACKEND")
    assert keras_backend() == "tensorflow"

"""Shared fixtures: a tiny model built in the test session, drawn images, and the optional ../shared data."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SAMPLE_MEDIA = REPO / "sample_media"
SHARED = Path(os.environ.get("FER_BATCH_SHARED", REPO.parent / "shared")).resolve()


def shared_path(*parts: str) -> Path:
    """A path inside ../shared, or skip the test with the reason when it is absent (a user's clone)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the project's shared data beside the repo); absent here")
    return path


def build_tiny_model():  # type: ignore[no-untyped-def]
    """A small untrained Keras model with fer-batch's input and output (7 classes, 48x48 grayscale)."""
    import keras

    from fer_batch.model_file import EMOTIONS

    keras.utils.set_random_seed(0)
    inputs = keras.Input((48, 48, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(len(EMOTIONS), activation="softmax")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model saved as a fer-batch model file; fast to build and run."""
    from fer_batch.model_file import EMOTIONS, ModelInfo, save_model

    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    save_model(build_tiny_model(), path, ModelInfo(class_names=EMOTIONS, input_size=(48, 48), name="tiny-test"))
    return path


@pytest.fixture()
def drawn_face() -> np.ndarray:
    """A BGR image of a cartoon face (for code that only needs pixels, not a detector)."""
    import cv2

    img = np.full((120, 160, 3), 200, np.uint8)
    cv2.ellipse(img, (80, 60), (35, 45), 0, 0, 360, (150, 170, 210), -1)
    cv2.circle(img, (67, 50), 5, (40, 40, 40), -1)
    cv2.circle(img, (93, 50), 5, (40, 40, 40), -1)
    cv2.ellipse(img, (80, 78), (15, 7), 0, 0, 180, (40, 40, 120), 2)
    return img


def fer_batch_command() -> list[str]:
    """The installed ``fer-batch`` entry point (or ``python -m fer_batch`` if it is not on PATH)."""
    exe = shutil.which("fer-batch")
    return [exe] if exe else [sys.executable, "-m", "fer_batch"]


# Runs ARGV with SIGINT at its default action. A suite started in the background (``python -m pytest &``,
# ``nohup``) inherits SIGINT ignored, and Python installs its KeyboardInterrupt handler only where SIGINT is
# not ignored, so the run would never see Ctrl-C. exec keeps a default action (not preexec_fn: unsafe when the
# test process has threads).
_WITH_DEFAULT_SIGINT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                        "os.execvp(sys.argv[1], sys.argv[1:])")


def with_default_sigint(argv: list[str]) -> list[str]:
    """``argv`` run with SIGINT at its default action, for a test that sends it Ctrl-C (see above)."""
    return [sys.executable, "-c", _WITH_DEFAULT_SIGINT, *argv]


def interrupt_when(args: list[str], ready: Callable[[], bool], timeout_s: float = 120) -> tuple[int, str]:
    """Run ``fer-batch ARGS``, send Ctrl-C (SIGINT) once ``ready()`` is true; returns (exit code, stderr)."""
    proc = subprocess.Popen(with_default_sigint([*fer_batch_command(), *args]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not ready():
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    return proc.returncode, stderr


def write_drawn_dataset(root: Path, per_class: int = 4) -> Path:
    """A learnable 7-class dataset in the training layout: the class is the size of a bright disc."""
    import cv2

    from fer_batch.model_file import EMOTIONS

    rng = np.random.default_rng(0)
    for split in ("train", "validation"):
        for label, name in enumerate(EMOTIONS):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                img = rng.integers(0, 60, (48, 48), dtype=np.uint8)
                cv2.circle(img, (24, 24), 4 + 3 * label, 255, -1)  # class = disc size: learnable
                cv2.imwrite(str(folder / f"{i}.png"), img)
    return root


def kill_when(args: list[str], ready: Callable[[], bool], timeout_s: float = 120) -> None:
    """Run ``fer-batch ARGS`` and kill it outright (SIGKILL: no clean-up at all) once ``ready()`` is true."""
    proc = subprocess.Popen([*fer_batch_command(), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not ready() and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed: make its input longer"
    proc.kill()
    proc.wait(timeout=60)


def same_rows(a: list[dict[str, str]], b: list[dict[str, str]], tolerance: float = 1e-4) -> bool:
    """CSV rows equal, numbers within ``tolerance`` (float kernels may round differently in other batch sizes)."""
    if len(a) != len(b):
        return False
    for row_a, row_b in zip(a, b):
        if row_a.keys() != row_b.keys():
            return False
        for key, value in row_a.items():
            other = row_b[key]
            if value == other:
                continue
            try:
                if abs(float(value) - float(other)) > tolerance:
                    return False
            except ValueError:
                return False
    return True


def flat_record(data: object, prefix: str = "") -> dict[str, object]:
    """A JSON record as one flat dict (``faces.0.box.x``: ...), for comparing with a tolerance."""
    if isinstance(data, dict):
        return {k: v for key, value in data.items() for k, v in flat_record(value, f"{prefix}{key}.").items()}
    if isinstance(data, list):
        return {k: v for i, value in enumerate(data) for k, v in flat_record(value, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): data}

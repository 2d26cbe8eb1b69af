"""Loading TensorFlow without its start-up noise on the terminal.

TensorFlow's C++ core prints several lines to stderr when it is imported and
when it first looks for a GPU (oneDNN notices, "could not find cuda drivers",
a cuInit error on machines without one), before any logging setting applies.
In a tool whose stderr carries the user's messages and progress bar, those
lines are noise, so the CLI imports TensorFlow with file descriptor 2 pointed
at /dev/null for that moment only. Errors raised by the import still surface
as Python exceptions.

Training also runs on Keras's JAX backend (``KERAS_BACKEND=jax``), for a GPU
machine that has JAX but no TensorFlow (see ``fer_batch/training/device_train.sh``);
:func:`import_backend_quietly` loads TensorFlow only when it is the backend.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def silenced_stderr() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null while the block runs (C++ libraries write there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def usable_cpus() -> int:
    """CPUs this process may run on (fewer than the machine's under an affinity mask or a container limit)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8")  # what int8 kernels use


def cpu_description() -> str:
    """The CPU's model name, usable cores and the instruction-set flags int8 speed depends on (Linux)."""
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    present = [f for f in SPEED_FLAGS if f in flags] or ["none of " + " ".join(SPEED_FLAGS)]
    return f"{model}, {usable_cpus()} usable CPUs, flags: {' '.join(present)}"


def import_tensorflow_quietly() -> Any:
    """Import TensorFlow (once) and probe its devices with C-level stderr silenced; returns the module."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with silenced_stderr():
        import tensorflow as tf  # noqa: PLC0415

        tf.config.list_physical_devices()
    return tf


def keras_backend() -> str:
    """The Keras backend this process uses, found as Keras finds it, without importing Keras.

    ``KERAS_BACKEND``, else the ``backend`` of Keras's config file (``$KERAS_HOME/keras.json``, by default
    ``~/.keras/keras.json``), else TensorFlow.
    """
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    try:
        with open(os.path.join(home, "keras.json")) as fh:
            return str(json.load(fh).get("backend", "tensorflow"))
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def import_backend_quietly() -> Any | None:
    """Import TensorFlow quietly when it is the Keras backend; returns it, or None under another backend."""
    return import_tensorflow_quietly() if keras_backend() == "tensorflow" else None


def load_backend() -> None:
    """Import TensorFlow, with its start-up noise silenced, before the first output (nothing on an inference-only
    install: what needs TensorFlow says so, with the command that installs it).

    Called once the options have been checked: a mistake that needs no model is
    reported at once, not after the seconds TensorFlow takes to load.
    """
    try:
        import_backend_quietly()
    except ImportError:
        pass

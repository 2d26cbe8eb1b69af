"""fer-batch: facial expression recognition for photo collections and video, in batches.

Importing the package is cheap: TensorFlow loads only when a model is used.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def _find_version() -> str:
    """The installed distribution's version; in a source tree that was never installed, ``pyproject.toml``'s."""
    try:
        return version("fer-batch")
    except PackageNotFoundError:
        pass
    import tomllib  # noqa: PLC0415 - only a source tree that was never installed needs it

    try:
        pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
        return str(pyproject["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "0+unknown"  # PEP 440: sorts below every release, so it never passes for one


__version__ = _find_version()

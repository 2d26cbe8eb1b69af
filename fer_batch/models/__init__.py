"""The models shipped inside the package, and resolution of ``--model`` values.

Four models ship (their cards are in ``model_cards/``): ``accurate``, the
default, and ``fast``, for when classification rather than face detection is
the bottleneck, both trained toward the FER+ crowd's votes; and
``accurate-fer2013`` and ``fast-fer2013``, the same networks trained on
FER2013's single labels. ``--model`` takes one of those names, a ``.keras``
file, or a training output folder (which holds ``model.keras``).
"""

from __future__ import annotations

from pathlib import Path

from fer_batch.errors import ModelError

MODELS_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL = "accurate"
MODEL_FILE = "model.keras"  # what `fer-batch train` writes into its output folder


def shipped_models() -> dict[str, Path]:
    """Name -> path of every model file in the package."""
    return {p.stem: p for p in sorted(MODELS_DIR.glob("*.keras"))}


def resolve_model(spec: str | Path | None = None) -> Path:
    """The model file for a shipped name, a ``.keras`` path, or a training output folder."""
    spec = DEFAULT_MODEL if spec is None or str(spec) == "" else spec
    shipped = shipped_models()
    if str(spec) in shipped:
        return shipped[str(spec)]
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / MODEL_FILE
    if path.is_file():
        return path
    names = ", ".join(shipped) or "none installed"
    raise ModelError(f"no model {str(spec)!r}: not a shipped model ({names}), a .keras file or a training folder")

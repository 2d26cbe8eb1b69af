"""The likeliest mistakes with each command end with a clear message and its documented exit code, never a traceback.

The mistakes are listed once, in ``.ci/check_install.py`` (:data:`MISTAKES`), which ``.ci/run`` runs as whole
processes on the default install (no extras). Here they run in this venv, in process (Typer's test runner: a
traceback shows as an exception that is not ``SystemExit``), so the suite checks them in a few seconds; the
mistakes only an install without the extras can make (MTCNN without TensorFlow...) are left to ``.ci/run``.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import REPO


def load_check_install() -> ModuleType:
    """``.ci/check_install.py`` as a module (``.ci`` is no package: CI runs the file with the venv's Python)."""
    if "check_install" not in sys.modules:
        spec = importlib.util.spec_from_file_location("check_install", REPO / ".ci" / "check_install.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["check_install"] = module  # dataclasses look their module up by name
        spec.loader.exec_module(module)
    return sys.modules["check_install"]


CHECK = load_check_install()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = CHECK.make_workspace(tmp_path_factory.mktemp("workspace"))
    CHECK.prepare_mistakes(root)
    return root


@pytest.fixture()
def in_workspace(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The workspace as the current folder, and the package's logger as it was before (each command sets up
    its own handler on the runner's stderr; other tests read the logger through pytest's capture)."""
    monkeypatch.chdir(workspace)
    logger = logging.getLogger("fer_batch")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield workspace
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


def test_every_command_has_its_mistakes_listed() -> None:
    commands = {mistake.args[0] for mistake in CHECK.MISTAKES}
    assert set(CHECK.COMMANDS) <= commands, set(CHECK.COMMANDS) - commands


@pytest.mark.parametrize("mistake", [m for m in CHECK.MISTAKES if m.install == "any"], ids=lambda m: m.what)
def test_a_likely_mistake_gets_a_clear_message_and_its_exit_code(mistake, in_workspace: Path) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from fer_batch.cli import app

    result = CliRunner().invoke(app, list(mistake.args), input=mistake.stdin or "", prog_name="fer-batch")
    assert isinstance(result.exception, SystemExit), result.exception  # any other exception: a traceback
    assert result.exit_code == mistake.code, result.output
    assert mistake.message in result.output, result.output

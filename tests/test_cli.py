"""The command line through its real entry point (a subprocess running the installed ``fer-batch``)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

import fer_batch as package
from fer_batch.cli import app

from .conftest import REPO, SAMPLE_MEDIA, fer_batch_command, interrupt_when


def fer_batch(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = fer_batch_command()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([*cmd, *map(str, args)], input=stdin, capture_output=True, text=True, timeout=300,
                          env=env, check=False)


def test_help_is_fast_and_lists_commands() -> None:
    began = time.perf_counter()
    proc = fer_batch("--help")
    assert proc.returncode == 0
    for command in ("images", "video", "train", "evaluate"):
        assert command in proc.stdout
    assert time.perf_counter() - began < 10  # no TensorFlow import for --help


def test_images_to_stdout_with_bad_inputs(tiny_model_path: Path, tmp_path: Path) -> None:
    zero = tmp_path / "zero.jpg"
    zero.write_bytes(b"")
    fake = tmp_path / "notes.png"
    fake.write_text("not an image")
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = fer_batch("images", SAMPLE_MEDIA / "two_people_composite.jpg", SAMPLE_MEDIA / "chelsea_cat.png",
                     zero, fake, empty, tmp_path / "missing.jpg", "--model", tiny_model_path, "--out", "-")
    assert proc.returncode == 1, proc.stderr  # some inputs failed: documented exit code 1
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    statuses = [(Path(r["source"]).name, r["status"]) for r in rows]
    assert statuses == [("two_people_composite.jpg", "ok"), ("two_people_composite.jpg", "ok"),
                        ("chelsea_cat.png", "no_face"), ("zero.jpg", "error"), ("notes.png", "error"),
                        ("empty", "error"), ("missing.jpg", "error")]
    assert "zero.jpg: empty file" in proc.stderr  # the reason is logged on stderr, not in the data stream
    assert "Could not find cuda" not in proc.stderr  # TensorFlow start-up noise stays hidden


def test_images_json_file_and_paths_on_stdin(tiny_model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "res" / "results.json"
    paths = f"{SAMPLE_MEDIA / 'grace_hopper.jpg'}\n{SAMPLE_MEDIA / 'chelsea_cat.png'}\n"
    proc = fer_batch("images", "-", "--model", tiny_model_path, "--out", out, "--quiet", stdin=paths)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert [d["status"] for d in data] == ["ok", "no_face"]
    assert set(data[0]["faces"][0]["probabilities"]) == {"angry", "disgust", "fear", "happy", "neutral", "sad",
                                                         "surprise"}
    assert proc.stdout == ""


def test_unknown_model_is_a_clear_error() -> None:
    proc = fer_batch("images", SAMPLE_MEDIA, "--model", "no-such-model")
    assert proc.returncode == 3
    assert "no model 'no-such-model'" in proc.stderr


def test_bad_output_extension_is_a_usage_error(tiny_model_path: Path) -> None:
    proc = fer_batch("images", SAMPLE_MEDIA, "--model", tiny_model_path, "--out", "results.txt")
    assert proc.returncode == 2 and "--format" in proc.stderr


def test_ctrl_c_leaves_a_valid_json_file(tiny_model_path: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(300):
        (photos / f"p{i:03d}.jpg").write_bytes((SAMPLE_MEDIA / "two_people_composite.jpg").read_bytes())
    out = tmp_path / "partial.json"
    code, stderr = interrupt_when(["images", str(photos), "--model", str(tiny_model_path), "--out", str(out)],
                                  lambda: out.exists() and out.read_text().count('"source"') >= 3)
    assert code == 130, stderr
    data = json.loads(out.read_text())
    assert 3 <= len(data) < 300
    assert "interrupted" in stderr


def test_version_option_and_attribute(monkeypatch: pytest.MonkeyPatch) -> None:
    assert package.__version__ == version("fer-batch")
    proc = fer_batch("--version")
    assert proc.returncode == 0 and proc.stdout == f"fer-batch {package.__version__}\n"

    def not_installed(name: str) -> str:
        raise PackageNotFoundError(name)

    monkeypatch.setattr(package, "version", not_installed)  # a source tree that was never pip-installed
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'\nversion = "{package._find_version()}"\n' in pyproject


def _option_names() -> dict[str, list[str]]:
    """Every option name of every command (the root's under ""), from the command-line definition itself."""
    import typer.main

    group = typer.main.get_command(app)
    commands = {"": group, **group.commands}  # type: ignore[attr-defined]
    return {name: [opt for param in command.params for opt in (*param.opts, *param.secondary_opts)
                   if opt.startswith("-")] for name, command in commands.items()}


def test_help_at_80_columns_shows_every_option_name_whole() -> None:
    for command, names in _option_names().items():
        proc = subprocess.run([*fer_batch_command(), *([command] if command else []), "--help"], capture_output=True,
                              text=True, timeout=60, env={**os.environ, "COLUMNS": "80"}, check=False)
        assert proc.returncode == 0, proc.stderr
        assert "…" not in proc.stdout, command
        lines = proc.stdout.splitlines()
        assert not [line for line in lines[1:] if line.endswith("...")], command  # Click's cut command summaries
        assert max(map(len, proc.stdout.splitlines())) <= 80, command
        words = set(proc.stdout.replace(",", " ").replace("/", " ").split())
        assert set(names) <= words, (command, set(names) - words)

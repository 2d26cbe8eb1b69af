"""The command line through its real entry point (a subprocess running the installed ``fer-batch``)."""

from __future__ import annotations

import csv
import io
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

import fer_batch as package
from fer_batch.cli import app

from .conftest import REPO, SAMPLE_MEDIA, fer_batch_command, interrupt_when, write_drawn_dataset


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


def test_paths_on_stdin_get_their_rows_as_they_arrive(tmp_path: Path) -> None:
    """`inotifywait ... | fer-batch images -`: a photo's row comes out while stdin stays open, without waiting for
    more paths (the read-ahead of 32) or the end of stdin, and is flushed although stdout is a pipe."""
    names = ["grace_hopper.jpg", "missing.jpg", "chelsea_cat.png"]
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        proc = subprocess.Popen([*fer_batch_command(), "images", "-", "--model", "fast", "--format", "jsonl",
                                 "--quiet"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                text=True, env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"})
    assert proc.stdin is not None and proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    rows = proc.stdout

    def read_rows() -> None:  # a thread, so that the test can wait for a row with a time limit
        for line in rows:
            lines.put(line)

    reader = threading.Thread(target=read_rows, daemon=True)
    reader.start()
    try:
        for name, wait_s in zip(names, (60, 30, 30)):  # the first includes the model's loading, on a busy machine
            proc.stdin.write(f"{SAMPLE_MEDIA / name}\n")
            proc.stdin.flush()
            try:
                line = lines.get(timeout=wait_s)
            except queue.Empty:
                pytest.fail(f"no row for {name} within {wait_s} s while stdin stays open; stderr: {log.read_text()}")
            assert Path(json.loads(line)["source"]).name == name
            assert proc.poll() is None  # stdin is still open: the run goes on
        proc.stdin.close()
        assert proc.wait(timeout=60) == 1, log.read_text()  # missing.jpg: an error row, exit code 1
        reader.join(timeout=10)
        assert lines.empty()  # one row per photo, each written once
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


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
    assert "interrupted after" in stderr  # the summary line does not read like a finished run's
    assert f"the output holds the {len(data)} input(s) finished so far" in stderr


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


@pytest.mark.parametrize("command", [
    "images", "video", "train", "quantize", "evaluate",
])
def test_help_shows_no_raw_type_names(command: str) -> None:
    """`{inputs}...`, `<list[str]>`, `<str>`, `<int range>` are Typer's names for Python types, not help."""
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, [command, "--help"], prog_name="fer-batch")
    assert result.exit_code == 0, result.output
    raw = re.findall(r"<(?:list\[\w+\]|str|int|float|int range|float range|path)>|\{[a-z_]+\}", result.output)
    assert not raw, raw


def test_closed_stdout_ends_the_run_quietly(tiny_model_path: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(400):  # JSON Lines rows of 400 faces: several times what a pipe buffers
        (photos / f"p{i:03d}.jpg").symlink_to(SAMPLE_MEDIA / "grace_hopper.jpg")
    proc = subprocess.Popen([*fer_batch_command(), "images", photos, "--model", tiny_model_path, "--detector",
                             "haar", "--format", "jsonl"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    head = [proc.stdout.readline() for _ in range(3)]  # what `| head -3` reads before it exits
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert proc.wait(timeout=120) == 141, stderr  # the documented code: 128 + SIGPIPE, as cat and grep give
    assert all(json.loads(line)["status"] == "ok" for line in head)
    assert stderr == ""  # no traceback, no "Exception ignored", no summary line


# `fer-batch ARGS` with TensorFlow made unimportable: any use of it ends the process with a traceback.
_WITHOUT_TENSORFLOW = """
import runpy, sys
class NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoTensorFlow())
sys.argv = ["fer-batch", *sys.argv[1:]]
runpy.run_module("fer_batch", run_name="__main__", alter_sys=True)
"""


def fer_batch_without_tensorflow(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _WITHOUT_TENSORFLOW, *map(str, args)], capture_output=True,
                          text=True, timeout=60, cwd=REPO, env={**os.environ, "KERAS_BACKEND": "tensorflow"},
                          check=False)


@pytest.mark.parametrize(("args", "code", "message"), [
    (("images", SAMPLE_MEDIA, "--out", "results.txt"), 2, "pass --format"),
    (("images", SAMPLE_MEDIA, "--model", "no-such-model"), 3, "no model 'no-such-model'"),
    (("video", SAMPLE_MEDIA, "--fps", "0"), 2, "--fps must be a positive number"),
    (("video", SAMPLE_MEDIA, "--annotate", "copy.avi"), 2, "--annotate must name an .mp4 file"),
    (("evaluate", SAMPLE_MEDIA, "--model", "no-such-model"), 3, "no model 'no-such-model'"),
    (("train", SAMPLE_MEDIA, "--optimizer", "rmsprop"), 2, "'rmsprop' is not one of 'adam', 'adamw', 'sgd'"),
    (("train", SAMPLE_MEDIA, "--recipe", "tiny"), 2, "'tiny' is not one of 'compact', 'wide', 'vgg', 'resnet'"),
])
def test_mistakes_that_need_no_model_are_reported_before_tensorflow_loads(args: tuple[object, ...], code: int,
                                                                         message: str) -> None:
    proc = fer_batch_without_tensorflow(*args)
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_inputs_that_cannot_be_opened_need_no_model(tmp_path: Path) -> None:
    proc = fer_batch_without_tensorflow("images", tmp_path / "missing.jpg", tmp_path)
    assert proc.returncode == 1, proc.stderr  # inputs could not be read: their rows say why
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [(r["status"], r["error"]) for r in rows] == [("error", "no such file or folder"),
                                                         ("error", rows[1]["error"])]
    assert "no supported files in folder" in rows[1]["error"] and "angry" in rows[0]  # the model's columns
    assert "missing.jpg: no such file or folder" in proc.stderr and "Traceback" not in proc.stderr


def test_options_that_do_nothing_say_so_once(tmp_path: Path) -> None:
    missing = tmp_path / "missing.jpg"
    haar = fer_batch_without_tensorflow("images", missing, "--detector", "haar", "--threshold", "0.5")
    assert haar.stderr.count("--threshold does nothing with --detector haar") == 1, haar.stderr
    for quiet in (fer_batch_without_tensorflow("images", missing, "--detector", "haar"),
                  fer_batch_without_tensorflow("images", missing, "--threshold", "0.5"),
                  fer_batch_without_tensorflow("video", tmp_path / "x.mp4", "--smooth", "1", "--plot")):
        assert "does nothing" not in quiet.stderr, quiet.stderr
    smooth = fer_batch_without_tensorflow("video", tmp_path / "x.mp4", "--smooth", "1")
    assert smooth.stderr.count("--smooth applies to charts only") == 1, smooth.stderr


def test_train_says_at_once_what_it_does_and_which_options_it_ignores(tmp_path: Path) -> None:
    from fer_batch.training.train import STATE_FILE, TrainConfig

    dataset = write_drawn_dataset(tmp_path / "data", per_class=2)
    (dataset / "validation" / "unknown").mkdir()  # refused once the images are read, after the start message
    (dataset / "validation" / "unknown" / "0.png").write_bytes((dataset / "validation" / "happy" / "0.png").read_bytes())
    proc = fer_batch("train", dataset, "--out", tmp_path / "run", "--no-augment", "--random-erasing", "0.2",
                     "--teacher-weight", "0.3", "--epochs", "3")
    assert proc.returncode == 4, proc.stderr
    first = proc.stderr.splitlines()[0]
    assert first.startswith("fer-batch: training recipe compact on") and "14 training and 15 validation images" \
        in first and "7 classes (angry," in first and "3 epochs" in first and "augmentation off" in first, first
    assert "--random-erasing applies only with --augment" in proc.stderr
    assert "--teacher-weight does nothing without --teacher" in proc.stderr

    run = tmp_path / "resumed"
    (run / STATE_FILE).parent.mkdir(parents=True)
    saved = TrainConfig(dataset=dataset, out=run, recipe="wide", epochs=9).to_json()
    (run / STATE_FILE).write_text(json.dumps({"epochs_done": 2, "best_val_accuracy": 0.1, "config": saved}))
    proc = fer_batch("train", dataset, "--out", run, "--resume", "--epochs", "5", "--teacher", "fast")
    assert proc.returncode == 4, proc.stderr
    assert "resuming the run in" in proc.stderr and "after epoch 2" in proc.stderr and "recipe wide" in proc.stderr
    assert "ignored: --epochs, --teacher" in proc.stderr


def test_train_options_are_train_config_fields_with_its_defaults() -> None:
    # train builds its TrainConfig from its parameters by name; the defaults are written once, in TrainConfig.
    import inspect
    from dataclasses import MISSING, fields

    from fer_batch.cli import train
    from fer_batch.training.options import TrainConfig

    defaults = {f.name: f.default for f in fields(TrainConfig)}
    parameters = {name: p.default for name, p in inspect.signature(train).parameters.items()
                  if name not in ("ctx", "resume", "quiet")}
    assert set(parameters) <= set(defaults), set(parameters) - set(defaults)
    for name, default in parameters.items():
        if defaults[name] is not MISSING and name != "teachers":  # --teacher: None for none, as Typer needs
            assert default == defaults[name] and type(default) is type(defaults[name]), name


def _photo_folder(root: Path, count: int) -> Path:
    """``count`` photos (faces, no face, one broken file) in a folder, named in the order they are read."""
    import cv2

    root.mkdir()
    sources = [SAMPLE_MEDIA / "two_people_composite.jpg", SAMPLE_MEDIA / "chelsea_cat.png",
               SAMPLE_MEDIA / "grace_hopper.jpg"]
    small = []  # 400 px on the longer side: the faces stay findable, the run stays short
    for source in sources:
        image = cv2.imread(str(source))
        scale = 400 / max(image.shape[:2])
        small.append(cv2.imencode(source.suffix, cv2.resize(image, None, fx=scale, fy=scale))[1].tobytes())
    for i in range(count):
        (root / f"p{i:03d}{sources[i % 3].suffix}").write_bytes(small[i % 3])
    (root / "p050-broken.jpg").write_bytes(small[0][:2000])  # cut off: an error row
    return root


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGKILL")
def test_a_killed_run_resumes_to_what_an_uninterrupted_run_writes(tmp_path: Path) -> None:
    """CSV here; test_resume.py cuts every format at every byte, and test_video.py resumes JSON Lines."""
    from .conftest import kill_when, same_rows

    photos = _photo_folder(tmp_path / "photos", 300)
    args = ["images", str(photos), "--model", "fast", "--quiet"]  # int8 on LiteRT: no TensorFlow start-up
    full = tmp_path / "full.csv"
    assert fer_batch(*args, "--out", full).returncode == 1  # the broken photo
    out = tmp_path / "stopped.csv"
    kill_when([*args, "--out", str(out)], lambda: out.exists() and out.read_text().count("p0") >= 20)
    assert 20 <= out.read_text().count("p0") < full.read_text().count("p0")
    proc = fer_batch(*args, "--out", out, "--resume")
    assert proc.returncode == 1, proc.stderr
    assert same_rows(list(csv.DictReader(out.open())), list(csv.DictReader(full.open())))


def test_an_existing_output_is_never_replaced_without_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "results.csv"
    out.write_text("precious\n")
    args = ["images", str(SAMPLE_MEDIA / "grace_hopper.jpg"), "--model", "fast", "--out", str(out)]
    began = time.perf_counter()
    proc = fer_batch(*args)
    assert proc.returncode == 2 and "--resume" in proc.stderr and "--overwrite" in proc.stderr
    assert time.perf_counter() - began < 10 and out.read_text() == "precious\n"  # refused before the model
    proc = fer_batch(*args, "--resume")  # not a fer-batch output: refused, left as it is
    assert proc.returncode == 2 and out.read_text() == "precious\n", proc.stderr
    assert fer_batch(*args, "--resume", "--overwrite").returncode == 2
    assert fer_batch("images", str(SAMPLE_MEDIA), "--resume").returncode == 2  # stdout cannot be resumed
    assert fer_batch(*args, "--overwrite", "--quiet").returncode == 0
    assert out.read_text().startswith("source,face,")
    proc = fer_batch(*args, "--resume")  # complete: the last input is redone, nothing is duplicated
    assert proc.returncode == 0 and out.read_text().count("grace_hopper") == 1, proc.stderr


def test_a_folder_of_parts_never_loses_other_files(tmp_path: Path) -> None:
    """--out DIR/ (Ray's part files): only an earlier run's parts are replaced, and only with --overwrite."""
    from fer_batch.engines.job import clear_parts_folder
    from fer_batch.errors import UsageError
    from fer_batch.inputs.frames import FrameSource

    folder = tmp_path / "parts"
    folder.mkdir()
    (folder / "part-0.parquet").write_bytes(b"old")
    source = FrameSource([SAMPLE_MEDIA])
    with pytest.raises(UsageError, match="--overwrite"):
        clear_parts_folder(folder, source, overwrite=False)
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="other files"):
        clear_parts_folder(folder, source, overwrite=True)
    assert (folder / "notes.txt").exists() and (folder / "part-0.parquet").exists()
    (folder / "notes.txt").unlink()
    clear_parts_folder(folder, source, overwrite=True)
    assert not any(folder.iterdir())
    with pytest.raises(UsageError, match="holds inputs"):
        clear_parts_folder(SAMPLE_MEDIA, FrameSource([SAMPLE_MEDIA]), overwrite=True)

"""Check an install of fer-batch as a user has it: run with the Python of the virtual environment to check.

    .venv/bin/python .ci/check_install.py                 # README command 1's install (`pip install .`)
    VENV/bin/python .ci/check_install.py --extra parquet   # an install with one extra: what the docs promise of it

``.ci/run`` runs it after README command 1, in that command's venv, before command 2 adds the test extras: so
what a user of the default install meets is checked on the default install, not on the test venv, which brings
pandas, TensorFlow and the rest. Needs nothing but the install itself (no pytest): the media are generated here,
from ``sample_media/``. Each check prints one line; the exit code is 1 when any failed.

The default install's checks: ``images`` on photos (and ``--annotate``), ``video`` on a generated clip, ``report``
of a photo run, ``evaluate`` on generated labelled crops, ``--help`` of every command, the Python examples of the README and of ``docs/`` (see
:func:`python_examples`), and the
most likely mistakes with each command (:data:`MISTAKES`): each must end with a clear message and its documented
exit code, never a traceback. ``tests/test_readme.py`` and ``tests/test_install_check.py`` import this file, so
the pytest suite runs the same examples and mistakes in the test venv.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2  # the install's own OpenCV and NumPy
import numpy as np

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
SAMPLE_MEDIA = REPO / "sample_media"
COMMANDS = ("images", "video", "report", "train", "evaluate", "quantize")
CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


# -- generated media -------------------------------------------------------------------------------------


def make_workspace(root: Path) -> Path:
    """A folder with what the checks and the documented examples name, generated from ``sample_media/``.

    ``photos/`` (three sample photos at 400 px: faces stay findable, runs stay short), ``a.jpg`` and ``b.png``,
    ``clip.mp4`` and ``clips/clip.mp4`` (2 s of a face moving across a frame), ``crops/<class>/`` (labelled
    48x48 crops) and ``dataset/`` (the training layout: ``train/`` and ``validation/`` of such crops).
    """
    root.mkdir(parents=True, exist_ok=True)
    photos = root / "photos"
    photos.mkdir(exist_ok=True)
    small = {}
    for name in ("grace_hopper.jpg", "two_people_composite.jpg", "chelsea_cat.png"):
        image = cv2.imread(str(SAMPLE_MEDIA / name))
        scale = 400 / max(image.shape[:2])
        small[name] = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(photos / name), small[name])
    cv2.imwrite(str(root / "a.jpg"), small["grace_hopper.jpg"])
    cv2.imwrite(str(root / "b.png"), small["two_people_composite.jpg"])
    _write_clip(root / "clip.mp4", small["grace_hopper.jpg"])
    (root / "clips").mkdir(exist_ok=True)
    shutil.copy(root / "clip.mp4", root / "clips" / "clip.mp4")
    face = cv2.cvtColor(small["grace_hopper.jpg"], cv2.COLOR_BGR2GRAY)
    rng = np.random.default_rng(0)
    for folder in (root / "crops", root / "dataset" / "train", root / "dataset" / "validation"):
        for label, name in enumerate(CLASSES):
            (folder / name).mkdir(parents=True, exist_ok=True)
            for i in range(2):  # two crops a class: a shifted, brightened piece of the face
                y, x = rng.integers(0, 60, 2)
                crop = cv2.resize(face[y:y + 200, x:x + 200], (48, 48))
                cv2.imwrite(str(folder / name / f"{i}.png"), np.clip(crop.astype(int) + 8 * label, 0, 255).astype(np.uint8))
    return root


def _write_clip(path: Path, image: np.ndarray, seconds: float = 2.0, fps: float = 10.0) -> None:
    """An MPEG-4 clip of ``image`` sliding across a larger frame, so its face moves (a track to follow)."""
    height, width = image.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width + 40, height))
    for i in range(int(seconds * fps)):
        frame = np.full((height, width + 40, 3), 40, np.uint8)
        frame[:, 2 * i:2 * i + width] = image
        writer.write(frame)
    writer.release()


# -- running fer-batch -----------------------------------------------------------------------------------


def fer_batch_command() -> list[str]:
    """The ``fer-batch`` entry point of the install whose Python runs this file."""
    exe = Path(sys.executable).with_name("fer-batch")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "fer_batch"]


def fer_batch(args: Sequence[str], cwd: Path, stdin: str | None = None,
              timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*fer_batch_command(), *args], cwd=cwd, input=stdin if stdin is not None else "",
                          capture_output=True, text=True, timeout=timeout_s, check=False,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


class CheckFailed(Exception):
    """A check's reason for failing, in one line."""


def expect(proc: subprocess.CompletedProcess[str], code: int) -> None:
    """The run ended with ``code`` and without a traceback; else :class:`CheckFailed` with its stderr's end."""
    if proc.returncode != code or "Traceback" in proc.stderr:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise CheckFailed(f"exit code {proc.returncode} (expected {code}): {tail}")


# -- the most likely mistakes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Mistake:
    """A command a user gets wrong, the exit code docs/usage.md documents for it, and what its message says.

    ``args`` are relative to the workspace (:func:`make_workspace`). ``install`` is the install it applies to:
    ``default`` for mistakes only an install without the extras makes (MTCNN without TensorFlow), ``any``
    for the others.
    """

    what: str
    args: tuple[str, ...]
    code: int
    message: str
    stdin: str | None = None
    install: str = "any"


EXIT_INPUTS, EXIT_USAGE, EXIT_MODEL, EXIT_LAYOUT = 1, 2, 3, 4  # the exit codes of docs/usage.md

MISTAKES: tuple[Mistake, ...] = (
    Mistake("images: a missing path", ("images", "missing.jpg", "--model", "fast"), EXIT_INPUTS,
            "missing.jpg: no such file or folder"),
    Mistake("images: a file that is not an image", ("images", "notes.jpg", "--model", "fast"), EXIT_INPUTS,
            "notes.jpg: "),
    Mistake("images: an empty folder", ("images", "empty", "--model", "fast"), EXIT_INPUTS,
            "no supported files in folder"),
    Mistake("images: nothing on stdin", ("images", "-", "--model", "fast"), EXIT_INPUTS, "-: no paths on stdin",
            stdin=""),
    Mistake("images: no input at all", ("images",), EXIT_USAGE, "Missing argument"),
    Mistake("images: an output extension it cannot write", ("images", "photos", "--out", "rows.txt"), EXIT_USAGE,
            "pass --format"),
    Mistake("images: an unknown model", ("images", "photos", "--model", "nosuch"), EXIT_MODEL, "no model 'nosuch'"),
    Mistake("images: a model file that is not one", ("images", "photos", "--model", "notes.jpg"), EXIT_MODEL,
            "notes.jpg"),
    Mistake("images: an unknown detector", ("images", "photos", "--detector", "foo"), EXIT_USAGE,
            "'foo' is not one of 'yunet', 'mtcnn', 'haar'"),
    Mistake("images: --min-face-size too small", ("images", "photos", "--min-face-size", "0"), EXIT_USAGE,
            "--min-face-size"),
    Mistake("images: --threshold above 1", ("images", "photos", "--threshold", "2"), EXIT_USAGE, "--threshold"),
    Mistake("images: --batch-size not a number", ("images", "photos", "--batch-size", "many"), EXIT_USAGE,
            "--batch-size"),
    Mistake("images: an unknown option", ("images", "photos", "--treshold", "0.5"), EXIT_USAGE, "No such option"),
    Mistake("images: an existing output", ("images", "photos", "--out", "precious.csv"), EXIT_USAGE, "--overwrite"),
    Mistake("images: --resume and --overwrite", ("images", "photos", "--out", "new.csv", "--resume", "--overwrite"),
            EXIT_USAGE, "exclude each other"),
    Mistake("images: --resume of a file that is no output", ("images", "photos", "--out", "precious.csv",
                                                             "--resume"), EXIT_USAGE, "precious.csv"),
    Mistake("images: an output folder that cannot be made", ("images", "photos", "--out", "notes.jpg/rows.csv"),
            EXIT_USAGE, "cannot write notes.jpg/rows.csv"),
    Mistake("images: --detector mtcnn without TensorFlow", ("images", "photos", "--detector", "mtcnn"), EXIT_USAGE,
            'pip install "fer-batch[tensorflow]"', install="default"),
    Mistake("images: float32 without TensorFlow", ("images", "photos", "--model", "fast", "--precision", "float32"),
            EXIT_MODEL, "needs TensorFlow", install="default"),
    Mistake("images: Parquet without pyarrow", ("images", "photos", "--out", "rows.parquet"), EXIT_USAGE,
            'pip install "fer-batch[parquet]"', install="default"),
    Mistake("images: --engine ray without Ray", ("images", "photos", "--engine", "ray"), EXIT_USAGE,
            'pip install "fer-batch[ray]"', install="default"),
    Mistake("video: a missing file", ("video", "missing.mp4", "--model", "fast"), EXIT_INPUTS,
            "missing.mp4: no such file or folder"),
    Mistake("video: a photo", ("video", "a.jpg", "--model", "fast"), EXIT_INPUTS, "not a video"),
    Mistake("video: --fps 0", ("video", "clip.mp4", "--fps", "0"), EXIT_USAGE, "--fps must be a positive number"),
    Mistake("video: --every 0", ("video", "clip.mp4", "--every", "0"), EXIT_USAGE, "--every"),
    Mistake("video: --annotate to another format", ("video", "clip.mp4", "--annotate", "copy.avi"), EXIT_USAGE,
            "--annotate must name an .mp4 file"),
    Mistake("video: --summary to another format", ("video", "clip.mp4", "--summary", "tracks.txt"), EXIT_USAGE,
            "tracks.txt"),
    Mistake("video: --show without a display", ("video", "clip.mp4", "--show"), EXIT_USAGE, "--show"),
    Mistake("video: a camera name that is none", ("video", "camera:x"), EXIT_USAGE, "camera:x"),
    Mistake("report: a missing results file", ("report", "missing.csv"), EXIT_USAGE, "missing.csv: no such results file"),
    Mistake("report: a CSV that is no results file", ("report", "precious.csv"), EXIT_USAGE,
            "precious.csv is not a CSV written by fer-batch"),
    Mistake("report: a file it cannot read", ("report", "notes.jpg"), EXIT_USAGE, "pass --format"),
    Mistake("report: --max-faces below 0", ("report", "precious.csv", "--max-faces", "-1"), EXIT_USAGE,
            "--max-faces"),
    Mistake("report: Parquet without pyarrow", ("report", "old.parquet"), EXIT_USAGE, 'pip install "fer-batch[parquet]"',
            install="default"),
    Mistake("evaluate: a missing folder", ("evaluate", "missing"), EXIT_USAGE, "missing"),
    Mistake("evaluate: a folder without class folders", ("evaluate", "photos", "--model", "fast"), EXIT_LAYOUT,
            "photos"),
    Mistake("evaluate: an unknown model", ("evaluate", "crops", "--model", "nosuch"), EXIT_MODEL,
            "no model 'nosuch'"),
    Mistake("train: a missing dataset", ("train", "missing"), EXIT_USAGE, "missing"),
    Mistake("train: an unknown optimizer", ("train", "dataset", "--optimizer", "rmsprop"), EXIT_USAGE,
            "'rmsprop' is not one of 'adam', 'adamw', 'sgd'"),
    Mistake("train: --epochs 0", ("train", "dataset", "--epochs", "0"), EXIT_USAGE, "--epochs"),
    Mistake("train: without TensorFlow", ("train", "dataset", "--out", "run", "--epochs", "1"), EXIT_USAGE,
            'pip install "fer-batch[tensorflow]"', install="default"),
    Mistake("quantize: no --out", ("quantize", "fast", "dataset"), EXIT_USAGE, "--out"),
    Mistake("quantize: an int8-only model", ("quantize", "accurate", "dataset", "--out", "q.keras"), EXIT_MODEL,
            "accurate"),
    Mistake("quantize: without TensorFlow", ("quantize", "fast", "dataset", "--out", "q.keras"), EXIT_USAGE,
            'pip install "fer-batch[tensorflow]"', install="default"),
    Mistake("an unknown command", ("imagse", "photos"), EXIT_USAGE, "No such command"),
)


def prepare_mistakes(root: Path) -> None:
    """The files the mistakes name, beside the workspace's media."""
    (root / "notes.jpg").write_text("not an image\n")
    (root / "empty").mkdir(exist_ok=True)
    (root / "precious.csv").write_text("my own notes\n")
    (root / "old.parquet").write_bytes(b"PAR1")  # what a report of Parquet results without pyarrow meets


def check_mistake(mistake: Mistake, root: Path) -> None:
    proc = fer_batch(mistake.args, root, stdin=mistake.stdin, timeout_s=120)
    expect(proc, mistake.code)
    if mistake.message not in proc.stderr:
        raise CheckFailed(f"stderr lacks {mistake.message!r}: {proc.stderr.strip()[-300:]!r}")


# -- the Python examples of the README and docs/ ---------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A fenced code block of a documented page: its language, code, first line number and section heading."""

    lang: str
    code: str
    line: int
    section: str


def code_blocks(text: str) -> list[Block]:
    """Every fenced code block of ``text`` (Markdown), with the ``##``/``###`` heading it stands under."""
    blocks, section, fence, start, lang = [], "", None, 0, ""
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        if fence is None and line.startswith("#"):
            section = line.lstrip("#").strip()
        elif fence is None and line.startswith("```"):
            fence, start, lang = [], number, line[3:].strip()
        elif fence is not None and line.startswith("```"):
            blocks.append(Block(lang, "\n".join(fence) + "\n", start, section))
            fence = None
        elif fence is not None:
            fence.append(line)
    return blocks


# What the Python examples use without defining it (a reader's own image and crops), and what stands in for
# what this machine lacks: a network camera (a port on which nothing listens: the stream's error row) and a
# webcam (camera:0 is kept: without one, its error row says so).
PYTHON_PRELUDE = """
import cv2
import numpy as np

bgr_image = cv2.imread("photos/grace_hopper.jpg")
faces = np.full((2, 48, 48), 128, np.uint8)
"""
PYTHON_STAND_INS = {"rtsp://camera.local/stream": "rtsp://127.0.0.1:9/stream"}

_RUN_BLOCKS = """
import json, sys
namespace = {"__name__": "__docs__"}
page, blocks = json.loads(sys.argv[1])
for line, code in blocks:
    print(f"--- {page} line {line}", flush=True)
    exec(compile(code, f"{page}, block at line {line}", "exec"), namespace)
"""


def documented_pages() -> list[Path]:
    """The README and every page of ``docs/`` (README first, then by name): what the examples' checks cover, so a
    new page is covered as soon as it exists."""
    return [README, *sorted(DOCS.glob("*.md"))]


def page_name(page: Path) -> str:
    """A documented page as the checks name it: its path from the repository root (``docs/usage.md``)."""
    return page.relative_to(REPO).as_posix()


def python_examples(text: str) -> list[Block]:
    """A page's Python blocks, in order (each builds on the ones before it on the page, as a reader runs them)."""
    return [block for block in code_blocks(text) if block.lang == "python"]


def run_python_examples(root: Path, page: Path = README,
                        python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    """Run every Python block of ``page``, in order, in an interpreter of its own (a reader runs one page at a
    time), in the workspace ``root``. Prints ``--- PAGE line N`` before each block, the prelude's N 0."""
    code = [(0, PYTHON_PRELUDE)]
    for block in python_examples(page.read_text()):
        text = block.code
        for original, stand_in in PYTHON_STAND_INS.items():
            text = text.replace(original, stand_in)
        code.append((block.line, text))
    return subprocess.run([python, "-c", _RUN_BLOCKS, json.dumps([page_name(page), code])], cwd=root,
                          capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "OPENCV_FFMPEG_LOGLEVEL": "-8"})


# -- the checks ------------------------------------------------------------------------------------------


def check_images(root: Path) -> None:
    expect(fer_batch(["images", "photos", "--out", "rows.csv", "--overwrite", "--quiet"], root), 0)
    statuses = {row["status"] for row in csv.DictReader((root / "rows.csv").open())}
    if statuses != {"ok", "no_face"}:
        raise CheckFailed(f"photos with faces and a cat: statuses {statuses}")


def check_report(root: Path) -> None:
    expect(fer_batch(["images", "photos", "--out", "report.csv", "--overwrite", "--quiet", "--annotate", "annotated"],
                     root), 0)
    if len([p for p in (root / "annotated" / "photos").iterdir()]) != 3:
        raise CheckFailed("--annotate: not one copy per photo")
    expect(fer_batch(["report", "report.csv", "--out", "report.html"], root), 0)
    page = (root / "report.html").read_text(encoding="utf-8")
    if '<img class="thumb"' not in page or "<script" in page or "<svg" not in page:
        raise CheckFailed(f"report.html: {len(page)} characters, no thumbnail or bar chart")


def check_video(root: Path) -> None:
    expect(fer_batch(["video", "clip.mp4", "--out", "rows.jsonl", "--overwrite", "--summary", "tracks.csv",
                      "--plot", "--quiet"], root), 0)
    records = [json.loads(line) for line in (root / "rows.jsonl").read_text().splitlines()]
    if not records or not any(r["faces"] for r in records) or not (root / "rows.png").exists():
        raise CheckFailed(f"{len(records)} record(s), faces in {sum(bool(r['faces']) for r in records)}")


# FER+'s vote columns, in its file's order; a votes file beside the crops makes evaluate score the crowd too.
VOTE_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF")
CROWD_NAME = {"angry": "anger", "happy": "happiness", "sad": "sadness"}


def check_evaluate(root: Path) -> None:
    proc = fer_batch(["evaluate", "crops", "--model", "fast", "--out", "report"], root)
    expect(proc, 0)
    metrics = json.loads((root / "report" / "metrics.json").read_text())
    if metrics["count"] != 2 * len(CLASSES) or "accuracy" not in proc.stdout:
        raise CheckFailed(f"count {metrics['count']}; stdout {proc.stdout[:200]!r}")
    # With crowd votes (ten annotators, eight for the folder's class): the FER+ scores, on this install too.
    lines = ["file," + ",".join(VOTE_COLUMNS)]
    for name in CLASSES:
        own = CROWD_NAME.get(name, name)
        for i in range(2):
            lines.append(f"crops/{name}/{i}.png," + ",".join("8" if c == own else "2" if c == "neutral" and
                                                            own != "neutral" else "0" for c in VOTE_COLUMNS))
    votes = root / "votes.csv"
    votes.write_text("\n".join(lines) + "\n")
    proc = fer_batch(["evaluate", "crops", "--model", "fast", "--votes", "votes.csv", "--out", "crowd"], root)
    expect(proc, 0)
    crowd = json.loads((root / "crowd" / "metrics.json").read_text()).get("ferplus", {})
    if crowd.get("count") != 2 * len(CLASSES) or "majority accuracy" not in proc.stdout:
        raise CheckFailed(f"crowd scores {crowd.get('count')}; stdout {proc.stdout[-300:]!r}")


def check_help(root: Path) -> None:
    for command in ("", *COMMANDS):
        proc = fer_batch([command, "--help"] if command else ["--help"], root, timeout_s=60)
        expect(proc, 0)
        if "Usage: fer-batch" not in proc.stdout:
            raise CheckFailed(f"fer-batch {command} --help: {proc.stdout[:200]!r}")


def check_python_examples(root: Path, page: Path) -> None:
    proc = run_python_examples(root, page)
    if proc.returncode != 0:
        raise CheckFailed(" | ".join(proc.stderr.strip().splitlines()[-4:]))


def check_parquet(root: Path) -> None:
    import pyarrow.parquet as pq  # noqa: PLC0415 - only the parquet and ray extras install it

    expect(fer_batch(["images", "photos", "--out", "rows.parquet", "--overwrite", "--quiet"], root), 0)
    expect(fer_batch(["images", "photos", "--out", "rows.csv", "--overwrite", "--quiet"], root), 0)
    table = pq.read_table(root / "rows.parquet")
    rows = list(csv.DictReader((root / "rows.csv").open()))
    if table.num_rows != len(rows) or str(table.schema.field("face").type) != "int64":
        raise CheckFailed(f"{table.num_rows} Parquet rows against {len(rows)} CSV rows; schema {table.schema}")


def check_ray(root: Path) -> None:
    import pyarrow.parquet as pq  # noqa: PLC0415 - only the parquet and ray extras install it

    expect(fer_batch(["images", "photos", "--engine", "ray", "--workers", "1", "--model", "fast", "--out",
                      "ray.parquet", "--overwrite", "--quiet"], root, timeout_s=600), 0)
    table = pq.read_table(root / "ray.parquet")
    if table.num_rows < 3:
        raise CheckFailed("fewer rows than photos")
    expect(fer_batch(["images", "photos", "--engine", "ray", "--workers", "1", "--model", "fast", "--out",
                      "parts/", "--overwrite", "--quiet"], root, timeout_s=600), 0)  # a folder of part files
    if pq.read_table(root / "parts").to_pylist() != table.to_pylist():
        raise CheckFailed("the part files do not hold the rows of the one-file run")


CHECKS: dict[str, list[tuple[str, Callable[[Path], None]]]] = {
    "default": [("images on photos", check_images), ("video on a generated clip", check_video),
                ("report of a photo run, with annotated photos", check_report),
                ("evaluate on generated crops", check_evaluate), ("--help of every command", check_help),
                *[(f"the Python examples of {page_name(page)}", lambda r, page=page: check_python_examples(r, page))
                  for page in documented_pages() if python_examples(page.read_text())]],
    "parquet": [("a Parquet output, read back with pyarrow", check_parquet)],
    "ray": [("--engine ray on a local cluster, into a file and a folder of parts", check_ray)],
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extra", choices=[name for name in CHECKS if name != "default"],
                        help="check what the docs promise of this extra (the install must have it)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="fer-batch-check-"))
    make_workspace(root)
    checks = list(CHECKS[args.extra or "default"])
    if args.extra is None:
        prepare_mistakes(root)
        checks += [(f"mistake: {m.what}", lambda r, m=m: check_mistake(m, r)) for m in MISTAKES]
    failed = 0
    for name, check in checks:
        try:
            check(root)
        except (CheckFailed, OSError, KeyError, ValueError, subprocess.TimeoutExpired) as exc:
            failed += 1
            print(f"FAIL {name}: {exc}", flush=True)
        else:
            print(f"ok   {name}", flush=True)
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{len(checks) - failed} of {len(checks)} checks passed ({sys.prefix})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

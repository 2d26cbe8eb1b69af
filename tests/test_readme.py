"""The documented examples cannot drift: every shell command and Python block of the README and of each page of
``docs/`` runs here, or is marked; every link leads somewhere; every option named is an option.

The pages are found, not listed (:func:`documented_pages`: ``README.md`` and ``docs/*.md``), so a new page is
covered as soon as it exists. Each command of each ``bash`` block is a key of :data:`SHELL`: either :data:`RUN`
(it runs, as written, in a folder of generated media that holds what the examples name: ``photos/``,
``clip.mp4``, ``dataset/``, a ``runs/my-model/``...), or the reason it cannot run here (a camera, a cluster, the
GPU machine, or minutes of training). A marked ``fer-batch`` command is still parsed by the command line's own
definition, so a renamed option, a choice that is gone or a missing argument fails here too. Each page's Python
blocks run in order, in one interpreter of their own, as ``.ci/check_install.py`` runs them on the default
install (with its stand-ins for a network camera). The set-up commands are checked to be the lines ``.ci/run``
runs. Every relative link leads to a file, and its ``#anchor`` to a heading; the README links every page; and
every ``--option`` the prose quotes is one of a ``fer-batch`` command or of a tool of this repository; and the
pages show every command ``fer-batch --help`` lists, and no other.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO
from .test_install_check import CHECK

README = REPO / "README.md"
RUN = "run"


def documented_pages() -> list[Path]:
    """``README.md`` and every page of ``docs/``: what these checks cover."""
    pages = CHECK.documented_pages()
    assert pages[0] == README and len(pages) > 1, pages
    return pages


PAGES = {CHECK.page_name(page): page.read_text() for page in documented_pages()}

_TRAINS = "trains for minutes (50 epochs by default); tests/test_training.py trains on a drawn dataset"
_TENSORFLOW = "loads TensorFlow (seconds); "
_CLUSTER = "needs a Ray cluster of several machines"
_NODES = ("starts a Ray node that stays up (port 6379); tests/test_ray_cluster.py starts two nodes the same way, "
          "each with its own ports and folder")
_LOCAL_RAY = ("starts a local Ray cluster (half a minute); .ci/check_install.py --extra ray and "
              "tests/test_ray_engine.py run it")
_SHARED = "needs FER2013 in ../shared; tests/test_dataset_pack.py packs and unpacks a drawn dataset"
_QUANTIZES = _TENSORFLOW + "tests/test_quantize.py quantises a tiny model"
_SAMPLE_MEDIA = ("runs in the repository root, on sample_media/ (how docs/images/report.png was made); "
                 "tests/test_report.py makes the report of sample_media")

SHELL: dict[str, str] = {
    # README, set-up: .ci/run runs both, as written (test_setup_commands_are_the_lines_ci_runs)
    "python3 -m venv .venv && .venv/bin/pip install -q . && .venv/bin/fer-batch images sample_media --out "
    "results.csv --overwrite": "installs a venv: .ci/run runs it as written",
    'python3 -m venv .venv && .venv/bin/pip install -q ".[test]" && .venv/bin/python -m pytest':
        "installs a venv and runs this suite: .ci/run runs it as written",
    # README (the commands people run) and docs/usage.md
    "fer-batch images ./photos --out results.csv": RUN,
    "fer-batch images a.jpg b.png --out results.json": RUN,
    "find /data -name '*.jpg' | fer-batch images - > results.csv": RUN,  # /data: see SHELL_STAND_INS
    "fer-batch images ./photos --min-face-size 40 --threshold 0.9 --batch-size 512 --workers 2": RUN,
    "fer-batch images ./photos --detector mtcnn": _TENSORFLOW + "tests/test_detect.py runs MTCNN",
    "fer-batch images ./photos --model fast": RUN,
    "fer-batch images ./photos --model accurate-fer2013": RUN,
    "fer-batch images ./photos --model fast --precision float32":
        _TENSORFLOW + "tests/test_classify.py runs float32",
    "fer-batch images ./photos --save-crops crops/ --model runs/my-model/": RUN,
    "fer-batch images ./photos --annotate annotated/ --out annotated.csv": RUN,
    "fer-batch images ./photos --out results.csv --resume": RUN,
    "fer-batch images ./photos --out results.csv --overwrite": RUN,
    "fer-batch video clip.mp4 --out clip.csv --plot": RUN,
    "fer-batch video rtsp://camera.local/stream --duration 600 --out live.csv":
        "needs a network camera; tests/test_streams.py serves streams over loopback",
    "fer-batch train dataset/ --out runs/my-model": _TRAINS,
    "fer-batch evaluate dataset/validation --model runs/my-model --out report/": RUN,
    # README and docs/report.md
    "fer-batch images ./photos --annotate annotated/ > results.csv": RUN,
    "fer-batch report results.csv --out report.html": RUN,
    "fer-batch images ./photos --out results.csv --annotate annotated/": RUN,
    "fer-batch images ./photos --out faces.csv --annotate faces/ --annotate-faces-only": RUN,
    "fer-batch video clip.mp4 --out clip.jsonl": RUN,
    "fer-batch report clip.jsonl --out clip.html --max-faces 12 --unsure 12": RUN,
    "fer-batch images sample_media --out sample.csv": _SAMPLE_MEDIA,
    "fer-batch report sample.csv --out sample.html": _SAMPLE_MEDIA,
    "chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,1480 "
    "--screenshot=docs/images/report.png sample.html": "needs Chromium and the repository root; "
                                                       "tests/test_report.py takes such screenshots",
    # docs/video.md
    "fer-batch video clip.mp4 --out results.csv --plot": RUN,
    "fer-batch video clips/ --out results.jsonl --plot-path charts/ --summary tracks.csv": RUN,
    "fer-batch video talk.mp4 --annotate talk.annotated.mp4 --plot --smooth 1": RUN,
    "ls *.mov | fer-batch video - --every 1 > frames.csv": RUN,
    "fer-batch video rtsp://user:pass@10.0.0.5/stream --out live.jsonl --duration 3600 --reconnect 5":
        "needs a network camera; tests/test_streams.py serves streams over loopback",
    "fer-batch video camera:0 --show --summary tracks.csv": "needs a webcam and a display",
    # docs/ray.md
    'pip install "fer-batch[ray]"': "installs from a package index; .ci/run installs the ray extra from this tree",
    "fer-batch images ./photos --engine ray --out results.parquet": _LOCAL_RAY,
    "fer-batch video ./clips --engine ray --workers 4 --out rows.jsonl --summary tracks.csv": _LOCAL_RAY,
    "ray get-auth-token --generate": "writes ~/.ray/auth_token; tests/test_ray_cluster.py gives its nodes a "
                                     "generated token as RAY_AUTH_TOKEN",
    "RAY_AUTH_MODE=token ray start --head --port=6379": _NODES,
    "RAY_AUTH_MODE=token RAY_AUTH_TOKEN=<token> ray start --address=HEAD:6379": _NODES,
    "export RAY_AUTH_MODE=token": _CLUSTER,
    "fer-batch images /mnt/photos --engine ray --ray-address HEAD:6379 --out results.parquet": _CLUSTER,
    "fer-batch images /mnt/photos --engine ray --ray-address HEAD:6379 --out parts/": _CLUSTER,
    # docs/training.md
    "fer-batch train dataset/ --out runs/my-model --resume": _TRAINS,
    "fer-batch train dataset/ --recipe wide --epochs 35 --out runs/wide": _TRAINS,
    "fer-batch train dataset/ --init-from runs/my-model --no-augment --epochs 5 --learning-rate 1e-4 --name ft "
    "--out runs/ft": _TRAINS,
    "fer-batch images photos/ --model runs/my-model --out results.csv": RUN,
    "python -m fer_batch.training.dataset_pack pack ../shared/data/fer2013 --out gpu/fer2013.pack": _SHARED,
    "python -m fer_batch.training.dataset_pack unpack gpu/fer2013.pack --out /tmp/fer2013": _SHARED,
    "bash fer_batch/training/device_train.sh 'for seed in 21 22 23; do python3 -m fer_batch train \"$DATA\" --out "
    "\"$RUNS/resnet-g$seed\" --name resnet-g$seed --seed $seed --recipe resnet --epochs 100 --optimizer sgd "
    "--learning-rate 0.05 --weight-decay 5e-4 --crop-padding 4 --random-erasing 0.2 --mixed-precision & done; "
    "wait' 480": "needs the lent GPU machine (the device tool)",
    # docs/training.md: int8
    "fer-batch quantize runs/my-model dataset/ --out my-model-int8.keras":
        _QUANTIZES,
    "fer-batch quantize fast dataset/ --out mine.keras --flip-average --name mine":
        _QUANTIZES,
    "fer-batch quantize runs/big-model dataset/ --out big-int8.keras --int8-only":
        _QUANTIZES,
}
# What stands in, when a command runs here, for what this machine lacks: a photo collection at /data.
SHELL_STAND_INS = {"find /data ": "find . "}


def shell_commands(text: str) -> list[tuple[str, str]]:
    """(section, command) for each command of each ``bash`` block of a page: continuation lines joined, white
    space folded, comments (whole lines and trailing ``  # ...``) dropped."""
    commands = []
    for block in CHECK.code_blocks(text):
        if block.lang != "bash":
            continue
        for line in block.code.replace("\\\n", " ").splitlines():
            command = re.sub(r"\s+#\s.*$", "", line).strip()  # a trailing comment: two spaces or more, then #
            if command and not command.startswith("#"):
                commands.append((block.section, " ".join(command.split())))
    return commands


# A ``text`` block is a diagram or an illustration of output: it holds no command (checked).
_BLOCK_LANGS = {"bash", "python", "text"}
_COMMAND_START = re.compile(r"^\s*(\$|fer-batch|python|pip|from |import |\.venv/)")


def test_every_documented_command_runs_or_is_marked_with_why() -> None:
    commands = {command for text in PAGES.values() for _, command in shell_commands(text)}
    assert commands - set(SHELL) == set(), "documented commands neither run nor marked: add them to SHELL"
    assert set(SHELL) - commands == set(), "SHELL names commands no page has any more"
    for name, text in PAGES.items():
        blocks = CHECK.code_blocks(text)
        assert {block.lang for block in blocks} <= _BLOCK_LANGS, name  # another would be neither run nor marked
        for block in blocks:
            if block.lang == "text":
                assert not any(map(_COMMAND_START.match, block.code.splitlines())), (name, block.line)


def test_setup_commands_are_the_lines_ci_runs() -> None:
    readme = PAGES["README.md"]
    setup = [command for section, command in shell_commands(readme) if section == "Set-up on a fresh machine"]
    ci_lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert len(setup) == 2 and all(command in ci_lines for command in setup), setup
    assert ci_lines.index(setup[0]) < ci_lines.index(setup[1])  # command 1 before command 2, as the README says


def _parse(command: str) -> None:
    """Parse a ``fer-batch`` command line with the command line's own definition (nothing runs)."""
    import typer.main

    from fer_batch.cli import app

    name, *args = shlex.split(command)[1:]
    subcommand = typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]
    subcommand.make_context(f"fer-batch {name}", args).close()  # checks options, choices, ranges, paths


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checks' media, plus what the documented commands name besides: a training folder (the shipped ``fast``
    model as ``runs/my-model/model.keras``), ``talk.mp4`` and a ``.mov``."""
    from fer_batch.models import resolve_model

    root = CHECK.make_workspace(tmp_path_factory.mktemp("readme"))
    (root / "runs" / "my-model").mkdir(parents=True)
    shutil.copy(resolve_model("fast"), root / "runs" / "my-model" / "model.keras")
    shutil.copy(root / "clip.mp4", root / "talk.mp4")
    shutil.copy(root / "clip.mp4", root / "clip.mov")  # FFmpeg reads the container, not the name
    return root


def test_marked_fer_batch_commands_still_parse(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workspace)  # the paths they name exist here (dataset/, runs/my-model/)
    marked = [command for command, how in SHELL.items() if how != RUN and command.startswith("fer-batch ")]
    for command in marked:
        _parse(command.replace("runs/big-model", "runs/my-model"))  # one training folder stands for both
    assert len(marked) >= 10


def test_runnable_commands_run_as_written(workspace: Path, tmp_path: Path) -> None:
    """Every RUN command, page by page and in the page's order, in one shell, each section of each page in a fresh
    copy of the workspace (a section's commands build on each other: --resume finishes the results.csv written
    before it)."""
    sections: dict[tuple[str, str], list[str]] = {}
    for name, text in PAGES.items():
        for section, command in shell_commands(text):
            if SHELL.get(command) == RUN:
                for original, stand_in in SHELL_STAND_INS.items():
                    command = command.replace(original, stand_in)
                sections.setdefault((name, section), []).append(command)
    script = []
    for number, ((name, section), commands) in enumerate(sections.items()):
        folder = shlex.quote(str(tmp_path / f"section{number}"))
        script.append(f"cp -r {shlex.quote(str(workspace))} {folder} && cd {folder}")
        where = shlex.quote(f"{name}, {section}:")
        script += [f"{command}\necho \"DOC-EXIT $? \"{where}\" {command}\"" for command in commands]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OPENCV_FFMPEG_LOGLEVEL": "-8"}
    proc = subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, capture_output=True, text=True,
                          env=env, timeout=900, check=False)
    exits = re.findall(r"^DOC-EXIT (\d+) (.*)$", proc.stdout, re.MULTILINE)
    assert len(exits) == sum(map(len, sections.values())), proc.stderr[-2000:]
    failed = [(code, command) for code, command in exits if code != "0"]
    assert not failed, (failed, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]


@pytest.mark.parametrize("name", [name for name, text in PAGES.items() if CHECK.python_examples(text)])
def test_python_examples_run(name: str, workspace: Path) -> None:
    proc = CHECK.run_python_examples(workspace, REPO / name)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count(f"--- {name} line") == len(CHECK.python_examples(PAGES[name])) + 1  # and the prelude


def test_some_page_has_python_examples() -> None:
    assert any(CHECK.python_examples(text) for text in PAGES.values())  # the API page, the video page


# -- links and options ---------------------------------------------------------------------------------------

_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    """``text`` without its fenced code blocks (a link or option inside one is code, not prose)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def anchors(text: str) -> set[str]:
    """The ``#anchors`` of a Markdown page's headings, as GitHub makes them: lower case, punctuation but ``-``
    and ``_`` dropped, spaces to ``-``, ``-1``, ``-2``... after a repeated one."""
    seen: dict[str, int] = {}
    for line in _prose(text).splitlines():
        if re.match(r"#{1,6} ", line):
            slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            seen[slug] = seen.get(slug, -1) + 1
            if seen[slug]:
                seen[f"{slug}-{seen[slug]}"] = 0
    return set(seen)


def test_anchors_are_made_as_github_makes_them() -> None:
    text = "# Title\n## int8: `fer-batch quantize`\n```\n# not a heading\n```\n## Output\n## Output\n"
    assert anchors(text) == {"title", "int8-fer-batch-quantize", "output", "output-1"}


def test_every_link_leads_somewhere() -> None:
    broken = []
    for name, text in PAGES.items():
        for target in _LINK.findall(_prose(text)):
            if re.match(r"[a-z]+:", target):  # https:, mailto:: not checked (no network here)
                continue
            path, _, anchor = target.partition("#")
            file = (REPO / name).parent / path if path else REPO / name
            if not file.exists():
                broken.append((name, target, "no such file"))
            elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text()):
                broken.append((name, target, "no such heading"))
    assert not broken, broken


def test_the_readme_links_every_page() -> None:
    linked = {(REPO / target.partition("#")[0]).resolve() for target in _LINK.findall(_prose(PAGES["README.md"]))}
    assert {page.resolve() for page in documented_pages()[1:]} <= linked


# Other programs' options, where the prose quotes a command of theirs (`ray start --head`).
_OTHER_PROGRAMS = {"ruff", "ray", "pip", "chromium"}


def _known_options() -> set[str]:
    """Every option of every ``fer-batch`` command (from the command-line definition itself), and of this
    repository's tools (``benchmarks/``, ``python -m fer_batch.training.X``, ``.ci/check_install.py``: their
    ``argparse`` options, found in their source)."""
    import typer.main

    from fer_batch.cli import app

    group = typer.main.get_command(app)
    options = {"--help"}
    for command in (group, *group.commands.values()):  # type: ignore[attr-defined]
        options |= {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    for tool in [*REPO.glob("benchmarks/*.py"), *REPO.glob("fer_batch/training/*.py"), REPO / ".ci/check_install.py"]:
        options |= set(re.findall(r"add_argument\(\s*\"(--[a-z0-9-]+)\"", tool.read_text()))
    return options


def test_every_option_the_prose_quotes_exists() -> None:
    """`--option` in the prose of a page (code spans, not blocks: those are parsed or run above) is an option of
    some command: so --help, the docs and the code say the same thing when an option is renamed or removed."""
    known, unknown = _known_options(), []
    for name, text in PAGES.items():
        for span in re.findall(r"`([^`]+)`", _prose(text)):
            if Path(span.split()[0]).name in _OTHER_PROGRAMS:
                continue
            unknown += [(name, option) for option in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", span)
                        if option not in known]
    assert not unknown, unknown


def test_the_docs_name_every_command_and_no_other() -> None:
    """Each command ``fer-batch --help`` lists is shown in a code span or block of some page, and each one the
    pages show is a command: a new command gets its docs, and a renamed one takes its docs along."""
    import typer.main

    from fer_batch.cli import app

    commands = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    shown = set()
    for text in PAGES.values():
        for code in [*re.findall(r"`([^`]+)`", _prose(text)), *(command for _, command in shell_commands(text))]:
            shown |= set(re.findall(r"(?:^|[|;&(]\s*|\s)fer-batch ([a-z][a-z0-9-]*)", f" {code}"))
    assert shown == commands, (shown - commands, commands - shown)

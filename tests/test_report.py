"""``fer-batch report``: one self-contained HTML page of a results file, checked in a real browser (Chromium).

The browser tests open the page in headless Chromium, count its thumbnails and charts in the DOM it built, check
that it logged nothing on its console, and keep a screenshot in ``tests/artifacts/`` (ignored by git; CI keeps
it as an artefact). They are skipped, with the reason, where Chromium is not installed; ``.ci/run`` installs
Debian's ``chromium`` first, so CI runs them.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fer_batch.outputs import report as report_module
from fer_batch.outputs.report import build_report, digest, results_format
from fer_batch.outputs.resume import read_records
from fer_batch.outputs.writers import OutputFormat, get_writer

from .conftest import REPO, SAMPLE_MEDIA, fer_batch_command, shared_path
from .test_install_check import CHECK

ARTIFACTS = REPO / "tests" / "artifacts"  # screenshots of the pages the browser tests opened
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian: apt-get install chromium; "
                                                             ".ci/run installs it)")
THUMB = re.compile(r'<img class="thumb"')


def fer_batch(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*fer_batch_command(), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``images`` on sample_media/ (4 photos, 4 faces, one cat), plus a file that is no image; relative sources."""
    root = tmp_path_factory.mktemp("report")
    shutil.copytree(SAMPLE_MEDIA, root / "photos", ignore=shutil.ignore_patterns("*.md"))
    (root / "photos" / "notes.jpg").write_text("not an image")
    proc = fer_batch("images", "photos", "--model", "fast", "--out", "rows.csv", "--quiet", cwd=root)
    assert proc.returncode == 1, proc.stderr  # notes.jpg: an error row
    return root


def _converted(root: Path, fmt: OutputFormat) -> Path:
    """rows.csv written again in ``fmt``, by the writers themselves."""
    names = tuple(next(csv.reader((root / "rows.csv").open()))[9:-2])
    path = root / f"rows.{fmt.value}"
    binary = fmt is OutputFormat.PARQUET
    with (path.open("wb") if binary else path.open("w", newline="", encoding="utf-8")) as fh, \
            get_writer(fmt, fh, names) as writer:
        for record in read_records(root / "rows.csv", "csv", names):
            writer.write(record)
    return path


def _self_contained(page: str) -> None:
    """Nothing the page loads comes from elsewhere: every image is a data: URI, no script, style sheet or font."""
    assert "<script" not in page and "<link" not in page and "@import" not in page and "url(" not in page
    sources = re.findall(r'\ssrc="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/") for s in sources)
    assert re.findall(r"https?://[^\s\"<>]*", page) == ["http://www.w3.org/2000/svg"] * page.count("<svg")  # SVG's namespace


def test_the_page_of_a_photo_run(run: Path) -> None:
    proc = fer_batch("report", "rows.csv", "--out", "out/report.html", cwd=run)
    assert proc.returncode == 0, proc.stderr
    page = (run / "out" / "report.html").read_text()
    _self_contained(page)
    glance = re.findall(r"<b>([\d,]+)</b><span>([^<]+)</span>", page)
    assert glance == [("5", "inputs"), ("3", "photos with faces"), ("4", "faces"), ("1", "photos without a face"),
                      ("1", "errors")]
    assert "notes.jpg" in page and "not a readable image" in page  # the error row, with its reason
    assert len(THUMB.findall(page)) == 4 + 4  # each face in its expression's gallery, and among the least sure
    assert page.count('<rect class="bar"') == 7  # one bar per class
    assert 'href="../photos/grace_hopper.jpg"' in page  # links relative to the page: they hold on a USB stick
    assert "wrote out/report.html" in proc.stderr


def test_every_format_gives_the_same_digest(run: Path) -> None:
    pytest.importorskip("pyarrow")
    digests = [digest(path, results_format(path), max_faces=2, unsure=3) for path in
               [run / "rows.csv", *(_converted(run, fmt) for fmt in
                                   (OutputFormat.JSON, OutputFormat.JSONL, OutputFormat.PARQUET))]]
    for found in digests:
        assert (found.records, found.faces, dict(found.status), found.class_names, found.video) == (
            5, 4, {"ok": 3, "no_face": 1, "error": 1}, digests[0].class_names, False)
        best = {name: [(s.source, s.face.face) for s in found.best(name)] for name in found.class_names}
        assert best == {name: [(s.source, s.face.face) for s in digests[0].best(name)] for name in found.class_names}
        assert [(s.source, s.face.face) for s in found.least_sure()] == [
            (s.source, s.face.face) for s in digests[0].least_sure()]
    rows = [[s.row for s in found.least_sure()] for found in digests]
    assert rows[0] == rows[3] and rows[1] == rows[2]  # per-face rows for CSV and Parquet, records for JSON
    margins = [s.margin for s in digests[0].least_sure()]
    assert margins == sorted(margins) and len(margins) == 3


def test_thumbnails_are_bounded(run: Path) -> None:
    made = build_report(run / "rows.csv", run / "small.html", max_faces=1, unsure=0, base=run)
    found = digest(run / "rows.csv", OutputFormat.CSV)
    assert made.thumbnails == sum(1 for name in found.class_names if found.emotions[name])  # one per expression
    assert "Where the model is least sure" not in (run / "small.html").read_text()


def test_the_cli_defaults_are_the_librarys() -> None:
    from fer_batch.cli import report_command

    assert (report_command.DEFAULT_MAX_FACES, report_command.DEFAULT_UNSURE) == (
        report_module.DEFAULT_MAX_FACES, report_module.DEFAULT_UNSURE)


def test_missing_sources_are_listed_not_fatal(run: Path, tmp_path: Path) -> None:
    shutil.copytree(run / "photos", tmp_path / "photos")
    shutil.copy(run / "rows.csv", tmp_path / "rows.csv")
    (tmp_path / "photos" / "grace_hopper.jpg").unlink()
    proc = fer_batch("report", "rows.csv", "--out", "report.html", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr  # written, but a source could not be read: as for images
    assert "1 source(s) could not be read for thumbnails" in proc.stderr and "Traceback" not in proc.stderr
    page = (tmp_path / "report.html").read_text()
    assert "Sources that could not be read" in page and "photos/grace_hopper.jpg</code></td><td>no such file" in page
    assert page.count('class="nothumb"') == 2 and len(THUMB.findall(page)) == 6  # its face twice, as grey boxes


@pytest.mark.parametrize(("args", "message"), [
    (("missing.csv",), "missing.csv: no such results file"),
    (("rows.txt",), "pass --format"),
    (("notes.csv",), "is not a CSV written by fer-batch"),
    (("empty.csv",), "holds no results"),
    (("rows.csv", "--format", "jsonl"), "is not a fer-batch output"),
    (("rows.csv", "--out", "photos"), "is a folder"),
    (("rows.csv", "--out", "./rows.csv"), "is the results file itself"),
    (("rows.csv", "--max-faces", "-1"), "--max-faces"),
    (("bad.parquet",), "is not a Parquet file"),
])
def test_bad_input_is_one_line_and_exit_code_2(run: Path, args: tuple[str, ...], message: str) -> None:
    (run / "rows.txt").write_text("x")
    (run / "notes.csv").write_text("my,own\nnotes,here\n")
    (run / "empty.csv").write_text((run / "rows.csv").read_text().splitlines()[0] + "\n")
    (run / "bad.parquet").write_bytes(b"PAR1")
    proc = fer_batch("report", *args, cwd=run)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_the_benchmarks_results_file_makes_a_report(tmp_path: Path) -> None:
    """benchmarks/report_benchmark.py's synthetic file is a results file like a run's, its boxes inside its photos."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from report_benchmark import synthesise
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    results = synthesise(tmp_path, 400, OutputFormat.CSV)
    made = build_report(results, tmp_path / "report.html", max_faces=5, unsure=5)
    found = digest(results, OutputFormat.CSV)
    rows = len(results.read_text().splitlines()) - 1  # one per face, one per photo without a face or unreadable
    assert made.records == found.records and 400 <= rows < 403 and not made.missing_sources
    assert found.status["error"] > 0 and found.status["no_face"] > 0
    assert made.thumbnails == 5 * len(found.class_names) + 5  # every face cut: its box lies inside its photo


@pytest.fixture(scope="module")
def video_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``video`` on the generated 2 s clip of a moving face (JSON Lines)."""
    root = CHECK.make_workspace(tmp_path_factory.mktemp("video-report"))
    proc = fer_batch("video", "clip.mp4", "--model", "fast", "--out", "rows.jsonl", "--quiet", cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root


def test_frame_at_gives_the_frame_the_run_analysed(video_run: Path) -> None:
    """Thumbnails of video faces come from the frame of their row: seeking back and decoding forward alike."""
    import numpy as np

    from fer_batch.inputs.video import VideoReader

    with VideoReader(video_run / "clip.mp4") as reader:
        frames = {frame.index: frame.image for frame in reader.frames()}
    with VideoReader(video_run / "clip.mp4") as reader:
        for index in (15, 3, 4, 9, 0, 19):  # back, forward by one, forward by five, back to the start, the last
            assert np.array_equal(reader.frame_at(index, forward=10), frames[index]), index
        assert reader.frame_at(len(frames) + 5) is None


def test_the_page_of_a_video_run(video_run: Path) -> None:
    proc = fer_batch("report", "rows.jsonl", "--out", "report.html", "--max-faces", "3", "--unsure", "2",
                     cwd=video_run)
    assert proc.returncode == 0, proc.stderr
    page = (video_run / "report.html").read_text()
    _self_contained(page)
    found = digest(video_run / "rows.jsonl", OutputFormat.JSONL)
    assert found.video and found.faces >= 5
    expected = sum(min(3, found.emotions[name]) for name in found.class_names) + 2
    assert len(THUMB.findall(page)) == expected  # thumbnails cut from the frames, seeked by index
    assert page.count('<img class="chart"') == 1 and '<table class="tracks">' in page
    assert 'href="clip.mp4#t=' in page  # a face links to its moment in the video


def _open_in_browser(page: Path, name: str, height: int = 2400) -> tuple[str, list[str]]:
    """The DOM Chromium built from ``page``, and its console lines; its screenshot goes to tests/artifacts/NAME."""
    ARTIFACTS.mkdir(exist_ok=True)
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              "--enable-logging=stderr", "--v=0", f"--window-size=1280,{height}"]
    shot = subprocess.run([*common, f"--screenshot={ARTIFACTS / name}", page.as_uri()], capture_output=True,
                          text=True, timeout=120, check=False)
    assert shot.returncode == 0 and (ARTIFACTS / name).stat().st_size > 1000, shot.stderr[-1000:]
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120,
                         check=False)
    assert dom.returncode == 0, dom.stderr[-1000:]
    console = [line for line in (shot.stderr + dom.stderr).splitlines() if ":CONSOLE" in line]
    return dom.stdout, console


@needs_chromium
def test_the_console_check_sees_a_broken_page(tmp_path: Path) -> None:
    """The browser check can fail: a page with a script error logs it on the console."""
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>throw new Error('broken page')</script><p>x</p></body></html>")
    _, console = _open_in_browser(page, "broken.png", height=200)
    assert any("Uncaught Error: broken page" in line for line in console), console


@needs_chromium
def test_the_photo_report_in_a_browser(run: Path) -> None:
    build_report(run / "rows.csv", run / "browser.html", base=run)
    dom, console = _open_in_browser(run / "browser.html", "report-photos.png")
    assert console == []
    assert len(re.findall(r'<img class="thumb"[^>]*src="data:image/jpeg;base64,', dom)) == 8
    assert '<svg class="bars"' in dom and dom.count('<rect class="bar"') == 7
    assert "The run at a glance" in dom and "Where the model is least sure" in dom


@needs_chromium
def test_the_video_report_in_a_browser(video_run: Path) -> None:
    made = build_report(video_run / "rows.jsonl", video_run / "browser.html", base=video_run)
    dom, console = _open_in_browser(video_run / "browser.html", "report-video.png")
    assert console == []
    assert len(re.findall(r'<img class="thumb"', dom)) == made.thumbnails > 0
    assert len(re.findall(r'<img class="chart"[^>]*src="data:image/png;base64,', dom)) == 1


def test_real_photos_and_clip(tmp_path: Path) -> None:
    """The shared photos (group photos, two without a face) and a shared clip: a page each, every face found."""
    photos, clip = shared_path("media", "photos"), shared_path("media", "video", "fer_test.mp4")
    assert fer_batch("images", photos, "--model", "fast", "--out", "photos.csv", "--quiet", cwd=tmp_path
                     ).returncode == 0
    assert fer_batch("video", clip, "--model", "fast", "--out", "clip.csv", "--quiet", cwd=tmp_path).returncode == 0
    for name in ("photos", "clip"):
        proc = fer_batch("report", f"{name}.csv", "--out", f"{name}.html", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        page = (tmp_path / f"{name}.html").read_text()
        _self_contained(page)
        found = digest(tmp_path / f"{name}.csv", OutputFormat.CSV)
        shown = sum(min(report_module.DEFAULT_MAX_FACES, n) for n in found.emotions.values())
        assert len(THUMB.findall(page)) == shown + min(report_module.DEFAULT_UNSURE, found.faces)
    assert found.video and '<img class="chart"' in page
    rows = list(csv.DictReader(io.StringIO((tmp_path / "photos.csv").read_text())))
    assert sum(1 for row in rows if row["status"] == "no_face") >= 2
    if CHROMIUM is not None:
        _, console = _open_in_browser(tmp_path / "photos.html", "report-shared-photos.png", height=3000)
        assert console == []

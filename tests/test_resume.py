"""Resuming an output: cut anywhere, resumed and finished, it equals the output of a run never stopped."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import pytest

from fer_batch.errors import UsageError
from fer_batch.outputs.resume import ResumePoint, check_output, read_records, resume_output
from fer_batch.outputs.writers import BINARY_FORMATS, OutputFormat, get_writer
from fer_batch.records import Box, FaceResult, FrameResult, Status

CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


def _face(i: int, emotion: str = "happy", track: int | None = None) -> FaceResult:
    probs = {c: (0.9 if c == emotion else round(0.1 / 6 + i / 1000, 6)) for c in CLASSES}
    return FaceResult(face=i, box=Box(10 * i, 5 + i, 20, 22), det_score=0.987654, emotion=emotion,
                      confidence=0.9, probabilities=probs, track=track)


IMAGES = [
    FrameResult("a/one.jpg", Status.OK, (_face(0),), width=100, height=80),
    FrameResult("b/none.jpg", Status.NO_FACE, width=50, height=50),
    FrameResult('c/three, "quoted".jpg', Status.OK, (_face(0), _face(1, "sad"), _face(2, "fear")), width=640,
                height=480),
    FrameResult("d/bad.png", Status.ERROR, error="truncated PNG, \"bad\" data"),
    FrameResult("e/new\nline é.jpg", Status.OK, (_face(0, "angry"), _face(1)), width=30, height=30),
    FrameResult("f/last.jpg", Status.OK, (_face(0, "neutral"),), width=10, height=10),
]


def _frame(source: str, frame: int, faces: tuple[FaceResult, ...]) -> FrameResult:
    return FrameResult(source, Status.OK if faces else Status.NO_FACE, faces, width=64, height=48, frame=frame,
                       time_s=round(frame / 25, 3))


VIDEO = [
    _frame("v1.mp4", 0, (_face(0, track=1),)),
    _frame("v1.mp4", 5, ()),
    _frame("v1.mp4", 10, (_face(0, "sad", track=1), _face(1, track=2))),
    FrameResult("missing.mp4", Status.ERROR, error="no such file"),
    _frame("clips/v2.mov", 0, (_face(0, track=1), _face(1, "surprise", track=2), _face(2, track=3))),
    _frame("clips/v2.mov", 3, (_face(0, track=1),)),
    FrameResult("clips/v2.mov", Status.ERROR, error="decoding stopped at 0.1 s of the 2.0 s the file announces"),
    _frame("v3.mp4", 0, ()),
]

RESUMABLE = [fmt for fmt in OutputFormat if fmt not in BINARY_FORMATS]  # a Parquet file cannot be appended to
CASES = [(fmt, video) for fmt in RESUMABLE for video in (False, True)]


def _write(path: Path, fmt: OutputFormat, records: list[FrameResult], video: bool, *, append: bool = False,
           close: bool = True) -> None:
    with path.open("a" if append else "w", newline="", encoding="utf-8") as stream:
        writer = get_writer(fmt, stream, CLASSES, video=video, append=append)
        for record in records:
            writer.write(record)
        if close:
            writer.close()


def _finish(path: Path, fmt: OutputFormat, records: list[FrameResult], video: bool) -> ResumePoint:
    """What a resumed run does: resume, then write the sources not yet done."""
    point = resume_output(path, fmt, CLASSES, video=video)
    assert path.stat().st_size == point.size
    _write(path, fmt, [r for r in records if r.source not in point.done], video, append=point.append)
    return point


def _source_ends(tmp_path: Path, fmt: OutputFormat, records: list[FrameResult], video: bool) -> dict[str, int]:
    """For each source, the size of the output once all its records are written."""
    path = tmp_path / "ends"
    ends: dict[str, int] = {}
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = get_writer(fmt, stream, CLASSES, video=video)
        for record in records:
            writer.write(record)
            ends[record.source] = path.stat().st_size
    return ends


@pytest.mark.parametrize(("fmt", "video"), CASES)
def test_output_cut_at_any_byte_resumes_to_the_uninterrupted_output(tmp_path: Path, fmt: OutputFormat,
                                                                     video: bool) -> None:
    records = VIDEO if video else IMAGES
    full_path = tmp_path / "full"
    _write(full_path, fmt, records, video)
    full = full_path.read_bytes()
    ends = _source_ends(tmp_path, fmt, records, video)
    out = tmp_path / f"out.{fmt.value}"
    for cut in range(len(full) + 1):  # every byte: mid-line, mid-field, mid-record, mid-character
        out.write_bytes(full[:cut])
        point = _finish(out, fmt, records, video)
        assert out.read_bytes() == full, f"cut at byte {cut}"
        complete = [source for source, end in ends.items() if end <= cut]
        assert set(complete[:-1]) <= point.done <= set(complete), f"cut at byte {cut}"
        assert point.kept == sum(r.source in point.done for r in records)
        assert point.sources == len(point.done) and point.append == bool(point.done)


@pytest.mark.parametrize(("fmt", "video"), CASES)
def test_a_run_stopped_with_ctrl_c_resumes(tmp_path: Path, fmt: OutputFormat, video: bool) -> None:
    """Ctrl-C closes the writer (the JSON array is closed early); resuming still finishes the same file."""
    records = VIDEO if video else IMAGES
    full_path = tmp_path / "full"
    _write(full_path, fmt, records, video)
    out = tmp_path / "out"
    for stop in range(len(records) + 1):
        _write(out, fmt, records[:stop], video)
        _finish(out, fmt, records, video)
        assert out.read_bytes() == full_path.read_bytes(), f"stopped after {stop} records"


@pytest.mark.parametrize(("fmt", "video"), CASES)
def test_a_resumed_run_stopped_again_resumes(tmp_path: Path, fmt: OutputFormat, video: bool) -> None:
    records = VIDEO if video else IMAGES
    full_path = tmp_path / "full"
    _write(full_path, fmt, records, video)
    full = full_path.read_bytes()
    out = tmp_path / "out"
    for cut in range(0, len(full), 7):
        out.write_bytes(full[:cut])
        point = resume_output(out, fmt, CLASSES, video=video)
        rest = [r for r in records if r.source not in point.done]
        _write(out, fmt, rest[:2], video, append=point.append, close=False)  # killed again: nothing closed
        _finish(out, fmt, records, video)
        assert out.read_bytes() == full, f"cut at byte {cut}"


@pytest.mark.parametrize(("fmt", "video"), CASES)
def test_missing_or_empty_output_is_a_fresh_start(tmp_path: Path, fmt: OutputFormat, video: bool) -> None:
    missing = tmp_path / "missing"
    assert resume_output(missing, fmt, CLASSES, video=video) == ResumePoint()
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    point = resume_output(empty, fmt, CLASSES, video=video)
    assert point == ResumePoint() and not point.append and empty.read_bytes() == b""


def test_resume_keeps_all_but_the_last_source(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    _write(out, OutputFormat.JSONL, VIDEO, video=True)
    point = resume_output(out, "jsonl", CLASSES, video=True)
    assert point.done == {"v1.mp4", "missing.mp4", "clips/v2.mov"}
    assert (point.kept, point.sources, point.append, point.redone) == (7, 3, True, True)  # the 4th is redone
    assert list(read_records(out, "jsonl", CLASSES, video=True)) == VIDEO[:7]


@pytest.mark.parametrize("fmt", RESUMABLE)
def test_another_model_or_command_is_refused_and_the_file_kept(tmp_path: Path, fmt: OutputFormat) -> None:
    out = tmp_path / "r"
    _write(out, fmt, IMAGES, video=False)
    before = out.read_bytes()
    with pytest.raises(UsageError, match="other (columns|classes)"):
        resume_output(out, fmt, ("neg", "pos"), video=False)
    with pytest.raises(UsageError, match=f"^{re.escape(str(out))} was written (by|with)"):
        resume_output(out, fmt, CLASSES, video=True)  # the path as given, not its bare name
    _write(out, fmt, VIDEO, video=True)
    video_output = out.read_bytes()
    with pytest.raises(UsageError, match="cannot resume"):
        resume_output(out, fmt, CLASSES, video=False)
    assert out.read_bytes() == video_output
    out.write_bytes(before)
    assert resume_output(out, fmt, CLASSES, video=False).kept == len(IMAGES) - 1


def test_csv_header_of_another_model_names_the_file(tmp_path: Path) -> None:
    out = tmp_path / "results.csv"
    _write(out, OutputFormat.CSV, [], video=False)
    with pytest.raises(UsageError, match=r"results\.csv was written with other columns"):
        resume_output(out, "csv", CLASSES[:-1], video=False)


@pytest.mark.parametrize("fmt", RESUMABLE)
@pytest.mark.parametrize("text", ["hello\nworld\n", "hello", "{\"a\": 1}\n", "[\n{\"a\": 1},\n", "source,x\n1,2\n"])
def test_a_file_that_is_not_an_output_is_refused_untouched(tmp_path: Path, fmt: OutputFormat, text: str) -> None:
    out = tmp_path / "notes"
    out.write_text(text)
    with pytest.raises(UsageError, match="notes"):
        resume_output(out, fmt, CLASSES, video=False)
    assert out.read_text() == text


def test_a_cut_header_or_bracket_is_a_fresh_start(tmp_path: Path) -> None:
    out = tmp_path / "r"
    for fmt, start in [(OutputFormat.CSV, b"source,fa"), (OutputFormat.JSON, b"["), (OutputFormat.JSONL, b'{"sou')]:
        out.write_bytes(start)
        assert resume_output(out, fmt, CLASSES) == ResumePoint()
        assert out.read_bytes() == b""


@pytest.mark.parametrize(("fmt", "video"), CASES)
def test_read_records_gives_back_what_was_written(tmp_path: Path, fmt: OutputFormat, video: bool) -> None:
    records = VIDEO if video else IMAGES
    out = tmp_path / "r"
    _write(out, fmt, records, video)
    expected = [replace(r, width=None, height=None) for r in records] if fmt is OutputFormat.CSV else records
    assert list(read_records(out, fmt, CLASSES, video=video)) == expected
    assert list(read_records(tmp_path / "missing", fmt, CLASSES, video=video)) == []


@pytest.mark.parametrize("fmt", RESUMABLE)
def test_read_records_missing_scores_are_nan(tmp_path: Path, fmt: OutputFormat) -> None:
    face = replace(_face(0), det_score=math.nan)
    out = tmp_path / "r"
    _write(out, fmt, [FrameResult("x.jpg", Status.OK, (face,))], video=False)
    (record,) = read_records(out, fmt, CLASSES)
    assert math.isnan(record.faces[0].det_score) and record.faces[0].probabilities == face.probabilities


def test_check_output_protects_existing_results(tmp_path: Path) -> None:
    out = tmp_path / "results.csv"
    check_output(str(out), resume=False, overwrite=False)  # missing: fine
    out.write_text("")
    check_output(str(out), resume=False, overwrite=False)  # empty: nothing to lose
    out.write_text("source\n")
    with pytest.raises(UsageError, match=r"results\.csv.*--resume.*--overwrite"):
        check_output(str(out), resume=False, overwrite=False)
    check_output(str(out), resume=True, overwrite=False)
    check_output(str(out), resume=False, overwrite=True)
    check_output(str(tmp_path / "missing.csv"), resume=True, overwrite=False)  # a fresh start
    with pytest.raises(UsageError, match="--resume and --overwrite"):
        check_output(str(out), resume=True, overwrite=True)
    with pytest.raises(UsageError, match="stdout"):
        check_output("-", resume=True, overwrite=False)
    check_output("-", resume=False, overwrite=False)
    check_output("-", resume=False, overwrite=True)


@pytest.mark.parametrize("fmt", RESUMABLE)
def test_the_same_image_twice_in_a_row_reads_back_as_two_records(tmp_path: Path, fmt: OutputFormat) -> None:
    records = [IMAGES[2], IMAGES[2], IMAGES[1], IMAGES[1]]
    out = tmp_path / "r"
    _write(out, fmt, records, video=False)
    assert [len(r.faces) for r in read_records(out, fmt, CLASSES)] == [3, 3, 0, 0]

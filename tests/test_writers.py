"""Writers: one per format, streaming, always valid output."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest

from fer_batch.errors import UsageError
from fer_batch.outputs.writers import OutputFormat, face_from_dict, face_to_dict, format_for_path, get_writer
from fer_batch.records import Box, FaceResult, FrameResult, Status

CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


def _face(i: int, emotion: str = "happy") -> FaceResult:
    probs = {c: (0.94 if c == emotion else 0.01) for c in CLASSES}
    return FaceResult(face=i, box=Box(10 * i, 5, 20, 22), det_score=0.99, emotion=emotion, confidence=0.94,
                      probabilities=probs)


RESULTS = [
    FrameResult("a/x.jpg", Status.OK, (_face(0), _face(1, "sad")), width=100, height=80),
    FrameResult("b/x.jpg", Status.NO_FACE, width=50, height=50),
    FrameResult("c.png", Status.ERROR, error="empty file (0 bytes)"),
]


def test_csv_one_row_per_face_plus_status_rows() -> None:
    buf = io.StringIO()
    with get_writer("csv", buf, CLASSES) as w:
        for r in RESULTS:
            w.write(r)
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert list(rows[0])[:9] == ["source", "face", "x", "y", "w", "h", "det_score", "emotion", "confidence"]
    assert list(rows[0])[9:] == [*CLASSES, "status", "error"]
    assert [(r["source"], r["face"], r["status"]) for r in rows] == [
        ("a/x.jpg", "0", "ok"), ("a/x.jpg", "1", "ok"), ("b/x.jpg", "", "no_face"), ("c.png", "", "error")]
    assert rows[1]["emotion"] == "sad" and float(rows[1]["sad"]) == pytest.approx(0.94)
    assert rows[3]["error"] == "empty file (0 bytes)"


def test_video_csv_has_frame_time_and_track() -> None:
    buf = io.StringIO()
    w = get_writer("csv", buf, CLASSES, video=True)
    w.write(FrameResult("v.mp4", Status.OK, (FaceResult(0, Box(1, 2, 3, 4), 0.9, "happy", 0.9,
                                                        {c: 0.1 for c in CLASSES}, track=7),),
                        frame=12, time_s=0.48))
    row = next(csv.DictReader(io.StringIO(buf.getvalue())))
    assert (row["frame"], row["time_s"], row["track"]) == ("12", "0.480", "7")


@pytest.mark.parametrize("count", [0, 1, 3])
def test_json_is_valid_after_close_whatever_was_written(count: int) -> None:
    buf = io.StringIO()
    w = get_writer(OutputFormat.JSON, buf, CLASSES)
    for r in RESULTS[:count]:
        w.write(r)
    w.close()
    w.close()  # idempotent
    data = json.loads(buf.getvalue())
    assert len(data) == count
    if count:
        assert data[0]["faces"][1]["emotion"] == "sad" and data[0]["faces"][0]["box"] == {
            "x": 0, "y": 5, "w": 20, "h": 22}


def test_jsonl_one_object_per_input() -> None:
    buf = io.StringIO()
    w = get_writer("jsonl", buf, CLASSES)
    for r in RESULTS:
        w.write(r)
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [d["status"] for d in lines] == ["ok", "no_face", "error"]
    assert lines[1]["faces"] == []


def test_format_from_extension_or_flag() -> None:
    assert format_for_path("out/r.JSON") is OutputFormat.JSON
    assert format_for_path("r.jsonl") is OutputFormat.JSONL
    assert format_for_path("-") is OutputFormat.CSV
    assert format_for_path("r.txt", "jsonl") is OutputFormat.JSONL
    with pytest.raises(UsageError):
        format_for_path("r.txt")


def _written(fmt: str, results: list[FrameResult], start: str = "", append: bool = False) -> tuple[str, int]:
    buf = io.StringIO(start)
    buf.seek(len(start))
    with get_writer(fmt, buf, CLASSES, append=append) as w:
        for r in results:
            w.write(r)
    return buf.getvalue(), w.count


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_append_continues_an_output_as_if_never_stopped(fmt: str) -> None:
    """What resume_output leaves (the output cut after a record; JSON after the element, before ``,``) goes on."""
    full, _ = _written(fmt, RESULTS)
    head, _ = _written(fmt, RESULTS[:1])
    if fmt == "json":
        head = head.removesuffix("\n]\n")
    text, count = _written(fmt, RESULTS[1:], start=head, append=True)
    assert text == full and count == 2  # count: records written by this writer only
    nothing_left, count = _written(fmt, [], start=head, append=True)
    assert count == 0 and nothing_left == head + ("\n]\n" if fmt == "json" else "")
    if fmt == "json":
        assert len(json.loads(nothing_left)) == 1


def test_csv_append_writes_no_second_header() -> None:
    text, _ = _written("csv", RESULTS[1:2], append=True)
    assert text == "b/x.jpg" + "," * 16 + "no_face,\n"


def test_parquet_one_typed_row_per_face_with_the_csv_columns(tmp_path) -> None:
    pq = pytest.importorskip("pyarrow.parquet", reason='Parquet output needs pip install "fer-batch[parquet]"')
    from fer_batch.outputs.sinks import RecordSink

    path = tmp_path / "rows.parquet"
    sink = RecordSink.to_path(path, CLASSES)
    for r in RESULTS:
        sink.receive(r, None)
    sink.close()
    table = pq.read_table(path)
    buf = io.StringIO()
    with get_writer("csv", buf, CLASSES) as w:
        for r in RESULTS:
            w.write(r)
    assert table.column_names == next(csv.reader(io.StringIO(buf.getvalue())))
    types = {f.name: str(f.type) for f in table.schema}
    assert (types["source"], types["face"], types["x"], types["det_score"], types["happy"]) == (
        "string", "int64", "int64", "double", "double")
    rows = table.to_pylist()
    assert [(r["source"], r["face"], r["status"]) for r in rows] == [
        ("a/x.jpg", 0, "ok"), ("a/x.jpg", 1, "ok"), ("b/x.jpg", None, "no_face"), ("c.png", None, "error")]
    assert rows[1]["sad"] == pytest.approx(0.94) and rows[1]["w"] == 20
    assert rows[2]["x"] is None and rows[2]["error"] is None and rows[3]["error"] == "empty file (0 bytes)"


def test_parquet_is_valid_after_an_interrupted_run_and_written_in_row_groups(tmp_path, monkeypatch) -> None:
    pq = pytest.importorskip("pyarrow.parquet", reason='Parquet output needs pip install "fer-batch[parquet]"')
    from fer_batch.engines.run import run
    from fer_batch.inputs.frames import Analysed
    from fer_batch.outputs import writers
    from fer_batch.outputs.sinks import RecordSink

    monkeypatch.setattr(writers, "PARQUET_ROW_GROUP", 2)

    def outcomes():
        yield Analysed(RESULTS[0])
        yield Analysed(RESULTS[1])
        raise KeyboardInterrupt  # Ctrl-C after two records: the file holds them, with its footer

    path = tmp_path / "rows.parquet"
    summary = run(outcomes(), None, [RecordSink.to_path(path, CLASSES, video=True)])
    assert summary.interrupted
    parquet = pq.ParquetFile(path)
    assert parquet.metadata.num_rows == 3 and parquet.metadata.num_row_groups == 2
    assert parquet.schema_arrow.names[:4] == ["source", "frame", "time_s", "track"]


def test_parquet_refused_on_stdout_and_for_resume(tmp_path) -> None:
    pytest.importorskip("pyarrow.parquet", reason='Parquet output needs pip install "fer-batch[parquet]"')
    from fer_batch.outputs.sinks import RecordSink

    assert format_for_path("out/r.parquet") is OutputFormat.PARQUET
    with pytest.raises(UsageError, match="not written to stdout"):
        RecordSink.to_path("-", CLASSES, fmt="parquet")
    with pytest.raises(UsageError, match="cannot be resumed"):
        RecordSink.to_path(tmp_path / "r.parquet", CLASSES, append=True)


def test_face_to_dict_rounds_for_the_outputs_or_keeps_every_digit_and_face_from_dict_reads_it_back() -> None:
    face = FaceResult(face=2, box=Box(1, 2, 3, 4), det_score=0.123456789, emotion="sad", confidence=0.987654321,
                      probabilities={"sad": 0.987654321, "happy": 0.012345679}, track=7)
    written = face_to_dict(face)
    assert written["det_score"] == 0.123457 and written["probabilities"] == {"sad": 0.987654, "happy": 0.012346}
    assert written["box"] == {"x": 1, "y": 2, "w": 3, "h": 4} and written["track"] == 7
    assert face_from_dict(json.loads(json.dumps(face_to_dict(face, decimals=None)))) == face  # not a digit lost
    no_score = face_from_dict(face_to_dict(FaceResult(0, Box(0, 0, 1, 1), math.nan, "sad", 1.0, {"sad": 1.0})))
    assert math.isnan(no_score.det_score) and no_score.track is None and "track" not in face_to_dict(no_score)

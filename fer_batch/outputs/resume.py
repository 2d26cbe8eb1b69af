"""Resuming a stopped run: which sources an output already holds, and cutting off what may be incomplete.

A run killed part-way (SIGKILL, power loss) leaves an output that ends anywhere: mid-line, after some of the
face rows of a record, or in a JSON array without its closing bracket. Sources are written one after another,
so every source in the file but the last is complete. :func:`resume_output` keeps those, truncates the file
right after them (the last source, perhaps cut off, is redone), and returns them as a :class:`ResumePoint`;
the caller opens the file in append mode, gets a writer with ``append=point.append`` and skips the sources in
``point.done``. The finished file then holds the same bytes as the output of a run that was never stopped.
:func:`resume_run` does all of that for :func:`fer_batch.engines.run.run`, as ``--resume`` does::

    point = resume_run("rows.jsonl", "jsonl", names, source, [summary], video=True)
    run(source, videos, [RecordSink.to_path("rows.jsonl", names, video=True, append=point.append), summary])

Files are read line by line, so an output of millions of rows costs only the set of its sources' names.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from fer_batch.errors import UsageError
from fer_batch.outputs.writers import OutputFormat, continues_record, csv_columns, face_from_dict
from fer_batch.records import Box, FaceResult, FrameResult, Status

if TYPE_CHECKING:
    from fer_batch.inputs.frames import FrameSource
    from fer_batch.outputs.sinks import Sink

OBJECT_START = b'{"source": '  # how every JSON object the writers write begins (frame_to_dict's first key)


@dataclass(frozen=True)
class ResumePoint:
    """What an existing output holds once :func:`resume_output` has cut it after its last complete source."""

    done: frozenset[str] = frozenset()  # sources complete in the output: skip them
    kept: int = 0  # records (images, or sampled video frames) kept in the output
    sources: int = 0  # runs of records of one source kept: the first ``sources`` inputs, in input order
    size: int = 0  # bytes: the length the output was truncated to
    counts: Mapping[str, int] = field(default_factory=dict)  # runs kept per source: an input named twice, twice
    redone: bool = False  # the output held one more source after these, cut off to be redone

    @property
    def append(self) -> bool:
        """Whether the writer continues the output (records were kept) rather than starting it afresh."""
        return self.kept > 0


def check_output(path: str, *, resume: bool, overwrite: bool) -> None:
    """Refuse option combinations that could lose a user's results, before any work starts.

    An existing, non-empty output needs ``--resume`` (finish it) or ``--overwrite`` (replace it); the two
    exclude each other, and stdout (``-``) cannot be resumed. ``--resume`` with a missing or empty file is a
    fresh start.
    """
    if resume and overwrite:
        raise UsageError("--resume and --overwrite exclude each other: resume keeps the output, overwrite replaces it")
    if path == "-":
        if resume:
            raise UsageError("--resume needs an output file (--out): results written to stdout cannot be resumed")
        return
    if resume or overwrite:
        return
    try:
        size = os.path.getsize(path)
    except OSError:  # missing (or unreadable, which opening it for writing will report)
        return
    if size > 0 and os.path.isfile(path):
        raise UsageError(f"{path} already exists: pass --resume to finish the run that wrote it, "
                         "or --overwrite to replace it")


def resume_output(path: str | Path, fmt: str | OutputFormat, class_names: Sequence[str], *,
                  video: bool = False) -> ResumePoint:
    """Truncate an existing output after its last complete source and say which sources it holds.

    The last source in the file is dropped, since its records may have been cut off (a partial last line
    always is). A missing or empty file, or one holding a single source, is a fresh start: it is left (or
    made) empty and ``append`` is False. The output must have been written in ``fmt`` for ``class_names``
    and for the same command (``video``), else :class:`UsageError`, as for a file that is not a fer-batch
    output at all.
    """
    given, path = str(path), Path(path)  # errors name the output as the user gave it
    try:
        stream = path.open("rb")
    except FileNotFoundError:
        return ResumePoint()
    done: Counter[str] = Counter()
    kept = sources = size = 0
    source, count, end = "", 0, 0  # the run of records of one source being read
    with stream:
        for entry in _entries(stream, OutputFormat(fmt), tuple(class_names), video, given):
            if count and entry.record.source != source:
                done[source] += 1
                kept, sources, size = kept + count, sources + 1, end
                count = 0
            source, count, end = entry.record.source, count + 1, entry.end
    os.truncate(path, size)  # the last source, perhaps incomplete, goes: it will be redone
    return ResumePoint(frozenset(done), kept, sources, size, dict(done), redone=count > 0)


def resume_run(path: str | Path, fmt: str | OutputFormat, class_names: Sequence[str], source: FrameSource,
               sinks: Sequence[Sink] = (), *, video: bool = False) -> ResumePoint:
    """Prepare a run that finishes the output at ``path``: what ``--resume`` does before :func:`fer_batch.engines.run.run`.

    Cuts the output after its last complete source (:func:`resume_output`), makes ``source`` skip the sources
    it holds, and gives the sinks that summarise whole inputs (those with :attr:`~fer_batch.outputs.sinks.Sink.replay`,
    as :class:`~fer_batch.outputs.sinks.TrackSummarySink`) the records kept, so their summaries cover every input. The
    caller then opens the rows with ``append=point.append``
    (:meth:`RecordSink.to_path <fer_batch.outputs.sinks.RecordSink.to_path>`) and runs ``source`` with the same sinks.
    Raises :class:`UsageError` for an output of another format, model or command, as :func:`resume_output`.
    """
    point = resume_output(path, fmt, class_names, video=video)
    source.skip = point.counts
    replayed = [sink for sink in sinks if sink.replay]
    if replayed and point.kept:
        _replay(read_records(path, fmt, class_names, video=video), replayed)
    return point


def _replay(records: Iterator[FrameResult], sinks: Sequence[Sink]) -> None:
    """Each record to the sinks, with the end of each source after its last record, as a run gives them."""
    from fer_batch.inputs.frames import SourceEnd  # noqa: PLC0415 - frames loads NumPy and OpenCV: only a replay needs them

    current: str | None = None
    for record in records:
        if current is not None and record.source != current:
            for sink in sinks:
                sink.end_source(SourceEnd(current))
        current = record.source
        for sink in sinks:
            sink.receive(record, None)
    if current is not None:
        for sink in sinks:
            sink.end_source(SourceEnd(current))


def read_records(path: str | Path, fmt: str | OutputFormat, class_names: Sequence[str], *,
                 video: bool = False) -> Iterator[FrameResult]:
    """The records an output holds, read back one at a time (a missing file holds none).

    Values are those the writers wrote: probabilities and scores rounded to 6 decimals, ``time_s`` to 3 in CSV,
    which has no ``width``/``height`` (None); a missing score is NaN. A partial last line is skipped, but the
    last record may still lack some of its faces: read after :func:`resume_output` for complete sources only.
    """
    given, path = str(path), Path(path)  # errors name the output as the user gave it
    try:
        stream = path.open("rb")
    except FileNotFoundError:
        return
    with stream:
        for entry in _entries(stream, OutputFormat(fmt), tuple(class_names), video, given):
            yield entry.record


@dataclass(frozen=True)
class _Entry:
    """One complete record of an output and the offset the file would end at if it were the last one kept."""

    end: int
    record: FrameResult


def _entries(stream: BinaryIO, fmt: OutputFormat, class_names: tuple[str, ...], video: bool,
             name: str) -> Iterator[_Entry]:
    if fmt is OutputFormat.CSV:
        return _csv_entries(stream, class_names, video, name)
    if fmt is OutputFormat.JSON:
        return _json_entries(stream, class_names, video, name)
    return _jsonl_entries(stream, class_names, video, name)


# --- JSON and JSON Lines: one object per line -------------------------------------------------------------


def _lines(stream: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """Each line with the offset where it starts."""
    offset = 0
    for line in stream:
        yield offset, line
        offset += len(line)


def _jsonl_entries(stream: BinaryIO, class_names: tuple[str, ...], video: bool, name: str) -> Iterator[_Entry]:
    for start, line in _lines(stream):
        if not line.endswith(b"\n"):  # the last line, cut off unless it holds a whole object
            record = _partial_object(line, class_names, video, name, start)
            if record is not None:
                yield _Entry(start + len(line), record)
            return
        yield _Entry(start + len(line), _json_record(line, class_names, video, name, start))


def _json_entries(stream: BinaryIO, class_names: tuple[str, ...], video: bool, name: str) -> Iterator[_Entry]:
    """Elements of the array the JSON writer streams: ``[``, then one element a line, ``,`` after all but the
    last, then ``]``. An entry ends after its element's ``}``, where the writer goes on with ``,\\n``.
    """
    lines = _lines(stream)
    first = next(lines, None)
    if first is None or first[1] in (b"[", b"[]", b"[]\n"):  # empty, cut in the bracket, or an empty array
        if first is not None and next(lines, None) is not None:
            raise UsageError(f"{name} is not a JSON array written by fer-batch: data after its end")
        return
    if first[1] != b"[\n":
        raise UsageError(f"{name} is not a JSON array written by fer-batch (it should start with a '[' line)")
    for start, line in lines:
        if line.rstrip(b"\n") == b"]":
            if next(lines, None) is not None:
                raise UsageError(f"{name} is not a JSON array written by fer-batch: data after its end")
            return
        if not line.endswith(b"\n"):  # the last line: the writer had not yet written what follows it
            body = line.removesuffix(b",")
            record = _partial_object(body, class_names, video, name, start)
            if record is not None:
                yield _Entry(start + len(body), record)
            return
        body = line[:-1].removesuffix(b",")
        yield _Entry(start + len(body), _json_record(body, class_names, video, name, start))


def _partial_object(line: bytes, class_names: tuple[str, ...], video: bool, name: str,
                    start: int) -> FrameResult | None:
    """The record on a last line without its newline, or None if it was cut off.

    A proper prefix of a JSON object is never a whole JSON object, so an object that parses is complete.
    """
    if not (line.startswith(OBJECT_START) or OBJECT_START.startswith(line)):
        raise UsageError(f"{name} is not a fer-batch output: unexpected data at byte {start}")
    try:
        data = json.loads(line)
    except ValueError:
        return None
    return _record_from_dict(data, class_names, video, name, start)


def _json_record(line: bytes, class_names: tuple[str, ...], video: bool, name: str, start: int) -> FrameResult:
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise UsageError(f"{name} is not a fer-batch output: the line at byte {start} is not JSON ({exc})") from None
    return _record_from_dict(data, class_names, video, name, start)


def _record_from_dict(data: Any, class_names: tuple[str, ...], video: bool, name: str, start: int) -> FrameResult:
    """The inverse of :func:`fer_batch.outputs.writers.frame_to_dict`, checking that the record fits this run."""
    try:
        record = FrameResult(
            source=str(data["source"]), status=Status(data["status"]), error=data["error"],
            width=data["width"], height=data["height"], frame=data.get("frame"), time_s=data.get("time_s"),
            faces=tuple(face_from_dict(f) for f in data["faces"]))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UsageError(f"{name} is not a fer-batch output: the record at byte {start} lacks or mangles "
                         f"{exc}") from None
    if "frame" in data and not video:
        raise UsageError(f"{name} was written by `fer-batch video`; cannot resume it with `images`")
    if video and "frame" not in data and record.status is not Status.ERROR:
        raise UsageError(f"{name} was written by `fer-batch images`; cannot resume it with `video`")
    for face in record.faces:
        if set(face.probabilities) != set(class_names):
            raise UsageError(f"{name} was written with other classes ({', '.join(face.probabilities)}), by another "
                             "model; cannot resume it")
    return record


# --- CSV: one row per face, records of several rows -------------------------------------------------------


class _LineFeed:
    """Decoded lines for :func:`csv.reader`, counting the bytes consumed.

    The reader pulls lines only as it needs them (several for a quoted field with newlines), so ``offset``
    before a row is read is where that row starts.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.offset = 0
        self.newline = True  # whether the last line read ended with its newline
        self.ended = False  # whether the reader asked for a line past the end

    def __iter__(self) -> _LineFeed:
        return self

    def __next__(self) -> str:
        line = self._stream.readline()
        if not line:
            self.ended = True
            raise StopIteration
        self.offset += len(line)
        self.newline = line.endswith(b"\n")
        # a line cut off may end inside a UTF-8 sequence; it is dropped anyway
        return line.decode("utf-8", errors="strict" if self.newline else "replace")


def _csv_rows(stream: BinaryIO, name: str) -> Iterator[tuple[int, list[str]]]:
    """Complete rows, each with the offset where the next one starts; a row cut off at the end is left out."""
    feed = _LineFeed(stream)
    reader = csv.reader(feed, strict=True)
    while True:
        start = feed.offset
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if feed.ended:
                return  # a quoted field cut off by the end of the file
            raise UsageError(f"{name} is not a CSV written by fer-batch: the row at byte {start}: {exc}") from None
        except UnicodeDecodeError:
            raise UsageError(f"{name} is not a CSV written by fer-batch: the row at byte {start} is not UTF-8") from None
        if not feed.newline:
            return  # the last row, cut off mid-line (strict mode raises for a quoted field cut off)
        yield feed.offset, row


def _csv_entries(stream: BinaryIO, class_names: tuple[str, ...], video: bool, name: str) -> Iterator[_Entry]:
    columns = csv_columns(class_names, video)
    rows = _csv_rows(stream, name)
    header = next(rows, None)
    if header is None:  # empty, or the header cut off: fine if it is the start of the header this run writes
        stream.seek(0)
        expected = _csv_line(columns)
        if not expected.startswith(stream.read(len(expected) + 1)):
            raise UsageError(f"{name} is not a CSV written by fer-batch (its first line is not the header)")
        return
    if header[1] != columns:
        if "source" in header[1] and "status" in header[1]:
            raise UsageError(f"{name} was written with other columns (another model or command); cannot resume it")
        raise UsageError(f"{name} is not a CSV written by fer-batch (its first line is not the header)")
    parse = _CsvRecords(columns, class_names, video, name)
    pending: _Entry | None = None
    for end, row in rows:
        if len(row) != len(columns):
            raise UsageError(f"{name} is not a CSV written by fer-batch: a row before byte {end} has "
                             f"{len(row)} fields, not {len(columns)}")
        pending, complete = parse.add(pending, end, row)
        if complete is not None:
            yield complete
    if pending is not None:
        yield pending


def _csv_line(columns: list[str]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(columns)
    return buffer.getvalue().encode()


class _CsvRecords:
    """Gathers the rows of one record: its first face (or its single faceless row), then faces 1, 2, ..."""

    def __init__(self, columns: list[str], class_names: tuple[str, ...], video: bool, name: str) -> None:
        self.index = {column: i for i, column in enumerate(columns)}
        self.class_names = class_names
        self.video = video
        self.name = name

    def add(self, pending: _Entry | None, end: int, row: list[str]) -> tuple[_Entry, _Entry | None]:
        """The record being gathered after ``row``, and the record ``row`` completed (None if it continued it)."""
        try:
            record = self._record(row)
        except ValueError as exc:
            raise UsageError(f"{self.name} is not a CSV written by fer-batch: the row before byte {end}: "
                             f"{exc}") from None
        if pending is not None and continues_record(pending.record, record):
            return _Entry(end, replace(pending.record, faces=pending.record.faces + record.faces)), None
        return _Entry(end, record), pending

    def _record(self, row: list[str]) -> FrameResult:
        def value(column: str) -> str:
            return row[self.index[column]]

        faces: tuple[FaceResult, ...] = ()
        if value("face"):
            probabilities = {c: float(value(c)) for c in self.class_names if value(c)}
            faces = (FaceResult(
                face=int(value("face")), box=Box(int(value("x")), int(value("y")), int(value("w")), int(value("h"))),
                det_score=_float(value("det_score")), emotion=value("emotion"),
                confidence=_float(value("confidence")), probabilities=probabilities,
                track=int(value("track")) if self.video and value("track") else None),)
        frame = time_s = None
        if self.video:
            frame = int(value("frame")) if value("frame") else None
            time_s = float(value("time_s")) if value("time_s") else None
        return FrameResult(source=value("source"), status=Status(value("status")), faces=faces,
                           error=value("error") or None, frame=frame, time_s=time_s)


def _float(text: str) -> float:
    return float(text) if text else math.nan

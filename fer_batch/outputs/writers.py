"""Result writers, one class per format, picked by name or by the output file's extension.

Writers take :class:`~fer_batch.records.FrameResult` records and a text
stream (Parquet: a binary one, see :class:`ParquetWriter`). CSV and JSON Lines write (and flush) each record as it arrives; JSON
writes one array whose closing bracket is added by :meth:`close`, which the
pipeline calls even after Ctrl-C, so the file is always valid. With
``append=True`` a writer continues an output that already holds records (a
resumed run, see :mod:`fer_batch.outputs.resume`): no second CSV header, and the JSON
array goes on from its last element.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Self, TextIO

from fer_batch.errors import UsageError
from fer_batch.records import Box, FaceResult, FrameResult

if TYPE_CHECKING:
    import pyarrow as pa

PROB_DECIMALS = 6  # probabilities are float32 model outputs: more digits would be noise
PARQUET_ROW_GROUP = 10_000  # face rows per Parquet row group: written as they fill, and at close
PARQUET_INSTALL = 'pip install "fer-batch[parquet]"'


class OutputFormat(str, Enum):
    CSV = "csv"
    JSON = "json"
    JSONL = "jsonl"
    PARQUET = "parquet"


SUFFIX_FORMATS = {".csv": OutputFormat.CSV, ".json": OutputFormat.JSON, ".jsonl": OutputFormat.JSONL,
                  ".ndjson": OutputFormat.JSONL, ".parquet": OutputFormat.PARQUET}
BINARY_FORMATS = frozenset({OutputFormat.PARQUET})  # written to a binary stream: never to stdout


def format_for_path(path: str | Path | None, explicit: str | OutputFormat | None = None) -> OutputFormat:
    """``explicit`` if given, else CSV for stdout (None or ``-``), else the format the path's
    extension names; any other extension is a UsageError.
    """
    if explicit:
        return OutputFormat(explicit)
    if path is None or str(path) == "-":
        return OutputFormat.CSV
    suffix = Path(str(path)).suffix.lower()
    if suffix in SUFFIX_FORMATS:
        return SUFFIX_FORMATS[suffix]
    raise UsageError(f"cannot tell the output format from {path!s}; use .csv, .json, .jsonl or .parquet, "
                     "or pass --format")


def check_format(path: str | Path | None, fmt: OutputFormat) -> None:
    """Refuse, before any work starts, an output that cannot be written: Parquet to stdout, or without pyarrow."""
    if fmt not in BINARY_FORMATS:
        return
    if path is None or str(path) == "-":
        raise UsageError(f"{fmt.value} is a binary format and is not written to stdout: pass --out FILE.{fmt.value}")
    try:
        import pyarrow.parquet  # noqa: F401, PLC0415 - an optional extra, loaded only for Parquet output
    except ImportError:
        raise UsageError(f"Parquet output needs pyarrow: {PARQUET_INSTALL}") from None


def _round(value: float | None, decimals: int | None = PROB_DECIMALS) -> float | None:
    """A score for the outputs: None for a missing one (NaN), rounded to ``decimals`` (None: every digit)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value) if decimals is None else round(float(value), decimals)


def face_to_dict(face: FaceResult, decimals: int | None = PROB_DECIMALS) -> dict[str, Any]:
    """The JSON object of one face, as the JSON writers write it (scores rounded to ``decimals``).

    ``decimals=None`` keeps every digit: the Ray engine passes faces between its stages in this layout, and
    its outputs are rounded only where a local run's are, when they are written. :func:`face_from_dict` reads
    it back.
    """
    data: dict[str, Any] = {
        "face": face.face,
        "box": {"x": face.box.x, "y": face.box.y, "w": face.box.w, "h": face.box.h},
        "det_score": _round(face.det_score, decimals),
        "emotion": face.emotion,
        "confidence": _round(face.confidence, decimals),
        "probabilities": {k: _round(v, decimals) for k, v in face.probabilities.items()},
    }
    if face.track is not None:
        data["track"] = face.track
    return data


def face_from_dict(data: Mapping[str, Any]) -> FaceResult:
    """The face a :func:`face_to_dict` object holds; a missing score (None) is NaN.

    Raises KeyError, TypeError, ValueError or AttributeError for an object that lacks or mangles a field.
    """
    box = data["box"]
    return FaceResult(
        face=int(data["face"]), box=Box(int(box["x"]), int(box["y"]), int(box["w"]), int(box["h"])),
        det_score=_number(data["det_score"]), emotion=str(data["emotion"]), confidence=_number(data["confidence"]),
        probabilities={str(k): _number(v) for k, v in data["probabilities"].items()}, track=data.get("track"))


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def frame_to_dict(result: FrameResult) -> dict[str, Any]:
    """The JSON object for one image or frame: its status, size, and list of faces."""
    data: dict[str, Any] = {"source": result.source}
    if result.frame is not None:
        data["frame"] = result.frame
        data["time_s"] = _round(result.time_s)
    data.update({
        "status": result.status.value,
        "error": result.error,
        "width": result.width,
        "height": result.height,
        "faces": [face_to_dict(f) for f in result.faces],
    })
    return data


def csv_columns(class_names: Sequence[str], video: bool = False) -> list[str]:
    """The CSV header: the images layout, or the video one with frame, time and track."""
    lead = ["source", "frame", "time_s", "track"] if video else ["source"]
    return [*lead, "face", "x", "y", "w", "h", "det_score", "emotion", "confidence", *class_names, "status", "error"]


def face_rows(result: FrameResult, class_names: Sequence[str], video: bool = False) -> list[dict[str, Any]]:
    """The rows of one record in the CSV layout (:func:`csv_columns`), typed: ints, floats, strings, None.

    One row per face; a record without a face gives one row with its status and no face values.
    """
    base: dict[str, Any] = dict.fromkeys(csv_columns(class_names, video))
    base.update({"source": result.source, "status": result.status.value, "error": result.error})
    if video:
        base["frame"] = result.frame
        base["time_s"] = None if result.time_s is None else round(float(result.time_s), 3)
    if not result.faces:
        return [base]
    rows = []
    for face in result.faces:
        row = dict(base)
        row.update({"face": face.face, "x": face.box.x, "y": face.box.y, "w": face.box.w, "h": face.box.h,
                    "det_score": _round(face.det_score), "emotion": face.emotion,
                    "confidence": _round(face.confidence)})
        if video:
            row["track"] = face.track
        row.update({name: _round(face.probabilities.get(name)) for name in class_names})
        rows.append(row)
    return rows


_INT_COLUMNS = frozenset({"frame", "track", "face", "x", "y", "w", "h"})
_STRING_COLUMNS = frozenset({"source", "emotion", "status", "error"})


def continues_record(record: FrameResult, row: FrameResult) -> bool:
    """Whether ``row``, a one-face record read from a per-face row (:func:`face_rows`), is the next face of
    ``record``: the rows of one record are consecutive, of one source and frame, their faces numbered upwards."""
    return bool(record.faces and row.faces and (row.source, row.frame) == (record.source, record.frame)
                and row.faces[0].face > record.faces[-1].face)


def parquet_schema(class_names: Sequence[str], video: bool = False) -> pa.Schema:
    """The Arrow schema of the per-face layout: the CSV columns, with ints, floats and strings (all nullable)."""
    import pyarrow as pa  # noqa: PLC0415 - an optional extra, loaded only for Parquet output

    def kind(name: str) -> pa.DataType:
        if name in _INT_COLUMNS:
            return pa.int64()
        return pa.string() if name in _STRING_COLUMNS else pa.float64()

    return pa.schema([(name, kind(name)) for name in csv_columns(class_names, video)])


class ResultWriter:
    """Base class: ``write`` each record, then ``close`` once (idempotent).

    ``append``: the stream continues an output that already holds records in this format and layout
    (after :func:`fer_batch.outputs.resume.resume_output`). ``count`` is the number of records this writer wrote,
    not counting those already in the output.
    """

    def __init__(self, stream: IO[Any], class_names: Sequence[str], video: bool = False, append: bool = False) -> None:
        self.stream = stream
        self.class_names = tuple(class_names)
        self.video = video
        self.append = append
        self.closed = False
        self.count = 0

    def write(self, result: FrameResult) -> None:
        self._write(result)
        self.count += 1
        self.stream.flush()

    def _write(self, result: FrameResult) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if not self.closed:
            self._close()
            self.stream.flush()
            self.closed = True

    def _close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CsvWriter(ResultWriter):
    """One row per face; an input without faces gets one row with its status and an empty face index."""

    def __init__(self, stream: TextIO, class_names: Sequence[str], video: bool = False, append: bool = False) -> None:
        super().__init__(stream, class_names, video, append)
        self.columns = csv_columns(self.class_names, video)
        self._csv = csv.DictWriter(stream, fieldnames=self.columns, lineterminator="\n")
        if not append:
            self._csv.writeheader()

    def _write(self, result: FrameResult) -> None:
        for row in face_rows(result, self.class_names, self.video):  # None is written as an empty cell
            if row.get("time_s") is not None:
                row["time_s"] = f"{result.time_s:.3f}"  # a fixed width of milliseconds, as always
            self._csv.writerow(row)


class JsonLinesWriter(ResultWriter):
    """One JSON object per input (or frame) per line."""

    def _write(self, result: FrameResult) -> None:
        self.stream.write(json.dumps(frame_to_dict(result)) + "\n")


class JsonWriter(ResultWriter):
    """A JSON array of per-input objects, streamed element by element."""

    def _write(self, result: FrameResult) -> None:
        # appending, the output ends just after its last element (resume_output cut it there). One write: a
        # Ctrl-C between the separator and the element would leave a trailing comma, and invalid JSON.
        separator = "[\n" if self.count == 0 and not self.append else ",\n"
        self.stream.write(separator + json.dumps(frame_to_dict(result), indent=None))

    def _close(self) -> None:
        self.stream.write("[]\n" if self.count == 0 and not self.append else "\n]\n")


class ParquetWriter(ResultWriter):
    """One row per face in the CSV columns, typed (see :func:`parquet_schema`), to a binary stream.

    Rows are gathered into row groups of :data:`PARQUET_ROW_GROUP` and written as each fills; :meth:`close`
    writes the last one and the file's footer, so a run stopped with Ctrl-C leaves a valid file. Parquet
    files cannot be appended to: ``append`` is refused.
    """

    def __init__(self, stream: BinaryIO, class_names: Sequence[str], video: bool = False,
                 append: bool = False) -> None:
        import pyarrow.parquet as pq  # noqa: PLC0415 - an optional extra, loaded only for Parquet output

        if append:
            raise UsageError("a Parquet output cannot be resumed (appended to); use CSV or JSON Lines for --resume")
        super().__init__(stream, class_names, video, append)
        self.schema = parquet_schema(self.class_names, video)
        self._parquet = pq.ParquetWriter(stream, self.schema)
        self._rows: list[dict[str, Any]] = []

    def write(self, result: FrameResult) -> None:
        self._write(result)
        self.count += 1  # no flush per record: rows go out a row group at a time

    def _write(self, result: FrameResult) -> None:
        self._rows.extend(face_rows(result, self.class_names, self.video))
        if len(self._rows) >= PARQUET_ROW_GROUP:
            self._flush_rows()

    def _flush_rows(self) -> None:
        import pyarrow as pa  # noqa: PLC0415 - loaded with pyarrow.parquet in __init__

        if self._rows:
            self._parquet.write_table(pa.Table.from_pylist(self._rows, schema=self.schema))
            self._rows = []

    def _close(self) -> None:
        try:
            self._flush_rows()
        finally:
            self._parquet.close()


WRITERS: dict[OutputFormat, type[ResultWriter]] = {
    OutputFormat.CSV: CsvWriter,
    OutputFormat.JSON: JsonWriter,
    OutputFormat.JSONL: JsonLinesWriter,
    OutputFormat.PARQUET: ParquetWriter,
}


def get_writer(fmt: str | OutputFormat, stream: IO[Any], class_names: Sequence[str], video: bool = False,
               append: bool = False) -> ResultWriter:
    """The writer for a format name; ``append=True`` continues an output that already holds records.

    ``stream`` is a text stream, or a binary one for the formats in :data:`BINARY_FORMATS` (Parquet).
    """
    return WRITERS[OutputFormat(fmt)](stream, class_names, video=video, append=append)

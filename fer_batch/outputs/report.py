"""A run's results as one self-contained HTML page: ``fer-batch report RESULTS --out report.html``.

:func:`build_report` reads a results file of ``images`` or ``video`` (CSV, JSON, JSON Lines or Parquet: the
readers of :mod:`fer_batch.outputs.resume`, and pyarrow for Parquet) once, record by record, keeping only
counts and the few faces the page shows: the most confident faces of each expression (at most ``max_faces``
each) and the ``unsure`` faces with the smallest margin between their two likeliest expressions. Only then are
those faces' sources read, each once (a video is seeked to each face's frame), and cut into small JPEG
thumbnails. A million rows cost a pass over the file and a page of the same bounded size as a thousand.

The page needs nothing but itself: thumbnails and charts are ``data:`` URIs, bar charts inline SVG, the style
inline, and no script, so it opens offline (from a USB stick) in any browser. Links to the sources are relative
to the page, so they hold while the page stays beside the photos. A source that cannot be read any more is
listed on the page, its faces shown as a grey box; the rest of the page is made all the same.
"""

from __future__ import annotations

import base64
import csv
import heapq
import html
import json
import logging
import math
import os
import tempfile
import time
import urllib.parse
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fer_batch.errors import FerBatchError, InputError, UsageError
from fer_batch.outputs.charts import class_colors
from fer_batch.outputs.resume import read_records
from fer_batch.outputs.summary import TrackSummary, VideoTracks, summarize
from fer_batch.outputs.writers import (
    PARQUET_INSTALL,
    OutputFormat,
    continues_record,
    face_from_dict,
    format_for_path,
)
from fer_batch.records import FaceResult, FrameResult, Status

log = logging.getLogger(__name__)

DEFAULT_MAX_FACES = 24  # thumbnails per expression: a row or three of a browser window
DEFAULT_UNSURE = 24  # the least sure faces shown
THUMB_PX = 96  # the longer side of a thumbnail
THUMB_MARGIN = 0.2  # of the face box, on each side, so the face's surroundings show
THUMB_QUALITY = 82  # JPEG quality of the thumbnails
MAX_ERRORS = 200  # error rows listed (the count says how many there are)
MAX_VIDEOS = 20  # videos with a chart and a track table; the rest are counted
MAX_TRACK_ROWS = 30  # tracks listed per video, longest first
SEEK_FORWARD = 250  # frames to decode forward rather than seek (a seek decodes from the last keyframe anyway)


@dataclass(frozen=True)
class Shown:
    """One face the page shows: where it is in the results and in its source, and its two likeliest classes."""

    row: int  # 1-based: the row of the per-face layout (CSV, Parquet) or the record (JSON, JSON Lines)
    source: str
    face: FaceResult
    frame: int | None
    time_s: float | None
    second: tuple[str, float]  # the second likeliest class and its probability

    @property
    def margin(self) -> float:
        return self.face.confidence - self.second[1]


@dataclass
class Digest:
    """What one pass over a results file keeps: counts, the faces to show, the video tracks."""

    results: str
    fmt: OutputFormat
    class_names: tuple[str, ...]
    video: bool
    max_faces: int
    unsure: int
    records: int = 0
    faces: int = 0
    status: Counter[str] = field(default_factory=Counter)
    emotions: Counter[str] = field(default_factory=Counter)
    sources: set[str] = field(default_factory=set)
    errors: list[tuple[int, str, str]] = field(default_factory=list)  # (row, source, reason)
    tracks: dict[str, VideoTracks] = field(default_factory=dict)
    track_emotions: dict[tuple[str, int], Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    _best: dict[str, list[tuple[float, int, Shown]]] = field(default_factory=lambda: defaultdict(list))
    _unsure: list[tuple[float, int, Shown]] = field(default_factory=list)
    _rows: int = 0

    def add(self, record: FrameResult) -> None:
        self.records += 1
        self.sources.add(record.source)
        self.status[record.status.value] += 1
        first_row = self._rows + 1 if self.fmt in (OutputFormat.CSV, OutputFormat.PARQUET) else self.records
        self._rows += max(1, len(record.faces))
        if record.status is Status.ERROR:
            if len(self.errors) < MAX_ERRORS:
                self.errors.append((first_row, record.source, record.error or "(no reason given)"))
            return
        if self.video:
            tracks = self.tracks.get(record.source)
            if tracks is None:
                tracks = self.tracks[record.source] = VideoTracks(record.source, self.class_names)
            tracks.add(record)
        for i, face in enumerate(record.faces):
            self.faces += 1
            self.emotions[face.emotion] += 1
            if face.track is not None:
                self.track_emotions[(record.source, face.track)][face.emotion] += 1
            if math.isnan(face.confidence):
                continue
            row = first_row + i if self.fmt in (OutputFormat.CSV, OutputFormat.PARQUET) else first_row
            others = sorted(((p, n) for n, p in face.probabilities.items() if n != face.emotion and not math.isnan(p)),
                            reverse=True)
            second = (others[0][1], others[0][0]) if others else ("", 0.0)
            shown = Shown(row, record.source, face, record.frame, record.time_s, second)
            _keep(self._best[face.emotion], (face.confidence, -self.faces, shown), self.max_faces)
            _keep(self._unsure, (-shown.margin, -self.faces, shown), self.unsure)

    def best(self, emotion: str) -> list[Shown]:
        """The most confident faces of ``emotion``, most confident first (the earlier row on a tie)."""
        return [s for _, _, s in sorted(self._best.get(emotion, []), key=lambda e: (-e[0], -e[1]))]

    def least_sure(self) -> list[Shown]:
        """The faces with the smallest margin between their two likeliest classes, smallest first."""
        return [s for _, _, s in sorted(self._unsure, key=lambda e: (-e[0], -e[1]))]


def _keep(heap: list[tuple[float, int, Shown]], entry: tuple[float, int, Shown], size: int) -> None:
    """Keep the ``size`` largest entries in the min-heap ``heap``."""
    if size <= 0:
        return
    if len(heap) < size:
        heapq.heappush(heap, entry)
    elif entry[:2] > heap[0][:2]:
        heapq.heapreplace(heap, entry)


# --- reading a results file ---------------------------------------------------------------------------------


def results_format(path: str | Path, fmt: str | OutputFormat | None = None) -> OutputFormat:
    """The results file's format (from ``fmt`` or the extension); :class:`UsageError` if it cannot be read."""
    output_format = format_for_path(path, fmt)
    if not Path(path).exists():
        raise UsageError(f"{path}: no such results file")
    if Path(path).is_dir():
        raise UsageError(f"{path} is a folder: name a results file of `fer-batch images` or `video` (a folder of "
                         "Ray part files: read them into one file first)")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{path}: cannot read it (permission denied)")
    if output_format is OutputFormat.PARQUET:
        try:
            import pyarrow.parquet  # noqa: F401, PLC0415 - the optional parquet extra
        except ImportError:
            raise UsageError(f"reading Parquet results needs pyarrow: {PARQUET_INSTALL}") from None
    return output_format


def read_results(path: str | Path, fmt: OutputFormat) -> tuple[tuple[str, ...], bool, Iterator[FrameResult]]:
    """The class names of a results file, whether ``video`` wrote it, and its records, read one at a time."""
    if fmt is OutputFormat.PARQUET:
        return _parquet_results(Path(path))
    class_names, video = _text_layout(Path(path), fmt)
    return class_names, video, read_records(path, fmt, class_names, video=video)


def _text_layout(path: Path, fmt: OutputFormat) -> tuple[tuple[str, ...], bool]:
    """The class names and command of a CSV (from its header) or JSON file (from its first records)."""
    with path.open("r", encoding="utf-8", errors="replace", newline="") as fh:
        if fmt is OutputFormat.CSV:
            header = next(csv.reader(fh), [])
            if not {"source", "confidence", "status"} <= set(header):
                raise UsageError(f"{path} is not a CSV written by fer-batch (its first line is not the header)")
            return tuple(header[header.index("confidence") + 1: header.index("status")]), "frame" in header
        class_names: tuple[str, ...] = ()
        video: bool | None = None
        for line in fh:
            text = line.strip().removesuffix(",")
            if not text.startswith("{"):
                continue
            try:
                data = json.loads(text)
                faces = data["faces"]
                if video is None and data.get("status") != Status.ERROR.value:
                    video = "frame" in data
                if faces and not class_names:
                    class_names = tuple(faces[0]["probabilities"])
            except (ValueError, KeyError, TypeError, AttributeError):
                break  # read_records says what is wrong with it
            if class_names and video is not None:
                break
    return class_names, bool(video)


def _parquet_results(path: Path) -> tuple[tuple[str, ...], bool, Iterator[FrameResult]]:
    import pyarrow.parquet as pq  # noqa: PLC0415 - the optional parquet extra

    try:
        parquet = pq.ParquetFile(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise UsageError(f"{path} is not a Parquet file: {exc}") from None
    names = parquet.schema_arrow.names
    if not {"source", "confidence", "status"} <= set(names):
        raise UsageError(f"{path} is not a Parquet file written by fer-batch (no source, confidence, status columns)")
    class_names = tuple(names[names.index("confidence") + 1: names.index("status")])
    video = "frame" in names
    return class_names, video, _parquet_records(parquet, class_names, video)


def _parquet_records(parquet: Any, class_names: tuple[str, ...], video: bool) -> Iterator[FrameResult]:
    """Records from the per-face rows: consecutive rows of one source (and frame), face 0, 1, 2... are one."""
    pending: FrameResult | None = None
    for batch in parquet.iter_batches(batch_size=10_000):
        for row in batch.to_pylist():
            faces: tuple[FaceResult, ...] = ()
            if row["face"] is not None:
                probabilities = {n: row[n] for n in class_names if row[n] is not None}
                faces = (face_from_dict({"face": row["face"], "box": row, "det_score": row["det_score"],
                                         "emotion": row["emotion"], "confidence": row["confidence"],
                                         "probabilities": probabilities, "track": row.get("track")}),)
            record = FrameResult(source=row["source"], status=Status(row["status"]), faces=faces, error=row["error"],
                                 frame=row.get("frame"), time_s=row.get("time_s"))
            if pending is not None and continues_record(pending, record):
                pending = FrameResult(pending.source, pending.status, pending.faces + faces, pending.error,
                                      frame=pending.frame, time_s=pending.time_s)
                continue
            if pending is not None:
                yield pending
            pending = record
    if pending is not None:
        yield pending


def digest(path: str | Path, fmt: OutputFormat, *, max_faces: int = DEFAULT_MAX_FACES,
           unsure: int = DEFAULT_UNSURE) -> Digest:
    """One pass over the results file: its counts and the faces the page shows."""
    class_names, video, records = read_results(path, fmt)
    result = Digest(str(path), fmt, class_names, video, max_faces, unsure)
    for record in records:
        if not result.class_names and record.faces:  # a JSON file whose first records had no face
            result.class_names = tuple(record.faces[0].probabilities)
        result.add(record)
    if result.records == 0:
        raise UsageError(f"{path} holds no results (no row after its header): nothing to report")
    return result


# --- thumbnails ---------------------------------------------------------------------------------------------


class Thumbnails:
    """Small JPEG thumbnails of the faces shown, reading each source once; what could not be read is noted."""

    def __init__(self, base: Path) -> None:
        self.base = base  # relative sources are found from here (where the run was)
        self.missing: dict[str, str] = {}  # source: why it could not be read
        self.uris: dict[tuple[str, int | None, int], str] = {}

    def make(self, faces: Sequence[Shown], video: bool) -> None:
        by_source: dict[str, list[Shown]] = defaultdict(list)
        for shown in faces:
            by_source[shown.source].append(shown)
        for source, shown in by_source.items():
            try:
                if video:
                    self._video(source, shown)
                else:
                    self._photo(source, shown)
            except InputError as exc:
                self.missing[source] = str(exc)

    def uri(self, shown: Shown) -> str | None:
        return self.uris.get((shown.source, shown.frame, shown.face.face))

    def _path(self, source: str) -> Path:
        path = Path(source)
        return path if path.is_absolute() else self.base / path

    def _photo(self, source: str, faces: Sequence[Shown]) -> None:
        from fer_batch.inputs.images import read_image  # noqa: PLC0415 - NumPy and OpenCV: not for --help

        path = self._path(source)
        if not path.is_file():
            raise InputError("no such file" if not path.exists() else "not a file")
        image = read_image(path)
        for shown in faces:
            self._cut(image, shown)

    def _video(self, source: str, faces: Sequence[Shown]) -> None:
        from fer_batch.inputs.video import VideoReader  # noqa: PLC0415 - NumPy and OpenCV: not for --help

        with VideoReader(self._path(source)) as reader:
            for shown in sorted(faces, key=lambda s: (s.frame or 0, s.face.face)):
                image = reader.frame_at(shown.frame or 0, forward=SEEK_FORWARD)
                if image is not None:
                    self._cut(image, shown)

    def _cut(self, image: Any, shown: Shown) -> None:
        import cv2  # noqa: PLC0415

        key = (shown.source, shown.frame, shown.face.face)
        if key in self.uris:
            return
        box = shown.face.box
        height, width = image.shape[:2]
        pad_x, pad_y = int(box.w * THUMB_MARGIN), int(box.h * THUMB_MARGIN)
        x0, y0 = max(0, box.x - pad_x), max(0, box.y - pad_y)
        x1, y1 = min(width, box.x + box.w + pad_x), min(height, box.y + box.h + pad_y)
        if x1 <= x0 or y1 <= y0:
            return  # a box outside the image: the results do not belong to this file
        crop = image[y0:y1, x0:x1]
        scale = THUMB_PX / max(crop.shape[:2])
        crop = cv2.resize(crop, (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))),
                          interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        ok, data = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, THUMB_QUALITY])
        if ok:
            self.uris[key] = "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode("ascii")


# --- the page -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """What :func:`build_report` wrote, for the command's closing line."""

    path: Path
    records: int
    faces: int
    thumbnails: int
    missing_sources: tuple[str, ...]
    bytes: int
    seconds: float


def build_report(results: str | Path, out: str | Path, *, fmt: str | OutputFormat | None = None,
                 max_faces: int = DEFAULT_MAX_FACES, unsure: int = DEFAULT_UNSURE, base: str | Path = ".") -> Report:
    """Read ``results`` and write its report page to ``out`` (HTML); relative sources are found from ``base``.

    Raises :class:`UsageError` for a results file that is missing, not a fer-batch output, in an unknown format,
    empty, or Parquet without pyarrow. Sources that cannot be read are listed in the page and in
    :attr:`Report.missing_sources`.
    """
    started = time.perf_counter()
    if max_faces < 0 or unsure < 0:
        raise UsageError("--max-faces and --unsure must be 0 or more")
    output_format = results_format(results, fmt)
    out = Path(out)
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder: name the .html file to write")
    if out.resolve() == Path(results).resolve():
        raise UsageError(f"--out {out} is the results file itself: name another file for the page")
    found = digest(results, output_format, max_faces=max_faces, unsure=unsure)
    thumbnails = Thumbnails(Path(base))
    shown = [s for name in _emotions(found) for s in found.best(name)] + found.least_sure()
    thumbnails.make(shown, found.video)
    charts = _charts(found) if found.video else {}
    page = _Page(found, thumbnails, out.parent.resolve(), Path(base).resolve(), charts).html()
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    try:
        partial.write_text(page, encoding="utf-8")
        partial.replace(out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from None
    return Report(out, found.records, found.faces, page.count('<img class="thumb"'), tuple(thumbnails.missing),
                  len(page.encode("utf-8")), time.perf_counter() - started)


def _emotions(found: Digest) -> list[str]:
    """The classes in the model's order, then any other label the rows hold."""
    return [*found.class_names, *sorted(set(found.emotions) - set(found.class_names))]


def _charts(found: Digest) -> dict[str, str]:
    """The emotion-over-time chart of each of the first :data:`MAX_VIDEOS` videos, as PNG data URIs."""
    from fer_batch.outputs.charts import plot_video  # noqa: PLC0415 - imports matplotlib

    charts: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="fer-batch-report-") as folder:
        for i, (source, tracks) in enumerate(list(found.tracks.items())[:MAX_VIDEOS]):
            try:
                path = plot_video(tracks, Path(folder) / f"{i}.png")
            except (FerBatchError, OSError, ValueError) as exc:
                log.error("could not draw the chart of %s: %s", source, exc)
                continue
            charts[source] = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    return charts


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "–"


STYLE = """
:root { --ink: #1d232b; --muted: #5b6573; --line: #e3e7ec; --card: #ffffff; --page: #f4f6f8; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: var(--ink); background: var(--page); }
header { background: #1f2933; color: #fff; padding: 22px 32px 18px; }
header h1 { margin: 0 0 4px; font-size: 24px; font-weight: 650; }
header p { margin: 0; color: #c9d1da; font-size: 13px; word-break: break-all; }
main { padding: 8px 32px 40px; max-width: 1400px; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 16px 20px 18px;
          margin: 18px 0; }
h2 { font-size: 19px; margin: 0 0 10px; }
h3 { font-size: 16px; margin: 18px 0 8px; }
h3 .count, h2 .count { color: var(--muted); font-weight: 400; font-size: 14px; }
p.note { color: var(--muted); margin: 4px 0 10px; font-size: 13px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.stat { min-width: 130px; padding: 10px 14px; border-radius: 8px; background: var(--page); border: 1px solid var(--line); }
.stat b { display: block; font-size: 26px; font-weight: 650; }
.stat span { color: var(--muted); font-size: 13px; }
.stat.bad b { color: #c0392b; }
table { border-collapse: collapse; font-size: 13px; margin-top: 6px; }
th, td { text-align: left; padding: 4px 10px 4px 0; border-bottom: 1px solid var(--line); vertical-align: middle; }
th { color: var(--muted); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(120px, 1fr)); gap: 10px; }
figure { margin: 0; padding: 6px; border: 1px solid var(--line); border-radius: 8px; background: #fafbfc;
         text-align: center; }
figure a { color: inherit; text-decoration: none; }
img.thumb, .nothumb { width: 96px; height: 96px; object-fit: contain; border-radius: 4px; background: #e9edf1;
                      display: block; margin: 0 auto; }
.nothumb { display: flex; align-items: center; justify-content: center; color: var(--muted); font-size: 11px; }
figcaption { font-size: 12px; margin-top: 4px; line-height: 1.3; }
figcaption .label { font-weight: 650; }
figcaption .where { color: var(--muted); display: block; overflow: hidden; text-overflow: ellipsis;
                    white-space: nowrap; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 4px; }
img.chart { max-width: 100%; border: 1px solid var(--line); border-radius: 6px; }
svg.bars text { font: 13px system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
code { font-size: 12px; word-break: break-all; }
"""


class _Page:
    """The HTML of one report."""

    def __init__(self, found: Digest, thumbnails: Thumbnails, folder: Path, base: Path,
                 charts: dict[str, str]) -> None:
        self.found = found
        self.thumbnails = thumbnails
        self.folder = folder  # where the page is: links are relative to it
        self.base = base
        self.charts = charts
        self.colors = class_colors(_emotions(found))

    def html(self) -> str:
        found = self.found
        parts = [self._glance(), self._distribution()]
        if found.video:
            parts.append(self._videos())
        parts += [self._galleries(), self._unsure(), self._missing()]
        what = "video" if found.video else "images"
        return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">'
                f"<title>fer-batch report: {_e(Path(found.results).name)}</title><style>{STYLE}</style></head>\n"
                f"<body><header><h1>fer-batch report</h1><p>{_e(found.results)} · fer-batch {what} results · "
                f"{found.fmt.value} · made {time.strftime('%Y-%m-%d %H:%M')}</p></header>\n<main>\n"
                + "\n".join(p for p in parts if p) + "\n</main></body></html>\n")

    # -- at a glance

    def _glance(self) -> str:
        found = self.found
        errors_n, missing_n = found.status[Status.ERROR.value], len(self.thumbnails.missing)
        if found.video:
            cards = [(len(found.sources), "videos"), (found.records - errors_n, "frames analysed"),
                     (found.faces, "faces"), (len(found.track_emotions), "face tracks"),
                     (found.status[Status.NO_FACE.value], "frames without a face")]
        else:
            cards = [(len(found.sources), "inputs"), (found.status[Status.OK.value], "photos with faces"),
                     (found.faces, "faces"), (found.status[Status.NO_FACE.value], "photos without a face")]
        cards = [(n, label, False) for n, label in cards] + [(errors_n, "errors", errors_n > 0)]
        if missing_n:
            cards.append((missing_n, "sources unreadable now", True))
        html_cards = "".join(f'<div class="stat{" bad" if bad else ""}"><b>{n:,}</b><span>{_e(label)}</span></div>'
                             for n, label, bad in cards)
        errors = ""
        if found.errors:
            rows = "".join(f'<tr><td class="num">{row}</td><td>{self._link(source, None)}</td><td>{_e(reason)}</td></tr>'
                           for row, source, reason in found.errors)
            more = found.status[Status.ERROR.value] - len(found.errors)
            errors = (f'<h3>Error rows <span class="count">({found.status[Status.ERROR.value]:,})</span></h3>'
                      f'<table class="errors"><tr><th class="num">{self._row_word()}</th><th>source</th><th>reason'
                      f"</th></tr>{rows}</table>"
                      + (f'<p class="note">… and {more:,} more, in the results file.</p>' if more > 0 else ""))
        return f'<section id="glance"><h2>The run at a glance</h2><div class="cards">{html_cards}</div>{errors}</section>'

    def _row_word(self) -> str:
        return "row" if self.found.fmt in (OutputFormat.CSV, OutputFormat.PARQUET) else "record"

    # -- distribution

    def _distribution(self) -> str:
        found = self.found
        if not found.faces:
            return ('<section id="expressions"><h2>Expressions</h2><p class="note">No face was found in these '
                    "results.</p></section>")
        names = _emotions(found)
        return (f'<section id="expressions"><h2>Expressions <span class="count">({found.faces:,} faces)</span></h2>'
                f"{self._bars([(n, found.emotions[n]) for n in names], found.faces)}</section>")

    def _bars(self, counts: list[tuple[str, int]], total: int) -> str:
        """A horizontal bar chart as inline SVG: one bar per class, its count and share."""
        bar_h, gap, label_w, bar_w, text_w = 22, 6, 90, 560, 130
        height = len(counts) * (bar_h + gap)
        top = max((c for _, c in counts), default=0) or 1
        rows = []
        for i, (name, count) in enumerate(counts):
            y = i * (bar_h + gap)
            w = bar_w * count / top
            rows.append(f'<text x="{label_w - 8}" y="{y + bar_h * 0.7:.1f}" text-anchor="end">{_e(name)}</text>'
                        f'<rect class="bar" x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" rx="3" '
                        f'fill="{self.colors.get(name, "#888")}"><title>{_e(name)}: {count:,}</title></rect>'
                        f'<text x="{label_w + w + 6:.1f}" y="{y + bar_h * 0.7:.1f}" fill="#5b6573">{count:,} '
                        f"({_pct(count, total)})</text>")
        width = label_w + bar_w + text_w
        return (f'<svg class="bars" role="img" aria-label="faces per expression" width="{width}" height="{height}" '
                f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">{"".join(rows)}</svg>')

    def _stacked(self, counts: Counter[str], width: int = 220, height: int = 14) -> str:
        """One thin bar split by the share of each class: a track's expressions at a glance."""
        total = sum(counts.values()) or 1
        x, rects = 0.0, []
        for name in _emotions(self.found):
            w = width * counts.get(name, 0) / total
            if w > 0:
                rects.append(f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="{height}" '
                             f'fill="{self.colors.get(name, "#888")}"><title>{_e(name)}: {counts[name]:,}</title></rect>')
                x += w
        return (f'<svg class="stack" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
                f'xmlns="http://www.w3.org/2000/svg">{"".join(rects)}</svg>')

    # -- videos

    def _videos(self) -> str:
        found = self.found
        parts = []
        videos = list(found.tracks.items())
        for source, tracks in videos[:MAX_VIDEOS]:
            summaries = summarize(tracks)
            chart = self.charts.get(source)
            image = f'<img class="chart" alt="emotions over time in {_e(Path(source).name)}" src="{chart}">' if chart \
                else ""
            parts.append(f"<h3>{self._link(source, None)} <span class=\"count\">({len(summaries)} track"
                         f"{'s' if len(summaries) != 1 else ''}, {tracks.frames:,} frames analysed)</span></h3>"
                         f"{image}{self._track_table(summaries)}")
        more = (f'<p class="note">… and {len(videos) - MAX_VIDEOS} more videos, in the results file.</p>'
                if len(videos) > MAX_VIDEOS else "")
        return ('<section id="videos"><h2>Videos: emotions over time, per track</h2><p class="note">One panel per '
                "face track (the longest first); each track's summary and its faces' expressions below.</p>"
                + "".join(parts) + more + "</section>")

    def _track_table(self, summaries: Sequence[TrackSummary]) -> str:
        if not summaries:
            return '<p class="note">No face track in this video.</p>'
        rows = []
        for s in summaries[:MAX_TRACK_ROWS]:
            top = sorted(s.mean_probabilities.items(), key=lambda kv: -kv[1])[:2]
            counts = self.found.track_emotions.get((s.source, s.track), Counter())
            rows.append(f'<tr><td class="num">{s.track}</td><td class="num">{s.first_s:.1f} s</td>'
                        f'<td class="num">{s.last_s:.1f} s</td><td class="num">{s.frames:,}</td>'
                        f'<td><span class="swatch" style="background:{self.colors.get(s.dominant, "#888")}"></span>'
                        f"{_e(s.dominant)}</td><td>{_e(', '.join(f'{k} {v:.2f}' for k, v in top))}</td>"
                        f"<td>{self._stacked(counts)}</td></tr>")
        more = len(summaries) - MAX_TRACK_ROWS
        note = f'<p class="note">… and {more} shorter tracks.</p>' if more > 0 else ""
        return ('<table class="tracks"><tr><th class="num">track</th><th class="num">from</th><th class="num">to</th>'
                '<th class="num">frames</th><th>dominant</th><th>mean probability, top two</th>'
                f"<th>top expression per frame</th></tr>{''.join(rows)}</table>{note}")

    # -- galleries

    def _galleries(self) -> str:
        found = self.found
        if not found.faces:
            return ""
        parts = []
        empty = [name for name in _emotions(found) if not found.emotions[name]]
        for name in _emotions(found):
            faces = found.best(name)
            count = found.emotions[name]
            if not count:
                continue
            shown = f"the {len(faces)} most confident of {count:,}" if count > len(faces) else f"{count:,}"
            swatch = f'<span class="swatch" style="background:{self.colors.get(name, "#888")}"></span>'
            body = (f'<div class="grid">{"".join(self._figure(s, f"{s.face.confidence:.0%}") for s in faces)}</div>'
                    if faces else '<p class="note">None shown (--max-faces 0).</p>')
            parts.append(f'<h3 id="gallery-{_e(name)}">{swatch}{_e(name)} <span class="count">({shown})</span></h3>'
                         + body)
        if empty:
            parts.append(f'<p class="note">No face with the expression {", ".join(map(_e, empty))}.</p>')
        return ('<section id="gallery"><h2>Faces per expression</h2><p class="note">Most confident first; each '
                f"face links to its source, with its {self._row_word()} in the results file.</p>"
                + "".join(parts) + "</section>")

    def _unsure(self) -> str:
        faces = self.found.least_sure()
        if not faces:
            return ""
        figures = "".join(self._figure(s, f"{s.face.confidence:.0%} / {_e(s.second[0])} {s.second[1]:.0%}")
                          for s in faces)
        return ('<section id="unsure"><h2>Where the model is least sure</h2><p class="note">The faces with the '
                "smallest margin between their two likeliest expressions (first / second), smallest first: the "
                f'first place to look for mistakes.</p><div class="grid">{figures}</div></section>')

    def _figure(self, shown: Shown, score: str) -> str:
        uri = self.thumbnails.uri(shown)
        name = shown.face.emotion
        image = (f'<img class="thumb" alt="{_e(name)} face" src="{uri}">' if uri else
                 '<div class="nothumb">source unreadable</div>')
        where = Path(shown.source).name
        if shown.time_s is not None:
            where += f" {shown.time_s:.1f} s"
        title = f"{shown.source}, {self._row_word()} {shown.row}, face {shown.face.face}"
        if shown.face.track is not None:
            title += f", track {shown.face.track}"
        return (f'<figure><a href="{_e(self._href(shown.source, shown.time_s))}" title="{_e(title)}">{image}'
                f'<figcaption><span class="label" style="color:{self._text_color(name)}">{_e(name)}</span> {score}'
                f'<span class="where">{_e(where)}</span><span class="where">{self._row_word()} {shown.row:,}</span>'
                f"</figcaption></a></figure>")

    def _text_color(self, name: str) -> str:
        """The class's colour, darkened so that a label in it reads on white."""
        value = self.colors.get(name, "#555555").lstrip("#")
        r, g, b = (int(value[i:i + 2], 16) * 0.7 for i in (0, 2, 4))
        return f"#{int(r):02x}{int(g):02x}{int(b):02x}"

    # -- links

    def _href(self, source: str, time_s: float | None) -> str:
        path = Path(source)
        path = path if path.is_absolute() else self.base / path
        try:
            href = Path(os.path.relpath(path, self.folder)).as_posix()
        except ValueError:  # another drive (Windows)
            href = path.as_uri()
        href = urllib.parse.quote(href, safe="/:")
        return href + (f"#t={time_s:.2f}" if time_s is not None else "")

    def _link(self, source: str, time_s: float | None) -> str:
        return f'<a href="{_e(self._href(source, time_s))}"><code>{_e(source)}</code></a>'

    def _missing(self) -> str:
        missing = self.thumbnails.missing
        if not missing:
            return ""
        rows = "".join(f"<tr><td><code>{_e(source)}</code></td><td>{_e(reason)}</td></tr>"
                       for source, reason in missing.items())
        return (f'<section id="missing"><h2>Sources that could not be read <span class="count">({len(missing)})'
                '</span></h2><p class="note">Their faces are shown as grey boxes: the files were moved, deleted '
                "or changed since the run (relative paths are found from the folder the report was made in)."
                f"</p><table><tr><th>source</th><th>why</th></tr>{rows}</table></section>")

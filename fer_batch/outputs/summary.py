"""Per-track series and summaries of video results.

:class:`VideoTracks` gathers the records of one video into one time series of
class probabilities per face track (what the charts draw). :func:`summarize`
turns it into one :class:`TrackSummary` per track: when the face was first and
last seen, in how many analysed frames, its dominant emotion and the mean
probability of each class. Summaries are written as CSV or JSON
(:func:`write_summary`) and shown as a short text table (:func:`format_table`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fer_batch.errors import UsageError
from fer_batch.records import FrameResult

SUMMARY_DECIMALS = 4  # means of probabilities: enough to rank classes, few enough to read


@dataclass
class TrackSeries:
    """One face track of one video: the times it was seen and its class probabilities then."""

    track: int
    times: list[float] = field(default_factory=list)
    probabilities: list[list[float]] = field(default_factory=list)  # one row per time, in class order

    @property
    def frames(self) -> int:
        return len(self.times)

    @property
    def first_s(self) -> float:
        return self.times[0]

    @property
    def last_s(self) -> float:
        return self.times[-1]

    @property
    def duration_s(self) -> float:
        return self.times[-1] - self.times[0]

    def as_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Times, shape (N,), and probabilities, shape (N, classes)."""
        return np.asarray(self.times, dtype=float), np.asarray(self.probabilities, dtype=float)


@dataclass
class VideoTracks:
    """The tracks of one video, built from its records with :meth:`add` (records in time order)."""

    source: str
    class_names: tuple[str, ...]
    tracks: dict[int, TrackSeries] = field(default_factory=dict)
    frames: int = 0  # sampled frames analysed
    start_s: float | None = None  # time of the first and last analysed frame
    end_s: float | None = None
    duration_hint_s: float | None = None  # the length the container announces

    def add(self, result: FrameResult) -> None:
        if result.time_s is None:  # an error record: nothing to add
            return
        self.frames += 1
        self.start_s = result.time_s if self.start_s is None else self.start_s
        self.end_s = result.time_s
        hint = result.extra.get("duration_s")
        if isinstance(hint, (int, float)):
            self.duration_hint_s = float(hint)
        for face in result.faces:
            if face.track is None:
                continue
            series = self.tracks.setdefault(face.track, TrackSeries(face.track))
            series.times.append(result.time_s)
            series.probabilities.append([face.probabilities.get(name, 0.0) for name in self.class_names])

    def longest(self, limit: int | None = None) -> list[TrackSeries]:
        """Tracks by on-screen time: most analysed frames first, then longest span, then lowest ID."""
        ordered = sorted(self.tracks.values(), key=lambda s: (-s.frames, -s.duration_s, s.track))
        return ordered if limit is None else ordered[:limit]


@dataclass(frozen=True)
class TrackSummary:
    """What one face track did over a video."""

    source: str
    track: int
    first_s: float
    last_s: float
    frames: int  # analysed frames the face was seen in
    dominant: str  # the class with the highest mean probability over the track
    mean_probabilities: dict[str, float]

    def to_dict(self) -> dict[str, object]:
        return {"source": self.source, "track": self.track, "first_s": round(self.first_s, 3),
                "last_s": round(self.last_s, 3), "frames": self.frames, "dominant": self.dominant,
                "mean_probabilities": {k: round(v, SUMMARY_DECIMALS) for k, v in self.mean_probabilities.items()}}


def summarize(video: VideoTracks) -> list[TrackSummary]:
    """One summary per track of the video, longest track first."""
    out = []
    for series in video.longest():
        _, probs = series.as_arrays()
        means = probs.mean(axis=0)
        out.append(TrackSummary(
            source=video.source, track=series.track, first_s=series.first_s, last_s=series.last_s,
            frames=series.frames, dominant=video.class_names[int(np.argmax(means))],
            mean_probabilities={name: float(m) for name, m in zip(video.class_names, means)},
        ))
    return out


def write_summary(path: str | Path, summaries: Sequence[TrackSummary], class_names: Sequence[str]) -> Path:
    """Write summaries as CSV (one row per track) or JSON (a list of objects), chosen by the extension."""
    check_summary_path(path)
    path = Path(path)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        if suffix == ".json":
            json.dump([s.to_dict() for s in summaries], fh, indent=2)
            fh.write("\n")
            return path
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["source", "track", "first_s", "last_s", "frames", "dominant", *class_names])
        for s in summaries:
            writer.writerow([s.source, s.track, f"{s.first_s:.3f}", f"{s.last_s:.3f}", s.frames, s.dominant,
                             *(f"{s.mean_probabilities.get(n, 0.0):.{SUMMARY_DECIMALS}f}" for n in class_names)])
    return path


def check_summary_path(path: str | Path) -> None:
    """Raise :class:`UsageError` for a summary path with neither a .csv nor a .json extension."""
    if Path(path).suffix.lower() not in (".csv", ".json"):
        raise UsageError(f"--summary must end in .csv or .json, not {Path(path).name!r}")


def format_table(summaries: Iterable[TrackSummary], max_rows: int = 20) -> str:
    """A short fixed-width table: one line per track, top two classes by mean probability."""
    rows = list(summaries)
    if not rows:
        return "no face tracks"
    lines = [f"{'video':<28} {'track':>5} {'from':>7} {'to':>7} {'frames':>6}  dominant (mean prob.)"]
    for s in rows[:max_rows]:
        name = Path(s.source).name
        name = name if len(name) <= 28 else "…" + name[-27:]
        top = sorted(s.mean_probabilities.items(), key=lambda kv: -kv[1])[:2]
        mood = ", ".join(f"{k} {v:.2f}" for k, v in top)
        lines.append(f"{name:<28} {s.track:>5} {s.first_s:>6.1f}s {s.last_s:>6.1f}s {s.frames:>6}  {mood}")
    if len(rows) > max_rows:
        lines.append(f"... and {len(rows) - max_rows} more track(s); the --summary file lists them all")
    return "\n".join(lines)

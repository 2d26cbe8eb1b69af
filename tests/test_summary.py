"""Per-track summaries of video results: collection, numbers, CSV/JSON files and the stderr table."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from fer_batch.errors import UsageError
from fer_batch.model_file import EMOTIONS
from fer_batch.outputs.summary import VideoTracks, format_table, summarize, write_summary
from fer_batch.records import Box, FaceResult, FrameResult, Status


def face(track: int, emotion: str, p: float) -> FaceResult:
    rest = (1 - p) / (len(EMOTIONS) - 1)
    probs = {name: (p if name == emotion else rest) for name in EMOTIONS}
    return FaceResult(face=0, box=Box(0, 0, 10, 10), det_score=1.0, emotion=emotion, confidence=p,
                      probabilities=probs, track=track)


def video() -> VideoTracks:
    v = VideoTracks("a/clip.mp4", EMOTIONS)
    for i in range(10):
        faces = [face(1, "happy" if i < 7 else "sad", 0.8)]
        if 4 <= i < 6:
            faces.append(face(2, "surprise", 0.6))
        v.add(FrameResult("a/clip.mp4", Status.OK, tuple(faces), frame=3 * i, time_s=0.2 * i,
                          extra={"duration_s": 2.0}))
    v.add(FrameResult("a/clip.mp4", Status.NO_FACE, (), frame=30, time_s=2.0))
    v.add(FrameResult("a/clip.mp4", Status.ERROR, error="truncated"))
    return v


def test_tracks_are_collected_and_summarised() -> None:
    v = video()
    assert v.frames == 11 and v.end_s == 2.0 and v.duration_hint_s == 2.0
    first, second = summarize(v)
    assert (first.track, first.frames, first.first_s, first.last_s) == (1, 10, 0.0, pytest.approx(1.8))
    assert first.dominant == "happy" and first.mean_probabilities["happy"] > first.mean_probabilities["sad"]
    assert sum(first.mean_probabilities.values()) == pytest.approx(1.0)
    assert (second.track, second.frames, second.dominant) == (2, 2, "surprise")


def test_summary_files_csv_and_json(tmp_path: Path) -> None:
    rows = summarize(video())
    csv_path = write_summary(tmp_path / "s" / "tracks.csv", rows, EMOTIONS)
    table = list(csv.DictReader(csv_path.open()))
    assert list(table[0]) == ["source", "track", "first_s", "last_s", "frames", "dominant", *EMOTIONS]
    assert table[0]["dominant"] == "happy" and table[1]["track"] == "2"
    data = json.loads(write_summary(tmp_path / "tracks.JSON", rows, EMOTIONS).read_text())
    assert data[0]["track"] == 1 and set(data[0]["mean_probabilities"]) == set(EMOTIONS)
    with pytest.raises(UsageError):
        write_summary(tmp_path / "tracks.txt", rows, EMOTIONS)


def test_table_is_short() -> None:
    text = format_table(summarize(video()))
    lines = text.splitlines()
    assert len(lines) == 3 and "clip.mp4" in lines[1] and "happy" in lines[1]
    assert format_table([]) == "no face tracks"
    many = summarize(video()) * 15
    assert format_table(many, max_rows=5).splitlines()[-1].startswith("... and 25 more")

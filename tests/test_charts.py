"""Emotion-over-time charts: one PNG per video, a panel per track (longest first), smoothing, colours."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_batch.model_file import EMOTIONS
from fer_batch.outputs.charts import (
    CHART_WIDTH_IN,
    DPI,
    MAX_TRACKS,
    PANEL_HEIGHT_IN,
    break_gaps,
    class_colors,
    plot_video,
    sampling_interval,
    smooth,
)
from fer_batch.outputs.summary import TrackSeries, VideoTracks


def tracks(n: int, seconds: float = 10.0, step: float = 0.2) -> VideoTracks:
    """``n`` tracks; track k lasts (n - k + 1) / n of the video, so track 1 is the longest."""
    rng = np.random.default_rng(0)
    video = VideoTracks("clips/party.mp4", EMOTIONS, frames=int(seconds / step), start_s=0.0, end_s=seconds)
    for k in range(1, n + 1):
        t = np.arange(0.0, seconds * (n - k + 1) / n, step)
        p = rng.dirichlet(np.ones(len(EMOTIONS)), size=len(t))
        video.tracks[k] = TrackSeries(k, list(t), p.tolist())
    return video


def png_size(path: Path) -> tuple[int, int]:
    image = cv2.imread(str(path))
    assert image is not None
    return image.shape[1], image.shape[0]


def expected_height(panels: int) -> int:
    return round((1.3 + PANEL_HEIGHT_IN * panels) * DPI)


def test_one_panel_per_track_up_to_the_limit(tmp_path: Path) -> None:
    one = plot_video(tracks(1), tmp_path / "one.png")
    assert png_size(one) == (round(CHART_WIDTH_IN * DPI), expected_height(1))
    many = plot_video(tracks(MAX_TRACKS + 4), tmp_path / "sub" / "many.png", smooth_s=1.0)
    assert png_size(many) == (round(CHART_WIDTH_IN * DPI), expected_height(MAX_TRACKS))


def test_longest_tracks_come_first() -> None:
    video = tracks(4)
    video.tracks[9] = TrackSeries(9, [0.0, 0.2], [[1 / 7] * 7] * 2)
    assert [s.track for s in video.longest(3)] == [1, 2, 3]
    assert video.longest()[-1].track == 9


def test_a_video_without_faces_still_gets_a_chart(tmp_path: Path) -> None:
    empty = VideoTracks("quiet.mp4", EMOTIONS, frames=20, start_s=0.0, end_s=3.8)
    path = plot_video(empty, tmp_path / "empty.png")
    assert png_size(path) == (round(CHART_WIDTH_IN * DPI), expected_height(1))


def test_smoothing_is_a_moving_average_over_seconds() -> None:
    t = np.arange(0, 10, 0.5)
    step = np.where(t < 5, 0.0, 1.0)
    assert np.array_equal(smooth(t, step, 0.0), step)
    out = smooth(t, step, 2.0)  # +-1 s: five points
    assert out[0] == 0 and out[-1] == 1 and out[10] == pytest.approx(3 / 5)
    assert np.allclose(smooth(t, np.full((len(t), 7), 1 / 7), 3.0), 1 / 7)  # rows still sum to one
    uneven = np.array([0.0, 0.1, 0.2, 5.0])  # a gap: the far point is not averaged in
    assert smooth(uneven, np.array([0.0, 0.0, 0.0, 1.0]), 1.0)[-1] == 1.0


def test_each_emotion_has_its_own_fixed_colour() -> None:
    colours = class_colors(EMOTIONS)
    assert len(set(colours.values())) == len(EMOTIONS)
    assert colours["angry"] == class_colors(["happy", "angry"])["angry"]  # same colour whatever the model
    custom = class_colors(["pos", "neg", "neutral"])
    assert len(set(custom.values())) == 3 and custom["neutral"] == colours["neutral"]


def test_lines_break_where_a_track_was_not_seen(tmp_path: Path) -> None:
    # Sampled at 5 frames/s; the face is missed once at 0.6 s, then for 0.8 s after 1.0 s.
    times = np.array([0.0, 0.2, 0.4, 0.8, 1.0, 1.8, 2.0, 2.2])
    probs = np.full((len(times), len(EMOTIONS)), 1 / 7)
    t, p = break_gaps(times, probs, 0.2)
    assert np.isnan(t).sum() == 1 and np.isnan(t[5]) and np.isnan(p[5]).all()  # one break, at the long gap only
    assert np.array_equal(t[~np.isnan(t)], times) and p.shape == (len(times) + 1, len(EMOTIONS))
    assert np.isnan(break_gaps(times, probs[:, 0], 0.2)[1]).sum() == 1  # one column works the same
    steady = np.arange(0, 2, 0.04)  # every frame of a 25 fps video: no gap, no break
    assert not np.isnan(break_gaps(steady, steady, 0.04)[0]).any()
    # The interval is the video's, not the track's: a face seen on every other frame keeps one line.
    video = VideoTracks("clip.mp4", EMOTIONS, frames=12, start_s=0.0, end_s=2.2)
    video.tracks[1] = TrackSeries(1, list(times), probs.tolist())
    assert sampling_interval(video) == pytest.approx(0.2)
    every_other = np.arange(0.0, 2.2, 0.4)
    assert not np.isnan(break_gaps(every_other, every_other, sampling_interval(video))[0]).any()
    assert sampling_interval(VideoTracks("one.mp4", EMOTIONS, frames=1, start_s=0.0, end_s=0.0)) is None
    assert plot_video(video, tmp_path / "gap.png").stat().st_size > 10_000

"""Emotion-over-time charts: one PNG per video, one panel per face track.

Each panel shows the class probabilities of one track against video time in
seconds, with the same colour for a class in every panel and every chart. The
longest tracks come first, up to ``max_tracks`` panels (:data:`MAX_TRACKS`).
Optional smoothing is a centred moving average over a window in seconds;
lines break where a track was not seen for a few sampling intervals, rather
than bridging the gap with a straight line that shows data nobody measured.

Matplotlib is imported when a chart is drawn, so importing this module (for
the colours) is cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fer_batch.outputs.summary import TrackSeries, VideoTracks

MAX_TRACKS = 6  # panels per chart; more would be too small to read, and later tracks are usually brief
PANEL_HEIGHT_IN = 1.9  # inches per track panel
CHART_WIDTH_IN = 11.0
DPI = 110
# A track unseen for longer than GAP_STEPS sampling intervals (two or more missed samples in a row) breaks its
# lines there; one missed detection does not. MIN_GAP_S keeps detector flicker at high frame rates (--every 1)
# from cutting a line into pieces.
GAP_STEPS = 2.5
MIN_GAP_S = 0.3

# One colour per class, chosen to match the mood and to stay apart from each other (and for annotations).
CLASS_COLORS: dict[str, str] = {
    "angry": "#d62728",  # red
    "disgust": "#2ca02c",  # green
    "fear": "#9467bd",  # purple
    "happy": "#ff9f1c",  # orange
    "neutral": "#7f7f7f",  # grey
    "sad": "#1f77b4",  # blue
    "surprise": "#17becf",  # cyan
}
_FALLBACK = ("#8c564b", "#e377c2", "#bcbd22", "#393b79", "#637939", "#843c39", "#7b4173")


def class_colors(class_names: Sequence[str]) -> dict[str, str]:
    """A hex colour per class: the fixed palette for the seven emotions, distinct fallbacks for others."""
    extra = iter(_FALLBACK * (1 + len(class_names) // len(_FALLBACK)))
    return {name: CLASS_COLORS.get(name.lower()) or next(extra) for name in class_names}


def smooth(times: np.ndarray, values: np.ndarray, window_s: float) -> np.ndarray:
    """Centred moving average over ``window_s`` seconds of video time (works for uneven sampling).

    ``values`` has shape (N,) or (N, K); ``window_s <= 0`` returns the values unchanged.
    """
    if window_s <= 0 or len(times) < 2:
        return values
    half = window_s / 2
    lo = np.searchsorted(times, times - half, side="left")
    hi = np.searchsorted(times, times + half, side="right")
    flat = values.reshape(len(times), -1)
    cumsum = np.vstack([np.zeros((1, flat.shape[1])), np.cumsum(flat, axis=0)])
    out = (cumsum[hi] - cumsum[lo]) / (hi - lo)[:, None]
    return out.reshape(values.shape)


def sampling_interval(video: VideoTracks) -> float | None:
    """The mean time between the video's analysed frames, in seconds (None for fewer than two frames).

    Taken over the whole video rather than one track: a face seen only now and then would otherwise set its own,
    longer, interval and hide its gaps.
    """
    if video.frames < 2 or video.start_s is None or video.end_s is None or video.end_s <= video.start_s:
        return None
    return (video.end_s - video.start_s) / (video.frames - 1)


def break_gaps(times: np.ndarray, values: np.ndarray, interval: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Insert a NaN row into each gap longer than ``GAP_STEPS`` sampling intervals, so the plotted line breaks.

    ``values`` has shape (N,) or (N, K). ``interval=None`` falls back to the median step of ``times``.
    """
    if interval is None:
        steps = np.diff(times)
        interval = float(np.median(steps)) if steps.size else 0.0
    gaps = np.nonzero(np.diff(times) > max(MIN_GAP_S, GAP_STEPS * interval))[0]
    if gaps.size == 0:
        return times, values
    return np.insert(times, gaps + 1, np.nan), np.insert(values, gaps + 1, np.nan, axis=0)


def _isolated(values: np.ndarray) -> np.ndarray:
    """Rows with a NaN row (or the end) on both sides: a line through them would draw nothing."""
    present = ~np.isnan(values)
    before = np.concatenate([[False], present[:-1]])
    after = np.concatenate([present[1:], [False]])
    return present & ~before & ~after


def _panel_title(series: TrackSeries, class_names: Sequence[str]) -> str:
    _, probs = series.as_arrays()
    dominant = class_names[int(np.argmax(probs.mean(axis=0)))]
    seen = f"{series.frames} frame{'s' if series.frames != 1 else ''}"
    return (f"track {series.track}: {series.first_s:.1f}–{series.last_s:.1f} s "
            f"({series.duration_s:.1f} s, {seen}) · mostly {dominant}")


def plot_video(video: VideoTracks, path: str | Path, *, smooth_s: float = 0.0, max_tracks: int = MAX_TRACKS) -> Path:
    """Write the emotion-over-time chart of one video as a PNG; returns the path written."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - slow import
    from matplotlib.figure import Figure  # noqa: PLC0415
    from matplotlib.lines import Line2D  # noqa: PLC0415

    path = Path(path)
    names = video.class_names
    colors = class_colors(names)
    shown = video.longest(max_tracks)
    panels = max(1, len(shown))
    fig = Figure(figsize=(CHART_WIDTH_IN, 1.3 + PANEL_HEIGHT_IN * panels), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]

    end = max(filter(None, [video.end_s, video.duration_hint_s, 0.1]))
    span = f"{video.frames} frames analysed over {video.end_s or 0:.1f} s" if video.frames else "no frame analysed"
    count = len(video.tracks)
    heading = f"{Path(video.source).name} — {count} face track{'s' if count != 1 else ''}, {span}"
    if count > len(shown):
        heading += f" (the {len(shown)} longest shown)"
    if smooth_s > 0:
        heading += f"; smoothed over {smooth_s:g} s"

    interval = sampling_interval(video)
    for ax, series in zip(axes, shown):
        times, probs = series.as_arrays()
        probs = smooth(times, probs, smooth_s)
        t, p = break_gaps(times, probs, interval)
        few = series.frames <= 12  # a short track is dots, not a line nobody can see
        alone = _isolated(p[:, 0])  # a sample between two gaps: drawn as a dot, or it would not show
        for k, name in enumerate(names):
            ax.plot(t, p[:, k], color=colors[name], linewidth=1.6, marker="o" if few else None, markersize=3)
            if alone.any() and not few:
                ax.plot(t[alone], p[alone, k], color=colors[name], linestyle="none", marker="o", markersize=3)
        ax.axvspan(series.first_s, series.last_s, color="#000000", alpha=0.04, linewidth=0)
        ax.set_title(_panel_title(series, names), fontsize=10, loc="left")
        ax.set_ylim(-0.02, 1.02)
        ax.set_yticks([0, 0.5, 1])
        ax.set_ylabel("probability", fontsize=9)
        ax.grid(True, alpha=0.3)
    if not shown:
        axes[0].text(0.5, 0.5, f"no faces found in {video.frames} analysed frames", ha="center", va="center",
                     transform=axes[0].transAxes, fontsize=12, color="#555555")
        axes[0].set_yticks([])
    for ax in axes:
        ax.set_xlim(0, end)
    axes[-1].set_xlabel("time in video (s)")
    handles = [Line2D([], [], color=colors[n], linewidth=3, label=n) for n in names]
    # The heading is the legend's title: one block above the panels, which constrained layout never overlaps.
    fig.legend(handles=handles, loc="outside upper center", ncol=len(names), frameon=False, fontsize=10,
               title=heading, title_fontproperties={"size": 12, "weight": "bold"})

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path

"""Face tracks across video frames: a small IoU tracker with motion prediction.

A track is a stable ID for one face over the sampled frames of one video.
Each frame's boxes are matched greedily to the live tracks, best match first:
by overlap (IoU) with where the track is predicted to be, or, for a face that
moved further than its own size between two sampled frames (likely at a few
frames per second), by centre distance relative to the face size. Tracks seen
in the previous frame are matched before tracks that missed frames (a
matching cascade), and a box of a very different size never continues a track. A track that
goes unmatched for longer than its gap allowance ends; a face that appears
after that gets a new ID, so a person who leaves and comes back, or who is
hidden for a while, gets a new track. The video pipeline also ends all tracks
at a scene cut (:meth:`IouTracker.reset`): in edited video, a face in the next
shot often sits where another person's face was.

IDs start at 1 and count up within one tracker (one video). No tracking
library is used: the maintained ones (norfair, motpy, ByteTrack ports) add
SciPy/filterpy or larger dependencies and Kalman filters tuned for dense
pedestrian scenes; greedy matching over the few faces in a frame needs none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from fer_batch.records import Box

DEFAULT_MIN_IOU = 0.2  # overlap with the predicted box that counts as the same face
DEFAULT_MAX_SHIFT = 1.5  # centre distance, in face sides, still accepted when the boxes no longer overlap...
SHIFT_SIZE_RATIO = 1.25  # ...if the sizes agree this well (a face crossing near the camera at a few frames/s)
DEFAULT_MAX_GAP_S = 1.5  # seconds a track survives without a match (at least MIN_GAP_STEPS sampled frames)
MIN_GAP_STEPS = 3  # sampled frames a track may miss, whatever the sampling rate
MAX_SIZE_RATIO = 1.5  # a box this much larger or smaller (in side length) than the track's is another face
MAX_PREDICT_S = 1.0  # seconds of motion extrapolation; beyond that the last box is the better guess


class Tracker(Protocol):
    """Assigns a track ID to each box of a frame, frame after frame, in time order."""

    def update(self, boxes: Sequence[Box], time_s: float) -> list[int]: ...

    def reset(self) -> None: ...


@dataclass
class _Track:
    id: int
    box: Box
    time_s: float
    vx: float = 0.0  # centre velocity in pixels per second (smoothed)
    vy: float = 0.0
    hits: int = 1
    missed: int = 0  # updates since this track was last matched

    def predicted(self, time_s: float) -> Box:
        dt = min(max(0.0, time_s - self.time_s), MAX_PREDICT_S)
        return Box(int(round(self.box.x + self.vx * dt)), int(round(self.box.y + self.vy * dt)), self.box.w, self.box.h)

    def observe(self, box: Box, time_s: float) -> None:
        dt = time_s - self.time_s
        if dt > 0:
            (cx0, cy0), (cx1, cy1) = _centre(self.box), _centre(box)
            vx, vy = (cx1 - cx0) / dt, (cy1 - cy0) / dt
            # The first move sets the velocity; later ones are averaged to damp detector jitter.
            self.vx, self.vy = (vx, vy) if self.hits == 1 else (0.5 * self.vx + 0.5 * vx, 0.5 * self.vy + 0.5 * vy)
        self.box, self.time_s = box, time_s
        self.hits += 1
        self.missed = 0


def _centre(box: Box) -> tuple[float, float]:
    return box.x + box.w / 2, box.y + box.h / 2


def _shift(a: Box, b: Box) -> float:
    """Distance between centres in units of the boxes' mean side."""
    (ax, ay), (bx, by) = _centre(a), _centre(b)
    side = (a.w + a.h + b.w + b.h) / 4
    return math.hypot(ax - bx, ay - by) / side if side > 0 else math.inf


def _similar_size(a: Box, b: Box, limit: float = MAX_SIZE_RATIO) -> bool:
    if a.area <= 0 or b.area <= 0:
        return False
    ratio = math.sqrt(a.area / b.area)  # ratio of side lengths
    return 1 / limit <= ratio <= limit


@dataclass
class IouTracker:
    """Greedy IoU tracker; call :meth:`update` once per sampled frame, in time order.

    >>> tracker = IouTracker()
    >>> tracker.update([Box(10, 10, 50, 50)], 0.0), tracker.update([Box(14, 12, 50, 50)], 0.2)
    ([1], [1])
    """

    min_iou: float = DEFAULT_MIN_IOU
    max_shift: float = DEFAULT_MAX_SHIFT
    max_gap_s: float = DEFAULT_MAX_GAP_S
    _tracks: list[_Track] = field(default_factory=list, repr=False)
    _next_id: int = field(default=1, repr=False)
    _last_time: float | None = field(default=None, repr=False)
    _step_s: float | None = field(default=None, repr=False)  # typical time between updates

    def _gap_allowance(self) -> float:
        # At a low sampling rate a few missed frames already exceed max_gap_s: allow MIN_GAP_STEPS of them.
        return max(self.max_gap_s, MIN_GAP_STEPS * self._step_s) if self._step_s else self.max_gap_s

    def update(self, boxes: Sequence[Box], time_s: float) -> list[int]:
        """Track IDs for ``boxes`` (same order), seen at ``time_s`` seconds."""
        if self._last_time is not None:
            step = time_s - self._last_time
            if step > 0:
                self._step_s = step if self._step_s is None else 0.8 * self._step_s + 0.2 * step
        self._last_time = time_s
        allowance = self._gap_allowance()
        self._tracks = [t for t in self._tracks if time_s - t.time_s <= allowance]

        ids: list[int | None] = [None] * len(boxes)
        # Matching cascade: tracks seen in the previous frame choose first, then those missing for one
        # frame, and so on, so a stale track cannot take the face of a track that was just seen.
        for missed in sorted({t.missed for t in self._tracks}):
            group = [t for t in self._tracks if t.missed == missed]
            for track, bi in self._match(group, boxes, ids, time_s):
                track.observe(boxes[bi], time_s)
                ids[bi] = track.id
        matched = {i for i in ids if i is not None}
        for track in self._tracks:
            if track.id not in matched:
                track.missed += 1
        for bi, box in enumerate(boxes):
            if ids[bi] is None:
                track = _Track(self._next_id, box, time_s)
                self._next_id += 1
                self._tracks.append(track)
                ids[bi] = track.id
        return [i for i in ids if i is not None]

    def reset(self) -> None:
        """End every track (at a scene cut): faces seen from now on get new IDs."""
        self._tracks.clear()

    def _match(self, tracks: list[_Track], boxes: Sequence[Box], ids: list[int | None],
               time_s: float) -> list[tuple[_Track, int]]:
        """Greedy one-to-one matching of ``tracks`` to the boxes still without an ID, best pair first."""
        candidates: list[tuple[float, int, int]] = []  # (score, track index, box index); higher is better
        for ti, track in enumerate(tracks):
            guess = track.predicted(time_s)
            for bi, box in enumerate(boxes):
                if ids[bi] is not None or not _similar_size(track.box, box):
                    continue
                iou = max(guess.iou(box), track.box.iou(box))
                if iou >= self.min_iou:
                    candidates.append((1.0 + iou, ti, bi))  # any overlap match beats any distance match
                    continue
                shift = min(_shift(guess, box), _shift(track.box, box))
                if shift <= self.max_shift and _similar_size(track.box, box, SHIFT_SIZE_RATIO):
                    candidates.append((1.0 - shift / self.max_shift, ti, bi))
        candidates.sort(key=lambda c: -c[0])
        pairs: list[tuple[_Track, int]] = []
        used_tracks: set[int] = set()
        used_boxes: set[int] = set()
        for _, ti, bi in candidates:
            if ti not in used_tracks and bi not in used_boxes:
                used_tracks.add(ti)
                used_boxes.add(bi)
                pairs.append((tracks[ti], bi))
        return pairs

    @property
    def tracks_started(self) -> int:
        """How many track IDs have been handed out."""
        return self._next_id - 1

"""The IoU tracker: stable IDs for faces that move, new IDs for faces that leave or jump."""

from __future__ import annotations

from fer_batch.analysis.tracking import IouTracker
from fer_batch.records import Box


def run(tracker: IouTracker, frames: list[list[Box]], step_s: float = 0.2) -> list[list[int]]:
    return [tracker.update(boxes, i * step_s) for i, boxes in enumerate(frames)]


def test_a_jittering_face_keeps_its_id() -> None:
    frames = [[Box(100 + (i % 3) * 2, 50 - (i % 2) * 3, 60 + i % 4, 60)] for i in range(20)]
    assert run(IouTracker(), frames) == [[1]] * 20


def test_two_faces_passing_each_other_keep_their_ids() -> None:
    # Face A walks right above face B, which walks left; boxes are listed in varying order.
    frames = []
    for i in range(15):
        a, b = Box(10 + 20 * i, 40, 60, 60), Box(310 - 20 * i, 120, 60, 60)
        frames.append([a, b] if i % 2 else [b, a])
    ids = run(IouTracker(), frames)
    a_ids = {ids[i][1] if i % 2 == 0 else ids[i][0] for i in range(15)}
    b_ids = {ids[i][0] if i % 2 == 0 else ids[i][1] for i in range(15)}
    assert len(a_ids) == 1 and len(b_ids) == 1 and a_ids != b_ids


def test_a_fast_face_is_followed_beyond_its_own_width() -> None:
    # 90 px per sampled frame for a 60 px face: no overlap between frames, same size, same direction.
    frames = [[Box(10 + 90 * i, 100, 60, 60)] for i in range(6)]
    assert run(IouTracker(), frames) == [[1]] * 6


def test_a_face_hidden_briefly_keeps_its_id_and_one_gone_long_gets_a_new_one() -> None:
    tracker = IouTracker(max_gap_s=1.0)
    box = Box(100, 100, 50, 50)
    assert tracker.update([box], 0.0) == [1]
    assert tracker.update([], 0.2) == []
    assert tracker.update([box], 0.8) == [1]  # gone for 0.8 s: same person
    assert tracker.update([], 1.0) == []
    assert tracker.update([box], 2.5) == [2]  # gone for 1.7 s: a new track (documented)


def test_gap_allowance_grows_with_sparse_sampling() -> None:
    # One frame every 2 s (--fps 0.5): a single missed frame must not end the track.
    tracker = IouTracker(max_gap_s=1.0)
    box = Box(100, 100, 50, 50)
    ids = [tracker.update([box] if t != 4 else [], float(t)) for t in range(0, 12, 2)]
    assert ids == [[1], [1], [], [1], [1], [1]]


def test_a_box_of_a_very_different_size_is_another_face() -> None:
    tracker = IouTracker()
    assert tracker.update([Box(100, 100, 40, 40)], 0.0) == [1]
    assert tracker.update([Box(90, 90, 90, 90)], 0.2) == [2]  # overlaps, but over 1.5 times the side


def test_a_stale_track_cannot_take_the_face_of_one_just_seen() -> None:
    # Face 1 is hidden behind face 2, which walks left onto the place where face 1 was last seen. The
    # detection overlaps face 1's old box more than face 2's predicted box, but face 2 was seen in the
    # previous frame, so it is matched first (matching cascade).
    tracker = IouTracker()
    assert tracker.update([Box(108, 98, 50, 64), Box(160, 95, 55, 70)], 0.0) == [1, 2]
    assert tracker.update([Box(140, 95, 55, 70)], 0.2) == [2]
    assert tracker.update([Box(112, 98, 52, 66)], 0.4) == [2]


def test_reset_starts_new_ids_and_ids_are_per_tracker() -> None:
    tracker = IouTracker()
    box = Box(10, 10, 50, 50)
    assert tracker.update([box], 0.0) == [1]
    tracker.reset()
    assert tracker.update([box], 0.2) == [2]
    assert tracker.tracks_started == 2
    assert IouTracker().update([box], 0.0) == [1]


def test_new_faces_in_one_frame_get_distinct_ids() -> None:
    boxes = [Box(10 + 70 * i, 10, 50, 50) for i in range(4)]
    assert IouTracker().update(boxes, 0.0) == [1, 2, 3, 4]

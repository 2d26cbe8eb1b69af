"""Video decoding, sampling, bad inputs and the video pipeline, on videos written in the test.

Container features that OpenCV's writer cannot produce (rotation metadata, a
variable frame rate, the index at the front of the file) are made by editing
the MP4 boxes of a written file, so every case runs without FFmpeg tools.
"""

from __future__ import annotations

import csv
import json
import os
import re
import struct
import subprocess
import sys
import wave
from collections.abc import Callable, Sequence
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_batch.analysis.video import VideoAnalyzer, chunk_size_for, frame_signature, is_scene_cut
from fer_batch.errors import InputError, UsageError
from fer_batch.inputs.video import DEFAULT_FPS, Sampler, Sampling, VideoReader
from fer_batch.records import Box, Detection, FrameResult, Status

from .conftest import SHARED, build_tiny_model, fer_batch_command, interrupt_when

SHARED_VIDEO = SHARED / "media" / "video"
SIZE = (160, 120)  # width, height of the synthetic videos

# -- synthetic videos ---------------------------------------------------------------------------------


def write_video(path: Path, frames: int, fps: float = 10.0, draw: Callable[[np.ndarray, int], None] | None = None,
                size: tuple[int, int] = SIZE) -> Path:
    """An MPEG-4 video of ``frames`` dark frames, ``draw(image, index)`` adding shapes to each."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for i in range(frames):
        image = np.full((size[1], size[0], 3), 30, np.uint8)
        if draw:
            draw(image, i)
        writer.write(image)
    writer.release()
    return path


def moving_squares(image: np.ndarray, i: int) -> None:
    """Two bright squares: one moves right along the top, one left along the bottom."""
    cv2.rectangle(image, (5 + 3 * i, 10), (35 + 3 * i, 40), (255, 255, 255), -1)
    cv2.rectangle(image, (125 - 3 * i, 70), (155 - 3 * i, 100), (255, 255, 255), -1)


_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts"}


def _top_boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    boxes, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        boxes.append((kind, data[pos : pos + size]))
        pos += size
    return boxes


def patch_box(data: bytes, path: Sequence[bytes], edit: Callable[[bytes], bytes]) -> bytes:
    """Replace the payload of the box at ``path`` (e.g. moov/trak/tkhd), fixing the sizes of its parents."""
    out = b""
    for kind, box in _top_boxes(data):
        if kind == path[0]:
            payload = edit(box[8:]) if len(path) == 1 else patch_box(box[8:], path[1:], edit)
            box = struct.pack(">I4s", 8 + len(payload), kind) + payload
        out += box
    return out


def rotate_90(data: bytes) -> bytes:
    """Set the track's display matrix to a 90° rotation, as a phone filming upright does."""
    def edit(tkhd: bytes) -> bytes:
        version = tkhd[0]
        at = 4 + (12 if version == 0 else 24) + 4 + (4 if version == 0 else 8) + 8 + 8
        matrix = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
        return tkhd[:at] + matrix + tkhd[at + 36 :]
    return patch_box(data, [b"moov", b"trak", b"tkhd"], edit)


def variable_rate(data: bytes, runs: Sequence[tuple[int, int]]) -> bytes:
    """Replace the time-to-sample table: ``runs`` of (frame count, duration in time-base units)."""
    def edit(stts: bytes) -> bytes:
        return stts[:4] + struct.pack(">I", len(runs)) + b"".join(struct.pack(">II", n, d) for n, d in runs)
    return patch_box(data, [b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stts"], edit)


def index_first(data: bytes) -> bytes:
    """Move the moov box before mdat (like ``-movflags faststart``), so a truncated file still opens."""
    boxes = _top_boxes(data)
    moov = next(box for kind, box in boxes if kind == b"moov")

    def shift(stco: bytes) -> bytes:
        count = struct.unpack(">I", stco[4:8])[0]
        offsets = struct.unpack(f">{count}I", stco[8 : 8 + 4 * count])
        return stco[:8] + struct.pack(f">{count}I", *(o + len(moov) for o in offsets))

    moov = patch_box(moov, [b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stco"], shift)
    out = b""
    for kind, box in boxes:
        if kind == b"mdat":
            out += moov
        if kind != b"moov":
            out += box
    return out


# -- test doubles -------------------------------------------------------------------------------------


class BlobDetector:
    """Finds bright rectangles: deterministic 'faces' for synthetic videos."""

    name = "blobs"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        self.calls.append(len(images))
        out = []
        for image in images:
            mask = (cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) > 150).astype(np.uint8)
            n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
            boxes = [Box(int(x), int(y), int(w), int(h)) for x, y, w, h, area in stats[1:n] if area >= 100]
            out.append([Detection(b, 0.99) for b in sorted(boxes, key=lambda b: -b.area)])
        return out


@pytest.fixture(scope="module")
def classifier():
    """A tiny untrained classifier (7 classes, 48x48 grayscale) built in memory."""
    from fer_batch.analysis.classify import EmotionClassifier
    from fer_batch.model_file import EMOTIONS, ModelInfo

    return EmotionClassifier.from_keras(build_tiny_model(), ModelInfo(class_names=EMOTIONS, input_size=(48, 48)))


@pytest.fixture(scope="module")
def model_file(classifier, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fer_batch.model_file import save_model

    path = tmp_path_factory.mktemp("video-model") / "tiny.keras"
    return save_model(classifier.keras_model, path, classifier.info)


def video_analyzer(classifier, sampling: Sampling | None = None, detector=None, **kw) -> VideoAnalyzer:
    from fer_batch.analysis.pipeline import Analyzer

    return VideoAnalyzer(Analyzer(classifier, detector or BlobDetector()), sampling, **kw)


# -- sampling -----------------------------------------------------------------------------------------


def test_sampling_options() -> None:
    assert Sampling.from_options() == Sampling(fps=DEFAULT_FPS, every=1)
    assert Sampling.from_options(every=1) == Sampling(fps=None, every=1)  # --every 1 lifts the rate limit
    assert Sampling.from_options(fps=2) == Sampling(fps=2, every=1)
    assert Sampling.from_options(fps=2, every=3) == Sampling(fps=2, every=3)
    for bad in ({"fps": 0}, {"fps": -1}, {"fps": float("nan")}, {"every": 0}):
        with pytest.raises(UsageError):
            Sampling(**bad)


def test_rate_limit_keeps_at_most_fps_frames_per_second_evenly() -> None:
    sampler = Sampler(Sampling(fps=5))
    times = [i / 29.97 for i in range(300)]  # 10 s of NTSC video
    kept = [t for i, t in enumerate(times) if sampler.take(i, t)]
    assert len(kept) == 50
    gaps = np.diff(kept)
    assert gaps.min() > 0.19 and gaps.max() < 0.21
    sampler = Sampler(Sampling(fps=None, every=4))
    assert [i for i in range(12) if sampler.take(i, i / 10)] == [0, 4, 8]


# -- decoding -----------------------------------------------------------------------------------------


def test_frames_stream_with_decoder_timestamps(tmp_path: Path) -> None:
    path = write_video(tmp_path / "v.mp4", 30, fps=10, draw=moving_squares)
    with VideoReader(path) as reader:
        assert (reader.info.width, reader.info.height) == SIZE
        frames = list(reader.frames())
    assert [f.index for f in frames] == list(range(30))
    assert [round(f.time_s, 3) for f in frames] == [round(i / 10, 3) for i in range(30)]
    assert frames[0].image.shape == (SIZE[1], SIZE[0], 3)


def test_variable_frame_rate_times_come_from_the_decoder(tmp_path: Path) -> None:
    path = write_video(tmp_path / "cfr.mp4", 30, fps=10)
    # OpenCV writes a 10240 Hz time base: 10 frames of 50 ms, 10 of 200 ms, 10 of 50 ms (3.0 s in all).
    vfr = tmp_path / "vfr.mp4"
    vfr.write_bytes(variable_rate(path.read_bytes(), [(10, 512), (10, 2048), (10, 512)]))
    with VideoReader(vfr) as reader:
        times = [f.time_s for f in reader.frames()]
    expected = [0.05 * i for i in range(10)] + [0.5 + 0.2 * i for i in range(10)] + [2.5 + 0.05 * i for i in range(10)]
    assert np.allclose(times, expected, atol=0.002)  # index / nominal fps would be wrong after frame 10
    with VideoReader(vfr) as reader:
        sampled = [f.time_s for f in reader.frames(Sampling(fps=2))]
    assert np.allclose(sampled, [0.0, 0.5, 1.1, 1.5, 2.1, 2.5], atol=0.002)  # by time, not by frame count


def test_rotation_metadata_is_applied(tmp_path: Path) -> None:
    def corner(image: np.ndarray, i: int) -> None:
        image[:24, :24] = 255  # a marker in the top-left corner

    path = write_video(tmp_path / "landscape.mp4", 5, draw=corner)
    phone = tmp_path / "phone.mp4"
    phone.write_bytes(rotate_90(path.read_bytes()))
    with VideoReader(phone) as reader:
        assert reader.info.rotation == 90
        image = next(reader.frames()).image
    assert image.shape[:2] == (SIZE[0], SIZE[1])  # upright: width and height swapped
    gray = image[..., 0]
    assert gray[:10, -10:].mean() > 200 and gray[:10, :10].mean() < 60  # turned clockwise: now top-right


def test_damaged_frames_are_skipped_and_counted(tmp_path: Path) -> None:
    path = write_video(tmp_path / "v.mp4", 40, draw=moving_squares)
    data = bytearray(path.read_bytes())
    start = data.find(b"mdat") + len(data) // 3
    data[start : start + 400] = bytes((b * 7 + 13) % 256 for b in data[start : start + 400])
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    with VideoReader(damaged) as reader:
        frames = list(reader.frames())
        assert reader.failed_frames > 0
        assert reader.decoded_frames == len(frames)
    assert reader.decoded_frames + reader.failed_frames == 40  # the frames after the damage are decoded
    indices = [f.index for f in frames]
    assert indices == sorted(indices) and indices[-1] == 39  # indices keep their place in the stream
    assert all(b.time_s > a.time_s for a, b in pairwise(frames))


def _bad_inputs(tmp_path: Path) -> dict[str, Path]:
    good = write_video(tmp_path / "good.mp4", 20, draw=moving_squares)
    bad = {"missing": tmp_path / "missing.mp4"}
    bad["empty"] = tmp_path / "empty.mp4"
    bad["empty"].write_bytes(b"")
    bad["text"] = tmp_path / "notes.mp4"
    bad["text"].write_text("not a video\n" * 50)
    bad["image"] = tmp_path / "photo.mp4"
    bad["image"].write_bytes(cv2.imencode(".jpg", np.zeros((40, 40, 3), np.uint8))[1].tobytes())
    bad["audio"] = tmp_path / "sound.wav"
    with wave.open(str(bad["audio"]), "wb") as sound:  # a file with no video stream
        sound.setnchannels(1)
        sound.setsampwidth(2)
        sound.setframerate(8000)
        sound.writeframes(b"\0\0" * 8000)
    bad["no_frames"] = tmp_path / "no_frames.mp4"
    cv2.VideoWriter(str(bad["no_frames"]), cv2.VideoWriter_fourcc(*"mp4v"), 10, SIZE).release()
    bad["cut"] = tmp_path / "cut.mp4"  # index at the end: the cut loses it
    bad["cut"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return bad


def test_bad_files_raise_a_one_line_reason(tmp_path: Path) -> None:
    reasons = {}
    for name, path in _bad_inputs(tmp_path).items():
        with pytest.raises(InputError) as info, VideoReader(path) as reader:
            list(reader.frames())
            if reader.decoded_frames == 0:
                raise InputError("no frames")
        reasons[name] = str(info.value)
    assert "no such file" in reasons["missing"]
    assert "zero-length" in reasons["empty"]
    assert "JPEG image, not a video" in reasons["image"]
    for name in ("text", "audio", "cut"):
        assert "cannot open as a video" in reasons[name]
    assert all("\n" not in r for r in reasons.values())


# -- the pipeline -------------------------------------------------------------------------------------


def test_every_input_gets_rows_and_bad_ones_an_error_row(classifier, tmp_path: Path) -> None:
    bad = _bad_inputs(tmp_path)
    good = tmp_path / "good.mp4"
    truncated = tmp_path / "truncated.mp4"  # index first, data cut: the first part still decodes
    full = index_first(write_video(tmp_path / "long.mp4", 60, draw=moving_squares).read_bytes())
    truncated.write_bytes(full[: int(len(full) * 0.4)])
    inputs = [bad["missing"], good, bad["empty"], bad["text"], bad["image"], bad["audio"], bad["no_frames"],
              bad["cut"], truncated, good]
    results = list(video_analyzer(classifier, Sampling(fps=5)).analyze_paths(inputs))
    by_source: dict[str, list[FrameResult]] = {}
    for r in results:
        by_source.setdefault(Path(r.source).name, []).append(r)
    assert list(by_source) == [p.name for p in dict.fromkeys(inputs)]  # input order, every input present
    for name in ("missing.mp4", "empty.mp4", "notes.mp4", "photo.mp4", "sound.wav", "no_frames.mp4", "cut.mp4"):
        rows = by_source[name]
        assert [r.status for r in rows] == [Status.ERROR] and rows[0].error, name
    good_rows = by_source["good.mp4"]
    assert len(good_rows) == 2 * 10  # good.mp4 twice: 2 s at 10 fps sampled at 5 fps each time
    assert all(r.status is Status.OK and len(r.faces) == 2 for r in good_rows)
    partial = by_source["truncated.mp4"]
    assert partial[-1].status is Status.ERROR and "truncated" in (partial[-1].error or "")
    assert len(partial) > 3 and all(r.status is Status.OK for r in partial[:-1])


def test_tracks_follow_moving_faces_and_a_returning_face_gets_a_new_id(classifier, tmp_path: Path) -> None:
    def scene(image: np.ndarray, i: int) -> None:
        moving_squares(image, i)  # two faces crossing the frame in opposite directions
        if i < 10 or i >= 40:  # a third face leaves at 1.0 s and comes back at 4.0 s (gap > 1.5 s)
            cv2.rectangle(image, (65, 48), (88, 66), (255, 255, 255), -1)

    path = write_video(tmp_path / "faces.mp4", 50, fps=10, draw=lambda img, i: scene(img, i % 50))
    results = list(video_analyzer(classifier, Sampling(fps=5)).analyze_video(path))
    assert len(results) == 25 and [r.frame for r in results] == list(range(0, 50, 2))
    top = {f.track for r in results for f in r.faces if f.box.y < 30}
    bottom = {f.track for r in results for f in r.faces if f.box.y > 60}
    middle_before = {f.track for r in results[:5] for f in r.faces if 30 <= f.box.y <= 60}
    middle_after = {f.track for r in results[20:] for f in r.faces if 30 <= f.box.y <= 60}
    assert len(top) == 1 and len(bottom) == 1 and top != bottom  # one stable ID per moving face
    assert len(middle_before) == 1 and len(middle_after) == 1 and middle_before != middle_after


def test_no_face_frames_get_one_row_each_and_detection_is_batched(classifier, tmp_path: Path) -> None:
    path = write_video(tmp_path / "blank.mp4", 100, fps=25)
    detector = BlobDetector()
    results = list(video_analyzer(classifier, Sampling(fps=None, every=1), detector,
                                  chunk_size=16).analyze_video(path))
    assert [r.status for r in results] == [Status.NO_FACE] * 100
    assert all(b.time_s > a.time_s for a, b in pairwise(results))
    assert results[0].extra["duration_s"] == pytest.approx(4.0)
    assert detector.calls == [16] * 6 + [4]  # frames gathered across the video, one batch per chunk
    assert chunk_size_for(640, 360) == 16 and chunk_size_for(1920, 1080) == 8 and chunk_size_for(3840, 2160) == 2


def test_the_last_frames_go_in_power_of_two_batches(classifier, tmp_path: Path) -> None:
    path = write_video(tmp_path / "odd.mp4", 16 + 13)
    detector = BlobDetector()
    list(video_analyzer(classifier, Sampling(fps=None), detector, chunk_size=16).analyze_video(path))
    assert detector.calls == [16, 8, 4, 1]  # few batch shapes: TensorFlow prepares each shape once


def test_scene_cut_ends_tracks(classifier, tmp_path: Path) -> None:
    def two_shots(image: np.ndarray, i: int) -> None:
        if i >= 10:
            image[:] = (40, 90, 200)  # a different shot: new colours, a face in the same place
        cv2.rectangle(image, (60, 40), (100, 80), (255, 255, 255), -1)

    path = write_video(tmp_path / "cut.mp4", 20, draw=two_shots)
    results = list(video_analyzer(classifier, Sampling(fps=None)).analyze_video(path))
    ids = [r.faces[0].track for r in results]
    assert ids == [1] * 10 + [2] * 10
    still = list(video_analyzer(classifier, Sampling(fps=None), scene_cuts=False).analyze_video(path))
    assert {r.faces[0].track for r in still} == {1}
    a, b = np.zeros((90, 160, 3), np.uint8), np.full((90, 160, 3), (40, 90, 200), np.uint8)
    assert is_scene_cut(frame_signature(a), frame_signature(b)) and not is_scene_cut(None, frame_signature(a))


def test_annotated_copy_has_boxes_labels_size_and_rate(classifier, tmp_path: Path) -> None:
    """The copy is drawn on the frames as they pass through the run: the video is decoded once."""
    from fer_batch.engines.run import run
    from fer_batch.outputs.annotate import AnnotateSink

    path = write_video(tmp_path / "v.mp4", 30, fps=10, draw=moving_squares)
    analyzer = video_analyzer(classifier, Sampling(fps=2))
    out = tmp_path / "out" / "annotated.mp4"
    summary = run(analyzer.source([path], all_frames=True), analyzer,
                  [AnnotateSink(out, analyzer.class_names, sources=[str(path)])])
    assert summary.exit_code == 0 and summary.records == 6  # 3 s analysed at 2 frames per second
    cap = cv2.VideoCapture(str(out))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(10)
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    assert len(frames) == 30 and frames[0].shape == (SIZE[1], SIZE[0], 3)
    with VideoReader(path) as reader:
        source = [f.image for f in reader.frames()]
    # Boxes and labels change many pixels a lot; re-encoding alone does not. Frames 1-4 are not analysed:
    # frame 0's boxes stay drawn until frame 5.
    changed = [int((np.abs(a.astype(int) - b.astype(int)).max(axis=2) > 60).sum()) for a, b in zip(frames, source)]
    assert min(changed[:10]) > 150, changed[:10]
    assert not list((tmp_path / "out").glob("*.partial*"))


def test_annotating_passes_every_frame_but_analyses_only_the_sampled_ones(classifier, tmp_path: Path) -> None:
    from fer_batch.inputs.frames import Analysed, Frame

    path = write_video(tmp_path / "v.mp4", 20, fps=10, draw=moving_squares)
    analyzer = video_analyzer(classifier, Sampling(fps=2))
    outcomes = list(analyzer.analyze_frames(analyzer.source([path], all_frames=True)))
    analysed = [o.frame.index for o in outcomes if isinstance(o, Analysed) and o.frame is not None]
    passed = [o.index for o in outcomes if isinstance(o, Frame)]
    assert analysed == [0, 5, 10, 15] and sorted(analysed + passed) == list(range(20))
    indexes = [o.frame.index if isinstance(o, Analysed) else o.index for o in outcomes[:-1]]
    assert indexes == list(range(20))  # in stream order, the source's end last


# -- per-video outputs ---------------------------------------------------------------------------------


def test_output_names_never_collide(tmp_path: Path) -> None:
    from fer_batch.outputs.annotate import AnnotateSink
    from fer_batch.outputs.sinks import ChartSink, PerVideoPaths, TrackSummarySink, default_plot_path, video_names

    assert video_names(["a/x.mp4", "b/y.mov"]) == {"a/x.mp4": "x", "b/y.mov": "y"}
    clash = video_names(["a/x.mp4", "b/x.mp4"])
    assert len(set(clash.values())) == 2
    assert PerVideoPaths(Path("res.png"), ["clips/x.mp4"], ".png")("clips/x.mp4") == Path("res.png")
    assert PerVideoPaths(Path("ann.mp4"), ["clips/x.mp4"])("clips/x.mp4") == Path("ann.mp4")
    assert PerVideoPaths(Path("charts"), ["a/x.mp4", "b/y.mp4"], ".png")("a/x.mp4") == Path("charts/x.emotions.png")
    assert PerVideoPaths(Path("ann.mp4"), ["a/x.mp4", "b/y.mp4"])("b/y.mp4") == Path("ann.y.mp4")
    assert PerVideoPaths(Path("ann.mp4"), None)("b/y.mp4") == Path("ann.b_y.mp4")  # stdin: names unknown ahead
    assert default_plot_path("out/results.csv") == Path("out/results.png")
    with pytest.raises(UsageError):
        AnnotateSink(Path("ann.avi.txt"), ("happy",))
    with pytest.raises(UsageError):
        TrackSummarySink(Path("summary.txt"), ("happy",))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(UsageError):
        ChartSink(tmp_path / "file.txt", ("happy",))


# -- the command line ---------------------------------------------------------------------------------


def fer_batch(*args: object, stdin: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*fer_batch_command(), *map(str, args)], input=stdin, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_cli_video_rows_errors_charts_summary_and_annotation(model_file: Path, tmp_path: Path) -> None:
    good = write_video(tmp_path / "clip.mp4", 30, fps=10, draw=moving_squares)
    image = tmp_path / "photo.jpg"
    cv2.imwrite(str(image), np.zeros((40, 40, 3), np.uint8))
    out = tmp_path / "res" / "results.csv"
    proc = fer_batch("video", good, image, tmp_path / "missing.mp4", "--model", model_file, "--detector", "haar",
                     "--out", out, "--plot", "--summary", tmp_path / "res" / "tracks.json",
                     "--annotate", tmp_path / "res" / "annotated.mp4", "--smooth", "0.5")
    assert proc.returncode == 1, proc.stderr  # two inputs failed
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0])[:5] == ["source", "frame", "time_s", "track", "face"]
    clip_rows = [r for r in rows if r["source"].endswith("clip.mp4")]
    assert len(clip_rows) == 15 and {r["status"] for r in clip_rows} == {"no_face"}  # 3 s at 5 frames/s
    times = [float(r["time_s"]) for r in clip_rows]
    assert times == sorted(times) and times[1] == pytest.approx(0.2)
    errors = {Path(r["source"]).name: r["error"] for r in rows if r["status"] == "error"}
    assert set(errors) == {"photo.jpg", "missing.mp4"} and "image, not a video" in errors["photo.jpg"]
    # Per-video outputs: chart and copy for the clip only (names from --out and --annotate).
    assert (tmp_path / "res" / "results.clip.png").stat().st_size > 10_000
    assert (tmp_path / "res" / "annotated.clip.mp4").stat().st_size > 1_000
    assert json.loads((tmp_path / "res" / "tracks.json").read_text()) == []  # haar finds no face in squares
    assert "photo.jpg: this is a JPEG image" in proc.stderr
    assert "no face tracks" in proc.stderr  # --summary: its short table on stderr
    # The unreadable inputs are counted as error rows, not as frames; a run without any face says what may help.
    assert "3 input(s), 15 frame(s) analysed: 0 with faces (0 faces), 15 without a face; 2 error row(s)" in proc.stderr
    assert "no face found in any analysed frame: faces smaller than --min-face-size (20 px)" in proc.stderr


def test_cli_paths_on_stdin_to_jsonl(model_file: Path, tmp_path: Path) -> None:
    clip = write_video(tmp_path / "clip.mp4", 10, fps=10, draw=moving_squares)
    proc = fer_batch("video", "-", "--model", model_file, "--detector", "haar", "--every", "1", "--format",
                     "jsonl", "--quiet", stdin=f"{clip}\n")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["frame"] for r in records] == list(range(10))  # --every 1: every frame
    assert proc.stderr == ""  # --quiet: no table, no info


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_cli_progress_bar_reaches_100_percent(model_file: Path, tmp_path: Path) -> None:
    """On a terminal the bar advances by seconds of video; the last sampled frame is 0.2 s before the end."""
    import fcntl
    import termios

    clip = write_video(tmp_path / "clip.mp4", 46, fps=10, draw=moving_squares)  # 4.6 s, sampled 0.0 ... 4.4 s
    terminal, child_side = os.openpty()  # stderr a terminal: the bar is shown
    fcntl.ioctl(child_side, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns; 0 draws no bar
    proc = subprocess.Popen([*fer_batch_command(), "video", clip, "--model", model_file, "--detector", "haar",
                             "--out", tmp_path / "rows.csv"], stdout=subprocess.DEVNULL, stderr=child_side)
    os.close(child_side)
    shown = b""
    while True:
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # EIO: the process has closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(terminal)
    assert proc.wait(timeout=120) == 0
    text = shown.decode(errors="replace")
    assert re.findall(r"(\d+)%\|", text)[-1] == "100", text
    assert "dominant" not in text and "no face tracks" not in text  # no --summary: no summary table


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT")
def test_cli_ctrl_c_leaves_valid_output(model_file: Path, tmp_path: Path) -> None:
    long = write_video(tmp_path / "long.mp4", 4000, fps=25, draw=lambda img, i: moving_squares(img, i % 40),
                       size=(320, 240))
    out = tmp_path / "partial.csv"
    code, stderr = interrupt_when(["video", str(long), "--model", str(model_file), "--detector", "haar",
                                   "--every", "1", "--out", str(out), "--plot", "--summary", str(tmp_path / "s.csv")],
                                  lambda: out.exists() and out.read_text().count("\n") >= 20)
    assert code == 130, stderr
    rows = list(csv.DictReader(out.open()))
    assert 19 <= len(rows) < 4000 and rows[-1]["status"] == "no_face"  # complete rows up to the interruption
    assert (tmp_path / "partial.png").exists() and (tmp_path / "s.csv").exists()


# -- end to end on real clips (../shared) -------------------------------------------------------------


def _shared_clip(name: str) -> Path:
    path = SHARED_VIDEO / name
    if not path.exists():
        pytest.skip(f"needs {path} (the project's shared media beside the repo); absent here")
    return path


@pytest.fixture(scope="module")
def mtcnn_videos(classifier) -> VideoAnalyzer:
    from fer_batch.analysis.pipeline import Analyzer

    _shared_clip("fer_test.mp4")
    return VideoAnalyzer(Analyzer(classifier, "mtcnn"), Sampling(fps=2))


@pytest.mark.parametrize("name", ["fer_test.mp4", "fr_short_hamilton_clip.mp4", "facenet_video.mp4"])
def test_real_clip_rows_times_and_chart(mtcnn_videos: VideoAnalyzer, name: str, tmp_path: Path) -> None:
    from fer_batch.engines.run import run
    from fer_batch.outputs.sinks import ChartSink, Sink, TrackSummarySink

    class Records(Sink):
        def __init__(self) -> None:
            self.results: list[FrameResult] = []

        def receive(self, result: FrameResult, frame: object) -> None:
            self.results.append(result)

    clip = _shared_clip(name)
    names = mtcnn_videos.class_names
    records, tracks = Records(), TrackSummarySink(tmp_path / "tracks.csv", names)
    run(mtcnn_videos.source([clip]), mtcnn_videos, [records, ChartSink(tmp_path / "chart.png", names,
                                                                       sources=[str(clip)]), tracks])
    results = records.results
    assert results and all(r.status is not Status.ERROR for r in results)
    times = [r.time_s for r in results]
    assert times[0] == 0.0 and all(b > a for a, b in pairwise(times))
    assert all(0.45 < b - a < 0.55 for a, b in pairwise(times))  # 2 frames per second of video
    assert sum(r.status is Status.OK for r in results) >= 0.6 * len(results)
    assert (tmp_path / "chart.png").stat().st_size > 20_000
    assert tracks.summaries and tracks.summaries[0].frames >= 5
    if name == "fer_test.mp4":  # one person in one shot: one track in every frame with a face
        ids = [f.track for r in results for f in r.faces]
        assert len(set(ids)) == 1, ids
    if name == "fr_short_hamilton_clip.mp4":  # the singer's close shot, 2.8-7 s, is one track
        singer = {r.faces[0].track for r in results if 3.0 <= (r.time_s or 0) <= 6.9 and r.faces}
        assert len(singer) == 1, singer


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGKILL")
def test_cli_a_killed_video_run_resumes_with_the_same_rows_and_summary(tmp_path: Path) -> None:
    from .conftest import SAMPLE_MEDIA, flat_record, kill_when, same_rows

    face = cv2.resize(cv2.imread(str(SAMPLE_MEDIA / "grace_hopper.jpg")), (320, 240))

    def portrait(image: np.ndarray, i: int) -> None:
        image[:] = np.roll(face, (i % 20) - 10, axis=1)  # a real face, moving a little: one track per video

    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("a", "b", "c"):
        write_video(clips / f"{name}.mp4", 100, fps=25, draw=portrait, size=(320, 240))
    args = ["video", str(clips), "--model", "fast", "--every", "2", "--quiet"]  # int8: no TensorFlow start-up
    full, out = tmp_path / "full.jsonl", tmp_path / "stopped.jsonl"
    assert fer_batch(*args, "--out", full, "--summary", tmp_path / "full.csv").returncode == 0
    kill_when([*args, "--out", str(out), "--summary", str(tmp_path / "stopped.csv")],
              lambda: out.exists() and "b.mp4" in out.read_text())
    assert "c.mp4" not in out.read_text()
    proc = fer_batch(*args, "--out", out, "--summary", tmp_path / "stopped.csv", "--resume")
    assert proc.returncode == 0, proc.stderr

    def rows(path: Path) -> list[dict[str, str]]:
        return [{k: str(v) for k, v in flat_record(json.loads(line)).items()} for line in path.open()]
    assert same_rows(rows(out), rows(full)) and len(rows(full)) == 3 * 50
    assert sum("faces.0.track" in row for row in rows(full)) > 130  # the face is found and tracked
    # The summary covers every video, also the one finished before the run was killed.
    summary = list(csv.DictReader((tmp_path / "full.csv").open()))
    assert len(summary) >= 3 and same_rows(list(csv.DictReader((tmp_path / "stopped.csv").open())), summary)


def test_a_stopped_run_resumes_through_the_python_api_with_the_same_rows_and_summary(tmp_path: Path) -> None:
    """resume_run prepares what --resume does, for run(): the output cut and continued, the videos it holds
    skipped, and the summary given their rows, so it covers every video."""
    from fer_batch.analysis.pipeline import Analyzer
    from fer_batch.engines.run import run
    from fer_batch.outputs.resume import resume_run
    from fer_batch.outputs.sinks import RecordSink, TrackSummarySink

    from .conftest import SAMPLE_MEDIA, same_rows

    face = cv2.resize(cv2.imread(str(SAMPLE_MEDIA / "grace_hopper.jpg")), (320, 240))

    def portrait(image: np.ndarray, i: int) -> None:
        image[:] = np.roll(face, i - 5, axis=1)  # a real face, moving a little: one track per video

    for name in ("a", "b", "c"):
        write_video(tmp_path / f"{name}.mp4", 12, fps=25, draw=portrait, size=(320, 240))
    clips = [tmp_path / f"{name}.mp4" for name in ("a", "b", "c")]
    videos = VideoAnalyzer(Analyzer("fast", workers=1), Sampling(fps=None, every=2))  # int8: no TensorFlow
    names = videos.class_names

    def job(out: Path, summary: TrackSummarySink, resume: bool = False) -> None:
        source = videos.source(clips)
        append = resume_run(out, "csv", names, source, [summary], video=True).append if resume else False
        assert run(source, videos, [RecordSink.to_path(out, names, video=True, append=append), summary]).exit_code == 0

    full, stopped = tmp_path / "full.csv", tmp_path / "stopped.csv"
    job(full, TrackSummarySink(tmp_path / "full-tracks.csv", names))
    lines = full.read_bytes().splitlines(keepends=True)
    first_b = next(i for i, line in enumerate(lines) if line.startswith(str(clips[1]).encode()))
    stopped.write_bytes(b"".join(lines[:first_b + 2]) + lines[first_b + 2][:9])  # killed in b, mid-row
    job(stopped, TrackSummarySink(tmp_path / "stopped-tracks.csv", names), resume=True)

    def rows(path: Path) -> list[dict[str, str]]:
        return list(csv.DictReader(path.open()))
    assert same_rows(rows(stopped), rows(full)) and len(rows(full)) >= 3 * 6
    summary = rows(tmp_path / "full-tracks.csv")
    assert {row["source"] for row in summary} == {str(c) for c in clips}  # a face tracked in every video
    assert same_rows(rows(tmp_path / "stopped-tracks.csv"), summary)  # also a.mp4's, from the rows kept

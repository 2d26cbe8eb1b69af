"""The run loop: every outcome reaches every sink, every sink is closed however the run ends, one exit code."""

from __future__ import annotations

import io
import json
import os
import queue
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from fer_batch.engines.run import RunSummary, run
from fer_batch.errors import ExitCode
from fer_batch.inputs.frames import Frame, FrameError, FrameSource, Idle, SourceEnd
from fer_batch.outputs.sinks import RecordSink, Sink
from fer_batch.outputs.writers import get_writer
from fer_batch.records import Box, Detection, FrameResult, Status

from .conftest import SAMPLE_MEDIA


class Recorder(Sink):
    """Keeps what it is given; raises ``fail`` on the ``at``-th record."""

    def __init__(self, fail: BaseException | None = None, at: int = -1) -> None:
        self.results: list[FrameResult] = []
        self.ends: list[str] = []
        self.closed = 0
        self.fail, self.at = fail, at

    def receive(self, result: FrameResult, frame: Frame | None) -> None:
        if len(self.results) == self.at and self.fail is not None:
            raise self.fail
        self.results.append(result)

    def end_source(self, end: SourceEnd) -> None:
        self.ends.append(end.source)

    def close(self) -> None:
        self.closed += 1


class CentreDetector:
    """One 'face' in the middle of every image."""

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        return [[Detection(Box(i.shape[1] // 4, i.shape[0] // 4, i.shape[1] // 2, i.shape[0] // 2), 0.9)]
                for i in images]


@pytest.fixture(scope="module")
def analyzer(tiny_model_path: Path):  # type: ignore[no-untyped-def]
    from fer_batch.analysis.pipeline import Analyzer

    return Analyzer(tiny_model_path, CentreDetector(), workers=1)


def test_summary_maps_to_one_exit_code() -> None:
    assert RunSummary().exit_code is ExitCode.OK
    errors = RunSummary()
    errors.counts[Status.ERROR] = 1
    assert errors.exit_code is ExitCode.INPUT_ERRORS
    assert RunSummary(output_failures=1).exit_code is ExitCode.INPUT_ERRORS  # a chart that could not be written
    assert RunSummary(interrupted=True, output_failures=1).exit_code is ExitCode.INTERRUPTED
    assert RunSummary(broken_pipe=True, interrupted=True).exit_code is ExitCode.BROKEN_PIPE
    assert "dropped" in RunSummary(dropped_frames=3).describe()


def test_summary_line_counts_inputs_and_says_when_the_run_was_interrupted() -> None:
    one = RunSummary(faces=1, inputs=1)
    one.counts[Status.OK] = 1
    assert one.describe() == "1 input(s): 1 with faces (1 face), 0 without a face, 0 unreadable"
    missing_video = RunSummary(inputs=1)
    missing_video.counts[Status.ERROR] = 1  # its error row is not an analysed frame
    assert missing_video.describe(video=True) == ("1 input(s), 0 frame(s) analysed: 0 with faces (0 faces), "
                                                  "0 without a face; 1 error row(s)")
    assert RunSummary(interrupted=True).describe().startswith("interrupted after 0 input(s): ")


def test_summary_counts_the_inputs_read_without_any_face() -> None:
    """What the hint after a run names: inputs read fine in which no frame had a face (not unreadable ones)."""
    from fer_batch.inputs.frames import Analysed
    from fer_batch.records import FaceResult

    face = FaceResult(0, Box(0, 0, 10, 10), 0.9, "happy", 0.9, {"happy": 0.9})
    events = [Analysed(FrameResult("crowd.mp4", Status.NO_FACE)), Analysed(FrameResult("crowd.mp4", Status.NO_FACE)),
              SourceEnd("crowd.mp4"),
              Analysed(FrameResult("talk.mp4", Status.NO_FACE)), Analysed(FrameResult("talk.mp4", Status.OK, (face,))),
              SourceEnd("talk.mp4"),
              Analysed(FrameResult("missing.mp4", Status.ERROR, error="no such file")), SourceEnd("missing.mp4"),
              *[e for i in range(4) for e in (Analysed(FrameResult(f"{i}.mp4", Status.NO_FACE)), SourceEnd(f"{i}.mp4"))]]
    summary = run(events, None, [])
    assert summary.faceless == 5 and summary.faceless_examples == ["crowd.mp4", "0.mp4", "1.mp4"]


def test_every_input_reaches_every_sink_in_order(analyzer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inputs = [SAMPLE_MEDIA / "grace_hopper.jpg", tmp_path / "missing.jpg", SAMPLE_MEDIA / "chelsea_cat.png"]
    a, b = Recorder(), Recorder()
    summary = run(FrameSource(inputs, workers=2), analyzer, [a, b])
    assert [Path(r.source).name for r in a.results] == ["grace_hopper.jpg", "missing.jpg", "chelsea_cat.png"]
    assert a.results == b.results and a.ends == b.ends == [str(i) for i in inputs]
    assert [r.status for r in a.results] == [Status.OK, Status.ERROR, Status.OK]
    assert summary.inputs == 3 and summary.faces == 2 and summary.exit_code is ExitCode.INPUT_ERRORS
    assert a.closed == b.closed == 1


def test_ctrl_c_closes_every_sink_and_leaves_valid_json(analyzer) -> None:  # type: ignore[no-untyped-def]
    stream = io.StringIO()
    rows = RecordSink(get_writer("json", stream, analyzer.class_names))
    stopper, other = Recorder(KeyboardInterrupt(), at=2), Recorder()
    summary = run(FrameSource([SAMPLE_MEDIA] * 3, workers=2), analyzer, [rows, stopper, other])
    assert summary.interrupted and summary.exit_code is ExitCode.INTERRUPTED
    assert len(json.loads(stream.getvalue())) == 3  # written before the interruption, array closed
    assert stopper.closed == other.closed == 1


def test_other_errors_close_the_sinks_then_propagate(analyzer) -> None:  # type: ignore[no-untyped-def]
    failing, other = Recorder(OSError("disk full"), at=0), Recorder()
    with pytest.raises(OSError, match="disk full"):
        run(FrameSource([SAMPLE_MEDIA]), analyzer, [failing, other])
    assert failing.closed == other.closed == 1


def test_a_sink_that_cannot_write_its_output_fails_the_run(analyzer) -> None:  # type: ignore[no-untyped-def]
    def write_chart() -> Path:
        raise OSError("read-only file system")

    class Broken(Sink):
        def close(self) -> None:
            self._attempt("chart", write_chart)

    summary = run(FrameSource([SAMPLE_MEDIA / "grace_hopper.jpg"]), analyzer, [Broken()])
    assert summary.output_failures == 1 and summary.exit_code is ExitCode.INPUT_ERRORS


def test_inputs_that_cannot_be_opened_need_no_analysis(tmp_path: Path) -> None:
    source = FrameSource([tmp_path / "missing.jpg", tmp_path])
    assert not source.openable
    sink = Recorder()
    summary = run(source, None, [sink])
    assert [r.status for r in sink.results] == [Status.ERROR, Status.ERROR]
    assert summary.exit_code is ExitCode.INPUT_ERRORS


def test_frame_source_events_and_skipped_inputs(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    source = FrameSource([SAMPLE_MEDIA / "grace_hopper.jpg", broken, tmp_path / "missing.png"], workers=2)
    events = list(source)
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Frame", "SourceEnd", "FrameError", "SourceEnd", "FrameError", "SourceEnd"]
    assert isinstance(events[0], Frame) and events[0].width > 0 and events[0].time_s is None
    assert isinstance(events[2], FrameError) and "not a readable image" in events[2].reason
    skipping = FrameSource([SAMPLE_MEDIA / "grace_hopper.jpg", broken], skip={str(broken)})
    assert [e.source for e in skipping if isinstance(e, SourceEnd)] == [str(SAMPLE_MEDIA / "grace_hopper.jpg")]
    assert skipping.remaining == 1


def test_show_window_draws_each_frame_and_q_stops_the_run(analyzer, monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The --show sink, with OpenCV's window calls stubbed (this machine has no display)."""
    import cv2

    from fer_batch.outputs import annotate

    shown: list[np.ndarray] = []
    keys = iter([-1, -1, ord("q")])
    monkeypatch.setattr(annotate, "display_problem", lambda: None)
    monkeypatch.setattr(cv2, "imshow", lambda name, image: shown.append(image))
    monkeypatch.setattr(cv2, "waitKey", lambda delay: next(keys))
    monkeypatch.setattr(cv2, "destroyAllWindows", lambda: None)
    rows = Recorder()
    summary = run(FrameSource([SAMPLE_MEDIA] * 2), analyzer, [rows, annotate.ShowSink(analyzer.class_names)])
    assert len(shown) == 3 and summary.interrupted and len(rows.results) == 3
    assert shown[0].shape[2] == 3


def test_show_refuses_clearly_without_a_display(monkeypatch: pytest.MonkeyPatch) -> None:
    from fer_batch.errors import UsageError
    from fer_batch.outputs import annotate

    monkeypatch.setattr(annotate, "display_problem", lambda: "no display to show a window on (DISPLAY is not set)")
    with pytest.raises(UsageError, match="--show: no display"):
        annotate.ShowSink(("happy",))


def test_every_sink_is_closed_even_when_one_fails_to_close(analyzer) -> None:  # type: ignore[no-untyped-def]
    class FullDisk(Recorder):
        def close(self) -> None:
            super().close()
            raise OSError("no space left on device")

    first, other = FullDisk(), Recorder()
    with pytest.raises(OSError, match="no space"):
        run(FrameSource([SAMPLE_MEDIA / "grace_hopper.jpg"]), analyzer, [first, other])
    assert first.closed == other.closed == 1


def test_resumed_sources_are_skipped_as_often_as_they_were_done(tmp_path: Path) -> None:
    a, b = SAMPLE_MEDIA / "grace_hopper.jpg", SAMPLE_MEDIA / "chelsea_cat.png"
    source = FrameSource([a, b, a], skip={str(a): 1})  # a run stopped during b: a was done once
    assert [e.source for e in source if isinstance(e, SourceEnd)] == [str(b), str(a)]
    assert source.remaining == 2
    assert FrameSource([a, b, a], skip={str(a)}).remaining == 1  # a plain set skips every occurrence


def test_paths_on_stdin_are_yielded_as_they_arrive() -> None:
    """A photo named on stdin is read, decoded and yielded, then Idle, while stdin stays open (no read-ahead
    waits for more paths); the rest comes once more paths arrive."""
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd) as stdin, os.fdopen(write_fd, "w") as writer:
        source = FrameSource(["-"], stdin=stdin, workers=2)
        got: queue.Queue[object] = queue.Queue()

        def consume() -> None:
            for event in source:
                got.put(event)
            got.put(None)

        threading.Thread(target=consume, daemon=True).start()
        writer.write(f"{SAMPLE_MEDIA / 'grace_hopper.jpg'}\n")
        writer.flush()
        first = [got.get(timeout=30) for _ in range(3)]
        assert [type(e).__name__ for e in first] == ["Frame", "SourceEnd", "Idle"]
        writer.write(f"{SAMPLE_MEDIA / 'chelsea_cat.png'}\n{SAMPLE_MEDIA / 'missing.png'}\n")
        writer.close()
        rest = list(iter(lambda: got.get(timeout=30), None))
    assert [type(e).__name__ for e in rest if not isinstance(e, Idle)] == ["Frame", "SourceEnd", "FrameError",
                                                                           "SourceEnd"]

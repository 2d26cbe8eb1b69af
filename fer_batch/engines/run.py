"""One run: a frame source, an analysis and sinks; returns the :class:`RunSummary` that becomes the exit code.

:func:`run` is what ``fer-batch images`` and ``fer-batch video`` call, and the
Python API for a whole job::

    from fer_batch.inputs.frames import FrameSource
    from fer_batch.analysis.pipeline import Analyzer
    from fer_batch.engines.run import run
    from fer_batch.outputs.sinks import RecordSink

    analyzer = Analyzer()
    summary = run(FrameSource(["photos/"]), analyzer, [RecordSink.to_path("results.csv", analyzer.class_names)])
    print(summary.describe(), summary.exit_code)

Every outcome of the analysis goes to every sink, in order. Whatever ends the
run (the last input, Ctrl-C, a reader closing stdout), every sink is closed, so
each output is a valid file holding everything finished so far.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from fer_batch.errors import ExitCode
from fer_batch.inputs.frames import Analysed, Event, Frame, FrameError, Idle, Outcome, SourceEnd
from fer_batch.outputs.sinks import Sink
from fer_batch.records import Status

log = logging.getLogger(__name__)
FACELESS_EXAMPLES = 3  # inputs without a face that a summary names


class Analysis(Protocol):
    """What :func:`run` needs of an analysis: :class:`~fer_batch.analysis.pipeline.Analyzer` or a VideoAnalyzer."""

    def analyze_frames(self, events: Iterable[Event]) -> Iterator[Outcome]: ...


@dataclass
class RunSummary:
    """What a run did: records by status, faces, inputs finished, frames dropped, and how it ended."""

    counts: dict[Status, int] = field(default_factory=lambda: dict.fromkeys(Status, 0))
    faces: int = 0
    inputs: int = 0  # inputs finished (a photo, a video, a stream)
    dropped_frames: int = 0  # sampled frames of live inputs dropped to keep up with real time
    output_failures: int = 0  # outputs besides the rows (charts, copies, summaries) that could not be written
    interrupted: bool = False  # Ctrl-C
    broken_pipe: bool = False  # the reader of stdout went away
    faceless: int = 0  # inputs read (not only error records) in which no face was found
    faceless_examples: list[str] = field(default_factory=list)  # the first few of them, for a hint
    # the input being read: records without an error, and faces in them (for ``faceless``)
    _frames_now: int = field(default=0, repr=False)
    _faces_now: int = field(default=0, repr=False)

    @property
    def records(self) -> int:
        return sum(self.counts.values())

    @property
    def exit_code(self) -> ExitCode:
        """The process exit code for this run (docs/usage.md's table); the one place where a run becomes one."""
        if self.broken_pipe:
            return ExitCode.BROKEN_PIPE
        if self.interrupted:
            return ExitCode.INTERRUPTED
        if self.counts[Status.ERROR] or self.output_failures:
            return ExitCode.INPUT_ERRORS
        return ExitCode.OK

    def describe(self, *, video: bool = False) -> str:
        """One line for the log: ``17 input(s): 15 with faces (38 faces), 2 without a face, 0 unreadable``.

        For ``video`` (a record per analysed frame) the line counts the inputs and the analysed frames apart from
        the error rows, so a video that could not be opened is not counted as a frame. After
        Ctrl-C the line starts with ``interrupted after``: it is not a finished run's summary.
        """
        faces = f"{self.faces} face{'' if self.faces == 1 else 's'}"
        ok, no_face, errors = (self.counts[s] for s in (Status.OK, Status.NO_FACE, Status.ERROR))
        if video:
            text = (f"{self.inputs} input(s), {ok + no_face} frame(s) analysed: {ok} with faces ({faces}), "
                    f"{no_face} without a face; {errors} error row(s)")
        else:
            text = f"{self.records} input(s): {ok} with faces ({faces}), {no_face} without a face, {errors} unreadable"
        if self.dropped_frames:
            text += f"; {self.dropped_frames} sampled frame(s) dropped to keep up with live input"
        return f"interrupted after {text}" if self.interrupted else text


def _unanalysed(events: Iterable[Event | Outcome]) -> Iterator[Outcome]:
    """Outcomes for a source in which nothing can be opened (its error records, with no model loaded), or for
    a source whose records were analysed elsewhere (:func:`fer_batch.engines.ray_engine.ray_outcomes`): passed along."""
    try:
        for event in events:
            if isinstance(event, FrameError):
                yield Analysed(event.to_result())
            elif isinstance(event, Frame):
                raise TypeError("run() got a readable frame but no analysis")
            elif not isinstance(event, Idle):  # an input's end, or an outcome analysed elsewhere
                yield event
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()  # a generator of outcomes: stops its work (a Ray job) however the run ends


def run(source: Iterable[Event] | Iterable[Event | Outcome], analysis: Analysis | None,
        sinks: Sequence[Sink]) -> RunSummary:
    """Feed ``source`` through ``analysis`` to every sink; close every sink however the run ends.

    ``analysis`` may be None for a source whose inputs all fail to open (it then needs no model), or for a
    source that yields outcomes already analysed (records with :class:`~fer_batch.inputs.frames.Analysed` and
    :class:`~fer_batch.inputs.frames.SourceEnd`, as from the Ray engine): they go to the sinks as they come.
    Ctrl-C and a closed stdout end the run early and are reported in the summary, not raised; any other
    exception propagates once the sinks are closed.
    """
    summary = RunSummary()
    outcomes = analysis.analyze_frames(source) if analysis is not None else _unanalysed(source)  # type: ignore[arg-type]
    try:
        try:
            for outcome in outcomes:
                _dispatch(outcome, sinks, summary)
        finally:
            outcomes.close()  # type: ignore[attr-defined] - a generator: stops reader and decoder threads
    except KeyboardInterrupt:
        summary.interrupted = True
    except BrokenPipeError:
        summary.broken_pipe = True
    finally:
        _close_all(sinks, summary)
    return summary


def _close_all(sinks: Sequence[Sink], summary: RunSummary) -> None:
    """Close every sink, even when one of them fails to; the first failure is raised once all are closed."""
    failure: BaseException | None = None
    for sink in sinks:
        try:
            sink.close()
        except BrokenPipeError:
            summary.broken_pipe = True
        except KeyboardInterrupt:  # a second Ctrl-C while an output is being finished: finish the others
            summary.interrupted = True
        except BaseException as exc:  # noqa: BLE001 - raised below, once the other outputs are closed
            failure = failure or exc
        summary.output_failures += sink.failures
    if failure is not None:
        raise failure


def _dispatch(outcome: Outcome, sinks: Sequence[Sink], summary: RunSummary) -> None:
    if isinstance(outcome, Analysed):
        summary.counts[outcome.result.status] += 1
        summary.faces += len(outcome.result.faces)
        if outcome.result.status is not Status.ERROR:
            summary._frames_now += 1
            summary._faces_now += len(outcome.result.faces)
        for sink in sinks:
            sink.receive(outcome.result, outcome.frame)
    elif isinstance(outcome, Frame):
        for sink in sinks:
            sink.pass_frame(outcome)
    elif isinstance(outcome, SourceEnd):
        summary.inputs += 1
        summary.dropped_frames += outcome.dropped_frames
        if summary._frames_now and not summary._faces_now:
            summary.faceless += 1
            if len(summary.faceless_examples) < FACELESS_EXAMPLES:  # a million photos of landscapes: a few names
                summary.faceless_examples.append(outcome.source)
        summary._frames_now = summary._faces_now = 0
        for sink in sinks:
            sink.end_source(outcome)

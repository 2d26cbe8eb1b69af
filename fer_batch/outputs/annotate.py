"""Boxes, track IDs and the top expression drawn on the frames: annotated copies of videos and photos, a live window.

:class:`AnnotateSink` draws on the frames as they pass through the run (the
frame source passes every frame along, not only the analysed ones), so a
video is decoded once and a live stream can be annotated too. The copy has the
source's (rotated) size and nominal frame rate. What was found on an analysed
frame stays drawn on the frames that follow it until the next analysed frame,
so the boxes do not flicker when only a few frames per second are analysed.
Variable-frame-rate sources are resampled to the nominal rate by their decoder
timestamps, so the copy stays in sync with the source. A copy is written as
``NAME.partial.mp4`` and renamed when its video ends; a run stopped with
Ctrl-C still renames it, since it is a valid video up to that point.

The MP4 is written with OpenCV's built-in MPEG-4 Part 2 encoder (``mp4v``),
the only one its wheels ship; VLC, mpv and ffmpeg play it, some browsers do not.

:class:`PhotoAnnotateSink` (``fer-batch images --annotate DIR``) draws the same boxes and labels on a copy of
each photo, at the photo's own (EXIF-rotated) size, under the photo's own path inside ``DIR``
(:func:`annotated_photo_path`): JPEG for JPEG inputs, PNG for the others.

:class:`ShowSink` shows the same drawing in a window (``--show``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from fer_batch.errors import InputError, UsageError
from fer_batch.inputs.frames import Frame, SourceEnd
from fer_batch.outputs.charts import class_colors
from fer_batch.outputs.sinks import PerVideoPaths, Sink
from fer_batch.records import FaceResult, FrameResult, Status

log = logging.getLogger(__name__)

FOURCC = "mp4v"  # the encoder OpenCV's wheels include for .mp4
FALLBACK_FPS = 30.0  # when the container states no frame rate
ANNOTATE_SUFFIXES = (".mp4", ".m4v", ".mov")
WINDOW = "fer-batch"
QUIT_KEYS = (ord("q"), 27)  # q or Esc in the --show window stops the run, as Ctrl-C does


def _bgr(hex_color: str) -> tuple[int, int, int]:
    value = hex_color.lstrip("#")
    r, g, b = (int(value[i : i + 2], 16) for i in (0, 2, 4))
    return b, g, r


def draw_faces(image: np.ndarray, faces: Sequence[FaceResult], class_names: Sequence[str]) -> np.ndarray:
    """Draw each face's box and a ``#N emotion 87%`` label on ``image`` (in place); returns it.

    ``N`` is the face's track ID in video, its index in the photo (the rows' ``face``) for photos.
    """
    colors = {name: _bgr(c) for name, c in class_colors(class_names).items()}
    height, width = image.shape[:2]
    scale = max(0.4, min(width, height) / 720)  # text and lines grow with the frame
    thickness = max(1, int(round(2 * scale)))
    for face in faces:
        color = colors.get(face.emotion, (255, 255, 255))
        box = face.box
        cv2.rectangle(image, (box.x, box.y), (box.x + box.w, box.y + box.h), color, thickness, cv2.LINE_AA)
        label = f"#{face.track if face.track is not None else face.face} {face.emotion} {face.confidence:.0%}"
        font_scale = 0.6 * scale
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        top = box.y - th - base - 4
        if top < 0:  # no room above the box: put the label inside it
            top = box.y
        x = min(max(0, box.x), max(0, width - tw - 4))
        cv2.rectangle(image, (x, top), (x + tw + 4, top + th + base + 4), color, -1)
        cv2.putText(image, label, (x + 2, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0),
                    thickness, cv2.LINE_AA)
    return image




class _AnnotatedCopy:
    """One annotated copy being written: frames go to ``NAME.partial.mp4`` until :meth:`finish` renames it."""

    def __init__(self, out: Path, fps: float) -> None:
        self.out = out
        self.fps = fps
        self.partial = out.with_name(out.stem + ".partial" + out.suffix)
        self.faces: Sequence[FaceResult] = ()
        self._writer: cv2.VideoWriter | None = None
        self._size = (0, 0)
        self._last: np.ndarray | None = None
        self._written = 0

    def add(self, frame: Frame, faces: Sequence[FaceResult] | None, class_names: Sequence[str]) -> None:
        """Draw the latest faces on ``frame`` and write it into its slot of the output's frame rate."""
        image = frame.image.copy()
        if self._writer is None:
            self._size = (image.shape[1], image.shape[0])
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self._writer = cv2.VideoWriter(str(self.partial), cv2.VideoWriter_fourcc(*FOURCC), self.fps, self._size)
            if not self._writer.isOpened():
                raise InputError(f"cannot write video {self.out}")
        elif (image.shape[1], image.shape[0]) != self._size:
            image = cv2.resize(image, self._size)  # a mid-stream resolution change
        if faces is not None:
            self.faces = faces
        draw_faces(image, self.faces, class_names)
        # The output slot of this frame by its decoder time: repeat the previous frame to fill a pause, drop a
        # frame that lands on an already written slot (variable frame rate).
        slot = int(round((frame.time_s or 0.0) * self.fps))
        while self._last is not None and self._written < slot:
            self._writer.write(self._last)
            self._written += 1
        if self._written <= slot:
            self._writer.write(image)
            self._written += 1
        self._last = image

    def finish(self) -> Path:
        """Close the file and give it its name; raises InputError when no frame was written."""
        self.abort(keep=True)
        if not self._written:
            raise InputError("no frame could be decoded for the annotated copy")
        self.partial.replace(self.out)
        return self.out

    def abort(self, keep: bool = False) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if not keep:
            self.partial.unlink(missing_ok=True)


class AnnotateSink(Sink):
    """An annotated copy of each video (``--annotate``), drawn on the frames as they pass."""

    def __init__(self, path: Path, class_names: Sequence[str], *, sources: Sequence[str] | None = None) -> None:
        if path.suffix.lower() not in ANNOTATE_SUFFIXES:
            raise UsageError(f"--annotate must name an .mp4 file, not {path.name!r}")
        self.class_names = tuple(class_names)
        self.paths = PerVideoPaths(path, sources)
        self._copy: _AnnotatedCopy | None = None
        self._skipping: str | None = None  # a source whose copy cannot be written

    def _add(self, frame: Frame, faces: Sequence[FaceResult] | None) -> None:
        if frame.stream is None or frame.source == self._skipping:
            return
        if self._copy is None:
            out = self.paths(frame.source)
            if out.resolve() == Path(frame.source).resolve():
                log.error("%s: --annotate would overwrite the input video; skipped", frame.source)
                self._skip(frame.source)
                return
            self._copy = _AnnotatedCopy(out, frame.stream.nominal_fps or FALLBACK_FPS)
        try:
            self._copy.add(frame, faces, self.class_names)
        except (InputError, OSError, cv2.error) as exc:
            log.error("could not write the annotated copy of %s: %s", frame.source, exc)
            self._copy.abort()
            self._skip(frame.source)

    def _skip(self, source: str) -> None:
        self._copy, self._skipping = None, source
        self.failures += 1

    def receive(self, result: FrameResult, frame: Frame | None) -> None:
        if frame is not None:
            self._add(frame, result.faces)

    def pass_frame(self, frame: Frame) -> None:
        self._add(frame, None)

    def end_source(self, end: SourceEnd) -> None:
        self._finish()
        self._skipping = None

    def close(self) -> None:
        self._finish()

    def _finish(self) -> None:
        copy, self._copy = self._copy, None
        if copy is not None:
            self._attempt(f"annotated copy {copy.out}", copy.finish)


JPEG_SUFFIXES = (".jpg", ".jpeg")
KEPT_SUFFIXES = (*JPEG_SUFFIXES, ".png")  # annotated copies keep these names; other photos get ".png" added


def annotated_photo_path(folder: Path, source: str) -> Path:
    """Where the annotated copy of the photo ``source`` goes: its path as given, inside ``folder``.

    ``photos/a/x.jpg`` becomes ``DIR/photos/a/x.jpg``, so equal names in different folders stay apart; an
    absolute path loses its root (``/data/x.jpg``: ``DIR/data/x.jpg``) and ``..`` becomes ``_up``. JPEG photos stay
    JPEG; a PNG keeps its name; any other photo is written as PNG with ``.png`` added (``x.webp.png``), so
    ``x.webp`` and ``x.png`` beside it never share a copy.
    """
    path = Path(source)
    relative = path.parts[1:] if path.anchor else path.parts  # the root ("/", "C:\\") goes
    parts = ["_up" if part == ".." else part for part in relative if part not in ("", ".")]
    out = folder.joinpath(*parts) if parts else folder / "photo"
    return out if out.suffix.lower() in KEPT_SUFFIXES else out.with_name(out.name + ".png")


class PhotoAnnotateSink(Sink):
    """A copy of each photo with its faces drawn on it, in ``folder`` (``fer-batch images --annotate DIR``).

    Photos without a face are copied too (so the folder holds every photo that was read), unless
    ``faces_only``. A photo that could not be read has an error row and no copy. Copies are written as each
    photo's record arrives, so a resumed run draws only the photos it analyses.
    """

    def __init__(self, folder: Path, class_names: Sequence[str], *, faces_only: bool = False) -> None:
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"--annotate {folder} is a file: name a folder for the annotated photos")
        self.folder = folder
        self.class_names = tuple(class_names)
        self.faces_only = faces_only
        self.written = 0

    def receive(self, result: FrameResult, frame: Frame | None) -> None:
        if frame is None or result.status is Status.ERROR or (self.faces_only and not result.faces):
            return
        out = annotated_photo_path(self.folder, result.source)
        try:
            if out.resolve() == Path(result.source).resolve():
                raise InputError("it would overwrite the photo itself")
            image = draw_faces(frame.image.copy(), result.faces, self.class_names)
            out.parent.mkdir(parents=True, exist_ok=True)
            ok, data = cv2.imencode(".jpg" if out.suffix.lower() in JPEG_SUFFIXES else ".png", image)
            if not ok:
                raise InputError("OpenCV could not encode it")
            out.write_bytes(data.tobytes())
        except (InputError, OSError, cv2.error) as exc:
            log.error("could not write the annotated copy of %s: %s", result.source, exc)
            self.failures += 1
            return
        self.written += 1
        log.debug("wrote %s", out)

    def close(self) -> None:
        if self.written:
            log.info("wrote %d annotated photo(s) into %s", self.written, self.folder)


def display_problem() -> str | None:
    """Why ``--show`` cannot open a window here, or None when it can."""
    gui = next((line.split(":", 1)[1].strip() for line in cv2.getBuildInformation().splitlines()
                if line.strip().startswith("GUI:")), "")
    if gui.upper() == "NONE":
        return ("this OpenCV has no window support (opencv-python-headless); to use --show, replace it with "
                "opencv-python (pip uninstall opencv-python-headless && pip install opencv-python)")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display to show a window on (DISPLAY is not set)"
    return None


class ShowSink(Sink):
    """The annotated frames in a window as they are analysed (``--show``); q or Esc stops the run."""

    def __init__(self, class_names: Sequence[str]) -> None:
        problem = display_problem()
        if problem:
            raise UsageError(f"--show: {problem}")
        self.class_names = tuple(class_names)
        self._faces: Sequence[FaceResult] = ()

    def _show(self, frame: Frame) -> None:
        image = draw_faces(frame.image.copy(), self._faces, self.class_names)
        cv2.imshow(WINDOW, image)
        if cv2.waitKey(1) & 0xFF in QUIT_KEYS:
            raise KeyboardInterrupt  # the run ends as on Ctrl-C: every output is closed and valid

    def receive(self, result: FrameResult, frame: Frame | None) -> None:
        if frame is not None:
            self._faces = result.faces
            self._show(frame)

    def pass_frame(self, frame: Frame) -> None:
        self._show(frame)

    def end_source(self, end: SourceEnd) -> None:
        self._faces = ()

    def close(self) -> None:
        cv2.destroyAllWindows()

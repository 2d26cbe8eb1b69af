"""Annotated copies of videos: boxes, track IDs and the top expression drawn on the frames.

:func:`write_annotated` decodes the video a second time, after analysis, so
no frame has to be held in memory while waiting for its results. The output
has the source's (rotated) size and nominal frame rate. What was found on an
analysed frame stays drawn on the frames that follow it until the next
analysed frame, so the boxes do not flicker when only a few frames per second
are analysed. Variable-frame-rate sources are resampled to the nominal rate by
their decoder timestamps, so the copy stays in sync with the source.

The MP4 is written with OpenCV's built-in MPEG-4 Part 2 encoder (``mp4v``),
the only one its wheels ship; VLC, mpv and ffmpeg play it, some browsers do not.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

from fer_batch.charts import class_colors
from fer_batch.errors import InputError
from fer_batch.records import FaceResult, FrameResult
from fer_batch.video import VideoReader

log = logging.getLogger(__name__)

FOURCC = "mp4v"  # the encoder OpenCV's wheels include for .mp4
FALLBACK_FPS = 30.0  # when the container states no frame rate


def _bgr(hex_color: str) -> tuple[int, int, int]:
    value = hex_color.lstrip("#")
    r, g, b = (int(value[i : i + 2], 16) for i in (0, 2, 4))
    return b, g, r


def draw_faces(image: np.ndarray, faces: Sequence[FaceResult], class_names: Sequence[str]) -> np.ndarray:
    """Draw each face's box and a ``#track emotion 87%`` label on ``image`` (in place); returns it."""
    colors = {name: _bgr(c) for name, c in class_colors(class_names).items()}
    height, width = image.shape[:2]
    scale = max(0.4, min(width, height) / 720)  # text and lines grow with the frame
    thickness = max(1, int(round(2 * scale)))
    for face in faces:
        color = colors.get(face.emotion, (255, 255, 255))
        box = face.box
        cv2.rectangle(image, (box.x, box.y), (box.x + box.w, box.y + box.h), color, thickness, cv2.LINE_AA)
        label = f"#{face.track} " if face.track is not None else ""
        label += f"{face.emotion} {face.confidence:.0%}"
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


def write_annotated(video_path: str | Path, out_path: str | Path, results: Iterable[FrameResult],
                    class_names: Sequence[str]) -> Path:
    """Write an annotated copy of ``video_path`` using its analysis ``results``; returns the path written.

    Raises :class:`InputError` when the video cannot be decoded or the output cannot be written.
    """
    out_path = Path(out_path)
    by_frame = {r.frame: r.faces for r in results if r.frame is not None}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(out_path.stem + ".partial" + out_path.suffix)  # renamed when complete
    writer: cv2.VideoWriter | None = None
    written = 0
    try:
        with VideoReader(video_path) as reader:
            fps = reader.info.nominal_fps or FALLBACK_FPS
            faces: Sequence[FaceResult] = ()
            last: np.ndarray | None = None
            size = (0, 0)
            for frame in reader.frames():
                image = frame.image
                if writer is None:
                    size = (image.shape[1], image.shape[0])
                    writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*FOURCC), fps, size)
                    if not writer.isOpened():
                        raise InputError(f"cannot write video {out_path}")
                elif (image.shape[1], image.shape[0]) != size:
                    image = cv2.resize(image, size)  # a mid-stream resolution change
                faces = by_frame.get(frame.index, faces)
                draw_faces(image, faces, class_names)
                # The output slot of this frame by its decoder time: repeat the previous frame to fill a
                # pause, drop a frame that lands on an already written slot (variable frame rate).
                slot = int(round(frame.time_s * fps))
                while last is not None and written < slot:
                    writer.write(last)
                    written += 1
                if written <= slot:
                    writer.write(image)
                    written += 1
                last = image
        writer_ok = written > 0
    except BaseException:
        if writer is not None:
            writer.release()
        partial.unlink(missing_ok=True)
        raise
    if writer is not None:
        writer.release()
    if not writer_ok:
        partial.unlink(missing_ok=True)
        raise InputError("no frame could be decoded for the annotated copy")
    partial.replace(out_path)
    return out_path

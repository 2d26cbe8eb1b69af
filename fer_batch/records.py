"""The small frozen records that pass between pipeline stages and into the writers."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Status(str, Enum):
    """What happened to one input (an image, or one sampled video frame)."""

    OK = "ok"  # at least one face found and classified
    NO_FACE = "no_face"  # read fine, no face detected
    ERROR = "error"  # could not be read; ``error`` says why


@dataclass(frozen=True)
class Box:
    """A face box in pixels of the (EXIF-rotated) image: left, top, width, height."""

    x: int
    y: int
    w: int
    h: int

    @property
    def area(self) -> int:
        return max(0, self.w) * max(0, self.h)

    def iou(self, other: Box) -> float:
        """Intersection over union with another box (0 when they do not overlap)."""
        ix = max(0, min(self.x + self.w, other.x + other.w) - max(self.x, other.x))
        iy = max(0, min(self.y + self.h, other.y + other.h) - max(self.y, other.y))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class Detection:
    """A face found by a detector, with its confidence (0..1 for MTCNN)."""

    box: Box
    score: float


@dataclass(frozen=True)
class FaceResult:
    """One classified face: where it is, how sure the detector was, and the class probabilities."""

    face: int  # index of the face within its image/frame, 0-based, in detector order
    box: Box
    det_score: float
    emotion: str
    confidence: float  # probability of ``emotion``
    probabilities: dict[str, float]
    track: int | None = None  # video only: stable ID of this face across frames


@dataclass(frozen=True)
class FrameResult:
    """Everything about one input image or one sampled video frame."""

    source: str
    status: Status
    faces: tuple[FaceResult, ...] = ()
    error: str | None = None
    width: int | None = None
    height: int | None = None
    frame: int | None = None  # video only: 0-based index of the decoded frame
    time_s: float | None = None  # video only: presentation time in seconds
    extra: dict[str, object] = field(default_factory=dict, compare=False)

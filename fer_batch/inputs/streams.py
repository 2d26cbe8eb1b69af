"""Live inputs: network streams and capture devices, read in real time.

``live_target`` tells a live input (``rtsp://...``, ``http://...``, ``camera:0``) from a file path, and
:class:`LiveReader` reads one with the same surface as :class:`~fer_batch.inputs.video.VideoReader`::

    with LiveReader(live_target("rtsp://cam.local/stream")) as reader:
        for frame in reader.frames(Sampling(fps=5), duration_s=60):
            ...
        print(reader.dropped_frames)

Streams are opened with OpenCV's FFmpeg backend, cameras with V4L2 on Linux (the default backend elsewhere).
A background thread grabs every frame as it arrives, so the network or device buffer never backs up, and hands
the sampled frames to the consumer through a small queue. When the consumer falls behind, the oldest waiting frame
is dropped and counted: the consumer always gets recent frames and memory stays bounded.

Frame times (``time_s``, 0 at the first frame) come from the stream's own timestamps while they are usable: each
frame's timestamp above the one before, and stream time keeping pace with the clock (within
``TIMESTAMP_DRIFT_S`` plus ``TIMESTAMP_DRIFT_FRACTION`` of the elapsed time). Otherwise, and from the start for
motion-JPEG over HTTP/TCP/UDP (FFmpeg invents those timestamps at a nominal 25 frames/s), frames are timed by a
monotonic clock at the moment they arrive. Either way ``time_s`` never goes backwards, and after a reconnect it
goes on from where it was plus the time the stream was away.

End, stall and reconnect: a read that fails after waiting ``timeout_s`` for data is a stall; reads that fail at
once (the server closed the connection) are the end of the stream. Without ``reconnect`` the end of a stream ends
the iteration normally, as the end of a file does, and a stall raises ``InputError("stream stalled: ...")`` after
the frames read before it. With ``reconnect=N`` both are treated as a disconnect of a live source: the stream is
reopened up to N times in all, and the error is raised only when reopening fails.
"""

from __future__ import annotations

import base64
import logging
import math
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Self
from urllib.parse import unquote, urlsplit, urlunsplit

import cv2

from fer_batch.errors import InputError, UsageError
from fer_batch.inputs.video import DecodedFrame, Sampler, Sampling, VideoInfo, quiet_decoder_logs

log = logging.getLogger(__name__)

STREAM_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt"})
CAMERA_PREFIX = "camera:"
# Seconds without a frame before a stream counts as stalled, and the most an open may take. Ten seconds is over
# any keyframe interval IP cameras use (1-4 s typical) and a server's start-up, yet short enough to notice a dead
# link while someone is watching.
DEFAULT_STREAM_TIMEOUT_S = 10.0
LIVE_QUEUE_FRAMES = 8  # sampled frames waiting for the consumer; 1.6 s of video at the default 5 frames/s
FAST_FAILURES = 5  # reads in a row that fail at once: the server closed the stream
STALL_FRACTION = 0.8  # a read failing after this share of the timeout waited for data: a stall
RECONNECT_DELAY_S = 1.0  # pause before each reopening, so a server that just restarted can listen again
CLOSE_WAIT_S = 1.0  # close() waits this long for the reading thread; a read blocked longer ends on its own
WATCHDOG_MARGIN_S = 5.0  # the consumer gives up on a silent reading thread after timeout + delay + this
TIMESTAMP_DRIFT_S = 3.0  # stream time may run this far from the clock (a start-up burst of buffered frames)...
TIMESTAMP_DRIFT_FRACTION = 0.1  # ...plus this share of the elapsed time, before the clock takes over
_DEFAULT_PORTS = {"http": 80, "https": 443, "rtsp": 554, "rtsps": 322, "rtmp": 1935, "rtmps": 443}
_MJPEG_FOURCC = int.from_bytes(b"MJPG", "little")


class LiveKind(Enum):
    """What a live target is."""

    STREAM = "stream"  # a URL read by FFmpeg
    CAMERA = "camera"  # a capture device


@dataclass(frozen=True)
class LiveTarget:
    """A live input: a stream URL, or a camera by index (``0``) or device path (``/dev/video0``).

    ``display`` names it in logs and error rows with any password in the URL replaced by ``***``.
    """

    kind: LiveKind
    location: str | int
    display: str

    def __str__(self) -> str:
        return self.display


def live_target(text: str) -> LiveTarget | None:
    """The live input ``text`` names, or None when it is not one (a file path).

    Stream URLs: ``rtsp``, ``rtsps``, ``rtmp``, ``rtmps``, ``http``, ``https``, ``udp``, ``tcp`` and ``srt``
    (any case). Cameras: ``camera:N`` (a device number) or ``camera:/dev/videoN`` (a device path). Raises
    :class:`UsageError` for a camera spec that is neither, or a URL without a host.
    """
    text = text.strip()
    if text[:len(CAMERA_PREFIX)].lower() == CAMERA_PREFIX:
        device = text[len(CAMERA_PREFIX):]
        if device.isascii() and device.isdigit():
            return LiveTarget(LiveKind.CAMERA, int(device), f"{CAMERA_PREFIX}{int(device)}")
        if device.startswith("/"):
            return LiveTarget(LiveKind.CAMERA, device, f"{CAMERA_PREFIX}{device}")
        raise UsageError(f"bad camera {text!r}: use camera:N with a device number (camera:0) "
                         "or camera:PATH with a device path (camera:/dev/video0)")
    scheme, sep, _ = text.partition("://")
    if not sep or scheme.lower() not in STREAM_SCHEMES:
        return None
    parts = urlsplit(text)
    if not parts.netloc and scheme.lower() not in ("udp", "srt"):  # udp://:1234 listens on every address
        raise UsageError(f"stream URL without a host: {_hide_password(text)!r}")
    return LiveTarget(LiveKind.STREAM, text, _hide_password(text))


def _hide_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


class _QuietOpenCV:
    """OpenCV's log level at ERROR while any live reader is open: it warns on stderr for every failed open and read
    timeout, which the reader reports itself. Counted, because readers overlap and the level is process-wide."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved = 0

    @contextmanager
    def __call__(self) -> Iterator[None]:
        logging_ = cv2.utils.logging
        with self._lock:
            if self._users == 0:
                self._saved = logging_.getLogLevel()
                logging_.setLogLevel(logging_.LOG_LEVEL_ERROR)
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    logging_.setLogLevel(self._saved)


_quiet_opencv = _QuietOpenCV()


class _LiveClock:
    """Frame times of a live source across connections: stream timestamps rebased to the first frame while they
    are usable, the clock otherwise (see the module docstring); never backwards."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.last: float | None = None  # time_s of the last frame
        self.last_wall = 0.0  # monotonic clock when it arrived
        self._stream = False
        self._origin: tuple[float, float] | None = None  # (timestamp, clock) of this connection's first frame
        self._base = 0.0
        self._prev_pos = 0.0

    def connect(self, stream_timestamps: bool) -> None:
        """A new connection: its first frame goes on from the last one, plus the time in between."""
        self._stream = stream_timestamps
        self._origin = None

    def time(self, pos_s: float, now: float) -> float:
        if self._origin is None:
            self._base = 0.0 if self.last is None else self.last + (now - self.last_wall)
            self._origin = (pos_s, now)
            t = self._base
        else:
            if self._stream and not self._usable(pos_s, now):
                self._stream = False
                log.info("%s: the stream's timestamps are unusable (%.2f s after %.2f s, %.1f s of clock); "
                         "timing frames by the clock", self.source, pos_s - self._origin[0],
                         self._prev_pos - self._origin[0], now - self._origin[1])
            if self._stream:
                t = self._base + (pos_s - self._origin[0])
            else:
                t = self.last + (now - self.last_wall)  # type: ignore[operator]
        self._prev_pos = pos_s
        t = t if self.last is None else max(t, self.last)
        self.last, self.last_wall = t, now
        return t

    def _usable(self, pos_s: float, now: float) -> bool:
        assert self._origin is not None
        if not math.isfinite(pos_s) or pos_s <= self._prev_pos:
            return False
        stream_elapsed, wall_elapsed = pos_s - self._origin[0], now - self._origin[1]
        return abs(stream_elapsed - wall_elapsed) <= TIMESTAMP_DRIFT_S + TIMESTAMP_DRIFT_FRACTION * wall_elapsed


class _Outcome(Enum):
    STOPPED = "stopped"  # close() or the consumer stopped
    DURATION = "duration"  # duration_s reached
    ENDED = "ended (the server closed it)"
    STALLED = "stalled"


class LiveReader:
    """Reads a live stream or camera in real time (context manager); see the module docstring.

    Opening raises :class:`InputError` with a one-line reason within about ``timeout_s``. Counters:
    :attr:`decoded_frames` (frames read), :attr:`dropped_frames` (sampled frames dropped because the consumer
    fell behind), :attr:`failed_frames` (frames that could not be read) and :attr:`reconnects` (successful
    reopenings).
    """

    def __init__(self, target: LiveTarget, *, timeout_s: float = DEFAULT_STREAM_TIMEOUT_S, reconnect: int = 0,
                 max_waiting: int = LIVE_QUEUE_FRAMES) -> None:
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise UsageError(f"--stream-timeout must be a positive number of seconds, not {timeout_s}")
        if reconnect < 0:
            raise UsageError(f"--reconnect must be 0 or more, not {reconnect}")
        self.target = target
        self.timeout_s = float(timeout_s)
        self.reconnect = reconnect
        self.max_waiting = max(1, max_waiting)
        self.decoded_frames = 0
        self.dropped_frames = 0
        self.failed_frames = 0
        self.reconnects = 0
        self._attempts_left = reconnect
        self._index = 0  # position in the stream, counting failed frames, across reconnects
        self._clock = _LiveClock(target.display)
        self._waiting: deque[DecodedFrame] = deque()
        self._final: InputError | _Outcome | BaseException | None = None  # how the reading thread ended
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._progress_at = time.monotonic()  # the reading thread's last sign of life
        quiet_decoder_logs()
        self._cap: cv2.VideoCapture | None = self._open()
        self.info = self._read_info(self._cap)

    @property
    def waiting_frames(self) -> int:
        """Sampled frames read and not yet taken by the consumer (at most ``max_waiting``)."""
        return len(self._waiting)

    def frames(self, sampling: Sampling | None = None, duration_s: float | None = None) -> Iterator[DecodedFrame]:
        """Sampled frames as they arrive, until the stream ends, ``duration_s`` of stream time or :meth:`close`.

        ``sampling=None`` yields every frame (as fast as the consumer takes them). Raises :class:`InputError`
        after the frames read before a stall, or a disconnect that reconnecting could not mend. Closing the
        generator stops the reading thread. Can be iterated once.
        """
        if duration_s is not None and not (math.isfinite(duration_s) and duration_s > 0):
            raise UsageError(f"--duration must be a positive number of seconds, not {duration_s}")
        if self._thread is not None or self._cap is None:
            raise RuntimeError("LiveReader.frames() can be iterated once, before close()")
        sampler = Sampler(sampling or Sampling(fps=None, every=1))
        self._progress_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, args=(sampler, duration_s), name="fer-live", daemon=True)
        self._thread.start()
        try:
            while True:
                frame = self._next()
                if frame is None:
                    return
                yield frame
        finally:
            self._stop_thread()

    def close(self) -> None:
        """Stops reading within about a second, even when a read is blocked on a stalled stream."""
        self._stop_thread()
        if self._thread is None and self._cap is not None:
            self._cap.release()  # never read; otherwise the reading thread releases its capture itself
            self._cap = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # The consumer's side.

    def _next(self) -> DecodedFrame | None:
        """The oldest waiting frame; None at the end; raises how the reading ended when it was an error."""
        limit = self.timeout_s + RECONNECT_DELAY_S + WATCHDOG_MARGIN_S
        with self._changed:
            while not self._waiting and self._final is None:
                if not self._changed.wait(timeout=0.25) and time.monotonic() - self._progress_at > limit:
                    # A read that ignores its timeout (a driver, a protocol without one): do not hang with it.
                    raise InputError(f"stream stalled: no frame for {self.timeout_s:g} s (the read did not return)")
            if self._waiting:
                return self._waiting.popleft()
            final = self._final
        if isinstance(final, BaseException):
            raise final
        return None

    def _stop_thread(self) -> None:
        if self._stop.is_set():
            return  # already waited once; a read still blocked ends on its own and releases the capture
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(CLOSE_WAIT_S)

    # The reading thread's side.

    def _run(self, sampler: Sampler, duration_s: float | None) -> None:
        final: InputError | _Outcome | BaseException
        try:
            with _quiet_opencv():
                final = self._read_all(sampler, duration_s)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            final = exc
        finally:
            if self._cap is not None:
                self._cap.release()
                self._cap = None
        with self._changed:
            self._final = final
            self._changed.notify_all()

    def _read_all(self, sampler: Sampler, duration_s: float | None) -> InputError | _Outcome:
        while True:
            outcome = self._read_connection(sampler, duration_s)
            if outcome in (_Outcome.STOPPED, _Outcome.DURATION):
                return outcome
            what = outcome.value if outcome is _Outcome.ENDED else f"stalled: no frame for {self.timeout_s:g} s"
            if self._attempts_left == 0:
                if outcome is _Outcome.ENDED:
                    log.info("%s: the stream ended after %.1f s", self.target.display, self._clock.last or 0.0)
                    return outcome
                return InputError(f"stream {what}" + (f" (after {self.reconnect} reconnect(s))"
                                                      if self.reconnect else ""))
            error = self._reopen(what)
            if error is not None:
                return error

    def _read_connection(self, sampler: Sampler, duration_s: float | None) -> _Outcome:
        cap = self._cap
        if cap is None or self._stop.is_set():
            return _Outcome.STOPPED
        last_frame_at = time.monotonic()
        failures = 0  # reads in a row that failed at once
        while not self._stop.is_set():
            started = time.monotonic()
            ok = cap.grab()
            now = self._progress_at = time.monotonic()
            if not ok:
                if now - started >= STALL_FRACTION * self.timeout_s or now - last_frame_at >= self.timeout_s:
                    return _Outcome.STALLED
                failures += 1
                if failures > FAST_FAILURES:
                    return _Outcome.ENDED  # the trailing failures were the end, not damaged frames
                continue
            if failures:
                self.failed_frames += failures
                self._index += failures
                failures = 0
            last_frame_at = now
            time_s = self._clock.time(cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0, now)
            self.decoded_frames += 1
            if duration_s is not None and time_s >= duration_s:
                return _Outcome.DURATION
            index, self._index = self._index, self._index + 1
            if not sampler.take(index, time_s):
                continue
            ok, image = cap.retrieve()
            if not ok or image is None or image.size == 0:
                self.failed_frames += 1
                continue
            self._put(DecodedFrame(index, time_s, image))
        return _Outcome.STOPPED

    def _put(self, frame: DecodedFrame) -> None:
        with self._changed:
            if len(self._waiting) >= self.max_waiting:
                self._waiting.popleft()  # the consumer fell behind: keep real time, drop the oldest
                self.dropped_frames += 1
            self._waiting.append(frame)
            self._changed.notify_all()

    def _reopen(self, what: str) -> InputError | None:
        """Reopens after a stall or end; None when reading can go on (or was stopped), else the error."""
        assert self._cap is not None
        self._cap.release()
        self._cap = None
        last_error = ""
        while self._attempts_left > 0:
            self._attempts_left -= 1
            attempt = self.reconnect - self._attempts_left
            log.warning("%s: stream %s; reconnecting (%d of %d)", self.target.display, what, attempt, self.reconnect)
            self._progress_at = time.monotonic()
            if self._stop.wait(RECONNECT_DELAY_S):
                return None
            try:
                self._cap = self._open()
            except InputError as exc:
                last_error = str(exc)
                continue
            self.reconnects += 1
            return None
        return InputError(f"stream {what}; reconnecting failed {self.reconnect} time(s): {last_error}")

    # Opening.

    def _open(self) -> cv2.VideoCapture:
        if self.target.kind is LiveKind.CAMERA:
            cap = self._open_camera()
        else:
            cap = self._open_stream()
        cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
        mjpeg = int(cap.get(cv2.CAP_PROP_FOURCC)) == _MJPEG_FOURCC
        scheme = str(self.target.location).partition(":")[0].lower()
        # Motion JPEG over HTTP, TCP or UDP has no timestamps; FFmpeg makes some up at 25 frames/s.
        self._clock.connect(stream_timestamps=not (mjpeg and scheme in ("http", "https", "tcp", "udp")))
        return cap

    def _open_stream(self) -> cv2.VideoCapture:
        url = str(self.target.location)
        timeout_ms = max(1, round(self.timeout_s * 1000))
        started = time.monotonic()
        with _quiet_opencv():
            cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms,
                                                         cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms])
        if not cap.isOpened():
            cap.release()
            raise InputError(_why_not_open(url, self.timeout_s, time.monotonic() - started))
        return cap

    def _open_camera(self) -> cv2.VideoCapture:
        location = self.target.location
        device = f"/dev/video{location}" if isinstance(location, int) else location
        linux = sys.platform.startswith("linux")
        if linux:
            if not os.path.exists(device):
                raise InputError(f"no camera at {self.target.display} ({device} does not exist)")
            if not os.access(device, os.R_OK | os.W_OK):
                raise InputError(f"permission denied on {device}: add your user to the 'video' group")
        with _quiet_opencv():
            cap = cv2.VideoCapture(location, cv2.CAP_V4L2 if linux else cv2.CAP_ANY)
        if not cap.isOpened():
            cap.release()
            raise InputError(f"cannot open the camera at {self.target.display}: in use by another program, "
                             "or not a video capture device")
        # Honoured by backends that support it; V4L2 otherwise waits 10 s for a frame.
        cap.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, max(1, round(self.timeout_s * 1000)))
        return cap

    def _read_info(self, cap: cv2.VideoCapture) -> VideoInfo:
        fps = cap.get(cv2.CAP_PROP_FPS)
        invented = int(cap.get(cv2.CAP_PROP_FOURCC)) == _MJPEG_FOURCC and self.target.kind is LiveKind.STREAM
        return VideoInfo(
            width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            nominal_fps=float(fps) if math.isfinite(fps) and 0 < fps < 1000 and not invented else None,
            frame_count_hint=None,
            rotation=int(cap.get(cv2.CAP_PROP_ORIENTATION_META) or 0),
        )


def _why_not_open(url: str, timeout_s: float, elapsed_s: float) -> str:
    """A one-line reason why FFmpeg could not open ``url``: OpenCV only says that it failed, so ask the server."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        host, port = parts.hostname, parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:  # a port that is not a number
        return "cannot open the stream: bad port in the URL"
    where = f"{host}:{port}" if port else str(host)
    if elapsed_s >= STALL_FRACTION * timeout_s:
        return f"cannot connect: no video from {where} within {timeout_s:g} s"
    if not host or not port or scheme in ("udp", "srt"):
        return "cannot open the stream: no video stream at this address, or a format FFmpeg cannot read"
    budget = max(1.0, timeout_s - elapsed_s)
    try:
        with socket.create_connection((host, port), timeout=budget):
            pass
    except socket.gaierror:
        return f"cannot connect: unknown host {host!r}"
    except ConnectionRefusedError:
        return f"cannot connect to {where}: connection refused"
    except TimeoutError:
        return f"cannot connect to {where}: no answer within {budget:g} s"
    except OSError as exc:
        return f"cannot connect to {where}: {exc.strerror or exc}"
    if scheme in ("http", "https"):
        return _http_reason(url, budget)
    return (f"connected to {where}, but no video stream could be read "
            "(a wrong path, not a video, or a login needed)")


def _http_reason(url: str, timeout_s: float) -> str:
    parts = urlsplit(url)
    request = urllib.request.Request(urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])))
    if parts.username is not None:
        login = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(login).decode("ascii"))
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            content_type = response.headers.get_content_type()
    except urllib.error.HTTPError as exc:
        return f"the server answered HTTP {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return f"cannot connect: {getattr(exc, 'reason', exc)}"
    if content_type.startswith(("text/", "application/json", "application/xml", "image/")):
        return f"not a video stream: the server sent {content_type}"
    return f"not a video stream FFmpeg can read (the server sent {content_type})"

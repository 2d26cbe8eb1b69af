"""Loopback stream servers for the live-input tests: bounded in time, bound to 127.0.0.1 only.

:class:`MjpegServer` serves motion JPEG over HTTP (``multipart/x-mixed-replace``, what IP cameras send) at a fixed
real-time rate, frames drawn on the fly. Each connection follows the next :class:`Plan` (send N frames, then close
or stall), so one server can disconnect and serve again; ``/page.html`` answers with a web page. :class:`TcpServer`
sends the bytes of a file (an MPEG-TS clip) over raw TCP at a given rate. Both stop by themselves after
``lifetime_s`` and when their ``with`` block ends.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

import cv2
import numpy as np

LOOPBACK = "127.0.0.1"
FRAME_SIZE = (160, 120)  # width, height
BOUNDARY = "fer-batch-frame"


def draw_frame(index: int) -> np.ndarray:
    """A small BGR frame that changes with ``index`` (a moving square on a shade of grey)."""
    width, height = FRAME_SIZE
    image = np.full((height, width, 3), 60 + (index * 7) % 150, np.uint8)
    x = (index * 5) % (width - 30)
    cv2.rectangle(image, (x, 40), (x + 30, 70), (0, 0, 255), -1)
    return image


def write_ts_clip(path: Path, frames: int, fps: float) -> Path:
    """An MPEG-TS file (MPEG-4 part 2 video) of drawn frames, written by OpenCV."""
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"mp4v"), fps, FRAME_SIZE)
    if not writer.isOpened():
        raise RuntimeError("OpenCV cannot write MPEG-TS here")
    for index in range(frames):
        writer.write(draw_frame(index))
    writer.release()
    return path


def closed_port() -> int:
    """A loopback port nobody listens on (just released by the system)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Plan:
    """What one connection gets: ``frames`` frames at ``fps``, then ``then``: "close" or "stall" (silence)."""

    frames: int
    fps: float = 10.0
    then: str = "close"


class _Handler(BaseHTTPRequestHandler):
    server: _MjpegHttpServer

    def log_message(self, *args: object) -> None:  # quiet: pytest shows stderr of failing tests
        pass

    def do_GET(self) -> None:  # the name http.server calls
        if self.path == "/page.html":
            body = b"<!doctype html><html><body><p>Not a video.</p></body></html>\n" * 20
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        plan = self.server.next_plan()
        if plan is None:
            self.send_error(503, "no more streams")
            return
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        stop = self.server.stopping
        start = time.monotonic()
        try:
            for index in range(plan.frames):
                if stop.wait(max(0.0, start + index / plan.fps - time.monotonic())):
                    return
                jpeg = cv2.imencode(".jpg", draw_frame(index))[1].tobytes()
                self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                                 .encode() + jpeg + b"\r\n")
                self.wfile.flush()
                self.server.frames_sent += 1
            if plan.then == "stall":
                stop.wait()  # keep the connection open and say nothing, until the server stops
        except (BrokenPipeError, ConnectionResetError):
            return  # the client went away


class _MjpegHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, plans: list[Plan]) -> None:
        super().__init__((LOOPBACK, 0), _Handler)
        self.plans = list(plans)
        self.stopping = threading.Event()
        self.frames_sent = 0
        self.connections = 0
        self._lock = threading.Lock()

    def next_plan(self) -> Plan | None:
        with self._lock:
            self.connections += 1
            return self.plans.pop(0) if self.plans else None


class _Bounded:
    """Start/stop for a server thread, with a lifetime after which the server stops by itself."""

    def __init__(self, lifetime_s: float) -> None:
        self.lifetime_s = lifetime_s
        self._timer: threading.Timer | None = None

    def _start(self) -> None:
        self._timer = threading.Timer(self.lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def __enter__(self) -> Self:
        self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class MjpegServer(_Bounded):
    """Motion JPEG over HTTP on 127.0.0.1 (an ephemeral port); ``url`` is the stream, ``page_url`` a web page."""

    def __init__(self, *plans: Plan, lifetime_s: float = 60.0) -> None:
        super().__init__(lifetime_s)
        self.http = _MjpegHttpServer(list(plans))
        port = self.http.server_address[1]
        self.url = f"http://{LOOPBACK}:{port}/video.mjpg"
        self.page_url = f"http://{LOOPBACK}:{port}/page.html"
        self._thread = threading.Thread(target=self.http.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="mjpeg-server", daemon=True)

    @property
    def connections(self) -> int:
        return self.http.connections

    def _start(self) -> None:
        self._thread.start()
        super()._start()

    def stop(self) -> None:
        super().stop()
        if not self.http.stopping.is_set():
            self.http.stopping.set()  # ends the handlers' waits
            self.http.shutdown()
            self.http.server_close()


class TcpServer(_Bounded):
    """Sends ``data`` to the first client of ``tcp://127.0.0.1:PORT`` at ``bytes_per_s``, then closes."""

    def __init__(self, data: bytes, bytes_per_s: float, lifetime_s: float = 60.0) -> None:
        super().__init__(lifetime_s)
        self.data = data
        self.bytes_per_s = bytes_per_s
        self._sock = socket.socket()
        self._sock.bind((LOOPBACK, 0))
        self._sock.listen(1)
        self._sock.settimeout(0.2)
        self.url = f"tcp://{LOOPBACK}:{self._sock.getsockname()[1]}"
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="tcp-server", daemon=True)

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed by stop()
            with conn:
                start = time.monotonic()
                chunk = 7 * 188  # what a UDP sender would put in one datagram
                try:
                    for offset in range(0, len(self.data), chunk):
                        if self._stopping.wait(max(0.0, start + offset / self.bytes_per_s - time.monotonic())):
                            return
                        conn.sendall(self.data[offset:offset + chunk])
                except OSError:
                    return
            return

    def _start(self) -> None:
        self._thread.start()
        super()._start()

    def stop(self) -> None:
        super().stop()
        self._stopping.set()
        self._sock.close()

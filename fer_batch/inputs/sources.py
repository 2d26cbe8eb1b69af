"""Input discovery: files, folders (recursive), ``-`` (paths on stdin), stream URLs, cameras.

Each input becomes a :class:`SourceItem`, in order; an input that cannot even be
opened becomes an item with its ``error``, so it still appears in the output.
Images are read by :mod:`fer_batch.inputs.images`, and
:class:`fer_batch.inputs.frames.FrameSource` turns items into frames.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from fer_batch.inputs.images import IMAGE_SUFFIXES
from fer_batch.inputs.streams import LiveTarget, live_target

STDIN = "-"


@dataclass(frozen=True)
class SourceItem:
    """One input to analyse.

    ``source`` is what the output records: the path as given for a file named
    on the command line, or ``<folder>/<path relative to the folder>`` for a
    file found in a folder, so equal file names in different folders stay
    distinct. ``error`` is set for an input that cannot even be opened (a
    missing path, an empty folder); it still appears in the output. ``live``
    is set for a stream URL or a camera (then ``path`` is None).
    """

    source: str
    path: Path | None
    error: str | None = None
    live: LiveTarget | None = None


def file_slug(text: str, default: str) -> str:
    """``text`` (a source path) made safe as one file-name part: other characters become ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or default


def _walk_folder(folder: Path, suffixes: frozenset[str]) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in filenames if Path(f).suffix.lower() in suffixes)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix().lower())


def _stdin_paths(stream: TextIO) -> Iterator[str]:
    for line in stream:
        line = line.strip()
        if line:
            yield line


def iter_sources(
    inputs: Iterable[str | Path],
    *,
    suffixes: frozenset[str] = IMAGE_SUFFIXES,
    stdin: TextIO | None = None,
    live: bool = False,
) -> Iterator[SourceItem]:
    """Expand inputs into items, in order: files as given, folders recursively and sorted, ``-`` from stdin.

    A file named explicitly is taken whatever its suffix (reading it decides);
    folders contribute only files with one of ``suffixes`` (case-insensitive).
    With ``live``, stream URLs (``rtsp://``, ``http://``...) and cameras
    (``camera:0``) become live items; a malformed camera name is a UsageError.
    """
    for raw in inputs:
        text = str(raw)
        if text == STDIN:
            empty = True
            for item in iter_sources(_stdin_paths(stdin or sys.stdin), suffixes=suffixes, live=live):
                empty = False
                yield item
            if empty:  # as for an empty folder: a row says why, and the run's exit code is 1
                yield SourceItem(source=STDIN, path=None, error="no paths on stdin")
            continue
        if live and _looks_live(text):
            target = live_target(text)
            if target is not None:
                yield SourceItem(source=target.display, path=None, live=target)
                continue
        path = Path(text).expanduser()
        if path.is_dir():
            files = _walk_folder(path, suffixes)
            if not files:
                wanted = " ".join(sorted(suffixes))
                yield SourceItem(source=text, path=None, error=f"no supported files in folder (looked for {wanted})")
            for file in files:
                yield SourceItem(source=(Path(text) / file.relative_to(path)).as_posix(), path=file)
        elif path.is_file():
            yield SourceItem(source=text, path=path)
        elif path.exists():
            yield SourceItem(source=text, path=None, error="not a regular file or folder")
        else:
            yield SourceItem(source=text, path=None, error="no such file or folder")


def _looks_live(text: str) -> bool:
    """A URL scheme or ``camera:`` prefix: worth asking :func:`fer_batch.inputs.streams.live_target`."""
    return "://" in text or text.lower().startswith("camera:")

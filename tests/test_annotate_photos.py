"""``fer-batch images --annotate DIR``: a copy of each photo with its faces drawn, under the photo's own path."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_batch.outputs.annotate import annotated_photo_path

from .conftest import SAMPLE_MEDIA, fer_batch_command, shared_path


def fer_batch(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*fer_batch_command(), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    """``in/a/`` and ``in/b/``, each with the same Grace Hopper JPEG (one of them flipped) and ``in/a/`` with the
    cat PNG (no face) and a file that is no image."""
    for name in ("a", "b"):
        (tmp_path / "in" / name).mkdir(parents=True)
    shutil.copy(SAMPLE_MEDIA / "grace_hopper.jpg", tmp_path / "in" / "a" / "grace_hopper.jpg")
    flipped = cv2.flip(cv2.imread(str(SAMPLE_MEDIA / "grace_hopper.jpg")), 1)
    cv2.imwrite(str(tmp_path / "in" / "b" / "grace_hopper.jpg"), flipped)
    shutil.copy(SAMPLE_MEDIA / "chelsea_cat.png", tmp_path / "in" / "a" / "chelsea_cat.png")
    (tmp_path / "in" / "a" / "broken.jpg").write_text("not an image")
    return tmp_path


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_each_photo_is_copied_with_its_faces_drawn_under_its_own_path(photos: Path) -> None:
    proc = fer_batch("images", "in", "--model", "fast", "--out", "rows.csv", "--annotate", "ann", cwd=photos)
    assert proc.returncode == 1, proc.stderr  # broken.jpg: an error row
    assert "wrote 3 annotated photo(s) into ann" in proc.stderr
    written = sorted(p.relative_to(photos / "ann").as_posix() for p in (photos / "ann").rglob("*") if p.is_file())
    # equal names in two folders stay apart; the unreadable photo has no copy
    assert written == ["in/a/chelsea_cat.png", "in/a/grace_hopper.jpg", "in/b/grace_hopper.jpg"]
    rows = _rows(photos / "rows.csv")
    for name in ("a", "b"):
        source = f"in/{name}/grace_hopper.jpg"
        original = cv2.imread(str(photos / source))
        copy_path = photos / "ann" / source
        assert copy_path.read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG for a JPEG input
        copy = cv2.imread(str(copy_path))
        assert copy.shape == original.shape  # the photo's own size
        faces = [r for r in rows if r["source"] == source and r["face"]]
        assert len(faces) == 1
        x, y, w, h = (int(faces[0][k]) for k in ("x", "y", "w", "h"))
        diff = np.abs(copy.astype(int) - original.astype(int)).sum(axis=2)
        assert diff[y + h // 4: y + 3 * h // 4, x].mean() > 60  # the box's left edge is drawn
        assert np.median(diff[y + h // 4: y + 3 * h // 4, x + w // 4: x + 3 * w // 4]) < 20  # the face still shows
    cat = photos / "ann" / "in" / "a" / "chelsea_cat.png"
    assert cat.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.array_equal(cv2.imread(str(cat)), cv2.imread(str(photos / "in" / "a" / "chelsea_cat.png")))


def test_faces_only_leaves_out_the_photos_without_a_face(photos: Path) -> None:
    proc = fer_batch("images", "in", "--model", "fast", "--out", "rows.csv", "--annotate", "ann",
                     "--annotate-faces-only", cwd=photos)
    assert proc.returncode == 1, proc.stderr
    written = sorted(p.name for p in (photos / "ann").rglob("*") if p.is_file())
    assert written == ["grace_hopper.jpg", "grace_hopper.jpg"]


def test_a_resumed_run_does_not_redraw_the_photos_it_skips(photos: Path) -> None:
    (photos / "in" / "a" / "broken.jpg").unlink()  # a last source that reads: its copy is redone
    args = ("images", "in", "--model", "fast", "--out", "rows.csv", "--annotate", "ann")
    assert fer_batch(*args, cwd=photos).returncode == 0
    sources = list(dict.fromkeys(row["source"] for row in _rows(photos / "rows.csv")))
    copies = [annotated_photo_path(photos / "ann", source) for source in sources]
    for copy in copies:
        os.utime(copy, (1_000_000, 1_000_000))
    proc = fer_batch(*args, "--resume", cwd=photos)
    assert proc.returncode == 0, proc.stderr
    assert [copy.stat().st_mtime for copy in copies[:-1]] == [1_000_000] * (len(copies) - 1)
    assert copies[-1].stat().st_mtime > 1_000_000  # the last source may have been cut off: redone, redrawn


def test_ray_is_refused_with_the_documented_exit_code(photos: Path) -> None:
    proc = fer_batch("images", "in", "--engine", "ray", "--out", "rows.csv", "--annotate", "ann", cwd=photos)
    assert proc.returncode == 2, proc.stderr
    assert "--annotate draws on the decoded photos" in proc.stderr and "--engine local" in proc.stderr
    assert not (photos / "ann").exists() and not (photos / "rows.csv").exists()


def test_an_annotate_path_that_is_a_file_is_refused(photos: Path) -> None:
    (photos / "ann").write_text("mine")
    proc = fer_batch("images", "in", "--out", "rows.csv", "--annotate", "ann", cwd=photos)
    assert proc.returncode == 2 and "ann" in proc.stderr, proc.stderr
    assert (photos / "ann").read_text() == "mine"


def test_a_folder_inside_the_inputs_is_warned_of(photos: Path) -> None:
    proc = fer_batch("images", "in/b", "--model", "fast", "--out", "rows.csv", "--annotate", "in/b/drawn", cwd=photos)
    assert proc.returncode == 0, proc.stderr
    assert "--annotate in/b/drawn is inside the input folder in/b" in proc.stderr
    assert (photos / "in" / "b" / "drawn" / "in" / "b" / "grace_hopper.jpg").is_file()


def test_copy_paths_mirror_the_sources() -> None:
    out = Path("ann")
    assert annotated_photo_path(out, "photos/x.jpg") == out / "photos" / "x.jpg"
    assert annotated_photo_path(out, "/data/y/x.JPEG") == out / "data" / "y" / "x.JPEG"
    assert annotated_photo_path(out, "../x.png") == out / "_up" / "x.png"
    assert annotated_photo_path(out, "./a/x.webp") == out / "a" / "x.webp.png"  # PNG for every other format
    assert annotated_photo_path(out, "x.tif") != annotated_photo_path(out, "x.png")


def test_real_group_photos(tmp_path: Path) -> None:
    """The shared photos, group photos and faceless ones among them: a copy of each, a box for each face."""
    folder = shared_path("media", "photos")
    proc = fer_batch("images", folder, "--model", "fast", "--out", tmp_path / "rows.csv", "--annotate",
                     tmp_path / "ann", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = _rows(tmp_path / "rows.csv")
    sources = list(dict.fromkeys(row["source"] for row in rows))
    assert len(sources) >= 10 and any(row["status"] == "no_face" for row in rows)
    for source in sources:
        original = cv2.imread(source).astype(int)
        copy = cv2.imread(str(annotated_photo_path(tmp_path / "ann", source))).astype(int)
        assert copy.shape == original.shape, source
        diff = np.abs(copy - original).sum(axis=2)
        boxes = [[int(row[k]) for k in ("x", "y", "w", "h")] for row in rows if row["source"] == source and row["face"]]
        if not boxes:
            # a faceless photo: the same picture, JPEG re-encoded (a drawn line would change pixels by far more)
            assert diff.mean() < 8 and (diff > 150).mean() < 1e-4, source
        for x, y, w, h in boxes:  # the box of each face is drawn: its left edge changed
            x = min(max(x, 0), original.shape[1] - 1)
            edge = diff[max(y + h // 4, 0): min(y + 3 * h // 4, original.shape[0]), x]
            assert edge.mean() > 30, (source, x, y, w, h)

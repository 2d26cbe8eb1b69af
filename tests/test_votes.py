"""FER+ crowd votes: reading them without pandas, their majority, and `evaluate`'s scores against the crowd."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_batch.errors import DatasetError
from fer_batch.model_file import EMOTIONS
from fer_batch.training.data import ImageSet
from fer_batch.training.metrics import crowd_report, format_crowd_report
from fer_batch.training.targets import crowd_majority_set
from fer_batch.training.votes import ALL_VOTE_COLUMNS, FERPLUS_FILE, majority_classes, read_vote_table

from .conftest import shared_path

ANGRY, HAPPY, NEUTRAL, SAD = (EMOTIONS.index(c) for c in ("angry", "happy", "neutral", "sad"))


def _counts(**votes: int) -> list[float]:
    return [float(votes.get(column, 0)) for column in ALL_VOTE_COLUMNS]


def _write_table(path: Path, rows: dict[str, dict[str, int] | None]) -> Path:
    """A ferplus_labels.csv; a row of None has empty vote fields, as FER+'s left-out images do."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "split", *ALL_VOTE_COLUMNS])
        for name, votes in rows.items():
            writer.writerow([name, "PublicTest", *(["" for _ in ALL_VOTE_COLUMNS] if votes is None
                                                   else [votes.get(c, 0) for c in ALL_VOTE_COLUMNS])])
    return path


def test_majority_needs_one_winner_among_the_classes() -> None:
    counts = np.array([
        _counts(anger=6, sadness=4),  # angry
        _counts(anger=5, sadness=5),  # tie
        _counts(contempt=6, anger=4),  # contempt won: no FER2013 class
        _counts(unknown=7, happiness=3),
        _counts(NF=9, neutral=1),
        _counts(),  # no votes
        _counts(neutral=4, happiness=3, NF=3),  # a plurality is a majority here, as in FER+'s own "majority"
    ])
    majority = majority_classes(counts, EMOTIONS)
    assert majority.labels.tolist() == [ANGRY, -1, -1, -1, -1, -1, NEUTRAL]
    assert majority.excluded == {"no_votes": 1, "tie": 1, "contempt": 1, "unknown": 1, "not_a_face": 1}


def test_crowd_report_scores_agreement_cross_entropy_and_calibration() -> None:
    counts = np.array([_counts(happiness=8, neutral=2), _counts(neutral=6, sadness=4), _counts(NF=10)])
    probs = np.full((3, 7), 0.0)
    probs[0, HAPPY] = 1.0  # right, sure
    probs[1, SAD] = 0.5  # wrong: the crowd said neutral
    probs[1, NEUTRAL] = 0.4
    probs[1, ANGRY] = 0.1
    probs[2, HAPPY] = 1.0  # a non-face: left out of everything
    report = crowd_report(counts, probs, EMOTIONS)
    assert report["count"] == 2 and report["accuracy"] == pytest.approx(0.5)
    assert report["excluded"]["not_a_face"] == 1
    assert report["per_class"]["neutral"]["recall"] == 0.0 and report["per_class"]["happy"]["recall"] == 1.0
    assert report["distribution_count"] == 2
    assert report["annotator_agreement"] == pytest.approx((0.8 + 0.4) / 2)
    expected_ce = (-(0.8 * np.log(1.0) + 0.2 * np.log(1e-7)) - (0.6 * np.log(0.4) + 0.4 * np.log(0.5))) / 2
    assert report["cross_entropy"] == pytest.approx(expected_ce, rel=1e-6)
    # Face 1: top probability 1.0, 80% of its annotators chose it; face 2: 0.5 against 40%.
    assert report["calibration_error"] == pytest.approx((0.2 + 0.1) / 2)
    text = format_crowd_report(report)
    assert "majority accuracy 0.5000" in text and "1 not a face" in text


def test_vote_files_are_read_without_pandas_and_refused_clearly(tmp_path: Path) -> None:
    path = _write_table(tmp_path / FERPLUS_FILE, {"validation/happy/a.png": {"happiness": 9}, "x.png": None})
    table = read_vote_table(path)
    counts, listed = table.align(["validation/happy/a.png", "x.png", "missing.png"])
    assert listed.tolist() == [True, True, False]
    assert counts[0].sum() == 9 and counts[1].sum() == 0 and counts[2].sum() == 0
    with pytest.raises(DatasetError, match="does not exist"):
        read_vote_table(tmp_path / "nope.csv")
    (tmp_path / "bad.csv").write_text("file,anger\na.png,3\n")
    with pytest.raises(DatasetError, match="lacks the column"):
        read_vote_table(tmp_path / "bad.csv")
    (tmp_path / "words.csv").write_text(path.read_text().replace(",9,", ",nine,"))
    with pytest.raises(DatasetError, match="line 2"):
        read_vote_table(tmp_path / "words.csv")
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00\x89PNG")
    with pytest.raises(DatasetError, match="not a text CSV"):
        read_vote_table(tmp_path / "binary.csv")


def test_crowd_majority_set_relabels_validation_by_the_crowd(tmp_path: Path) -> None:
    data = ImageSet(images=np.zeros((3, 48, 48, 1), np.uint8), labels=np.array([ANGRY, HAPPY, SAD]),
                    class_names=EMOTIONS, files=("angry/0.png", "happy/1.png", "sad/2.png"))
    _write_table(tmp_path / FERPLUS_FILE, {"validation/angry/0.png": {"neutral": 7, "anger": 3},
                                           "validation/happy/1.png": {"happiness": 5, "surprise": 5},
                                           "validation/sad/2.png": {"sadness": 10}})
    crowd = crowd_majority_set(tmp_path, "validation", data)
    assert crowd.files == ("angry/0.png", "sad/2.png")  # the tie is left out
    assert crowd.labels.tolist() == [NEUTRAL, SAD]
    with pytest.raises(DatasetError, match="missing"):
        crowd_majority_set(tmp_path / "elsewhere", "validation", data)


def _voted_dataset(root: Path) -> Path:
    """A dataset root with validation/<class>/ crops and a votes file beside it that disagrees with two labels."""
    rng = np.random.default_rng(3)
    rows: dict[str, dict[str, int] | None] = {}
    for label in EMOTIONS:
        folder = root / "validation" / label
        folder.mkdir(parents=True)
        for i in range(2):
            cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 255, (48, 48), dtype=np.uint8))
            rows[f"validation/{label}/{i}.png"] = {"neutral": 10} if i == 0 else {"happiness": 6, "NF": 4}
    _write_table(root / FERPLUS_FILE, rows)
    return root


def _fer_batch(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fer_batch", *map(str, args)], check=False, capture_output=True,
                          text=True, timeout=300)


def test_evaluate_scores_the_crowd_when_votes_are_beside_the_folder(tmp_path: Path) -> None:
    root = _voted_dataset(tmp_path / "data")
    proc = _fer_batch("evaluate", root / "validation", "--model", "fast", "--out", tmp_path / "report")
    assert proc.returncode == 0, proc.stderr
    assert "against the folder labels:" in proc.stdout and "against the FER+ crowd votes" in proc.stdout
    assert "faces 14 (left out: none)" in proc.stdout
    report = json.loads((tmp_path / "report" / "metrics.json").read_text())
    crowd = report["ferplus"]
    assert crowd["count"] == 14 and report["count"] == 14
    assert crowd["per_class"]["neutral"]["support"] == 7 and crowd["per_class"]["happy"]["support"] == 7
    assert report["votes"] == str(root / FERPLUS_FILE)
    assert (tmp_path / "report" / "confusion_matrix_ferplus.png").stat().st_size > 1000


def test_evaluate_votes_option_and_files_that_list_none_of_the_images(tmp_path: Path) -> None:
    root = _voted_dataset(tmp_path / "data")
    other = _write_table(tmp_path / "other.csv", {"validation/happy/zzz.png": {"happiness": 10}})
    proc = _fer_batch("evaluate", root / "validation", "--model", "fast", "--votes", other,
                      "--out", tmp_path / "r1")
    assert proc.returncode == 4 and "none of the images" in proc.stderr and "Traceback" not in proc.stderr
    proc = _fer_batch("evaluate", root / "validation", "--model", "fast", "--votes", tmp_path / "absent.csv")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    # Found beside the folder but about other images: the folder labels are still scored, with a warning.
    (root / FERPLUS_FILE).write_text(other.read_text())
    proc = _fer_batch("evaluate", root / "validation", "--model", "fast", "--out", tmp_path / "r2")
    assert proc.returncode == 0 and "crowd votes not scored" in proc.stderr
    assert "ferplus" not in json.loads((tmp_path / "r2" / "metrics.json").read_text())


def test_fer2013_validation_has_the_documented_crowd_majorities() -> None:
    """The 3,589 PublicTest faces: 3,372 have a clear FER+ majority among the seven classes."""
    from fer_batch.training.data import load_image_folder
    from fer_batch.training.evaluate import image_votes

    folder = shared_path("data", "fer2013", "validation")
    data = load_image_folder(folder, (48, 48), class_names=EMOTIONS)
    counts = image_votes(read_vote_table(folder.parent / FERPLUS_FILE), folder, data)
    majority = majority_classes(counts, EMOTIONS)
    assert int((majority.labels >= 0).sum()) == 3372
    agree = (majority.labels == data.labels)[majority.labels >= 0].mean()
    assert agree == pytest.approx(0.654, abs=0.001)  # FER2013's own labels agree with the crowd this often


def test_evaluate_needs_neither_pandas_nor_tensorflow(tmp_path: Path) -> None:
    """The default install (`pip install .`) has neither: evaluate at int8 with crowd votes must not import them."""
    root = _voted_dataset(tmp_path / "data")
    script = ("import sys\n"
              "for name in ('pandas', 'tensorflow', 'keras'):\n"
              "    sys.modules[name] = None  # importing it now raises ImportError, as on the default install\n"
              "from fer_batch.cli import main\n"
              f"sys.argv = ['fer-batch', 'evaluate', {str(root / 'validation')!r}, '--model', 'fast', "
              f"'--out', {str(tmp_path / 'report')!r}]\n"
              "main()\n")
    proc = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "majority accuracy" in proc.stdout

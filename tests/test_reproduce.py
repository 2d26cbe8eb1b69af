"""`python -m fer_batch.training.reproduce` plans and the model cards written from them, on a tiny drawn dataset."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from fer_batch.model_file import read_info, stored_precisions
from fer_batch.training.model_card import write_card
from fer_batch.training.reproduce import PLANS, Stage, main, reproduce
from tests.conftest import write_drawn_dataset

TINY_PLAN = (
    Stage("base", {"epochs": 1, "batch_size": 8}),
    Stage("tuned", {"epochs": 1, "batch_size": 8, "augment": False, "mixed_precision": True}, init_from="base"),
    Stage("student", {"epochs": 1, "batch_size": 8, "seed": 3}, teachers=("base", "tuned")),
    Stage("mix", members=("tuned", "student")),
    Stage("tiny", {"precision": "int8", "flip_average": True, "calibration_images": 10, "int8_only": True},
          quantize_from="mix"),
)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """The tiny plan, run once for the module: (dataset, runs root)."""
    tmp = tmp_path_factory.mktemp("reproduce")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(PLANS, "tiny", TINY_PLAN)
        dataset = write_drawn_dataset(tmp / "data")
        reproduce("tiny", dataset, tmp / "runs")
        yield dataset, tmp / "runs"


def test_plan_runs_every_stage_in_order(tiny_runs: tuple[Path, Path]) -> None:
    _, runs = tiny_runs
    assert [m["name"] for m in read_info(runs / "mix.keras").training["ensemble"]] == ["tuned", "student"]
    final = read_info(runs / "tiny.keras")
    assert final.name == "tiny" and final.precision == "int8" and final.flip_average
    assert final.training["quantized"]["from"] == "mix" and final.training["ensemble"]
    assert stored_precisions(runs / "tiny.keras") == ("int8",)
    student = read_info(runs / "student" / "model.keras").training["config"]
    assert student["teachers"] == [str(runs / "base"), str(runs / "tuned")]
    tuned = read_info(runs / "tuned" / "model.keras").training["config"]
    assert tuned["init_from"] == str(runs / "base")
    # The plan's seed, except where a stage names its own (as the shipped resnet-b1 does).
    assert tuned["seed"] == 1337 and student["seed"] == 3


def test_finished_stages_are_skipped(tiny_runs: tuple[Path, Path]) -> None:
    dataset, runs = tiny_runs
    ran: list[str] = []
    (runs / "tiny.keras").rename(runs / "kept.keras")
    try:
        final = reproduce("tiny", dataset, runs, run_stage=lambda d, paths, stage, s: ran.append(stage.name))
    finally:
        (runs / "kept.keras").rename(runs / "tiny.keras")
    assert ran == ["tiny"] and final == runs / "tiny.keras"


def test_model_card_describes_every_stage(tiny_runs: tuple[Path, Path], tmp_path: Path) -> None:
    _, runs = tiny_runs
    card = write_card("tiny", runs, tmp_path / "card", hardware="a test machine", note="A note.")
    text = card.read_text()
    accuracy = json.loads((tmp_path / "card" / "metrics.json").read_text())["accuracy"]
    assert f"Accuracy {accuracy:.4f}" in text and "A note." in text and "a test machine" in text
    assert "`tuned`: continued from `base`'s weights" in text and "augmentation off" in text
    assert "bfloat16 mixed precision" in text
    assert "`student`: recipe `compact` from scratch" in text and "distilled from `base`, `tuned`" in text
    assert "`mix`: the mean of the logits of `tuned`, `student`" in text
    assert "`tiny`: `mix` with an int8 copy calibrated on 10 training images; keeps the int8 network only" in text
    # The shipped file is int8-only: its float32 figure comes from the network it was quantised from.
    assert "at int8 (the default)" in text and "at float32:" in text and "`mix` network it was quantised from" in text
    assert "python -m fer_batch.training.reproduce tiny" in text and "runs/shipped/tiny.keras" in text
    for name in ("base_history.csv", "student_curves.png", "confusion_matrix.png"):
        assert (tmp_path / "card" / name).is_file()


def test_shipped_plans_refer_only_to_earlier_stages() -> None:
    for name, plan in PLANS.items():
        seen: set[str] = set()
        for stage in plan:
            for ref in stage.inputs:
                assert ref in seen, f"plan {name}: stage {stage.name} uses {ref} before it is built"
            seen.add(stage.name)
        assert plan[-1].name == name  # the plan's last stage is the shipped model


def test_unknown_plan(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="accurate"):
        reproduce("nope", tmp_path, tmp_path)


def test_until_stops_after_the_named_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(PLANS, "tiny", TINY_PLAN)
    ran: list[str] = []
    last = reproduce("tiny", tmp_path / "data", tmp_path / "runs", until="tuned",
                     run_stage=lambda d, paths, stage, s: ran.append(stage.name))
    assert ran == ["base", "tuned"] and last == tmp_path / "runs" / "tuned"
    with pytest.raises(KeyError, match="no stage 'nope'"):
        reproduce("tiny", tmp_path / "data", tmp_path / "runs", until="nope")
    with pytest.raises(SystemExit) as exit_info:
        main(["tiny", str(tmp_path / "data"), "--out", str(tmp_path / "runs"), "--until", "nope"])
    assert exit_info.value.code == 2 and "has no stage 'nope'" in capsys.readouterr().err

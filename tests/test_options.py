"""The options of train and quantize: choices as enums, and configs written by earlier runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fer_batch.errors import UsageError
from fer_batch.model_file import read_info
from fer_batch.models import resolve_model
from fer_batch.training.options import (
    DefaultPrecision,
    Optimizer,
    Recipe,
    Schedule,
    TrainConfig,
    config_from_json,
    parse_choice,
)


def test_a_config_saved_by_an_earlier_run_loads_and_saves_unchanged() -> None:
    # The shipped fast model records the options of its last training stage, as an earlier version wrote them.
    saved = read_info(resolve_model("fast")).training["config"]
    config = config_from_json(saved)
    assert (config.recipe, config.schedule, config.optimizer) == (Recipe.WIDE, Schedule.COSINE, Optimizer.ADAM)
    assert config.init_from == Path(saved["init_from"]) and config.teachers == () and config.image_size == (48, 48)
    written = json.loads(json.dumps(config.to_json()))
    assert {key: written[key] for key in saved} == saved  # fields added since then take their defaults
    assert type(config.to_json()["recipe"]) is str


def test_choices_read_as_their_names_and_unknown_ones_are_refused(tmp_path: Path) -> None:
    config = TrainConfig(dataset=str(tmp_path), out=str(tmp_path / "run"), recipe="resnet", optimizer="sgd",
                         schedule="plateau", teachers=["fast"])
    assert config.recipe is Recipe.RESNET and f"{config.optimizer} {config.schedule}" == "sgd plateau"
    assert config.dataset == tmp_path and config.teachers == (Path("fast"),)
    with pytest.raises(UsageError, match="unknown model recipe 'tiny'; use compact, wide, vgg, resnet"):
        TrainConfig(dataset=tmp_path, out=tmp_path, recipe="tiny")
    with pytest.raises(UsageError, match="unknown precision 'int4'; use int8, float32"):
        parse_choice(DefaultPrecision, "int4", "precision")

"""What an install of the project ships, as pyproject.toml's package discovery finds it in this tree."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def installed_packages() -> list[str]:
    """The packages ``pip install .`` puts into site-packages: setuptools' discovery with pyproject's settings."""
    setuptools = pytest.importorskip("setuptools")
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    # In pyproject.toml, discovery includes folders without __init__.py unless `namespaces = false`.
    discover = setuptools.find_namespace_packages if find.get("namespaces", True) else setuptools.find_packages
    return list(discover(where=str(ROOT / find.get("where", ["."])[0]), include=find.get("include", ["*"]),
                         exclude=find.get("exclude", ())))


def test_an_install_adds_no_top_level_module_but_fer_batch() -> None:
    # A top-level `training` (or `tests`, `benchmarks`) in site-packages would shadow other projects' modules.
    packages = installed_packages()
    assert {name.split(".")[0] for name in packages} == {"fer_batch"}, packages
    assert "fer_batch.training" in packages and "fer_batch.models" in packages

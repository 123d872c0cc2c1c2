"""CLI tests for ``toolchain models list`` and ``toolchain models show``."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from tests.helpers import run_main
from toolchain.cli import main as cli_main
from toolchain.cli.models import models
from toolchain.models.recipe import MODELS_ENV


@pytest.fixture
def toolchain(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Run ``toolchain --workspace tmp_path/ws [ARGS...]`` in-process, with the models group registered."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(MODELS_ENV, raising=False)
    if "models" not in cli_main.cli.commands:  # until main.py registers it
        monkeypatch.setitem(cli_main.cli.commands, "models", models)
    assert isinstance(cli_main.cli.commands["models"], click.Group)

    def run(*args: object):
        return run_main(["--workspace", tmp_path / "ws", *args], capsys)

    return run


def test_models_list_json(toolchain) -> None:
    result = toolchain("models", "list", "--json")
    assert result.code == 0, result.err
    rows = {r["name"]: r for r in result.json()["models"]}
    assert {"edgenet", "mobilenet_v3_small", "resnet18"} <= set(rows)
    assert rows["edgenet"]["default"] is True and rows["edgenet"]["builtin"] is True
    assert rows["resnet18"]["architecture"] == "resnet18"
    assert all(r["input_size"] >= 32 for r in rows.values())


def test_models_list_human(toolchain) -> None:
    result = toolchain("models", "list")
    assert result.code == 0, result.err
    assert result.out == ""  # tables go to stderr
    assert "edgenet" in result.err and "mobilenet_v3_small" in result.err


def test_models_show_json(toolchain) -> None:
    result = toolchain("--json", "models", "show", "edgenet")
    assert result.code == 0, result.err
    info = result.json()
    assert info["name"] == "edgenet" and info["architecture"] == "edgenet"
    assert 0 < info["params"] < 1_000_000
    assert info["input_shape"] == [1, 3, info["input_size"], info["input_size"]]
    assert info["recipe"]["search"]
    assert toolchain("models", "show", "edgenet", "--json", "--num-classes", "5").json()["params"] > info["params"]


def test_models_show_human(toolchain) -> None:
    result = toolchain("models", "show", "resnet18")
    assert result.code == 0, result.err
    assert "resnet18" in result.err and "parameters" in result.err and "search space" in result.err


def test_models_show_path_and_extra_dir(toolchain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "tiny.toml").write_text('name = "tiny"\narchitecture = "edgenet"\ninput_size = 64\n[model]\nwidth = 0.5\n')
    assert toolchain("models", "show", extra / "tiny.toml", "--json").json()["input_size"] == 64
    monkeypatch.setenv(MODELS_ENV, str(extra))
    names = [r["name"] for r in toolchain("models", "list", "--json").json()["models"]]
    assert "tiny" in names and "edgenet" in names


def test_models_show_unknown_is_exit_4(toolchain) -> None:
    result = toolchain("models", "show", "no-such-model", "--json")
    assert result.code == 4
    error = result.json()["error"]
    assert error["exit_code"] == 4 and "models list" in error["message"]


def test_models_show_invalid_recipe_is_exit_4(toolchain, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\narchitecture = "vgg"\n')
    result = toolchain("models", "show", bad)
    assert result.code == 4
    assert "architecture" in result.err

"""`toolchain handoff` under each install: exit 5 naming [handoff] until onnx and tritonclient are there."""

from __future__ import annotations

from pathlib import Path

from tests.cli.test_cli_extras import _modules_without, assert_needs, run_hidden
from toolchain.extras import COMMANDS, EXTRAS, extra_for_module


def test_the_table_knows_the_extra() -> None:
    assert set(EXTRAS["handoff"].modules) == {"onnx", "tritonclient"} and "handoff" in EXTRAS["dev"].includes
    assert [need.extra for need in COMMANDS["handoff"]] == ["handoff"]
    assert extra_for_module("tritonclient.grpc") == "handoff"


def test_installs_without_it_exit_5_and_with_it_get_to_work(tmp_path: Path) -> None:
    args = ("handoff", "nothing", "--format", "triton", "--out", "repo")
    assert_needs(run_hidden(_modules_without(), *args, cwd=tmp_path), "handoff")
    assert_needs(run_hidden(_modules_without("deploy"), *args, cwd=tmp_path), "handoff")  # onnx alone is not enough
    assert not (tmp_path / "repo").exists()
    run = run_hidden(_modules_without("handoff"), *args, cwd=tmp_path)
    assert run.returncode == 4 and "neither a build nor an ONNX artifact" in run.stderr, run.stderr  # past the check

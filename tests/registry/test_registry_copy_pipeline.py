"""Issue 15's Done-when for ``registry copy``: a workspace the real stages made (ingest, train, evaluate, export,
quantize, build, bench, aliases) is copied into a real PostgreSQL server and into another SQLite workspace, and
``registry verify``, ``lineage``, ``list``, ``show``, ``alias --history`` and ``resolve`` answer the same before and after."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

from tests.export.conftest import trained_workspace  # noqa: F401  (session fixture: tiny trained model)
from tests.helpers import run_main


def _in_store(path: str) -> str:
    """``objects/ab/cdef...``: where a blob is inside whichever blob store holds it."""
    return Path(path).relative_to(Path(path).parents[2]).as_posix()


def _show(cli: Any, where: list[object], ref: str) -> dict[str, Any]:
    shown = cli(*where, "registry", "show", ref)
    return {**shown, "blobs": [{**b, "path": _in_store(b["path"])} for b in shown["blobs"]]}


def _answers(cli: Any, where: list[object], refs: dict[str, str]) -> dict[str, Any]:
    """What the registry commands answer about a workspace (timings left out, and blob paths taken inside the
    blob store: they are not answers)."""
    verify = cli(*where, "registry", "verify")
    scoped = cli(*where, "registry", "verify", "sharp@production", "--kind", "model", "--target", "x86-64-cpu")
    resolved = cli(*where, "registry", "resolve", "sharp@production", "--target", "x86-64-cpu")
    return {
        "list": cli(*where, "registry", "list"),
        "verify": {**verify, "seconds": None},
        "verify_scoped": {**scoped, "seconds": None},
        "lineage": {name: cli(*where, "registry", "lineage", ref) for name, ref in refs.items()},
        "lineage_alias": cli(*where, "registry", "lineage", "sharp@production", "--kind", "model", "--target", "x86-64-cpu"),
        "show": {name: _show(cli, where, ref) for name, ref in refs.items()},
        "history": cli(*where, "registry", "alias", "sharp", "--history"),
        "resolve": {**resolved, "path": _in_store(resolved["path"])},
    }


def test_copy_moves_a_real_workspace_into_postgresql_and_sqlite_and_the_registry_answers_the_same(
    trained_workspace: Path, tmp_path: Path, postgres_uri: str, capsys: pytest.CaptureFixture[str],  # noqa: F811
) -> None:
    root = tmp_path / "laptop"
    shutil.copytree(trained_workspace, root)

    def cli(*args: object, code: int = 0) -> Any:
        result = run_main(["--json", *args], capsys)
        assert result.code == code, result.err
        return result.json()

    ws = ["--workspace", root]
    onnx = cli(*ws, "export", "sharp@v1", "--parity-images", 8)
    int8 = cli(*ws, "quantize", onnx["artifact"], "--samples", 16, "--max-drop", 100)
    fp32_build = cli(*ws, "build", onnx["artifact"], "--target", "x86-64-cpu")
    int8_build = cli(*ws, "build", int8["artifact"], "--target", "x86-64-cpu")
    cli(*ws, "evaluate", "cls@v1")
    cli(*ws, "bench", fp32_build["build"], "--pure", "--duration", "0.3", "--warmup", "0.1")
    cli(*ws, "registry", "alias", "sharp", "candidate", "--to", "v1", "--reason", "first export")
    cli(*ws, "registry", "alias", "sharp", "production", "--target", "jetson-orin-nano", "--to", "v1")
    cli(*ws, "registry", "alias", "sharp", "production", "--target", "jetson-orin-nano", "--remove", "--reason", "no engine")
    cli(*ws, "registry", "alias", "sharp", "production", "--target", "x86-64-cpu", "--to", "v1")
    refs = {"int8_build": int8_build["build"][:12], "fp32_build": fp32_build["build"][:12], "int8": int8["artifact"][:12],
            "cls": "cls@v1"}
    before = _answers(cli, ws, refs)
    assert before["verify"]["passed"] and before["verify"]["checked"] > 10
    assert {r["kind"] for r in before["list"]["records"]} >= {"dataset", "run", "model", "evaluation", "artifact", "build",
                                                              "benchmark"}

    # Into a team's PostgreSQL server, its blobs into the team's blob directory.
    team_blobs = tmp_path / "team-blobs"
    team_blobs.mkdir()
    to_server = cli(*ws, "registry", "copy", "--to", postgres_uri, "--blobs", team_blobs)
    assert to_server["complete"] and to_server["blobs"]["copied"] > 10
    assert to_server["tables"]["records"]["copied"] == len(before["list"]["records"])
    assert to_server["tables"]["image_index"]["copied"] > 0 and to_server["tables"]["alias_history"]["copied"] == 4
    other_host = ["--registry", postgres_uri, "--blobs", team_blobs, "--workspace", tmp_path / "other-host"]
    assert _answers(cli, other_host, refs) == before

    # Into another SQLite workspace (its blobs beside its registry.db), from the server.
    copy = tmp_path / "copy"
    back = cli(*other_host, "registry", "copy", "--to", f"sqlite:///{copy / 'registry.db'}")
    assert back["complete"] and back["destination"]["blobs"] == str(copy)
    assert _answers(cli, ["--workspace", copy], refs) == before

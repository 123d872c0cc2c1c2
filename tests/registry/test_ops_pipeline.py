"""Registry operations on records the real stages made: export, quantize, build, then lineage,
alias, resolve, verify and gc through the CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

from tests.export.conftest import trained_workspace  # noqa: E402,F401  (session fixture: tiny trained model)
from tests.helpers import run_main  # noqa: E402


def test_engine_to_dataset_lineage_alias_resolve_verify_on_real_stage_records(trained_workspace: Path, tmp_path: Path,  # noqa: F811
                                                                             capsys) -> None:
    root = tmp_path / "ws"
    shutil.copytree(trained_workspace, root)

    def cli(*args: object, code: int = 0):
        result = run_main(["--workspace", root, "--json", *args], capsys)
        assert result.code == code, result.err
        return result.json()

    onnx = cli("export", "sharp@v1", "--parity-images", 8)
    int8 = cli("quantize", onnx["artifact"], "--samples", 16, "--max-drop", 100)
    build_fp32 = cli("build", onnx["artifact"], "--target", "x86-64-cpu")
    build_int8 = cli("build", int8["artifact"], "--target", "x86-64-cpu")

    tree = cli("registry", "lineage", build_int8["build"][:12])
    kinds_roles = {(r["kind"], tuple(r["roles"])) for r in tree["records"]}
    assert ("artifact", ("onnx",)) in kinds_roles  # the INT8 ONNX the engine was built from
    assert ("artifact", ("fp32",)) in kinds_roles
    assert ("dataset", ("calibration_data", "train_data")) in kinds_roles  # calibrated on the training dataset
    assert ("model", ("model",)) in kinds_roles
    dataset = next(r for r in tree["records"] if r["kind"] == "dataset")
    assert dataset["ref"] == "tiny@v1"
    int8_node = tree["root"]["inputs"][0]
    assert int8_node["id"] == int8["artifact"] and int8_node["summary"]["type"] == "onnx-int8"

    # The FP32 path: build -> onnx -> model -> dataset; the trained model cls@v1 also reaches its run.
    fp32_tree = cli("registry", "lineage", build_fp32["build"][:12])
    assert {r["kind"] for r in fp32_tree["records"]} == {"build", "artifact", "model", "dataset"}
    cls_tree = cli("registry", "lineage", "cls@v1", "--kind", "model")
    assert {r["kind"] for r in cls_tree["records"]} == {"model", "run", "dataset"}
    run = next(n for n in cls_tree["root"]["inputs"] if n["kind"] == "run")
    assert run["summary"]["params"]["input_size"] == 32  # the training config is in the lineage

    alias = cli("registry", "alias", "sharp", "production", "--target", "x86-64-cpu", "--to", "v1")
    assert alias["new_ref"] == "sharp@v1" and alias["warnings"] == []
    resolved = cli("registry", "resolve", "sharp@production", "--target", "x86-64-cpu")
    assert resolved["build"]["id"] == build_int8["build"]  # INT8 preferred
    assert Path(resolved["path"]) == Path(build_int8["path"]) and resolved["blob_present"]
    fp32 = cli("registry", "resolve", "sharp@production", "--target", "x86-64-cpu", "--precision", "fp32")
    assert fp32["build"]["id"] == build_fp32["build"]
    cli("registry", "alias", "sharp", "production", "--target", "jetson-orin-nano", "--to", "v1")
    refused = cli("registry", "resolve", "sharp@production", "--target", "jetson-orin-nano", code=5)
    message = refused["error"]["message"]
    assert "no build for jetson-orin-nano" in message and "built for target x86-64-cpu" in message
    assert f"toolchain build {int8['ref']} --target jetson-orin-nano" in message

    assert cli("registry", "verify")["passed"]
    scoped = cli("registry", "verify", "sharp@production", "--kind", "model", "--target", "x86-64-cpu")
    assert scoped["passed"] and "sharp@v1" in scoped["scope"]
    gc = cli("registry", "gc", "--grace", "0")
    assert gc["referenced"] == gc["blobs_total"] - len(gc["removed"])
    assert cli("registry", "verify")["passed"]  # gc removed nothing any record needs
    resolved_again = cli("registry", "resolve", "sharp@production", "--target", "x86-64-cpu")
    assert resolved_again["blob_present"]

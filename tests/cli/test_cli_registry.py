"""``toolchain registry``: JSON documents, human output and exit codes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.helpers import run_main
from tests.registry.test_ops import Chain, make_chain
from toolchain.workspace import Workspace


@pytest.fixture()
def chain(tmp_path: Path) -> tuple[Path, Chain]:
    root = tmp_path / "ws"
    with Workspace(root) as ws:
        return root, make_chain(ws)


def test_list_show_lineage(chain: tuple[Path, Chain], capsys) -> None:
    root, c = chain
    listed = run_main(["--workspace", root, "registry", "list", "--kind", "model", "--json"], capsys)
    assert listed.code == 0
    assert [r["id"] for r in listed.json()["records"]] == [c.model]
    human = run_main(["--workspace", root, "registry", "list"], capsys)
    assert human.code == 0 and human.out == "" and "cls-onnx-int8" in human.err and "11 records" in human.err

    shown = run_main(["--workspace", root, "--json", "registry", "show", "cls-onnx-int8@v1"], capsys).json()
    assert shown["id"] == c.int8 and {r["role"] for r in shown["inputs"]} == {"fp32", "calibration_data", "model"}
    missing = run_main(["--workspace", root, "--json", "registry", "show", "nope@v1"], capsys)
    assert missing.code == 4 and missing.json()["error"]["type"] == "InputNotFoundError"

    tree = run_main(["--workspace", root, "--json", "registry", "lineage", c.builds["orin-int8"][:12]], capsys).json()
    assert tree["root"]["id"] == c.builds["orin-int8"] and len(tree["records"]) == 7
    text = run_main(["--workspace", root, "registry", "lineage", c.builds["orin-int8"][:12]], capsys).err
    for expected in ("onnx: artifact cls-onnx-int8@v1", "calibration_data: dataset calib@v1", "run: run",
                     "train_data: dataset tiny@v1", "evaluation", "(shown elsewhere)"):
        assert expected in text, text


def test_alias_set_list_history_rollback_and_resolve(chain: tuple[Path, Chain], capsys) -> None:
    root, c = chain
    with Workspace(root) as ws:
        v2 = make_chain(ws, seed="b")
    base = ["--workspace", root, "--json", "registry"]
    first = run_main([*base, "alias", "cls", "production", "--target", "jetson-orin-nano", "--to", "v1"], capsys)
    assert first.code == 0 and first.json()["to"] == c.model
    second = run_main([*base, "alias", "cls", "production", "--target", "jetson-orin-nano", "--to", "v2",
                       "--reason", "canary ok"], capsys).json()
    assert (second["from"], second["to"], second["old_ref"]) == (c.model, v2.model, "cls@v1")
    current = run_main([*base, "alias", "cls"], capsys).json()["aliases"]
    assert current == [{"alias": "production", "target": "jetson-orin-nano", "record": v2.model, "ref": "cls@v2"}]
    resolved = run_main([*base, "resolve", "cls@production", "--target", "jetson-orin-nano"], capsys).json()
    assert resolved["build"]["id"] == v2.builds["orin-int8"] and Path(resolved["path"]).is_file()
    back = run_main([*base, "alias", "cls", "production", "--target", "jetson-orin-nano", "--to", "previous"], capsys)
    assert back.json()["new_ref"] == "cls@v1"
    history = run_main([*base, "alias", "cls", "--history"], capsys).json()["history"]
    assert [(h["from_ref"], h["to_ref"], h["reason"]) for h in history] == [
        (None, "cls@v1", ""), ("cls@v1", "cls@v2", "canary ok"), ("cls@v2", "cls@v1", "")]
    human = run_main(["--workspace", root, "registry", "alias", "cls", "--history"], capsys)
    assert "canary ok" in human.err and human.out == ""

    refused = run_main([*base, "resolve", "cls@production", "--target", "jetson-nano"], capsys)
    assert refused.code == 4 and "not set for jetson-nano" in refused.json()["error"]["message"]
    run_main([*base, "alias", "cls", "production", "--target", "jetson-orin-nx", "--to", "v1"], capsys)
    no_build = run_main([*base, "resolve", "cls@production", "--target", "jetson-orin-nx"], capsys)
    assert no_build.code == 5 and "toolchain build cls-onnx-int8@v1 --target jetson-orin-nx" in no_build.json()["error"]["message"]
    bad = run_main([*base, "alias", "cls", "v3", "--to", "v1"], capsys)
    assert bad.code == 2
    both = run_main([*base, "alias", "cls", "production", "--history", "--to", "v1"], capsys)
    assert both.code == 2


def test_verify_exit_codes_and_one_json_document(chain: tuple[Path, Chain], capsys) -> None:
    root, c = chain
    ok = run_main(["--workspace", root, "--json", "registry", "verify"], capsys)
    assert ok.code == 0 and ok.json()["passed"] and ok.json()["failed"] == 0
    path = Workspace(root).blobs.path(c.blobs["onnx"])
    os.chmod(path, 0o644)
    path.write_bytes(b"tampered")
    failed = run_main(["--workspace", root, "--json", "registry", "verify"], capsys)
    doc = failed.json()  # exactly one document: the report, not a second error object
    assert failed.code == 4 and doc["passed"] is False
    assert [(p["sha256"], p["problem"]) for p in doc["problems"]] == [(c.blobs["onnx"], "altered")]
    assert "failed verification" in failed.err
    human = run_main(["--workspace", root, "registry", "verify"], capsys)
    assert human.code == 4 and "altered" in human.err and "artifact cls-onnx" in human.err
    # The calibration dataset's lineage does not include the tampered ONNX.
    scoped = run_main(["--workspace", root, "--json", "registry", "verify", "calib@v1", "--kind", "dataset"], capsys)
    assert scoped.code == 0 and scoped.json()["checked"] == 1


def test_gc_dry_run_then_delete(chain: tuple[Path, Chain], capsys) -> None:
    root, _ = chain
    with Workspace(root) as ws:
        orphan = ws.blobs.put_bytes(b"nobody needs me")
        old = time.time() - 7200
        os.utime(ws.blobs.path(orphan), (old, old))
    dry = run_main(["--workspace", root, "--json", "registry", "gc", "--dry-run"], capsys).json()
    assert [r["sha256"] for r in dry["removed"]] == [orphan] and dry["dry_run"]
    assert Workspace(root).blobs.has(orphan)
    done = run_main(["--workspace", root, "registry", "gc"], capsys)
    assert done.code == 0 and "deleted 1 unreferenced blobs" in done.err
    assert not Workspace(root).blobs.has(orphan)
    bad = run_main(["--workspace", root, "registry", "gc", "--grace", "soon"], capsys)
    assert bad.code == 2

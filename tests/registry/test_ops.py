"""Registry operations: lineage, aliases per target, resolve for a target, verify, gc.

The records here are written with the same kinds, link roles and body fields the stages write
(ingest, train, export, quantize, evaluate, build); ``test_ops_pipeline.py`` checks the same
operations on records made by the real stages.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from toolchain.errors import BadInputError, CorruptStoreError, InputNotFoundError, MissingEnvironmentError, UsageError
from toolchain.registry import CachedImage, NewRecord
from toolchain.registry.aliases import AliasConfig, alias_history, build_mismatches, resolve_for_target, set_alias
from toolchain.registry.gc import GcConfig, gc, parse_duration
from toolchain.registry.lineage import lineage
from toolchain.registry.ops import list_records, resolve_record, show_record
from toolchain.registry.verify import verify, verify_blobs
from toolchain.targets.profile import load_target
from toolchain.workspace import Workspace

# The fields toolchain.build.service records for a TensorRT build (versions as the device reports them).
ORIN_NANO = {"backend": "tensorrt", "format": "tensorrt-plan", "tensorrt_version": "10.3.0.30", "compute_capability": "8.7",
             "jetpack": "6.2", "l4t": "36.4.3", "dla_core": None, "device": "gpu", "architecture": "aarch64",
             "runtime": {"name": "tensorrt", "version": "10.3.0.30"}}


@dataclass
class Chain:
    """Ids of one model's records, dataset to builds."""

    dataset: str
    calib: str
    run: str
    model: str
    onnx: str
    int8: str
    evaluation: str
    builds: dict[str, str]
    blobs: dict[str, str]


def _blob(ws: Workspace, text: str) -> str:
    return ws.blobs.put_bytes(text.encode())


def _build(ws: Workspace, onnx: str, name: str, target: str, precision: str, tag: str, **fields: object) -> str:
    sha = _blob(ws, f"engine {tag}")
    record, _, _ = ws.registry.commit(NewRecord(
        kind="build", name=f"{name}-{target}",
        body={"key": tag, "blob": sha, "target": target, "precision": precision, "onnx": onnx, **fields},
        links=((onnx, "onnx"),), blobs=((sha, "engine"),),
    ))
    return record.id


def make_chain(ws: Workspace, *, model: str = "cls", seed: str = "a", builds: bool = True) -> Chain:
    """dataset -> run -> model -> onnx -> int8 (+ calibration dataset) -> builds, plus an evaluation."""
    blobs = {"manifest": _blob(ws, f"manifest {seed}"), "shard": _blob(ws, f"shard {seed}")}
    dataset, _, _ = ws.registry.commit(NewRecord(
        kind="dataset", name="tiny", id=blobs["manifest"], version=True,
        body={"manifest": blobs["manifest"], "stats": {"images": 10}, "counts": {"train": {"car": 5}}},
        blobs=((blobs["manifest"], "manifest"), (blobs["shard"], "shard")),
    ))
    blobs["calib_manifest"] = _blob(ws, f"calib manifest {seed}")
    calib, _, _ = ws.registry.commit(NewRecord(
        kind="dataset", name="calib", id=blobs["calib_manifest"], version=True,
        body={"manifest": blobs["calib_manifest"]}, blobs=((blobs["calib_manifest"], "manifest"),),
    ))
    run, _, _ = ws.registry.commit(NewRecord(kind="run", name=model, body={"seed": seed, "params": {"lr": 0.1}, "dataset": dataset.id},
                                             links=((dataset.id, "train_data"),)))
    blobs["weights"] = _blob(ws, f"weights {seed}")
    model_rec, _, _ = ws.registry.commit(NewRecord(
        kind="model", name=model, version=True, body={"run": run.id, "weights": blobs["weights"], "architecture": "edgenet"},
        links=((run.id, "run"), (dataset.id, "train_data")), blobs=((blobs["weights"], "weights"),),
    ))
    blobs["onnx"] = _blob(ws, f"onnx {seed}")
    onnx, _, _ = ws.registry.commit(NewRecord(
        kind="artifact", name=f"{model}-onnx", version=True, body={"type": "onnx", "blob": blobs["onnx"], "opset": 17},
        links=((model_rec.id, "model"),), blobs=((blobs["onnx"], "onnx"),),
    ))
    blobs["int8"] = _blob(ws, f"int8 {seed}")
    int8, _, _ = ws.registry.commit(NewRecord(
        kind="artifact", name=f"{model}-onnx-int8", version=True, body={"type": "onnx-int8", "blob": blobs["int8"]},
        links=((onnx.id, "fp32"), (calib.id, "calibration_data"), (model_rec.id, "model")), blobs=((blobs["int8"], "onnx-int8"),),
    ))
    evaluation, _, _ = ws.registry.commit(NewRecord(
        kind="evaluation", name=model, body={"model": model_rec.id, "split": "test", "passed": True, "metrics": {"accuracy": 0.9}},
        links=((model_rec.id, "model"), (dataset.id, "eval_data")),
    ))
    ids = {}
    if builds:
        ids["cpu"] = _build(ws, onnx.id, f"{model}-onnx", "x86-64-cpu", "fp32", f"cpu{seed}", architecture="x86_64",
                            backend="onnxruntime", format="onnxruntime-optimized-onnx", tensorrt_version="",
                            compute_capability="", runtime={"name": "onnxruntime", "version": "1.20"})
        ids["orin-fp32"] = _build(ws, onnx.id, f"{model}-onnx", "jetson-orin-nano", "fp32", f"of{seed}", **ORIN_NANO)
        ids["orin-int8"] = _build(ws, int8.id, f"{model}-onnx-int8", "jetson-orin-nano", "int8", f"oi{seed}", **ORIN_NANO)
        # Built on JetPack 6.0 (TensorRT 8.6.2): does not load on the profile's JetPack 6.2 units.
        ids["orin-stale"] = _build(ws, int8.id, f"{model}-onnx-int8", "jetson-orin-nano", "int8", f"os{seed}",
                                   **{**ORIN_NANO, "tensorrt_version": "8.6.2", "jetpack": "6.0", "l4t": "36.3"})
    return Chain(dataset=dataset.id, calib=calib.id, run=run.id, model=model_rec.id, onnx=onnx.id, int8=int8.id,
                 evaluation=evaluation.id, builds=ids, blobs=blobs)


@pytest.fixture()
def ws(tmp_path: Path):
    with Workspace(tmp_path / "ws") as workspace:
        yield workspace


# --------------------------------------------------------------------------- lineage, list, show


def test_lineage_walks_from_an_engine_back_to_the_dataset(ws: Workspace) -> None:
    chain = make_chain(ws)
    tree = lineage(ws, chain.builds["orin-int8"][:10])
    assert tree.root.record.id == chain.builds["orin-int8"]
    (int8,) = tree.root.inputs
    assert (int8.role, int8.record.id, int8.ref) == ("onnx", chain.int8, "cls-onnx-int8@v1")
    roles = {child.role: child for child in int8.inputs}
    assert set(roles) == {"fp32", "calibration_data", "model"}
    assert roles["calibration_data"].record.id == chain.calib
    # The model is expanded where it is nearest the root (int8 -> model), and marked seen under fp32.
    model = roles["model"]
    assert not model.seen and model.record.id == chain.model
    assert [c.seen for c in roles["fp32"].inputs] == [True]
    assert {(c.role, c.record.id) for c in model.inputs} == {("run", chain.run), ("train_data", chain.dataset)}
    assert [m.id for m, _ in model.measurements] == [chain.evaluation]
    # The evaluation ran *on* the dataset (eval_data) but measures the model: listed once, there.
    dataset_node = next(c for c in model.inputs if c.role == "train_data")
    assert dataset_node.measurements == ()
    flat = {r.id: roles_ for r, _, roles_ in tree.records}
    assert set(flat) == {chain.builds["orin-int8"], chain.int8, chain.onnx, chain.calib, chain.model, chain.run, chain.dataset}
    assert set(flat[chain.dataset]) == {"train_data"}
    assert tree.first("dataset", "calibration_data").id == chain.calib
    assert tree.first("dataset", "train_data").id == chain.dataset
    doc = tree.to_json()
    assert doc["root"]["inputs"][0]["ref"] == "cls-onnx-int8@v1"
    assert doc["root"]["summary"]["tensorrt_version"] == "10.3.0.30"


def test_resolve_record_any_kind_and_ambiguity(ws: Workspace) -> None:
    chain = make_chain(ws)
    assert resolve_record(ws, "cls@v1").record.id == chain.model
    assert resolve_record(ws, "cls-onnx-int8").record.id == chain.int8
    assert resolve_record(ws, chain.run[:8]).record.id == chain.run
    # "cls-onnx-x86-64-cpu" is a build name (builds have no versions): the newest build of that name.
    assert resolve_record(ws, "cls-onnx-x86-64-cpu").record.id == chain.builds["cpu"]
    assert resolve_record(ws, "cls", kind="evaluation").record.id == chain.evaluation
    with pytest.raises(InputNotFoundError, match="registry list"):
        resolve_record(ws, "nothing@v3")
    with pytest.raises(UsageError, match="unknown record kind"):
        resolve_record(ws, "cls", kind="engine")


def test_resolve_record_follows_per_target_aliases(ws: Workspace) -> None:
    v1 = make_chain(ws)
    v2 = make_chain(ws, seed="b")
    set_alias(ws, AliasConfig(name="cls", alias="production", to="v1", target="jetson-orin-nano"))
    assert resolve_record(ws, "cls@production").record.id == v1.model  # one record on every target
    set_alias(ws, AliasConfig(name="cls", alias="production", to="v2", target="x86-64-cpu"))
    with pytest.raises(UsageError, match="different models per target .* add --target"):
        resolve_record(ws, "cls@production")
    assert resolve_record(ws, "cls@production", target="x86-64-cpu").record.id == v2.model
    assert resolve_record(ws, "cls@production", target="jetson-orin-nano").record.id == v1.model
    with pytest.raises(InputNotFoundError):
        resolve_record(ws, "cls@production", target="jetson-nano")  # neither its own nor an all-targets alias
    set_alias(ws, AliasConfig(name="cls", alias="production", to="v2"))
    assert resolve_record(ws, "cls@production", target="jetson-nano").record.id == v2.model
    assert lineage(ws, "cls@production", target="jetson-orin-nano").root.record.id == v1.model


def test_list_and_show(ws: Workspace) -> None:
    chain = make_chain(ws)
    set_alias(ws, AliasConfig(name="cls", alias="production", to="v1", target="x86-64-cpu"))
    rows = list_records(ws, kind="model")
    assert [(r["id"], r["versions"], r["aliases"]) for r in rows] == [
        (chain.model, ["cls@v1"], ["cls@production --target x86-64-cpu"])]
    assert len(list_records(ws)) == 11  # 7 records from dataset to evaluation, 4 builds
    assert {r["kind"] for r in list_records(ws, name="cls")} == {"run", "model", "evaluation"}
    info = show_record(ws, "cls-onnx@v1")
    assert info["id"] == chain.onnx
    assert [(r["role"], r["id"]) for r in info["inputs"]] == [("model", chain.model)]
    assert {r["id"] for r in info["used_by"]} == {chain.int8, chain.builds["cpu"], chain.builds["orin-fp32"]}
    assert info["blobs"] == [{"sha256": chain.blobs["onnx"], "role": "onnx", "present": True, "size": len("onnx a"),
                              "path": str(ws.blobs.path(chain.blobs["onnx"]))}]


# --------------------------------------------------------------------------- aliases and resolve


def test_alias_history_records_who_when_from_to_and_rolls_back(ws: Workspace) -> None:
    make_chain(ws)
    v2 = make_chain(ws, seed="b")
    first = set_alias(ws, AliasConfig(name="cls", alias="production", to="v1", target="jetson-orin-nano"), by="ana@ws1")
    second = set_alias(ws, AliasConfig(name="cls", alias="production", to="cls@v2", target="jetson-orin-nano",
                                       reason="better recall"), by="bo@ws2")
    assert (first.old_ref, first.new_ref, second.old_ref, second.new_ref) == (None, "cls@v1", "cls@v1", "cls@v2")
    with pytest.raises(InputNotFoundError):  # only the Orin Nano's alias is set, not the all-targets one
        ws.resolve("cls@production", kind="model")
    rollback = set_alias(ws, AliasConfig(name="cls", alias="production", to="previous", target="jetson-orin-nano"), by="ana@ws1")
    assert rollback.new_ref == "cls@v1"
    removed = set_alias(ws, AliasConfig(name="cls", alias="production", remove=True, target="jetson-orin-nano"), by="ana@ws1")
    assert removed.change.new_record_id is None
    rows = alias_history(ws, name="cls")
    assert [(r["by"], r["from_ref"], r["to_ref"], r["target"]) for r in rows] == [
        ("ana@ws1", None, "cls@v1", "jetson-orin-nano"),
        ("bo@ws2", "cls@v1", "cls@v2", "jetson-orin-nano"),
        ("ana@ws1", "cls@v2", "cls@v1", "jetson-orin-nano"),
        ("ana@ws1", "cls@v1", None, "jetson-orin-nano"),
    ]
    assert rows[1]["reason"] == "better recall" and rows[1]["to"] == v2.model
    assert all(r["at"] for r in rows) and rows == sorted(rows, key=lambda r: r["at"])


@pytest.mark.parametrize(("config", "error", "match"), [
    (dict(alias="v3", to="v1"), UsageError, "cannot be an alias"),
    (dict(alias="latest", to="v1"), UsageError, "cannot be an alias"),
    (dict(alias="production"), UsageError, "exactly one of"),
    (dict(alias="production", to="v9"), InputNotFoundError, "cls@v9"),
    (dict(alias="production", to="other@v1"), UsageError, "not a version of cls"),
    (dict(alias="production", to="v1", target="jetson-nope"), BadInputError, "jetson-nope"),
    (dict(alias="production", to="previous"), InputNotFoundError, "no previous value"),
    (dict(alias="production", remove=True), InputNotFoundError, "not set"),
])
def test_alias_refusals(ws: Workspace, config: dict, error: type, match: str) -> None:
    make_chain(ws)
    make_chain(ws, model="other", seed="o")
    with pytest.raises(error, match=match):
        set_alias(ws, AliasConfig(name="cls", **config))


def test_resolve_returns_the_build_matching_the_target_stack(ws: Workspace) -> None:
    chain = make_chain(ws)
    set_alias(ws, AliasConfig(name="cls", alias="production", to="v1", target="jetson-orin-nano"))
    result = resolve_for_target(ws, "cls@production", "jetson-orin-nano")
    # INT8 preferred over FP32; the JetPack 6.0 / TensorRT 8.6 engine is never chosen.
    assert result.build.id == chain.builds["orin-int8"] and result.alias_target == "jetson-orin-nano"
    assert result.blob_present and result.blob == ws.registry.get(chain.builds["orin-int8"]).body["blob"]
    candidates = {b.id: problems for b, problems in result.candidates}
    assert candidates[chain.builds["orin-fp32"]] == ()
    assert any("TensorRT 8.6.2, target has 10.3.0" in p for p in candidates[chain.builds["orin-stale"]])
    assert any("built for target x86-64-cpu" in p for p in candidates[chain.builds["cpu"]])
    assert resolve_for_target(ws, "cls@production", "jetson-orin-nano", precision="fp32").build.id == chain.builds["orin-fp32"]
    # The alias was set for the Orin Nano only: another target has no such alias.
    with pytest.raises(InputNotFoundError, match="not set for x86-64-cpu"):
        resolve_for_target(ws, "cls@production", "x86-64-cpu")
    # An all-targets alias applies where the target has none of its own; the target's own one wins.
    make_chain(ws, seed="b", builds=False)
    set_alias(ws, AliasConfig(name="cls", alias="production", to="v2"))
    assert resolve_for_target(ws, "cls@production", "jetson-orin-nano").build.id == chain.builds["orin-int8"]
    with pytest.raises(MissingEnvironmentError, match="it has no builds"):
        resolve_for_target(ws, "cls@production", "x86-64-cpu")
    assert resolve_for_target(ws, "cls@v1", "x86-64-cpu").build.id == chain.builds["cpu"]


def test_resolve_refuses_builds_that_do_not_match_and_says_how_to_build(ws: Workspace) -> None:
    v1 = make_chain(ws, builds=False)
    stale = _build(ws, v1.int8, "cls-onnx-int8", "jetson-orin-nano", "int8", "stale",
                   **{**ORIN_NANO, "tensorrt_version": "8.6.2", "jetpack": "6.0", "l4t": "36.3"})
    nx = _build(ws, v1.int8, "cls-onnx-int8", "jetson-orin-nx", "int8", "nx", **ORIN_NANO)
    set_alias(ws, AliasConfig(name="cls", alias="production", to="v1", target="jetson-orin-nano"))
    with pytest.raises(MissingEnvironmentError) as info:
        resolve_for_target(ws, "cls@production", "jetson-orin-nano")
    message = str(info.value)
    assert "TensorRT 8.6.2, target has 10.3.0" in message and "JetPack 6.0, target has 6.2" in message
    assert "built for target jetson-orin-nx" in message
    assert "`toolchain build cls-onnx-int8@v1 --target jetson-orin-nano`" in message
    with pytest.raises(BadInputError, match="does not match jetson-orin-nano: TensorRT 8.6.2"):
        resolve_for_target(ws, stale, "jetson-orin-nano", kind="build")
    assert resolve_for_target(ws, nx, "jetson-orin-nx", kind="build").build.id == nx


def test_alias_warns_when_the_target_has_no_build_yet(ws: Workspace) -> None:
    make_chain(ws, builds=False)
    result = set_alias(ws, AliasConfig(name="cls", alias="production", to="v1", target="jetson-orin-nano"))
    assert result.warnings and "no build matching jetson-orin-nano" in result.warnings[0]


def test_build_mismatches_compare_the_recorded_stack() -> None:
    from toolchain.registry.records import Record

    def rec(**body: object) -> Record:
        return Record(id="0" * 64, kind="build", name="b", body=body, created_at="", created_by="", toolchain_version="")

    orin = load_target("jetson-orin-nano")
    assert build_mismatches(rec(target="jetson-orin-nano", **ORIN_NANO), orin) == []
    assert build_mismatches(rec(target="jetson-orin-nano", **{**ORIN_NANO, "tensorrt_version": "10.3"}), orin) == []
    bad = build_mismatches(rec(target="jetson-orin-nano", **{**ORIN_NANO, "tensorrt_version": "10.30.0",
                                                             "compute_capability": "7.2"}), orin)
    assert any("TensorRT 10.30.0" in p for p in bad) and any("compute capability 7.2" in p for p in bad)
    missing = build_mismatches(rec(target="jetson-orin-nano", backend="tensorrt", architecture="aarch64", tensorrt_version=""), orin)
    assert any("TensorRT (not recorded)" in p for p in missing) and any("JetPack/L4T" in p for p in missing)
    # The Orin Nano's DLA count is unverified: a DLA build is not refused on the table's 0.
    assert build_mismatches(rec(target="jetson-orin-nano", **{**ORIN_NANO, "dla_core": 0}), orin) == []
    xavier = load_target("jetson-xavier-nx")
    xavier_body = {**ORIN_NANO, "tensorrt_version": xavier.tensorrt, "compute_capability": xavier.gpu_compute_capability,
                   "jetpack": xavier.jetpack, "l4t": xavier.l4t}
    if xavier.dla_cores_verified:
        too_far = build_mismatches(rec(target=xavier.name, **{**xavier_body, "dla_core": xavier.dla_cores}), xavier)
        assert any("DLA core" in p for p in too_far)
    cpu = load_target("x86-64-cpu")
    assert build_mismatches(rec(target="x86-64-cpu", architecture="x86_64", runtime={"name": "onnxruntime"}), cpu) == []
    wrong = build_mismatches(rec(target="x86-64-cpu", architecture="aarch64", format="tensorrt-plan"), cpu)
    assert any("architecture aarch64" in p for p in wrong) and any("tensorrt build" in p for p in wrong)


# --------------------------------------------------------------------------- verify


def _tamper(path: Path, data: bytes) -> None:
    os.chmod(path, 0o644)
    path.write_bytes(data)


def test_verify_reports_missing_and_altered_blobs_with_their_records(ws: Workspace) -> None:
    chain = make_chain(ws)
    assert verify(ws).passed and verify(ws).checked == len({b.sha256 for b in ws.registry.blob_refs()})
    _tamper(ws.blobs.path(chain.blobs["weights"]), b"flipped bits")
    ws.blobs.path(chain.blobs["shard"]).unlink()
    report = verify(ws)
    assert not report.passed
    problems = {p.sha256: p for p in report.problems}
    assert set(problems) == {chain.blobs["weights"], chain.blobs["shard"]}
    altered = problems[chain.blobs["weights"]]
    assert altered.problem == "altered" and altered.detail != chain.blobs["weights"]
    assert [(k, n, r) for _, k, n, r in altered.records] == [("model", "cls", "weights")]
    assert problems[chain.blobs["shard"]].problem == "missing"
    with pytest.raises(CorruptStoreError, match="2 of .* blobs failed verification"):
        report.raise_for_problems()
    # A CPU build's lineage does not use the calibration set; it uses the weights and the shard.
    scoped = verify(ws, chain.builds["cpu"], kind="build")
    assert {p.sha256 for p in scoped.problems} == {chain.blobs["weights"], chain.blobs["shard"]}
    assert "lineage" in scoped.scope
    # What package/deploy call before shipping: only the blobs they ship.
    assert verify_blobs(ws, [chain.blobs["int8"], chain.blobs["int8"]]).checked == 1
    assert verify_blobs(ws, [chain.blobs["int8"]]).passed
    bad = verify_blobs(ws, ["not-a-digest", "0" * 64])
    assert sorted(p.problem for p in bad.problems) == ["invalid", "missing"]


# --------------------------------------------------------------------------- gc


def _age(path: Path, seconds: float) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_gc_deletes_only_old_unreferenced_blobs_and_stale_temp_files(ws: Workspace) -> None:
    chain = make_chain(ws, builds=False)
    orphan_old = _blob(ws, "orphan old")
    orphan_new = _blob(ws, "orphan new")
    indexed = _blob(ws, "shard only in the image index")  # ingest records shards before the version
    ws.registry.add_cached_images("t", [CachedImage(content_sha256="c" * 64, shard_sha256=indexed, row=0, width=1,
                                                    height=1, phash=0, pixel_sha256="d" * 64)])
    mentioned = _blob(ws, "named only in a body")
    ws.registry.commit(NewRecord(kind="benchmark", name="b", body={"report": {"sha": mentioned}}))
    stale_tmp = ws.blobs.tmp / "123-dead.part"
    stale_tmp.write_bytes(b"half a blob")
    fresh_tmp = ws.blobs.tmp / "456-live.part"
    fresh_tmp.write_bytes(b"being written")
    for sha in [orphan_old, indexed, mentioned, *chain.blobs.values()]:
        _age(ws.blobs.path(sha), 7200)
    _age(stale_tmp, 7200)

    dry = gc(ws, GcConfig(dry_run=True))
    assert [s for s, _ in dry.removed] == [orphan_old] and ws.blobs.has(orphan_old) and stale_tmp.exists()
    report = gc(ws, GcConfig())
    assert [s for s, _ in report.removed] == [orphan_old] and not ws.blobs.has(orphan_old)
    assert report.kept_recent == (orphan_new,) and ws.blobs.has(orphan_new)
    assert [f for f, _ in report.tmp_removed] == ["123-dead.part"] and not stale_tmp.exists() and fresh_tmp.exists()
    assert report.tmp_kept_recent == 1
    assert report.bytes_removed == len("orphan old") + len("half a blob")
    assert all(ws.blobs.has(s) for s in [indexed, mentioned, *chain.blobs.values()])
    assert verify(ws).passed
    assert [s for s, _ in gc(ws, GcConfig(grace_seconds=0)).removed] == [orphan_new]


def test_storing_an_existing_blob_refreshes_its_age_so_gc_spares_it(ws: Workspace) -> None:
    make_chain(ws, builds=False)
    sha = _blob(ws, "reused bytes")
    _age(ws.blobs.path(sha), 7200)
    assert _blob(ws, "reused bytes") == sha  # a writer about to commit a record that references it
    assert gc(ws, GcConfig()).removed == () and ws.blobs.has(sha)


def test_gc_refuses_to_empty_a_store_whose_registry_references_nothing(ws: Workspace) -> None:
    """The wrong (or an emptied) registry next to a full blob store: gc would delete everything."""
    sha = _blob(ws, "a blob some other registry references")
    _age(ws.blobs.path(sha), 7200)
    with pytest.raises(CorruptStoreError, match="--force"):
        gc(ws, GcConfig())
    assert ws.blobs.has(sha)
    assert [s for s, _ in gc(ws, GcConfig(dry_run=True)).removed] == [sha] and ws.blobs.has(sha)
    assert [s for s, _ in gc(ws, GcConfig(force=True)).removed] == [sha] and not ws.blobs.has(sha)


def test_parse_duration() -> None:
    assert [parse_duration(t) for t in ("90", "90s", "30m", "2h", "1d", "0")] == [90, 90, 1800, 7200, 86400, 0]
    with pytest.raises(UsageError):
        parse_duration("soon")


def test_resolve_skips_a_newer_build_whose_engine_blob_is_gone(ws: Workspace) -> None:
    """Two matching INT8 builds; the newer one's engine was deleted: resolve hands out the one that can ship."""
    chain = make_chain(ws)
    newer = _build(ws, chain.int8, "cls-onnx-int8", "jetson-orin-nano", "int8", "rebuilt", **ORIN_NANO)
    ws.blobs.path(ws.registry.get(newer).body["blob"]).unlink()
    result = resolve_for_target(ws, "cls@v1", "jetson-orin-nano")
    assert result.build.id == chain.builds["orin-int8"] and result.blob_present
    assert any("missing" in w and newer[:12] in w for w in result.warnings)
    # With no intact build left, the newest match is still named (marked missing) rather than none.
    ws.blobs.path(ws.registry.get(chain.builds["orin-int8"]).body["blob"]).unlink()
    ws.blobs.path(ws.registry.get(chain.builds["orin-fp32"]).body["blob"]).unlink()
    fallback = resolve_for_target(ws, "cls@v1", "jetson-orin-nano")
    assert fallback.build.id == newer and not fallback.blob_present


def test_verify_all_covers_shards_only_the_image_index_points_into(ws: Workspace) -> None:
    """Ingest reuses decoded rows from indexed shards; a damaged one must show up before it is reused."""
    make_chain(ws, builds=False)
    shard = _blob(ws, "shard recorded in the image index before its dataset version")
    ws.registry.add_cached_images("t", [CachedImage(content_sha256="c" * 64, shard_sha256=shard, row=0, width=1,
                                                    height=1, phash=0, pixel_sha256="d" * 64)])
    assert verify(ws).passed
    _tamper(ws.blobs.path(shard), b"torn write")
    problems = {p.sha256: p.problem for p in verify(ws).problems}
    assert problems == {shard: "altered"}

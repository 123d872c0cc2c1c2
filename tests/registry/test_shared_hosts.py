"""Two workspaces (two TOOLCHAIN_HOMEs, as two hosts would have) on one PostgreSQL registry and one blob
directory: eight writer processes ingest, train, register and move aliases at once while ``registry gc``
runs in a loop from each workspace; nothing is lost, alias history is complete, ``registry verify`` is
clean. Then issue 15's first done-when: ``toolchain pipeline`` from one workspace, and the same
command from another skips every stage.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.data.lakes import write_sequence_lake
from tests.helpers import run_main
from toolchain.registry import NewRecord
from toolchain.workspace import Workspace

pytest.importorskip("torch")

WRITERS = 8
LAKES = 4  # writers w and w + 4 ingest the same lake: the same shards are stored by two processes at once
ALIAS_ROUNDS = 4
GRACE_SECONDS = 10.0  # every writer here commits within milliseconds of storing its blobs
TINY = (("input_size", 32), ("batch_size", 16), ("width", 0.5))
OLD = 7200.0


def _host_env(home: Path, registry_uri: str, blobs: Path) -> dict[str, str]:
    return {"TOOLCHAIN_HOME": str(home), "TOOLCHAIN_REGISTRY": registry_uri, "TOOLCHAIN_BLOBS": str(blobs),
            "OMP_NUM_THREADS": "1"}


def _age(path: Path, seconds: float) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


def _wait_for_gc_passes(passes: Any, count: int, timeout: float = 60) -> None:
    """Until ``count`` more gc passes have finished (with two gc loops, at least ``count - 2`` of them whole)."""
    target = passes.value + count
    deadline = time.monotonic() + timeout
    while passes.value < target:
        assert time.monotonic() < deadline, "the gc loop stopped"
        time.sleep(0.02)


def _writer(env: dict[str, str], worker: int, lake: str, legacy: str, start: Any, stored: Any, passes: Any,
            results: Any) -> None:
    os.environ.update(env)
    import torch

    torch.set_num_threads(1)  # eight writers on a machine that may have two cores
    from toolchain.data.ingest import IngestConfig, ingest
    from toolchain.registry.aliases import AliasConfig, set_alias
    from toolchain.train.search import TrainConfig, train
    from toolchain.workspace import Workspace, default_workspace_path

    start.wait(120)
    with Workspace(default_workspace_path()) as ws:  # everything from the environment, as on a host
        # Bytes already in the store (an orphan of long ago, which gc may delete) are stored again, and
        # referenced only after a whole gc pass in between: kept only because storing them made them young.
        assert ws.blobs.put_bytes(legacy.encode()) == _sha(legacy)
        stored.release()
        _wait_for_gc_passes(passes, 3)
        ws.registry.commit(NewRecord(kind="artifact", name=f"legacy-{worker}", body={"blob": _sha(legacy)},
                                     blobs=((_sha(legacy), "file"),), version=True))
        data = ingest(ws, IngestConfig(source=lake, name=f"lake{worker % LAKES}", image_size=32, workers=1))
        trained = train(ws, TrainConfig(data=f"{data.name}@v{data.number}", name="cls", epochs=1, seed=worker,
                                        overrides=TINY, device="cpu"))
        model_ref = trained.final.model_ref
        for i in range(ALIAS_ROUNDS):
            target = "jetson-orin-nano" if i % 2 else ""
            set_alias(ws, AliasConfig(name="cls", alias="production", to=model_ref, target=target, reason=f"{worker}:{i}"),
                      by=f"writer{worker}@{Path(env['TOOLCHAIN_HOME']).name}")
        results.put({"worker": worker, "dataset": data.version, "model": trained.final.model_id, "model_ref": model_ref})


def _gc_loop(env: dict[str, str], go: Any, stop: Any, passes: Any, reports: Any) -> None:
    os.environ.update(env)
    from toolchain.registry.gc import GcConfig, gc
    from toolchain.workspace import Workspace, default_workspace_path

    removed = set()
    go.wait(120)
    with Workspace(default_workspace_path()) as ws:
        while not stop.is_set():
            report = gc(ws, GcConfig(grace_seconds=GRACE_SECONDS))
            removed |= {sha for sha, _ in report.removed} | {name for name, _ in report.tmp_removed}
            with passes.get_lock():
                passes.value += 1
            stop.wait(0.02)  # a loop, not a spin: the writers need the cores
    reports.put(sorted(removed))


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def test_eight_writers_on_two_hosts_and_a_concurrent_gc_lose_nothing(tmp_path: Path, postgres_uri: str, capsys) -> None:
    blobs = tmp_path / "share" / "blobs"
    blobs.mkdir(parents=True)  # a share is mounted, never created by the toolchain
    hosts = {name: _host_env(tmp_path / name, postgres_uri, blobs) for name in ("host-a", "host-b")}
    lakes = []
    for lake in range(LAKES):
        write_sequence_lake(tmp_path / f"lake{lake}", sequences=12, frames=2, seed=lake)
        lakes.append(str(tmp_path / f"lake{lake}"))
    legacy = [f"orphan of a crashed writer, long ago, later needed by writer {w}" for w in range(WRITERS)]
    with Workspace(tmp_path / "host-a", registry_uri=postgres_uri, blobs=blobs) as ws:
        for text in legacy:
            _age(ws.blobs.path(ws.blobs.put_bytes(text.encode())), OLD)
        garbage = [ws.blobs.put_bytes(f"garbage {i}".encode()) for i in range(5)]
        for sha in garbage:
            _age(ws.blobs.path(sha), OLD)
        stale_tmp = ws.blobs.tmp / "4242-crashed.part"
        stale_tmp.write_bytes(b"half a blob")
        _age(stale_tmp, OLD)
        seed = ws.blobs.put_bytes(b"seed record")  # gc refuses a store whose registry references nothing
        ws.registry.commit(NewRecord(kind="artifact", name="seed", body={"blob": seed}, blobs=((seed, "file"),)))

    # Forked, not spawned: the writers start with torch imported (as a long-running host would have it),
    # which keeps the test fast; each still opens its own database connections and workspace.
    context = multiprocessing.get_context("fork")
    start, go, stop = context.Event(), context.Event(), context.Event()
    stored = context.Semaphore(0)
    passes = context.Value("i", 0)
    results, reports = context.Queue(), context.Queue()
    # gc in a loop from host b, and a second one from host a (two gcs at once must not undo each other either).
    collectors = [context.Process(target=_gc_loop, args=(hosts[host], go, stop, passes, reports))
                  for host in ("host-b", "host-a")]
    writers = [context.Process(target=_writer, args=(hosts["host-a" if w % 2 == 0 else "host-b"], w, lakes[w % LAKES],
                                                     legacy[w], start, stored, passes, results)) for w in range(WRITERS)]
    for process in collectors:
        process.start()
    for process in writers:
        process.start()
    start.set()
    outcomes = []
    try:
        for _ in range(WRITERS):  # gc starts once every writer holds an old blob it has just stored again
            assert stored.acquire(timeout=120)
        go.set()
        for _ in range(WRITERS):
            outcomes.append(results.get(timeout=240))
    finally:
        for process in writers:
            process.join(60)
        stop.set()
        for process in collectors:
            process.join(60)
    assert [p.exitcode for p in writers] == [0] * WRITERS
    assert [p.exitcode for p in collectors] == [0, 0]
    gc_reports = [reports.get(timeout=10) for _ in collectors]
    removed = set().union(*gc_reports)
    assert passes.value >= 3  # each writer waited for them between storing a blob and committing its record
    assert set(garbage) | {stale_tmp.name} <= removed  # and gc deleted what it should, meanwhile
    assert not removed & {_sha(text) for text in legacy}

    with Workspace(tmp_path / "host-a", registry_uri=postgres_uri, blobs=blobs) as ws:
        store = ws.registry
        # Every writer's model registered once, with consecutive versions; every dataset readable.
        versions = store.versions("model", "cls")
        assert [v.number for v in versions] == list(range(1, WRITERS + 1))
        assert {v.record_id for v in versions} == {o["model"] for o in outcomes}
        for outcome in outcomes:
            model = store.get(outcome["model"])
            assert model is not None and ws.blobs.verify(model.body["weights"])
            assert store.get(outcome["dataset"]) is not None
        for w in range(WRITERS):
            [legacy_version] = store.versions("artifact", f"legacy-{w}")
            assert ws.blobs.verify(store.get(legacy_version.record_id).body["blob"])
        # Alias history complete: every move of every writer, each starting where the previous one left it.
        history = store.alias_history(kind="model", name="cls", alias="production")
        assert sorted(change.reason for change in history) == sorted(
            f"{w}:{i}" for w in range(WRITERS) for i in range(ALIAS_ROUNDS))
        for target in ("", "jetson-orin-nano"):
            chain = [change for change in history if change.target == target]
            assert chain[0].old_record_id is None
            assert all(b.old_record_id == a.new_record_id for a, b in itertools.pairwise(chain))
            assert store.get_alias(kind="model", name="cls", alias="production", target=target) == chain[-1].new_record_id
        assert {change.by.split("@")[1] for change in history} == {"host-a", "host-b"}
        assert not any(".gc-" in p.name for p in blobs.rglob("*"))  # nothing left moved aside

    # `registry verify` (the CLI, from host a), then a gc with no grace at all from host b, then verify again.
    for name, value in hosts["host-a"].items():
        os.environ[name] = value
    try:
        verified = run_main(["--json", "registry", "verify"], capsys)
        assert verified.code == 0, verified.err
        assert verified.json()["passed"] and verified.json()["checked"] > 3 * WRITERS
        os.environ["TOOLCHAIN_HOME"] = hosts["host-b"]["TOOLCHAIN_HOME"]
        assert run_main(["--json", "registry", "gc", "--grace", "0"], capsys).code == 0
        again = run_main(["--json", "registry", "verify"], capsys)
        assert again.code == 0 and again.json()["checked"] == verified.json()["checked"]
    finally:
        for name in hosts["host-a"]:
            os.environ.pop(name, None)


# --------------------------------------------------------------------------- issue 15, first done-when


def _small_pipeline_toml() -> str:
    """The smallest pipeline the pipeline tests run (tests/pipeline/test_pipeline.py), with 2 epochs."""
    from tests.pipeline.test_pipeline import SMALL

    return SMALL.format(epochs=2)


def _pipeline(folder: Path, env: dict[str, str]) -> dict[str, Any]:
    run = subprocess.run([sys.executable, "-m", "toolchain", "--json", "pipeline", "pipeline.toml"], cwd=folder,
                         capture_output=True, text=True, timeout=600, env={**os.environ, **env}, check=False)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_pipeline_from_a_second_workspace_on_the_shared_stores_skips_every_stage(tmp_path: Path, postgres_uri: str) -> None:
    """TOOLCHAIN_REGISTRY=postgresql://... TOOLCHAIN_BLOBS=/shared/blobs toolchain pipeline, on two hosts."""
    folder = tmp_path / "project"  # the working folder both hosts see (the lake and outputs go in it)
    folder.mkdir()
    (folder / "pipeline.toml").write_text(_small_pipeline_toml())
    blobs = tmp_path / "shared" / "blobs"
    blobs.mkdir(parents=True)
    first = _pipeline(folder, _host_env(tmp_path / "home-a", postgres_uri, blobs))
    assert first["skipped"] < len(first["stages"]) and len(first["rows"]) == 2
    assert not (tmp_path / "home-a" / "registry.db").exists() and not (tmp_path / "home-a" / "objects").exists()
    assert any((blobs / "objects").iterdir())
    second = _pipeline(folder, _host_env(tmp_path / "home-b", postgres_uri, blobs))
    assert second["skipped"] == len(second["stages"]) == len(first["stages"])
    assert second["rows"] == first["rows"] and second["model"] == first["model"]
    assert not (tmp_path / "home-b" / "registry.db").exists()

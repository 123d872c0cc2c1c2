"""Crash safety and concurrency of ``data ingest``, with real processes and SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.data.lakes import write_sequence_lake


def _ingest_cmd(workspace: Path, lake: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "toolchain", "--workspace", str(workspace), "--json", "data", "ingest", str(lake),
            "--name", name, "--image-size", "32", *extra]


def _indexed_images(workspace: Path) -> int:
    db = workspace / "registry.db"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT COUNT(*) FROM image_index").fetchone()[0]
    except sqlite3.Error:
        return 0


def _listed(workspace: Path) -> list[dict]:
    out = subprocess.run(
        [sys.executable, "-m", "toolchain", "--workspace", str(workspace), "--json", "data", "list"],
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout)["datasets"]


def test_sigkill_mid_ingest_then_rerun_gives_the_uninterrupted_version(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    write_sequence_lake(lake, sequences=400, frames=3)  # 1,200 images, several shards
    crashed = tmp_path / "crashed"
    proc = subprocess.Popen(
        _ingest_cmd(crashed, lake, "highway", "--workers", "1"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while _indexed_images(crashed) == 0 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "ingest finished before it could be killed; make the lake bigger"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = _indexed_images(crashed)
    assert 0 < done_before < 1200
    assert _listed(crashed) == []  # no partial version is ever listed

    rerun = json.loads(subprocess.run(_ingest_cmd(crashed, lake, "highway"), capture_output=True, text=True, check=True).stdout)
    assert rerun["decoded"] == 1200 - done_before  # finished work was kept
    clean = json.loads(
        subprocess.run(_ingest_cmd(tmp_path / "clean", lake, "highway"), capture_output=True, text=True, check=True).stdout
    )
    assert rerun["version"] == clean["version"]
    assert rerun["counts"] == clean["counts"]
    assert [d["ref"] for d in _listed(crashed)] == ["highway@v1"]


def test_two_ingests_at_once_into_one_workspace_both_succeed(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    lakes = []
    for i in range(2):
        lake = tmp_path / f"lake{i}"
        write_sequence_lake(lake, sequences=120, frames=2, seed=i)
        lakes.append(lake)
    procs = [
        subprocess.Popen(_ingest_cmd(workspace, lakes[0], "a"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
        subprocess.Popen(_ingest_cmd(workspace, lakes[1], "b"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
        subprocess.Popen(_ingest_cmd(workspace, lakes[0], "a-again"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    assert results[0]["version"] == results[2]["version"]  # same lake, same id, whoever finished first
    assert results[0]["version"] != results[1]["version"]
    assert sorted(d["ref"] for d in _listed(workspace)) == ["a-again@v1", "a@v1", "b@v1"]

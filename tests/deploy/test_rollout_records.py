"""A registry that fails mid-rollout loses no unit's outcome: records are retried, saved, written later.

The units here are unreachable (sockets that do not exist), so every unit gets a result at once; the
registry is a real SQLite store whose ``commit`` of deployment records fails the way a dropped PostgreSQL
connection does (the store boundary is where the fault is injected).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.serve.fixtures import tiny_build, unpackaged_image_record
from toolchain.deploy import rollout
from toolchain.deploy.rollout import PENDING_DIR, DeployConfig, deploy, fleet_status, write_pending_records
from toolchain.errors import MissingEnvironmentError
from toolchain.registry import NewRecord
from toolchain.workspace import Workspace

UNITS = ("road-1", "road-2", "road-3")


@pytest.fixture
def packaged(tmp_path: Path) -> tuple[Path, str, Path]:
    """A workspace with a build and the image record ``package`` would make; its fleet of unreachable units."""
    ws = tmp_path / "ws"
    with Workspace(ws) as workspace:
        image = unpackaged_image_record(workspace, tiny_build(workspace, tmp_path))
    fleet = tmp_path / "fleet.toml"
    fleet.write_text('[defaults]\ntarget = "x86-64-cpu"\ncameras = ["rtsp://10.0.0.9/s1"]\n' + "".join(
        f'[[unit]]\nname = "{name}"\nurl = "unix://{tmp_path}/{name}.sock"\n' for name in UNITS))
    return ws, image, fleet


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(rollout, "RECORD_FIRST_WAIT_S", 0.01)
    yield


class _Dropping:
    """Wraps a store: commits of deployment records raise while ``failures`` lasts (a connection that dropped)."""

    def __init__(self, store: Any, failures: int) -> None:
        self._store, self.failures, self.tries = store, failures, 0

    def commit(self, new: NewRecord) -> Any:
        if new.kind == "deployment":
            self.tries += 1
            if self.failures > 0:
                self.failures -= 1
                raise MissingEnvironmentError("lost the connection to the PostgreSQL registry at db:5432")
        return self._store.commit(new)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def _with_registry(workspace: Workspace, registry: Any) -> Workspace:
    workspace.registry = registry
    return workspace


def test_a_registry_that_drops_once_mid_rollout_still_gets_every_record(packaged: tuple[Path, str, Path]) -> None:
    ws, image, fleet = packaged
    with Workspace(ws) as workspace:
        dropping = _Dropping(workspace.registry, failures=2)
        _with_registry(workspace, dropping)
        report = deploy(workspace, DeployConfig(ref=image[:12], fleet=fleet, parallel=3))
        assert [u.unit for u in report.units] == list(UNITS)
        assert report.unrecorded == [] and dropping.tries == len(UNITS) + 2
        assert sorted(r.name for r in workspace.registry.find(kind="deployment")) == list(UNITS)


def test_a_registry_that_stays_down_loses_nothing_and_the_next_command_writes_the_records(
        packaged: tuple[Path, str, Path]) -> None:
    ws, image, fleet = packaged
    with Workspace(ws) as workspace:
        real = workspace.registry
        _with_registry(workspace, _Dropping(real, failures=10**6))
        report = deploy(workspace, DeployConfig(ref=image[:12], fleet=fleet, parallel=2))
        # every unit deployed (here: found unreachable) has its result in the report, none was dropped
        assert [u.unit for u in report.units] == list(UNITS) and all(u.result == "unreachable" for u in report.units)
        assert report.unrecorded == list(UNITS)
        problem = report.recording_problem()
        assert "road-1, road-2, road-3" in problem and report.pending_file in problem and "lost the connection" in problem
        saved = json.loads(Path(report.pending_file).read_text())
        assert [entry["name"] for entry in saved] == list(UNITS)
        assert real.find(kind="deployment") == []
        _with_registry(workspace, real)
        rows = fleet_status(workspace, fleet)  # the next command with this workspace writes them
        assert all(row["last_deployment"]["deployment"] == report.deployment for row in rows)
        records = real.find(kind="deployment")
        assert sorted(r.name for r in records) == list(UNITS)
        assert all({link.input_id for link in real.links_from(r.id)} >= {image} for r in records)
        assert not list((ws / PENDING_DIR).glob("*.json"))
        assert write_pending_records(workspace) == []  # nothing written twice


def test_deploy_prints_the_report_and_names_the_unrecorded_units(packaged: tuple[Path, str, Path], tmp_path: Path) -> None:
    """The CLI: the report is printed whole, then exit 5 saying which records are missing and how they are kept."""
    ws, image, fleet = packaged
    # The registry refuses writes of deployment records: a trigger stands in for a server that rejects them.
    import sqlite3

    conn = sqlite3.connect(ws / "registry.db")
    conn.execute("CREATE TRIGGER refuse_deployments BEFORE INSERT ON records WHEN NEW.kind = 'deployment' "
                 "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END")
    conn.commit()
    conn.close()
    env_code = ("import sys; from toolchain.deploy import rollout; rollout.RECORD_FIRST_WAIT_S = 0.01; "
                "from toolchain.cli.main import main; sys.exit(main())")
    run = subprocess.run([sys.executable, "-c", env_code, "--workspace", str(ws), "--json", "deploy", image[:12],
                          "--fleet", str(fleet)], capture_output=True, text=True, timeout=120)
    out = json.loads(run.stdout)
    assert run.returncode == 5, run.stderr
    assert [u["unit"] for u in out["units"]] == list(UNITS) and out["unrecorded"] == list(UNITS)
    assert "road-1, road-2, road-3" in run.stderr and PENDING_DIR in run.stderr

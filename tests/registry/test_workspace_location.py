"""Registry, blobs and local state in three places (--registry, --blobs, --workspace and their variables)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import make_image_folder, run_main
from toolchain.errors import InputNotFoundError, UsageError
from toolchain.registry import NewRecord
from toolchain.workspace import Workspace, WorkspaceLocation

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_location_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TOOLCHAIN_REGISTRY", "TOOLCHAIN_BLOBS", "TOOLCHAIN_HOME"):
        monkeypatch.delenv(name, raising=False)


def test_by_default_the_workspace_holds_all_three_as_before(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    with Workspace(root) as ws:
        sha = ws.blobs.put_bytes(b"weights")
        ws.registry.commit(NewRecord(kind="model", name="m", body={"w": sha}, blobs=((sha, "weights"),)))
        assert ws.location == WorkspaceLocation(root=root, registry_uri=f"sqlite:///{root / 'registry.db'}", blobs=root)
        assert ws.location.default_registry and ws.location.has_registry()
    assert (root / "registry.db").is_file() and (root / "objects" / sha[:2] / sha[2:]).is_file()
    assert not WorkspaceLocation.resolve(tmp_path / "empty").has_registry()  # nothing to open before the first write


def test_registry_blobs_and_local_state_in_three_places(tmp_path: Path) -> None:
    local, shared = tmp_path / "home", tmp_path / "shared"
    (shared / "blobs").mkdir(parents=True)
    uri = f"sqlite:///{shared / 'registry' / 'registry.db'}"
    with Workspace(local, registry_uri=uri, blobs=shared / "blobs") as ws:
        sha = ws.blobs.put_bytes(b"engine")
        ws.registry.commit(NewRecord(kind="build", name="b", body={"engine": sha}, blobs=((sha, "engine"),)))
        assert ws.root == local and not ws.location.default_registry and ws.location.has_registry()
    assert (shared / "blobs" / "objects" / sha[:2] / sha[2:]).is_file()
    assert (shared / "registry" / "registry.db").is_file()
    assert sorted(p.name for p in local.iterdir()) == []  # local state only: nothing of the registry or blobs
    # A second workspace (another user, another host's TOOLCHAIN_HOME) sees the same records and blobs.
    with Workspace(tmp_path / "other-home", registry_uri=uri, blobs=f"file://{shared / 'blobs'}") as other:
        (record,) = other.registry.find(kind="build")
        assert other.blobs.read_bytes(record.body["engine"]) == b"engine"


def test_the_variables_set_the_places_and_options_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "env-blobs").mkdir()
    (tmp_path / "flag-blobs").mkdir()
    monkeypatch.setenv("TOOLCHAIN_REGISTRY", f"sqlite:///{tmp_path / 'env.db'}")
    monkeypatch.setenv("TOOLCHAIN_BLOBS", str(tmp_path / "env-blobs"))
    env = WorkspaceLocation.resolve(tmp_path / "ws")
    assert (env.registry_uri, env.blobs) == (f"sqlite:///{tmp_path / 'env.db'}", tmp_path / "env-blobs")
    flags = WorkspaceLocation.resolve(tmp_path / "ws", registry_uri=f"sqlite:///{tmp_path / 'flag.db'}",
                                      blobs=tmp_path / "flag-blobs")
    assert (flags.registry_uri, flags.blobs) == (f"sqlite:///{tmp_path / 'flag.db'}", tmp_path / "flag-blobs")


def test_a_blob_store_named_explicitly_must_exist(tmp_path: Path) -> None:
    """A share that is not mounted must not silently become an empty local store."""
    with pytest.raises(InputNotFoundError, match="mkdir -p .*not-mounted"):
        Workspace(tmp_path / "ws", blobs=tmp_path / "not-mounted")
    with pytest.raises(UsageError, match="file:// URL, not s3://"):
        Workspace(tmp_path / "ws", blobs="s3://bucket/blobs")


def test_the_global_options_reach_every_command(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    lake = tmp_path / "lake"
    make_image_folder(lake, per_class=3, seed=5)
    blobs, registry = tmp_path / "blobs", tmp_path / "team" / "registry.db"
    blobs.mkdir()
    base = ["--workspace", tmp_path / "ws", "--registry", f"sqlite:///{registry}", "--blobs", blobs, "--json"]
    ingested = run_main([*base, "data", "ingest", lake, "--name", "cars", "--workers", "1"], capsys)
    assert ingested.code == 0, ingested.err
    assert registry.is_file() and list(blobs.glob("objects/*/*"))
    assert not (tmp_path / "ws" / "registry.db").exists() and not list((tmp_path / "ws").glob("objects/*/*"))
    # The same options from the variables.
    monkeypatch.setenv("TOOLCHAIN_REGISTRY", f"sqlite:///{registry}")
    monkeypatch.setenv("TOOLCHAIN_BLOBS", str(blobs))
    listed = run_main(["--workspace", tmp_path / "elsewhere", "--json", "data", "list"], capsys)
    assert [d["ref"] for d in listed.json()["datasets"]] == ["cars@v1"]
    verified = run_main(["--workspace", tmp_path / "elsewhere", "--json", "registry", "verify"], capsys)
    assert verified.code == 0 and verified.json()["passed"] and verified.json()["checked"] > 0
    # Without them, the workspace's own (empty) registry: nothing leaks between places.
    monkeypatch.delenv("TOOLCHAIN_REGISTRY")
    monkeypatch.delenv("TOOLCHAIN_BLOBS")
    assert run_main(["--workspace", tmp_path / "ws", "--json", "data", "list"], capsys).json() == {"datasets": []}


def test_a_postgres_registry_without_the_extra_is_exit_5_naming_it(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "hide_modules.py"), "psycopg", "--", "--workspace", str(tmp_path / "ws"),
         "--registry", "postgresql://ann:pw-in-uri@127.0.0.1:5/registry", "registry", "list"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "COLUMNS": "400"},
    )
    assert run.returncode == 5, run.stdout + run.stderr
    assert "[postgres] extra" in run.stderr and "pip install 'toolchain[postgres]'" in run.stderr
    assert "Traceback" not in run.stderr and "pw-in-uri" not in run.stderr

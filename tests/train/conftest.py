"""A tiny ingested dataset shared by the training tests (made once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.data.lakes import write_sequence_lake
from toolchain.data.ingest import IngestConfig, ingest
from toolchain.workspace import Workspace

# Small enough to train in seconds on 2 CPU cores.
TINY = ("--set", "input_size=32", "--set", "batch_size=16", "--set", "width=0.5")


@pytest.fixture(scope="session")
def tiny_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lake = tmp_path_factory.mktemp("lake")
    write_sequence_lake(lake, sequences=80, frames=2)
    return lake


@pytest.fixture()
def tiny_workspace(tmp_path: Path, tiny_lake: Path) -> Path:
    root = tmp_path / "ws"
    with Workspace(root) as ws:
        ingest(ws, IngestConfig(source=str(tiny_lake), name="tiny", image_size=32, workers=1))
    return root

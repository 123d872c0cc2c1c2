"""Fixtures: a workspace with a tiny classifier registered as export would, and its builds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.handoff.models import register_classifier
from toolchain.artifacts import Artifact
from toolchain.workspace import Workspace


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    with Workspace(tmp_path / "ws") as ws:
        yield ws


@pytest.fixture
def onnx(workspace: Workspace, tmp_path: Path) -> Artifact:
    """An FP32 float-nchw classifier with a dynamic batch and export's metadata."""
    return register_classifier(workspace, tmp_path)

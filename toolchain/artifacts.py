"""Artifacts: files (ONNX, INT8 ONNX, engines, plots) stored as blobs with a registry record.

An artifact can be named by its record id (or a unique prefix), ``NAME@vN``, or by the path of a
file whose bytes are a registered artifact's blob (e.g. the ``path`` that ``export`` printed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolchain.errors import InputNotFoundError
from toolchain.hashing import sha256_file
from toolchain.registry import NewRecord, Record, Version
from toolchain.workspace import Workspace


@dataclass(frozen=True, kw_only=True)
class Artifact:
    """A registered file: its record, version (if any) and where its bytes are."""

    record: Record
    version: Version | None
    path: Path

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def type(self) -> str:
        return str(self.record.body["type"])

    @property
    def ref(self) -> str:
        return f"{self.version.name}@v{self.version.number}" if self.version else self.record.id[:12]


def register_file(
    workspace: Workspace, source: Path, *, name: str, type: str, body: dict[str, Any],
    links: tuple[tuple[str, str], ...] = (),
) -> Artifact:
    """Store ``source`` as a blob and record it as an artifact ``NAME@vN`` (idempotent for equal content)."""
    sha = workspace.blobs.put_file(source)
    record, version, _ = workspace.registry.commit(NewRecord(
        kind="artifact", name=name, body={"type": type, "blob": sha, "size": source.stat().st_size, **body},
        links=links, blobs=((sha, type),), version=True,
    ))
    return Artifact(record=record, version=version, path=workspace.blobs.require(sha))


def resolve_artifact(workspace: Workspace, ref: str) -> Artifact:
    """Find an artifact by id, prefix, ``NAME@vN`` or the path of its file."""
    candidate = Path(ref)
    if ("/" in ref or os.sep in ref or candidate.suffix) and candidate.is_file():
        sha = sha256_file(candidate)
        owners = [b.record_id for b in workspace.registry.blob_refs() if b.sha256 == sha]
        records = [r for r in (workspace.registry.get(i) for i in owners) if r is not None and r.kind == "artifact"]
        if not records:
            raise InputNotFoundError(
                f"{ref} is not a registered artifact (its sha256 {sha[:12]} is unknown to this workspace); "
                "use the id or path printed by `toolchain export` / `toolchain quantize`"
            )
        record = records[0]
        version = workspace.registry.version_of("artifact", record.name, record.id)
    else:
        resolved = workspace.resolve(ref, kind="artifact")
        record, version = resolved.record, resolved.version
    return Artifact(record=record, version=version, path=workspace.blobs.require(record.body["blob"]))

"""Stage caching for the pipeline: a stage whose inputs, config and code version are unchanged is skipped.

A finished stage is a ``stage`` record: its key (sha256 over the stage name, its config section, the
ids of its inputs and the code version of the modules it runs) and its outputs (record ids and
small values). A rerun looks the key up; when every output record (and its blob) still exists the
stage is skipped and its outputs reused. A stage killed halfway has no record, so a rerun starts it
again, and the stage's own checkpoints (training resumes from its last epoch) carry on from there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from toolchain.codeversion import code_version
from toolchain.hashing import digest_json
from toolchain.registry import NewRecord
from toolchain.workspace import Workspace


@dataclass(frozen=True, kw_only=True)
class StageOutcome:
    """What a stage produced (``outputs``: names -> record ids or values) and whether it was skipped."""

    stage: str
    key: str
    outputs: dict[str, Any]
    skipped: bool
    seconds: float
    record: str = ""


def stage_key(stage: str, config: Any, inputs: dict[str, Any], code: tuple[str, ...]) -> str:
    """The cache key of one stage run."""
    return digest_json({"stage": stage, "config": config, "inputs": inputs, "code": code_version(*code)})


def find_stage(workspace: Workspace, key: str) -> dict[str, Any] | None:
    """The outputs of a finished stage with ``key`` whose output records still exist, else None."""
    for record in workspace.registry.find(kind="stage"):
        if record.body.get("key") != key:
            continue
        ids = record.body.get("records", [])
        if all(_alive(workspace, i) for i in ids):
            return dict(record.body["outputs"]) | {"_record": record.id}
    return None


def _alive(workspace: Workspace, record_id: str) -> bool:
    record = workspace.registry.get(record_id)
    if record is None:
        return False
    blob = record.body.get("blob")
    return not blob or workspace.blobs.has(blob)


def save_stage(workspace: Workspace, *, pipeline: str, stage: str, key: str, outputs: dict[str, Any],
               records: list[str], seconds: float) -> str:
    """Record a finished stage; returns the stage record's id."""
    record, _, _ = workspace.registry.commit(NewRecord(
        kind="stage", name=f"{pipeline}/{stage}",
        body={"key": key, "stage": stage, "pipeline": pipeline, "outputs": outputs, "records": records,
              "seconds": round(seconds, 3), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        links=tuple((r, "output") for r in dict.fromkeys(records)),
    ))
    return record.id

"""Typed values the registry stores and returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from toolchain.redaction import scrub, scrub_data

# Every stage of the pipeline records one of these kinds (schema designed up front, see DESIGN.md).
RECORD_KINDS: tuple[str, ...] = (
    "dataset",  # a dataset version: manifest digest, shards, splits, quarantine report
    "run",  # a training run (or search trial): config, dataset version, code version, metrics
    "model",  # a trained checkpoint registered as NAME@vN
    "evaluation",  # metrics of a model/artifact on a dataset split, gate outcome
    "artifact",  # ONNX, INT8 ONNX, checkpoints, plots
    "build",  # an engine for a target (TensorRT plan or ONNX Runtime artifact)
    "benchmark",  # a latency report of an artifact on a device
    "image",  # a packaged runtime container image
    "push",  # an image pushed to a container registry: its manifest digest, which units pull
    "deployment",  # a rollout of an image to roadside units
    "stage",  # a finished pipeline stage: its cache key and the records it produced (toolchain pipeline)
)


@dataclass(frozen=True, kw_only=True)
class Record:
    """An immutable registry record.

    Attributes:
        id: sha256 identity (canonical JSON digest of the body, or a content digest such as a
            dataset manifest's).
        kind: One of :data:`RECORD_KINDS`.
        name: Human name (``highway`` in ``highway@v3``), may be empty.
        body: JSON-serialisable content; includes the config that produced the record.
        created_at: ISO-8601 UTC time of the first insert.
        created_by: ``user@host`` of the first insert.
        toolchain_version: Version of the code that made it.
    """

    id: str
    kind: str
    name: str
    body: dict[str, Any]
    created_at: str
    created_by: str
    toolchain_version: str


@dataclass(frozen=True, kw_only=True)
class Link:
    """Lineage edge: ``record_id`` was made from ``input_id`` in the given ``role``."""

    record_id: str
    input_id: str
    role: str


@dataclass(frozen=True, kw_only=True)
class BlobRef:
    """A blob a record depends on (for verify and gc)."""

    record_id: str
    sha256: str
    role: str


@dataclass(frozen=True, kw_only=True)
class Version:
    """``name@vN`` pointing at a record."""

    kind: str
    name: str
    number: int
    record_id: str
    created_at: str


@dataclass(frozen=True, kw_only=True)
class Alias:
    """Where an alias points now: ``name@alias`` (for one ``target``, or every target when empty)."""

    kind: str
    name: str
    alias: str
    target: str
    record_id: str


@dataclass(frozen=True, kw_only=True)
class AliasChange:
    """One entry of an alias's history (who pointed it where, when, from what)."""

    kind: str
    name: str
    alias: str
    target: str
    old_record_id: str | None
    new_record_id: str | None
    at: str
    by: str
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class CachedImage:
    """A decoded image already stored in a shard (the incremental-ingest index)."""

    content_sha256: str
    shard_sha256: str
    row: int
    width: int
    height: int
    phash: int
    pixel_sha256: str


@dataclass(frozen=True, kw_only=True)
class NewRecord:
    """What a stage hands the store to commit atomically."""

    kind: str
    name: str
    body: dict[str, Any]
    id: str | None = None
    links: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # (input_id, role)
    blobs: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # (sha256, role)
    version: bool = False  # also register as the next NAME@vN of this kind

    def __post_init__(self) -> None:
        # The registry is shared and shown (`registry show`, deploy status): no URL in a record keeps
        # its credentials, whichever stage wrote it (toolchain.redaction's one rule).
        object.__setattr__(self, "body", scrub_data(self.body))
        object.__setattr__(self, "name", scrub(self.name))


@dataclass(frozen=True, kw_only=True)
class Resolved:
    """A reference resolved to a record (and the version it was named by, if any)."""

    record: Record
    version: Version | None

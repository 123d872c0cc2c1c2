"""Reading dataset versions back: list, show, manifest, diff, and pixel access for training."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from toolchain.data.manifest import Manifest, ManifestEntry
from toolchain.data.shards import ShardLayout
from toolchain.registry import Record, Version
from toolchain.workspace import Workspace


@dataclass(frozen=True, kw_only=True)
class DatasetVersion:
    """One dataset version with its manifest and shard layout loaded."""

    record: Record
    version: Version | None
    manifest: Manifest
    layout: ShardLayout

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def ref(self) -> str:
        return f"{self.version.name}@v{self.version.number}" if self.version else self.record.id[:12]

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.manifest.header["classes"])

    def split_indices(self, split: str) -> np.ndarray:
        return np.array([i for i, _ in self.manifest.iter_split(split)], dtype=np.int64)

    def load_split(self, workspace: Workspace, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(images (N, S, S, 3) uint8, labels (N,) int64)`` of one split, labels indexing :attr:`classes`."""
        indices = self.split_indices(split)
        class_index = {c: i for i, c in enumerate(self.classes)}
        labels = np.array([class_index[self.manifest.entries[i].label] for i in indices], dtype=np.int64)
        if len(indices) == 0:
            size = self.manifest.header["image_size"]
            return np.empty((0, size, size, 3), dtype=np.uint8), labels
        return self.layout.gather(workspace.blobs, indices), labels


def load_dataset(workspace: Workspace, ref: str) -> DatasetVersion:
    """Resolve ``ref`` (``NAME``, ``NAME@vN``, id prefix) and load its manifest and layout."""
    resolved = workspace.resolve(ref, kind="dataset")
    body = resolved.record.body
    manifest = Manifest.from_bytes(workspace.blobs.read_bytes(body["manifest"]))
    layout = ShardLayout.from_json(json.loads(workspace.blobs.read_bytes(body["layout"])))
    return DatasetVersion(record=resolved.record, version=resolved.version, manifest=manifest, layout=layout)


def list_datasets(workspace: Workspace) -> list[dict[str, Any]]:
    """One summary row per dataset version, oldest first within each name."""
    rows = []
    for version in workspace.registry.versions("dataset"):
        record = workspace.registry.get(version.record_id)
        if record is None:
            continue
        rows.append({
            "ref": f"{version.name}@v{version.number}",
            "name": version.name,
            "number": version.number,
            "version": record.id,
            "images": record.body["stats"]["images"],
            "quarantined": record.body["quarantined"]["count"],
            "image_size": record.body["header"]["image_size"],
            "classes": record.body["header"]["classes"],
            "created_at": version.created_at,
        })
    return rows


def describe_dataset(workspace: Workspace, dataset: DatasetVersion) -> dict[str, Any]:
    """Everything ``data show`` prints about one version."""
    body = dataset.record.body
    quarantine = [
        json.loads(line) for line in workspace.blobs.read_bytes(body["quarantine"]).decode().splitlines() if line
    ]
    other_names = [
        f"{v.name}@v{v.number}" for v in workspace.registry.versions("dataset") if v.record_id == dataset.id
    ]
    return {
        "version": dataset.id,
        "refs": other_names,
        "created_at": dataset.record.created_at,
        "created_by": dataset.record.created_by,
        "toolchain_version": dataset.record.toolchain_version,
        "header": body["header"],
        "source": body["source"],
        "config": body["config"],
        "counts": body["counts"],
        "stats": body["stats"],
        "parent": body["parent"],
        "shards": len(dataset.layout.shards),
        "quarantined": {**body["quarantined"], "items": quarantine},
    }


def manifest_rows(dataset: DatasetVersion) -> list[dict[str, Any]]:
    """The manifest entries as plain dicts (``data manifest`` prints them as JSON lines)."""
    return [_entry_json(e) for e in dataset.manifest.entries]


def _entry_json(entry: ManifestEntry) -> dict[str, Any]:
    return entry.to_json()


def diff_datasets(a: DatasetVersion, b: DatasetVersion) -> dict[str, Any]:
    """What changed from ``a`` to ``b``: images added, removed, relabelled, and moved between splits."""
    old = {e.sha256: e for e in a.manifest.entries}
    new = {e.sha256: e for e in b.manifest.entries}
    added = sorted(new.keys() - old.keys())
    removed = sorted(old.keys() - new.keys())
    common = sorted(old.keys() & new.keys())
    relabelled = [
        {"sha256": s, "from": old[s].label, "to": new[s].label, "source": new[s].source}
        for s in common if old[s].label != new[s].label
    ]
    moved = [
        {"sha256": s, "from": old[s].split, "to": new[s].split, "source": new[s].source}
        for s in common if old[s].split != new[s].split
    ]
    return {
        "from": a.id,
        "to": b.id,
        "summary": {"added": len(added), "removed": len(removed), "relabelled": len(relabelled), "moved": len(moved),
                    "unchanged": len(common) - len({r["sha256"] for r in relabelled + moved})},
        "added": [_entry_json(new[s]) for s in added],
        "removed": [_entry_json(old[s]) for s in removed],
        "relabelled": relabelled,
        "moved": moved,
    }

"""The dataset manifest: the logical content of a dataset version, and its digest (the version id).

The manifest is JSON lines: a header (format, image size, transform, split fractions, grouping,
classes) followed by one entry per image, sorted by content sha256. It names images by content
and by their path relative to the lake, not by where the lake or the shards live, so the same lake
ingested twice (or resumed after a crash) has the same digest.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from toolchain.errors import CorruptStoreError
from toolchain.hashing import canonical_json, sha256_bytes

MANIFEST_FORMAT = "toolchain.dataset-manifest/1"


@dataclass(frozen=True, kw_only=True)
class ManifestEntry:
    """One image of a dataset version."""

    sha256: str
    label: str
    split: str
    group: str
    source: str
    width: int
    height: int

    def to_json(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256, "label": self.label, "split": self.split, "group": self.group,
            "source": self.source, "width": self.width, "height": self.height,
        }


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """Header plus entries; :attr:`digest` is the dataset version id."""

    header: dict[str, Any]
    entries: tuple[ManifestEntry, ...]

    def to_bytes(self) -> bytes:
        lines = [canonical_json(self.header)]
        lines.extend(canonical_json(e.to_json()) for e in self.entries)
        return ("\n".join(lines) + "\n").encode("utf-8")

    @property
    def digest(self) -> str:
        return sha256_bytes(self.to_bytes())

    @classmethod
    def build(cls, header: dict[str, Any], entries: Iterable[ManifestEntry]) -> Manifest:
        return cls(header={"format": MANIFEST_FORMAT, **header}, entries=tuple(sorted(entries, key=lambda e: e.sha256)))

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        lines = data.decode("utf-8").splitlines()
        if not lines:
            raise CorruptStoreError("dataset manifest is empty")
        header = json.loads(lines[0])
        if header.get("format") != MANIFEST_FORMAT:
            raise CorruptStoreError(f"unknown manifest format {header.get('format')!r}; upgrade toolchain")
        return cls(header=header, entries=tuple(ManifestEntry(**json.loads(line)) for line in lines[1:] if line))

    def iter_split(self, split: str) -> Iterator[tuple[int, ManifestEntry]]:
        for index, entry in enumerate(self.entries):
            if entry.split == split:
                yield index, entry

    def counts(self, splits: Sequence[str], classes: Sequence[str]) -> dict[str, dict[str, int]]:
        """Images per split and class, plus ``total`` per split and an ``all`` row."""
        table = Counter((e.split, e.label) for e in self.entries)
        result: dict[str, dict[str, int]] = {}
        for split in [*splits, "all"]:
            row = {c: (sum(table[(s, c)] for s in splits) if split == "all" else table[(split, c)]) for c in classes}
            row["total"] = sum(row.values())
            result[split] = row
        return result

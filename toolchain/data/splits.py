"""Deterministic, growth-stable train/val/test assignment.

A group's split is a function of the sha256 of its key, so the same group always lands in the same
split whatever else is in the lake. Groups are the user's grouping (sequence, camera) joined with
near-duplicate clusters, so neighbouring frames never straddle train and test. Images present in
the previous version of the dataset keep their split; new images that join an existing cluster
take that cluster's split.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from toolchain.errors import UsageError

SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True, kw_only=True)
class SplitFractions:
    """Fractions of groups assigned to train, val and test (they sum to 1)."""

    train: float = 0.8
    val: float = 0.1
    test: float = 0.1

    @classmethod
    def parse(cls, text: str) -> SplitFractions:
        """Parse ``"0.8,0.1,0.1"`` (or percentages ``"80,10,10"``)."""
        try:
            values = [float(part) for part in text.split(",")]
        except ValueError as exc:
            raise UsageError(f"--split '{text}' must be three numbers like 0.8,0.1,0.1") from exc
        if len(values) != 3 or any(v < 0 for v in values) or sum(values) <= 0:
            raise UsageError(f"--split '{text}' must be three non-negative numbers like 0.8,0.1,0.1")
        total = sum(values)
        if abs(total - 1.0) > 1e-6 and abs(total - 100.0) > 1e-6:
            raise UsageError(f"--split '{text}' must sum to 1 (or 100); it sums to {total:g}")
        train, val, test = (v / total for v in values)
        return cls(train=train, val=val, test=test)

    def as_list(self) -> list[float]:
        return [round(self.train, 6), round(self.val, 6), round(self.test, 6)]

    def split_of(self, key: str) -> str:
        """The split of a group key: uniform hash of the key against cumulative fractions."""
        u = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64
        if u < self.train:
            return "train"
        if u < self.train + self.val:
            return "val"
        return "test"


def assign_clusters(
    clusters: Sequence[Sequence[int]],
    keys: Sequence[str],
    fractions: SplitFractions,
    inherited: Mapping[int, str],
) -> tuple[list[str], int]:
    """Split of every item, given clusters of item indices that must stay together.

    Args:
        clusters: Partition of item indices.
        keys: Group key of every item; a new cluster's split is that of its smallest key.
        fractions: Split fractions.
        inherited: Split each item had in the parent version (kept unchanged).

    Returns:
        ``(split per item, number of clusters whose parent items already disagreed)``.
    """
    splits = [""] * len(keys)
    disagreements = 0
    for members in clusters:
        old = Counter(inherited[i] for i in members if i in inherited)
        if old:
            if len(old) > 1:
                disagreements += 1
            # Most common old split; ties go to the later split (test beats train) to protect evaluation.
            chosen = max(old, key=lambda s: (old[s], SPLITS.index(s)))
        else:
            chosen = fractions.split_of(min(keys[i] for i in members))
        for i in members:
            splits[i] = inherited.get(i, chosen)
    return splits, disagreements

"""Near-duplicate search over perceptual hashes (locality-sensitive hashing on bit samples).

Frames of one vehicle in a CCTV sequence differ by a few bits of pHash. Comparing every pair is
quadratic, so each of ``tables`` hash tables keys images by a fixed random sample of ``bits`` hash
bits; images that share a key in any table become candidates, and candidates within
``max_distance`` Hamming distance are near-duplicates. With the defaults a pair at distance 8
collides in at least one table with probability ~0.99, and unrelated images rarely do.
"""

from __future__ import annotations

import numpy as np

HASH_BITS = 63


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distance between two uint64 arrays."""
    return np.bitwise_count(np.bitwise_xor(a, b)).astype(np.int64)


def near_duplicate_pairs(
    hashes: np.ndarray, max_distance: int, *, tables: int = 24, bits: int = 14, window: int = 16, seed: int = 0
) -> np.ndarray:
    """Index pairs ``(i, j)`` with ``i < j`` whose hashes differ in at most ``max_distance`` bits.

    Args:
        hashes: uint64 perceptual hashes, one per image.
        max_distance: Largest Hamming distance that counts as a near-duplicate (0 = identical).
        tables: Number of LSH tables (more finds more pairs, costs linearly).
        bits: Hash bits sampled per table.
        window: Within a bucket, each image is compared with this many following images (bounds
            the cost of huge buckets such as blank frames).
        seed: Seed of the bit samples (fixed: results are deterministic).

    Returns:
        An ``(M, 2)`` int64 array of unique pairs, sorted.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    n = len(hashes)
    if n < 2:
        return np.empty((0, 2), dtype=np.int64)
    rng = np.random.default_rng(seed)
    bit_matrix = ((hashes[:, None] >> np.arange(HASH_BITS, dtype=np.uint64)[None, :]) & np.uint64(1)).astype(np.uint32)
    found: list[np.ndarray] = []
    for _ in range(tables):
        positions = rng.choice(HASH_BITS, size=bits, replace=False)
        keys = (bit_matrix[:, positions] << np.arange(bits, dtype=np.uint32)[None, :]).sum(axis=1)
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        for offset in range(1, min(window, n - 1) + 1):
            same = sorted_keys[offset:] == sorted_keys[:-offset]
            if not same.any():
                break
            left = order[:-offset][same]
            right = order[offset:][same]
            close = hamming(hashes[left], hashes[right]) <= max_distance
            if close.any():
                found.append(np.stack([np.minimum(left[close], right[close]), np.maximum(left[close], right[close])], axis=1))
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(found).astype(np.int64), axis=0)


class UnionFind:
    """Disjoint sets over ``0..n-1`` with path halving and union by size."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))
        self.size = [1] * n

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]

    def components(self) -> list[list[int]]:
        """Members of every set, each list sorted, lists ordered by their first member."""
        groups: dict[int, list[int]] = {}
        for x in range(len(self.parent)):
            groups.setdefault(self.find(x), []).append(x)
        return sorted(groups.values(), key=lambda members: members[0])

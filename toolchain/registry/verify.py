"""Re-hash stored blobs: nothing is packaged or deployed from a blob that is missing or altered.

:func:`verify_blobs` is the library entry ``package`` and ``deploy`` call before shipping;
:func:`verify` is ``toolchain registry verify [REF]`` (every referenced blob, or those of one
record and its lineage).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from toolchain.errors import CorruptStoreError
from toolchain.hashing import is_sha256, sha256_file

if TYPE_CHECKING:  # the workspace sits above the registry: only its type is named here
    from toolchain.workspace import Workspace


@dataclass(frozen=True, kw_only=True)
class BlobProblem:
    """A blob that failed verification.

    Attributes:
        sha256: The blob's name (the digest its bytes must have).
        problem: ``missing``, ``altered`` (bytes hash to something else), ``unreadable`` or
            ``invalid`` (the reference is not a sha256 digest).
        detail: The actual digest of altered bytes, or the OS error.
        path: Where the blob should be.
        records: ``(record id, kind, name, role)`` of every record that references it.
    """

    sha256: str
    problem: str
    detail: str
    path: str
    records: tuple[tuple[str, str, str, str], ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256, "problem": self.problem, "detail": self.detail, "path": self.path,
            "records": [{"id": i, "kind": k, "name": n, "role": r} for i, k, n, r in self.records],
        }


@dataclass(frozen=True, kw_only=True)
class VerifyReport:
    """Outcome of re-hashing a set of blobs."""

    checked: int
    bytes: int
    problems: tuple[BlobProblem, ...]
    seconds: float
    scope: str = "all"

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "scope": self.scope, "passed": self.passed, "checked": self.checked, "bytes": self.bytes,
            "failed": len(self.problems), "problems": [p.to_json() for p in self.problems],
            "seconds": round(self.seconds, 3),
        }

    def error(self) -> CorruptStoreError:
        """The error to raise when verification failed (exit code 4)."""
        counts: dict[str, int] = {}
        for p in self.problems:
            counts[p.problem] = counts.get(p.problem, 0) + 1
        shown = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
        first = self.problems[0]
        owners = ", ".join(f"{k} {n or i[:12]}" for i, k, n, _ in first.records[:3]) or "no record"
        return CorruptStoreError(
            f"{len(self.problems)} of {self.checked} blobs failed verification ({shown}); first: {first.sha256[:12]} "
            f"{first.problem} (used by {owners}). Nothing may be shipped from them: re-create the records that use "
            "them (rerun the stage that made them) or restore the workspace's objects/ from a backup"
        )

    def raise_for_problems(self) -> None:
        """Raise :class:`CorruptStoreError` when any blob failed."""
        if self.problems:
            raise self.error()


def _check(workspace: Workspace, sha: str) -> tuple[str, int, str, str] | None:
    """``(problem, size, detail, path)`` or ``None`` with the size when the blob is intact."""
    if not is_sha256(sha):
        return "invalid", 0, "not a sha256 digest", ""
    path = workspace.blobs.path(sha)
    try:
        size = path.stat().st_size
        actual = sha256_file(path)
    except FileNotFoundError:
        return "missing", 0, "", str(path)
    except OSError as exc:
        return "unreadable", 0, str(exc), str(path)
    if actual != sha:
        return "altered", size, actual, str(path)
    return "", size, "", str(path)


def verify_blobs(workspace: Workspace, shas: Iterable[str], *, workers: int | None = None, scope: str = "blobs") -> VerifyReport:
    """Re-hash each blob in ``shas`` and report the missing or altered ones.

    Args:
        workspace: Workspace whose blob store holds them.
        shas: Blob digests (duplicates are checked once).
        workers: Hashing threads (hashlib releases the GIL on large reads); default: CPU count, at most 8.
        scope: Label for the report (what was verified).

    Returns:
        The report; call :meth:`VerifyReport.raise_for_problems` to refuse to continue on failure.
    """
    started = time.perf_counter()
    wanted = sorted(set(shas))
    owners: dict[str, list[tuple[str, str, str, str]]] = {}
    if wanted:
        records: dict[str, tuple[str, str]] = {}
        wanted_set = set(wanted)
        for ref in workspace.registry.blob_refs():
            if ref.sha256 in wanted_set:
                if ref.record_id not in records:
                    r = workspace.registry.get(ref.record_id)
                    records[ref.record_id] = (r.kind, r.name) if r else ("?", "")
                kind, name = records[ref.record_id]
                owners.setdefault(ref.sha256, []).append((ref.record_id, kind, name, ref.role))
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(lambda s: _check(workspace, s), wanted))
    problems = []
    total = 0
    for sha, (problem, size, detail, path) in zip(wanted, results):
        total += size
        if problem:
            problems.append(BlobProblem(sha256=sha, problem=problem, detail=detail, path=path,
                                        records=tuple(owners.get(sha, ()))))
    return VerifyReport(checked=len(wanted), bytes=total, problems=tuple(problems),
                        seconds=time.perf_counter() - started, scope=scope)


def verify(workspace: Workspace, ref: str | None = None, *, kind: str | None = None, target: str | None = None) -> VerifyReport:
    """``toolchain registry verify [REF]``: every blob any record references (and every shard the decoded-image
    index points into, which ingest reuses), or those of REF and its lineage."""
    if ref is None:
        shas = {b.sha256 for b in workspace.registry.blob_refs()} | workspace.registry.indexed_shards()
        return verify_blobs(workspace, shas, scope="all")
    from toolchain.registry.lineage import lineage

    tree = lineage(workspace, ref, kind=kind, target=target)
    shas = [b.sha256 for record, _, _ in tree.records for b in workspace.registry.blob_refs(record.id)]
    return verify_blobs(workspace, shas, scope=f"{tree.root.ref} and its lineage ({len(tree.records)} records)")

"""Finding and describing registry records: what ``toolchain registry list|show`` print.

References name a record of any kind: a full sha256 or a unique prefix, ``NAME`` (latest version),
``NAME@vN``, ``NAME@ALIAS``; records that have no versions (runs, builds, evaluations) can also be
named by ``NAME``, which then means the newest record of that name.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from toolchain.errors import InputNotFoundError, UsageError
from toolchain.registry.records import RECORD_KINDS, Record
from toolchain.registry.records import Resolved

if TYPE_CHECKING:  # the workspace sits above the registry: only its type is named here
    from toolchain.workspace import Workspace

_VERSION_RE = re.compile(r"^v?\d+$")


def check_kind(kind: str | None) -> None:
    """Refuse an unknown record kind with the list of known ones."""
    if kind is not None and kind not in RECORD_KINDS:
        raise UsageError(f"unknown record kind '{kind}'; use one of {', '.join(RECORD_KINDS)}")


def resolve_record(workspace: Workspace, ref: str, *, kind: str | None = None, target: str | None = None) -> Resolved:
    """Resolve ``ref`` to one record, of ``kind`` or of whichever kind it names uniquely.

    ``NAME@ALIAS`` uses the alias set for ``target`` (then the all-targets one). Without ``target``
    an alias set for several targets must point at the same record everywhere, else the caller is
    asked to name the target.

    Raises:
        InputNotFoundError: nothing matches.
        UsageError: the reference matches records of several kinds (pass ``kind``), an id prefix
            is ambiguous, or an alias differs between targets and none was named.
    """
    check_kind(kind)
    kinds = (kind,) if kind else RECORD_KINDS
    found: dict[str, Resolved] = {}
    name, _, selector = ref.strip().partition("@")
    if selector and not _VERSION_RE.match(selector) and selector != "latest":
        for candidate in kinds:
            resolved = _by_alias(workspace, candidate, name, selector, target)
            if resolved is not None:
                found[resolved.record.id] = resolved
    for candidate in kinds if not found else ():
        try:
            resolved = workspace.resolve(ref, kind=candidate)
        except InputNotFoundError:
            continue
        found[resolved.record.id] = resolved
    if not found and "@" not in ref:
        # Unversioned kinds (builds, runs, evaluations): NAME means the newest record of that name.
        for candidate in kinds:
            named = workspace.registry.find(kind=candidate, name=ref.strip())
            if named:
                found[named[-1].id] = Resolved(record=named[-1], version=None)
    if not found:
        where = f" {kind}" if kind else ""
        raise InputNotFoundError(
            f"no{where} record matches '{ref}'; list records with `toolchain registry list"
            + (f" --kind {kind}`" if kind else "`") + " (references: id prefix, NAME, NAME@vN, NAME@ALIAS)"
        )
    if len(found) > 1:
        shown = ", ".join(f"{r.record.kind} {r.record.id[:12]}" for r in found.values())
        raise UsageError(f"'{ref}' names {len(found)} records ({shown}); add --kind KIND or use an id prefix")
    return next(iter(found.values()))


def _by_alias(workspace: Workspace, kind: str, name: str, alias: str, target: str | None) -> Resolved | None:
    rows = [a for a in workspace.registry.aliases(kind=kind, name=name) if a.alias == alias]
    if target is not None:
        chosen = [a for a in rows if a.target == target] or [a for a in rows if a.target == ""]
    else:
        chosen = rows
    ids = {a.record_id for a in chosen}
    if not ids:
        return None
    if len(ids) > 1:
        targets = ", ".join(sorted(a.target or "(all targets)" for a in chosen))
        raise UsageError(f"{name}@{alias} points at different {kind}s per target ({targets}); add --target T")
    record = workspace.registry.get(ids.pop())
    if record is None:
        return None
    return Resolved(record=record, version=workspace.registry.version_of(kind, name, record.id))


def record_ref(workspace: Workspace, record: Record) -> str:
    """How a human names ``record``: ``NAME@vN`` when it has a version under its name, else an id prefix."""
    version = workspace.registry.version_of(record.kind, record.name, record.id) if record.name else None
    return f"{record.name}@v{version.number}" if version else record.id[:12]


def list_records(workspace: Workspace, *, kind: str | None = None, name: str | None = None) -> list[dict[str, Any]]:
    """One row per record (oldest first) with its versions and the aliases that point at it."""
    check_kind(kind)
    records = workspace.registry.find(kind=kind, name=name)
    versions: dict[str, list[str]] = {}
    for k in {r.kind for r in records}:
        for v in workspace.registry.versions(k):
            versions.setdefault(v.record_id, []).append(f"{v.name}@v{v.number}")
    aliases: dict[str, list[str]] = {}
    for a in workspace.registry.aliases(kind=kind, name=name):
        aliases.setdefault(a.record_id, []).append(_alias_text(a.name, a.alias, a.target))
    return [
        {
            "id": r.id, "kind": r.kind, "name": r.name, "versions": versions.get(r.id, []),
            "aliases": aliases.get(r.id, []), "created_at": r.created_at, "created_by": r.created_by,
            "summary": summarize(r),
        }
        for r in records
    ]


def _alias_text(name: str, alias: str, target: str) -> str:
    return f"{name}@{alias}" + (f" --target {target}" if target else "")


def show_record(workspace: Workspace, ref: str, *, kind: str | None = None, target: str | None = None) -> dict[str, Any]:
    """Everything about one record: body, versions, aliases, inputs, dependants and blobs."""
    record = resolve_record(workspace, ref, kind=kind, target=target).record
    registry = workspace.registry
    blobs = []
    for b in registry.blob_refs(record.id):
        path = workspace.blobs.path(b.sha256)
        present = path.is_file()
        blobs.append({"sha256": b.sha256, "role": b.role, "present": present,
                      "size": path.stat().st_size if present else None, "path": str(path)})
    return {
        "id": record.id,
        "kind": record.kind,
        "name": record.name,
        "ref": record_ref(workspace, record),
        "versions": [f"{v.name}@v{v.number}" for v in _versions_of(workspace, record)],
        "aliases": [
            {"name": a.name, "alias": a.alias, "target": a.target} for a in registry.aliases(record_id=record.id)
        ],
        "created_at": record.created_at,
        "created_by": record.created_by,
        "toolchain_version": record.toolchain_version,
        "summary": summarize(record),
        "inputs": [_link_row(workspace, link.input_id, link.role) for link in registry.links_from(record.id)],
        "used_by": [_link_row(workspace, link.record_id, link.role) for link in registry.links_to(record.id)],
        "blobs": blobs,
        "body": record.body,
    }


def _versions_of(workspace: Workspace, record: Record) -> list[Any]:
    return [v for v in workspace.registry.versions(record.kind) if v.record_id == record.id]


def _link_row(workspace: Workspace, record_id: str, role: str) -> dict[str, Any]:
    other = workspace.registry.get(record_id)
    if other is None:  # links have foreign keys; kept defensive for other stores
        return {"id": record_id, "role": role, "kind": None, "ref": record_id[:12]}
    return {"id": other.id, "role": role, "kind": other.kind, "ref": record_ref(workspace, other)}


# What is worth one line about each kind of record (dotted paths into the body).
_SUMMARY_FIELDS: dict[str, tuple[str, ...]] = {
    "dataset": ("stats.images", "counts", "manifest", "source.uri"),
    "run": ("role", "recipe_name", "params", "best_epoch", "val_accuracy", "world_size"),
    "model": ("architecture", "input_size", "classes", "parameters", "val_accuracy", "weights"),
    "artifact": ("type", "size", "blob", "opset", "input", "batch", "accuracy_drop", "method", "samples"),
    "build": ("target", "precision", "format", "architecture", "tensorrt_version", "compute_capability", "jetpack", "l4t",
              "dla_core", "runtime.name", "runtime.version", "blob"),
    "evaluation": ("split", "passed", "metrics.accuracy", "metrics.macro_recall"),
    "benchmark": ("target", "device", "artifact", "end_to_end", "latency_ms", "fps"),
    "image": ("tag", "target", "digest", "platform"),
    "deployment": ("unit", "target", "image", "result"),
}


def _dig(body: dict[str, Any], path: str) -> Any:
    value: Any = body
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def summarize(record: Record) -> dict[str, Any]:
    """The few body fields that identify a record of its kind (the full body is in ``show``)."""
    fields = _SUMMARY_FIELDS.get(record.kind, ())
    summary = {path: value for path in fields if (value := _dig(record.body, path)) is not None}
    if not summary:  # unknown shape: its scalar top-level fields
        summary = {k: v for k, v in record.body.items() if isinstance(v, (str, int, float, bool))}
    return summary


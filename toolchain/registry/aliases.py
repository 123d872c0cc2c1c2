"""Aliases per target, their history, and resolving ``NAME@ALIAS --target T`` to a build for T.

An alias is ``(kind, name, alias, target)`` -> record. ``highway-cls@production --target
jetson-orin-nano`` usually points at a model version; resolving it for a target walks the lineage
links downstream (model -> ONNX -> INT8 ONNX -> build) and returns the build whose recorded software
stack matches the target profile: target name, backend, CPU architecture and, for TensorRT, the
TensorRT version, GPU compute capability, JetPack/L4T and DLA core. An engine is never handed out
for a device it was not built for.

An alias set without ``--target`` applies to every target that has no alias of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from toolchain.errors import BadInputError, InputNotFoundError, MissingEnvironmentError, UsageError
from toolchain.registry.ops import check_kind, record_ref, resolve_record, summarize
from toolchain.registry.records import AliasChange, Record
from toolchain.registry.sqlite_store import current_user
from toolchain.targets.profile import Target, load_target

if TYPE_CHECKING:  # the workspace sits above the registry: only its type is named here
    from toolchain.workspace import Workspace

_ALIAS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_VERSION_RE = re.compile(r"^v?\d+$")
_RESERVED = ("latest",)
# Preferred precision when several builds match and none is asked for: the fastest that exists
# (an INT8 build exists only after quantize passed its accuracy gate).
_PRECISION_PREFERENCE = ("int8", "fp16", "fp32")


@dataclass(frozen=True, kw_only=True)
class AliasConfig:
    """Options of ``toolchain registry alias NAME ALIAS --to REF``."""

    name: str
    alias: str
    to: str | None = None  # vN, NAME@vN, an id prefix, another alias, or "previous"; None with remove
    target: str = ""
    kind: str = "model"
    reason: str = ""
    remove: bool = False

    def __post_init__(self) -> None:
        check_kind(self.kind)
        if not _ALIAS_RE.match(self.alias) or _VERSION_RE.match(self.alias) or self.alias in _RESERVED:
            raise UsageError(
                f"'{self.alias}' cannot be an alias: use a word such as production or staging "
                "(letters, digits, '.', '_', '-'; not vN or 'latest', which already mean versions)"
            )
        if self.remove == (self.to is not None):
            raise UsageError("give exactly one of --to REF (point the alias) or --remove")


@dataclass(frozen=True, kw_only=True)
class AliasResult:
    """One alias change, with the records it moved between."""

    change: AliasChange
    new_ref: str | None
    old_ref: str | None
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {**change_json(self.change), "new_ref": self.new_ref, "old_ref": self.old_ref, "warnings": list(self.warnings)}


def change_json(change: AliasChange) -> dict[str, Any]:
    """An alias history entry as plain JSON."""
    return {
        "kind": change.kind, "name": change.name, "alias": change.alias, "target": change.target,
        "from": change.old_record_id, "to": change.new_record_id, "at": change.at, "by": change.by,
        "reason": change.reason,
    }


def set_alias(workspace: Workspace, config: AliasConfig, *, by: str | None = None) -> AliasResult:
    """Point ``NAME@ALIAS`` (for ``config.target``, or every target) at a record, or remove it.

    ``to`` may be ``vN`` (a version of NAME), any reference to a record of ``kind`` that is a version
    of NAME (``NAME@vN``, id prefix, another alias such as ``NAME@staging``), or ``previous``: where
    this alias pointed before its last change (a rollback in one command).
    """
    registry = workspace.registry
    target = load_target(config.target).name if config.target else ""
    record: Record | None = None
    if config.to is not None:
        record = _alias_destination(workspace, config, target)
    old_id = registry.get_alias(kind=config.kind, name=config.name, alias=config.alias, target=target)
    if config.remove and old_id is None:
        raise InputNotFoundError(f"{_alias_label(config.name, config.alias, target)} is not set; nothing to remove")
    change = registry.set_alias(
        kind=config.kind, name=config.name, alias=config.alias, target=target,
        record_id=record.id if record else None, by=by or current_user(), reason=config.reason,
    )
    warnings = []
    if record is not None and target and config.kind in ("model", "artifact"):
        # Pointing an alias at a model that has no build for the target is allowed (build next),
        # but say so now rather than at deploy time.
        builds = downstream_builds(workspace, record)
        profile = load_target(target)
        if not any(not build_mismatches(b, profile) for b in builds):
            warnings.append(
                f"{record_ref(workspace, record)} has no build matching {target} yet; "
                f"`toolchain registry resolve {config.name}@{config.alias} --target {target}` will refuse it "
                f"until one exists (toolchain build ONNX --target {target})"
            )
    return AliasResult(
        change=change,
        new_ref=record_ref(workspace, record) if record else None,
        old_ref=_ref_of_id(workspace, change.old_record_id),
        warnings=tuple(warnings),
    )


def _alias_label(name: str, alias: str, target: str) -> str:
    return f"{name}@{alias}" + (f" for target {target}" if target else " (all targets)")


def _ref_of_id(workspace: Workspace, record_id: str | None) -> str | None:
    if record_id is None:
        return None
    record = workspace.registry.get(record_id)
    return record_ref(workspace, record) if record else record_id[:12]


def _alias_destination(workspace: Workspace, config: AliasConfig, target: str) -> Record:
    assert config.to is not None
    registry = workspace.registry
    to = config.to.strip()
    if to == "previous":
        history = [c for c in registry.alias_history(kind=config.kind, name=config.name, alias=config.alias)
                   if c.target == target]
        if not history or history[-1].old_record_id is None:
            raise InputNotFoundError(
                f"{_alias_label(config.name, config.alias, target)} has no previous value to roll back to; "
                f"see `toolchain registry alias {config.name} --history`"
            )
        previous = registry.get(history[-1].old_record_id)
        assert previous is not None  # alias rows reference records, which are undeletable
        return previous
    if _VERSION_RE.match(to):
        to = f"{config.name}@{to}"
    record = resolve_record(workspace, to, kind=config.kind).record
    if registry.version_of(config.kind, config.name, record.id) is None and record.name != config.name:
        raise UsageError(
            f"{to} is {record_ref(workspace, record)}, not a version of {config.name}; aliases of {config.name} "
            f"point at its own versions (see `toolchain registry list --kind {config.kind} --name {config.name}`)"
        )
    return record


def alias_history(
    workspace: Workspace, *, name: str, kind: str = "model", alias: str | None = None, target: str | None = None,
) -> list[dict[str, Any]]:
    """Every change of NAME's aliases (optionally one alias, one target), oldest first, with refs."""
    check_kind(kind)
    rows = []
    for change in workspace.registry.alias_history(kind=kind, name=name, alias=alias):
        if target is not None and change.target != target:
            continue
        rows.append({**change_json(change), "from_ref": _ref_of_id(workspace, change.old_record_id),
                     "to_ref": _ref_of_id(workspace, change.new_record_id)})
    return rows


def current_aliases(workspace: Workspace, *, name: str, kind: str = "model") -> list[dict[str, Any]]:
    """Where each alias of NAME points now."""
    check_kind(kind)
    return [
        {"alias": a.alias, "target": a.target, "record": a.record_id, "ref": _ref_of_id(workspace, a.record_id)}
        for a in workspace.registry.aliases(kind=kind, name=name)
    ]


# --------------------------------------------------------------------------- builds for a target


def downstream_builds(workspace: Workspace, record: Record) -> list[Record]:
    """Build records made from ``record`` through artifacts (model -> ONNX -> INT8 ONNX -> build)."""
    if record.kind == "build":
        return [record]
    registry = workspace.registry
    builds: dict[str, Record] = {}
    seen = {record.id}
    queue = [record]
    while queue:
        current = queue.pop(0)
        for link in registry.links_to(current.id):
            if link.record_id in seen:
                continue
            seen.add(link.record_id)
            other = registry.get(link.record_id)
            if other is None:
                continue
            if other.kind == "build":
                builds[other.id] = other
            elif other.kind == "artifact":  # ONNX, INT8 ONNX (plots lead nowhere)
                queue.append(other)
    return sorted(builds.values(), key=lambda r: (r.created_at, r.id))


def _field(body: dict[str, Any], *names: str) -> Any:
    """The first of ``names`` present in the body (dotted paths allowed), else None."""
    for name in names:
        value: Any = body
        for part in name.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value not in (None, ""):
            return value
    return None


def build_backend(body: dict[str, Any]) -> str:
    """``tensorrt`` or ``onnxruntime``: what runs this build."""
    explicit = _field(body, "backend", "runtime.name")
    if explicit:
        return str(explicit).lower().replace(" ", "")
    fmt = str(body.get("format", "")).lower()
    if "tensorrt" in fmt or _field(body, "tensorrt_version") is not None:
        return "tensorrt"
    return "onnxruntime" if "onnxruntime" in fmt else fmt


def _same_version(expected: str, actual: Any) -> bool:
    """``10.3.0`` matches ``10.3.0.30`` (the library reports more digits than the profile states)."""
    if actual is None:
        return False
    want = str(expected).split(".")
    have = str(actual).split(".")
    if len(have) < min(len(want), 2):
        return False
    return want[: len(have)] == have[: len(want)]


def build_mismatches(build: Record, target: Target) -> list[str]:
    """Why ``build`` cannot run on ``target`` (empty when it matches)."""
    body = build.body
    problems = []
    built_for = body.get("target")
    if built_for != target.name:
        problems.append(f"built for target {built_for or '(none recorded)'}, not {target.name}")
    backend = build_backend(body)
    if backend != target.kind:
        problems.append(f"is a {backend or 'unknown'} build, {target.name} runs {target.kind}")
    arch = _field(body, "architecture")
    if arch is not None and arch != target.architecture:
        problems.append(f"architecture {arch}, target is {target.architecture}")
    if target.is_tensorrt:
        trt = _field(body, "tensorrt_version", "tensorrt", "runtime.version")
        if not _same_version(target.tensorrt, trt):
            problems.append(f"TensorRT {trt or '(not recorded)'}, target has {target.tensorrt}")
        sm = _field(body, "compute_capability", "gpu_compute_capability")
        if str(sm or "") != target.gpu_compute_capability:
            problems.append(f"compute capability {sm or '(not recorded)'}, target is {target.gpu_compute_capability}")
        for key, wanted in (("jetpack", target.jetpack), ("l4t", target.l4t)):
            have = _field(body, key)
            if wanted and have is not None and not _same_version(wanted, have):
                problems.append(f"{'JetPack' if key == 'jetpack' else 'L4T'} {have}, target has {wanted}")
        if _field(body, "jetpack", "l4t") is None and (target.jetpack or target.l4t):
            problems.append("no JetPack/L4T recorded (engines are tied to the L4T they were built on)")
        dla = _field(body, "dla_core")
        if dla is not None and int(dla) >= 0 and int(dla) >= target.dla_cores and target.dla_cores_verified:
            problems.append(f"uses DLA core {dla}, {target.name} has {target.dla_cores} DLA cores")
    return problems


@dataclass(frozen=True, kw_only=True)
class TargetResolution:
    """The build ``NAME@ALIAS --target T`` resolves to, and how it was found."""

    target: str
    ref: str
    alias_target: str | None  # the alias row used ("" = the all-targets alias); None when ref is not an alias
    source: Record  # what the reference named (model, artifact or build)
    source_ref: str
    build: Record
    build_ref: str
    blob: str
    blob_present: bool
    candidates: tuple[tuple[Record, tuple[str, ...]], ...]  # every build found, with its mismatches
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "ref": self.ref,
            "alias_target": self.alias_target,
            "source": {"id": self.source.id, "kind": self.source.kind, "ref": self.source_ref},
            "build": {"id": self.build.id, "ref": self.build_ref, "summary": summarize(self.build)},
            "blob": self.blob,
            "blob_present": self.blob_present,
            "candidates": [
                {"id": b.id, "precision": b.body.get("precision"), "target": b.body.get("target"),
                 "matches": not problems, "mismatches": list(problems)}
                for b, problems in self.candidates
            ],
            "warnings": list(self.warnings),
        }


def _resolve_source(workspace: Workspace, ref: str, target: Target, kind: str) -> tuple[Record, str | None]:
    """The record ``ref`` names; ``NAME@ALIAS`` looks up the target's alias, then the all-targets one."""
    name, _, selector = ref.strip().partition("@")
    if selector and not _VERSION_RE.match(selector) and selector != "latest":
        for alias_target in (target.name, ""):
            record_id = workspace.registry.get_alias(kind=kind, name=name, alias=selector, target=alias_target)
            if record_id is not None:
                record = workspace.registry.get(record_id)
                assert record is not None  # aliases reference records, which are undeletable
                return record, alias_target
        known = [f"{a.alias}" + (f" ({a.target})" if a.target else " (all targets)")
                 for a in workspace.registry.aliases(kind=kind, name=name)]
        raise InputNotFoundError(
            f"{name}@{selector} is not set for {target.name} (nor for all targets); "
            + (f"aliases of {name}: {', '.join(known)}; " if known else f"{name} has no {kind} aliases; ")
            + f"set it with `toolchain registry alias {name} {selector} --target {target.name} --to vN`"
        )
    return resolve_record(workspace, ref, kind=kind).record, None


def resolve_for_target(
    workspace: Workspace, ref: str, target: str | Target, *, kind: str = "model", precision: str | None = None,
) -> TargetResolution:
    """The build for ``target`` that ``ref`` (usually ``NAME@ALIAS``) stands for.

    Args:
        workspace: Workspace to read.
        ref: ``NAME@ALIAS``, ``NAME@vN``, an id prefix ... of a record of ``kind`` (a model, an ONNX
            artifact, or a build).
        target: Target name, path or profile.
        kind: Kind of record the reference names.
        precision: Only builds of this precision; default: the fastest matching (int8, fp16, fp32),
            newest first among equals. A build whose engine blob is missing is passed over (with a
            warning) while another matching build has its engine.

    Raises:
        InputNotFoundError: the reference or alias does not exist.
        BadInputError: ``ref`` names a build that does not match the target.
        MissingEnvironmentError: no build of the record matches the target (the message names what
            was found and the command that builds one).
    """
    check_kind(kind)
    profile = target if isinstance(target, Target) else load_target(target)
    source, alias_target = _resolve_source(workspace, ref, profile, kind)
    builds = downstream_builds(workspace, source)
    candidates = tuple((b, tuple(build_mismatches(b, profile))) for b in builds)
    matching = [b for b, problems in candidates if not problems
                and (precision is None or b.body.get("precision") == precision)]
    source_ref = record_ref(workspace, source)
    if not matching:
        raise _no_match_error(workspace, ref, source, source_ref, profile, candidates, precision)
    rank = {p: i for i, p in enumerate(_PRECISION_PREFERENCE)}
    matching.sort(key=lambda b: (b.created_at, b.id), reverse=True)  # newest first ...
    matching.sort(key=lambda b: rank.get(str(b.body.get("precision")), len(rank)))  # ... within each precision
    # A build whose engine blob is gone cannot be packaged or benched: hand out the best one that can,
    # and say which newer ones were passed over (verify tells how to restore them).
    present = [b for b in matching if _engine_present(workspace, b)]
    chosen = present[0] if present else matching[0]
    blob = _engine_blob(workspace, chosen)
    warnings = [
        f"build {record_ref(workspace, b)} ({b.body.get('precision')}) also matches but its engine blob is missing; "
        "run `toolchain registry verify` and rebuild it"
        for b in matching[: matching.index(chosen)]
    ]
    dla = _field(chosen.body, "dla_core")
    if dla is not None and int(dla) >= 0 and not profile.dla_cores_verified:
        warnings.append(f"build uses DLA core {dla}; {profile.name}'s DLA count is unverified: query num_DLA_cores on the unit")
    return TargetResolution(
        target=profile.name, ref=ref, alias_target=alias_target, source=source, source_ref=source_ref,
        build=chosen, build_ref=record_ref(workspace, chosen), blob=blob,
        blob_present=_engine_present(workspace, chosen), candidates=candidates, warnings=tuple(warnings),
    )


def _engine_blob(workspace: Workspace, build: Record) -> str:
    """The sha256 of a build's engine (``blob`` in its body, else its ``engine`` blob ref), or ''."""
    return str(build.body.get("blob") or next(
        (b.sha256 for b in workspace.registry.blob_refs(build.id) if b.role == "engine"), ""))


def _engine_present(workspace: Workspace, build: Record) -> bool:
    blob = _engine_blob(workspace, build)
    try:
        return bool(blob) and workspace.blobs.has(blob)
    except InputNotFoundError:  # a body whose blob field is not a digest
        return False


def _no_match_error(
    workspace: Workspace, ref: str, source: Record, source_ref: str, target: Target,
    candidates: tuple[tuple[Record, tuple[str, ...]], ...], precision: str | None,
) -> Exception:
    wanted = f"{precision} " if precision else ""
    if source.kind == "build":
        problems = candidates[0][1] if candidates else ()
        detail = "; ".join(problems) or f"it is not a {precision} build"
        return BadInputError(
            f"{ref} is build {source_ref}, which does not match {target.name}: {detail}. "
            f"Build one for it: `toolchain build {source.body.get('onnx', 'ONNX')[:12]} --target {target.name}`"
        )
    if candidates:
        found = "; ".join(
            f"{record_ref(workspace, b)} ({b.body.get('target')}, {b.body.get('precision')}): "
            + ("; ".join(problems) if problems else f"not {precision}")
            for b, problems in candidates
        )
        found = f"its builds do not match: {found}"
    else:
        found = "it has no builds"
    onnx = _onnx_artifacts(workspace, source)
    if onnx:
        hint = " or ".join(f"`toolchain build {record_ref(workspace, a)} --target {target.name}`" for a in onnx)
    else:
        hint = f"export it first (`toolchain export {source_ref} --target {target.name}`), then `toolchain build ONNX --target {target.name}`"
    stack = (f"TensorRT {target.tensorrt}, JetPack {target.jetpack}, SM {target.gpu_compute_capability}"
             if target.is_tensorrt else f"ONNX Runtime on {target.architecture}")
    return MissingEnvironmentError(
        f"{ref} is {source.kind} {source_ref}, which has no {wanted}build for {target.name} ({stack}): {found}. "
        f"Build one with {hint}"
    )


def _onnx_artifacts(workspace: Workspace, record: Record) -> list[Record]:
    """ONNX artifacts made from ``record`` (INT8 first), for the 'build one with' hint."""
    if record.kind == "artifact" and str(record.body.get("type", "")).startswith("onnx"):
        return [record]
    found = []
    for link in workspace.registry.links_to(record.id):
        other = workspace.registry.get(link.record_id)
        if other is not None and other.kind == "artifact" and str(other.body.get("type", "")).startswith("onnx"):
            found.append(other)
    return sorted(found, key=lambda r: (0 if "int8" in str(r.body.get("type")) else 1, r.created_at))

"""``toolchain registry export --mlflow URI [REF]``: mirror registry records into an MLflow tracking server."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from toolchain.errors import ToolchainError, UsageError
from toolchain.mlflow_mirror import connect, scope
from toolchain.mlflow_mirror.plan import plan
from toolchain.mlflow_mirror.writer import Item, MirrorWriter
from toolchain.redaction import redact_url
from toolchain.workspace import Workspace

_RUN_KINDS = ("run", "trial", "evaluation", "model")


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    """Options of ``toolchain registry export``.

    Attributes:
        tracking_uri: The MLflow tracking server (``http(s)://HOST:PORT``, or ``databricks``); may carry credentials.
        ref: A model, run or evaluation reference; None: everything in the registry.
        kind: The kind ``ref`` names, when its name is used by several kinds.
        target: Which target's ``NAME@ALIAS`` ``ref`` means (aliases are per target).
        experiment: One MLflow experiment for every run (default: one per model name).
    """

    tracking_uri: str = field(repr=False)  # may carry credentials: never in a repr
    ref: str | None = None
    kind: str | None = None
    target: str | None = None
    experiment: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tracking_uri", connect.check_uri(self.tracking_uri))
        if self.experiment is not None and not self.experiment.strip():
            raise UsageError("--experiment needs a name")
        if self.ref is None and (self.kind or self.target):
            raise UsageError("--kind and --target qualify REF; name the record to export, or drop them to export everything")


@dataclass(frozen=True, kw_only=True)
class ExportReport:
    """What one export found and did."""

    tracking_uri: str  # redacted
    scope: str
    items: tuple[Item, ...]
    warnings: tuple[str, ...] = ()
    seconds: float = 0.0
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return any(i.action not in ("unchanged", "skipped") for i in self.items)

    def to_json(self) -> dict[str, Any]:
        return {"tracking_uri": self.tracking_uri, "scope": self.scope, "changed": self.changed, **self.counts,
                "items": [i.to_json() for i in self.items], "warnings": list(self.warnings),
                "seconds": round(self.seconds, 3)}


def _count(items: tuple[Item, ...], kinds: tuple[str, ...], actions: tuple[str, ...]) -> dict[str, int]:
    counts = dict.fromkeys(actions, 0)
    for item in items:
        if item.kind in kinds:
            counts[item.action] = counts.get(item.action, 0) + 1
    return counts


def export_to_mlflow(workspace: Workspace, config: ExportConfig, *,
                     progress: Callable[[str], None] | None = None) -> ExportReport:
    """Mirror ``config.ref`` (or everything) into the MLflow server; a second export changes nothing.

    Raises:
        MissingEnvironmentError: the ``[mlflow]`` extra is missing, or the server is unreachable or refuses us (exit 5).
        InputNotFoundError, UsageError: REF names nothing, or something other than a model, run or evaluation.
    """
    started = time.perf_counter()
    chosen = (scope.of_ref(workspace, config.ref, kind=config.kind, target=config.target) if config.ref
              else scope.everything(workspace))
    mirror_plan = plan(workspace, chosen, experiment=config.experiment)
    client = connect.client(config.tracking_uri)
    connect.probe(config.tracking_uri)
    with connect.client_environment(), connect.translated_errors(config.tracking_uri):
        outcome = MirrorWriter(client, workspace.blobs, progress).write(mirror_plan)
    items = tuple(outcome.items)
    counts = {
        "experiments": _count(items, ("experiment",), ("created", "unchanged")),
        "runs": _count(items, _RUN_KINDS, ("created", "unchanged", "updated", "replaced")),
        "registered_models": _count(items, ("registered_model",), ("created", "unchanged")),
        "model_versions": _count(items, ("model_version",), ("created", "unchanged", "updated")),
        "aliases": _count(items, ("alias",), ("set", "unchanged", "removed", "skipped")),
    }
    return ExportReport(tracking_uri=redact_url(config.tracking_uri), scope=chosen.description, items=items,
                        warnings=tuple(outcome.warnings), seconds=time.perf_counter() - started, counts=counts)


def tracking_uri_from_env() -> str:
    """``$MLFLOW_TRACKING_URI`` for ``train --mlflow`` / ``evaluate --mlflow``, checked before the stage starts."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if not uri:
        raise UsageError("--mlflow mirrors into the MLflow server MLFLOW_TRACKING_URI names, and it is not set: "
                         "export MLFLOW_TRACKING_URI=http://HOST:PORT, or drop --mlflow and run "
                         "`toolchain registry export --mlflow URI REF` later")
    return connect.check_uri(uri)


def mirror_stage(workspace: Workspace, tracking_uri: str, *, ref: str, kind: str, what: str) -> ExportReport:
    """Mirror what a stage just recorded (``ref`` of ``kind``); a failure says the stage's result is safe."""
    try:
        return export_to_mlflow(workspace, ExportConfig(tracking_uri=tracking_uri, ref=ref, kind=kind))
    except ToolchainError as exc:
        raise type(exc)(f"{what} is recorded in the registry, but mirroring it to MLflow failed: {exc} (mirror it "
                        f"later with `toolchain registry export --mlflow URI {ref[:12]} --kind {kind}`)") from exc

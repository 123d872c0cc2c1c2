"""Make an MLflow tracking server hold a :class:`~toolchain.mlflow_mirror.plan.MirrorPlan`, idempotently.

Runs are found by their ``toolchain.record_id`` (and ``toolchain.parent_record_id``) tags, model
versions by ``toolchain.record_id`` under their registered model; nothing is created twice. A run
is created, filled (params, metrics, artifacts) and only then set ``FINISHED``: a run of ours that is
not finished was left by an interrupted export and is replaced. Duplicates left by two exports racing
are deleted, keeping one. Tags and artifacts of runs and versions that exist are checked and
repaired; metrics and params of a finished run are immutable records' and are left alone.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolchain.blobs import BlobStore
from toolchain.errors import BadInputError
from toolchain.mlflow_mirror.plan import (
    TAG_ALIASES,
    TAG_KIND,
    TAG_MIRRORED,
    TAG_PARENT,
    TAG_RECORD,
    MirrorAlias,
    MirrorArtifact,
    MirrorPlan,
    MirrorRun,
    MirrorVersion,
)

PARENT_RUN_TAG = "mlflow.parentRunId"
_PAGE = 1000
_REGISTERED_MODEL_NOTE = ("Mirrored by `toolchain registry export`: versions carry toolchain.record_id and lineage tags; "
                          "the toolchain registry stays the source of truth.")


@dataclass(frozen=True, kw_only=True)
class Item:
    """What happened to one thing in MLflow."""

    kind: str  # experiment | run | evaluation | model | trial | registered_model | model_version | alias
    ref: str  # the toolchain's name for it
    mlflow: str  # the MLflow id: run id, experiment name, NAME/VERSION, NAME@ALIAS
    action: str  # created | unchanged | updated | replaced | removed | set | skipped

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "ref": self.ref, "mlflow": self.mlflow, "action": self.action}


@dataclass(kw_only=True)
class Outcome:
    """What the writer did, item by item (the report counts these)."""

    items: list[Item] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    run_ids: dict[tuple[str, str], str] = field(default_factory=dict)

    def add(self, kind: str, ref: str, mlflow: str, action: str) -> None:
        self.items.append(Item(kind=kind, ref=ref, mlflow=mlflow, action=action))


class MirrorWriter:
    """Writes a plan through an ``MlflowClient``.

    Args:
        client: ``mlflow.tracking.MlflowClient`` for the tracking server (also its model registry).
        blobs: The workspace's blob store (artifact bytes).
        progress: Called with a short line before each run is written (humans' progress).
    """

    def __init__(self, client: Any, blobs: BlobStore, progress: Callable[[str], None] | None = None) -> None:
        self.client = client
        self.blobs = blobs
        self.progress = progress or (lambda line: None)
        self.outcome = Outcome()
        self._experiments: dict[str, str] = {}
        self._existing: dict[str, dict[tuple[str, str], list[Any]]] = {}
        self._artifact_uris: dict[str, str] = {}  # MLflow run id -> its artifact URI (a model version's source)
        self._registered: set[str] = set()
        self._versions: dict[str, dict[str, list[Any]]] = {}  # registered model -> record id -> its versions

    def write(self, plan: MirrorPlan) -> Outcome:
        self.outcome.warnings.extend(plan.warnings)
        for name in plan.experiments:
            self._experiment(name)
        for run in plan.runs:
            self._run(run)
        for version in plan.versions:
            self._version(version)
        for name, aliases in plan.aliases.items():
            self._aliases(name, aliases)
        return self.outcome

    # -- experiments ------------------------------------------------------------------------------
    def _experiment(self, name: str) -> str:
        if name in self._experiments:
            return self._experiments[name]
        found = self.client.get_experiment_by_name(name)
        if found is None:
            experiment_id = self.client.create_experiment(name, tags={TAG_MIRRORED: "true"})
            self.outcome.add("experiment", name, name, "created")
        elif found.lifecycle_stage != "active":
            raise BadInputError(f"the MLflow experiment '{name}' is deleted; restore it (`mlflow experiments restore "
                                f"--experiment-id {found.experiment_id}`) or pass --experiment NAME")
        else:
            experiment_id = found.experiment_id
            self.outcome.add("experiment", name, name, "unchanged")
        self._experiments[name] = experiment_id
        self._existing[experiment_id] = self._index_runs(experiment_id)
        return experiment_id

    def _index_runs(self, experiment_id: str) -> dict[tuple[str, str], list[Any]]:
        """Our runs in an experiment by key (active runs carrying ``toolchain.record_id``)."""
        index: dict[tuple[str, str], list[Any]] = {}
        token = None
        while True:
            page = self.client.search_runs([experiment_id], filter_string=f"tags.`{TAG_RECORD}` LIKE '%'",
                                           max_results=_PAGE, page_token=token)
            for run in page:
                tags = run.data.tags
                index.setdefault((tags[TAG_RECORD], tags.get(TAG_PARENT, "")), []).append(run)
            token = page.token
            if not token:
                return index

    # -- runs -------------------------------------------------------------------------------------
    def _run(self, planned: MirrorRun) -> None:
        kind = "trial" if planned.parent_record_id else planned.kind
        experiment_id = self._experiment(planned.experiment)
        tags = dict(planned.tags)
        if planned.parent_record_id:
            tags[PARENT_RUN_TAG] = self.outcome.run_ids[(planned.parent_record_id, "")]
        candidates = self._existing[experiment_id].get(planned.key, [])
        finished = sorted((r for r in candidates if r.info.status == "FINISHED"), key=lambda r: r.info.run_id)
        keep = finished[0] if finished else None
        for stale in candidates:
            if stale is not keep:  # an interrupted export's run, or a racing export's duplicate
                self.client.delete_run(stale.info.run_id)
        if keep is None:
            self.progress(f"{kind} {planned.ref}")
            run_id = self._create_run(experiment_id, planned, tags)
            self.outcome.add(kind, planned.ref, run_id, "replaced" if candidates else "created")
        else:
            run_id = keep.info.run_id
            self._artifact_uris[run_id] = keep.info.artifact_uri
            changed = self._repair_run(keep, planned, tags)
            self.outcome.add(kind, planned.ref, run_id, "updated" if changed or len(candidates) > 1 else "unchanged")
        self.outcome.run_ids[planned.key] = run_id

    def _create_run(self, experiment_id: str, planned: MirrorRun, tags: dict[str, str]) -> str:
        from mlflow.entities import Metric, Param

        run = self.client.create_run(experiment_id, start_time=planned.start_ms, tags=tags, run_name=planned.name)
        run_id = run.info.run_id
        self._artifact_uris[run_id] = run.info.artifact_uri
        params = [Param(k, v) for k, v in planned.params.items()]
        for chunk in _chunks(params, 100):
            self.client.log_batch(run_id, params=chunk)
        metrics = [Metric(m.key, m.value, m.timestamp_ms, m.step) for m in planned.metrics]
        for chunk in _chunks(metrics, 1000):
            self.client.log_batch(run_id, metrics=chunk)
        self._upload(run_id, planned.artifacts)
        self.client.set_terminated(run_id, "FINISHED", end_time=planned.end_ms)  # last: marks the run complete
        return run_id

    def _repair_run(self, existing: Any, planned: MirrorRun, tags: dict[str, str]) -> bool:
        run_id = existing.info.run_id
        differing = {k: v for k, v in tags.items() if existing.data.tags.get(k) != v}
        for key, value in differing.items():
            self.client.set_tag(run_id, key, value)
        missing = self._missing_artifacts(run_id, planned.artifacts)
        self._upload(run_id, missing)
        return bool(differing or missing)

    def _missing_artifacts(self, run_id: str, artifacts: Iterable[MirrorArtifact]) -> list[MirrorArtifact]:
        present: dict[str, dict[str, int | None]] = {}
        missing = []
        for artifact in artifacts:
            directory = artifact.directory
            if directory not in present:
                present[directory] = {f.path: f.file_size for f in self.client.list_artifacts(run_id, directory or None)
                                      if not f.is_dir}
            if present[directory].get(artifact.path) != self._size(artifact):
                missing.append(artifact)
        return missing

    def _size(self, artifact: MirrorArtifact) -> int:
        if artifact.content is not None:
            return len(artifact.content)
        assert artifact.blob is not None
        return self.blobs.path(artifact.blob).stat().st_size

    def _upload(self, run_id: str, artifacts: Iterable[MirrorArtifact]) -> None:
        artifacts = list(artifacts)
        if not artifacts:
            return
        with tempfile.TemporaryDirectory(prefix="toolchain-mlflow-") as tmp:
            for number, artifact in enumerate(artifacts):
                folder = Path(tmp) / str(number)  # one folder per file: the upload keeps the file's own name
                folder.mkdir()
                local = folder / artifact.filename
                if artifact.content is not None:
                    local.write_bytes(artifact.content)
                else:
                    assert artifact.blob is not None
                    shutil.copyfile(self.blobs.require(artifact.blob), local)
                self.client.log_artifact(run_id, str(local), artifact.directory or None)

    # -- registered models and versions -----------------------------------------------------------
    def _registered_model(self, name: str) -> None:
        from mlflow.exceptions import MlflowException

        if name in self._registered:
            return
        try:
            self.client.get_registered_model(name)
            self.outcome.add("registered_model", name, name, "unchanged")
        except MlflowException as exc:
            if getattr(exc, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
                raise
            self.client.create_registered_model(name, tags={TAG_MIRRORED: "true", TAG_KIND: "model"},
                                                description=_REGISTERED_MODEL_NOTE)
            self.outcome.add("registered_model", name, name, "created")
        self._registered.add(name)

    def _versions_by_record(self, name: str) -> dict[str, list[Any]]:
        """Versions of registered model ``name`` that carry a record id, by record id (oldest version first)."""
        if name in self._versions:
            return self._versions[name]
        if "'" in name:
            raise BadInputError(f"model name {name!r} contains a quote, which MLflow's search filter cannot express")
        found: dict[str, list[Any]] = {}
        token = None
        while True:
            page = self.client.search_model_versions(f"name = '{name}'", max_results=_PAGE, page_token=token)
            for version in page:
                record = version.tags.get(TAG_RECORD)
                if record:
                    found.setdefault(record, []).append(version)
            token = page.token
            if not token:
                break
        for versions in found.values():
            versions.sort(key=lambda v: int(v.version))
        self._versions[name] = found
        return found

    def _version(self, planned: MirrorVersion) -> None:
        self._registered_model(planned.name)
        by_record = self._versions_by_record(planned.name)
        existing = by_record.get(planned.record_id, [])
        if existing:
            keep, *duplicates = existing
            for extra in duplicates:  # two exports raced: keep the first version
                self.client.delete_model_version(planned.name, extra.version)
            by_record[planned.record_id] = [keep]
            differing = {k: v for k, v in planned.tags.items() if keep.tags.get(k) != v}
            for key, value in differing.items():
                self.client.set_model_version_tag(planned.name, keep.version, key, value)
            holder = self.outcome.run_ids.get(planned.holder)
            if holder and keep.run_id and keep.run_id != holder:
                self.outcome.warnings.append(
                    f"MLflow version {planned.name}/{keep.version} ({planned.ref}) names run {keep.run_id}, which is no "
                    f"longer the mirror's run {holder}; its source stays as it was (MLflow versions are immutable)")
            action = "updated" if differing or duplicates else "unchanged"
            self.outcome.add("model_version", planned.ref, f"{planned.name}/{keep.version}", action)
            return
        run_id = self.outcome.run_ids[planned.holder]
        source = f"{self._artifact_uris[run_id].rstrip('/')}/{planned.model_dir}"
        version = self.client.create_model_version(planned.name, source=source, run_id=run_id, tags=planned.tags,
                                                   description=planned.description, await_creation_for=0)
        by_record[planned.record_id] = [version]
        self.outcome.add("model_version", planned.ref, f"{planned.name}/{version.version}", "created")

    # -- aliases ----------------------------------------------------------------------------------
    def _aliases(self, name: str, aliases: tuple[MirrorAlias, ...]) -> None:
        model = self.client.get_registered_model(name)
        current: dict[str, str] = dict(model.aliases or {})
        managed = _managed(model.tags.get(TAG_ALIASES, ""))
        versions = {record: vs[0].version for record, vs in self._versions_by_record(name).items()}
        now_managed: set[str] = set()
        for alias in aliases:
            version = versions.get(alias.record_id)
            if version is None:
                self.outcome.warnings.append(f"{alias.label} points at {alias.record_id[:12]}, which has no MLflow version "
                                             f"yet (export it: `toolchain registry export --mlflow URI {alias.record_id[:12]}`)")
                self.outcome.add("alias", alias.label, f"{name}@{alias.alias}", "skipped")
                continue
            now_managed.add(alias.alias)
            if str(current.get(alias.alias)) == str(version):
                self.outcome.add("alias", alias.label, f"{name}@{alias.alias}", "unchanged")
                continue
            self.client.set_registered_model_alias(name, alias.alias, version)
            self.outcome.add("alias", alias.label, f"{name}@{alias.alias}", "set")
        for stale in sorted(managed - now_managed):
            if stale in current:  # the toolchain removed or moved it out of reach: MLflow must not keep it
                self.client.delete_registered_model_alias(name, stale)
                self.outcome.add("alias", f"{name}@{stale}", f"{name}@{stale}", "removed")
        wanted = json.dumps(sorted(now_managed))
        if model.tags.get(TAG_ALIASES) != wanted:  # what the next export may remove
            self.client.set_registered_model_tag(name, TAG_ALIASES, wanted)


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _managed(tag: str) -> set[str]:
    """The aliases a registered model's ``toolchain.aliases`` tag lists (none when it is absent or not ours)."""
    try:
        value = json.loads(tag) if tag else []
    except json.JSONDecodeError:
        return set()
    return {a for a in value if isinstance(a, str)} if isinstance(value, list) else set()

"""Which registry records one export covers: everything, or what a model, run or evaluation brings along.

* a model: each of its versions (under every name it has), the training run that produced it with
  the trials of its search, and every evaluation of it or of an ONNX artifact made from it;
* a final training run: the run and its trials; a trial: the trial under each final run it helped choose;
* an evaluation: that evaluation.

Records are read only through the workspace's :class:`~toolchain.registry.RegistryStore`.
"""

from __future__ import annotations

from dataclasses import dataclass

from toolchain.errors import UsageError
from toolchain.mlflow_mirror.trials import role, trials_by_final
from toolchain.registry import Record, Version
from toolchain.registry.ops import record_ref, resolve_record
from toolchain.workspace import Workspace

EXPORTABLE_KINDS = ("model", "run", "evaluation")


@dataclass(frozen=True, kw_only=True)
class Scope:
    """The records one export mirrors.

    Attributes:
        description: What was asked for, for humans (``everything`` or ``model cls@v1``).
        runs: Training runs and trials, oldest first.
        children: Final run id -> the trials of its search (only those in ``runs``).
        evaluations: Evaluation records, oldest first.
        versions: Model versions to register (``NAME@vN``), by name then number.
    """

    description: str
    runs: tuple[Record, ...]
    children: dict[str, tuple[str, ...]]
    evaluations: tuple[Record, ...]
    versions: tuple[Version, ...]


def everything(workspace: Workspace) -> Scope:
    """Every run, trial, evaluation and model version of the registry."""
    runs = tuple(workspace.registry.find(kind="run"))
    return Scope(description="everything", runs=runs, children=_children(workspace, runs),
                 evaluations=tuple(workspace.registry.find(kind="evaluation")),
                 versions=tuple(workspace.registry.versions("model")))


def of_ref(workspace: Workspace, ref: str, *, kind: str | None = None, target: str | None = None) -> Scope:
    """What ``ref`` (a model, run or evaluation reference) brings along; see the module docstring."""
    if kind is not None and kind not in EXPORTABLE_KINDS:
        raise UsageError(f"registry export mirrors {', '.join(EXPORTABLE_KINDS)} records, not {kind}s")
    record = resolve_record(workspace, ref, kind=kind, target=target).record
    description = f"{record.kind} {record_ref(workspace, record)}"
    if record.kind == "model":
        return _of_model(workspace, record, description)
    if record.kind == "run":
        return _of_run(workspace, record, description)
    if record.kind == "evaluation":
        return Scope(description=description, runs=(), children={}, evaluations=(record,), versions=())
    raise UsageError(
        f"'{ref}' is a {record.kind}; registry export mirrors models, training runs and evaluations. "
        f"Export the model it was made from (`toolchain registry lineage {ref}` shows it)"
    )


def origin_model(workspace: Workspace, subject: Record) -> Record | None:
    """The model an evaluated record comes from: itself, or the model an ONNX artifact was exported from."""
    if subject.kind == "model":
        return subject
    model_id = subject.body.get("model")
    model = workspace.registry.get(model_id) if isinstance(model_id, str) else None
    return model if model is not None and model.kind == "model" else None


def training_run(workspace: Workspace, model: Record) -> Record | None:
    """The run a model was registered from (its ``run`` link), if that record exists."""
    for link in workspace.registry.links_from(model.id):
        if link.role == "run":
            run = workspace.registry.get(link.input_id)
            if run is not None and run.kind == "run":
                return run
    return None


def _children(workspace: Workspace, runs: tuple[Record, ...] | list[Record]) -> dict[str, tuple[str, ...]]:
    """Final run id -> its search trials: its ``trial`` lineage links where ``train`` wrote them, else inferred
    (:func:`toolchain.mlflow_mirror.trials.trials_by_final`, for runs recorded before those links existed)."""
    groups = trials_by_final(runs)
    present = {r.id for r in runs}
    for run in runs:
        linked = tuple(l.input_id for l in workspace.registry.links_from(run.id) if l.role == "trial" and l.input_id in present)
        if linked:
            groups[run.id] = linked
    return groups


def _runs_with_trials(workspace: Workspace, finals: list[Record]) -> tuple[tuple[Record, ...], dict[str, tuple[str, ...]]]:
    names = {r.name for r in finals}
    candidates = [r for name in sorted(names) for r in workspace.registry.find(kind="run", name=name)]
    groups = _children(workspace, candidates)
    wanted = {r.id for r in finals}
    children = {final: trials for final, trials in groups.items() if final in wanted}
    trial_ids = {t for trials in children.values() for t in trials}
    runs = sorted((r for r in candidates if r.id in wanted or r.id in trial_ids), key=lambda r: (r.created_at, r.id))
    return tuple(runs), children


def _of_model(workspace: Workspace, model: Record, description: str) -> Scope:
    versions = tuple(v for v in workspace.registry.versions("model") if v.record_id == model.id)
    run = training_run(workspace, model)
    runs, children = _runs_with_trials(workspace, [run] if run is not None else [])
    evaluations = []
    for evaluation in workspace.registry.find(kind="evaluation"):
        subject_id = evaluation.body.get("model")
        subject = workspace.registry.get(subject_id) if isinstance(subject_id, str) else None
        origin = origin_model(workspace, subject) if subject is not None else None
        if origin is not None and origin.id == model.id:
            evaluations.append(evaluation)
    return Scope(description=description, runs=runs, children=children, evaluations=tuple(evaluations),
                 versions=versions)


def _of_run(workspace: Workspace, run: Record, description: str) -> Scope:
    if role(run) != "trial":
        runs, children = _runs_with_trials(workspace, [run])
        return Scope(description=description, runs=runs, children=children, evaluations=(), versions=())
    finals = [r for r in workspace.registry.find(kind="run", name=run.name) if role(r) != "trial"]
    _, groups = _runs_with_trials(workspace, finals)
    parents = [f for f in finals if run.id in groups.get(f.id, ())]
    children = {f.id: (run.id,) for f in parents}
    runs = tuple(sorted([*parents, run], key=lambda r: (r.created_at, r.id)))
    return Scope(description=description, runs=runs, children=children, evaluations=(), versions=())

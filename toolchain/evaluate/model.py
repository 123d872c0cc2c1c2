"""``toolchain evaluate``: judge a registered model on a versioned split, record it, apply the gates."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolchain.data.splits import SPLITS
from toolchain.data.versions import load_dataset
from toolchain.errors import UsageError
from toolchain.evaluate.gates import Gate, GateResult, check_gates
from toolchain.evaluate.metrics import EvaluationMetrics, compute_metrics
from toolchain.models.recipe import parse_recipe
from toolchain.registry import NewRecord
from toolchain.train.batches import SplitArrays
from toolchain.train.checkpoint import load_checkpoint
from toolchain.train.predict import predict_split
from toolchain.workspace import Workspace


@dataclass(frozen=True, kw_only=True)
class EvaluateConfig:
    """Options of ``toolchain evaluate``."""

    model: str
    split: str = "test"
    data: str | None = None  # another dataset version with the same classes; default: the training dataset
    gates: tuple[Gate, ...] = ()
    device: str = "cpu"
    plots: bool = True

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise UsageError(f"--split must be one of {', '.join(SPLITS)}")


@dataclass(frozen=True, kw_only=True)
class EvaluationReport:
    """Metrics, gate outcome and where the record and plots are."""

    evaluation: str
    model: str
    model_ref: str
    dataset: str
    split: str
    metrics: EvaluationMetrics
    gates: GateResult
    plots: dict[str, str] = field(default_factory=dict)  # name -> blob sha256
    plot_paths: dict[str, str] = field(default_factory=dict)  # name -> file in the blob store

    def to_json(self) -> dict[str, Any]:
        metrics = self.metrics.to_json()
        return {
            "evaluation": self.evaluation,
            "model": self.model_ref,
            "model_id": self.model,
            "dataset": self.dataset,
            "split": self.split,
            "accuracy": metrics["accuracy"],
            "precision": metrics["precision"],
            "recall": metrics["recall"],
            "f1": metrics["f1"],
            "roc_auc": metrics["roc_auc"],
            "confusion_matrix": metrics["confusion_matrix"],
            "passed": self.gates.passed,
            "gates": self.gates.to_json(),
            "plots": self.plots,
            "plot_paths": self.plot_paths,
            "metrics": metrics,
        }


def evaluate_model(workspace: Workspace, config: EvaluateConfig) -> EvaluationReport:
    """Evaluate a model on a split; the evaluation (and its plots) is recorded whether or not it passes."""
    import torch

    from toolchain.models.zoo import build_model
    from toolchain.train.loop import resolve_device

    resolved = workspace.resolve(config.model, kind="model")
    record = resolved.record
    body = record.body
    recipe = parse_recipe(body["recipe"], source=f"model {record.id[:12]}")
    dataset = load_dataset(workspace, config.data or body["dataset"])
    if list(dataset.classes) != list(body["classes"]):
        raise UsageError(
            f"dataset {dataset.ref} has classes {list(dataset.classes)} but the model predicts {body['classes']}"
        )
    split = SplitArrays.of(dataset, config.split)
    if len(split) == 0:
        raise UsageError(f"dataset {dataset.ref} has no '{config.split}' images")
    device = torch.device(resolve_device(config.device))
    model = build_model(recipe, len(body["classes"]))
    model.load_state_dict(load_checkpoint(workspace.blobs.read_bytes(body["weights"])))
    model.to(device)
    labels, probabilities = predict_split(model, dataset, workspace.blobs, split, recipe, device)
    metrics = compute_metrics(labels, probabilities, body["classes"])
    gates = check_gates(metrics, config.gates)

    plots: dict[str, str] = {}
    if config.plots:
        from toolchain.evaluate.plots import plot_confusion_matrix, plot_pr_curves

        with tempfile.TemporaryDirectory() as tmp:
            plots["confusion_matrix"] = workspace.blobs.put_file(plot_confusion_matrix(metrics, Path(tmp) / "cm.png"))
            plots["pr_curve"] = workspace.blobs.put_file(plot_pr_curves(metrics, Path(tmp) / "pr.png"))
    model_ref = f"{resolved.version.name}@v{resolved.version.number}" if resolved.version else record.id[:12]
    plot_artifacts = []
    for name, sha in plots.items():  # each plot is an artifact of its own, linked to the model it judges
        artifact, _, _ = workspace.registry.commit(NewRecord(
            kind="artifact", name=f"{record.name}-{name}",
            body={"type": "plot", "format": "png", "plot": name, "blob": sha, "model": record.id,
                  "dataset": dataset.id, "split": config.split},
            links=((record.id, "model"), (dataset.id, "eval_data")), blobs=((sha, "png"),),
        ))
        plot_artifacts.append((artifact.id, f"plot:{name}"))
    evaluation_body = {
        "model": record.id,
        "dataset": dataset.id,
        "split": config.split,
        "metrics": metrics.to_json(),
        "gates": gates.to_json(),
        "passed": gates.passed,
        "plots": plots,
    }
    evaluation, _, _ = workspace.registry.commit(NewRecord(
        kind="evaluation", name=record.name, body=evaluation_body,
        links=((record.id, "model"), (dataset.id, "eval_data"), *plot_artifacts),
        blobs=tuple((sha, name) for name, sha in plots.items()),
    ))
    return EvaluationReport(
        evaluation=evaluation.id, model=record.id, model_ref=model_ref, dataset=dataset.id, split=config.split,
        metrics=metrics, gates=gates, plots=plots,
        plot_paths={name: str(workspace.blobs.path(sha)) for name, sha in plots.items()},
    )

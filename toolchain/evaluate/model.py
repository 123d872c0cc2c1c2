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
from toolchain.registry import NewRecord
from toolchain.train.batches import SplitArrays
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
    seeds: dict[str, Any] | None = None  # the model's `train --seeds` summary: test accuracy per seed and its spread

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
            **({"seeds": self.seeds} if self.seeds else {}),
        }


def evaluate_model(workspace: Workspace, config: EvaluateConfig) -> EvaluationReport:
    """Evaluate a model on a split; the evaluation (and its plots) is recorded whether or not it passes."""
    from toolchain.errors import InputNotFoundError

    try:
        subject = _torch_subject(workspace, config)
    except InputNotFoundError as not_a_model:
        try:
            subject = _onnx_subject(workspace, config)  # an exported or quantized ONNX artifact
        except InputNotFoundError:
            raise InputNotFoundError(
                f"no model or ONNX artifact matches '{config.model}'. {not_a_model}"
            ) from not_a_model
    record, classes = subject.record, subject.classes
    dataset = load_dataset(workspace, config.data or subject.dataset)
    if list(dataset.classes) != classes:
        raise UsageError(f"dataset {dataset.ref} has classes {list(dataset.classes)} but the model predicts {classes}")
    split = SplitArrays.of(dataset, config.split)
    if len(split) == 0:
        raise UsageError(f"dataset {dataset.ref} has no '{config.split}' images")
    labels, probabilities = subject.predict(dataset, split)
    metrics = compute_metrics(labels, probabilities, classes)
    gates = check_gates(metrics, config.gates)

    plots: dict[str, str] = {}
    if config.plots:
        from toolchain.evaluate.plots import plot_confusion_matrix, plot_pr_curves

        with tempfile.TemporaryDirectory() as tmp:
            plots["confusion_matrix"] = workspace.blobs.put_file(plot_confusion_matrix(metrics, Path(tmp) / "cm.png"))
            plots["pr_curve"] = workspace.blobs.put_file(plot_pr_curves(metrics, Path(tmp) / "pr.png"))
    model_ref = subject.ref
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
        seeds=_seed_spread(subject.seeds, dataset),
    )


def _seed_spread(summary: dict[str, Any] | None, dataset: Any) -> dict[str, Any] | None:
    """The model's seed summary (``train --seeds``), with where its test figures were measured."""
    if not summary:
        return None
    where = dataset.ref if summary.get("dataset") == dataset.id else str(summary.get("dataset", ""))[:12]
    return {**summary, "scope": f"test split of {where}, {summary.get('test_images')} images"}


@dataclass(frozen=True, kw_only=True)
class _Subject:
    """What is being evaluated: a torch model or an ONNX artifact, with a split predictor."""

    record: Any
    ref: str
    recipe: Any
    classes: list[str]
    dataset: str
    predict: Any  # (dataset, split) -> (labels, probabilities)
    seeds: dict[str, Any] | None = None  # the model record's seed summary, if it was trained with --seeds


def _torch_subject(workspace: Workspace, config: EvaluateConfig) -> _Subject:
    import torch

    from toolchain.models.registered import load_registered_model
    from toolchain.train.loop import resolve_device

    loaded = load_registered_model(workspace, config.model)
    device = torch.device(resolve_device(config.device))
    module = loaded.module.to(device)

    def predict(dataset: Any, split: SplitArrays) -> tuple[Any, Any]:
        return predict_split(module, dataset, workspace.blobs, split, loaded.recipe, device)

    return _Subject(record=loaded.record, ref=loaded.ref, recipe=loaded.recipe, classes=list(loaded.classes),
                    dataset=loaded.dataset, predict=predict, seeds=loaded.record.body.get("seeds"))


def _onnx_subject(workspace: Workspace, config: EvaluateConfig) -> _Subject:
    from toolchain.artifacts import resolve_artifact
    from toolchain.models.recipe import parse_recipe

    artifact = resolve_artifact(workspace, config.model)
    model_id = artifact.record.body.get("model")
    model = workspace.registry.get(model_id) if model_id else None
    if model is None or not artifact.type.startswith("onnx"):
        raise UsageError(f"{config.model} is a {artifact.type} artifact; evaluate takes a model or an ONNX artifact")
    recipe = parse_recipe(model.body["recipe"], source=f"model {model.id[:12]}")
    layout = artifact.record.body.get("input", "float-nchw")

    def predict(dataset: Any, split: SplitArrays) -> tuple[Any, Any]:
        return predict_split_onnx(artifact.path, layout, dataset, workspace, split, recipe)

    return _Subject(record=artifact.record, ref=artifact.ref, recipe=recipe, classes=list(model.body["classes"]),
                    dataset=model.body["dataset"], predict=predict, seeds=model.body.get("seeds"))


def predict_split_onnx(
    path: Path, layout: str, dataset: Any, workspace: Workspace, split: SplitArrays, recipe: Any, *, batch_size: int = 64,
) -> tuple[Any, Any]:
    """``(labels, probabilities)`` of an ONNX classifier on a split, fed the way its input layout says."""
    import numpy as np
    import torch

    from toolchain.runtime.runners import OnnxRuntimeRunner
    from toolchain.train.batches import batch_order, eval_transform, iterate_batches, resize_uint8

    outputs = []
    with OnnxRuntimeRunner(path) as runner:
        for images, _ in iterate_batches(dataset, workspace.blobs, split, batch_order(len(split), batch_size, torch.Generator(), shuffle=False)):
            if layout == "uint8-nhwc":
                feed = resize_uint8(images, recipe.input_size)
            else:
                feed = eval_transform(torch.from_numpy(images), recipe).numpy()
            outputs.append(runner.infer(np.ascontiguousarray(feed)))
    scores = np.concatenate(outputs).astype(np.float64)
    if not np.allclose(scores.sum(axis=1), 1.0, atol=1e-3):  # logits: make probabilities
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores /= scores.sum(axis=1, keepdims=True)
    return split.labels, scores

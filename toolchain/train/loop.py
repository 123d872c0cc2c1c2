"""One training run: deterministic, checkpointed every epoch, resumable, DDP-aware.

A run's id is the digest of everything that determines its result (dataset version, the recipe
after overrides, seed, weights, device type, code version). Running the same command again returns
the finished run (a cache hit); after a crash it resumes from the last checkpoint and reaches the
same result as an uninterrupted run.

The weights kept are the better of the raw weights and their EMA (``toolchain.train.ema``) on a
smoothed validation score (``toolchain.train.selection``); the EMA's state is checkpointed with the
model, so a resumed run keeps the same average. A final run stores the kept weights (a plain state
dict of the architecture) as a blob named in its run record; the model registered from it points at
the same blob.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.codeversion import code_version
from toolchain.data.versions import DatasetVersion, load_dataset
from toolchain.errors import BadInputError, InputNotFoundError, MissingEnvironmentError, UsageError, missing_extra
from toolchain.hashing import canonical_json, digest_json, sha256_file
from toolchain.models.recipe import Recipe
from toolchain.progress import NullProgress, Progress
from toolchain.registry import NewRecord
from toolchain.train import distributed
from toolchain.train.batches import SplitArrays, batch_order, epoch_generator, iterate_batches, train_transform
from toolchain.models.checkpoint import load_checkpoint, save_checkpoint, state_dict_bytes
from toolchain.train.predict import predict_split
from toolchain.train.selection import Choice, better, candidates, last_progress
from toolchain.train.selection import score as selection_score
from toolchain.workspace import Workspace

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """Everything that determines a training run's result."""

    dataset: str  # dataset version id
    recipe: Recipe  # after overrides
    seed: int = 0
    device: str = "cpu"  # resolved: cpu | cuda
    weights: str | None = None  # local file to fine-tune from
    role: str = "final"  # final | trial
    model_name: str = ""
    trials: tuple[str, ...] = ()  # run ids of the search trials that chose this recipe (lineage, not identity)

    def identity(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "recipe": self.recipe.to_dict(),
            "seed": self.seed,
            "device": self.device,
            "weights": sha256_file(Path(self.weights)) if self.weights else None,
            "role": self.role,
            "code_version": code_version("train", "models", "data"),
        }

    @property
    def run_id(self) -> str:
        return digest_json(self.identity())


@dataclass(frozen=True, kw_only=True)
class EpochStats:
    """What one epoch measured."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float
    images_per_second: float
    seconds: float
    ema_val_loss: float | None = None  # the EMA weights' validation figures (None when the EMA is off)
    ema_val_accuracy: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The history entry (without the EMA's keys when there is no EMA, as before it existed)."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """A finished run, and the model it registered (final runs only)."""

    run: str
    cached: bool
    resumed_from_epoch: int
    best_epoch: int
    val_accuracy: float
    val_loss: float
    history: tuple[dict[str, Any], ...]
    model_id: str | None = None
    model_ref: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    world_size: int = 1
    ranks_agree: bool | None = None
    seconds: float = 0.0
    selected_weights: str = "raw"  # raw | ema: which weights were kept
    smoothed_val_accuracy: float = 0.0  # the selection score of the kept weights (mean of val_window readings)
    smoothed_val_loss: float = 0.0
    weights: str | None = None  # blob sha256 of the kept weights (final runs)
    seed: int = 0

    @property
    def score(self) -> tuple[float, float]:
        """What the pick across seeds and search trials compares: smoothed accuracy first, whatever the
        recipe's ``select_on`` (losses under another label smoothing do not compare)."""
        return selection_score(self.smoothed_val_accuracy, self.smoothed_val_loss, "accuracy")


def resolve_device(requested: str) -> str:
    """``auto`` -> cuda when available; asking for cuda without a GPU is a clear error."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise MissingEnvironmentError("--device cuda was requested but torch sees no CUDA GPU; use --device cpu")
    if requested not in ("cpu", "cuda"):
        raise UsageError(f"--device must be cpu, cuda or auto, not '{requested}'")
    return requested


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - the train extra brings torch
        raise missing_extra("torch", "train") from exc
    return torch


def _lr_lambda(warmup_steps: int, total_steps: int):  # noqa: ANN202 - a closure for LambdaLR
    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _make_optimizer(torch: Any, model: Any, recipe: Recipe) -> Any:
    t = recipe.training
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=t.lr, betas=(t.momentum, 0.999))


def _class_weights(torch: Any, split: SplitArrays, num_classes: int) -> Any:
    """Inverse-frequency weights (mean 1): a minority class counts as much as a majority one."""
    counts = split.class_counts(num_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def run_dir(workspace: Workspace, run_id: str) -> Path:
    return workspace.root / "runs" / run_id


def train_run(workspace: Workspace, spec: RunSpec, *, progress: Progress | None = None,
              register_model: bool = True) -> RunResult:
    """Train (or resume, or return the cached result of) one run.

    Under torchrun every rank calls this; rank 0 alone writes checkpoints and the registry.

    Args:
        workspace: Where the dataset lives and the run is recorded.
        spec: What to train.
        progress: Progress display.
        register_model: For a final run, also register its weights as ``model_name@vN`` (``train --seeds``
            registers only the seed it picks, with the spread, so it passes False).
    """
    torch = _torch()
    progress = progress or NullProgress()
    started = time.perf_counter()
    world = distributed.detect_world()
    run_id = spec.run_id
    existing = workspace.registry.get(run_id)
    if existing is not None:
        return _cached_result(workspace, existing, spec.model_name if spec.role == "final" else "",
                              register=register_model and spec.role == "final")

    dataset = load_dataset(workspace, spec.dataset)
    recipe = spec.recipe
    classes = list(dataset.classes)
    train_split, val_split = SplitArrays.of(dataset, "train"), SplitArrays.of(dataset, "val")
    if len(train_split) == 0:
        raise BadInputError(f"dataset {dataset.ref} has no training images; ingest more data or change --split")
    if len(val_split) == 0:
        raise BadInputError(f"dataset {dataset.ref} has no validation images (needed for early stopping and search)")

    device_type = spec.device
    distributed.init_world(world, device_type)
    device = torch.device(f"cuda:{world.local_rank}" if device_type == "cuda" else "cpu")
    if device_type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(spec.seed)

    from toolchain.models.zoo import build_model

    model = build_model(recipe, len(classes), weights=spec.weights).to(device)
    channels_last = True  # NHWC: faster convolutions with cuDNN and oneDNN (about 2x for edgenet on CPU)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = _make_optimizer(torch, model, recipe)
    batch_size = recipe.training.batch_size
    steps_per_epoch = len(batch_order(len(train_split), batch_size, torch.Generator(), shuffle=False,
                                      rank=world.rank, world=world.size, drop_last=True)) or 1
    total_steps = steps_per_epoch * recipe.training.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(steps_per_epoch * recipe.training.warmup_epochs, total_steps)
    )
    scaler = torch.amp.GradScaler("cuda", enabled=device_type == "cuda")
    from toolchain.train.ema import make_ema

    ema = make_ema(model, recipe.training.ema_decay)  # after channels_last: the copy keeps the memory format
    criterion = torch.nn.CrossEntropyLoss(
        weight=_class_weights(torch, train_split, len(classes)).to(device), label_smoothing=recipe.training.label_smoothing
    )
    net = model
    if world.distributed:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[world.local_rank] if device_type == "cuda" else None)

    directory = run_dir(workspace, run_id)
    checkpoint_path = directory / CHECKPOINT
    history: list[dict[str, Any]] = []
    best: Choice | None = None
    best_state: dict[str, Any] | None = None
    start_epoch = 0
    if checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        history = json.loads(state["history"])
        best = Choice.from_json(json.loads(state["best"]))
        best_state = state["best_model"]
        start_epoch = int(state["epoch"]) + 1
    elif world.is_main:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "spec.json").write_text(canonical_json({
            "identity": spec.identity(), "weights_path": spec.weights, "model_name": spec.model_name,
        }))

    patience = recipe.training.early_stopping_patience
    window = recipe.training.val_window
    stopped_early = False
    for epoch in range(start_epoch, recipe.training.epochs):
        improved_at = last_progress(history, window, recipe.training.select_on)
        if patience and improved_at is not None and epoch - improved_at > patience:
            stopped_early = True
            break
        stats = _train_epoch(
            torch, net, model, ema, dataset, workspace, train_split, val_split, recipe, optimizer, scheduler, scaler,
            criterion, device, epoch, spec.seed, world, channels_last, progress,
        )
        history.append(stats.to_json())
        for choice in candidates(history, window):
            if better(choice, best, recipe.training.select_on):
                best = choice
                kept = ema.module if choice.weights == "ema" else model
                best_state = {k: v.detach().cpu().clone() for k, v in kept.state_dict().items()}
        if world.is_main:
            save_checkpoint({
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "rng": torch.get_rng_state(), "epoch": epoch,
                "history": json.dumps(history), "best": json.dumps(best.to_json() if best else None),
                "best_model": best_state, **({"ema": ema.state_dict()} if ema is not None else {}),
            }, checkpoint_path)
        distributed.barrier(world)

    assert best is not None and best_state is not None, "at least one epoch ran"
    ranks_agree = None
    if world.distributed:
        checksum = float(sum(float(v.double().sum()) for v in model.state_dict().values()))
        sums = distributed.gather_objects(world, checksum)
        ranks_agree = all(abs(s - sums[0]) <= 1e-9 * max(1.0, abs(sums[0])) for s in sums)

    result = RunResult(
        run=run_id, cached=False, resumed_from_epoch=start_epoch, best_epoch=best.epoch,
        val_accuracy=best.val_accuracy, val_loss=best.val_loss, history=tuple(history),
        params=recipe.params(), world_size=world.size, ranks_agree=ranks_agree, seconds=time.perf_counter() - started,
        selected_weights=best.weights, smoothed_val_accuracy=best.smoothed_val_accuracy,
        smoothed_val_loss=best.smoothed_val_loss, seed=spec.seed,
    )
    if world.is_main:
        result = _register(workspace, spec, dataset, result, best_state, classes, stopped_early, register_model)
    distributed.barrier(world)
    result = distributed.broadcast_object(world, result)
    return result


def _train_epoch(
    torch: Any, net: Any, model: Any, ema: Any, dataset: DatasetVersion, workspace: Workspace, train_split: SplitArrays,
    val_split: SplitArrays, recipe: Recipe, optimizer: Any, scheduler: Any, scaler: Any, criterion: Any, device: Any,
    epoch: int, seed: int, world: distributed.World, channels_last: bool, progress: Progress,
) -> EpochStats:
    started = time.perf_counter()
    generator = epoch_generator(seed, epoch)
    batches = batch_order(len(train_split), recipe.training.batch_size, generator, shuffle=True,
                          rank=world.rank, world=world.size, drop_last=True)
    if not batches:  # fewer images than one batch: use them all
        batches = batch_order(len(train_split), recipe.training.batch_size, generator, shuffle=True,
                              rank=world.rank, world=world.size)
    net.train()
    seen = correct = 0
    loss_sum = 0.0
    progress.start(f"epoch {epoch + 1}/{recipe.training.epochs}", len(batches))
    for images, labels in iterate_batches(dataset, workspace.blobs, train_split, batches):
        x = train_transform(torch.from_numpy(images).to(device, non_blocking=True), recipe, generator)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.from_numpy(labels).to(device)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            logits = net(x)
            loss = criterion(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
        seen += len(labels)
        correct += int((logits.argmax(1) == y).sum())
        loss_sum += float(loss.detach()) * len(labels)
        elapsed = time.perf_counter() - started
        progress.advance(1)
        progress.note(f"loss {loss_sum / seen:.3f} acc {correct / seen:.3f} {seen * world.size / max(elapsed, 1e-9):,.0f} img/s")
    train_seconds = time.perf_counter() - started
    distributed.sync_buffers(world, model)
    val_loss, val_accuracy = _validate("raw", model, dataset, workspace, val_split, recipe, device, channels_last)
    note = f"loss {loss_sum / seen:.3f} acc {correct / seen:.3f} | val loss {val_loss:.3f} acc {val_accuracy:.4f}"
    ema_val_loss = ema_val_accuracy = None
    if ema is not None:
        distributed.sync_buffers(world, ema)  # each rank averaged its own BatchNorm statistics
        ema_val_loss, ema_val_accuracy = _validate("ema", ema.module, dataset, workspace, val_split, recipe, device,
                                                   channels_last)
        note += f" | EMA val loss {ema_val_loss:.3f} acc {ema_val_accuracy:.4f}"
    progress.note(note)
    progress.finish()
    return EpochStats(
        epoch=epoch, train_loss=round(loss_sum / seen, 6), train_accuracy=round(correct / seen, 6),
        val_loss=round(val_loss, 6), val_accuracy=round(val_accuracy, 6), lr=float(scheduler.get_last_lr()[0]),
        images_per_second=round(seen * world.size / max(train_seconds, 1e-9), 1),
        seconds=round(time.perf_counter() - started, 3),
        ema_val_loss=None if ema_val_loss is None else round(ema_val_loss, 6),
        ema_val_accuracy=None if ema_val_accuracy is None else round(ema_val_accuracy, 6),
    )


def _validate(
    weights: str, module: Any, dataset: DatasetVersion, workspace: Workspace, val_split: SplitArrays, recipe: Recipe,
    device: Any, channels_last: bool,
) -> tuple[float, float]:
    """``(loss, accuracy)`` of ``module`` on the validation split; ``weights`` (raw | ema) names which weights they are."""
    labels, probs = predict_split(module, dataset, workspace.blobs, val_split, recipe, device, channels_last=channels_last)
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0))))
    return loss, float(np.mean(probs.argmax(1) == labels))


def _register(
    workspace: Workspace, spec: RunSpec, dataset: DatasetVersion, result: RunResult, best_state: dict[str, Any],
    classes: list[str], stopped_early: bool, register_model: bool,
) -> RunResult:
    recipe = spec.recipe
    weights_sha = workspace.blobs.put_bytes(state_dict_bytes(best_state)) if spec.role == "final" else None
    run_body = {
        "role": spec.role,
        "spec": spec.identity(),
        "dataset": dataset.id,
        "recipe_name": recipe.name,
        "params": recipe.params(),
        "history": list(result.history),
        "best_epoch": result.best_epoch,
        "val_accuracy": result.val_accuracy,
        "val_loss": result.val_loss,
        "selected_weights": result.selected_weights,
        "smoothed_val_accuracy": result.smoothed_val_accuracy,
        "smoothed_val_loss": result.smoothed_val_loss,
        "stopped_early": stopped_early,
        "world_size": result.world_size,
        "ranks_agree": result.ranks_agree,
        "classes": classes,
        **({"weights": weights_sha} if weights_sha else {}),
    }
    record, _, _ = workspace.registry.commit(NewRecord(
        kind="run", name=spec.model_name or recipe.name, id=result.run, body=run_body,
        links=((dataset.id, "train_data"), *((trial, "trial") for trial in spec.trials)),
        blobs=((weights_sha, "weights"),) if weights_sha else (),
    ))
    result = RunResult(**{**result.__dict__, "weights": weights_sha})
    if spec.role != "final" or not register_model:
        return result
    model_id, model_ref = register_run_model(workspace, record, spec.model_name)
    return RunResult(**{**result.__dict__, "model_id": model_id, "model_ref": model_ref})


def register_run_model(
    workspace: Workspace, run: Any, model_name: str, *, seeds: dict[str, Any] | None = None,
    seed_runs: tuple[str, ...] = (),
) -> tuple[str, str]:
    """Register a final run's kept weights as ``model_name@vN``; returns ``(model id, NAME@vN)``.

    The model's weights are the blob the run stored: a plain state dict of the architecture, whether
    the run kept its raw or its EMA weights, so evaluate, export and quantize read it as any other.

    Args:
        workspace: The registry.
        run: The final run's record.
        model_name: Name to register under.
        seeds: ``train --seeds``: the seed summary (every seed's validation and test figures, the spread).
        seed_runs: ``train --seeds``: the other seeds' runs, linked as ``seed_run``.
    """
    from toolchain.models.recipe import parse_recipe
    from toolchain.models.zoo import build_model, count_parameters

    body = run.body
    recipe = parse_recipe(body["spec"]["recipe"], source=f"run {run.id[:12]}")
    classes = list(body["classes"])
    model_body = {
        "run": run.id,
        "dataset": body["dataset"],
        "weights": body["weights"],
        "architecture": recipe.architecture,
        "recipe": recipe.to_dict(),
        "classes": classes,
        "input_size": recipe.input_size,
        "mean": list(recipe.mean),
        "std": list(recipe.std),
        "parameters": count_parameters(build_model(recipe, len(classes))),
        "val_accuracy": body["val_accuracy"],
        "selected_weights": body["selected_weights"],
        **({"seeds": seeds} if seeds is not None else {}),
    }
    record, version, _ = workspace.registry.commit(NewRecord(
        kind="model", name=model_name, body=model_body, version=True,
        links=((run.id, "run"), (body["dataset"], "train_data"), *((r, "seed_run") for r in seed_runs)),
        blobs=((body["weights"], "weights"),),
    ))
    assert version is not None
    return record.id, f"{version.name}@v{version.number}"


def _cached_result(workspace: Workspace, record: Any, model_name: str, *, register: bool) -> RunResult:
    """The finished run and its model (a plain one, not a ``--seeds`` pick), registered under ``model_name``
    when asked for by another name, or for the first time when the run was trained as one of several seeds.
    Without ``register`` (a trial, or one of ``--seeds``) no model is looked up or registered."""
    body = record.body
    model_id = model_ref = None
    for link in workspace.registry.links_to(record.id) if register else ():
        if link.role == "run":
            model = workspace.registry.get(link.record_id)
            if model is not None and model.kind == "model" and "seeds" not in model.body:
                model_id = model.id
                name = model_name or model.name
                version = workspace.registry.version_of("model", name, model.id)
                if version is None:  # same training, new name: the same record gets NAME@vN there too
                    _, version, _ = workspace.registry.commit(NewRecord(kind="model", name=name, body=model.body, version=True))
                model_ref = f"{version.name}@v{version.number}" if version else None
    if model_id is None and register and model_name and body.get("weights") and distributed.detect_world().is_main:
        model_id, model_ref = register_run_model(workspace, record, model_name)
    return RunResult(
        run=record.id, cached=True, resumed_from_epoch=0, best_epoch=body["best_epoch"], val_accuracy=body["val_accuracy"],
        val_loss=body["val_loss"], history=tuple(body["history"]), model_id=model_id, model_ref=model_ref,
        params=body["params"], world_size=body["world_size"], ranks_agree=body["ranks_agree"],
        selected_weights=body.get("selected_weights", "raw"),
        smoothed_val_accuracy=body.get("smoothed_val_accuracy", body["val_accuracy"]),
        smoothed_val_loss=body.get("smoothed_val_loss", body["val_loss"]), weights=body.get("weights"),
        seed=int(body.get("spec", {}).get("seed", 0)),
    )


def spec_of_run(workspace: Workspace, prefix: str) -> RunSpec:
    """Rebuild the spec of a (killed) run from its directory, to resume it with ``--resume RUN``."""
    from toolchain.models.recipe import parse_recipe

    runs = workspace.root / "runs"
    matches = sorted(p for p in runs.glob(f"{prefix}*") if p.is_dir()) if runs.exists() and prefix else []
    if not matches:
        raise InputNotFoundError(f"no run matches '{prefix}' in {runs}; the run id is printed when training starts")
    if len(matches) > 1:
        raise UsageError(f"'{prefix}' matches {len(matches)} runs; type more characters")
    saved = json.loads((matches[0] / "spec.json").read_text())
    identity = saved["identity"]
    spec = RunSpec(
        dataset=identity["dataset"], recipe=parse_recipe(identity["recipe"], source=str(matches[0] / "spec.json")),
        seed=identity["seed"], device=identity["device"], weights=saved["weights_path"], role=identity["role"],
        model_name=saved["model_name"],
    )
    if spec.run_id != matches[0].name:
        raise UsageError(
            f"run {matches[0].name[:12]} was started by another toolchain version ({identity['code_version']}, now "
            f"{code_version('train', 'models', 'data')}); it cannot be resumed exactly, start a new run instead"
        )
    return spec

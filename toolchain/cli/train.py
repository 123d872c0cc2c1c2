"""``toolchain train`` and ``toolchain evaluate``."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from toolchain.cli.output import app, console, emit, json_option, progress_for


def _parse_set(values: tuple[str, ...]) -> tuple[tuple[str, Any], ...]:
    pairs = []
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"'{item}' must look like KEY=VALUE (e.g. lr=0.001)", param_hint="--set")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        pairs.append((key.strip(), value))
    return tuple(pairs)


@click.command()
@click.option("--data", "data_ref", default=None, help="Dataset NAME[@VERSION] (required unless --resume).")
@click.option("--recipe", default=None, help="Model recipe name or .toml path (default: the default recipe; see `toolchain models list`).")
@click.option("--name", default=None, help="Model name to register as NAME@vN (default: DATASET-RECIPE).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override the recipe's epochs.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a recipe parameter (repeatable), e.g. --set lr=0.001.")
@click.option("--search", type=click.Choice(["grid", "random"]), default=None, help="Hyper-parameter search over the recipe's search space.")
@click.option("--trials", type=click.IntRange(min=1), default=6, show_default=True, help="Search trials (random) or the most grid points allowed.")
@click.option("--trial-epochs", type=click.IntRange(min=1), default=None, help="Epochs per trial (default: a third of --epochs).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same data order, same result.")
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Train seeds SEED..SEED+K-1 of the final configuration (after any search), register the one "
                   "with the best validation score, and record every seed's validation and test accuracy and "
                   "their spread.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None, help="Local weights file to fine-tune from.")
@click.option("--resume", default=None, metavar="RUN", help="Continue a killed run (its id or a prefix) exactly where it stopped.")
@click.option("--mlflow", is_flag=True, help="Then mirror the run, its trials and the model into MLflow at $MLFLOW_TRACKING_URI.")
@json_option
@click.pass_context
def train(ctx: click.Context, data_ref: str | None, recipe: str | None, name: str | None, epochs: int | None,
          sets: tuple[str, ...], search: str | None, trials: int, trial_epochs: int | None, device: str, seed: int,
          seeds: int, weights: str | None, resume: str | None, mlflow: bool) -> None:
    """Train a classifier on a dataset version, optionally after a hyper-parameter search, and
    register the best checkpoint as NAME@vN.

    Reads the uint8 shards directly; checkpoints every epoch; rerunning the same command returns
    the finished run, or resumes it after a crash. Keeps the better of the raw weights and their
    EMA on a smoothed validation score (recipe keys ema_decay, val_window, select_on). With --seeds K the
    search (if any) runs once, then K seeds of the best configuration train; rerun the command
    (not --resume) to continue a killed --seeds run. Under `torchrun --nproc_per_node N -m toolchain
    train ...` it trains with DistributedDataParallel (gloo on CPU, NCCL on CUDA).
    """
    from toolchain.models.recipe import DEFAULT_RECIPE
    from toolchain.train.distributed import detect_world
    from toolchain.train.search import TrainConfig, Trial
    from toolchain.train.search import train as run_training

    if not data_ref and not resume:
        raise click.UsageError("give --data NAME[@VERSION] (or --resume RUN)")
    config = TrainConfig(
        data=data_ref or "", recipe=recipe or DEFAULT_RECIPE, name=name, epochs=epochs, overrides=_parse_set(sets),
        search=search, trials=trials, trial_epochs=trial_epochs, device=device, seed=seed, weights=weights,
        seeds=seeds,
    )
    is_main = detect_world().is_main
    tracking_uri = _mlflow_uri() if mlflow and is_main else None

    def on_trial(trial: Trial) -> None:
        if is_main and not app(ctx).json:
            console.print(f"trial {trial.params}: val acc {trial.run.val_accuracy:.4f} (run {trial.run.run[:12]})")

    def on_seed(run: Any) -> None:
        if is_main and not app(ctx).json:
            console.print(f"seed {run.seed}: smoothed val acc {run.smoothed_val_accuracy:.4f} ({run.selected_weights} "
                          f"weights, epoch {run.best_epoch + 1}, run {run.run[:12]})")

    with app(ctx).open_workspace() as workspace, progress_for(ctx) as progress:
        result = run_training(workspace, config, resume=resume, progress=progress if is_main else None, on_trial=on_trial,
                              on_seed=on_seed)
        mirrored = _mirror(workspace, tracking_uri, result.final.model_id, "model", f"model {result.final.model_ref}")
    if not is_main:
        return
    final = result.final
    payload = {
        "run": final.run,
        "model": final.model_ref,
        "model_id": final.model_id,
        "dataset": result.dataset,
        "cached": final.cached,
        "resumed_from_epoch": final.resumed_from_epoch,
        "val_accuracy": final.val_accuracy,
        "val_loss": final.val_loss,
        "smoothed_val_accuracy": final.smoothed_val_accuracy,
        "smoothed_val_loss": final.smoothed_val_loss,
        "selected_weights": final.selected_weights,
        "best_epoch": final.best_epoch,
        "seed": final.seed,
        "params": final.params,
        "best_params": result.best_params,
        "world_size": final.world_size,
        "ranks_agree": final.ranks_agree,
        "seconds": round(final.seconds, 2),
        "history": list(final.history),
        "trials": [{"params": t.params, "run": t.run.run, "val_accuracy": t.run.val_accuracy, "val_loss": t.run.val_loss,
                    "smoothed_val_accuracy": t.run.smoothed_val_accuracy} for t in result.trials],
        **({"seeds": result.seed_summary} if result.seed_summary else {}),
        **({"mlflow": mirrored.to_json()} if mirrored else {}),
    }

    def render(out: Console) -> None:
        if result.trials:
            table = Table(title="search trials (validation split)")
            for column in ("#", "params", "val acc", "val loss", "run"):
                table.add_column(column)
            best = max(result.trials, key=lambda t: t.run.score)
            for i, t in enumerate(result.trials, start=1):
                mark = " *" if t is best else ""
                table.add_row(f"{i}{mark}", escape(json.dumps(t.params)), f"{t.run.val_accuracy:.4f}",
                              f"{t.run.val_loss:.4f}", t.run.run[:12])
            out.print(table)
        if final.history:
            table = Table(title=f"run {final.run[:12]}" + (" (cached)" if final.cached else ""))
            has_ema = any("ema_val_accuracy" in h for h in final.history)
            columns = ("epoch", "train loss", "train acc", "val loss", "val acc",
                       *(("EMA val loss", "EMA val acc") if has_ema else ()), "img/s", "s")
            for column in columns:
                table.add_column(column, justify="right")
            for h in final.history:
                ema = (f"{h['ema_val_loss']:.4f}", f"{h['ema_val_accuracy']:.4f}") if "ema_val_accuracy" in h else ()
                table.add_row(str(h["epoch"] + 1), f"{h['train_loss']:.4f}", f"{h['train_accuracy']:.4f}",
                              f"{h['val_loss']:.4f}", f"{h['val_accuracy']:.4f}", *(ema if has_ema else ()),
                              f"{h['images_per_second']:,.0f}", f"{h['seconds']:.1f}")
            out.print(table)
        if result.seed_summary:
            _render_seeds(out, result.seed_summary)
        out.print(f"[bold]{final.model_ref}[/bold]: kept the {final.selected_weights} weights of epoch "
                  f"{final.best_epoch + 1} (val accuracy {final.val_accuracy:.4f}, mean of the last readings "
                  f"{final.smoothed_val_accuracy:.4f}); evaluate it with `toolchain evaluate {final.model_ref}`")
        _render_mirrored(out, mirrored)

    emit(ctx, payload, render)


@click.command()
@click.argument("model")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True)
@click.option("--data", "data_ref", default=None, help="Evaluate on another dataset version (default: the one it was trained on).")
@click.option("--min-accuracy", type=float, default=None, help="Gate: accuracy at least this (0..1).")
@click.option("--min-precision", type=float, default=None, help="Gate: precision of every class at least this.")
@click.option("--min-recall", type=float, default=None, help="Gate: recall of every class at least this.")
@click.option("--gate", "gate_specs", multiple=True, metavar="SPEC", help="Extra gate, e.g. recall:truck>=0.97 (repeatable).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--mlflow", is_flag=True, help="Then mirror the evaluation (metrics, plots) into MLflow at $MLFLOW_TRACKING_URI.")
@json_option
@click.pass_context
def evaluate(ctx: click.Context, model: str, split: str, data_ref: str | None, min_accuracy: float | None,
             min_precision: float | None, min_recall: float | None, gate_specs: tuple[str, ...], device: str,
             mlflow: bool) -> None:
    """Evaluate MODEL (NAME@vN, NAME@ALIAS or an id prefix) on a versioned split: accuracy,
    per-class precision/recall/F1, confusion matrix, ROC-AUC, PR curves (PNG plots stored as
    artifacts). Exits 3 when a gate is not met; the evaluation is recorded either way.
    """
    from toolchain.evaluate.gates import Gate, parse_gate
    from toolchain.evaluate.model import EvaluateConfig, evaluate_model
    from toolchain.errors import QualityGateError

    gates = []
    if min_accuracy is not None:
        gates.append(Gate(metric="accuracy", threshold=min_accuracy))
    if min_precision is not None:
        gates.append(Gate(metric="precision", threshold=min_precision))
    if min_recall is not None:
        gates.append(Gate(metric="recall", threshold=min_recall))
    gates.extend(parse_gate(spec) for spec in gate_specs)
    config = EvaluateConfig(model=model, split=split, data=data_ref, gates=tuple(gates), device=device)
    tracking_uri = _mlflow_uri() if mlflow else None
    with app(ctx).open_workspace() as workspace:
        report = evaluate_model(workspace, config)
        mirrored = _mirror(workspace, tracking_uri, report.evaluation, "evaluation", f"evaluation {report.evaluation[:12]}")
    payload = {**report.to_json(), **({"mlflow": mirrored.to_json()} if mirrored else {})}

    def render(out: Console) -> None:
        m = report.metrics
        out.print(f"[bold]{report.model_ref}[/bold] on {report.split} ({m.num_samples} images): accuracy {m.accuracy:.4f}"
                  + (f", ROC-AUC {m.roc_auc:.4f}" if m.roc_auc is not None else ""))
        table = Table()
        for column in ("class", "precision", "recall", "F1", "support"):
            table.add_column(column, justify="right")
        for c in m.classes:
            table.add_row(c, f"{m.precision[c]:.4f}", f"{m.recall[c]:.4f}", f"{m.f1[c]:.4f}", str(m.support[c]))
        out.print(table)
        cm = Table(title="confusion matrix (rows: true)")
        cm.add_column("")
        for c in m.classes:
            cm.add_column(c, justify="right")
        for c, row in zip(m.classes, m.confusion_matrix):
            cm.add_row(c, *[str(v) for v in row])
        out.print(cm)
        if report.seeds:
            out.print(f"training seeds ({escape(report.seeds.get('scope', ''))}): {seed_spread_line(report.seeds)}")
        out.print(("[green]gates passed[/green]: " if report.gates.passed else "[red]gates failed[/red]: ")
                  + report.gates.message())
        out.print(f"evaluation {report.evaluation[:12]} recorded; plots:")
        for name, path in report.plot_paths.items():
            out.print(f"  {name}: {escape(path)}")
        _render_mirrored(out, mirrored)

    emit(ctx, payload, render)
    if not report.gates.passed:  # the report above is the one JSON document; the reason goes to stderr
        console.print(f"[bold red]quality gate not met:[/bold red] {escape(report.gates.message())}")
        ctx.exit(QualityGateError.exit_code)


def _render_seeds(out: Console, summary: dict[str, Any]) -> None:
    table = Table(title=f"{summary['count']} seeds, picked on validation only")
    for column in ("seed", "weights", "epoch", "val acc", "val acc (smoothed)", "test acc", "run"):
        table.add_column(column, justify="right")
    for r in summary["runs"]:
        mark = " *" if r["seed"] == summary["picked_seed"] else ""
        table.add_row(f"{r['seed']}{mark}", r["selected_weights"], str(r["best_epoch"] + 1), f"{r['val_accuracy']:.4f}",
                      f"{r['smoothed_val_accuracy']:.4f}", f"{r['test_accuracy']:.4f}", r["run"][:12])
    out.print(table)
    out.print(seed_spread_line(summary))


def seed_spread_line(summary: dict[str, Any]) -> str:
    """One line on the spread of test accuracy over a model's training seeds (train and evaluate print it)."""
    t = summary.get("test_accuracy")
    if not t:
        return f"{summary['count']} seeds; no test split to measure their spread on"
    chance = t.get("chance_spread")
    by_chance = (f" (equally good seeds would spread {100 * chance['p5']:.1f}-{100 * chance['p95']:.1f} points on these "
                 f"{summary.get('test_images', '?')} test images, median {100 * chance['median']:.1f})") if chance else ""
    return (f"test accuracy over {summary['count']} seeds: mean {t['mean']:.4f} (std {t['std']:.4f}), min {t['min']:.4f}, "
            f"max {t['max']:.4f}, spread {100 * t['spread']:.1f} points{by_chance}; seed {summary['picked_seed']} picked "
            f"on validation")


def _mlflow_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` for ``--mlflow``, checked before the stage runs."""
    from toolchain.mlflow_mirror.export import tracking_uri_from_env

    return tracking_uri_from_env()


def _mirror(workspace: Any, tracking_uri: str | None, ref: str | None, kind: str, what: str) -> Any:
    """Mirror what the stage recorded into MLflow (``--mlflow``); None when not asked (or nothing to mirror)."""
    if tracking_uri is None or ref is None:
        return None
    from toolchain.mlflow_mirror.export import mirror_stage

    return mirror_stage(workspace, tracking_uri, ref=ref, kind=kind, what=what)


def _render_mirrored(out: Console, report: Any) -> None:
    if report is not None:
        runs = report.counts["runs"]
        out.print(f"mirrored to MLflow {escape(report.tracking_uri)}: {runs['created'] + runs['replaced']} runs created, "
                  f"{runs['unchanged'] + runs['updated']} already there")

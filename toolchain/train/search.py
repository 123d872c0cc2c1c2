"""``toolchain train``: optional hyper-parameter search, then the final run of the best configuration.

Trials train for a short budget and are compared on the validation split only; the test split is
never read before ``evaluate``. Every trial is a run record with its parameters and metrics.

With ``seeds > 1`` the final configuration (after the search, which runs once with ``seed``) is
trained with seeds ``seed .. seed + seeds - 1``; one is picked on validation and registered with
every seed's validation and test figures and their spread (``toolchain.train.seeds``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from toolchain.data.versions import load_dataset
from toolchain.errors import UsageError
from toolchain.models.recipe import DEFAULT_RECIPE, Recipe, load_recipe
from toolchain.progress import NullProgress, Progress
from toolchain.train.loop import RunResult, RunSpec, resolve_device, spec_of_run, train_run
from toolchain.workspace import Workspace

SEARCH_MODES = ("grid", "random")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Options of ``toolchain train``."""

    data: str
    recipe: str = DEFAULT_RECIPE
    name: str | None = None
    epochs: int | None = None
    overrides: tuple[tuple[str, Any], ...] = ()
    search: str | None = None
    trials: int = 6
    trial_epochs: int | None = None
    device: str = "auto"
    seed: int = 0
    weights: str | None = None
    seeds: int = 1  # train seeds seed..seed+seeds-1 of the final configuration, pick one on validation

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise UsageError("--seeds must be at least 1")
        if self.search is not None and self.search not in SEARCH_MODES:
            raise UsageError(f"--search must be one of {', '.join(SEARCH_MODES)}")
        if self.trials < 1:
            raise UsageError("--trials must be at least 1")
        if self.epochs is not None and self.epochs < 1:
            raise UsageError("--epochs must be at least 1")


@dataclass(frozen=True, kw_only=True)
class Trial:
    """One search trial: its parameters and what it scored on the validation split."""

    params: dict[str, Any]
    run: RunResult


@dataclass(frozen=True, kw_only=True)
class TrainResult:
    """The final run (with its registered model) and the trials that chose its parameters."""

    final: RunResult
    trials: tuple[Trial, ...]
    best_params: dict[str, Any]
    dataset: str
    dataset_ref: str
    seeds: tuple[Any, ...] = ()  # SeedOutcome per seed (train --seeds K, K > 1)
    seed_summary: dict[str, Any] | None = None  # what the model record keeps: figures per seed, spread, pick


def with_epochs(recipe: Recipe, epochs: int) -> Recipe:
    """The recipe trained for ``epochs``, its warm-up shortened to fit (short trials, quick runs)."""
    warmup = min(recipe.training.warmup_epochs, max(0, epochs - 1))
    return recipe.with_overrides({"warmup_epochs": warmup, "epochs": epochs})


def search_space_samples(space: dict[str, list[Any]], mode: str, trials: int, seed: int) -> list[dict[str, Any]]:
    """Parameter sets to try: every grid point, or ``trials`` random draws (scikit-learn samplers)."""
    from sklearn.model_selection import ParameterGrid, ParameterSampler

    if not space:
        raise UsageError("this recipe has no search space; add a [search] table to it or drop --search")
    grid = ParameterGrid(space)
    if mode == "grid":
        if len(grid) > trials:
            raise UsageError(
                f"the grid has {len(grid)} points but --trials is {trials}; raise --trials or use --search random"
            )
        return [dict(sorted(p.items())) for p in grid]
    return [dict(sorted(p.items())) for p in ParameterSampler(space, n_iter=min(trials, len(grid)), random_state=seed)]


def train(workspace: Workspace, config: TrainConfig, *, resume: str | None = None, progress: Progress | None = None,
          on_trial: Any = None, on_seed: Any = None) -> TrainResult:
    """Run the search (if asked) and the final training; returns the registered model.

    Args:
        workspace: Where the dataset lives and runs/models are recorded.
        config: What to train.
        resume: A run id (prefix) to continue exactly where it was killed.
        progress: Progress display.
        on_trial: Called with each finished :class:`Trial` (for live tables).
        on_seed: Called with each finished seed's :class:`RunResult` (``seeds > 1``).
    """
    progress = progress or NullProgress()
    if resume and config.seeds > 1:
        raise UsageError(
            "--resume continues one run, not a set of seeds; run the same `train --seeds` command again instead: "
            "finished seeds are reused and the killed one resumes from its checkpoint"
        )
    if resume:
        spec = spec_of_run(workspace, resume)
        dataset = load_dataset(workspace, spec.dataset)
        final = train_run(workspace, spec, progress=progress)
        return TrainResult(final=final, trials=(), best_params=spec.recipe.params(), dataset=dataset.id, dataset_ref=dataset.ref)

    dataset = load_dataset(workspace, config.data)
    recipe = load_recipe(config.recipe)
    recipe = recipe.with_overrides(dict(config.overrides))
    if config.epochs is not None:
        recipe = with_epochs(recipe, config.epochs)
    device = resolve_device(config.device)
    dataset_name = dataset.version.name if dataset.version else "dataset"
    model_name = config.name or f"{dataset_name}-{recipe.name}"

    trials: list[Trial] = []
    best_params: dict[str, Any] = {}
    if config.search:
        trial_epochs = config.trial_epochs or max(1, recipe.training.epochs // 3)
        for number, params in enumerate(search_space_samples(recipe.param_grid(), config.search, config.trials, config.seed)):
            trial_recipe = with_epochs(recipe.with_overrides(params), trial_epochs)
            spec = RunSpec(dataset=dataset.id, recipe=trial_recipe, seed=config.seed, device=device,
                           weights=config.weights, role="trial", model_name=model_name)
            progress.start(f"trial {number + 1}: {params}", None)
            progress.finish()
            result = train_run(workspace, spec, progress=progress)
            trial = Trial(params=params, run=result)
            trials.append(trial)
            if on_trial is not None:
                on_trial(trial)
        best = max(trials, key=lambda t: t.run.score)
        best_params = best.params
        recipe = recipe.with_overrides(best_params)

    def final_spec(seed: int) -> RunSpec:
        return RunSpec(dataset=dataset.id, recipe=recipe, seed=seed, device=device, weights=config.weights,
                       role="final", model_name=model_name, trials=tuple(t.run.run for t in trials))

    if config.seeds == 1:
        final = train_run(workspace, final_spec(config.seed), progress=progress)
        return TrainResult(final=final, trials=tuple(trials), best_params=best_params, dataset=dataset.id,
                           dataset_ref=dataset.ref)
    return _train_seeds(workspace, config, dataset, recipe, final_spec, trials, best_params, progress, on_seed)


def _train_seeds(workspace: Workspace, config: TrainConfig, dataset: Any, recipe: Recipe, final_spec: Any,
                 trials: list[Trial], best_params: dict[str, Any], progress: Progress, on_seed: Any) -> TrainResult:
    """Train every seed (finished ones are cache hits), pick on validation, score all on test, register the pick."""
    from toolchain.train import distributed
    from toolchain.train import seeds as seeding
    from toolchain.train.loop import register_run_model

    runs: list[RunResult] = []
    for number in range(config.seeds):
        seed = config.seed + number
        progress.start(f"seed {seed} ({number + 1}/{config.seeds})", None)
        progress.finish()
        run = train_run(workspace, final_spec(seed), progress=progress, register_model=False)
        runs.append(run)
        if on_seed is not None:
            on_seed(run)
    picked = seeding.pick(runs)
    world = distributed.detect_world()
    result = None
    if world.is_main:
        outcomes = []
        for run in runs:  # after the pick: the test figures are reported, never used to choose
            accuracy, loss, correct = seeding.test_figures(workspace, dataset, run, recipe)
            outcomes.append(seeding.SeedOutcome(seed=run.seed, run=run, test_accuracy=accuracy, test_loss=loss,
                                                test_correct=correct))
        summary = seeding.summary(outcomes, picked, dataset)
        record = workspace.registry.get(picked.run)
        assert record is not None, "the picked run was recorded"
        model_id, model_ref = register_run_model(
            workspace, record, final_spec(picked.seed).model_name, seeds=summary,
            seed_runs=tuple(r.run for r in runs if r.run != picked.run),
        )
        final = RunResult(**{**picked.__dict__, "model_id": model_id, "model_ref": model_ref})
        result = TrainResult(final=final, trials=tuple(trials), best_params=best_params, dataset=dataset.id,
                             dataset_ref=dataset.ref, seeds=tuple(outcomes), seed_summary=summary)
    distributed.barrier(world)
    return distributed.broadcast_object(world, result)

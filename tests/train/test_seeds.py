"""`train --seeds` orchestration without training: search first (once), then K seeds of the best configuration,
the pick on validation only, the test figures after the pick, one model registered."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from toolchain.errors import UsageError
from toolchain.train import loop, search, seeds
from toolchain.train.loop import RunResult
from toolchain.workspace import Workspace


def _result(spec, score: float) -> RunResult:  # noqa: ANN001
    return RunResult(run=spec.run_id, cached=False, resumed_from_epoch=0, best_epoch=0, val_accuracy=score,
                     val_loss=1 - score, history=(), smoothed_val_accuracy=score, smoothed_val_loss=1 - score,
                     seed=spec.seed, weights="w" * 64)


def test_search_runs_once_then_seeds_train_the_best_configuration_and_the_pick_ignores_test(
        tiny_workspace: Path, monkeypatch) -> None:
    calls = []
    val_by_seed = {10: 0.80, 11: 0.90, 12: 0.85}  # seed 11 is best on validation ...
    test_by_seed = {10: 0.99, 11: 0.70, 12: 0.95}  # ... and worst on test: the pick must not care

    def fake_train_run(workspace, spec, *, progress=None, register_model=True):  # noqa: ANN001, ANN202
        calls.append((spec.role, spec.seed, spec.recipe.training.lr, register_model))
        if spec.role == "trial":
            return _result(spec, 0.9 if spec.recipe.training.lr == 0.01 else 0.5)
        return _result(spec, val_by_seed[spec.seed])

    registered = []
    monkeypatch.setattr(search, "train_run", fake_train_run)
    # 100 test images: each seed right on its test accuracy's share of them, the first ones
    answers = {seed: tuple(i < round(100 * acc) for i in range(100)) for seed, acc in test_by_seed.items()}
    monkeypatch.setattr(seeds, "test_figures", lambda ws, ds, run, recipe: (test_by_seed[run.seed], 0.5,
                                                                            answers[run.seed]))
    monkeypatch.setattr(loop, "register_run_model",
                        lambda ws, record, name, *, seeds, seed_runs: registered.append((record, seeds, seed_runs)) or
                        ("m" * 64, f"{name}@v1"))
    with Workspace(tiny_workspace) as ws:
        real_get = ws.registry.get
        monkeypatch.setattr(ws.registry, "get", lambda i: real_get(i) or i)  # a fake run's "record" is its id
        result = search.train(ws, search.TrainConfig(
            data="tiny", search="grid", trials=4, seed=10, seeds=3, device="cpu",
            recipe=str(_recipe(tiny_workspace.parent)),
        ))
    assert [c[:2] for c in calls if c[0] == "trial"] == [("trial", 10), ("trial", 10)]  # the search ran once
    finals = [c for c in calls if c[0] == "final"]
    assert [c[1] for c in finals] == [10, 11, 12] and {c[2] for c in finals} == {0.01}  # best config, every seed
    assert not any(c[3] for c in finals)  # seeds are not registered one by one
    assert result.final.seed == 11 and result.seed_summary["picked_seed"] == 11
    assert result.seed_summary["test_accuracy"]["spread"] == pytest.approx(0.29)
    assert [o.test_accuracy for o in result.seeds] == [0.99, 0.70, 0.95]
    # seeds 29 points apart, each right on a subset of the others' right answers: not chance (shuffled, they
    # spread far less)
    chance = result.seed_summary["test_accuracy"]["chance_spread"]
    assert 0 < chance["p5"] <= chance["median"] <= chance["p95"] < 0.29 and chance["shuffles"] == seeds.CHANCE_SHUFFLES
    (record, summary, others), = registered
    assert record == result.final.run and summary is result.seed_summary and len(others) == 2


def test_seeds_must_be_positive_and_do_not_combine_with_resume(tiny_workspace: Path) -> None:
    with pytest.raises(UsageError, match="--seeds"):
        search.TrainConfig(data="tiny", seeds=0)
    with Workspace(tiny_workspace) as ws, pytest.raises(UsageError, match="same `train --seeds` command"):
        search.train(ws, search.TrainConfig(data="", seeds=2), resume="abc")


def test_spread_figures() -> None:
    figures = seeds.spread([0.951, 0.976, 0.994, 0.982])
    assert figures["min"] == 0.951 and figures["max"] == 0.994 and figures["spread"] == pytest.approx(0.043)
    assert figures["mean"] == pytest.approx(0.97575) and figures["std"] == pytest.approx(statistics.stdev([0.951, 0.976, 0.994, 0.982]), abs=1e-6)
    assert seeds.spread([0.9])["std"] == 0.0


def _recipe(directory: Path) -> Path:
    path = directory / "two-lr.toml"
    path.write_text('name = "two-lr"\narchitecture = "edgenet"\ninput_size = 32\n[search]\nlr = [0.001, 0.01]\n')
    return path


def test_chance_spread_is_what_equally_good_seeds_would_show_on_the_test_split() -> None:
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(5)
    # five seeds that agree on every image: shuffling changes nothing, so chance gives no spread at all
    same = np.tile(rng.random(200) < 0.85, (5, 1))
    assert seeds.chance_spread(same) == {"median": 0.0, "p5": 0.0, "p95": 0.0, "shuffles": seeds.CHANCE_SHUFFLES}
    # five equally good seeds that err independently on 15% of 200 images: their own spread is inside chance's
    independent = rng.random((5, 200)) < 0.85
    chance = seeds.chance_spread(independent)
    measured = np.ptp(independent.mean(axis=1))
    assert 0.02 < chance["p5"] < chance["median"] < chance["p95"] < 0.2
    assert chance["p5"] <= measured <= chance["p95"]
    assert seeds.chance_spread(independent) == chance  # a fixed shuffle seed: the same figures on a rerun
    # fewer than two seeds, or no test images: nothing to say
    assert seeds.chance_spread(independent[:1]) is None and seeds.chance_spread(np.zeros((3, 0), bool)) is None

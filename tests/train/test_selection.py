"""Checkpoint selection (raw vs EMA weights, smoothed validation score) and the EMA itself, without training."""

from __future__ import annotations

import pytest

from toolchain.train.selection import last_progress, select


def _history(raw: list[tuple[float, float]], ema: list[tuple[float, float]] | None = None) -> list[dict]:
    out = []
    for epoch, (acc, loss) in enumerate(raw):
        entry = {"epoch": epoch, "val_accuracy": acc, "val_loss": loss}
        if ema is not None:
            entry.update(ema_val_accuracy=ema[epoch][0], ema_val_loss=ema[epoch][1])
        out.append(entry)
    return out


def test_window_1_without_ema_is_the_single_reading_rule_of_before() -> None:
    history = _history([(0.70, 0.6), (0.80, 0.5), (0.80, 0.4), (0.75, 0.3), (0.80, 0.4)])
    best = select(history, window=1)
    # highest accuracy, lower loss breaks the tie, an equal later reading does not replace it
    assert best is not None and (best.epoch, best.weights, best.val_accuracy) == (2, "raw", 0.80)
    assert best.smoothed_val_accuracy == best.val_accuracy and best.smoothed_val_loss == best.val_loss


def test_a_single_lucky_reading_does_not_pick_the_checkpoint_when_smoothed() -> None:
    accuracies = [0.70, 0.95, 0.72, 0.84, 0.85, 0.86, 0.86]  # epoch 1 is a spike
    history = _history([(a, 0.5) for a in accuracies])
    assert select(history, window=1).epoch == 1
    best = select(history, window=3)
    assert best.epoch == 6 and best.smoothed_val_accuracy == pytest.approx((0.85 + 0.86 + 0.86) / 3, abs=1e-6)
    assert best.val_accuracy == 0.86  # the kept weights' own reading is recorded beside the score


def test_the_better_of_raw_and_ema_is_kept_and_ema_wins_a_tie() -> None:
    raw = [(0.70, 0.6), (0.80, 0.5), (0.78, 0.5)]
    ema = [(0.60, 0.7), (0.80, 0.5), (0.83, 0.4)]
    best = select(_history(raw, ema), window=1)
    assert (best.epoch, best.weights) == (2, "ema")
    best = select(_history(raw[:2], ema[:2]), window=1)
    assert (best.epoch, best.weights) == (1, "ema")  # equal scores at epoch 1: the steadier EMA
    worse_ema = [(0.50, 0.9)] * 3
    assert select(_history(raw, worse_ema), window=2).weights == "raw"


def test_select_on_loss_ranks_the_smoothed_loss_first_and_accuracy_breaks_ties() -> None:
    # accuracy peaks early by a lucky image or two; the loss keeps falling as training anneals
    history = _history([(0.70, 0.60), (0.84, 0.45), (0.83, 0.42), (0.82, 0.38), (0.83, 0.38)])
    assert select(history, window=1).epoch == 1
    best = select(history, window=1, metric="loss")
    assert (best.epoch, best.val_loss, best.val_accuracy) == (4, 0.38, 0.83)  # equal loss: the better accuracy
    smoothed = select(history, window=2, metric="loss")
    assert smoothed.epoch == 4 and smoothed.smoothed_val_loss == pytest.approx(0.38)
    with pytest.raises(ValueError, match="accuracy or loss"):
        select(history, window=1, metric="f1")


def test_early_stopping_on_accuracy_counts_from_the_selected_checkpoint() -> None:
    history = _history([(0.70, 0.60), (0.84, 0.45), (0.83, 0.42), (0.82, 0.38), (0.83, 0.38)])
    assert last_progress(history, window=1) == select(history, window=1).epoch == 1
    assert last_progress([], window=1) is None


def test_select_on_loss_stops_only_when_neither_loss_nor_accuracy_improves() -> None:
    # the loss bottoms at epoch 2 and creeps up as the model grows confident; accuracy still rises to epoch 5
    history = _history([(0.70, 0.60), (0.80, 0.40), (0.82, 0.30), (0.84, 0.31), (0.85, 0.32), (0.86, 0.33),
                        (0.86, 0.34), (0.85, 0.35)])
    assert select(history, window=1, metric="loss").epoch == 2  # the kept weights: lowest loss
    assert last_progress(history, window=1, metric="loss") == 5  # patience counts from accuracy's last gain
    # an equal accuracy is no progress, and neither is an equal loss
    flat = _history([(0.80, 0.40), (0.80, 0.40), (0.80, 0.40)])
    assert last_progress(flat, window=1, metric="loss") == 0
    # EMA and raw both count: a raw accuracy gain is progress even when the EMA holds the best loss
    raw = [(0.70, 0.50), (0.75, 0.45), (0.90, 0.60)]
    ema = [(0.72, 0.40), (0.74, 0.35), (0.74, 0.36)]
    both = _history(raw, ema)
    assert select(both, window=1, metric="loss").weights == "ema"
    assert last_progress(both, window=1, metric="loss") == 2


def test_the_recipe_takes_select_on_and_refuses_other_metrics() -> None:
    from toolchain.errors import UsageError
    from toolchain.models.recipe import load_recipe

    recipe = load_recipe("edgenet")
    assert recipe.training.select_on == "loss"
    assert recipe.with_overrides({"select_on": "accuracy"}).training.select_on == "accuracy"
    with pytest.raises(UsageError, match="select_on"):
        recipe.with_overrides({"select_on": "f1"})


def test_ema_averages_parameters_and_batchnorm_buffers_with_a_warm_up() -> None:
    torch = pytest.importorskip("torch")
    from toolchain.train.ema import make_ema

    assert make_ema(torch.nn.Linear(2, 2), 0.0) is None
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1, bias=False), torch.nn.BatchNorm2d(2))
    ema = make_ema(model, 0.9)
    weight, bn = model[0].weight, model[1]
    with torch.no_grad():
        weight.fill_(1.0)
        bn.running_mean.fill_(1.0)
        bn.num_batches_tracked.fill_(5)
    ema.update_parameters(model)  # the first update copies
    assert torch.equal(ema.module[0].weight, weight) and torch.equal(ema.module[1].running_mean, bn.running_mean)
    with torch.no_grad():
        weight.fill_(3.0)
        bn.running_mean.fill_(3.0)
        bn.num_batches_tracked.fill_(6)
    ema.update_parameters(model)  # n = 1: decay min(0.9, 2/11)
    decay = 2 / 11
    expected = 1.0 * decay + 3.0 * (1 - decay)
    assert torch.allclose(ema.module[0].weight, torch.full_like(weight, expected))
    assert torch.allclose(ema.module[1].running_mean, torch.full_like(bn.running_mean, expected))
    assert int(ema.module[1].num_batches_tracked) == 6  # a counter is copied, not averaged
    # what a registered model stores: exactly the architecture's keys
    assert ema.module.state_dict().keys() == model.state_dict().keys()
    assert "n_averaged" in ema.state_dict()  # what the checkpoint stores, to resume the same average

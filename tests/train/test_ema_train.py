"""Training with the EMA of the weights: the kept EMA weights are registered as a plain state dict of the
architecture and export to ONNX like any model; the old behaviour stays reachable through the recipe."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from toolchain.train import loop  # noqa: E402
from toolchain.models.checkpoint import load_checkpoint  # noqa: E402
from toolchain.train.search import TrainConfig, train  # noqa: E402
from toolchain.workspace import Workspace  # noqa: E402

TINY = (("input_size", 32), ("batch_size", 16), ("width", 0.5))


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _script_validation(monkeypatch, readings: list[tuple[float, float]]) -> None:  # noqa: ANN001
    """Each validation still runs for real, but reports the next scripted ``(loss, accuracy)`` (raw, then EMA,
    each epoch)."""
    real = loop._validate
    scripted_readings = iter(readings)

    def scripted(weights, module, *args):  # noqa: ANN001, ANN202
        real(weights, module, *args)
        return next(scripted_readings)

    monkeypatch.setattr(loop, "_validate", scripted)


def test_ema_selected_weights_register_as_a_plain_state_dict_and_export(tiny_workspace: Path, monkeypatch) -> None:
    pytest.importorskip("onnx")
    real = loop._validate

    def ema_always_better(weights, module, *args):  # noqa: ANN001, ANN202
        loss, accuracy = real(weights, module, *args)
        return (0.0, 1.0) if weights == "ema" else (loss, accuracy)  # better on loss (selected on) and accuracy

    monkeypatch.setattr(loop, "_validate", ema_always_better)
    with Workspace(tiny_workspace) as ws:
        result = train(ws, TrainConfig(data="tiny", name="emacls", epochs=1, overrides=TINY, device="cpu")).final
        assert result.selected_weights == "ema" and result.val_accuracy == 1.0
        assert "ema_val_accuracy" in result.history[0]
        checkpoint = load_checkpoint(ws.root / "runs" / result.run / "checkpoint.pt")
        ema_module = {k.removeprefix("module."): v for k, v in checkpoint["ema"].items() if k != "n_averaged"}
        model = ws.resolve(result.model_ref, kind="model").record
        assert model.body["selected_weights"] == "ema"
        stored = load_checkpoint(ws.blobs.read_bytes(model.body["weights"]))
        assert stored.keys() == checkpoint["model"].keys() == ema_module.keys()  # no "module." prefix, no n_averaged
        assert all(torch.equal(stored[k], ema_module[k]) for k in stored)
        assert any(not torch.equal(stored[k], checkpoint["model"][k]) for k in stored)  # not the raw weights
        assert ws.registry.get(result.run).body["weights"] == model.body["weights"]

        from toolchain.export import ExportConfig, export_model
        from toolchain.models.registered import load_registered_model

        assert load_registered_model(ws, result.model_ref).module is not None  # strict load_state_dict
        exported = export_model(ws, ExportConfig(model=result.model_ref))
        assert exported.parity.passed and exported.parity.top1_agreement == 1.0


def test_ema_off_and_one_reading_is_the_old_recipe(tiny_workspace: Path) -> None:
    old = (*TINY, ("ema_decay", 0.0), ("val_window", 1), ("select_on", "accuracy"))
    with Workspace(tiny_workspace) as ws:
        result = train(ws, TrainConfig(data="tiny", name="old", epochs=2, overrides=old, device="cpu")).final
        assert result.selected_weights == "raw"
        assert all("ema_val_accuracy" not in h for h in result.history)
        best = max(result.history, key=lambda h: (h["val_accuracy"], -h["val_loss"]))
        assert result.best_epoch == best["epoch"] and result.smoothed_val_accuracy == result.val_accuracy
        assert "ema" not in load_checkpoint(ws.root / "runs" / result.run / "checkpoint.pt")


def test_select_on_loss_keeps_the_weights_of_the_lowest_smoothed_validation_loss(tiny_workspace: Path,
                                                                                   monkeypatch) -> None:
    from toolchain.train.selection import select

    _script_validation(monkeypatch, [(0.60, 0.9), (0.61, 0.9), (0.50, 0.6), (0.51, 0.6), (0.40, 0.7), (0.40, 0.7)])
    with Workspace(tiny_workspace) as ws:  # epoch 0 has the best accuracy; epoch 2 the lowest loss
        overrides = (*TINY, ("val_window", 1), ("select_on", "loss"))
        result = train(ws, TrainConfig(data="tiny", name="byloss", epochs=3, overrides=overrides, device="cpu")).final
    assert result.params["select_on"] == "loss"
    assert result.best_epoch == 2 and result.val_loss == 0.40 and result.val_accuracy == 0.7
    assert select(result.history, 1, "loss").epoch == 2 and select(result.history, 1).epoch == 0


def test_select_on_loss_trains_on_while_accuracy_improves_and_stops_when_neither_does(tiny_workspace: Path,
                                                                                      monkeypatch) -> None:
    # (loss, accuracy) per epoch, the same for raw and EMA: the loss bottoms at epoch 0, accuracy rises to epoch 2
    per_epoch = [(0.30, 0.70), (0.35, 0.75), (0.36, 0.80), (0.37, 0.80), (0.38, 0.80), (0.38, 0.79)]
    _script_validation(monkeypatch, [r for r in per_epoch for _ in ("raw", "ema")])
    overrides = (*TINY, ("val_window", 1), ("select_on", "loss"), ("early_stopping_patience", 1))
    with Workspace(tiny_workspace) as ws:
        result = train(ws, TrainConfig(data="tiny", name="plateau", epochs=6, overrides=overrides, device="cpu")).final
        # stopping on the loss alone would have stopped before epoch 2; accuracy's gains carry it to epoch 3,
        # and the run stops before epoch 4, two epochs after the last gain of either
        assert [h["epoch"] for h in result.history] == [0, 1, 2, 3]
        assert ws.registry.get(result.run).body["stopped_early"] is True
    assert result.best_epoch == 0 and result.val_loss == 0.30  # the kept weights are still the lowest loss

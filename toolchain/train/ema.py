"""An exponential moving average of the weights, kept beside the model during training.

Built on ``torch.optim.swa_utils.AveragedModel`` with ``use_buffers=True``: BatchNorm's running mean
and variance are averaged with the same decay as the parameters, so the EMA weights come with
statistics that match them closely (timm's ModelEmaV2 does the same) without an extra pass over the
training data each epoch. Integer buffers (BatchNorm's ``num_batches_tracked``) are counters, not
averages: they are copied.

The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` over the first updates ``n`` so the average
is not dominated by the random initial weights in short runs. ``AveragedModel.state_dict()`` (with
its ``n_averaged`` counter) goes into the checkpoint; ``ema.module.state_dict()`` is a plain state
dict of the architecture, the format a registered model's weights have.
"""

from __future__ import annotations

from typing import Any


def ema_multi_avg_fn(decay: float) -> Any:
    """The ``multi_avg_fn`` for ``AveragedModel``: a warmed-up EMA of float tensors, a copy of integer ones."""
    import torch
    from torch.optim.swa_utils import get_ema_multi_avg_fn

    @torch.no_grad()
    def update(averaged: list[Any], current: list[Any], num_averaged: Any) -> None:
        n = float(num_averaged)
        effective = min(decay, (1.0 + n) / (10.0 + n))
        if torch.is_floating_point(averaged[0]) or torch.is_complex(averaged[0]):
            get_ema_multi_avg_fn(effective)(averaged, current, num_averaged)
        else:
            for target, source in zip(averaged, current, strict=True):
                target.copy_(source)

    return update


def make_ema(model: Any, decay: float) -> Any:
    """An ``AveragedModel`` EMA of ``model`` (a deep copy, same device and memory format), or None when ``decay`` is 0."""
    if decay <= 0.0:
        return None
    from torch.optim.swa_utils import AveragedModel

    ema = AveragedModel(model, multi_avg_fn=ema_multi_avg_fn(decay), use_buffers=True)
    ema.eval()  # never trained itself; validation puts its module in eval mode anyway
    return ema

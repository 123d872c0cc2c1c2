"""Model zoo: build the network a recipe names, optionally starting from a local weights file.

Every model takes ``(N, 3, input_size, input_size)`` float tensors (normalised RGB) and returns
``(N, num_classes)`` logits, works in ``channels_last`` and exports to ONNX (opset 11-17) with
operators TensorRT 8.2+ parses. Nothing is ever downloaded: torchvision builders get ``weights=None``
and pretrained weights come only from a file the user names.

Models are plain compositions of standard torch modules (no custom ``nn.Module`` subclasses), so
this module imports torch lazily and a roadside install without torch can still import it.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolchain.errors import BadInputError, InputNotFoundError, MissingEnvironmentError, UsageError, missing_extra
from toolchain.models.recipe import Recipe

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "EDGENET_STAGES",
    "HEAD_PREFIXES",
    "WeightsReport",
    "build_model",
    "count_macs",
    "count_parameters",
    "describe",
    "load_weights",
    "weights_report",
]

EDGENET_STEM = 16
"""Output channels of edgenet's stride-2 stem at width 1.0."""

EDGENET_STAGES: tuple[tuple[int, int, int], ...] = (
    # (output channels at width 1.0, depthwise-separable blocks, stride of the first block)
    (32, 1, 2),
    (64, 2, 2),
    (128, 2, 2),
    (256, 3, 2),
)
"""edgenet's stages: total stride 32 (96 px in -> 3x3 before the pool, 128 px -> 4x4)."""

HEAD_PREFIXES: dict[str, str] = {"edgenet": "head.", "mobilenet_v3_small": "classifier.", "resnet18": "fc."}
"""State-dict prefix of each architecture's classifier head: the part fine-tuning may replace."""

_REPORT_ATTR = "toolchain_weights_report"
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "weights")
_STRIP_PREFIXES = ("module.", "_orig_mod.")


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise missing_extra("torch", "train") from None
    return torch


def _divisible(channels: float, divisor: int = 8) -> int:
    """Round a scaled channel count to a multiple of ``divisor`` (tensor cores like multiples of 8)."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * channels:  # never drop more than 10%
        rounded += divisor
    return rounded


# --------------------------------------------------------------------------- builders


def _conv_bn_relu(nn: Any, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> Any:
    # conv (no bias) + BN + plain ReLU: TensorRT fuses the three into one kernel.
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def _edgenet(recipe: Recipe, num_classes: int) -> Any:
    nn = _torch().nn
    width = recipe.width
    stem = _divisible(EDGENET_STEM * width)
    stages = []
    c_in = stem
    for c_out_base, blocks, stride in EDGENET_STAGES:
        c_out = _divisible(c_out_base * width)
        layers = []
        for i in range(blocks):
            layers.append(nn.Sequential(OrderedDict(
                dw=_conv_bn_relu(nn, c_in, c_in, 3, stride=stride if i == 0 else 1, groups=c_in),
                pw=_conv_bn_relu(nn, c_in, c_out, 1),
            )))
            c_in = c_out
        stages.append(nn.Sequential(*layers))
    model = nn.Sequential(OrderedDict(
        stem=_conv_bn_relu(nn, 3, stem, 3, stride=2),
        stages=nn.Sequential(*stages),
        pool=nn.AdaptiveAvgPool2d(1),  # GlobalAveragePool in ONNX
        flatten=nn.Flatten(1),
        dropout=nn.Dropout(recipe.dropout),
        head=nn.Linear(c_in, num_classes),
    ))
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.01)
            nn.init.zeros_(module.bias)
    return model


def _mobilenet_v3_small(recipe: Recipe, num_classes: int) -> Any:
    _torch()
    from torchvision.models import mobilenet_v3_small

    # num_classes sizes the last classifier Linear (classifier.3); weights=None: never download.
    return mobilenet_v3_small(weights=None, num_classes=num_classes, width_mult=recipe.width, dropout=recipe.dropout)


def _resnet18(recipe: Recipe, num_classes: int) -> Any:
    nn = _torch().nn
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=num_classes)
    # Dropout rides on the parameter-free pool so the head keeps torchvision's key names (fc.weight).
    model.avgpool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Dropout(recipe.dropout))
    return model


_BUILDERS = {"edgenet": _edgenet, "mobilenet_v3_small": _mobilenet_v3_small, "resnet18": _resnet18}


def build_model(recipe: Recipe, num_classes: int, weights: Path | str | None = None) -> torch.nn.Module:
    """Build the recipe's network with a ``num_classes`` head, in training mode, on the CPU.

    Args:
        recipe: The recipe (architecture, width, dropout).
        num_classes: Number of output logits.
        weights: Optional local state-dict file to start from (see :func:`load_weights`); what was
            loaded and skipped is available from :func:`weights_report`.

    Raises:
        MissingEnvironmentError: torch/torchvision are not installed.
        UsageError: ``num_classes`` < 1 or an architecture this zoo does not know.
        BadInputError: The weights file does not fit the model.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UsageError(f"num_classes must be a positive integer, got {num_classes!r}; pass the dataset's class count")
    builder = _BUILDERS.get(recipe.architecture)
    if builder is None:
        raise UsageError(f"unknown architecture {recipe.architecture!r}; use one of {', '.join(_BUILDERS)}")
    try:
        model = builder(recipe, num_classes)
    except ImportError as exc:  # torchvision missing while torch is present
        raise missing_extra(exc.name or "torchvision", "train") from None
    if weights is not None:
        report = load_weights(model, weights, architecture=recipe.architecture)
        object.__setattr__(model, _REPORT_ATTR, report)
    return model


# --------------------------------------------------------------------------- weights


@dataclass(frozen=True, kw_only=True)
class WeightsReport:
    """What :func:`load_weights` did.

    Attributes:
        path: The weights file.
        loaded: Model tensors taken from the file.
        skipped: Tensors present in both with different shapes (a replaced head), left as initialised.
        missing: Model tensors absent from the file (head only), left as initialised.
        unexpected: File tensors the model has no place for (ignored).
    """

    path: str
    loaded: tuple[str, ...]
    skipped: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (counts plus the names of skipped/missing/unexpected tensors)."""
        return {
            "path": self.path,
            "loaded": len(self.loaded),
            "skipped": list(self.skipped),
            "missing": list(self.missing),
            "unexpected": list(self.unexpected),
        }


def weights_report(model: Any) -> WeightsReport | None:
    """The :class:`WeightsReport` of a model built with ``weights=``, else None."""
    return getattr(model, _REPORT_ATTR, None)


def _state_dict_from(obj: Any, path: Path) -> dict[str, Any]:
    torch = _torch()

    def is_state_dict(candidate: Any) -> bool:
        return (isinstance(candidate, Mapping) and bool(candidate)
                and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in candidate.items()))

    if not is_state_dict(obj) and isinstance(obj, Mapping):  # a training checkpoint wrapping the weights
        obj = next((obj[k] for k in _WRAPPER_KEYS if is_state_dict(obj.get(k))), obj)
    if not is_state_dict(obj):
        raise BadInputError(
            f"{path}: not a state dict (a mapping of names to tensors) nor a checkpoint holding one; "
            "save weights with torch.save(model.state_dict(), PATH)"
        )
    state: dict[str, Any] = {}
    for key, value in obj.items():
        for prefix in _STRIP_PREFIXES:  # DataParallel / torch.compile wrappers
            if key.startswith(prefix):
                key = key[len(prefix):]
        state[key] = value
    return state


def load_weights(model: Any, path: Path | str, *, architecture: str | None = None) -> WeightsReport:
    """Load a local state-dict file into ``model`` for fine-tuning.

    Tensors whose name and shape match are loaded. The classifier head (``HEAD_PREFIXES``) may
    differ in shape or be absent, e.g. an ImageNet 1000-class head when fine-tuning for 2 classes;
    it keeps its fresh initialisation and is listed in the report. Anything else that does not
    match means the file is from another architecture or width and is refused.

    Args:
        model: The freshly built model.
        path: A file written by ``torch.save(state_dict)`` (or a checkpoint dict holding one under
            ``state_dict``, ``model_state_dict``, ``model`` or ``weights``); read with ``weights_only=True``.
        architecture: The recipe architecture, to know which tensors form the head; None treats
            only the last Linear's tensors as the head.

    Raises:
        InputNotFoundError: The file does not exist.
        BadInputError: The file is not a torch state dict, matches no tensor, or does not fit the body.
    """
    torch = _torch()
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputNotFoundError(f"weights file {path} does not exist; check the path")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for garbage (UnpicklingError, RuntimeError, ...)
        raise BadInputError(
            f"{path}: cannot read weights ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "pass a file saved with torch.save(model.state_dict(), PATH)"
        ) from None
    state = _state_dict_from(obj, path)
    target = model.state_dict()
    head = HEAD_PREFIXES.get(architecture or "")
    if head is None:
        linears = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
        head = f"{linears[-1]}." if linears else "\0"

    loaded = tuple(k for k, v in state.items() if k in target and target[k].shape == v.shape)
    skipped = tuple(k for k, v in state.items() if k in target and target[k].shape != v.shape)
    missing = tuple(k for k in target if k not in state)
    unexpected = tuple(k for k in state if k not in target)
    if not loaded:
        raise BadInputError(
            f"{path}: none of its {len(state)} tensors matches this {architecture or 'model'} "
            f"(e.g. '{next(iter(state))}'); use weights saved from the same architecture"
        )
    body_problems = [k for k in (*skipped, *missing) if not k.startswith(head)]
    if body_problems:
        first = body_problems[0]
        detail = (f"shape {tuple(state[first].shape)} in the file vs {tuple(target[first].shape)} in the model"
                  if first in state else "absent from the file")
        raise BadInputError(
            f"{path}: {len(body_problems)} of {len(target)} tensors outside the head do not fit "
            f"(e.g. '{first}': {detail}); use weights saved from the same architecture and width"
        )
    model.load_state_dict({k: state[k] for k in loaded}, strict=False)
    return WeightsReport(path=str(path), loaded=loaded, skipped=skipped, missing=missing, unexpected=unexpected)


# --------------------------------------------------------------------------- introspection


def count_parameters(model: Any, *, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: Any, input_size: int) -> int:
    """Multiply-accumulates of one forward pass at batch 1 (Conv2d and Linear layers, which dominate)."""
    torch = _torch()
    total = 0

    def conv_hook(module: Any, _inputs: Any, output: Any) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module: Any, _inputs: Any, output: Any) -> None:
        nonlocal total
        total += output.numel() * module.in_features

    hooks = []
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            hooks.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, torch.nn.Linear):
            hooks.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, input_size, input_size))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return total


def describe(recipe: Recipe, num_classes: int = 2) -> dict[str, Any]:
    """What ``models show`` prints: the recipe plus the built model's size.

    ``params``, ``macs`` and ``weights_mb`` are None (with a ``note`` saying what to install) when
    torch is not installed, so a recipe can be inspected on a runtime-only install.

    Args:
        recipe: The recipe.
        num_classes: Head size to build with (2: car, truck).
    """
    info: dict[str, Any] = {
        **recipe.summary(),
        "num_classes": num_classes,
        "input_shape": [1, 3, recipe.input_size, recipe.input_size],
        "params": None,
        "macs": None,
        "weights_mb": None,
        "head": HEAD_PREFIXES.get(recipe.architecture, "").rstrip("."),
        "recipe": recipe.to_dict(),
        "search_points": math.prod(len(v) for v in recipe.search.values()) if recipe.search else 0,
    }
    try:
        model = build_model(recipe, num_classes)
    except MissingEnvironmentError as exc:
        info["note"] = f"model size unavailable: {exc}"
        return info
    params = count_parameters(model)
    info["params"] = params
    info["macs"] = count_macs(model, recipe.input_size)
    info["weights_mb"] = round(params * 4 / 1e6, 3)  # FP32
    return info

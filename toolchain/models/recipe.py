"""Model recipes: one TOML file per model (architecture, input size, training defaults, search space).

A recipe looks like this (every table and most keys are optional; see the built-in catalog)::

    name = "edgenet"
    description = "Compact depthwise-separable CNN for Jetson-class GPUs"
    architecture = "edgenet"          # edgenet | mobilenet_v3_small | resnet18
    input_size = 128                  # square side, pixels
    mean = [0.485, 0.456, 0.406]      # per-channel normalisation of [0, 1] RGB
    std = [0.229, 0.224, 0.225]

    [model]
    width = 1.0                       # channel multiplier (edgenet, mobilenet_v3_small)
    dropout = 0.1                     # before the linear head

    [training]
    epochs = 30
    batch_size = 64
    optimizer = "adamw"               # adamw | sgd
    lr = 0.003
    weight_decay = 0.05
    momentum = 0.9                    # SGD momentum; AdamW uses it as beta1
    label_smoothing = 0.05
    warmup_epochs = 2
    early_stopping_patience = 6       # epochs without improvement; 0 turns it off
    ema_decay = 0.99                  # per-step decay of an EMA of the weights; 0 turns it off
    val_window = 3                    # select/early-stop on the mean of the last N validation readings
    select_on = "loss"                # loss (accuracy breaks ties) | accuracy (loss breaks ties)

    [training.augmentation]
    scale = [0.6, 1.0]                # random-resized-crop area range
    hflip = 0.5                       # horizontal flip probability
    brightness = 0.3                  # colour jitter strengths
    contrast = 0.3
    saturation = 0.2

    [search]                          # parameter -> candidate values (scikit-learn ParameterGrid/Sampler)
    lr = [0.001, 0.003, 0.006]
    width = [0.75, 1.0]

Recipes are found by name in ``$TOOLCHAIN_MODELS`` (one or more directories, ``os.pathsep``
separated; they win over built-ins of the same name) and in the built-in catalog
(``toolchain/catalog/models``, the top-level ``models/`` of the repository); a path to a ``.toml``
file is accepted too.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolchain import catalog_files as _cf
from toolchain.catalog_files import Invalid as _Invalid
from toolchain.catalog_files import choice as _choice
from toolchain.catalog_files import float_range as _float_range
from toolchain.catalog_files import int_range as _int_range
from toolchain.catalog_files import number as _number
from toolchain.catalog_files import string as _string
from toolchain.catalog_files import suggest as _suggest
from toolchain.errors import BadInputError, ToolchainError, UsageError

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_RECIPE",
    "MODELS_ENV",
    "OVERRIDABLE",
    "OPTIMIZERS",
    "Augmentation",
    "Recipe",
    "TrainingDefaults",
    "builtin_dir",
    "list_recipes",
    "load_recipe",
    "parse_recipe",
    "recipe_dirs",
]

ARCHITECTURES: tuple[str, ...] = ("edgenet", "mobilenet_v3_small", "resnet18")
"""Architectures :func:`toolchain.models.zoo.build_model` can build."""

OPTIMIZERS: tuple[str, ...] = ("adamw", "sgd")
SELECTION_METRICS: tuple[str, ...] = ("accuracy", "loss")

DEFAULT_RECIPE = "edgenet"
"""The recipe ``train`` uses when none is named."""

MODELS_ENV = "TOOLCHAIN_MODELS"
"""Environment variable naming extra recipe directories (``os.pathsep`` separated)."""

# Architectures whose width multiplier is meaningful; resnet18 has a fixed width.
_WIDTH_ARCHITECTURES = ("edgenet", "mobilenet_v3_small")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True, kw_only=True)
class Augmentation:
    """Training-time augmentation (the evaluation path only resizes and normalises).

    Attributes:
        scale: Area range of the random-resized crop, as fractions of the image (0 < min <= max <= 1).
        hflip: Probability of a horizontal flip (vehicles drive both ways past a camera).
        brightness: Colour-jitter brightness strength (0 turns it off).
        contrast: Colour-jitter contrast strength.
        saturation: Colour-jitter saturation strength.
    """

    scale: tuple[float, float] = (0.6, 1.0)
    hflip: float = 0.5
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.2


@dataclass(frozen=True, kw_only=True)
class TrainingDefaults:
    """Training hyper-parameters a recipe starts from; ``train`` options and the search override them.

    Attributes:
        epochs: Maximum number of epochs.
        batch_size: Images per optimisation step.
        optimizer: ``adamw`` or ``sgd``.
        lr: Peak learning rate (reached after the warm-up, then cosine decay).
        weight_decay: Decoupled (AdamW) or L2 (SGD) weight decay.
        momentum: SGD momentum (AdamW uses it as beta1).
        label_smoothing: Cross-entropy label smoothing in [0, 1).
        warmup_epochs: Epochs of linear learning-rate warm-up.
        early_stopping_patience: Stop after this many epochs without a better validation score; 0 never stops early.
        ema_decay: Per-step decay of an exponential moving average of the weights (BatchNorm buffers
            averaged alongside); each epoch both the raw and the EMA weights are validated and the better
            one can be selected. 0 turns the EMA off (raw weights only).
        val_window: Checkpoint selection and early stopping compare the mean of the last ``val_window``
            validation readings of each set of weights, not one noisy reading; 1 is a single reading.
        select_on: What that comparison ranks first: ``loss`` (lower smoothed validation loss, accuracy
            breaking ties) or ``accuracy`` (smoothed validation accuracy, lower loss breaking ties; the rule
            before). On a small validation split accuracy moves in whole images and can peak early by luck,
            keeping the weights of an epoch long before the schedule has annealed; the loss moves
            continuously. With ``loss``, early stopping waits until neither the smoothed loss nor the
            smoothed accuracy has improved for ``early_stopping_patience`` epochs, since the loss can
            plateau while accuracy still rises (BENCHMARKS.md, "Training spread over seeds").
        augmentation: Training-time augmentation.
    """

    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 3e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    label_smoothing: float = 0.05
    warmup_epochs: int = 2
    early_stopping_patience: int = 6
    ema_decay: float = 0.99
    val_window: int = 3
    select_on: str = "loss"
    augmentation: Augmentation = field(default_factory=Augmentation)


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """A validated model recipe.

    Attributes:
        name: Recipe name (the catalog file's stem).
        description: One line for humans.
        architecture: One of :data:`ARCHITECTURES`.
        input_size: Square input side in pixels; the exported model takes ``(N, 3, input_size, input_size)``.
        mean: Per-channel mean subtracted from RGB in [0, 1].
        std: Per-channel standard deviation divided out after the mean.
        width: Channel multiplier (``edgenet`` and ``mobilenet_v3_small``; always 1.0 for ``resnet18``).
        dropout: Dropout probability before the linear head.
        training: Training defaults.
        search: Search space: parameter name -> candidate values (keys are :data:`OVERRIDABLE` names).
        source: Where the recipe was read from (not part of its identity).
    """

    name: str
    description: str = ""
    architecture: str
    input_size: int
    mean: tuple[float, float, float] = _IMAGENET_MEAN
    std: tuple[float, float, float] = _IMAGENET_STD
    width: float = 1.0
    dropout: float = 0.1
    training: TrainingDefaults = field(default_factory=TrainingDefaults)
    search: Mapping[str, tuple[Any, ...]] = field(default_factory=dict, hash=False)
    source: str = field(default="", compare=False)

    def param_grid(self) -> dict[str, list[Any]]:
        """The search space as scikit-learn's ``ParameterGrid`` / ``ParameterSampler`` expect it."""
        return {key: list(values) for key, values in self.search.items()}

    def params(self) -> dict[str, Any]:
        """Current value of every :data:`OVERRIDABLE` parameter, by its flat name."""
        flat: dict[str, Any] = {"input_size": self.input_size, "width": self.width, "dropout": self.dropout}
        for f in dataclasses.fields(TrainingDefaults):
            if f.name != "augmentation":
                flat[f.name] = getattr(self.training, f.name)
        for f in dataclasses.fields(Augmentation):
            flat[f.name] = getattr(self.training.augmentation, f.name)
        return flat

    def with_overrides(self, overrides: Mapping[str, Any]) -> Recipe:
        """A copy with some parameters replaced (what ``train`` options and the search use).

        Args:
            overrides: Flat parameter names (:data:`OVERRIDABLE`, e.g. ``lr``, ``width``, ``hflip``) -> values.

        Raises:
            UsageError: An unknown parameter name, or a value of the wrong type or out of range.
        """
        unknown = [key for key in overrides if key not in OVERRIDABLE]
        if unknown:
            raise UsageError(
                f"cannot override unknown recipe parameter{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(repr(k) for k in unknown)}{_suggest(unknown[0], OVERRIDABLE)}; "
                f"overridable parameters: {', '.join(sorted(OVERRIDABLE))}"
            )
        if not overrides:
            return self
        data = self.to_dict()
        for key, value in overrides.items():
            section, _ = _PARAM_LOCATIONS[key]
            target = data
            for part in section:
                target = target[part]
            target[key] = list(value) if isinstance(value, tuple) else value
        return _parse(data, origin=f"recipe '{self.name}' override", source=self.source, error=UsageError,
                      check_name=None, override=True)

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain JSON/TOML data (lists, not tuples); :func:`parse_recipe` reads it back."""
        return {
            "name": self.name,
            "description": self.description,
            "architecture": self.architecture,
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "model": {"width": self.width, "dropout": self.dropout},
            "training": {
                **{f.name: getattr(self.training, f.name) for f in dataclasses.fields(TrainingDefaults)
                   if f.name != "augmentation"},
                "augmentation": {
                    f.name: _plain(getattr(self.training.augmentation, f.name)) for f in dataclasses.fields(Augmentation)
                },
            },
            "search": {key: [_plain(v) for v in values] for key, values in self.search.items()},
        }

    def summary(self) -> dict[str, Any]:
        """One row for ``models list``: name, architecture, input size, description, where it came from."""
        return {
            "name": self.name,
            "architecture": self.architecture,
            "input_size": self.input_size,
            "width": self.width,
            "description": self.description,
            "default": self.name == DEFAULT_RECIPE,
            "builtin": _is_builtin(self.source),
            "source": self.source,
        }


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# --------------------------------------------------------------------------- validation


def _triple(positive: bool) -> Callable[[Any], tuple[float, float, float]]:
    def check(value: Any) -> tuple[float, float, float]:
        if not isinstance(value, (list, tuple)) or len(value) != 3:
            raise _Invalid(f"expected a list of 3 numbers (R, G, B), got {value!r}")
        numbers_ = tuple(_number(v) for v in value)
        if positive and min(numbers_) <= 0:
            raise _Invalid(f"expected 3 numbers > 0, got {value!r}")
        return numbers_  # type: ignore[return-value]

    return check


def _scale(value: Any) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise _Invalid(f"expected [min, max] area fractions, got {value!r}")
    low, high = (_number(v) for v in value)
    if not 0 < low <= high <= 1:
        raise _Invalid(f"expected 0 < min <= max <= 1, got {value!r}")
    return (low, high)


def _name(value: Any) -> str:
    text = _string(value)
    if not _NAME_RE.match(text):
        raise _Invalid(f"expected 1-64 letters, digits, '_', '.' or '-' (starting with a letter or digit), got {value!r}")
    return text


_unit = _float_range(0.0, 1.0)
_non_negative = _float_range(0.0, math.inf)

# Flat parameter name -> (table path in the TOML, check).
_PARAM_LOCATIONS: dict[str, tuple[tuple[str, ...], Callable[[Any], Any]]] = {
    "input_size": ((), _int_range(32, 1024)),
    "width": (("model",), _float_range(0.0, 4.0, low_open=True)),
    "dropout": (("model",), _float_range(0.0, 1.0, high_open=True)),
    "epochs": (("training",), _int_range(1, 10_000)),
    "batch_size": (("training",), _int_range(1, 65_536)),
    "optimizer": (("training",), _choice(OPTIMIZERS)),
    "lr": (("training",), _float_range(0.0, 10.0, low_open=True)),
    "weight_decay": (("training",), _non_negative),
    "momentum": (("training",), _float_range(0.0, 1.0, high_open=True)),
    "label_smoothing": (("training",), _float_range(0.0, 1.0, high_open=True)),
    "warmup_epochs": (("training",), _int_range(0, 10_000)),
    "early_stopping_patience": (("training",), _int_range(0, 10_000)),
    "ema_decay": (("training",), _float_range(0.0, 1.0, high_open=True)),
    "val_window": (("training",), _int_range(1, 1_000)),
    "select_on": (("training",), _choice(SELECTION_METRICS)),
    "scale": (("training", "augmentation"), _scale),
    "hflip": (("training", "augmentation"), _unit),
    "brightness": (("training", "augmentation"), _non_negative),
    "contrast": (("training", "augmentation"), _non_negative),
    "saturation": (("training", "augmentation"), _non_negative),
}

OVERRIDABLE: frozenset[str] = frozenset(_PARAM_LOCATIONS)
"""Flat parameter names accepted by :meth:`Recipe.with_overrides` and as ``[search]`` keys."""

_TOP_KEYS = {
    "name": _name,
    "description": _string,
    "architecture": _choice(ARCHITECTURES),
    "input_size": _PARAM_LOCATIONS["input_size"][1],
    "mean": _triple(positive=False),
    "std": _triple(positive=True),
}
_TABLES = ("model", "training", "search")


class _Context:
    """Builds errors that name the file (or override) and the field."""

    def __init__(self, origin: str, error: type[ToolchainError], override: bool) -> None:
        self.origin = origin
        self.error = error
        self.override = override

    def fail(self, key: str, problem: str) -> ToolchainError:
        if self.override:
            return self.error(f"{self.origin}: parameter '{key.rsplit('.', 1)[-1]}': {problem}; pass a valid value")
        return self.error(f"{self.origin}: field '{key}': {problem}; fix it in the recipe file")

    def check(self, key: str, value: Any, check: Callable[[Any], Any]) -> Any:
        try:
            return check(value)
        except _Invalid as exc:
            raise self.fail(key, str(exc)) from None

    def table(self, data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        value = data.get(key.rsplit(".", 1)[-1], {})
        if not isinstance(value, Mapping):
            raise self.fail(key, f"expected a table ([{key}]), got {value!r}")
        return value

    def unknown(self, data: Mapping[str, Any], known: Any, prefix: str) -> None:
        for key in data:
            if key not in known:
                raise self.fail(
                    f"{prefix}{key}",
                    f"unknown key{_suggest(key, known)}; known keys{f' in [{prefix[:-1]}]' if prefix else ''}: "
                    f"{', '.join(sorted(known))}",
                )


def parse_recipe(data: Mapping[str, Any], source: str = "<recipe>") -> Recipe:
    """Validate parsed TOML (or :meth:`Recipe.to_dict` output) into a :class:`Recipe`.

    Args:
        data: The recipe as nested mappings.
        source: Where it came from, used in error messages and kept as ``Recipe.source``.

    Raises:
        BadInputError: A missing, unknown or invalid field (the message names ``source`` and the field).
    """
    return _parse(data, origin=source, source=source, error=BadInputError, check_name=None, override=False)


def _parse(
    data: Mapping[str, Any], *, origin: str, source: str, error: type[ToolchainError], check_name: str | None,
    override: bool,
) -> Recipe:
    ctx = _Context(origin, error, override)
    if not isinstance(data, Mapping):
        raise error(f"{origin}: expected a table of recipe fields, got {type(data).__name__}; fix the recipe file")
    ctx.unknown(data, set(_TOP_KEYS) | set(_TABLES), "")
    for required in ("name", "architecture"):
        if required not in data:
            raise ctx.fail(required, "missing (every recipe names itself and its architecture)")
    top = {key: ctx.check(key, data[key], check) for key, check in _TOP_KEYS.items() if key in data}
    if check_name is not None and top["name"] != check_name:
        raise ctx.fail("name", f"is {top['name']!r} but the file is {check_name}.toml; make them match")
    architecture = top["architecture"]
    top.setdefault("input_size", 128)

    model = ctx.table(data, "model")
    ctx.unknown(model, ("width", "dropout"), "model.")
    training = ctx.table(data, "training")
    training_keys = [f.name for f in dataclasses.fields(TrainingDefaults)]
    ctx.unknown(training, training_keys, "training.")
    augmentation = ctx.table(training, "training.augmentation")
    ctx.unknown(augmentation, [f.name for f in dataclasses.fields(Augmentation)], "training.augmentation.")

    def values(table: Mapping[str, Any], prefix: str, names: Any) -> dict[str, Any]:
        return {k: ctx.check(f"{prefix}{k}", table[k], _PARAM_LOCATIONS[k][1]) for k in names if k in table}

    model_values = values(model, "model.", ("width", "dropout"))
    width = model_values.get("width", 1.0)
    if width != 1.0 and architecture not in _WIDTH_ARCHITECTURES:
        raise ctx.fail("model.width", f"{architecture} has a fixed width; remove it or use 1.0")
    aug = Augmentation(**values(augmentation, "training.augmentation.", [f.name for f in dataclasses.fields(Augmentation)]))
    train = TrainingDefaults(
        **values(training, "training.", [k for k in training_keys if k != "augmentation"]), augmentation=aug
    )
    if train.warmup_epochs >= train.epochs and train.warmup_epochs > 0:
        raise ctx.fail("training.warmup_epochs", f"{train.warmup_epochs} is not fewer than epochs ({train.epochs}); lower it")

    search_table = ctx.table(data, "search")
    search: dict[str, tuple[Any, ...]] = {}
    for key, candidates in search_table.items():
        if key not in OVERRIDABLE:
            raise ctx.fail(
                f"search.{key}",
                f"not a training or model parameter{_suggest(key, OVERRIDABLE)}; searchable: {', '.join(sorted(OVERRIDABLE))}",
            )
        if not isinstance(candidates, (list, tuple)) or not candidates:
            raise ctx.fail(f"search.{key}", f"expected a non-empty list of candidate values, got {candidates!r}")
        checked = tuple(ctx.check(f"search.{key}", value, _PARAM_LOCATIONS[key][1]) for value in candidates)
        if key == "width" and architecture not in _WIDTH_ARCHITECTURES and any(w != 1.0 for w in checked):
            raise ctx.fail("search.width", f"{architecture} has a fixed width; remove it from the search space")
        if len(set(checked)) != len(checked):
            raise ctx.fail(f"search.{key}", f"repeats a value in {candidates!r}; list each candidate once")
        search[key] = checked

    return Recipe(
        name=top["name"], description=top.get("description", ""), architecture=architecture,
        input_size=top["input_size"], mean=top.get("mean", _IMAGENET_MEAN), std=top.get("std", _IMAGENET_STD),
        width=width, dropout=model_values.get("dropout", 0.1), training=train, search=search, source=source,
    )


# --------------------------------------------------------------------------- catalog


def builtin_dir() -> Path:
    """The built-in catalog shipped as package data (``toolchain/catalog/models``)."""
    return _cf.CATALOG_ROOT / "models"


_CATALOG = _cf.Catalog(kind="recipe", builtin=builtin_dir(), env=MODELS_ENV, list_command="toolchain models list")


def _is_builtin(source: str) -> bool:
    return _CATALOG.is_builtin(source)


def recipe_dirs() -> list[Path]:
    """Directories searched by name, first match wins: ``$TOOLCHAIN_MODELS`` entries, then the built-ins.

    Raises:
        InputNotFoundError: ``$TOOLCHAIN_MODELS`` names something that is not a directory.
    """
    return _CATALOG.dirs()


def _read(path: Path, check_name: str | None) -> Recipe:
    return _parse(_CATALOG.read(path), origin=str(path), source=str(path), error=BadInputError, check_name=check_name,
                  override=False)


def load_recipe(name_or_path: str | Path = DEFAULT_RECIPE) -> Recipe:
    """Load a recipe by catalog name or from a ``.toml`` path.

    Args:
        name_or_path: A recipe name (found in ``$TOOLCHAIN_MODELS`` then the built-in catalog) or a path.

    Raises:
        InputNotFoundError: No recipe of that name, or the file does not exist.
        BadInputError: The file is not valid TOML or fails validation.
    """
    path, check_name = _CATALOG.locate(name_or_path)
    return _read(path, check_name=check_name)


def list_recipes() -> list[Recipe]:
    """Every recipe reachable by name, sorted by name (a ``$TOOLCHAIN_MODELS`` file hides a built-in of the same name).

    Raises:
        BadInputError: A catalog file is invalid (the message names it).
    """
    return [_read(path, check_name=name) for name, path in sorted(_CATALOG.files().items())]

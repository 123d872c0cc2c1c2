"""Model recipes: the built-in catalog, validation errors, overrides, extra catalogs and paths."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from toolchain.errors import BadInputError, InputNotFoundError, UsageError
from toolchain.models.recipe import (
    ARCHITECTURES,
    DEFAULT_RECIPE,
    MODELS_ENV,
    OVERRIDABLE,
    Recipe,
    builtin_dir,
    list_recipes,
    load_recipe,
    parse_recipe,
)

BUILTIN = ("edgenet", "mobilenet_v3_small", "resnet18")

MINIMAL = 'name = "mini"\narchitecture = "edgenet"\n'


@pytest.fixture(autouse=True)
def _no_user_catalog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MODELS_ENV, raising=False)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_recipe_loads_and_validates(name: str) -> None:
    recipe = load_recipe(name)
    assert recipe.name == name
    assert recipe.architecture in ARCHITECTURES
    assert recipe.architecture == name
    assert recipe.description
    assert 32 <= recipe.input_size <= 256
    assert len(recipe.mean) == 3 and len(recipe.std) == 3 and min(recipe.std) > 0
    assert recipe.training.optimizer in ("adamw", "sgd")
    assert recipe.training.warmup_epochs < recipe.training.epochs
    assert recipe.search, "every built-in recipe has a search space"
    assert set(recipe.search) <= OVERRIDABLE
    # every search point is a valid recipe
    for key, values in recipe.search.items():
        for value in values:
            assert recipe.with_overrides({key: value}).params()[key] == value
    # to_dict round-trips
    assert parse_recipe(recipe.to_dict(), source="x") == recipe


def test_catalog_lists_builtins_with_default_and_is_package_data() -> None:
    names = [r.name for r in list_recipes()]
    assert names == sorted(names)
    assert set(BUILTIN) <= set(names)
    assert DEFAULT_RECIPE == "edgenet" and load_recipe().name == "edgenet"
    rows = {r.name: r.summary() for r in list_recipes()}
    assert rows["edgenet"]["default"] is True and rows["edgenet"]["builtin"] is True
    assert (builtin_dir() / "edgenet.toml").is_file()
    top_level = Path(__file__).resolve().parents[2] / "models"
    if top_level.exists():  # the repository's models/ is the catalog (a symlink)
        assert (top_level / "edgenet.toml").resolve() == (builtin_dir() / "edgenet.toml").resolve()


def test_recipe_is_frozen() -> None:
    recipe = load_recipe("edgenet")
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.input_size = 64  # type: ignore[misc]
    hash(recipe)


def test_defaults_fill_a_minimal_recipe(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path / "mini.toml", MINIMAL))
    assert recipe.input_size == 128 and recipe.width == 1.0
    assert recipe.training.epochs > 0 and recipe.search == {}


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ('name = "x"\narchitecture = "vgg16"\n', "architecture", "edgenet"),
        ('name = "x"\n', "architecture", "missing"),
        ('name = "x"\narchitecture = "edgenet"\ncolour = 1\n', "colour", "unknown key"),
        (MINIMAL + "[training]\nlrr = 0.1\n", "training.lrr", "did you mean 'lr'"),
        (MINIMAL + '[training]\nepochs = "ten"\n', "training.epochs", "integer"),
        (MINIMAL + "[training]\nepochs = 10.5\n", "training.epochs", "integer"),
        (MINIMAL + "[training]\nbatch_size = true\n", "training.batch_size", "integer"),
        (MINIMAL + "[training]\nlr = -1\n", "training.lr", "number in"),
        (MINIMAL + '[training]\noptimizer = "adam"\n', "training.optimizer", "adamw"),
        (MINIMAL + "[training]\nepochs = 3\nwarmup_epochs = 3\n", "training.warmup_epochs", "fewer"),
        (MINIMAL + "[training.augmentation]\nscale = [0.9, 0.5]\n", "training.augmentation.scale", "min <= max"),
        (MINIMAL + "[training.augmentation]\nhflip = 2\n", "training.augmentation.hflip", "[0, 1]"),
        (MINIMAL + "[training.augmentation]\nblur = 1\n", "training.augmentation.blur", "unknown key"),
        (MINIMAL + "[model]\nwidth = 0\n", "model.width", "number in"),
        (MINIMAL + "[model]\ndepth = 3\n", "model.depth", "unknown key"),
        ('name = "x"\narchitecture = "resnet18"\n[model]\nwidth = 0.5\n', "model.width", "fixed width"),
        (MINIMAL + "mean = [0.5, 0.5]\n", "mean", "3 numbers"),
        (MINIMAL + "std = [0.5, 0.0, 0.5]\n", "std", "> 0"),
        (MINIMAL + "input_size = 8\n", "input_size", "between 32"),
        (MINIMAL + "model = 3\n", "model", "table"),
        (MINIMAL + "[search]\noptimiser = ['sgd']\n", "search.optimiser", "not a training or model parameter"),
        (MINIMAL + "[search]\nname = ['a']\n", "search.name", "not a training or model parameter"),
        (MINIMAL + "[search]\nlr = 0.1\n", "search.lr", "non-empty list"),
        (MINIMAL + "[search]\nlr = []\n", "search.lr", "non-empty list"),
        (MINIMAL + "[search]\nlr = [0.1, -0.1]\n", "search.lr", "number in"),
        (MINIMAL + "[search]\nlr = [0.1, 0.1]\n", "search.lr", "repeats"),
        ('name = "x"\narchitecture = "resnet18"\n[search]\nwidth = [0.5, 1.0]\n', "search.width", "fixed width"),
    ],
)
def test_bad_recipe_names_file_and_field(tmp_path: Path, text: str, field: str, words: str) -> None:
    path = write(tmp_path / "bad.toml", text)
    with pytest.raises(BadInputError) as info:
        load_recipe(path)
    message = str(info.value)
    assert str(path) in message
    assert f"'{field}'" in message
    assert words in message
    assert "fix it" in message


def test_invalid_toml_syntax_is_bad_input(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.toml", "name = \n")
    with pytest.raises(BadInputError, match="not valid TOML"):
        load_recipe(path)


def test_unknown_name_lists_available_and_suggests() -> None:
    with pytest.raises(InputNotFoundError) as info:
        load_recipe("edgnet")
    assert "did you mean 'edgenet'" in str(info.value)
    assert "mobilenet_v3_small" in str(info.value)
    assert info.value.exit_code == 4


def test_missing_path_is_input_not_found(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError):
        load_recipe(tmp_path / "nope.toml")
    with pytest.raises(InputNotFoundError):
        load_recipe(str(tmp_path / "nope.toml"))


def test_overrides_return_validated_copy() -> None:
    recipe = load_recipe("edgenet")
    changed = recipe.with_overrides({"lr": 0.01, "width": 0.75, "hflip": 0.0, "scale": (0.5, 1.0), "epochs": 5})
    assert changed is not recipe and isinstance(changed, Recipe)
    assert changed.training.lr == 0.01 and changed.width == 0.75
    assert changed.training.augmentation.hflip == 0.0 and changed.training.augmentation.scale == (0.5, 1.0)
    assert changed.training.epochs == 5
    assert changed.name == recipe.name and changed.search == recipe.search and changed.source == recipe.source
    assert recipe.training.lr != 0.01  # the original is untouched
    assert recipe.with_overrides({}) is recipe
    # integers are fine for floats; numpy scalars (from ParameterSampler over arrays) too
    np = pytest.importorskip("numpy")
    assert recipe.with_overrides({"lr": np.float64(0.02), "batch_size": np.int64(32)}).training.batch_size == 32


def test_overrides_work_with_sklearn_parameter_grid() -> None:
    sklearn = pytest.importorskip("sklearn.model_selection")
    recipe = load_recipe("edgenet")
    grid = list(sklearn.ParameterGrid(recipe.param_grid()))
    assert grid
    for point in grid:
        assert recipe.with_overrides(point).params().items() >= point.items()
    for point in sklearn.ParameterSampler(recipe.param_grid(), n_iter=3, random_state=0):
        recipe.with_overrides(point)


def test_override_unknown_key_is_usage_error() -> None:
    with pytest.raises(UsageError, match="did you mean 'lr'") as info:
        load_recipe("edgenet").with_overrides({"lrr": 0.1})
    assert info.value.exit_code == 2
    assert "overridable parameters" in str(info.value)


@pytest.mark.parametrize(("key", "value"), [("lr", "fast"), ("epochs", 0), ("optimizer", "rmsprop"), ("width", -1)])
def test_override_bad_value_is_usage_error(key: str, value: object) -> None:
    with pytest.raises(UsageError, match=f"'{key}'"):
        load_recipe("edgenet").with_overrides({key: value})


def test_override_width_on_resnet_is_refused() -> None:
    with pytest.raises(UsageError, match="fixed width"):
        load_recipe("resnet18").with_overrides({"width": 0.5})


def test_extra_catalog_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = tmp_path / "my-models"
    write(extra / "tiny.toml", 'name = "tiny"\ndescription = "mine"\narchitecture = "edgenet"\ninput_size = 64\n'
          "[model]\nwidth = 0.5\n")
    # a user file named like a built-in takes precedence
    write(extra / "resnet18.toml", 'name = "resnet18"\ndescription = "custom"\narchitecture = "resnet18"\ninput_size = 112\n')
    monkeypatch.setenv(MODELS_ENV, str(extra))
    tiny = load_recipe("tiny")
    assert tiny.input_size == 64 and tiny.width == 0.5 and tiny.source == str(extra / "tiny.toml")
    assert load_recipe("resnet18").input_size == 112
    rows = {r.name: r.summary() for r in list_recipes()}
    assert {"tiny", "edgenet", "resnet18"} <= set(rows)
    assert rows["tiny"]["builtin"] is False and rows["edgenet"]["builtin"] is True
    assert rows["resnet18"]["description"] == "custom"


def test_extra_catalog_file_name_must_match(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "a.toml", 'name = "b"\narchitecture = "edgenet"\n')
    monkeypatch.setenv(MODELS_ENV, str(tmp_path))
    with pytest.raises(BadInputError, match="make them match"):
        load_recipe("a")
    # a direct path may hold any name
    assert load_recipe(tmp_path / "a.toml").name == "b"


def test_extra_catalog_dir_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MODELS_ENV, str(tmp_path / "missing"))
    with pytest.raises(InputNotFoundError, match=MODELS_ENV):
        list_recipes()


def test_direct_path_as_string_and_path(tmp_path: Path) -> None:
    path = write(tmp_path / "sub" / "custom.toml", 'name = "custom"\narchitecture = "mobilenet_v3_small"\n')
    assert load_recipe(path).architecture == "mobilenet_v3_small"
    assert load_recipe(str(path)).input_size == 128

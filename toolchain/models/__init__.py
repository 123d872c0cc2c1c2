"""Model recipes (TOML catalog) and the model zoo that builds them.

:mod:`toolchain.models.recipe` needs only the standard library; :mod:`toolchain.models.zoo`
imports torch lazily and raises a clear error naming the ``[train]`` extra when it is missing.
"""

from toolchain.models.recipe import (
    ARCHITECTURES,
    DEFAULT_RECIPE,
    OVERRIDABLE,
    Augmentation,
    Recipe,
    TrainingDefaults,
    list_recipes,
    load_recipe,
    parse_recipe,
)

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_RECIPE",
    "OVERRIDABLE",
    "Augmentation",
    "Recipe",
    "TrainingDefaults",
    "list_recipes",
    "load_recipe",
    "parse_recipe",
]

"""Which search trials chose a final training run's parameters (MLflow child runs), for runs without links.

``train`` now links a final run to its search's trials (lineage role ``trial``), and the mirror uses those
links (:mod:`toolchain.mlflow_mirror.scope`). Runs recorded before have none: for them the search is
recovered from what the records do hold. A trial belongs to a final run when both were trained under the same name, on
the same dataset version, with the same seed, device, starting weights and code version, from the
same recipe frame (architecture, normalisation, search space), with the same value of every
parameter the search does not vary (epochs and warm-up aside: trials train for a shorter budget),
and when the final run's values of the searched parameters are one of those trials' (the winner's).

Every trial of every search that could have chosen the final configuration is grouped under it; a
trial whose search never produced a final run (killed before it) belongs to none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from toolchain.hashing import canonical_json, digest_json
from toolchain.registry import Record

# Trials train for --trial-epochs, with the warm-up shortened to fit; the final run for the full budget.
_BUDGET_PARAMS = ("epochs", "warmup_epochs")
_RECIPE_FRAME = ("name", "architecture", "mean", "std", "search")
_SPEC_FIELDS = ("dataset", "seed", "device", "weights", "code_version")


def _space(body: Mapping[str, Any]) -> dict[str, Any]:
    recipe = body.get("spec", {}).get("recipe", {})
    space = recipe.get("search") if isinstance(recipe, Mapping) else None
    return dict(space) if isinstance(space, Mapping) else {}


def search_key(record: Record) -> str | None:
    """What a final run and the trials of its search share, or None for a record without a spec."""
    spec, params = record.body.get("spec"), record.body.get("params")
    if not isinstance(spec, Mapping) or not isinstance(params, Mapping) or not isinstance(spec.get("recipe"), Mapping):
        return None
    space = _space(record.body)
    fixed = {k: v for k, v in params.items() if k not in space and k not in _BUDGET_PARAMS}
    return digest_json({
        "name": record.name,
        "spec": {k: spec.get(k) for k in _SPEC_FIELDS},
        "recipe": {k: spec["recipe"].get(k) for k in _RECIPE_FRAME},
        "fixed": fixed,
    })


def searched_point(record: Record) -> str:
    """The values of the searched parameters (canonical JSON), which the winning trial and its final run share."""
    params = record.body.get("params", {})
    return canonical_json({k: params.get(k) for k in sorted(_space(record.body))})


def role(record: Record) -> str:
    """``final`` or ``trial`` (a record written before roles existed counts as final)."""
    return str(record.body.get("role", "final"))


def trials_by_final(runs: Iterable[Record]) -> dict[str, tuple[str, ...]]:
    """Final run id -> the ids of the trials of its search, oldest first; finals without a search are left out."""
    runs = list(runs)
    trials: dict[str, list[Record]] = {}
    for record in runs:
        key = search_key(record)
        if key is not None and role(record) == "trial":
            trials.setdefault(key, []).append(record)
    found: dict[str, tuple[str, ...]] = {}
    for record in runs:
        key = search_key(record)
        if key is None or role(record) != "final" or not _space(record.body):
            continue
        group = trials.get(key, [])
        if any(searched_point(t) == searched_point(record) for t in group):
            found[record.id] = tuple(t.id for t in sorted(group, key=lambda t: (t.created_at, t.id)))
    return found

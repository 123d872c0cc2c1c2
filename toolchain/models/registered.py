"""Registered models: load the torch module behind ``NAME@vN`` (used by evaluate and export)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolchain.models.recipe import Recipe, parse_recipe
from toolchain.registry import Record, Version
from toolchain.errors import InputNotFoundError
from toolchain.hashing import sha256_file
from toolchain.registry import Resolved
from toolchain.workspace import Workspace


@dataclass(frozen=True, kw_only=True)
class RegisteredModel:
    """A model record with its recipe, classes and (once loaded) its torch module."""

    record: Record
    version: Version | None
    recipe: Recipe
    classes: tuple[str, ...]
    module: Any  # torch.nn.Module in eval mode, on the CPU

    @property
    def ref(self) -> str:
        return f"{self.version.name}@v{self.version.number}" if self.version else self.record.id[:12]

    @property
    def dataset(self) -> str:
        return self.record.body["dataset"]


def load_registered_model(workspace: Workspace, ref: str) -> RegisteredModel:
    """Resolve ``ref`` (NAME, NAME@vN, NAME@ALIAS, id prefix) and build its module from the stored weights."""
    from toolchain.models.zoo import build_model
    from toolchain.models.checkpoint import load_checkpoint

    resolved = _resolve(workspace, ref)
    body = resolved.record.body
    recipe = parse_recipe(body["recipe"], source=f"model {resolved.record.id[:12]}")
    module = build_model(recipe, len(body["classes"]))
    module.load_state_dict(load_checkpoint(workspace.blobs.read_bytes(body["weights"])))
    module.eval()
    return RegisteredModel(
        record=resolved.record, version=resolved.version, recipe=recipe, classes=tuple(body["classes"]), module=module,
    )


def _resolve(workspace: Workspace, ref: str) -> Resolved:
    """A model by reference, or by the path of its weights file (e.g. a copy of the stored checkpoint)."""
    candidate = Path(ref)
    if ("/" in ref or candidate.suffix) and candidate.is_file():
        sha = sha256_file(candidate)
        for record in workspace.registry.find(kind="model"):
            if record.body.get("weights") == sha:
                return Resolved(record=record, version=workspace.registry.version_of("model", record.name, record.id))
        raise InputNotFoundError(f"{ref} is not the weights file of a registered model; train one with `toolchain train`")
    return workspace.resolve(ref, kind="model")

"""Atomic checkpoints that load without unpickling code (``torch.load(weights_only=True)``)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from toolchain.errors import CorruptStoreError
from toolchain.fileio import atomic_output


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` atomically: a crash leaves the previous checkpoint intact."""
    import torch

    with atomic_output(path) as handle:
        torch.save(state, handle)


def load_checkpoint(source: Path | bytes) -> dict[str, Any]:
    """Load a checkpoint file (or its bytes) with ``weights_only=True``; damaged files are a clear error."""
    import torch

    try:
        handle: Any = io.BytesIO(source) if isinstance(source, bytes) else source
        state = torch.load(handle, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several types for damaged files
        where = "checkpoint bytes" if isinstance(source, bytes) else str(source)
        raise CorruptStoreError(f"cannot load {where} ({type(exc).__name__}: {exc}); delete it and train again") from exc
    if not isinstance(state, dict):
        raise CorruptStoreError("checkpoint does not hold a dictionary of tensors")
    return state


def state_dict_bytes(state_dict: dict[str, Any]) -> bytes:
    """Serialise a model state dict (what the registry stores as a model's weights)."""
    import torch

    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    return buffer.getvalue()

"""Runners in the style of Polygraphy's ``BaseRunner``: ``activate / infer / deactivate`` and a context
manager; subclasses override the ``*_impl`` methods. Heavy backends are imported on activation.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.errors import BadInputError, MissingEnvironmentError, UsageError


def padded_chunks(images: np.ndarray, chunk: int, static: bool) -> Iterator[tuple[np.ndarray, int]]:
    """``(batch, real)`` pairs: a static batch is padded by repeating its last image; ``real`` rows count."""
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk]
        real = len(part)
        if static and real < chunk:
            part = np.concatenate([part, np.repeat(part[-1:], chunk - real, axis=0)])
        yield part, real


class BaseRunner(abc.ABC):
    """Runs one model on batches of inputs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.is_active = False

    def activate(self) -> None:
        if self.is_active:
            raise UsageError(f"runner {self.name} is already active")
        self.activate_impl()
        self.is_active = True

    def infer(self, feed: np.ndarray) -> np.ndarray:
        """Outputs (N, C) for one input batch."""
        if not self.is_active:
            raise UsageError(f"runner {self.name} must be activated before infer (use it as a context manager)")
        return self.infer_impl(feed)

    def deactivate(self) -> None:
        if self.is_active:
            self.deactivate_impl()
            self.is_active = False

    def __enter__(self) -> BaseRunner:
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    @abc.abstractmethod
    def activate_impl(self) -> None: ...

    @abc.abstractmethod
    def infer_impl(self, feed: np.ndarray) -> np.ndarray:
        batch = self.fixed_batch
        chunk = batch or self.max_batch or max(1, len(feed))
        outputs = [
            self._session.run(None, {self.input_name: np.ascontiguousarray(part)})[0][:real]
            for part, real in padded_chunks(feed, chunk, static=batch is not None)
        ]
        return np.concatenate(outputs)

    def deactivate_impl(self) -> None: ...


class OnnxRuntimeRunner(BaseRunner):
    """ONNX Runtime on the CPU (or other execution providers when present and asked for).

    Args:
        path: The .onnx file.
        providers: Execution providers in order of preference (default: CPU).
        threads: Intra-op threads, with one inter-op thread (0 = ONNX Runtime's defaults).
        max_batch: Largest batch run at once on a graph with a dynamic batch (None: the whole feed).
    """

    def __init__(self, path: Path, *, providers: tuple[str, ...] = ("CPUExecutionProvider",), threads: int = 0,
                 max_batch: int | None = None) -> None:
        super().__init__(f"onnxruntime:{Path(path).name}")
        self.path = Path(path)
        self.providers = providers
        self.threads = threads
        self.max_batch = max_batch
        self._session: Any = None
        self.input_name = ""
        self.input_shape: list[Any] = []

    def activate_impl(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - base dependency
            raise MissingEnvironmentError("onnxruntime is not installed: pip install onnxruntime") from exc
        available = set(ort.get_available_providers())
        missing = [p for p in self.providers if p not in available]
        if missing:
            raise MissingEnvironmentError(f"ONNX Runtime here lacks {', '.join(missing)}; available: {', '.join(sorted(available))}")
        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(str(self.path), sess_options=options, providers=list(self.providers))
        except Exception as exc:  # noqa: BLE001 - ORT raises its own untyped errors for graphs it cannot load
            raise BadInputError(
                f"ONNX Runtime could not load {self.path.name}: {exc}; try another --opset or --no-simplify"
            ) from exc
        first = self._session.get_inputs()[0]
        self.input_name, self.input_shape = first.name, list(first.shape)

    @property
    def fixed_batch(self) -> int | None:
        """The batch size baked into the graph, or None when it is dynamic."""
        dim = self.input_shape[0] if self.input_shape else None
        return dim if isinstance(dim, int) else None

    def infer_impl(self, feed: np.ndarray) -> np.ndarray:
        batch = self.fixed_batch
        if batch is None or len(feed) == batch:
            return self._session.run(None, {self.input_name: feed})[0]
        outputs = []
        for start in range(0, len(feed), batch):  # a fixed-batch graph: run in chunks, pad the last
            chunk = feed[start : start + batch]
            padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), axis=0)]) if len(chunk) < batch else chunk
            outputs.append(self._session.run(None, {self.input_name: padded})[0][: len(chunk)])
        return np.concatenate(outputs)

    def deactivate_impl(self) -> None:
        self._session = None

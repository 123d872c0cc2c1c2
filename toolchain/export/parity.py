"""Numeric parity of an exported ONNX against the torch model it came from (optimum's
``validate_model_outputs``): the same test-split images through both, compared on softmax probabilities.

torch runs the model as ``evaluate`` does (``eval_transform`` then the module); ONNX Runtime runs the
exported graph on the CPU with the batch layout the graph was exported for. For a ``uint8-nhwc``
graph both sides see the same uint8 frames, so the normalisation baked into the graph is checked
against the one used in training and evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from toolchain.errors import BadInputError
from toolchain.models.recipe import Recipe
from toolchain.runtime.runners import OnnxRuntimeRunner
from toolchain.train.batches import SplitArrays, eval_transform, resize_uint8
from toolchain.workspace import Workspace

if TYPE_CHECKING:  # pragma: no cover
    from toolchain.data.versions import DatasetVersion

REL_FLOOR = 1e-3
"""Relative error is measured only on probabilities at least this large: the relative error of a
0.00001 probability says nothing about the decision and float32 softmax tails are noisy."""

_TORCH_CHUNK = 64
_DYNAMIC_CHUNK = 32


@dataclass(frozen=True, kw_only=True)
class ParityReport:
    """torch vs ONNX Runtime on the same images.

    Attributes:
        max_abs: Largest absolute difference of any class probability.
        max_rel: Largest relative difference, over reference probabilities >= :data:`REL_FLOOR`.
        top1_agreement: Fraction of images whose top-1 class agrees; an image whose reference top
            two classes are within ``atol`` of each other (a tie) agrees whichever class ONNX picks.
        images: How many images were compared.
        atol: Tolerance on ``max_abs``.
        rtol: Tolerance on ``max_rel``.
        passed: ``max_abs <= atol``, ``max_rel <= rtol`` and every top-1 agrees.
        split: The split the images came from (``test``, or ``val`` when test is empty).
        dataset: Dataset version id of the images.
    """

    max_abs: float
    max_rel: float
    top1_agreement: float
    images: int
    atol: float
    rtol: float
    passed: bool
    split: str = "test"
    dataset: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready figures (non-finite errors become ``None``)."""
        def finite(value: float) -> float | None:
            return value if math.isfinite(value) else None

        return {
            "max_abs": finite(self.max_abs),
            "max_rel": finite(self.max_rel),
            "top1_agreement": self.top1_agreement,
            "images": self.images,
            "atol": self.atol,
            "rtol": self.rtol,
            "passed": self.passed,
            "split": self.split,
            "dataset": self.dataset,
        }

    def describe(self) -> str:
        """One line for humans and error messages."""
        return (
            f"max abs error {self.max_abs:.3g} (atol {self.atol:g}), max rel error {self.max_rel:.3g} "
            f"(rtol {self.rtol:g}), top-1 agreement {self.top1_agreement:.2%} on {self.images} {self.split} images"
        )


def compare_probabilities(reference: np.ndarray, candidate: np.ndarray, *, atol: float, rtol: float,
                          split: str = "test", dataset: str = "") -> ParityReport:
    """Compare two ``(N, C)`` probability arrays (reference = torch).

    Args:
        reference: Probabilities from the torch model.
        candidate: Probabilities from the exported graph.
        atol: Allowed max absolute error.
        rtol: Allowed max relative error (on probabilities >= :data:`REL_FLOOR`).
        split: Recorded in the report.
        dataset: Recorded in the report.
    """
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        raise BadInputError(
            f"the ONNX graph returned shape {candidate.shape} where torch returned {reference.shape}; "
            "re-export the model (the graph does not match it)"
        )
    n = len(reference)
    if n == 0:
        return ParityReport(max_abs=math.inf, max_rel=math.inf, top1_agreement=0.0, images=0, atol=atol, rtol=rtol,
                            passed=False, split=split, dataset=dataset)
    diff = np.abs(reference - candidate)
    finite = bool(np.isfinite(candidate).all())
    max_abs = float(diff.max()) if finite else math.inf
    large = np.abs(reference) >= REL_FLOOR
    if not finite:
        max_rel = math.inf
    else:
        max_rel = float((diff[large] / np.abs(reference[large])).max()) if large.any() else 0.0
    ref_top = reference.argmax(axis=1)
    cand_top = candidate.argmax(axis=1) if finite else np.full(n, -1)
    rows = np.arange(n)
    # A tie in the reference (top two within atol) is not a disagreement: either answer is right.
    tie = (cand_top >= 0) & (reference[rows, ref_top] - reference[rows, np.maximum(cand_top, 0)] <= atol)
    agreement = float(np.mean((ref_top == cand_top) | tie))
    passed = max_abs <= atol and max_rel <= rtol and agreement == 1.0
    return ParityReport(max_abs=max_abs, max_rel=max_rel, top1_agreement=agreement, images=n, atol=atol, rtol=rtol,
                        passed=passed, split=split, dataset=dataset)


def parity_split(dataset: DatasetVersion) -> tuple[str, SplitArrays]:
    """The test split, or val when the test split is empty."""
    for name in ("test", "val"):
        split = SplitArrays.of(dataset, name)
        if len(split):
            return name, split
    raise BadInputError(
        f"dataset {dataset.ref} has no test or val images for the parity check; "
        "re-ingest it with test/val splits (see `toolchain data ingest --help`)"
    )


def parity_images(workspace: Workspace, dataset: DatasetVersion, count: int) -> tuple[str, np.ndarray]:
    """``(split name, uint8 NHWC images)``: the first ``count`` images of the split in manifest order."""
    name, split = parity_split(dataset)
    indices = split.indices[:count]
    return name, dataset.layout.gather(workspace.blobs, indices)


def torch_probabilities(module: Any, images: np.ndarray, recipe: Recipe) -> np.ndarray:
    """Softmax probabilities of the torch module on uint8 NHWC images, as ``evaluate`` computes them."""
    import torch

    out = []
    with torch.inference_mode():
        for start in range(0, len(images), _TORCH_CHUNK):
            x = eval_transform(torch.from_numpy(np.ascontiguousarray(images[start : start + _TORCH_CHUNK])), recipe)
            out.append(torch.softmax(module(x).float(), dim=1).numpy())
    return np.concatenate(out).astype(np.float64)


def onnx_probabilities(path: Path, inputs: np.ndarray) -> np.ndarray:
    """Run the ONNX graph with ONNX Runtime (CPU, one thread: the same figures on every machine) on
    ``inputs``: chunks of the graph's fixed batch (the last one padded), or of 32 when dynamic."""
    with OnnxRuntimeRunner(path, threads=1, max_batch=_DYNAMIC_CHUNK) as runner:
        return runner.infer(inputs).astype(np.float64)


def check_parity(workspace: Workspace, *, module: Any, recipe: Recipe, dataset: DatasetVersion, onnx_path: Path,
                 layout: str, count: int, atol: float, rtol: float) -> ParityReport:
    """torch vs ONNX Runtime on ``count`` images of the dataset's test split (val when test is empty).

    Args:
        workspace: Where the dataset's shards are.
        module: The torch model (eval mode, CPU) returning logits.
        recipe: Its recipe (input size, mean, std).
        dataset: The dataset version whose images to use.
        onnx_path: The exported graph.
        layout: ``float-nchw`` (fed ``eval_transform`` output) or ``uint8-nhwc`` (fed uint8 frames
            at the input size).
        count: Number of images.
        atol: Tolerance on the max absolute probability error.
        rtol: Tolerance on the max relative probability error.
    """
    import torch

    split, images = parity_images(workspace, dataset, count)
    if layout == "uint8-nhwc":
        images = resize_uint8(images, recipe.input_size)
        inputs = images
    else:
        with torch.inference_mode():
            inputs = eval_transform(torch.from_numpy(np.ascontiguousarray(images)), recipe).numpy()
    reference = torch_probabilities(module, images, recipe)
    candidate = onnx_probabilities(onnx_path, inputs)
    return compare_probabilities(reference, candidate, atol=atol, rtol=rtol, split=split, dataset=dataset.id)

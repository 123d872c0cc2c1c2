"""Export a registered model to ONNX: checked, optionally simplified, parity-gated, registered.

The graph takes ``images`` and returns ``probabilities`` ``(N, C)``: the classifier's ``logits``
tensor (named so in the graph) followed by a Softmax, so every consumer (ONNX Runtime, TensorRT,
OpenCV) gets the same numbers ``evaluate`` reports. With ``input="uint8-nhwc"`` the graph also takes
raw RGB frames, uint8 ``(N, H, W, 3)`` at the model's input size, and casts, scales, transposes and
normalises them itself, so the roadside runtime only resizes frames.

Exports use torch's TorchScript exporter (``dynamo=False``): for these plain conv nets it is stable
and byte-deterministic, and it folds BatchNorm into the convolutions.
"""

from __future__ import annotations

import json
import re
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolchain import __version__
from toolchain.artifacts import register_file
from toolchain.codeversion import code_version
from toolchain.errors import BadInputError, QualityGateError, UsageError, missing_extra
from toolchain.export.parity import ParityReport, check_parity
from toolchain.progress import NullProgress, Progress
from toolchain.workspace import Workspace

if TYPE_CHECKING:  # pragma: no cover
    from toolchain.models.registered import RegisteredModel

MIN_OPSET = 11
MAX_OPSET = 20
INPUT_LAYOUTS = ("float-nchw", "uint8-nhwc")
BATCH_MODES = ("1", "N (an integer)", "dynamic")
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
LOGITS_NAME = "logits"
ARTIFACT_TYPE = "onnx"

_BATCH_RE = re.compile(r"^[1-9][0-9]*$")


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    """Options of ``toolchain export``.

    Attributes:
        model: Registered model reference (``NAME``, ``NAME@vN``, ``NAME@ALIAS`` or an id prefix).
        opset: ONNX opset, 11 to 20 (older TensorRT parses fewer: pick the target's).
        batch: ``"1"``, a fixed batch size such as ``"8"``, or ``"dynamic"``.
        input: ``float-nchw`` (normalised float ``(N, 3, S, S)``) or ``uint8-nhwc`` (raw RGB frames
            ``(N, S, S, 3)``, normalised inside the graph).
        simplify: Simplify the graph with onnxslim when it is installed.
        parity_images: Test-split images for the torch vs ONNX Runtime check.
        atol: Max absolute error allowed on the probabilities.
        rtol: Max relative error allowed on probabilities >= ``parity.REL_FLOOR``.
        target: Hardware target the export is meant for: its parser's opset limit, input layout and
            operators are checked (choose the opset with :func:`toolchain.export.targeting.plan_export`).
    """

    model: str
    opset: int = 17
    batch: str = "1"
    input: str = "float-nchw"
    simplify: bool = True
    parity_images: int = 64
    atol: float = 1e-4
    rtol: float = 1e-3
    target: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.opset, bool) or not isinstance(self.opset, int) or not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise UsageError(
                f"--opset {self.opset!r} is not supported; use an opset from {MIN_OPSET} to {MAX_OPSET} "
                "(17 parses in TensorRT 8.5+, 13 in TensorRT 8.2 on JetPack 4.6)"
            )
        batch = str(self.batch).strip().lower()
        if batch != "dynamic" and not _BATCH_RE.match(batch):
            raise UsageError(f"--batch {self.batch!r} is not valid; use 1, a fixed batch size such as 8, or dynamic")
        object.__setattr__(self, "batch", batch)
        if self.input not in INPUT_LAYOUTS:
            raise UsageError(f"--input {self.input!r} is not valid; use one of {', '.join(INPUT_LAYOUTS)}")
        if isinstance(self.parity_images, bool) or not isinstance(self.parity_images, int) or self.parity_images < 1:
            raise UsageError("--parity-images must be at least 1: the export is only registered after a parity check")
        for name in ("atol", "rtol"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < float("inf"):
                raise UsageError(f"--{name} must be a finite number >= 0, got {value!r}")

    @property
    def batch_size(self) -> int | None:
        """The fixed batch size, or ``None`` for a dynamic batch."""
        return None if self.batch == "dynamic" else int(self.batch)


@dataclass(frozen=True, kw_only=True)
class ExportResult:
    """A registered ONNX export and how it was made.

    Attributes:
        artifact: Artifact record id.
        ref: ``NAME@vN`` of the artifact (``<model name>-onnx``).
        path: The ONNX file (the artifact's blob in the workspace).
        opset: ONNX opset.
        input: Input layout (``float-nchw`` or ``uint8-nhwc``).
        batch: ``1``, a fixed size, or ``dynamic``.
        parity: The torch vs ONNX Runtime check it passed.
        simplified: Whether onnxslim simplified the graph.
        size_bytes: Size of the ONNX file.
        model: Model record id.
        model_ref: The model's ``NAME@vN``.
        input_shape: Input shape (``"batch"`` for a dynamic dimension).
        operators: ONNX operator types in the graph (``domain::Op`` outside the default domain).
        metadata: The graph's ``metadata_props``.
        notes: What a user should know (e.g. simplification skipped and why).
    """

    artifact: str
    ref: str
    path: Path
    opset: int
    input: str
    batch: str
    parity: ParityReport
    simplified: bool
    size_bytes: int
    model: str
    model_ref: str
    input_shape: tuple[int | str, ...] = ()
    operators: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The document ``toolchain export --json`` prints."""
        return {
            "artifact": self.artifact,
            "ref": self.ref,
            "path": str(self.path),
            "model": self.model_ref,
            "model_id": self.model,
            "opset": self.opset,
            "input": self.input,
            "batch": self.batch,
            "input_name": INPUT_NAME,
            "output_name": OUTPUT_NAME,
            "input_shape": list(self.input_shape),
            "simplified": self.simplified,
            "size_bytes": self.size_bytes,
            "parity": self.parity.to_json(),
            "max_abs": self.parity.to_json()["max_abs"],
            "max_rel": self.parity.to_json()["max_rel"],
            "top1_agreement": self.parity.top1_agreement,
            "passed": self.parity.passed,
            "operators": list(self.operators),
            "metadata": dict(self.metadata),
            "notes": list(self.notes),
        }


class ParityError(QualityGateError):
    """The exported graph does not reproduce the torch model within tolerance (exit code 3).

    Attributes:
        report: The failed parity figures.
    """

    def __init__(self, message: str, report: ParityReport) -> None:
        super().__init__(message)
        self.report = report


def _modules() -> tuple[Any, Any]:
    try:
        import torch
    except ImportError:
        raise missing_extra("torch", "train") from None
    try:
        import onnx
    except ImportError:
        raise missing_extra("onnx", "train") from None
    return torch, onnx


def input_shape(config: ExportConfig, input_size: int) -> tuple[int | str, ...]:
    """The graph input's shape; ``"batch"`` names a dynamic batch dimension."""
    n: int | str = config.batch_size or "batch"
    return (n, input_size, input_size, 3) if config.input == "uint8-nhwc" else (n, 3, input_size, input_size)


def _export_module(torch: Any, module: Any, mean: tuple[float, ...], std: tuple[float, ...], uint8: bool) -> Any:
    """``module`` followed by a softmax; with ``uint8`` preceded by ``eval_transform``'s normalisation."""

    class Exported(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = module
            self.uint8 = uint8
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

        def forward(self, x: Any) -> Any:
            if self.uint8:
                # Cast first: TensorRT accepts uint8 only as a network input feeding a Cast (8.5+).
                x = x.float().permute(0, 3, 1, 2) / 255.0
                x = (x - self.mean) / self.std
            return torch.softmax(self.model(x), dim=1)

    return Exported().eval()


def _name_logits(graph: Any) -> None:
    """Rename the Softmax input feeding ``probabilities`` to ``logits``, so graph tools and later stages
    (quantize keeping the head in float, a logits-output variant) can find it by name."""
    producer = next((n for n in graph.node if OUTPUT_NAME in n.output), None)
    if producer is None or producer.op_type != "Softmax" or not producer.input:
        return
    old = producer.input[0]
    if old == LOGITS_NAME or any(o.name == old for o in graph.output) or any(i.name == old for i in graph.input):
        return
    for node in graph.node:
        for seq in (node.input, node.output):
            for i, name in enumerate(seq):
                if name == old:
                    seq[i] = LOGITS_NAME
    for info in graph.value_info:
        if info.name == old:
            info.name = LOGITS_NAME


def graph_operators(model: Any) -> tuple[str, ...]:
    """Sorted operator types of an ``onnx.ModelProto`` (``domain::Op`` outside the default domain)."""
    names = {n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}" for n in model.graph.node}
    return tuple(sorted(names))


def read_metadata(path: Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file, as a dict (``classes``, ``mean``... are JSON strings)."""
    try:
        import onnx
    except ImportError:
        raise missing_extra("onnx", "train") from None
    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def _check(onnx: Any, model: Any, what: str) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise BadInputError(
            f"the {what} graph failed onnx.checker: {exc}; try another --opset"
            + (" or --no-simplify" if what == "simplified" else "")
        ) from exc


def _simplify(onnx: Any, model: Any) -> tuple[Any, str | None]:
    """``(model, note)``: the onnxslim-simplified graph, or the same graph and why it was not simplified."""
    try:
        import onnxslim
    except ImportError:
        return model, "onnxslim is not installed, so the graph was not simplified (pip install onnxslim)"
    try:
        slim = onnxslim.slim(model)
    except Exception as exc:  # noqa: BLE001 - a third-party simplifier failing must not block an export
        return model, f"onnxslim could not simplify the graph ({type(exc).__name__}: {exc}); exported it unsimplified"
    if slim is None:
        return model, "onnxslim returned no graph; exported it unsimplified"
    _check(onnx, slim, "simplified")
    return slim, None


def build_onnx(
    loaded: RegisteredModel, config: ExportConfig, metadata: dict[str, str], out: Path,
) -> tuple[bool, str | None]:
    """Write the checked (and simplified) ONNX of ``loaded`` to ``out``.

    Returns:
        ``(simplified, note)``: whether onnxslim ran, and a note when it did not.

    Raises:
        UsageError: torch cannot express the model at this opset.
        BadInputError: The graph failed ``onnx.checker``.
    """
    torch, onnx = _modules()
    recipe = loaded.recipe
    uint8 = config.input == "uint8-nhwc"
    wrapper = _export_module(torch, loaded.module, recipe.mean, recipe.std, uint8)
    n = config.batch_size or 1
    s = recipe.input_size
    example = torch.zeros((n, s, s, 3), dtype=torch.uint8) if uint8 else torch.zeros((n, 3, s, s), dtype=torch.float32)
    dynamic_axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if config.batch_size is None else None
    raw = out.with_name(out.stem + ".raw.onnx")
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            # The TorchScript exporter warns that it is legacy; it is chosen on purpose (module docstring).
            warnings.filterwarnings("ignore", message=".*TorchScript.*")
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(
                wrapper, (example,), str(raw), dynamo=False, opset_version=config.opset, export_params=True,
                do_constant_folding=True, training=torch.onnx.TrainingMode.EVAL,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=dynamic_axes,
            )
    except torch.onnx.errors.OnnxExporterError as exc:
        raise UsageError(
            f"torch could not export {loaded.ref} at opset {config.opset}: {exc}; "
            f"try a higher --opset (up to {MAX_OPSET})"
        ) from exc
    model = onnx.load(str(raw))
    raw.unlink()
    _check(onnx, model, "exported")
    simplified, note = False, None
    if config.simplify:
        model, note = _simplify(onnx, model)
        simplified = note is None
    _name_logits(model.graph)
    del model.metadata_props[:]
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    _check(onnx, model, "final")
    out.write_bytes(model.SerializeToString(deterministic=True))
    return simplified, note


def export_metadata(loaded: RegisteredModel, config: ExportConfig, dataset_id: str, dataset_ref: str) -> dict[str, str]:
    """The ``metadata_props`` written into the graph (string values; lists are JSON)."""
    recipe = loaded.recipe
    return {
        "classes": json.dumps(list(loaded.classes)),
        "input_size": str(recipe.input_size),
        "mean": json.dumps(list(recipe.mean)),
        "std": json.dumps(list(recipe.std)),
        "input_layout": config.input,
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "batch": config.batch,
        "architecture": recipe.architecture,
        "dataset": dataset_id,
        "dataset_ref": dataset_ref,
        "model": loaded.record.id,
        "model_ref": loaded.ref,
        "toolchain_version": __version__,
        "opset": str(config.opset),
    }


def _library_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    versions = {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    try:
        import onnxslim

        versions["onnxslim"] = onnxslim.__version__
    except ImportError:
        pass
    return versions


def export_model(workspace: Workspace, config: ExportConfig, *, progress: Progress | None = None) -> ExportResult:
    """Export a registered model to ONNX, check parity with torch, and register it as ``<model>-onnx``.

    Re-exporting with the same config gives the same bytes and so the same artifact.

    Args:
        workspace: Where the model is registered and the artifact is stored.
        config: What to export.
        progress: Progress display.

    Raises:
        ParityError: (a :class:`QualityGateError`, exit code 3) the graph does not reproduce the torch
            model within ``atol``/``rtol`` or a top-1 class differs; nothing is registered.
        UsageError: Bad options, or an opset the model cannot be exported at.
        BadInputError: The graph failed ``onnx.checker``; the dataset has no test/val images.
    """
    from toolchain.data.versions import load_dataset
    from toolchain.models.registered import load_registered_model

    from toolchain.export.targeting import check_operators, plan_export

    progress = progress or NullProgress()
    _modules()
    target, _ = plan_export(config.target, config.opset, config.input)
    loaded = load_registered_model(workspace, config.model)
    dataset = load_dataset(workspace, loaded.dataset)
    metadata = export_metadata(loaded, config, dataset.id, dataset.ref)
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="toolchain-export-") as tmp:
        path = Path(tmp) / f"{loaded.record.name or 'model'}.onnx"
        what = f"opset {config.opset}, {config.input}, batch {config.batch}"
        progress.start(f"export {loaded.ref} to ONNX ({what})", None)
        simplified, note = build_onnx(loaded, config, metadata, path)
        progress.finish()
        if note:
            notes.append(note)
        progress.start(f"parity: torch vs ONNX Runtime on {config.parity_images} images", None)
        report = check_parity(
            workspace, module=loaded.module, recipe=loaded.recipe, dataset=dataset, onnx_path=path,
            layout=config.input, count=config.parity_images,
            atol=config.atol, rtol=config.rtol,
        )
        progress.finish()
        if not report.passed:
            raise ParityError(
                f"the ONNX export of {loaded.ref} does not match the torch model: {report.describe()}. "
                "Nothing was registered; try another --opset or --no-simplify, or loosen --atol/--rtol if this "
                "difference is acceptable",
                report,
            )
        import onnx

        operators = graph_operators(onnx.load(str(path)))
        check_operators(target, operators)
        shape = input_shape(config, loaded.recipe.input_size)
        stored_config = {**asdict(config), "model": loaded.record.id}
        body = {
            "format": "onnx",
            "model": loaded.record.id,
            "model_ref": loaded.ref,
            "dataset": dataset.id,
            "config": stored_config,
            "opset": config.opset,
            "target": config.target,
            "input": config.input,
            "batch": config.batch,
            "input_name": INPUT_NAME,
            "output_name": OUTPUT_NAME,
            "input_shape": list(shape),
            "input_dtype": "uint8" if config.input == "uint8-nhwc" else "float32",
            "simplified": simplified,
            "operators": list(operators),
            "parity": report.to_json(),
            "metadata": metadata,
            "libraries": _library_versions(),
            "code_version": code_version("export", "models"),
        }
        name = f"{loaded.record.name or 'model'}-onnx"
        artifact = register_file(workspace, path, name=name, type=ARTIFACT_TYPE, body=body,
                                 links=((loaded.record.id, "model"),))
    return ExportResult(
        artifact=artifact.id, ref=artifact.ref, path=artifact.path, opset=config.opset, input=config.input,
        batch=config.batch, parity=report, simplified=simplified, size_bytes=artifact.path.stat().st_size,
        model=loaded.record.id, model_ref=loaded.ref, input_shape=shape, operators=operators, metadata=metadata,
        notes=tuple(notes),
    )

"""Build an ONNX Runtime artifact for a CPU target: graph optimisations applied and saved, then verified.

SELF-CONTAINED (standard library + numpy + onnxruntime, no toolchain imports): the same file runs
in-process for a local build and is copied into a container on a remote CPU unit for a remote one::

    python3 onnxruntime_builder.py REQUEST.json OUTDIR

REQUEST.json: ``{"onnx": "model.onnx", "precision": "fp32"|"int8", "verify_images": 32, "atol": 1e-4,
"expect": {"architecture": "x86_64"}}`` (paths relative to the request's folder). OUTDIR receives
``model.ort.onnx`` (the artifact), ``build.log`` and ``result.json``. Exit codes: 0 built and verified,
3 built but does not match the input ONNX, 4 bad request or ONNX, 5 wrong machine.

Graph optimisation level EXTENDED is used, not ALL: ALL adds layout transforms tuned to the build
machine's CPU features, which would make the artifact unsafe to copy to another CPU of the target.
"""

from __future__ import annotations

import hashlib
import json
import platform
import socket
import sys
import time
from pathlib import Path
from typing import Any

ARTIFACT_NAME = "model.ort.onnx"
EXIT_OK, EXIT_MISMATCH, EXIT_BAD_INPUT, EXIT_WRONG_MACHINE = 0, 3, 4, 5
_KINDS = {EXIT_MISMATCH: "mismatch", EXIT_BAD_INPUT: "bad_input", EXIT_WRONG_MACHINE: "environment"}


class BuildFailure(Exception):
    """A build that cannot go on; ``code`` is the process exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def machine_architecture() -> str:
    """``x86_64`` or ``aarch64`` (macOS and some kernels say ``arm64``/``AMD64``).

    A copy of :func:`toolchain.targets.profile.machine_architecture`: this file runs alone on units.
    """
    machine = platform.machine().lower()
    return {"arm64": "aarch64", "amd64": "x86_64"}.get(machine, machine)


def build(request: dict[str, Any], request_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Optimise ``request["onnx"]``, verify it against the input on random inputs, write OUTDIR files.

    Returns the result dict also written to ``OUTDIR/result.json``. Raises :class:`BuildFailure`.
    """
    import numpy as np
    import onnxruntime as ort

    started = time.perf_counter()
    expected_arch = (request.get("expect") or {}).get("architecture")
    if expected_arch and expected_arch != machine_architecture():
        raise BuildFailure(EXIT_WRONG_MACHINE, f"this machine is {machine_architecture()}, the target is {expected_arch}")
    source = request_dir / str(request.get("onnx", ""))
    if not source.is_file():
        raise BuildFailure(EXIT_BAD_INPUT, f"the request names {source.name!r}, which is not in {request_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    artifact = out_dir / ARTIFACT_NAME
    log: list[str] = [f"onnxruntime {ort.__version__} on {machine_architecture()} ({socket.gethostname()})"]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(artifact)
    try:
        ort.InferenceSession(str(source), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises untyped errors for graphs it cannot load
        raise BuildFailure(EXIT_BAD_INPUT, f"ONNX Runtime could not load {source.name}: {exc}") from exc
    if not artifact.is_file():
        raise BuildFailure(EXIT_BAD_INPUT, f"ONNX Runtime wrote no optimised model for {source.name}")
    log.append(f"optimised (graph optimisation level extended): {source.stat().st_size} -> {artifact.stat().st_size} bytes")
    verification = _verify(np, ort, source, artifact, request)
    log.append(f"verification: {json.dumps(verification)}")
    result = {
        "format": "onnxruntime-optimized-onnx",
        "artifact": ARTIFACT_NAME,
        "engine_sha256": _sha256(artifact),
        "size_bytes": artifact.stat().st_size,
        "runtime": {"name": "onnxruntime", "version": ort.__version__, "graph_optimization": "extended"},
        "architecture": machine_architecture(),
        "device_name": socket.gethostname(),
        "precision": request.get("precision", "fp32"),
        "verification": verification,
        "build_seconds": round(time.perf_counter() - started, 3),
    }
    (out_dir / "build.log").write_text("\n".join(log) + "\n")
    (out_dir / "result.json").write_text(json.dumps(result, indent=2))
    if not verification["passed"]:
        raise BuildFailure(
            EXIT_MISMATCH,
            f"the built artifact does not match the input ONNX: max abs {verification['max_abs']:.2e} "
            f"(<= {verification['atol']:g}), top-1 agreement {verification['top1_agreement']:.2%}",
        )
    return result


def _verify(np: Any, ort: Any, source: Path, built: Path, request: dict[str, Any]) -> dict[str, Any]:
    """Run the input ONNX and the built artifact on the same random inputs and compare their outputs."""
    reference = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    candidate = ort.InferenceSession(str(built), providers=["CPUExecutionProvider"])
    first = reference.get_inputs()[0]
    shape = [d if isinstance(d, int) else 4 for d in first.shape]
    is_uint8 = "uint8" in first.type
    rng = np.random.default_rng(0)
    wanted = int(request.get("verify_images", 32))
    expected, actual = [], []
    for _ in range(max(1, wanted // max(1, shape[0]))):
        feed = rng.integers(0, 256, shape, dtype=np.uint8) if is_uint8 else rng.standard_normal(shape).astype(np.float32)
        expected.append(reference.run(None, {first.name: feed})[0])
        actual.append(candidate.run(None, {first.name: feed})[0])
    a, b = np.concatenate(expected), np.concatenate(actual)
    max_abs = float(np.max(np.abs(a - b)))
    agreement = float(np.mean(a.argmax(1) == b.argmax(1)))
    atol = float(request.get("atol", 1e-4))
    if request.get("precision") == "int8":
        atol = max(atol, 1e-3)  # kernels may fuse requantisation differently; class decisions must still agree
    return {"images": int(len(a)), "max_abs": max_abs, "top1_agreement": agreement, "atol": atol,
            "passed": bool(max_abs <= atol and agreement == 1.0)}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: onnxruntime_builder.py REQUEST.json OUTDIR", file=sys.stderr)
        return EXIT_BAD_INPUT
    request_path, out_dir = Path(argv[0]), Path(argv[1])
    try:
        request = json.loads(request_path.read_text())
        build(request, request_path.parent, out_dir)
    except BuildFailure as failure:
        out_dir.mkdir(parents=True, exist_ok=True)
        # Same shape as tensorrt_builder's error.json, so the remote runner reads both alike.
        error = {"code": failure.code, "kind": _KINDS.get(failure.code, "error"), "message": str(failure)}
        (out_dir / "error.json").write_text(json.dumps({"error": error}))
        print(f"error: {failure}", file=sys.stderr)
        return failure.code
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

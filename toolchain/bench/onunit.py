"""``python3 -m toolchain.bench.onunit REQUEST.json OUTDIR``: a benchmark inside the unit's runtime image.

``toolchain bench ARTIFACT --on URL`` starts this in a container of the image ``package`` built for the
unit's target, so it measures what the unit runs: the same bundle (``/opt/toolchain/model``), the same
runner (:func:`toolchain.serve.service.make_runner`), preprocessing and pipeline as ``serve``. It writes
``OUTDIR/report.json``: the stream report (:func:`toolchain.bench.report.stream_report`), the per-frame
times for the plots, and the device facts read here (:func:`toolchain.runtime.machine.device_facts`).
On failure it writes ``OUTDIR/error.json`` and exits with the toolchain's exit code.

Camera secrets come as ``serve`` takes them in the unit's container: the request names the credentials
file (:data:`toolchain.serve.credentials.CONTAINER_PATH`), never what it holds, and sources are
``NAME=URL`` with credential-free URLs.

Runtime file: standard library + numpy, Python 3.8+.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any, Dict, List

from toolchain.bench.report import frame_arrays, stream_report
from toolchain.errors import ToolchainError, UsageError
from toolchain.redaction import scrub
from toolchain.runtime.machine import device_facts
from toolchain.runtime.pipeline import NullSink, Pipeline, PipelineConfig
from toolchain.runtime.preprocess import PreprocessConfig, Preprocessor

BUNDLE = "/opt/toolchain/model"


def run(request: Dict[str, Any]) -> Dict[str, Any]:
    """Run the benchmark ``request`` describes; the report for the workstation."""
    from toolchain.serve.bundle import load_bundle
    from toolchain.serve.service import make_runner, open_cameras

    model = load_bundle(Path(request.get("bundle") or BUNDLE))
    specs: List[str] = list(request["sources"])
    if not specs:
        raise UsageError("the benchmark request names no source")
    credentials = request.get("credentials")
    sources = open_cameras(specs, Path(credentials) if credentials else None, fps=request.get("fps"),
                           loop=bool(request.get("loop")))
    preprocess = Preprocessor(PreprocessConfig(size=model.size, layout=model.layout, mean=model.mean, std=model.std))
    config = PipelineConfig(**request.get("pipeline", {}))  # the workstation's BenchConfig.pipeline_config()
    with make_runner(model, threads=int(request.get("threads", 0))) as runner:
        result = Pipeline(sources, runner, preprocess, model.classes, NullSink(), config).run()
        runner_device = getattr(runner, "device", "")
    return {"report": stream_report(result), "frames": frame_arrays(result), "device": device_facts(),
            "runner": model.backend, "runner_device": runner_device, "model": dict(model.info)}


def main(argv: List[str]) -> int:
    if len(argv) != 2:
        print("usage: python3 -m toolchain.bench.onunit REQUEST.json OUTDIR", file=sys.stderr)
        return 2
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    try:
        request = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
        report = run(request)
    except ToolchainError as exc:
        error = {"type": type(exc).__name__, "message": scrub(exc), "exit_code": exc.exit_code}
        (out / "error.json").write_text(json.dumps({"error": error}), encoding="utf-8")
        print(f"error: {error['message']}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - reported to the workstation as a bug, with the traceback's end
        error = {"type": "InternalError", "message": scrub(f"{type(exc).__name__}: {exc}"), "exit_code": 1,
                 "traceback": scrub(traceback.format_exc()[-3000:])}
        (out / "error.json").write_text(json.dumps({"error": error}), encoding="utf-8")
        print(scrub(traceback.format_exc()), file=sys.stderr)
        return 1
    (out / "report.json").write_text(json.dumps(report), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

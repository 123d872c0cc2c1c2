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

With ``vehicles`` in the request (``bench --line``) it runs the vehicle pipeline as ``serve --line`` does
(find, follow, count, crop and classify), the lines and settings carried by :func:`vehicles_to_json`.

Runtime file: standard library + numpy, Python 3.8+.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional

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
    vehicles = vehicles_from_json(request.get("vehicles"))
    counted: Optional[int] = None
    with make_runner(model, threads=int(request.get("threads", 0))) as runner:
        if vehicles is None:
            result = Pipeline(sources, runner, preprocess, model.classes, NullSink(), config).run()
        else:
            from toolchain.runtime.vehicles import make_vehicle_pipeline

            streams, ledger = make_vehicle_pipeline([s.name for s in sources], vehicles, preprocess)
            result = Pipeline(sources, runner, preprocess, model.classes, NullSink(), config, vehicles=streams,
                              ledger=ledger).run()
            counted = sum(ledger.counts.values())
        runner_device = getattr(runner, "device", "")
    on = vehicles is not None
    return {"report": stream_report(result, vehicles=on, counted=counted), "frames": frame_arrays(result, vehicles=on),
            "device": device_facts(), "runner": model.backend, "runner_device": runner_device, "model": dict(model.info)}


def vehicles_to_json(config: Any) -> Dict[str, Any]:
    """A :class:`~toolchain.runtime.vehicles.VehicleConfig` as plain JSON (lines as their ``--line`` text)."""
    from dataclasses import asdict, fields

    data = {f.name: getattr(config, f.name) for f in fields(config)}
    data["lines"] = [line.spec() for line in config.lines]
    data["camera_lines"] = [[camera, line.spec()] for camera, line in config.camera_lines]
    data["detector_classes"] = list(config.detector_classes)
    data["motion"] = asdict(config.motion) if config.motion is not None else None
    return data


def vehicles_from_json(data: Optional[Dict[str, Any]]) -> Any:
    """The :class:`~toolchain.runtime.vehicles.VehicleConfig` :func:`vehicles_to_json` wrote (None: frame mode)."""
    if not data:
        return None
    from toolchain.runtime.geometry import Line
    from toolchain.runtime.vehicles import VehicleConfig

    motion = None
    if data.get("motion"):
        from toolchain.runtime.find import MotionConfig

        motion = MotionConfig(**data["motion"])
    return VehicleConfig(**{**data, "lines": tuple(Line.parse(text) for text in data.get("lines", ())),
                            "camera_lines": tuple((camera, Line.parse(text)) for camera, text in data.get("camera_lines", ())),
                            "detector_classes": tuple(int(c) for c in data.get("detector_classes", ())), "motion": motion})


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

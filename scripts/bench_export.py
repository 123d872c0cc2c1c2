"""Per recipe: CPU latency (batch 1, median) of torch eager vs ONNX Runtime FP32 vs ONNX Runtime INT8,
and model sizes, measured in one run on one machine through the real train -> export -> quantize path.

Models are trained for one epoch only (latency and size do not depend on training). Usage:
python scripts/bench_export.py [--recipes edgenet,mobilenet_v3_small,resnet18] [--threads 1] [--runs 200]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench-out"


def _median_ms(fn, runs: int, warmup: int = 20) -> float:  # noqa: ANN001
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", default="edgenet,mobilenet_v3_small,resnet18")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--images", type=int, default=1200)
    args = parser.parse_args()

    import onnxruntime as ort
    import torch

    from toolchain.data.ingest import IngestConfig, ingest
    from toolchain.export.onnx_export import ExportConfig, export_model
    from toolchain.models.registered import load_registered_model
    from toolchain.quantize.static import QuantizeConfig, quantize_model
    from toolchain.synth.lake import LakeConfig, generate_lake
    from toolchain.train.search import TrainConfig, train
    from toolchain.workspace import Workspace

    torch.set_num_threads(args.threads)
    lake = OUT / f"export-lake-{args.images}"
    if not (lake / "manifest.csv").exists():
        shutil.rmtree(lake, ignore_errors=True)
        generate_lake(lake, LakeConfig(images=args.images, seed=11))
    rows = []
    with Workspace(OUT / "ws-export") as ws:
        ingest(ws, IngestConfig(source=str(lake), name="bench-export"))
        for recipe in args.recipes.split(","):
            trained = train(ws, TrainConfig(data="bench-export", recipe=recipe, epochs=1, device="cpu", name=f"bench-{recipe}"))
            model_ref = trained.final.model_ref
            exported = export_model(ws, ExportConfig(model=model_ref))
            quantized = quantize_model(ws, QuantizeConfig(onnx=exported.artifact, samples=128, max_drop=100.0))
            loaded = load_registered_model(ws, model_ref)
            size = loaded.recipe.input_size
            x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
            module = loaded.module
            tensor = torch.from_numpy(x)

            def torch_call() -> None:
                with torch.inference_mode():
                    module(tensor)

            options = ort.SessionOptions()
            options.intra_op_num_threads = args.threads
            sessions = {name: ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
                        for name, path in (("fp32", exported.path), ("int8", quantized.path))}
            latency = {"torch_eager": _median_ms(torch_call, args.runs)}
            for name, session in sessions.items():
                feed = {session.get_inputs()[0].name: x}
                latency[f"ort_{name}"] = _median_ms(lambda s=session, f=feed: s.run(None, f), args.runs)
            state_bytes = sum(t.numel() * t.element_size() for t in module.state_dict().values())
            rows.append({
                "recipe": recipe, "input_size": size, "torch_mb": round(state_bytes / 1e6, 3),
                "onnx_fp32_mb": round(exported.path.stat().st_size / 1e6, 3),
                "onnx_int8_mb": round(Path(quantized.path).stat().st_size / 1e6, 3),
                **{f"{k}_ms": round(v, 3) for k, v in latency.items()},
                "ort_fp32_speedup_vs_torch": round(latency["torch_eager"] / latency["ort_fp32"], 2),
                "ort_int8_speedup_vs_torch": round(latency["torch_eager"] / latency["ort_int8"], 2),
            })
            print(json.dumps(rows[-1]), flush=True)
    result = {
        "date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "threads": args.threads, "runs": args.runs, "onnxruntime": ort.__version__, "torch": torch.__version__, "rows": rows,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "bench_export.json").write_text(json.dumps(result, indent=2) + "\n")
    for r in rows:
        print(f"| {r['recipe']} | {r['input_size']} | {r['torch_mb']} | {r['onnx_fp32_mb']} | {r['onnx_int8_mb']} | "
              f"{r['torch_eager_ms']} | {r['ort_fp32_ms']} | {r['ort_int8_ms']} |")


if __name__ == "__main__":
    main()

"""Fleet rollout benchmark: a first release, then a model-only release, to N simulated units through thin links.

For each transport (``load``: an archive of only the layers a unit lacks, through each unit's engine
socket; ``pull``: by digest from a local docker-registry, each unit through its own link to it):

1. first install of release N (the demo's FP32 build) at full speed: the whole image (at 2 Mbit/s it
   would take half an hour per unit, so its time through the link is computed from its bytes);
2. release N+1 (the demo's INT8 build of the same model: only the model layer differs) through one
   ``--rate`` link per unit (scripts/thin_link.py): bytes per unit, time until the whole fleet serves it;
3. rollback to release N through the same links: no transfer.

"Full" is what the same model-only release costs when the whole image is sent (the first install's
bytes, as every rollout did before layer-aware transfer). Every unit is a real dockerd; the registry is
Debian's docker-registry. Needs root, dockerd, docker-registry, the base image
``toolchain/runtime-base:bookworm`` on $DOCKER_HOST, and the demo workspace (run scripts/demo first).

Usage: python scripts/bench_rollout.py [--units 10] [--rate 2mbit] [--workspace demo-out/workspace]
           [--out bench-out/rollout] [--benchmarks BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.docker.fleet_sim import (  # noqa: E402 - the repository root is on the path only now
    Registry, ThinLink, can_start_engines, free_port, start_engines, stop_engines, unit_ports, unix_link, write_fleet,
)

MARK_BEGIN, MARK_END = "<!-- bench_rollout: begin -->", "<!-- bench_rollout: end -->"
RELEASE_N, RELEASE_N1 = "highway-edgenet-onnx-x86-64-cpu", "highway-edgenet-onnx-int8-x86-64-cpu"


def tc(workspace: Path, *args: str) -> dict[str, Any]:
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "toolchain", "--workspace", str(workspace), "--json", *args],
                         capture_output=True, text=True, cwd=ROOT)
    if run.returncode != 0:
        raise SystemExit(f"toolchain {' '.join(args)} failed ({run.returncode}):\n{run.stderr[-3000:]}")
    payload = json.loads(run.stdout)
    payload["_wall_s"] = time.monotonic() - started
    return payload


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    units = report["units"]
    sent = [u["bytes_sent"] for u in units]
    return {"units": len(units), "ok": sum(u["ok"] for u in units), "bytes_per_unit_max": max(sent),
            "bytes_per_unit_mean": sum(sent) / len(sent), "bytes_total": sum(sent),
            "layers_sent": max(u["layers_sent"] for u in units), "layers_reused": min(u["layers_reused"] for u in units),
            "transfer_s_max": max(u["transfer_s"] for u in units), "fleet_s": report["_wall_s"],
            "transports": sorted({u["transport"] for u in units})}


def run_transport(transport: str, workspace: Path, engines: dict[str, str], registry: Registry, tmp: Path,
                  rate: str) -> dict[str, Any]:
    names = list(engines)
    ports = unit_ports(names)
    direct = write_fleet(tmp / f"{transport}-direct.toml", engines, ports=ports, extra=f'transfer = "{transport}"')
    if transport == "load":
        links = {name: unix_link(tmp / transport, engines[name]) for name in names}
        specs = {name: (listen, target) for name, (listen, target, _) in links.items()}
        thin = write_fleet(tmp / f"{transport}-thin.toml", {n: links[n][2] for n in names}, ports=ports,
                           extra='transfer = "load"')
    else:
        fronts = {name: free_port() for name in names}
        specs = {name: (f"tcp:127.0.0.1:{fronts[name]}", f"tcp:{registry.address}") for name in names}
        thin = tmp / f"{transport}-thin.toml"
        text = direct.read_text()
        for name in names:
            text = text.replace(f'name = "{name}"\n', f'name = "{name}"\nregistry = "127.0.0.1:{fronts[name]}"\n')
        thin.write_text(text)
        # The first install goes through the links too, at full speed, so each unit pulls via its own address.
        direct = thin
    parallel = str(len(names))
    print(f"[{transport}] first install of {RELEASE_N} to {len(names)} units (full speed)", file=sys.stderr)
    with ThinLink(tmp / transport, specs, rate="0") if transport == "pull" else contextlib.nullcontext():
        first = tc(workspace, "deploy", RELEASE_N, "--fleet", str(direct), "--parallel", parallel)
    print(f"[{transport}] model-only release {RELEASE_N1} through {rate} links", file=sys.stderr)
    with ThinLink(tmp / transport, specs, rate=rate) as link:
        second = tc(workspace, "deploy", RELEASE_N1, "--fleet", str(thin), "--parallel", parallel)
        counted_second = link.stop()
    print(f"[{transport}] rollback through {rate} links", file=sys.stderr)
    with ThinLink(tmp / transport, specs, rate=rate) as link:
        back = tc(workspace, "deploy", "rollback", "--fleet", str(thin), "--parallel", parallel)
        counted_back = link.stop()
    link_key = "up" if transport == "load" else "down"
    return {"first": summarize(first), "delta": summarize(second), "rollback": summarize(back),
            "link_bytes_delta": sum(s[link_key] for s in counted_second.values()),
            "link_bytes_rollback": sum(s["up"] + s["down"] for s in counted_back.values())}


def table(results: dict[str, Any], rate: str, units: int, machine: str) -> str:
    from scripts.thin_link import parse_rate

    per_s = parse_rate(rate)
    lines = [f"`scripts/bench_rollout --units {units} --rate {rate}`, {machine}, "
             f"{dt.date.today().isoformat()}. Release N = the demo's FP32 build, N+1 = its INT8 build (same model, "
             "only the model layer differs). One thin link per unit (scripts/thin_link.py, each direction).", "",
             "| transport | release | bytes per unit | layers sent / kept | time to whole fleet | vs full |",
             "|---|---|---|---|---|---|"]
    for transport, r in results.items():
        full = r["first"]["bytes_per_unit_max"]
        delta = r["delta"]["bytes_per_unit_max"]
        lines.append(f"| {transport} | N, first install (full speed) | {full / 1e6:.1f} MB | "
                     f"{r['first']['layers_sent']} / {r['first']['layers_reused']} | {r['first']['fleet_s']:.0f} s "
                     f"(through {rate}: {full / per_s / 60:.0f} min per unit, computed) | 1x |")
        lines.append(f"| {transport} | N+1, full image through {rate} (computed, as before) | {full / 1e6:.1f} MB | all | "
                     f"{full / per_s / 60:.0f} min per unit | 1x |")
        lines.append(f"| {transport} | N+1, model-only, through {rate} | {delta / 1e6:.3f} MB | "
                     f"{r['delta']['layers_sent']} / {r['delta']['layers_reused']} | {r['delta']['fleet_s']:.0f} s "
                     f"(transfer {r['delta']['transfer_s_max']:.1f} s) | {full / max(delta, 1):.0f}x less |")
        lines.append(f"| {transport} | rollback to N, through {rate} | {r['rollback']['bytes_per_unit_max']} B | 0 / all | "
                     f"{r['rollback']['fleet_s']:.0f} s | - |")
    where = {"load": "in front of each unit's engine socket: the archive plus the Engine API calls",
             "pull": "in front of the registry, one per unit: what each unit's engine downloaded"}
    lines += ["", "Link byte counts (what scripts/thin_link.py forwarded, all units together): " + "; ".join(
        f"{t} ({where.get(t, '')}): model-only release {r['link_bytes_delta'] / 1e6:.2f} MB, deploy counted "
        f"{r['delta']['bytes_total'] / 1e6:.2f} MB; rollback {r['link_bytes_rollback'] / 1e3:.0f} kB"
        for t, r in results.items())]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, default=10)
    parser.add_argument("--rate", default="2mbit")
    parser.add_argument("--workspace", type=Path, default=ROOT / "demo-out" / "workspace")
    parser.add_argument("--transports", default="load,pull")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "rollout")
    parser.add_argument("--benchmarks", type=Path, default=None, help="Replace the bench_rollout section of this file.")
    args = parser.parse_args()
    why = can_start_engines() or Registry.missing()
    if why:
        raise SystemExit(why)
    if not (args.workspace / "registry.db").is_file():
        raise SystemExit(f"no demo workspace at {args.workspace}: run scripts/demo first (or pass --workspace)")
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="tcb", dir="/tmp"))
    workspace = tmp / "ws"
    shutil.copytree(args.workspace, workspace, ignore=shutil.ignore_patterns("tmp"))  # the demo's stays untouched
    transports = [t for t in args.transports.split(",") if t]
    names = {t: [f"{t}-{i}" for i in range(1, args.units + 1)] for t in transports}
    every = [n for group in names.values() for n in group]
    registry = Registry(tmp / "registry").start()
    results: dict[str, Any] = {}
    try:
        for ref in (RELEASE_N, RELEASE_N1):
            image = tc(workspace, "package", ref, "--target", "x86-64-cpu", "--base-image",
                       "toolchain/runtime-base:bookworm", "--push", registry.address)
            print(f"packaged {ref}: {image['image_id'][:19]}, pushed {image['push']['reference']}", file=sys.stderr)
        print(f"starting {len(every)} unit engines", file=sys.stderr)
        engines = start_engines(tmp / "units", every)
        for transport in transports:
            results[transport] = run_transport(transport, workspace, {n: engines[n] for n in names[transport]},
                                               registry, tmp, args.rate)
            stop_engines(tmp / "units", names[transport])
    finally:
        registry.stop()
        stop_engines(tmp / "units", every)
        shutil.rmtree(tmp, ignore_errors=True)
    machine = f"{os.cpu_count()}-core {platform.machine()} {platform.processor() or ''}".strip()
    text = table(results, args.rate, args.units, machine)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    (args.out / "table.md").write_text(text + "\n")
    print(text)
    if args.benchmarks is not None:
        current = args.benchmarks.read_text()
        if MARK_BEGIN in current and MARK_END in current:
            head, rest = current.split(MARK_BEGIN, 1)
            current = head + MARK_BEGIN + "\n" + text + "\n" + MARK_END + rest.split(MARK_END, 1)[1]
        else:
            current += f"\n## Fleet rollout through thin links (`scripts/bench_rollout`, issue 14)\n\n{MARK_BEGIN}\n{text}\n{MARK_END}\n"
        args.benchmarks.write_text(current)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fleet-size benchmark: a model-only release pulled by 10, 25 and 50 simulated units, ``--parallel K``.

Every unit is a real dockerd on this machine (tests/docker/fleet_sim.py); the registry is Debian's
docker-registry on loopback; units pull by digest (``transfer = "pull"``). For each fleet size N:

1. untimed: the units new at this size get a first release (the whole image: each engine must fetch the
   ~600 MB base layers once), pulled in parallel;
2. timed: a new model-only release (only the model layer differs) to all N units in one ``toolchain
   deploy --parallel K``: wall time, the deploy process's CPU time (user + system, its children
   included) and peak RSS (``wait4``), each unit's own seconds (mean, max) and wall time per unit.

Releases are the tiny test ONNX model with different weights (v1, v2, ...): what is timed is the rollout
machinery (connect, inspect, pull of one small layer, start, health check, switch), not the image size.

Each fleet of N mixes unix-socket units with ``ssh://`` units (every ``--ssh-every``-th unit is reached through
its own OpenSSH server on loopback, tests/ssh_server.py, host keys pinned) and, unless ``--no-faults``, counts
three faulty units among its N: ``hung`` (a socket that accepts and never answers), ``gone`` (nothing listens)
and ``sick`` (a real engine whose new release never gets healthy: ``serve_args`` the service refuses). They
must be reported while the rest are updated.

Usage: python scripts/bench_fleet.py [--sizes 10,25,50] [--parallel 8] [--ssh-every 5] [--no-faults]
       [--out /tmp/bench_fleet_section.md]
Needs root, dockerd, docker-registry, openssh-server and ``toolchain/runtime-base:bookworm`` on $DOCKER_HOST.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.docker.fleet_sim import (  # noqa: E402 - the repository root is on the path only now
    Registry, can_start_engines, mute_socket, start_engines, stop_engines, unit_ports,
)
from tests.ssh_server import SshServer, fleet_client, start_sshd  # noqa: E402
from tests.ssh_server import unavailable_reason as no_sshd  # noqa: E402

FAULTY = ("hung", "gone", "sick")
BASE_IMAGE = os.environ.get("TOOLCHAIN_TEST_BASE_IMAGE", "toolchain/runtime-base:bookworm")


def tc(workspace: Path, *args: str, check: bool = True, env: dict[str, str] | None = None) -> dict[str, Any]:
    """``toolchain --json ARGS`` as a measured child: its JSON, plus wall, CPU seconds and peak RSS (wait4)."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:
        child = subprocess.Popen([sys.executable, "-m", "toolchain", "--workspace", str(workspace), "--json", *args],
                                 stdout=out_f, stderr=err_f, cwd=ROOT,
                                 env={**(env or os.environ), "OMP_NUM_THREADS": "1"})
        _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage (its children included)
        child.returncode = code = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - started
        out_f.seek(0)
        err_f.seek(0)
        out, err = out_f.read(), err_f.read()
    try:
        payload = json.loads(out) if out.strip() else {}
    except ValueError:
        payload = {}
    if check and code != 0:
        failed = [f"{u.get('unit')}: {u.get('result')}: {u.get('message')}" for u in payload.get("units", [])
                  if u.get("result") not in ("deployed", "unchanged")]
        raise SystemExit(f"toolchain {' '.join(args)} failed ({code}):\n{err.decode()[-3000:]}\n" + "\n".join(failed))
    payload["_wall_s"], payload["_exit"] = wall, code
    payload["_cpu_s"], payload["_rss_mb"] = usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024
    return payload


def write_fleet(path: Path, engines: dict[str, str], ports: dict[str, int], registry: str, *, sick: str = "") -> Path:
    """The fleet file; the unit named ``sick`` gets ``serve_args`` its service refuses (its release never gets healthy)."""
    text = (f'[defaults]\ntarget = "x86-64-cpu"\ncameras = ["synthetic:64x64@2"]\nhealth_timeout_s = 300\n'
            f'transfer = "pull"\nregistry = "{registry}"\n')
    for name, url in engines.items():
        text += f'\n[[unit]]\nname = "{name}"\nurl = "{url}"\nhttp_port = {ports[name]}\n'
        if name == sick:
            text += 'serve_args = ["--no-such-option"]\n'
    path.write_text(text)
    return path


def write_section(args: argparse.Namespace, rows: list[dict[str, Any]]) -> str:
    """The Markdown section of the rows so far, written to ``--out`` (after each fleet size: a cut run keeps them)."""
    machine = args.machine or f"{os.cpu_count()}-core {platform.machine()}"
    lines = ["## A fleet of 50 (`scripts/bench_fleet`, issue 26)", "",
             f"`scripts/bench_fleet --sizes {args.sizes} --parallel {args.parallel} --ssh-every {args.ssh_every}"
             f"{'' if args.faults else ' --no-faults'}`, {machine}, "
             f"{dt.date.today().isoformat()}. Every unit a real dockerd on this machine, `transfer = \"pull\"` by digest "
             "from a loopback docker-registry; each unit first got release v1 (untimed: the whole image), then the timed "
             "model-only release (only the model layer differs) went to the whole fleet in one `toolchain deploy`. "
             + (f"One unit in {args.ssh_every} is reached as `ssh://ALIAS` through its own OpenSSH server (host key "
                "pinned, its own user key), the rest on unix sockets. " if args.ssh_every else "")
             + ("Three of each fleet's N units are faulty: `hung` (its socket accepts and never answers), `gone` "
                "(nothing listens) and `sick` (a real engine whose new release is given `serve_args` the service "
                "refuses, so it never gets healthy); they must be reported while the others are updated. "
                if args.faults else "")
             + "CPU and peak RSS are the deploy process's own (wait4: user + system, children included); the units' "
             "engines and containers run on the same machine and compete with it for the cores. A unit's own time "
             "and the bytes are over the updated units.", "",
             "| units | via ssh | --parallel | result | wall time | per unit (wall / N) | a unit's own time (mean / max) | "
             "workstation CPU | peak RSS | bytes per unit | layers sent / kept | faulty units reported as |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        result = ", ".join(f"{n} {k}" for k, n in sorted(r["counts"].items()))
        cpu, rss = f"{r['cpu_s']:.1f} s", f"{r['rss_mb']:.0f} MB"
        faulty = "; ".join(f"{u['unit']}: {u['result']} after {u['seconds']:.1f} s" for u in r["faulty"]) or "-"
        lines.append(f"| {r['units']} | {r['ssh']} | {r['parallel']} | {result} (exit {r['exit']}) | {r['wall_s']:.1f} s | "
                     f"{r['wall_s'] / r['units']:.2f} s | {r['unit_s_mean']:.1f} / {r['unit_s_max']:.1f} s | {cpu} | {rss} | "
                     f"{r['bytes_per_unit'] / 1e3:.1f} kB | {r['layers']} | {faulty} |")
    text = "\n".join(lines) + "\n"
    args.out.write_text(text)
    return text


ENGINE_DISK_BYTES = 1_300_000_000
"""What one unit engine holds once its first release is in (the base image's layers, unpacked): measured 1.3 GB."""


def disk_shortfall(folder: Path, units: int) -> str:
    """Why ``folder`` cannot hold ``units`` engines (each :data:`ENGINE_DISK_BYTES` plus 10% to spare), or ""."""
    needed = int(units * ENGINE_DISK_BYTES * 1.1)
    free = shutil.disk_usage(folder).free
    if free >= needed:
        return ""
    return (f"{units} unit engines need about {needed / 1e9:.0f} GB under {folder} ({ENGINE_DISK_BYTES / 1e9:.1f} GB each "
            f"after their first release), and only {free / 1e9:.0f} GB is free: free some space (old CI clones, "
            "benchmark folders) or run smaller --sizes")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,25,50")
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--install-parallel", type=int, default=4, help="Units at once for the untimed first installs.")
    parser.add_argument("--ssh-every", type=int, default=5, help="Every K-th unit is reached over ssh:// (0: none).")
    parser.add_argument("--no-faults", dest="faults", action="store_false",
                        help="No faulty units (by default three of each fleet's units are hung, gone and sick).")
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_fleet_section.md"))
    parser.add_argument("--machine", default="", help="How to describe this machine in the table's heading.")
    args = parser.parse_args()
    why = can_start_engines() or Registry.missing() or (no_sshd() if args.ssh_every else "")
    if why:
        raise SystemExit(why)
    sizes = sorted(int(s) for s in args.sizes.split(",") if s)
    short = disk_shortfall(Path("/tmp"), sizes[-1])
    if short:
        raise SystemExit(short)
    from tests.onnx_fixtures import register_tiny_onnx
    from toolchain.workspace import Workspace

    tmp = Path(tempfile.mkdtemp(prefix="tbf", dir="/tmp"))
    ws = tmp / "ws"
    versions = [f"v{i}" for i in range(1, len(sizes) + 2)]
    with Workspace(ws) as workspace:
        for seed in range(len(versions)):
            register_tiny_onnx(workspace, tmp / f"m{seed}", seed=seed)
    registry = Registry(tmp / "registry")
    (tmp / "registry").mkdir()
    registry.start()
    healthy = sizes[-1] - (len(FAULTY) if args.faults else 0)
    names = [f"u{i:02d}" for i in range(1, healthy + 1)]
    ports = unit_ports([*names, *FAULTY])
    engines: dict[str, str] = {}  # name -> the engine's unix socket
    sshd: dict[str, SshServer] = {}  # alias -> the OpenSSH server in front of that unit's engine
    rows: list[dict[str, Any]] = []
    images: list[str] = []
    mute, held = mute_socket(tmp / "hung.sock") if args.faults else (None, [])
    try:
        for version in versions:
            tc(ws, "build", f"tiny-onnx@{version}", "--target", "x86-64-cpu")
            image = tc(ws, "package", f"tiny-onnx@{version}", "--target", "x86-64-cpu", "--base-image", BASE_IMAGE,
                       "--push", registry.address)
            images.append(image["image_id"])
            print(f"packaged tiny-onnx@{version}: {image['image_id'][:19]}", file=sys.stderr)
        for step, size in enumerate(sizes):
            members = names[:size - (len(FAULTY) if args.faults else 0)] + (["sick"] if args.faults else [])
            new = [n for n in members if n not in engines]
            started = time.monotonic()
            engines.update(start_engines(tmp / "units", new))
            urls = dict(engines)
            for index, name in enumerate(names, start=1):
                if name in engines and args.ssh_every and index % args.ssh_every == 0:
                    alias = f"unit-{name}"
                    if alias not in sshd:
                        sshd[alias] = start_sshd(tmp / "sshd" / name, docker_host=engines[name])
                    urls[name] = f"ssh://{alias}"
            client = fleet_client(tmp / f"ssh-client-{size}", sshd)
            print(f"[{size}] started {len(new)} engines in {time.monotonic() - started:.0f} s "
                  f"({len(sshd)} behind sshd)", file=sys.stderr)
            install = write_fleet(tmp / f"fleet-{size}-install.toml", {n: urls[n] for n in members}, ports,
                                  registry.address)
            for attempt in (1, 2, 3):  # untimed set-up: a rerun finishes what a crowded machine left undone
                first = tc(ws, "deploy", "tiny-onnx@v1", "--fleet", str(install), "--parallel",
                           str(args.install_parallel), *[a for n in new for a in ("--unit", n)], env=client.env(),
                           check=attempt == 3)
                print(f"[{size}] first install of {len(new)} units (untimed, try {attempt}): {first['_wall_s']:.0f} s, "
                      f"{first.get('counts')}", file=sys.stderr)
                if first["_exit"] == 0:
                    break
                for unit in first.get("units", []):
                    if unit.get("result") not in ("deployed", "unchanged"):
                        print(f"  {unit.get('unit')}: {unit.get('result')}: {unit.get('message')}", file=sys.stderr)
            fleet_units = {n: urls[n] for n in members}
            if args.faults:
                fleet_units |= {"hung": f"unix://{tmp}/hung.sock", "gone": f"unix://{tmp}/gone.sock"}
            fleet = write_fleet(tmp / f"fleet-{size}.toml", fleet_units, ports, registry.address,
                                sick="sick" if args.faults else "")
            release = versions[step + 1]
            timed = tc(ws, "deploy", f"tiny-onnx@{release}", "--fleet", str(fleet), "--parallel", str(args.parallel),
                       check=False, env=client.env())
            units = timed["units"]
            updated = [u for u in units if u["unit"] not in FAULTY]
            seconds = [u["seconds"] for u in updated]
            row = {"units": size, "ssh": sum(1 for n in members if urls[n].startswith("ssh://")),
                   "parallel": args.parallel, "release": release, "exit": timed["_exit"],
                   "counts": timed["counts"], "wall_s": timed["_wall_s"], "cpu_s": timed.get("_cpu_s"),
                   "rss_mb": timed.get("_rss_mb"), "unit_s_mean": statistics.mean(seconds), "unit_s_max": max(seconds),
                   "bytes_per_unit": max(u.get("bytes_sent") or 0 for u in updated),
                   "layers": f"{max(u.get('layers_sent') or 0 for u in updated)} / "
                             f"{min(u.get('layers_reused') or 0 for u in updated)}",
                   "faulty": [{k: u.get(k) for k in ("unit", "result", "seconds", "message")}
                              for u in units if u["unit"] in FAULTY]}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
            write_section(args, rows)
    finally:
        registry.stop()
        if mute is not None:
            mute.close()
        for conn in held:
            conn.close()
        for server in sshd.values():
            server.stop()
        stop_engines(tmp / "units", list(engines))
        shutil.rmtree(tmp, ignore_errors=True)
        import docker

        client = docker.DockerClient(base_url=os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock")
        for image_id in images:
            try:
                client.images.remove(image_id, force=True)
            except docker.errors.DockerException:
                pass
    print(write_section(args, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

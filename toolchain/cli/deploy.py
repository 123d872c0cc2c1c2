"""``toolchain deploy`` and ``toolchain deploy status``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from toolchain.cli.output import app, console, emit, json_option, safe
from toolchain.errors import MissingEnvironmentError, QualityGateError
from toolchain.progress import NullProgress

DEFAULT_PARALLEL = 8  # toolchain.deploy.rollout.DEFAULT_PARALLEL (not imported here: the CLI loads it lazily)

_STYLE = {"deployed": "green", "unchanged": "green", "rolled-back": "yellow", "failed": "red", "refused": "red",
          "unreachable": "magenta", "skipped": "dim"}


class UnitBoard(NullProgress):
    """The rollout as it runs, one row per unit (state, seconds, what it sent or why it failed), on stderr.

    On a terminal: a live table, replaced by the summary table when the rollout ends. Off one (CI logs,
    pipes): one line per unit as it finishes. Nothing with ``--json`` off a terminal. Also a
    :class:`toolchain.progress.Progress` (its phases are the units' states, so those calls do nothing: the
    :class:`~toolchain.progress.NullProgress` ones, except that ``start`` keeps the title).
    """

    def __init__(self, ctx: click.Context) -> None:
        self.enabled = console.is_terminal or not app(ctx).json
        self.live_table = console.is_terminal
        self._lock = threading.Lock()
        self._rows: dict[str, list[Any]] = {}  # unit -> [state, detail, started, seconds]
        self._live: Any = None
        self._title = ""

    def __enter__(self) -> UnitBoard:
        if self.enabled and self.live_table:
            from rich.live import Live

            self._live = Live(get_renderable=self._table, console=console, refresh_per_second=4, transient=True)
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def start(self, description: str, total: int | None) -> None:
        self._title = description

    def state(self, unit: str, state: str, detail: str = "") -> None:
        with self._lock:
            row = self._rows.setdefault(unit, [state, detail, None, None])
            row[0], row[1] = state, detail
            if state == "deploying":
                row[2] = time.monotonic()
            elif state != "queued" and row[2] is not None:
                row[3] = time.monotonic() - row[2]
            done = sum(1 for r in self._rows.values() if r[0] not in ("queued", "deploying"))
            total = len(self._rows)
        if self.enabled and not self.live_table and state not in ("queued", "deploying"):
            style = _STYLE.get(state, "default")
            console.print(f"\\[{done}/{total}] {escape(unit)}: [{style}]{state}[/{style}]"
                          + (f" {safe(detail[:200])}" if detail else ""), highlight=False)

    def _table(self) -> Table:
        with self._lock:
            rows = [(unit, *row) for unit, row in self._rows.items()]
        done = sum(1 for r in rows if r[1] not in ("queued", "deploying"))
        table = Table(title=f"{escape(self._title)}: {done}/{len(rows)} done")
        for column in ("unit", "state", "seconds", "detail"):
            table.add_column(column)
        now = time.monotonic()
        for unit, state, detail, started, seconds in rows:
            style = _STYLE.get(state, "cyan" if state == "deploying" else "dim")
            took = seconds if seconds is not None else (now - started if started is not None else None)
            table.add_row(escape(unit), f"[{style}]{state}[/{style}]", f"{took:.0f}" if took is not None else "",
                          safe(detail[:120]))
        return table


class DeployGroup(click.Group):
    """``deploy REF --fleet F`` runs a rollout; ``deploy status --fleet F`` is a subcommand."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["rollout", *args]
        elif args and args[0].startswith("-") and not any(a in self.commands for a in args) and \
                not {"-h", "--help"} & set(args):
            args = ["rollout", *args]
        return super().parse_args(ctx, args)


@click.group(cls=DeployGroup)
def deploy() -> None:
    """Roll a packaged model out to roadside units, and see what runs where.

    \b
    toolchain deploy MODEL@ALIAS --fleet fleet.toml [--canary N] [--parallel K]
    toolchain deploy rollback --fleet fleet.toml [--unit U]
    toolchain deploy status --fleet fleet.toml [--lineage]
    """


@deploy.command("rollout")
@click.argument("ref", metavar="MODEL@ALIAS")
@click.option("--fleet", "fleet", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="fleet.toml: units with name, url, target, cameras.")
@click.option("--canary", type=int, default=0, show_default=True,
              help="The first N units go first (plus units with canary = true); a failed canary stops the rollout.")
@click.option("--parallel", type=int, default=DEFAULT_PARALLEL, show_default=True,
              help="Units deployed at once (each mostly waits on its link, engine and health check).")
@click.option("--unit", "units", multiple=True, help="Only this unit (repeatable).")
@click.option("--insecure", is_flag=True, help="Allow plain, unencrypted tcp:// engine URLs (closed test networks).")
@click.option("--image-tar", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="`docker save` tarball of the image to load on units (default: package --save's, else exported).")
@click.option("--from", "source_host", default=None, metavar="URL",
              help="Engine that holds the packaged image (default: where package built it, else $DOCKER_HOST).")
@click.option("--health-timeout", "health_timeout_s", type=float, default=None,
              help="Seconds a new container may take to become healthy (default: per unit, 120).")
@json_option
@click.pass_context
def rollout(ctx: click.Context, ref: str, fleet: Path, canary: int, parallel: int, units: tuple[str, ...], insecure: bool,
            image_tar: Path | None, source_host: str | None, health_timeout_s: float | None) -> None:
    """Deploy MODEL@ALIAS (or an image record) to every unit of the fleet.

    \b
    Per unit: check its target and CPU architecture, send only the image layers the unit lacks (docker
    load through the Engine API of a partial archive, or a pull by digest from the registry `package
    --push` filled; a dropped link is retried), start the new container (NVIDIA runtime on Jetson) next to the old one, wait for its
    HEALTHCHECK, then stop the old one (kept as toolchain-MODEL-previous). A release that does not become
    healthy is removed and the old container keeps serving (rolled-back). Unreachable units (nothing
    listens, or the engine does not answer within 30 s) are reported; the others go on. While it runs,
    each unit's state is shown (queued, deploying, then its result); a summary table follows. Each unit's outcome is a `deployment` record. Rerunning finishes an interrupted
    rollout. Exit 0 when every unit runs the release, 3 when one failed or was rolled back, 5 when the
    only problem is unreachable units.
    """
    from toolchain.deploy.rollout import DeployConfig, deploy as run_deploy

    config = DeployConfig(ref=ref, fleet=fleet, canary=canary, parallel=parallel, units=units, insecure=insecure,
                          image_tar=image_tar, source_host=source_host, health_timeout_s=health_timeout_s)
    with app(ctx).open_workspace() as workspace, UnitBoard(ctx) as board:
        report = run_deploy(workspace, config, board, on_state=board.state)

    emit(ctx, report.to_json(), _render(report))
    _exit_for(report, ref)


def _render(report: Any) -> Callable[[Console], None]:
    def render(out: Console) -> None:
        title = "rollback" if report.action == "rollback" else f"deployment {report.deployment} of {escape(report.ref)}"
        table = Table(title=title)
        for column in ("unit", "target", "result", "port", "sent", "layers", "seconds", "message"):
            table.add_column(column)
        for unit in report.units:
            style = _STYLE.get(unit.result, "")
            moved = unit.transfer
            sent = f"{moved.bytes_sent / 1e6:.2f} MB {moved.transport}" if moved.transport != "none" else "0"
            layers = f"{moved.layers_sent} new, {moved.layers_reused} kept" if moved.layers_sent or moved.layers_reused else ""
            table.add_row(unit.unit + (" (canary)" if unit.canary else ""), unit.target,
                          f"[{style}]{unit.result}[/{style}]", str(unit.http_port or ""), sent, layers,
                          f"{unit.seconds:.1f}", safe(unit.message[:300]))
        out.print(table)
        if report.stopped:
            out.print(f"[red]{escape(report.stopped)}[/red]")
        if report.unrecorded:
            out.print(f"[yellow]{escape(report.recording_problem())}[/yellow]")

    return render


def _exit_for(report: Any, ref: str) -> None:
    unrecorded = report.recording_problem()
    if report.ok and not unrecorded:
        return
    error: Exception
    if report.ok:
        error = MissingEnvironmentError(unrecorded)
    else:
        counts = ", ".join(f"{n} {result}" for result, n in sorted(report.counts().items()))
        bad = [u for u in report.units if not u.ok and u.result not in ("unreachable", "skipped")]
        also = f"; also, {unrecorded}" if unrecorded else ""
        if bad:
            error = QualityGateError(f"not every unit runs {ref} ({counts}); see the messages above, fix, and rerun the "
                                     f"same command (units already done are left as they are){also}")
        else:
            error = MissingEnvironmentError(f"{counts}: bring the unreachable units up and rerun the same command "
                                            f"(units already done are left as they are){also}")
    error.reported_json = True  # type: ignore[attr-defined]  # main() then writes no second document
    raise error


@deploy.command("rollback")
@click.option("--fleet", "fleet", type=click.Path(dir_okay=False, path_type=Path), required=True, help="fleet.toml.")
@click.option("--unit", "units", multiple=True, help="Only this unit (repeatable).")
@click.option("--model", default=None, help="The model to roll back (default: the one each unit serves).")
@click.option("--parallel", type=int, default=DEFAULT_PARALLEL, show_default=True, help="Units at once.")
@click.option("--insecure", is_flag=True, help="Allow plain, unencrypted tcp:// engine URLs.")
@click.option("--health-timeout", "health_timeout_s", type=float, default=None,
              help="Seconds the restored container may take to become healthy (default: per unit).")
@json_option
@click.pass_context
def rollback_command(ctx: click.Context, fleet: Path, units: tuple[str, ...], model: str | None, parallel: int,
                     insecure: bool, health_timeout_s: float | None) -> None:
    """Switch units back to the release they served before the current one, with no transfer.

    \b
    Each unit keeps the images of its last `retention` releases (fleet file, default 2) and tags them
    toolchain-releases/MODEL:rTIME. The previous one is started next to the current container and must
    pass the same health check before the current one stops; a unit that kept no earlier release says
    so. Rolling back twice returns to the release rolled back from. Exit codes as for a rollout.
    """
    from toolchain.deploy.rollout import RollbackConfig, rollback

    config = RollbackConfig(fleet=fleet, units=units, model=model, parallel=parallel, insecure=insecure,
                            health_timeout_s=health_timeout_s)
    with app(ctx).open_workspace() as workspace, UnitBoard(ctx) as board:
        report = rollback(workspace, config, board, on_state=board.state)
    emit(ctx, report.to_json(), _render(report))
    _exit_for(report, "the previous release")


def _publish_text(publish: dict[str, Any] | None) -> str:
    """A unit's publishing in a cell: broker up or down, messages waiting and the oldest's age, evictions, error."""
    if not publish:
        return ""
    text = "up" if publish.get("connected") else "DOWN"
    depth, age = publish.get("spool_depth") or 0, publish.get("oldest_unsent_age_s")
    text += f", {depth} queued" + (f" (oldest {age:.0f} s)" if depth and age is not None else "")
    evicted = sum((publish.get("evicted") or {}).values()) + (publish.get("lost") or 0)
    if evicted:
        text += f", {evicted} evicted/lost"
    return text + (f": {str(publish['error'])[:120]}" if publish.get("error") else "")


@deploy.command("status")
@click.option("--fleet", "fleet", type=click.Path(dir_okay=False, path_type=Path), required=True, help="fleet.toml.")
@click.option("--unit", "units", multiple=True, help="Only this unit (repeatable).")
@click.option("--lineage", is_flag=True, help="Print each running artifact's lineage from its container labels.")
@click.option("--insecure", is_flag=True, help="Allow plain, unencrypted tcp:// engine URLs.")
@json_option
@click.pass_context
def status(ctx: click.Context, fleet: Path, units: tuple[str, ...], lineage: bool, insecure: bool) -> None:
    """What runs on each unit: containers, health, model and artifact from their labels, last deployment."""
    from toolchain.deploy.rollout import fleet_status

    if app(ctx).has_registry():  # status reads units; the registry only adds their last deployment
        with app(ctx).open_workspace() as workspace:
            rows = fleet_status(workspace, fleet, units=units, insecure=insecure)
    else:
        rows = fleet_status(None, fleet, units=units, insecure=insecure)

    def render(out: Console) -> None:
        table = Table(title=f"fleet {escape(str(fleet))}")
        for column in ("unit", "target", "arch", "container", "status", "health", "model", "artifact", "port",
                       "publish", "last deployment", "last transfer"):
            table.add_column(column)
        for row in rows:
            last = row.get("last_deployment") or {}
            last_text = f"{last.get('action') or ''} {last.get('result', '')} {last.get('finished_at', '')}".strip()
            moved = (f"{(last.get('bytes_sent') or 0) / 1e6:.2f} MB {last.get('transport')}, "
                     f"{last.get('layers_sent') or 0} layer(s), {last.get('transfer_s') or 0:.1f} s"
                     if last.get("transport") else "")
            if not row["reachable"]:
                why = f": {safe(row['error'][:240])}" if row["error"] else ""
                table.add_row(row["unit"], row["target"], "", "", f"[magenta]unreachable[/magenta]{why}", "", "", "", "",
                              "", last_text)
                continue
            if row["error"]:
                table.add_row(row["unit"], row["target"], safe(row.get("architecture", "")), "",
                              f"[red]{safe(row['error'][:200])}[/red]", "", "", "", "", "",
                              last_text, moved)
            elif not row["containers"]:
                table.add_row(row["unit"], row["target"], safe(row.get("architecture", "")), "(none)", "", "", "", "", "",
                              "", last_text, moved)
            for c in row["containers"]:
                # Everything here was read from the unit (container names, labels): it may hold terminal escapes.
                arch = safe(c.get("architecture") or row.get("architecture", "")) + (" (emulated)" if c.get("emulated") else "")
                table.add_row(row["unit"], row["target"], arch, safe(c["name"]), safe(c["status"]), safe(c["health"]),
                              safe(c["model"] or ""), safe((c["artifact"] or "")[:12]), safe(c["http_port"] or ""),
                              safe(_publish_text(c.get("publish"))), safe(last_text), moved)
        out.print(table)
        if lineage:
            for row in rows:
                for c in row["containers"]:
                    out.print(f"[bold]{row['unit']} {safe(c['name'])}[/bold] ({safe(c['status'])}):")
                    for node in c["lineage"]:
                        role = f" ({safe(node.get('role'))})" if node.get("role") else ""
                        out.print(f"  {safe(node.get('kind'))} {safe(node.get('ref'))} {safe(str(node.get('id', ''))[:12])}{role}")

    emit(ctx, {"fleet": str(fleet), "units": rows}, render)

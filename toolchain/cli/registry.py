"""``toolchain registry``: list, show, lineage, alias, resolve, verify, gc, export (to MLflow), copy (to another store)."""

from __future__ import annotations

import json

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from toolchain.cli.output import app, console, emit, emit_failure, json_option, progress_for
from toolchain.registry.records import RECORD_KINDS

_KIND = click.Choice(RECORD_KINDS)


@click.group()
def registry() -> None:
    """Records, lineage, aliases per target, blob verification and garbage collection.

    References: an id or unique prefix, NAME (latest version), NAME@vN, NAME@ALIAS.
    """


def _short(value: object, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if isinstance(value, str) and len(value) == 64:
        text = value[:12]
    return text if len(text) <= width else text[: width - 1] + "…"


def _summary_text(summary: dict) -> str:
    return "  ".join(f"{k}={_short(v, 40)}" for k, v in summary.items())


@registry.command("list")
@click.option("--kind", type=_KIND, default=None, help="Only records of this kind.")
@click.option("--name", default=None, help="Only records of this name.")
@json_option
@click.pass_context
def list_command(ctx: click.Context, kind: str | None, name: str | None) -> None:
    """List records (oldest first) with their versions and aliases."""
    from toolchain.registry.ops import list_records

    with app(ctx).open_workspace() as workspace:
        rows = list_records(workspace, kind=kind, name=name)

    def render(out: Console) -> None:
        # One line per record and its summary below: readable at any terminal width.
        width = max((len(r["kind"]) for r in rows), default=0)
        for r in rows:
            name = ", ".join(r["versions"]) or r["name"]
            aliases = f"  [cyan]{escape(', '.join(r['aliases']))}[/cyan]" if r["aliases"] else ""
            out.print(f"{r['id'][:12]}  {r['kind']:<{width}}  [bold]{escape(name)}[/bold]  "
                      f"[dim]{r['created_at'][:16].replace('T', ' ')}[/dim]{aliases}", soft_wrap=True)
            if r["summary"]:
                out.print(f"    [dim]{escape(_summary_text(r['summary']))}[/dim]")
        out.print(f"{len(rows)} records; details: `toolchain registry show REF`, lineage: `toolchain registry lineage REF`")

    emit(ctx, {"records": rows}, render)


@registry.command("show")
@click.option("--target", default=None, help="Target whose alias NAME@ALIAS means (aliases are per target).")
@click.argument("ref")
@click.option("--kind", type=_KIND, default=None, help="Kind of record REF names (when a name is used by several kinds).")
@json_option
@click.pass_context
def show_command(ctx: click.Context, target: str | None, ref: str, kind: str | None) -> None:
    """Show one record: body, versions, aliases, inputs, dependants and blobs."""
    from toolchain.registry.ops import show_record

    with app(ctx).open_workspace() as workspace:
        info = show_record(workspace, ref, kind=kind, target=target)

    def render(out: Console) -> None:
        out.print(f"[bold]{info['kind']} {escape(info['ref'])}[/bold]  {info['id']}")
        out.print(f"created {info['created_at']} by {escape(info['created_by'])} (toolchain {info['toolchain_version']})")
        if info["versions"]:
            out.print(f"versions: {', '.join(info['versions'])}")
        for a in info["aliases"]:
            out.print(f"alias: {escape(a['name'])}@{escape(a['alias'])}" + (f" --target {a['target']}" if a["target"] else ""))
        for label, rows in (("made from", info["inputs"]), ("used by", info["used_by"])):
            for r in rows:
                out.print(f"{label}: {r['kind']} {escape(r['ref'])} ({escape(r['role'])})")
        for b in info["blobs"]:
            state = f"{b['size']:,} bytes" if b["present"] else "[red]MISSING[/red]"
            out.print(f"blob {b['role']}: {b['sha256'][:12]} {state}")
        out.print_json(json.dumps(info["body"], default=str))

    emit(ctx, info, render)


@registry.command("lineage")
@click.option("--target", default=None, help="Target whose alias NAME@ALIAS means (aliases are per target).")
@click.argument("ref")
@click.option("--kind", type=_KIND, default=None, help="Kind of record REF names.")
@json_option
@click.pass_context
def lineage_command(ctx: click.Context, target: str | None, ref: str, kind: str | None) -> None:
    """Walk from REF (an engine, ONNX, model ...) back to the dataset version: the ONNX, quantization
    calibration set, model, training run and config, with the evaluations and benchmarks of each."""
    from toolchain.registry.lineage import lineage

    with app(ctx).open_workspace() as workspace:
        tree = lineage(workspace, ref, kind=kind, target=target)
    payload = tree.to_json()

    def render(out: Console) -> None:
        def label(node: dict) -> str:
            role = f"[dim]{escape(node['role'])}:[/dim] " if node["role"] else ""
            text = f"{role}[bold]{node['kind']}[/bold] {escape(node['ref'])}"
            if node.get("seen"):
                return text + " [dim](shown elsewhere)[/dim]"
            return text + f"  [dim]{escape(_summary_text(node['summary']))}[/dim]"

        def add(parent: Tree, node: dict) -> None:
            branch = parent.add(label(node))
            for m in node.get("measurements", []):
                branch.add(f"[green]{m['kind']}[/green] {escape(m['ref'])}  [dim]{escape(_summary_text(m['summary']))}[/dim]")
            for child in node.get("inputs", []):
                add(branch, child)

        root = Tree(label(payload["root"]))
        for m in payload["root"]["measurements"]:
            root.add(f"[green]{m['kind']}[/green] {escape(m['ref'])}  [dim]{escape(_summary_text(m['summary']))}[/dim]")
        for child in payload["root"]["inputs"]:
            add(root, child)
        out.print(root)

    emit(ctx, payload, render)


@registry.command("alias")
@click.argument("name")
@click.argument("alias", required=False)
@click.option("--to", "to", default=None, help="vN, NAME@vN, an id prefix, NAME@OTHER_ALIAS, or 'previous' (roll back).")
@click.option("--target", default="", help="Hardware target the alias is for (default: all targets).")
@click.option("--kind", type=_KIND, default="model", show_default=True, help="Kind of record the alias names.")
@click.option("--reason", default="", help="Why (kept in the history).")
@click.option("--remove", is_flag=True, help="Remove the alias (kept in the history).")
@click.option("--history", is_flag=True, help="Show every change of NAME's aliases: who, when, from what to what.")
@json_option
@click.pass_context
def alias_command(ctx: click.Context, name: str, alias: str | None, to: str | None, target: str, kind: str, reason: str,
                  remove: bool, history: bool) -> None:
    """Point NAME@ALIAS at a version (per target), show NAME's aliases, or their --history.

    \b
    toolchain registry alias highway-cls production --target jetson-orin-nano --to v7
    toolchain registry alias highway-cls production --target jetson-orin-nano --to previous
    toolchain registry alias highway-cls --history
    """
    from toolchain.errors import UsageError
    from toolchain.registry.aliases import AliasConfig, alias_history, current_aliases, set_alias

    with app(ctx).open_workspace() as workspace:
        if history:
            if to is not None or remove:
                raise UsageError("--history only shows changes; drop --to/--remove")
            rows = alias_history(workspace, name=name, kind=kind, alias=alias, target=target or None)
            _emit_history(ctx, name, rows)
            return
        if to is None and not remove:
            rows = [r for r in current_aliases(workspace, name=name, kind=kind)
                    if (alias is None or r["alias"] == alias) and (not target or r["target"] == target)]
            _emit_current(ctx, name, rows)
            return
        if alias is None:
            raise UsageError("name the alias to set: `toolchain registry alias NAME ALIAS --to vN`")
        result = set_alias(workspace, AliasConfig(name=name, alias=alias, to=to, target=target, kind=kind,
                                                  reason=reason, remove=remove))

    def render(out: Console) -> None:
        c = result.change
        where = f" for {c.target}" if c.target else " (all targets)"
        out.print(f"{escape(c.name)}@{escape(c.alias)}{where}: {escape(result.old_ref or '(unset)')} -> "
                  f"{escape(result.new_ref or '(removed)')}  by {escape(c.by)} at {c.at}")
        for w in result.warnings:
            out.print(f"[yellow]warning:[/yellow] {escape(w)}")

    emit(ctx, result.to_json(), render)


def _emit_history(ctx: click.Context, name: str, rows: list[dict]) -> None:
    def render(out: Console) -> None:
        table = Table(title=f"alias history of {name}", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
        for column in ("when", "who", "alias", "target", "from", "to", "reason"):
            table.add_column(column, overflow="fold")
        for r in rows:
            table.add_row(r["at"][:23], escape(r["by"]), escape(r["alias"]), r["target"] or "(all)",
                          escape(r["from_ref"] or "-"), escape(r["to_ref"] or "(removed)"), escape(r["reason"]))
        out.print(table)

    emit(ctx, {"name": name, "history": rows}, render)


def _emit_current(ctx: click.Context, name: str, rows: list[dict]) -> None:
    def render(out: Console) -> None:
        if not rows:
            out.print(f"{escape(name)} has no aliases; set one with `toolchain registry alias {escape(name)} ALIAS --to vN`")
        for r in rows:
            out.print(f"{escape(name)}@{escape(r['alias'])}" + (f" --target {r['target']}" if r["target"] else " (all targets)")
                      + f" -> {escape(r['ref'] or '')}")

    emit(ctx, {"name": name, "aliases": rows}, render)


@registry.command("resolve")
@click.argument("ref")
@click.option("--target", required=True, help="Hardware target (see `toolchain targets list`).")
@click.option("--kind", type=_KIND, default="model", show_default=True, help="Kind of record REF names.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default=None,
              help="Only builds of this precision (default: the fastest matching one).")
@json_option
@click.pass_context
def resolve_command(ctx: click.Context, ref: str, target: str, kind: str, precision: str | None) -> None:
    """The build for --target that REF (NAME@ALIAS, NAME@vN ...) stands for; refused (exit 5) when no build
    matches the target's TensorRT / JetPack / compute capability / architecture."""
    from toolchain.registry.aliases import resolve_for_target

    with app(ctx).open_workspace() as workspace:
        result = resolve_for_target(workspace, ref, target, kind=kind, precision=precision)
        path = str(workspace.blobs.path(result.blob)) if result.blob else ""
    payload = {**result.to_json(), "path": path}

    def render(out: Console) -> None:
        via = ""
        if result.alias_target is not None:
            via = f" via alias for {result.alias_target or 'all targets'}"
        out.print(f"{escape(ref)}{via} -> {result.source.kind} {escape(result.source_ref)} -> "
                  f"[bold]build {escape(result.build_ref)}[/bold] for {result.target} ({result.build.body.get('precision')})")
        out.print(f"path: {escape(path)}" + ("" if result.blob_present else "  [red]MISSING: run `toolchain registry verify`[/red]"))
        for w in result.warnings:
            out.print(f"[yellow]warning:[/yellow] {escape(w)}")

    emit(ctx, payload, render)


@registry.command("verify")
@click.option("--target", default=None, help="Target whose alias NAME@ALIAS means (aliases are per target).")
@click.argument("ref", required=False)
@click.option("--kind", type=_KIND, default=None, help="Kind of record REF names.")
@json_option
@click.pass_context
def verify_command(ctx: click.Context, target: str | None, ref: str | None, kind: str | None) -> None:
    """Re-hash every referenced blob (or those of REF and its lineage); exit 4 if any is missing or altered."""
    from toolchain.registry.verify import verify

    with app(ctx).open_workspace() as workspace:
        report = verify(workspace, ref, kind=kind, target=target)

    def render(out: Console) -> None:
        for p in report.problems:
            users = ", ".join(f"{k} {n or i[:12]} ({r})" for i, k, n, r in p.records) or "no record"
            detail = f" (now hashes to {p.detail[:12]})" if p.problem == "altered" else (f" ({p.detail})" if p.detail else "")
            out.print(f"[red]{p.problem}[/red] {p.sha256[:12]}{escape(detail)}: used by {escape(users)}")
        status = "[green]ok[/green]" if report.passed else f"[red]{len(report.problems)} failed[/red]"
        out.print(f"verified {report.checked} blobs ({report.bytes:,} bytes) of {escape(report.scope)} in {report.seconds:.2f}s: {status}")

    if report.passed:
        emit(ctx, report.to_json(), render)
        return
    emit_failure(ctx, report.to_json(), render, report.error())


@registry.command("gc")
@click.option("--dry-run", is_flag=True, help="Only report what would be deleted.")
@click.option("--grace", default="1h", show_default=True,
              help="Keep unreferenced blobs and temp files younger than this (a concurrent writer's fresh blob): 0, 90s, 30m, 2h, 1d.")
@click.option("--force", is_flag=True, help="Delete even when the registry references no blob at all (an emptied registry).")
@json_option
@click.pass_context
def gc_command(ctx: click.Context, dry_run: bool, grace: str, force: bool) -> None:
    """Delete blobs no record references and temporary files left by crashed writers."""
    from toolchain.registry.gc import GcConfig, gc, parse_duration

    config = GcConfig(dry_run=dry_run, grace_seconds=parse_duration(grace), force=force)
    with app(ctx).open_workspace() as workspace:
        report = gc(workspace, config)

    def render(out: Console) -> None:
        verb = "would delete" if report.dry_run else "deleted"
        out.print(f"{verb} {len(report.removed)} unreferenced blobs and {len(report.tmp_removed)} temporary files "
                  f"({report.bytes_removed:,} bytes); kept {report.referenced} referenced of {report.blobs_total} blobs, "
                  f"{len(report.kept_recent)} unreferenced and {report.tmp_kept_recent} temporary files younger than "
                  f"{report.grace_seconds:g}s")

    emit(ctx, report.to_json(), render)


@registry.command("export")
@click.option("--mlflow", "tracking_uri", required=True, envvar="MLFLOW_TRACKING_URI", show_envvar=True, metavar="URI",
              help="The MLflow tracking server to mirror into: http(s)://HOST:PORT (credentials in it are never printed).")
@click.argument("ref", required=False)
@click.option("--kind", type=click.Choice(("model", "run", "evaluation")), default=None,
              help="Kind of record REF names (when a name is used by several kinds).")
@click.option("--target", default=None, help="Target whose alias NAME@ALIAS means (aliases are per target).")
@click.option("--experiment", default=None,
              help="Put every run into this MLflow experiment (default: one experiment per model name).")
@json_option
@click.pass_context
def export_command(ctx: click.Context, tracking_uri: str, ref: str | None, kind: str | None, target: str | None,
                   experiment: str | None) -> None:
    """Mirror REF (a model with its training run, search trials and evaluations; a run; an evaluation), or
    everything, into an MLflow tracking server: runs with params, per-epoch metrics and trials as child runs,
    evaluations with their plots, registered model versions with lineage tags and the aliases. Idempotent:
    a second export changes nothing. The registry stays the source of truth; exit 5 if MLflow is unreachable.

    \b
    toolchain registry export --mlflow http://127.0.0.1:5000 highway-edgenet@candidate
    """
    from toolchain.mlflow_mirror import ExportConfig, export_to_mlflow

    config = ExportConfig(tracking_uri=tracking_uri, ref=ref, kind=kind, target=target, experiment=experiment)
    human = not app(ctx).json

    def progress(line: str) -> None:
        if human:
            console.print(f"[dim]mirroring {escape(line)}[/dim]")

    with app(ctx).open_workspace() as workspace:
        report = export_to_mlflow(workspace, config, progress=progress)

    def render(out: Console) -> None:
        for item in report.items:
            if item.action != "unchanged":
                out.print(f"{item.action:>9}  {item.kind:<16} {escape(item.ref)}  [dim]{escape(item.mlflow)}[/dim]")
        for warning in report.warnings:
            out.print(f"[yellow]warning:[/yellow] {escape(warning)}")
        c = report.counts
        out.print(
            f"{escape(report.scope)} -> MLflow {escape(report.tracking_uri)}: "
            f"runs {c['runs']['created']} created, {c['runs']['unchanged']} unchanged, {c['runs']['updated']} updated, "
            f"{c['runs']['replaced']} replaced; model versions {c['model_versions']['created']} created, "
            f"{c['model_versions']['unchanged']} unchanged; aliases {c['aliases']['set']} set, "
            f"{c['aliases']['removed']} removed ({report.seconds:.1f}s)" + ("" if report.changed else "; nothing changed")
        )

    emit(ctx, report.to_json(), render)


@registry.command("copy")
@click.option("--to", "to", required=True, metavar="URI",
              help="The registry to copy into: postgresql://USER@HOST:PORT/DB (password in PGPASSWORD or ~/.pgpass; "
                   "never printed) or sqlite:///PATH/registry.db. Created or migrated when new; merged into when not.")
@click.option("--blobs", "blobs", metavar="DIR", default=None,
              help="Blob store the copy's records will use (must exist); blobs are copied there when it is not the "
                   "source's. Default: the directory of a --to .../registry.db, else the source's blob store (shared, "
                   "nothing copied). The source's own is the global --blobs, before `registry`.")
@json_option
@click.pass_context
def copy_command(ctx: click.Context, to: str, blobs: str | None) -> None:
    """Copy this workspace's whole registry into another store (records with lineage and blob refs, versions,
    aliases with their full history, the image index) with ids, creation times and authors unchanged, and its
    blobs where the copy keeps them elsewhere (re-hashed, published atomically). Rerun after a crash to finish;
    what is already there is not copied again. Exit 4 if the destination contradicts the source (nothing of
    that batch written) or source blobs are missing; 5 if the destination is unreachable.

    \b
    toolchain registry copy --to postgresql://ci@db.example:5432/toolchain --blobs /mnt/team/blobs
    toolchain --workspace laptop-ws registry copy --to sqlite:///backup/ws/registry.db
    """
    from toolchain.blobs import blob_dir
    from toolchain.errors import InputNotFoundError
    from toolchain.registry.copy import CopyConfig, copy_registry

    config = CopyConfig(to=to, blobs=blob_dir(blobs) if blobs else None)
    options = app(ctx)
    if not options.has_registry():
        raise InputNotFoundError(
            f"there is no registry in {options.workspace_path} to copy; name the workspace with the global "
            "--workspace DIR (or --registry URI) before `registry`: toolchain --workspace DIR registry copy --to URI"
        )
    with options.open_workspace() as workspace, progress_for(ctx) as progress:
        report = copy_registry(workspace, config, progress=progress)

    def render(out: Console) -> None:
        table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
        for column in ("table", "copied", "already there", "kept destination's"):
            table.add_column(column, justify="left" if column == "table" else "right")
        for name, count in report.tables.items():
            table.add_row(name, f"{count.copied:,}", f"{count.already_present:,}", f"{count.kept_destination:,}")
        out.print(table)
        if report.blobs is None:
            out.print(f"blobs: none copied, the copy uses the source's blob store {escape(report.destination_blobs)}")
        else:
            b = report.blobs
            out.print(f"blobs: {b.copied:,} copied ({b.bytes_copied:,} bytes), {b.already_present:,} already in "
                      f"{escape(report.destination_blobs)}"
                      + (f", [red]{len(b.missing)} missing, {len(b.altered)} altered in the source[/red]"
                         if not report.complete else ""))
        out.print(f"{escape(report.source)} -> {escape(report.destination)} in {report.seconds:.1f}s; "
                  f"check it with `{escape(report.use_hint())}`")

    if report.complete:
        emit(ctx, report.to_json(), render)
        return
    emit_failure(ctx, report.to_json(), render, report.error())

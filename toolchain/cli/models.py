"""``toolchain models``: list and inspect model recipes."""

from __future__ import annotations

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from toolchain.cli.output import emit, json_option


@click.group()
def models() -> None:
    """List and inspect model recipes (built-in catalog plus $TOOLCHAIN_MODELS)."""


@models.command("list")
@json_option
@click.pass_context
def list_command(ctx: click.Context) -> None:
    """List the model recipes `train --model NAME` accepts."""
    from toolchain.models.recipe import list_recipes

    rows = [recipe.summary() for recipe in list_recipes()]

    def render(console: Console) -> None:
        table = Table(title="model recipes")
        for column in ("name", "architecture", "input", "width"):
            table.add_column(column, no_wrap=True)
        table.add_column("description", ratio=1, overflow="fold")
        for r in rows:
            name = f"{r['name']} *" if r["default"] else r["name"]
            description = escape(r["description"]) if r["builtin"] else f"{escape(r['description'])} [dim]({escape(r['source'])})[/dim]"
            table.add_row(name, r["architecture"], f"{r['input_size']} px", f"{r['width']:g}", description)
        console.print(table)
        console.print("* default.  Details: `toolchain models show NAME`; add your own recipes with TOOLCHAIN_MODELS=DIR")

    emit(ctx, {"models": rows}, render)


@models.command("show")
@click.argument("name")
@click.option("--num-classes", type=click.IntRange(1), default=2, show_default=True, help="Head size to count parameters with.")
@json_option
@click.pass_context
def show_command(ctx: click.Context, name: str, num_classes: int) -> None:
    """Show recipe NAME (or a path to a .toml file): size, training defaults, search space."""
    from toolchain.models.recipe import load_recipe
    from toolchain.models.zoo import describe

    info = describe(load_recipe(name), num_classes=num_classes)

    def render(console: Console) -> None:
        console.print(f"[bold]{info['name']}[/bold]  {escape(info['description'])}")
        console.print(f"source {escape(info['source'])}")
        recipe = info["recipe"]
        size = (f"{info['params']:,} parameters ({info['weights_mb']} MB FP32), {info['macs'] / 1e6:.1f} M MACs"
                if info["params"] is not None else escape(info.get("note", "")))
        console.print(f"{info['architecture']} width {recipe['model']['width']:g} dropout {recipe['model']['dropout']:g}, "
                      f"input {info['input_shape']}, {num_classes} classes: {size}")
        console.print(f"normalise mean {recipe['mean']} std {recipe['std']}")
        training = dict(recipe["training"])
        augmentation = training.pop("augmentation")
        table = Table(title="training defaults")
        table.add_column("parameter")
        table.add_column("value")
        for key, value in {**training, **augmentation}.items():
            table.add_row(key, str(value))
        console.print(table)
        if recipe["search"]:
            search = Table(title=f"search space ({info['search_points']} grid points)")
            search.add_column("parameter")
            search.add_column("values")
            for key, values in recipe["search"].items():
                search.add_row(key, ", ".join(str(v) for v in values))
            console.print(search)

    emit(ctx, info, render)

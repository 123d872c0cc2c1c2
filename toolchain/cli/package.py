"""``toolchain package``."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from toolchain.cli.output import app, emit, json_option, progress_for


@click.command()
@click.argument("ref", metavar="MODEL@ALIAS")
@click.option("--target", required=True, help="Hardware target (see `toolchain targets list`).")
@click.option("--tag", "tags", multiple=True, help="Image tag (repeatable). Default: toolchain/MODEL:TARGET-BUILD.")
@click.option("--save", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a `docker save` tarball (and FILE.sha256) for units without registry access.")
@click.option("--base-image", default=None, help="Base image (default: the target profile's runtime_image).")
@click.option("--docker-host", default=None, metavar="URL",
              help="Engine to build on (default $DOCKER_HOST); Jetson images need an arm64 engine (ssh://user@jetson).")
@click.option("--insecure", is_flag=True, help="Allow a plain, unencrypted tcp:// engine URL (closed test networks).")
@click.option("--dockerfile", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Dockerfile (default: the Dockerfile.jetson shipped in the toolchain package).")
@click.option("--python-version", default=None, help="Python of the base image (default: per target).")
@click.option("--port", "http_port", type=int, default=8080, show_default=True, help="Service port inside the container.")
@click.option("--push", "push", default=None, metavar="REGISTRY",
              help="Push the image to REGISTRY (HOST[:PORT]) and record its digest; units with transfer = \"pull\" pull it.")
@click.option("--credentials", type=click.Path(dir_okay=False, path_type=Path), default=None,
              envvar="TOOLCHAIN_CAMERA_CREDENTIALS",
              help="Credentials file (TOML or JSON) whose [registries.\"HOST:PORT\"] table (username, password, ca) "
                   "logs in to the --push registry; keeps the password off the command line (env "
                   "TOOLCHAIN_CAMERA_CREDENTIALS, as for serve). Default: what `docker login` stored.")
@click.option("--deepstream", is_flag=True,
              help="Also put a DeepStream nvinfer config and labels.txt next to the engine (TensorRT targets).")
@click.option("--stand-in-base", is_flag=True,
              help="Assemble a Jetson image over a base without TensorRT/pycuda (proves the assembly; cannot run the engine).")
@json_option
@click.pass_context
def package(ctx: click.Context, ref: str, target: str, tags: tuple[str, ...], save: Path | None, base_image: str | None,
            docker_host: str | None, insecure: bool, dockerfile: Path | None, python_version: str | None,
            http_port: int, push: str | None, credentials: Path | None, deepstream: bool, stand_in_base: bool) -> None:
    """Build the runtime image of MODEL@ALIAS (or NAME@vN, or a build id) for one target.

    \b
    The alias is resolved per target to the build that matches it; the engine blob is re-hashed first.
    The image (Dockerfile.jetson, built through the Docker Engine API) runs `toolchain serve` on that
    engine, carries OCI and org.toolchain.* labels (model, artifact sha256s, target, lineage) and a
    HEALTHCHECK on /healthz. Jetson and aarch64-cpu targets give linux/arm64 images, built on an engine
    that runs arm64 binaries (a unit, or this machine under qemu-user: probed, and recorded as emulated).
    An `image` record linked to the build is kept in the registry.
    """
    from toolchain.package.image import PackageConfig, package as run_package

    config = PackageConfig(ref=ref, target=target, tags=tags, base_image=base_image, save=save, docker_host=docker_host,
                           insecure=insecure, dockerfile=dockerfile, python_version=python_version, http_port=http_port,
                           stand_in_base=stand_in_base, push=push, credentials=credentials, deepstream=deepstream)
    with app(ctx).open_workspace() as workspace, progress_for(ctx) as progress:
        result = run_package(workspace, config, progress)

    def render(out: Console) -> None:
        out.print(f"[bold]image {result.image[:12]}[/bold] {escape(', '.join(result.tags))} ({result.platform}, "
                  f"{result.target})" + (" (cached)" if result.cached else "")
                  + (" [yellow]built under emulation[/yellow]" if result.emulated else ""))
        out.print(f"image id: {result.image_id}")
        out.print(f"model {escape(result.model)}, build {result.build[:12]}, engine sha256 "
                  f"{result.labels['org.toolchain.artifact_sha256'][:12]}")
        if result.save:
            out.print(f"saved: {escape(result.save['path'])} sha256 {result.save['sha256']}")
        if result.push:
            out.print(f"pushed: {escape(result.push['reference'])} ({result.push['layers']} layers, "
                      f"{result.push['bytes'] / 1e6:.1f} MB compressed)")
        for warning in result.warnings:
            out.print(f"[yellow]warning:[/yellow] {escape(warning)}")

    emit(ctx, result.to_json(), render)

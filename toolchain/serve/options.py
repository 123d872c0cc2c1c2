"""Options ``serve`` shares with other commands, defined once: ``--credentials`` (``bench``) and the vehicle
pipeline's ``--line``/``--anchor``/``--detector`` (``count``, ``bench``), with what turns them into config.

They live with the service, not the CLI, because the image's entry point (:mod:`toolchain.serve.__main__`)
runs ``serve`` without the CLI; the CLI's ``bench`` and ``count`` import them from here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

credentials_option = click.option(
    "--credentials", type=click.Path(dir_okay=False, path_type=Path), default=None, envvar="TOOLCHAIN_CAMERA_CREDENTIALS",
    help="JSON (or TOML) file of camera credentials by camera name (--source NAME=URL); keeps passwords off the "
         "command line (env TOOLCHAIN_CAMERA_CREDENTIALS).")
"""``--credentials FILE`` of ``serve`` and ``bench``: one option, one meaning."""


def vehicle_options(*, lines_required: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--line``, ``--anchor``, ``--detector``, ``--detector-class`` and ``--find-every``: one definition for ``serve``,
    ``count`` and ``bench``."""
    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed((
            click.option("--line", "lines", multiple=True, required=lines_required, metavar="[CAMERA/]NAME=x1,y1,x2,y2[:DIR]",
                         help="A counting line in frame pixels (of CAMERA only, with the prefix); DIR (up, down, left, "
                              "right) counts one direction only. Repeatable."),
            click.option("--anchor", type=click.Choice(["centre", "bottom"]), default="centre", show_default=True,
                         help="The point of a vehicle's box judged against lines: its centre, or its bottom centre "
                              "(DeepStream's)."),
            click.option("--detector", default="motion", show_default=True, metavar="motion|ONNX",
                         help="How vehicles are found: motion on a fixed camera, or a detector ONNX (YOLOv8 or SSD "
                              "outputs)."),
            click.option("--detector-class", "detector_classes", type=int, multiple=True,
                         help="With --detector ONNX: only these class ids are vehicles (repeatable; default: all)."),
            click.option("--find-every", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
                         help="Find, follow and count on one frame in N (the others are decoded and pass through): "
                              "2 on a 30 fps camera finds 15 times a second for a quarter to a third less CPU; crossings are "
                              "then up to N-1 frames late."),
        )):
            command = option(command)
        return command
    return decorate


def publish_settings(url: str | None, unit: str | None, spool_dir: Path | None, interval_s: float, max_bytes: int,
                     max_age_s: float) -> dict[str, Any]:
    """``ServeConfig``'s publish, unit and spool_dir from the ``--publish`` options (nothing without ``--publish``)."""
    if not url:
        return {}
    import socket

    from toolchain.publish.config import parse_publish_url
    from toolchain.serve.publishing import CONTAINER_SPOOL_DIR

    if spool_dir is None:
        spool_dir = Path(CONTAINER_SPOOL_DIR)
        if not spool_dir.is_dir():
            spool_dir = Path.home() / ".local" / "state" / "toolchain" / "spool"
    return {"publish": parse_publish_url(url, interval_s=interval_s, max_bytes=max_bytes, max_age_s=max_age_s),
            "unit": unit or socket.gethostname(), "spool_dir": spool_dir}


def vehicle_config(lines: tuple[str, ...], anchor: str, detector: str, detector_classes: tuple[int, ...],
                   find_every: int = 1) -> Any:
    """The :class:`~toolchain.runtime.vehicles.VehicleConfig` of the ``vehicle_options``; None without ``--line``
    (the per-frame mode), where the finder's options would do nothing, so giving them is refused."""
    from toolchain.errors import UsageError
    from toolchain.runtime.vehicles import VehicleConfig

    if not lines:
        if detector != "motion" or detector_classes or find_every != 1:
            raise UsageError("--detector, --detector-class and --find-every choose how the vehicle pipeline finds "
                             "vehicles: add --line NAME=x1,y1,x2,y2 to run it")
        return None

    parsed = [VehicleConfig.parse_line(text) for text in lines]
    return VehicleConfig(lines=tuple(line for camera, line in parsed if not camera),
                         camera_lines=tuple((camera, line) for camera, line in parsed if camera),
                         anchor=anchor, finder=detector, detector_classes=detector_classes, find_every=find_every)

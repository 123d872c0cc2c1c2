"""``fleet.toml``: the roadside units a deployment goes to, parsed into frozen configs with clear errors.

Example::

    [defaults]                     # optional; any unit field except name and url
    network = "host"
    health_timeout_s = 180

    [[unit]]
    name = "a1-km12-north"
    url = "ssh://deploy@10.0.12.7"   # unix://..., ssh://user@host, tcp://host:2376 with TLS
    target = "jetson-orin-nano"
    cameras = ["rtsp://10.0.12.20/stream1", "north=rtsp://10.0.12.21/stream1"]
    canary = true

Unit fields: ``name``, ``url``, ``target``, ``cameras`` (required); ``canary`` (false), ``network``
("host": cameras on the unit's LAN, /metrics scrapable), ``http_port`` (8080; the new container of a
rollout uses ``http_port + 1`` while the old one still serves on ``http_port``, they alternate),
``loop`` (replay video-file cameras), ``mounts`` (``"HOST:CONTAINER[:ro]"``), ``env`` (table),
``runtime`` (default ``nvidia`` for TensorRT targets), ``transfer`` (``load``: ``docker load`` through
the Engine API of an archive of only the layers the unit lacks; ``pull``: the unit pulls the image by
digest from the registry ``package --push`` put it in), ``registry`` (``HOST[:PORT]`` of that registry as
the unit reaches it; default: the address it was pushed to), ``transfer_attempts`` (3: tries when the link
drops), ``compress`` (true: ``load`` archives go gzip-compressed), ``retention`` (2: releases whose images stay on the unit for a rollback without transfer),
``health_timeout_s`` (120), ``serve_args`` (extra ``toolchain serve`` options), ``lines`` (counting lines,
``"[CAMERA/]NAME=x1,y1,x2,y2[:DIR]"`` in frame pixels as ``serve --line`` takes them; the unit then runs the
vehicle pipeline and writes one event per crossing), ``publish`` (send the counts to an MQTT broker through an
on-unit spool: a table ``{ url = "mqtts://broker.example/traffic", interval_s = 60, spool_max_mb = 64,
spool_max_age_h = 168 }`` or just the URL; the broker's username, password and CA go in the ``credentials``
file's ``[broker]`` table; deploy keeps the spool on a volume per model, ``toolchain-<model>-spool``, which
outlives upgrades and rollbacks).

Security settings (see README "Security of roadside units"): ``credentials`` (a TOML or JSON file on
the workstation, relative to the fleet file, with each camera's secret by camera name; deploy puts only
that unit's entries on the unit, in a read-only file of mode 0400 owned by the service user; camera
URLs in ``cameras`` must not carry credentials themselves), ``http_host`` (address /healthz and
/metrics bind; default the loopback, give the unit's LAN address to let a scraper in), ``memory_mb``,
``cpus``, ``pids_limit`` (container limits; default from the target profile), ``read_only`` (root file
system read-only, default true; /tmp is a small tmpfs), ``log_driver`` (``json-file``), ``log_max_size``
(``10m``), ``log_max_file`` (3): the container log rotates, so a unit's disk never fills.

One unit per Docker engine: a unit's containers are named per model (``toolchain-<model>``), so two
units sharing an engine would replace each other's; such a fleet file is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import tomllib

from toolchain.errors import BadInputError, InputNotFoundError
from toolchain.redaction import has_credentials, scrub
from toolchain.runtime.sources import camera_name
from toolchain.targets.profile import load_target

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_FIELDS = {"name", "url", "target", "cameras", "canary", "network", "http_port", "loop", "mounts", "env", "runtime",
           "transfer", "health_timeout_s", "serve_args", "credentials", "http_host", "memory_mb", "cpus", "pids_limit",
           "read_only", "log_driver", "log_max_size", "log_max_file", "registry", "retention", "transfer_attempts", "compress",
           "lines", "publish"}
_SIZE_RE = re.compile(r"^[1-9][0-9]*[kmg]$")
LOG_DRIVERS = ("json-file", "local")
TRANSFERS = ("load", "pull")


@dataclass(frozen=True, kw_only=True)
class Publish:
    """A unit's ``publish`` setting: where ``serve --publish`` sends its counts, and its spool's bounds."""

    url: str
    interval_s: float = 60.0
    spool_max_mb: int = 64
    spool_max_age_h: float = 168.0

    def serve_args(self, unit: str) -> list[str]:
        """The ``toolchain serve`` options that say it (the spool on the unit's spool volume)."""
        from toolchain.serve.publishing import CONTAINER_SPOOL_DIR

        return ["--publish", self.url, "--unit", unit, "--spool", CONTAINER_SPOOL_DIR,
                "--publish-interval", f"{self.interval_s:g}", "--spool-max-bytes", str(self.spool_max_mb << 20),
                "--spool-max-age", f"{self.spool_max_age_h * 3600:g}"]


@dataclass(frozen=True, kw_only=True)
class Unit:
    """One roadside unit."""

    name: str
    url: str
    target: str
    cameras: tuple[str, ...]
    canary: bool = False
    network: str = "host"
    http_port: int = 8080
    loop: bool = False
    mounts: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    runtime: str | None = None
    transfer: str = "load"
    registry: str = ""
    transfer_attempts: int = 3
    compress: bool = True
    retention: int = 2
    health_timeout_s: float = 120.0
    serve_args: tuple[str, ...] = ()
    lines: tuple[str, ...] = ()
    publish: Publish | None = None
    credentials: Path | None = None
    http_host: str = "127.0.0.1"
    memory_mb: int = 0
    cpus: float = 0.0
    pids_limit: int = 0
    read_only: bool = True
    log_driver: str = "json-file"
    log_max_size: str = "10m"
    log_max_file: int = 3

    def limits(self) -> tuple[int, float, int]:
        """``(memory_mb, cpus, pids)`` for the container: the unit's own, else its target profile's."""
        target = load_target(self.target)
        return (self.memory_mb or target.service_memory_mb, self.cpus or target.service_cpus,
                self.pids_limit or target.service_pids)


@dataclass(frozen=True, kw_only=True)
class Fleet:
    """The units of a fleet file, in file order."""

    path: Path
    units: tuple[Unit, ...] = field(default_factory=tuple)

    def unit(self, name: str) -> Unit:
        for unit in self.units:
            if unit.name == name:
                return unit
        raise InputNotFoundError(f"{self.path} has no unit {name!r}; units: {', '.join(u.name for u in self.units)}")


def _where(path: Path, index: int, name: str | None) -> str:
    return f"{path}: unit {index + 1}" + (f" ({name})" if name else "")


def _str_list(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise BadInputError(f"{what} must be a list of non-empty strings")
    return tuple(value)


def _parse_unit(path: Path, index: int, raw: dict[str, Any], defaults: dict[str, Any]) -> Unit:
    name = raw.get("name")
    where = _where(path, index, name if isinstance(name, str) else None)
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise BadInputError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(_FIELDS))}")
    merged = {**defaults, **raw}
    for required in ("name", "url", "target", "cameras"):
        if required not in merged:
            raise BadInputError(f"{where}: '{required}' is missing (every unit needs name, url, target, cameras)")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise BadInputError(f"{where}: name {name!r} must be letters, digits, '.', '_', '-' (it names containers)")
    url = merged["url"]
    if not isinstance(url, str) or "://" not in url:
        raise BadInputError(f"{where}: url {url!r} is not a Docker Engine URL (unix:///path, ssh://user@host, tcp://host:2376)")
    try:
        target = load_target(str(merged["target"])).name
    except Exception as exc:  # noqa: BLE001 - re-raised with the unit named
        raise BadInputError(f"{where}: {exc}") from exc
    cameras = _str_list(merged["cameras"], f"{where}: cameras")
    if not cameras:
        raise BadInputError(f"{where}: cameras is empty; list at least one camera URL")
    for i, camera in enumerate(cameras):
        if has_credentials(camera_name(camera, i)[1]):
            raise BadInputError(
                f"{where}: camera {i + 1} ({scrub(camera)}) carries credentials in its URL, which would show in "
                "`docker inspect` and `ps` on the unit. Name the camera (NAME=URL without credentials) and put its "
                "username/password under [cameras.NAME] in the file the unit's `credentials` field names"
            )
    port = merged.get("http_port", 8080)
    if not isinstance(port, int) or not 1 <= port < 65535:
        raise BadInputError(f"{where}: http_port {port!r} must be a port number below 65535 (port+1 is used too)")
    env = merged.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, (str, int, float, bool)) for v in env.values()):
        raise BadInputError(f"{where}: env must be a table of strings")
    transfer = merged.get("transfer", "load")
    if transfer not in TRANSFERS:
        raise BadInputError(f"{where}: transfer must be one of {', '.join(TRANSFERS)}")
    registry = merged.get("registry", "")
    if not isinstance(registry, str) or "/" in registry or any(c.isspace() for c in registry):
        raise BadInputError(f"{where}: registry must be HOST[:PORT] of a registry the unit reaches (no scheme, no path)")
    for key, default, high in (("transfer_attempts", 3, 20), ("retention", 2, 100)):
        value = merged.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
            raise BadInputError(f"{where}: {key} must be a whole number from 1 to {high}")
    mounts = _str_list(merged.get("mounts", []), f"{where}: mounts") if merged.get("mounts") else ()
    for mount in mounts:
        parts = mount.split(":")
        if len(parts) not in (2, 3) or not parts[0].startswith("/") or not parts[1].startswith("/") or \
                (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            raise BadInputError(f"{where}: mount {mount!r} must be /host/path:/container/path[:ro]")
    timeout = merged.get("health_timeout_s", 120.0)
    if not isinstance(timeout, (int, float)) or timeout <= 0:
        raise BadInputError(f"{where}: health_timeout_s must be a positive number of seconds")
    for flag in ("canary", "loop", "compress"):
        if not isinstance(merged.get(flag, False), bool):
            raise BadInputError(f"{where}: {flag} must be true or false")
    runtime = merged.get("runtime")
    if runtime is not None and not isinstance(runtime, str):
        raise BadInputError(f"{where}: runtime must be a string (e.g. nvidia)")
    security = _security_fields(path, where, merged)
    lines = _lines(where, merged.get("lines", []), cameras)
    publish = _publish(where, merged.get("publish"))
    return Unit(
        name=name, url=url, target=target, cameras=cameras, canary=merged.get("canary", False),
        network=str(merged.get("network", "host")), http_port=port, loop=merged.get("loop", False), mounts=mounts,
        env=tuple(sorted((str(k), str(v)) for k, v in env.items())), runtime=runtime, transfer=transfer,
        registry=registry, transfer_attempts=merged.get("transfer_attempts", 3), retention=merged.get("retention", 2),
        compress=merged.get("compress", True),
        health_timeout_s=float(timeout),
        serve_args=_str_list(merged["serve_args"], f"{where}: serve_args") if merged.get("serve_args") else (),
        lines=lines, publish=publish, **security,
    )


def _lines(where: str, value: Any, cameras: tuple[str, ...]) -> tuple[str, ...]:
    """The unit's counting lines, each checked as ``serve --line`` will read it, cameras named by the unit."""
    from toolchain.errors import UsageError
    from toolchain.runtime.vehicles import VehicleConfig

    lines = _str_list(value, f"{where}: lines") if value else ()
    names = {camera_name(camera, i)[0] for i, camera in enumerate(cameras)}
    parsed = []
    for text in lines:
        try:
            camera, line = VehicleConfig.parse_line(text)
        except UsageError as exc:
            raise BadInputError(f"{where}: lines: {exc}") from exc
        if camera and camera not in names:
            raise BadInputError(f"{where}: line {text!r} is for camera {camera!r}, which is not among the unit's "
                                f"cameras ({', '.join(sorted(names))}); name cameras NAME=URL")
        parsed.append((camera, line))
    try:
        VehicleConfig(lines=tuple(line for camera, line in parsed if not camera),
                      camera_lines=tuple((camera, line) for camera, line in parsed if camera))
    except UsageError as exc:
        raise BadInputError(f"{where}: lines: {exc}") from exc
    return lines


def _publish(where: str, value: Any) -> Publish | None:
    """The unit's ``publish`` (a URL, or a table with ``url`` and the spool's bounds), checked as serve will."""
    from toolchain.publish.config import parse_publish_url

    if value is None:
        return None
    table = {"url": value} if isinstance(value, str) else value
    if not isinstance(table, dict) or not isinstance(table.get("url"), str):
        raise BadInputError(f"{where}: publish must be an mqtt[s]://HOST[:PORT]/PREFIX URL, or a table with url "
                            "(and interval_s, spool_max_mb, spool_max_age_h)")
    unknown = sorted(set(table) - {"url", "interval_s", "spool_max_mb", "spool_max_age_h"})
    if unknown:
        raise BadInputError(f"{where}: publish has unknown key(s) {', '.join(unknown)}; it takes url, interval_s, "
                            "spool_max_mb and spool_max_age_h")
    for key, low in (("interval_s", 1), ("spool_max_mb", 1), ("spool_max_age_h", 0.1)):
        number = table.get(key)
        if number is not None and (isinstance(number, bool) or not isinstance(number, (int, float)) or number < low
                                   or (key == "spool_max_mb" and not isinstance(number, int))):
            raise BadInputError(f"{where}: publish.{key} must be a number of at least {low}"
                                + (" (whole megabytes)" if key == "spool_max_mb" else ""))
    try:
        parse_publish_url(table["url"])
    except BadInputError as exc:
        raise BadInputError(f"{where}: publish: {exc}") from None
    return Publish(url=table["url"], **{k: table[k] for k in ("interval_s", "spool_max_mb", "spool_max_age_h")
                                        if k in table})


def _security_fields(path: Path, where: str, merged: dict[str, Any]) -> dict[str, Any]:
    """Credentials file, HTTP bind address, resource limits, read-only root and log rotation of a unit."""
    out: dict[str, Any] = {}
    credentials = merged.get("credentials")
    if credentials is not None:
        if not isinstance(credentials, str) or not credentials:
            raise BadInputError(f"{where}: credentials must be the path of a TOML/JSON file of camera credentials")
        file = Path(credentials).expanduser()
        out["credentials"] = file if file.is_absolute() else (path.parent / file)
    host = merged.get("http_host", "127.0.0.1")
    if not isinstance(host, str) or not host or any(c.isspace() for c in host):
        raise BadInputError(f"{where}: http_host must be an address such as 127.0.0.1, the unit's LAN address or 0.0.0.0")
    out["http_host"] = host
    for key, kind, low in (("memory_mb", int, 16), ("pids_limit", int, 16), ("cpus", (int, float), 0.01)):
        value = merged.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, kind) or value < low:
                raise BadInputError(f"{where}: {key} must be a number >= {low}")
            out[key] = float(value) if key == "cpus" else value
    if not isinstance(merged.get("read_only", True), bool):
        raise BadInputError(f"{where}: read_only must be true or false")
    out["read_only"] = merged.get("read_only", True)
    driver = merged.get("log_driver", "json-file")
    if driver not in LOG_DRIVERS:
        raise BadInputError(f"{where}: log_driver must be one of {', '.join(LOG_DRIVERS)} (both rotate)")
    size = merged.get("log_max_size", "10m")
    if not isinstance(size, str) or not _SIZE_RE.match(size.lower()):
        raise BadInputError(f"{where}: log_max_size must be a size such as '10m' (k, m or g)")
    files = merged.get("log_max_file", 3)
    if isinstance(files, bool) or not isinstance(files, int) or not 1 <= files <= 100:
        raise BadInputError(f"{where}: log_max_file must be a whole number from 1 to 100")
    out.update(log_driver=driver, log_max_size=size.lower(), log_max_file=files)
    return out


def load_fleet(path: Path) -> Fleet:
    """Parse a fleet file.

    Raises:
        InputNotFoundError: no such file.
        BadInputError: invalid TOML, unknown or missing fields, duplicate unit names.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"fleet file {path} does not exist; write one with [[unit]] tables (see `toolchain deploy --help`)")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise BadInputError(f"{path} is not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - {"unit", "defaults"})
    if unknown:
        raise BadInputError(f"{path}: unknown top-level key(s) {', '.join(unknown)}; use [defaults] and [[unit]]")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict) or {"name", "url"} & set(defaults) or set(defaults) - _FIELDS:
        raise BadInputError(f"{path}: [defaults] may hold unit fields other than name and url")
    raw_units = data.get("unit", [])
    if not isinstance(raw_units, list) or not raw_units:
        raise BadInputError(f"{path} lists no units; add [[unit]] tables with name, url, target, cameras")
    units = tuple(_parse_unit(path, i, raw, defaults) for i, raw in enumerate(raw_units))
    names = [u.name for u in units]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BadInputError(f"{path}: unit name(s) {', '.join(duplicates)} appear more than once")
    engines: dict[str, str] = {}
    for unit in units:
        key = _engine_key(unit.url)
        if key in engines:
            raise BadInputError(
                f"{path}: units {engines[key]} and {unit.name} are on the same Docker engine ({unit.url}); containers are "
                "named per model on an engine, so they would replace each other's. One [[unit]] per engine: list all its "
                "cameras in that unit"
            )
        engines[key] = unit.name
    return Fleet(path=path, units=units)


def _engine_key(url: str) -> str:
    """``url`` without the differences that name the same engine (case of scheme and host, a trailing slash)."""
    parsed = urlsplit(url)
    return urlunsplit((parsed.scheme.lower(), parsed.netloc.lower(), parsed.path.rstrip("/"), "", ""))

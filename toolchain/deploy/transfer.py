"""Put a release's image on a unit, sending only what the unit lacks, counting every byte, retrying a cut link.

Two transports (the fleet file's ``transfer``):

- ``load``: ``docker load`` through the unit's Engine API with an archive of only the layers the unit
  lacks (:mod:`toolchain.deploy.layers`), gzip-compressed unless the unit says ``compress = false``; when the engine will not load such an archive (it does not skip
  layers it holds), the full archive is sent instead and the result says so (``fallback``).
- ``pull``: the unit's engine pulls the image *by digest* from a registry it can reach (``package
  --push``), never by a mutable tag; the engine downloads only the layers it lacks. The bytes are the
  registry's compressed blob sizes of the layers the engine did download (from the pull's own progress
  events), plus the manifest and the config. A registry that wants a login gets the one the fleet's
  ``credentials`` file gives for it (``[registries."HOST:PORT"]``), in the pull request's
  ``X-Registry-Auth`` header alone: nothing of it reaches a container, a label, argv or the environment.
  Its TLS certificate is checked by the unit's engine against ``/etc/docker/certs.d/HOST:PORT/ca.crt`` on
  the unit (the operator puts the CA there; the Engine API cannot).

A link that drops mid-transfer is retried (``transfer_attempts``, waiting 2 s, 4 s...). Which pull errors
are not retried is decided on the structured error, never on words in its message: an HTTP status of
4xx (other than 408, 425 and 429) from the engine (what it answers when the registry said "manifest
unknown", "name unknown" or "denied", or for a bad reference), or an ``errorDetail`` in the pull's
stream whose ``code`` is such a status. Anything else (a 5xx, which is what the engine answers when its
own link to the registry dropped while fetching a manifest; a stream error without a code, which is how
the same drop reads once the pull has begun; a connection reset) is retried. (``docker load`` reports
errors in its stream without a code; there the engine's own refusal messages are recognised, so that a
partial archive an engine will not take falls back to the full one.) Nothing half-sent
ever runs: ``docker load`` of a cut archive loads nothing and a pull registers only complete, checked
layers (a rerun reuses them); the image is judged present only by its id on the unit, after the
transfer, whatever the transfer call said.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from toolchain.errors import MissingEnvironmentError, ToolchainError
from toolchain.redaction import register_secret, scrub

NONE, LOAD_DELTA, LOAD_FULL, PULL = "none", "load-delta", "load-full", "pull"
BACKOFF_S = 2.0
# What an engine says when it refuses an archive (as opposed to a body cut short by the link). `docker load`
# reports its errors in the response stream with no code, so for `load` these words are all there is.
_REFUSALS = ("no such file", "layers length", "mismatch", "invalid", "not found", "no space")
# 4xx answers that are worth another try: a timeout, too early, too many requests.
_RETRIED_4XX = frozenset({408, 425, 429})


def refused_status(status: Any) -> bool:
    """Whether an HTTP status (the engine's, or an ``errorDetail.code``) is a refusal that a retry cannot change."""
    return isinstance(status, int) and not isinstance(status, bool) and 400 <= status < 500 \
        and status not in _RETRIED_4XX


class ImageArchive(Protocol):
    """The release's image as archives (made on first need, shared by every unit of a deployment)."""

    def full(self) -> Path:
        """The whole ``docker save`` tarball (checked against the image record)."""

    def layers(self) -> Any:
        """Its :class:`toolchain.deploy.layers.ImageLayers`."""

    def partial(self, skip: int) -> Path:
        """An archive without the first ``skip`` layer files."""

    def gzipped(self, path: Path) -> Path:
        """``path`` (one of the archives above) compressed with gzip, which ``docker load`` reads as well."""


@dataclass(frozen=True, kw_only=True)
class PushedImage:
    """Where ``package --push`` put the image: a registry, a repository in it, and the manifest's digest.

    Attributes:
        registry: ``HOST[:PORT]`` the image was pushed to (a unit may reach it by another address: its
            ``registry`` field).
        repository: The repository path inside the registry (``toolchain/MODEL``).
        digest: ``sha256:...`` of the image manifest: what units pull, never a tag.
        manifest_size, config_size: Bytes of the manifest and the image config blob.
        layers: ``(digest, size)`` of each compressed layer blob, bottom first.
    """

    registry: str
    repository: str
    digest: str
    manifest_size: int = 0
    config_size: int = 0
    layers: tuple[tuple[str, int], ...] = ()


@dataclass
class TransferStats:
    """What one unit's transfer cost."""

    transport: str = NONE
    bytes_sent: int = 0
    layers_sent: int = 0
    layers_reused: int = 0
    transfer_s: float = 0.0
    attempts: int = 0
    fallback: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"transport": self.transport, "bytes_sent": self.bytes_sent, "layers_sent": self.layers_sent,
                "layers_reused": self.layers_reused, "transfer_s": round(self.transfer_s, 3),
                "transfer_attempts": self.attempts, "transfer_fallback": self.fallback}


class TransferError(MissingEnvironmentError):
    """The image could not be put on the unit; the message says what happened and what to do.

    Attributes:
        stats: What was sent before it failed (bytes that crossed the link count too).
    """

    def __init__(self, message: str, stats: TransferStats | None = None) -> None:
        super().__init__(message)
        self.stats = stats or TransferStats()


class _EngineRefused(Exception):
    """The engine answered, and refused what was sent (not a link problem)."""


class _Counting(io.RawIOBase):
    """A file read through ``requests``' upload, counting the bytes handed over (they crossed the link or died in it)."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self.count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        self.count += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def fileno(self) -> int:  # requests sizes the body (Content-Length) by fstat and tell
        return self._file.fileno()

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._file.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def close(self) -> None:
        self._file.close()
        super().close()


def image_present(client: Any, image_id: str) -> dict[str, Any] | None:
    """The unit's inspect of ``image_id``, or None when it does not have it."""
    import docker.errors

    try:
        return client.api.inspect_image(image_id)
    except docker.errors.ImageNotFound:
        return None


def registry_login(credentials: Path | None, *registries: str) -> Any:
    """The login (a :class:`toolchain.serve.credentials.RegistryCredential`) the credentials file gives for the
    first of ``registries`` it names (the registry as the unit reaches it, then as it was pushed to); or None.

    Raises:
        InputNotFoundError / BadInputError: the file is missing or malformed.
    """
    if credentials is None:
        return None
    from toolchain.serve.credentials import load_registry_credentials

    logins = load_registry_credentials(credentials)
    return next((logins[name] for name in registries if name and name in logins), None)


def transfer_image(client: Any, *, transport: str, image_id: str, tag: str, archive: ImageArchive | None,
                   pushed: PushedImage | None, registry: str = "", attempts: int = 3, compress: bool = True,
                   note: Callable[[str], None] | None = None, login: Any = None,
                   credentials: str = "") -> TransferStats:
    """Put image ``image_id`` on the engine ``client`` unless it has it; what it cost.

    Args:
        transport: ``load`` or ``pull``.
        tag: Tag to give the image on the unit (``docker images``, and so it is never dangling).
        archive: The image's archives (``load``).
        pushed: Where the image was pushed (``pull``).
        registry: The registry as this unit reaches it (default: ``pushed.registry``).
        attempts: Tries when the link drops.
        compress: Send ``load`` archives gzip-compressed (a third of the bytes of a first install).
        note: Progress messages (a retry, a fallback).
        login: The registry's login for a ``pull`` (a ``RegistryCredential`` from the fleet's credentials file):
            sent in the pull request's ``X-Registry-Auth`` header only. None: the Docker SDK's default.
        credentials: The credentials file's path (named in advice when the registry refuses the login).

    Raises:
        TransferError: every attempt failed, the engine refused the image, or what arrived is another image.
    """
    present = image_present(client, image_id)
    if present is not None:
        layers = (present.get("RootFS") or {}).get("Layers") or ()
        return TransferStats(transport=NONE, layers_reused=len(layers))
    if transport == "pull" and pushed is None:
        raise TransferError("the image was never pushed to a registry, so the unit cannot pull it: run `toolchain "
                            "package ... --push REGISTRY` for it (or deploy with transfer = \"load\")")
    if transport == "load" and archive is None:
        raise TransferError("no archive of the image to send (a rollback never transfers: the image is not on the unit "
                            "any more; deploy the release instead)")
    if transport == "load":
        try:  # made once per deployment on the workstation (a docker save of the build engine's image): not link time
            archive.layers()  # type: ignore[union-attr]
        except ToolchainError as exc:
            raise TransferError(f"docker load: {exc}") from exc
    started = time.monotonic()
    stats = TransferStats()
    delta = True
    failures = 0
    while True:
        stats.attempts += 1
        error = ""
        try:
            if transport == "pull":
                assert pushed is not None
                _pull(client, pushed, registry or pushed.registry, stats, login=login, credentials=credentials)
            else:
                assert archive is not None
                _load(client, archive, stats, delta=delta, compress=compress)
        except _EngineRefused as exc:
            if stats.transport == LOAD_DELTA and delta:  # this engine opens layers it holds: send them all
                stats.fallback = f"the engine would not load a partial archive ({str(exc)[:300]}); sent the full archive"
                if note is not None:
                    note(stats.fallback)
                delta = False
                continue
            stats.transfer_s = time.monotonic() - started
            raise TransferError(f"the unit's engine refused the image: {exc}", stats) from exc
        except ToolchainError as exc:  # the archive itself is bad: no retry mends it
            stats.transfer_s = time.monotonic() - started
            raise TransferError(f"{'pull' if transport == 'pull' else 'docker load'}: {exc}", stats) from exc
        except Exception as exc:  # noqa: BLE001 - a dropped link shows as many exception types; judged below
            error = f"{type(exc).__name__}: {exc}"
        up = _link_up(client)
        if up and image_present(client, image_id) is not None:
            break
        if up and not error:
            stats.transfer_s = time.monotonic() - started
            raise TransferError(f"after the transfer the unit has no image {image_id[:19]}: the "
                                + ("registry holds another image under that digest" if transport == "pull"
                                   else "archive holds another image"), stats)
        failures += 1
        if failures >= max(1, attempts):
            stats.transfer_s = time.monotonic() - started
            hint = _registry_hint(registry or pushed.registry, error, login, credentials) \
                if transport == "pull" and pushed is not None and error else ""
            advice = f"{hint[:1].upper()}{hint[1:]}, then rerun" if hint else \
                "Rerun when the link to the unit is back: it sends what is still missing"
            raise TransferError(f"the transfer failed {failures} time(s) ({stats.bytes_sent} bytes sent; last: "
                                f"{scrub(error or 'the link is down')[:300]}); nothing half-sent runs. {advice}", stats)
        delay = BACKOFF_S * failures
        if note is not None:
            note(f"transfer attempt {stats.attempts} failed ({error[:200] or 'link down'}); retrying in {delay:.0f} s")
        time.sleep(delay)
    stats.transfer_s = time.monotonic() - started
    _tag(client, image_id, tag)
    return stats


def _link_up(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001 - any failure to answer is a link down
        return False


def _load(client: Any, archive: ImageArchive, stats: TransferStats, *, delta: bool, compress: bool) -> None:
    """``docker load`` of the archive with only the layers the unit lacks (or all of them)."""
    import docker.errors

    from toolchain.deploy.imagetar import is_compressed
    from toolchain.deploy.layers import held_chains, reusable

    image = archive.layers()
    skip = reusable(image.diff_ids, held_chains(client)) if delta else 0
    path = archive.partial(skip) if skip else archive.full()
    if compress and not is_compressed(path):  # a compressed --image-tar goes as it is: docker load decompresses once
        path = archive.gzipped(path)
    stats.transport = LOAD_DELTA if skip else LOAD_FULL
    stats.layers_reused, stats.layers_sent = skip, len(image.diff_ids) - skip
    body = _Counting(path)
    try:
        # The low-level call returns the engine's answer as a stream; an error inside it is a refusal.
        response = client.api.load_image(body, quiet=True)
        for chunk in response:
            text = chunk if isinstance(chunk, dict) else {}
            if text.get("error"):
                message = str(text["error"])
                if any(word in message for word in _REFUSALS):
                    raise _EngineRefused(message)
                raise ConnectionError(message)
    except docker.errors.APIError as exc:
        if refused_status(exc.status_code) or any(word in str(exc) for word in _REFUSALS):
            raise _EngineRefused(str(exc.explanation or exc)) from exc
        raise
    finally:
        stats.bytes_sent += body.count
        body.close()


_PULL_NEXT = ("check that the unit's `registry` in the fleet file reaches the registry `package --push` filled, "
              "that the unit may pull from it (its login in the fleet's credentials file, [registries.\"HOST:PORT\"]), "
              "and push the image again if the registry lost it")


def _registry_hint(registry: str, error: str, login: Any, credentials: str) -> str:
    """Advice for a pull error that reads as the registry's TLS or login (the words pick advice, never a retry)."""
    from toolchain.package.push import CERTS_D, registry_hint

    hint = registry_hint(registry, error, login=login, credentials=credentials)
    if hint.startswith("the engine does not trust"):
        hint = (f"the unit's engine does not trust the registry {registry}'s TLS certificate: put the CA that signed it "
                f"in {CERTS_D / registry / 'ca.crt'} on the unit, with the unit's provisioning (deploy reaches only the "
                "Engine API, which cannot put it there; the engine reads it at the next pull, no restart)")
    return hint


def _pull(client: Any, pushed: PushedImage, registry: str, stats: TransferStats, *, login: Any = None,
          credentials: str = "") -> None:
    """The unit pulls ``registry/repository@digest``; the layers it downloaded are counted from its events."""
    import docker.errors

    auth = login.auth_config() if login is not None else None
    if login is not None:
        register_secret(login.password)

    stats.transport = PULL
    repository = f"{registry}/{pushed.repository}"
    sizes = {digest.split(":")[-1][:12]: size for digest, size in pushed.layers}
    downloaded: set[str] = set()
    reused: set[str] = set()
    progress: dict[str, int] = {}  # bytes of each layer downloaded so far (a cut download counts what crossed)
    started = False
    where = f"{repository}@{pushed.digest[:19]}"
    try:
        # The login rides in this request's X-Registry-Auth header, and only when the fleet's file gives one.
        # Without one the header is empty: the SDK would otherwise send the workstation's own `docker login`
        # for that registry (~/.docker/config.json) to every unit's engine.
        for event in client.api.pull(repository, tag=pushed.digest, stream=True, decode=True, auth_config=auth or {}):
            if event.get("error") or event.get("errorDetail"):
                # Once the pull has begun the engine reports in the stream, as {"errorDetail": {"code", "message"}}.
                detail = event.get("errorDetail") if isinstance(event.get("errorDetail"), dict) else {}
                message, code = str(detail.get("message") or event.get("error")), detail.get("code")
                if refused_status(code):
                    hint = _registry_hint(registry, message, login, credentials) or _PULL_NEXT
                    raise _EngineRefused(f"pulling {where} was refused (code {code}: {message}); {hint}")
                raise ConnectionError(message)  # no code it is known to mean a refusal by: a link, retried
            layer, status = str(event.get("id", "")), str(event.get("status", ""))
            started = started or status.startswith("Pulling from")
            if status == "Already exists":
                reused.add(layer)
            elif status in ("Download complete", "Pull complete"):
                downloaded.add(layer)
            current = (event.get("progressDetail") or {}).get("current")
            if status == "Downloading" and isinstance(current, int):
                progress[layer] = max(current, progress.get(layer, 0))
    except docker.errors.APIError as exc:
        # Before the stream starts (the manifest fetch) the engine answers with an HTTP status: 404 for "manifest
        # unknown", "name unknown" or "denied" from the registry, 400 for a bad reference, 500 for everything else,
        # a dropped link to the registry included (retried by the caller).
        if refused_status(exc.status_code):
            hint = _registry_hint(registry, str(exc.explanation or exc), login, credentials) or _PULL_NEXT
            raise _EngineRefused(f"pulling {where} was refused (HTTP {exc.status_code}: {exc.explanation or exc}); "
                                 f"{hint}") from exc
        raise
    finally:
        fresh = downloaded - reused
        stats.layers_sent = len(fresh)
        stats.layers_reused = len(sizes) - len(fresh) if sizes else len(reused)
        stats.bytes_sent += sum(sizes.get(layer, progress.get(layer, 0)) for layer in fresh)
        stats.bytes_sent += sum(count for layer, count in progress.items() if layer not in fresh)
        if started:  # the manifest and the config were fetched
            stats.bytes_sent += pushed.manifest_size + pushed.config_size


def _tag(client: Any, image_id: str, tag: str) -> None:
    from toolchain.package.image import split_tag

    if tag:
        repository, name = split_tag(tag)
        client.api.tag(image_id, repository, name)

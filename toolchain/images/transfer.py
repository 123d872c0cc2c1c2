"""Put a release's image on a unit, sending only what the unit lacks, counting every byte, retrying a cut link.

Two transports (the fleet file's ``transfer``):

- ``load``: ``docker load`` through the unit's Engine API with an archive of only the layers the unit
  lacks (:mod:`toolchain.images.load`), gzip-compressed unless the unit says ``compress = false``; when the
  engine will not load such an archive (it does not skip layers it holds), the full archive is sent instead
  and the result says so (``fallback``).
- ``pull``: the unit's engine pulls the image *by digest* from a registry it can reach (``package
  --push``), never by a mutable tag (:mod:`toolchain.images.pull`); the engine downloads only the layers it
  lacks, and the fleet's credentials file gives the registry's login.

A link that drops mid-transfer is retried (``transfer_attempts``, waiting 2 s, 4 s...); a refusal (the
engine answered: :class:`~toolchain.images.outcome.EngineRefused`, told apart by each transport on the
structured error where there is one) is not. Nothing half-sent ever runs: ``docker load`` of a cut archive
loads nothing and a pull registers only complete, checked layers (a rerun reuses them); the image is judged
present only by its id on the unit, after the transfer, whatever the transfer call said.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from toolchain.errors import ToolchainError
from toolchain.images.load import ImageArchive, load_archive
from toolchain.images.outcome import LOAD_DELTA, NONE, EngineRefused, TransferError, TransferStats
from toolchain.images.pull import PushedImage, pull_image, unit_registry_hint
from toolchain.images.tags import split_tag
from toolchain.redaction import scrub

BACKOFF_S = 2.0


def image_present(client: Any, image_id: str) -> dict[str, Any] | None:
    """The unit's inspect of ``image_id``, or None when it does not have it."""
    import docker.errors

    try:
        return client.api.inspect_image(image_id)
    except docker.errors.ImageNotFound:
        return None


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
                pull_image(client, pushed, registry or pushed.registry, stats, login=login, credentials=credentials)
            else:
                assert archive is not None
                load_archive(client, archive, stats, delta=delta, compress=compress)
        except EngineRefused as exc:
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
            hint = unit_registry_hint(registry or pushed.registry, error, login, credentials) \
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


def _tag(client: Any, image_id: str, tag: str) -> None:
    if tag:
        repository, name = split_tag(tag)
        client.api.tag(image_id, repository, name)

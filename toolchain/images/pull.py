"""An engine pulls an image *by digest* from a registry it can reach (``package --push`` put it there), never by
a mutable tag; the engine downloads only the layers it lacks.

The bytes are the registry's compressed blob sizes of the layers the engine did download (from the pull's own
progress events), plus the manifest and the config. A registry that wants a login gets the one the fleet's
``credentials`` file gives for it (``[registries."HOST:PORT"]``), in the pull request's ``X-Registry-Auth``
header alone: nothing of it reaches a container, a label, argv or the environment. Its TLS certificate is
checked by the unit's engine against ``/etc/docker/certs.d/HOST:PORT/ca.crt`` on the unit (the operator puts
the CA there; the Engine API cannot).

Which pull errors are refusals (not retried by :mod:`toolchain.images.transfer`) is decided on the structured
error, never on words in its message: an HTTP status of 4xx (other than 408, 425 and 429) from the engine
(what it answers when the registry said "manifest unknown", "name unknown" or "denied", or for a bad
reference), or an ``errorDetail`` in the pull's stream whose ``code`` is such a status. Anything else (a 5xx,
which is what the engine answers when its own link to the registry dropped while fetching a manifest; a
stream error without a code, which is how the same drop reads once the pull has begun; a connection reset)
is a link that dropped. A pull registers only complete, checked layers (a rerun reuses them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from toolchain.images.outcome import PULL, EngineRefused, TransferStats, refused_status
from toolchain.images.registries import CERTS_D, registry_hint
from toolchain.redaction import register_secret


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


_PULL_NEXT = ("check that the unit's `registry` in the fleet file reaches the registry `package --push` filled, "
              "that the unit may pull from it (its login in the fleet's credentials file, [registries.\"HOST:PORT\"]), "
              "and push the image again if the registry lost it")


def unit_registry_hint(registry: str, error: str, login: Any, credentials: str) -> str:
    """Advice for a pull error that reads as the registry's TLS or login (the words pick advice, never a retry)."""
    hint = registry_hint(registry, error, login=login, credentials=credentials)
    if hint.startswith("the engine does not trust"):
        hint = (f"the unit's engine does not trust the registry {registry}'s TLS certificate: put the CA that signed it "
                f"in {CERTS_D / registry / 'ca.crt'} on the unit, with the unit's provisioning (deploy reaches only the "
                "Engine API, which cannot put it there; the engine reads it at the next pull, no restart)")
    return hint


def pull_image(client: Any, pushed: PushedImage, registry: str, stats: TransferStats, *, login: Any = None,
               credentials: str = "") -> None:
    """The unit pulls ``registry/repository@digest``; the layers it downloaded are counted from its events.

    Raises:
        EngineRefused: the engine (or the registry through it) refused the pull with a 4xx status.
        Exception: anything else (a link that dropped), for the caller to retry.
    """
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
                    hint = unit_registry_hint(registry, message, login, credentials) or _PULL_NEXT
                    raise EngineRefused(f"pulling {where} was refused (code {code}: {message}); {hint}")
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
            hint = unit_registry_hint(registry, str(exc.explanation or exc), login, credentials) or _PULL_NEXT
            raise EngineRefused(f"pulling {where} was refused (HTTP {exc.status_code}: {exc.explanation or exc}); "
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

"""``package --push REGISTRY``: put the image in a registry and record its digest, which units pull.

The engine that built the image pushes it (``REGISTRY/<repository>:<tag>``); the registry then holds it
under the manifest digest the push reports. A ``push`` record linked to the image keeps the registry,
the repository, that digest and the manifest's blob sizes (read back from the registry:
:mod:`toolchain.images.manifest`), so ``deploy`` can have units pull by digest (never by a mutable tag) and
count the bytes each one downloads.

The push itself is the engine's: it gets the file's login in the request's ``X-Registry-Auth`` header (never
argv or the environment) and checks the registry's certificate against its own trust (the CA goes in
``/etc/docker/certs.d/HOST:PORT/ca.crt`` on the engine's machine; Docker skips the check on loopback). A
refused login or certificate is an error whose advice names the table or the CA file to fix
(:func:`toolchain.images.registries.registry_hint`).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from toolchain.errors import MissingEnvironmentError
from toolchain.images.manifest import manifest_sizes
from toolchain.images.registries import check_registry, registry_hint
from toolchain.images.tags import split_tag
from toolchain.redaction import register_secret, scrub
from toolchain.registry import NewRecord

if TYPE_CHECKING:
    from toolchain.registry import Record
    from toolchain.serve.credentials import RegistryCredential
    from toolchain.workspace import Workspace


def push_image(workspace: Workspace, client: Any, image: Record, registry: str,
               login: RegistryCredential | None = None, credentials: str = "") -> Record:
    """Push the image of record ``image`` from engine ``client`` to ``registry``; the ``push`` record.

    Args:
        login: The registry's login (and CA) from the credentials file: the engine's push gets it in the request's
            ``X-Registry-Auth`` header, and reading the manifest back uses it (and the CA) too.
        credentials: The credentials file's path (named in advice; never its content).

    Raises:
        MissingEnvironmentError: the registry cannot be reached, refused the push, or will not let this machine read
            the manifest back (the message says why).
        CorruptStoreError: what the registry serves under the pushed digest is not that manifest.
        BadInputError: the pushed digest is an image index without exactly one manifest for the image's platform.
    """
    registry = check_registry(registry)
    repository, tag = split_tag(image.body["tag"])
    repository = repository.split("/", 1)[1] if "." in repository.split("/")[0] or ":" in repository.split("/")[0] \
        else repository  # a tag that already names a registry: keep only its path
    remote = f"{registry}/{repository}"
    client.api.tag(image.body["image_id"], remote, tag)
    auth = login.auth_config() if login is not None else None
    if login is not None:
        register_secret(login.password)
    digest = ""
    try:
        # The login goes in the request's X-Registry-Auth header, and only when the file gives one: without it the
        # SDK sends what `docker login` stored on this machine.
        for event in client.api.push(remote, tag=tag, stream=True, decode=True,
                                     **({"auth_config": auth} if auth else {})):
            if event.get("error"):
                error = str(event["error"])
                hint = registry_hint(registry, error, login=login, credentials=credentials) or (
                    "check that it runs and that the engine may push there (plain HTTP only on loopback or with "
                    "--insecure-registry on the engine)")
                raise MissingEnvironmentError(f"the registry {registry} refused the push: {scrub(error)}; {hint}")
            aux = event.get("aux") or {}
            digest = str(aux.get("Digest") or digest)
    except MissingEnvironmentError:
        raise
    except Exception as exc:  # noqa: BLE001 - the engine's connection errors, said plainly
        hint = registry_hint(registry, str(exc), login=login, credentials=credentials) or \
            "check the registry and the engine, then rerun"
        raise MissingEnvironmentError(f"pushing to {registry} failed ({type(exc).__name__}: {scrub(exc)}); "
                                      f"{hint}") from exc
    if not digest.startswith("sha256:"):
        raise MissingEnvironmentError(f"the push to {registry} reported no manifest digest; check the registry's log")
    manifest = manifest_sizes(registry, repository, digest, platform=str(image.body.get("platform") or ""), login=login)
    body = {
        "image": image.id, "image_id": image.body["image_id"], "registry": registry, "repository": repository,
        "tag": tag, "digest": digest, "reference": f"{remote}@{digest}",
        "pushed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **manifest,
    }
    record, _, _ = workspace.registry.commit(NewRecord(kind="push", name=remote, body=body, links=((image.id, "image"),)))
    return record

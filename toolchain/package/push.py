"""``package --push REGISTRY``: put the image in a registry and record its digest, which units pull.

The engine that built the image pushes it (``REGISTRY/<repository>:<tag>``); the registry then holds it
under the manifest digest the push reports. A ``push`` record linked to the image keeps the registry,
the repository, that digest and the manifest's blob sizes (read back from the registry's HTTP API:
plain HTTP for a loopback registry, as Docker itself allows, HTTPS otherwise), so ``deploy`` can have
units pull by digest (never by a mutable tag) and count the bytes each one downloads.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from toolchain.errors import BadInputError, MissingEnvironmentError
from toolchain.redaction import scrub
from toolchain.registry import NewRecord, Record
from toolchain.workspace import Workspace

_REGISTRY_RE = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^\[[0-9a-fA-F:]+\](:[0-9]{1,5})?$")
_MANIFEST_TYPES = ("application/vnd.docker.distribution.manifest.v2+json", "application/vnd.oci.image.manifest.v1+json")


def check_registry(registry: str) -> str:
    """``registry`` as ``HOST[:PORT]``.

    Raises:
        BadInputError: a scheme, a path or credentials in it.
    """
    if not _REGISTRY_RE.match(registry or ""):
        shown = "(not shown: it holds credentials)" if "@" in (registry or "") else repr(scrub(registry))
        raise BadInputError(f"--push {shown}: give the registry as HOST[:PORT] (e.g. 127.0.0.1:5000 or "
                            "registry.example.org), without scheme, path or credentials")
    return registry


def _is_loopback(registry: str) -> bool:
    host = registry.rsplit(":", 1)[0] if not registry.startswith("[") else registry[1:registry.index("]")]
    return host in ("localhost", "::1") or host.startswith("127.")


def push_image(workspace: Workspace, client: Any, image: Record, registry: str) -> Record:
    """Push the image of record ``image`` from engine ``client`` to ``registry``; the ``push`` record.

    Raises:
        MissingEnvironmentError: the registry cannot be reached or refused the push (the message says why).
    """
    from toolchain.package.image import split_tag

    registry = check_registry(registry)
    repository, tag = split_tag(image.body["tag"])
    repository = repository.split("/", 1)[1] if "." in repository.split("/")[0] or ":" in repository.split("/")[0] \
        else repository  # a tag that already names a registry: keep only its path
    remote = f"{registry}/{repository}"
    client.api.tag(image.body["image_id"], remote, tag)
    digest = ""
    try:
        for event in client.api.push(remote, tag=tag, stream=True, decode=True):
            if event.get("error"):
                raise MissingEnvironmentError(f"the registry {registry} refused the push: {scrub(event['error'])}; check "
                                              "that it runs and that the engine may push there (plain HTTP only on loopback "
                                              "or with --insecure-registry on the engine)")
            aux = event.get("aux") or {}
            digest = str(aux.get("Digest") or digest)
    except MissingEnvironmentError:
        raise
    except Exception as exc:  # noqa: BLE001 - the engine's connection errors, said plainly
        raise MissingEnvironmentError(f"pushing to {registry} failed ({type(exc).__name__}: {scrub(exc)}); check the "
                                      "registry and the engine, then rerun") from exc
    if not digest.startswith("sha256:"):
        raise MissingEnvironmentError(f"the push to {registry} reported no manifest digest; check the registry's log")
    manifest = _manifest(registry, repository, digest)
    body = {
        "image": image.id, "image_id": image.body["image_id"], "registry": registry, "repository": repository,
        "tag": tag, "digest": digest, "reference": f"{remote}@{digest}",
        "pushed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **manifest,
    }
    record, _, _ = workspace.registry.commit(NewRecord(kind="push", name=remote, body=body, links=((image.id, "image"),)))
    return record


def _manifest(registry: str, repository: str, digest: str) -> dict[str, Any]:
    """The manifest's size and its blobs' sizes, from the registry; empty sizes (with why) if it cannot be read."""
    import requests

    scheme = "http" if _is_loopback(registry) else "https"
    url = f"{scheme}://{registry}/v2/{repository}/manifests/{digest}"
    try:
        response = requests.get(url, headers={"Accept": ", ".join(_MANIFEST_TYPES)}, timeout=30)
        response.raise_for_status()
        data = response.content
        manifest = json.loads(data)
        return {"manifest_size": len(data), "config_size": int(manifest["config"]["size"]),
                "layers": [[layer["digest"], int(layer["size"])] for layer in manifest["layers"]]}
    except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
        return {"manifest_size": 0, "config_size": 0, "layers": [],
                "manifest_note": f"could not read the manifest back ({type(exc).__name__}); deploy counts the bytes "
                                 "from the pull's progress instead"}

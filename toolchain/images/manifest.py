"""The sizes of a pushed image, read back from the registry's HTTP API (distribution spec v2), by digest.

- plain HTTP only for a loopback registry (``localhost``, ``127.0.0.0/8``, ``::1``, judged by
  :mod:`ipaddress`, as Docker itself allows), HTTPS otherwise (:mod:`toolchain.images.registries`);
- by digest, and the bytes that come back must hash to that digest (and to the ``Docker-Content-Digest``
  the registry states), so a proxy or an altered registry cannot slip other sizes, or another image, in;
- an image index or manifest list (what an engine with the containerd image store pushes) is followed to
  the image's platform (``linux/amd64``, ``linux/arm64``), attestations left aside;
- a registry that asks for authentication is answered with the login the credentials file gives for it
  (``package --credentials FILE``: ``[registries."HOST:PORT"]`` with ``username``/``password``, the one the
  engine's push used too), else with the credentials the Docker client has for it (``docker login``:
  ``~/.docker/config.json`` or its credential helper), through the registry's token service or basic auth;
  without them, or when they are refused, it is an error that says so, never a record with empty sizes.
  Only a registry this machine cannot reach, or that does not hold the digest as this machine sees it (a
  remote engine's loopback registry, say), leaves the sizes empty, with a ``manifest_note`` saying why;
  ``deploy`` then counts the pull's progress;
- HTTPS is checked against the file's ``ca`` for the registry when it gives one, else against the CA this
  machine's Docker engine trusts for it (``/etc/docker/certs.d/HOST:PORT/ca.crt``), else the usual CAs; a
  loopback registry with a ``ca`` in the file is read over HTTPS too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from toolchain.errors import BadInputError, CorruptStoreError, MissingEnvironmentError
from toolchain.images.registries import CERTS_D, is_loopback, registry_url
from toolchain.redaction import register_secret, scrub

if TYPE_CHECKING:
    from toolchain.serve.credentials import RegistryCredential

_MANIFEST_TYPES = ("application/vnd.docker.distribution.manifest.v2+json", "application/vnd.oci.image.manifest.v1+json")
_INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
_ACCEPT = ", ".join((*_MANIFEST_TYPES, *_INDEX_TYPES))
_MAX_MANIFEST_BYTES = 4 << 20  # the distribution spec's limit on a manifest
_CHALLENGE_PARAM = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def manifest_sizes(registry: str, repository: str, digest: str, *, platform: str = "",
                   login: RegistryCredential | None = None) -> dict[str, Any]:
    """The manifest's size and its blobs' sizes, read back from the registry by digest.

    Args:
        platform: The image's ``os/architecture[/variant]``; picks the manifest when the digest is an index.
        login: The registry's login and CA from the credentials file (before ``docker login``'s).

    Returns:
        ``manifest_size`` (the index's bytes plus the platform manifest's, what a unit fetches), ``config_size``,
        ``layers`` (``[digest, size]`` each, bottom first), and ``platform_manifest`` when the digest is an index.
        Empty sizes with a ``manifest_note`` only when this machine cannot reach the registry, or the registry it
        reaches does not hold the digest (an error status other than 401/403).

    Raises:
        MissingEnvironmentError: the registry wants credentials this machine does not have, or refuses them.
        CorruptStoreError: the bytes served are not the manifest the digest names.
        BadInputError: the digest is an image index without exactly one manifest for ``platform``.
    """
    import requests

    reader = _Reader(registry, repository, login)
    try:
        data = reader.manifest(digest)
        manifest = _json_object(data, registry, digest)
        sizes: dict[str, Any] = {}
        total = len(data)
        if _is_index(manifest):
            child = _pick_platform(manifest, platform, registry, repository, digest)
            data = reader.manifest(child)
            manifest = _json_object(data, registry, child)
            total += len(data)
            sizes["platform_manifest"] = child
        try:
            sizes.update(config_size=int(manifest["config"]["size"]),
                         layers=[[str(layer["digest"]), int(layer["size"])] for layer in manifest["layers"]])
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptStoreError(
                f"the registry {registry} holds {repository}@{digest[:19]} as a manifest without config and layer "
                f"sizes ({type(exc).__name__}: {exc}); push the image again with an engine that writes image manifests "
                "(Docker 20.10 or later)") from exc
        return {"manifest_size": total, **sizes}
    except (requests.RequestException, _Unread) as exc:
        why = str(exc) if isinstance(exc, _Unread) else \
            f"could not reach {reader.base} from this machine ({type(exc).__name__})"
        if isinstance(exc, requests.exceptions.SSLError):
            why = (f"this machine does not accept the TLS certificate of {reader.base} ({scrub(exc)[-200:]}): give "
                   f"the registry's CA as ca in the credentials file's [registries.\"{registry}\"] table")
        return {"manifest_size": 0, "config_size": 0, "layers": [],
                "manifest_note": f"the manifest was not read back: {why}; deploy counts the bytes from the pull's "
                                 "progress instead"}
    finally:
        reader.close()


def _json_object(data: bytes, registry: str, digest: str) -> dict[str, Any]:
    try:
        body = json.loads(data)
    except ValueError as exc:
        raise CorruptStoreError(f"the registry {registry} served {digest[:19]} as something that is not JSON; check the "
                                "registry (and any proxy in front of it), then push again") from exc
    if not isinstance(body, dict):
        raise CorruptStoreError(f"the registry {registry} served {digest[:19]} as JSON that is not a manifest; check "
                                "the registry, then push again")
    return body


def _is_index(manifest: dict[str, Any]) -> bool:
    return manifest.get("mediaType") in _INDEX_TYPES or ("manifests" in manifest and "layers" not in manifest)


def _pick_platform(index: dict[str, Any], platform: str, registry: str, repository: str, digest: str) -> str:
    """The digest of ``platform``'s manifest in an image index (attestations are not images)."""
    children = index.get("manifests")
    if not isinstance(children, list) or not all(isinstance(c, dict) for c in children):
        raise CorruptStoreError(f"the registry {registry} holds {repository}@{digest[:19]} as an index without a list "
                                "of manifests; push the image again")
    images = [c for c in children if (c.get("annotations") or {}).get("vnd.docker.reference.type")
              != "attestation-manifest" and (c.get("platform") or {}).get("os") != "unknown"]
    wanted = platform.split("/") if platform else []

    def matches(child: dict[str, Any]) -> bool:
        found = child.get("platform") or {}
        have = [found.get("os"), found.get("architecture"), found.get("variant")]
        return all(w == h for w, h in zip(wanted, have)) if wanted else True

    chosen = [c for c in images if matches(c)] if wanted else images
    listed = ", ".join("/".join(str(v) for v in (c.get("platform") or {}).values() if isinstance(v, str)) or "?"
                       for c in images) or "none"
    if len(chosen) != 1:
        raise BadInputError(
            f"{registry}/{repository}@{digest[:19]} is an image index with {len(chosen)} manifests for "
            f"{platform or 'any platform'} (it lists: {listed}); units pull one image: push the image built for one "
            "platform (`toolchain package --target T --push ...`), not a multi-platform index")
    child = chosen[0].get("digest")
    if not isinstance(child, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", child):
        raise CorruptStoreError(f"the image index {digest[:19]} in {registry} names its {platform} manifest by "
                                f"{str(child)[:80]!r}, not a sha256 digest; push the image again")
    return child


class _Unread(Exception):
    """The registry, as this machine reaches it, does not serve the pushed manifest (not an authentication matter)."""


class _Reader:
    """GETs from one repository of a registry, answering its authentication challenge once with Docker's credentials."""

    def __init__(self, registry: str, repository: str, login: RegistryCredential | None = None) -> None:
        import requests

        self.registry, self.repository, self.login = registry, repository, login
        self.base = registry_url(registry, tls=bool(login is not None and login.ca_pem))
        self.session = requests.Session()
        self.authorization: str | None = None
        self.challenged = False
        self.used = False  # whether stored credentials were offered (the error then says they were refused)
        self._ca_file = ""
        # Given with every request: requests lets $REQUESTS_CA_BUNDLE override a session's own `verify`.
        self.verify: bool | str = True
        if login is not None and login.ca_pem:
            handle, self._ca_file = tempfile.mkstemp(prefix="toolchain-registry-ca-", suffix=".pem")
            with os.fdopen(handle, "w") as out:
                out.write(login.ca_pem)
            self.verify = self._ca_file
        elif (CERTS_D / registry / "ca.crt").is_file():  # what this machine's engine trusts for it
            self.verify = str(CERTS_D / registry / "ca.crt")

    def close(self) -> None:
        self.session.close()
        if self._ca_file:
            Path(self._ca_file).unlink(missing_ok=True)

    def manifest(self, digest: str) -> bytes:
        """The manifest ``digest`` names, after checking its bytes hash to it."""
        url = f"{self.base}/v2/{self.repository}/manifests/{digest}"
        response = self.get(url, {"Accept": _ACCEPT})
        if response.status_code in (401, 403):
            from_file = self.login is not None and bool(self.login.username)
            offered = (", with the login of the credentials file" if from_file else
                       ", with the credentials `docker login` stored for it" if self.used else "")
            fix = (f"give the credentials file's [registries.\"{self.registry}\"] an account that may pull "
                   f"{self.repository}" if from_file else
                   f"run `docker login {self.registry}` here (or give its login in a credentials file's "
                   f"[registries.\"{self.registry}\"] table, --credentials FILE) with an account that may pull "
                   f"{self.repository}")
            raise MissingEnvironmentError(
                f"the registry {self.registry} refused to let this machine read {self.repository}@{digest[:19]} back "
                f"(HTTP {response.status_code}{offered}); {fix}, then rerun "
                "the push (the image is already in the registry; nothing is pushed twice)")
        if response.status_code >= 400:
            raise _Unread(f"{self.base} answered HTTP {response.status_code} for {self.repository}@{digest[:19]} right "
                          "after the engine pushed it: this machine may not reach the registry the engine pushed to (a "
                          "remote engine's loopback registry, say)")
        data = b""
        for chunk in response.iter_content(1 << 16):
            data += chunk
            if len(data) > _MAX_MANIFEST_BYTES:
                response.close()
                raise CorruptStoreError(f"the registry {self.registry} served more than {_MAX_MANIFEST_BYTES} bytes for "
                                        f"the manifest {digest[:19]}, more than a manifest may have; check the registry")
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        stated = response.headers.get("Docker-Content-Digest")
        if actual != digest or (stated and stated != digest):
            claimed = f" (and stated {stated[:19]})" if stated and stated != digest else ""
            raise CorruptStoreError(
                f"the registry {self.registry} answered {self.repository}@{digest[:19]} with a manifest whose sha256 is "
                f"{actual[:19]}{claimed}: not the manifest "
                "the digest names (an altered registry, or a proxy or cache in between); check the registry, then push "
                "again")
        return data

    def get(self, url: str, headers: dict[str, str]) -> Any:
        response = self._get(url, headers)
        if response.status_code == 401 and not self.challenged:
            self.challenged = True
            self.authorization = self._answer(response.headers.get("WWW-Authenticate", ""))
            if self.authorization is not None:
                response = self._get(url, headers)
        return response

    def _get(self, url: str, headers: dict[str, str]) -> Any:
        extra = {"Authorization": self.authorization} if self.authorization else {}
        return self.session.get(url, headers={**headers, **extra}, timeout=30, stream=True, verify=self.verify)

    def _answer(self, challenge: str) -> str | None:
        """The Authorization header for the registry's challenge, from Docker's stored credentials; None without them."""
        scheme, _, rest = challenge.strip().partition(" ")
        params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
                  for m in _CHALLENGE_PARAM.finditer(rest)}
        if self.login is not None and self.login.username:
            credentials: dict[str, str] | None = {"username": self.login.username, "password": self.login.password}
        else:
            credentials = _docker_credentials(self.registry)
        self.used = credentials is not None
        if scheme.lower() == "basic":
            if credentials is None or "password" not in credentials:
                return None
            pair = f"{credentials['username']}:{credentials['password']}".encode()
            return "Basic " + base64.b64encode(pair).decode()
        if scheme.lower() != "bearer" or not params.get("realm"):
            return None
        import requests

        try:
            return self._token(params, credentials)
        except (requests.RequestException, ValueError) as exc:
            raise MissingEnvironmentError(
                f"the token service of the registry {self.registry} ({scrub(params['realm'])}) failed "
                f"({type(exc).__name__}: {scrub(exc)}); check the registry's authentication set-up, then rerun the "
                "push") from exc

    def _token(self, params: dict[str, str], credentials: dict[str, str] | None) -> str | None:
        """A bearer token from the registry's token service (Docker's token authentication), with pull scope."""
        realm = params["realm"]
        parts = urlsplit(realm)
        if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback(parts.netloc)):
            raise MissingEnvironmentError(
                f"the registry {self.registry} sends this machine to {scrub(realm)} for a token over plain HTTP; "
                "credentials are only sent over HTTPS (or to loopback): configure the registry's token service with TLS")
        query = {"scope": params.get("scope") or f"repository:{self.repository}:pull"}
        if params.get("service"):
            query["service"] = params["service"]
        auth = None
        if credentials is not None and "password" in credentials:
            auth = (credentials["username"], credentials["password"])
        elif credentials is not None and "identitytoken" in credentials:
            return self._refresh(realm, query, credentials["identitytoken"])
        response = self.session.get(realm, params=query, auth=auth, timeout=30, verify=self.verify)
        if response.status_code in (401, 403):
            return None  # anonymous (or refused) access: the manifest GET then says what to do
        response.raise_for_status()
        try:
            body = response.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise MissingEnvironmentError(f"the token service of {self.registry} ({scrub(realm)}) gave no token; "
                                          "check the registry's authentication set-up")
        register_secret(token)
        return f"Bearer {token}"

    def _refresh(self, realm: str, query: dict[str, str], refresh_token: str) -> str | None:
        """OAuth2 refresh-token grant, for a `docker login` that stored an identity token."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": "toolchain", **query}
        response = self.session.post(realm, data=form, timeout=30, verify=self.verify)
        if response.status_code in (400, 401, 403):
            return None
        response.raise_for_status()
        token = response.json().get("access_token")
        if not isinstance(token, str) or not token:
            return None
        register_secret(token)
        return f"Bearer {token}"


def _docker_credentials(registry: str) -> dict[str, str] | None:
    """The credentials `docker login REGISTRY` stored (config file or credential helper), keys lower-cased; or None."""
    try:
        import docker.auth
    except ImportError:
        return None
    try:
        found = docker.auth.load_config().resolve_authconfig(registry)
    except Exception:  # noqa: BLE001 - an unreadable config or a missing or failing helper: as if there were none
        return None  # (the 401 then says to `docker login`)
    if not found:
        return None
    lowered = {str(k).lower(): str(v) for k, v in found.items() if v}
    for secret in ("password", "identitytoken"):
        register_secret(lowered.get(secret))
    if "password" in lowered and "username" not in lowered:
        return None
    return lowered

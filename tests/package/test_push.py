"""``package --push`` reads the pushed manifest back from the registry: over HTTPS unless the registry is really on
loopback, by digest and checked against it, through an image index to the image's platform, and through the
registry's authentication with the credentials ``docker login`` stored (a refusal is an error, not empty sizes).

The registry here is a small HTTP server on 127.0.0.1 that speaks the distribution API's manifest and token
endpoints; tests/docker has the real ``docker-registry``.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from toolchain.errors import BadInputError, CorruptStoreError, MissingEnvironmentError
from toolchain.images import push as push_module
from toolchain.images.manifest import manifest_sizes
from toolchain.images.registries import is_loopback, registry_url

REPOSITORY = "toolchain/tiny"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
PASSWORD = "s3cret-registry-pw"  # noqa: S105 - a test credential


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _image_manifest(label: str, layers: int = 2) -> bytes:
    return json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1000 + len(label),
                   "digest": _digest(label.encode())},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 100 * (i + 1),
                    "digest": _digest(f"{label}-{i}".encode())} for i in range(layers)],
    }).encode()


class _Registry(http.server.ThreadingHTTPServer):
    """Serves ``manifests`` (digest -> (bytes, media type)) at /v2/REPOSITORY/manifests/DIGEST.

    ``auth``: None (open), ``basic`` or ``bearer`` (a token service at /token that wants the basic credentials).
    ``served``: what to answer instead for a digest (a tampered registry). ``stated``: a Docker-Content-Digest to state.
    """

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.manifests: dict[str, tuple[bytes, str]] = {}
        self.served: dict[str, bytes] = {}
        self.stated: dict[str, str] = {}
        self.auth: str | None = None
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.token = "tok-" + "7" * 20
        self.realm = ""  # the token service the challenge names (default: this server's /token)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def add(self, data: bytes, media_type: str = "application/vnd.docker.distribution.manifest.v2+json") -> str:
        self.manifests[_digest(data)] = (data, media_type)
        return _digest(data)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Registry

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        server = self.server
        server.requests.append((self.path, dict(self.headers)))
        basic = "Basic " + base64.b64encode(f"ci:{PASSWORD}".encode()).decode()
        if self.path.startswith("/token"):
            if self.headers.get("Authorization") != basic:
                return self._send(401)
            return self._send(200, json.dumps({"token": server.token}).encode(), {"Content-Type": "application/json"})
        if server.auth == "basic" and self.headers.get("Authorization") != basic:
            return self._send(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {"WWW-Authenticate": 'Basic realm="r"'})
        if server.auth == "bearer" and self.headers.get("Authorization") != f"Bearer {server.token}":
            challenge = (f'Bearer realm="{server.realm or f"http://{server.address}/token"}",service="reg",'
                         f'scope="repository:{REPOSITORY}:pull"')
            return self._send(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {"WWW-Authenticate": challenge})
        prefix = f"/v2/{REPOSITORY}/manifests/"
        digest = self.path[len(prefix):] if self.path.startswith(prefix) else ""
        if digest not in server.manifests:
            return self._send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
        data, media_type = server.manifests[digest]
        body = server.served.get(digest, data)
        accepted = self.headers.get("Accept", "")
        if media_type in (OCI_INDEX, LIST) and media_type not in accepted:
            return self._send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"index not accepted"}]}')
        self._send(200, body, {"Content-Type": media_type, "Docker-Content-Digest": server.stated.get(digest, digest)})


@pytest.fixture()
def registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[_Registry]:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))  # no credentials unless a test writes some
    server = _Registry()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _login(tmp_path: Path, address: str) -> None:
    """What `docker login ADDRESS` leaves in the config the Docker SDK reads."""
    directory = tmp_path / "docker-config"
    directory.mkdir(exist_ok=True)
    auth = base64.b64encode(f"ci:{PASSWORD}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {address: {"auth": auth}}}))


def test_only_a_loopback_address_or_localhost_gets_plain_http() -> None:
    for loopback in ("127.0.0.1:5000", "127.8.9.10", "localhost:5000", "LOCALHOST", "[::1]:5000",
                     "[::ffff:127.0.0.1]:5000"):
        assert is_loopback(loopback), loopback
        assert registry_url(loopback).startswith("http://")
    for remote in ("127.attacker.example:5000", "127.0.0.1.nip.io:5000", "localhost.attacker.example", "10.0.0.2:5000",
                   "registry.example.org", "[2001:db8::1]:5000", "128.0.0.1"):
        assert not is_loopback(remote), remote
        assert registry_url(remote).startswith("https://")


def test_the_sizes_come_from_the_manifest_the_digest_names(registry: _Registry) -> None:
    data = _image_manifest("amd64")
    digest = registry.add(data)
    sizes = manifest_sizes(registry.address, REPOSITORY, digest)
    assert sizes == {"manifest_size": len(data), "config_size": 1005,
                     "layers": [[_digest(b"amd64-0"), 100], [_digest(b"amd64-1"), 200]]}
    accept = registry.requests[-1][1]["Accept"]
    for media_type in ("application/vnd.docker.distribution.manifest.v2+json",
                       "application/vnd.oci.image.manifest.v1+json", OCI_INDEX, LIST):
        assert media_type in accept


def test_a_manifest_that_does_not_hash_to_its_digest_is_refused(registry: _Registry) -> None:
    digest = registry.add(_image_manifest("amd64"))
    registry.served[digest] = _image_manifest("amd64", layers=1)  # smaller sizes, another image: an altered registry
    with pytest.raises(CorruptStoreError, match="not the manifest the digest names.*push again"):
        manifest_sizes(registry.address, REPOSITORY, digest)
    # the bytes are right but the registry states another digest for them
    honest = registry.add(_image_manifest("arm64"))
    registry.stated[honest] = "sha256:" + "0" * 64
    with pytest.raises(CorruptStoreError, match="stated sha256:000000000000"):
        manifest_sizes(registry.address, REPOSITORY, honest)


@pytest.mark.parametrize("media_type", [OCI_INDEX, LIST])
def test_an_index_is_followed_to_the_images_platform(registry: _Registry, media_type: str) -> None:
    amd64, arm64 = _image_manifest("amd64"), _image_manifest("arm64", layers=3)
    attestation = _image_manifest("provenance", layers=1)
    children = [(amd64, {"os": "linux", "architecture": "amd64"}, {}),
                (arm64, {"os": "linux", "architecture": "arm64", "variant": "v8"}, {}),
                (attestation, {"os": "unknown", "architecture": "unknown"},
                 {"vnd.docker.reference.type": "attestation-manifest"})]
    for data, _, _ in children:
        registry.add(data)
    index = json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": [
        {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "digest": _digest(data), "size": len(data),
         "platform": platform, **({"annotations": annotations} if annotations else {})}
        for data, platform, annotations in children]}).encode()
    digest = registry.add(index, media_type)
    sizes = manifest_sizes(registry.address, REPOSITORY, digest, platform="linux/arm64")
    assert sizes["platform_manifest"] == _digest(arm64) and sizes["manifest_size"] == len(index) + len(arm64)
    assert [size for _, size in sizes["layers"]] == [100, 200, 300] and sizes["config_size"] == 1005
    # a platform the index does not hold is said plainly, with what it does hold
    with pytest.raises(BadInputError, match=r"0 manifests for linux/riscv64 \(it lists: linux/amd64, linux/arm64/v8\)"):
        manifest_sizes(registry.address, REPOSITORY, digest, platform="linux/riscv64")


def test_a_registry_that_wants_credentials_is_an_error_that_says_docker_login(registry: _Registry) -> None:
    registry.auth = "bearer"
    digest = registry.add(_image_manifest("amd64"))
    with pytest.raises(MissingEnvironmentError, match=f"HTTP 401.*docker login {registry.address}"):
        manifest_sizes(registry.address, REPOSITORY, digest)
    registry.auth = "basic"
    with pytest.raises(MissingEnvironmentError, match="HTTP 401"):
        manifest_sizes(registry.address, REPOSITORY, digest)


@pytest.mark.parametrize("scheme", ["bearer", "basic"])
def test_the_credentials_docker_login_stored_answer_the_registry(
        registry: _Registry, tmp_path: Path, scheme: str) -> None:
    registry.auth = scheme
    data = _image_manifest("amd64")
    digest = registry.add(data)
    _login(tmp_path, registry.address)
    sizes = manifest_sizes(registry.address, REPOSITORY, digest)
    assert sizes["manifest_size"] == len(data) and len(sizes["layers"]) == 2
    if scheme == "bearer":  # the token service was asked for pull access to this repository only
        token_request = next(path for path, _ in registry.requests if path.startswith("/token"))
        assert f"scope=repository%3A{REPOSITORY.replace('/', '%2F')}%3Apull" in token_request
    # refused credentials are an error too, and the password is in no message
    _login(tmp_path, registry.address)
    (tmp_path / "docker-config" / "config.json").write_text(json.dumps({"auths": {registry.address: {
        "auth": base64.b64encode(b"ci:wrong-password-1").decode()}}}))
    with pytest.raises(MissingEnvironmentError, match="with the credentials `docker login` stored") as caught:
        manifest_sizes(registry.address, REPOSITORY, digest)
    assert PASSWORD not in str(caught.value) and "wrong-password-1" not in str(caught.value)


def test_credentials_never_go_to_a_token_service_over_plain_http_off_loopback(registry: _Registry, tmp_path: Path) -> None:
    registry.auth = "bearer"
    registry.realm = "http://127.attacker.example/token"
    digest = registry.add(_image_manifest("amd64"))
    _login(tmp_path, registry.address)
    with pytest.raises(MissingEnvironmentError, match="only sent over HTTPS") as caught:
        manifest_sizes(registry.address, REPOSITORY, digest)
    assert PASSWORD not in str(caught.value)
    assert not any(path.startswith("/token") for path, _ in registry.requests)


def test_a_registry_this_machine_cannot_reach_leaves_a_note_not_an_error(registry: _Registry) -> None:
    """A remote engine's loopback registry is not this machine's: the push stands, deploy counts the pull's progress."""
    sizes = manifest_sizes(registry.address, REPOSITORY, "sha256:" + "1" * 64)  # this machine's registry lacks it
    assert sizes["layers"] == [] and "HTTP 404" in sizes["manifest_note"] and "progress" in sizes["manifest_note"]
    closed = registry.address.rsplit(":", 1)[0] + ":1"
    sizes = manifest_sizes(closed, REPOSITORY, "sha256:" + "1" * 64)
    assert sizes["layers"] == [] and "could not reach http://127.0.0.1:1" in sizes["manifest_note"]


def test_push_image_records_the_platform_manifest_and_refuses_without_credentials(
        registry: _Registry, tmp_path: Path) -> None:
    from toolchain.registry import NewRecord
    from toolchain.workspace import Workspace

    data = _image_manifest("amd64")
    digest = registry.add(data)

    class Engine:
        def __init__(self) -> None:
            self.api = self

        def tag(self, image_id: str, repository: str, tag: str) -> None:
            pass

        def push(self, repository: str, tag: str, stream: bool, decode: bool) -> Iterator[dict[str, Any]]:
            yield {"status": "Pushed"}
            yield {"aux": {"Tag": tag, "Digest": digest, "Size": len(data)}}

    with Workspace(tmp_path / "ws") as workspace:
        image, _, _ = workspace.registry.commit(NewRecord(kind="image", name="tiny", body={
            "image_id": "sha256:" + "c" * 64, "tag": "toolchain/tiny:x86-64-cpu-1", "platform": "linux/amd64"}))
        record = push_module.push_image(workspace, Engine(), image, registry.address)
        assert record.body["digest"] == digest and record.body["manifest_size"] == len(data)
        assert record.body["config_size"] == 1005 and "manifest_note" not in record.body
        registry.auth = "bearer"
        with pytest.raises(MissingEnvironmentError, match="docker login"):
            push_module.push_image(workspace, Engine(), image, registry.address)
        assert len(workspace.registry.find(kind="push")) == 1  # nothing recorded with empty sizes


def test_a_real_registry_serves_the_index_and_its_platform_manifest(tmp_path: Path) -> None:
    """Debian's docker-registry answers an OCI index only to a client that accepts one; the sizes are the platform's."""
    from tests.docker.fleet_sim import Registry
    from tests.package.registry_images import upload_image
    from tests.services import skip_or_fail

    missing = Registry.missing()
    if missing:
        skip_or_fail("registry", missing)
    real = Registry(tmp_path / "registry").start()
    try:
        image = upload_image(real.address, REPOSITORY, "hello from a real registry")
        for digest in (image.oci_index, image.manifest_list):
            sizes = manifest_sizes(real.address, REPOSITORY, digest, platform="linux/amd64")
            assert sizes["platform_manifest"] == image.manifest and sizes["layers"] == [list(image.layer)]
            assert sizes["config_size"] == image.config_size and "manifest_note" not in sizes
        plain = manifest_sizes(real.address, REPOSITORY, image.manifest, platform="linux/amd64")
        assert plain["manifest_size"] == len(image.manifest_bytes) and "platform_manifest" not in plain
    finally:
        real.stop()

"""How a transfer judges an engine's error: on its structure (HTTP status, the pull stream's ``errorDetail``), never on
words in the message; and a compressed ``--image-tar`` reaching ``docker load`` as it is.

The engine here is a stand-in at the Docker SDK's boundary: its HTTP errors are made by the SDK's own
``create_api_error_from_http_exception`` from a ``requests`` response, as the SDK raises them, and its pull stream
carries the events the Engine API sends (decoded JSON). The real engine's side is in tests/docker (a registry that
answers "manifest unknown", and a link to it reset while the engine fetches a manifest).
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.test_integrity import _classic, _config, _image_record, _layer, _sha, _write
from toolchain.images import transfer as transfer_module
from toolchain.images.outcome import TransferError
from toolchain.images.pull import PushedImage
from toolchain.images.transfer import transfer_image

IMAGE_ID = "sha256:" + "e" * 64
DIGEST = "sha256:" + "d" * 64
PUSHED = PushedImage(registry="127.0.0.1:5000", repository="toolchain/tiny", digest=DIGEST, manifest_size=500,
                     config_size=900, layers=((("sha256:" + "a" * 64), 1000), (("sha256:" + "b" * 64), 2000)))
RESET = (f'Get "http://127.0.0.1:5000/v2/toolchain/tiny/manifests/{DIGEST}": read tcp 127.0.0.1:51234->127.0.0.1:5000: '
         "read: connection reset by peer")


def _http_error(status: int, message: str) -> Exception:
    """What the Docker SDK raises for an Engine API answer with ``status`` (its own conversion of the response)."""
    import docker.errors
    import requests

    response = requests.Response()
    response.status_code = status
    response._content = json.dumps({"message": message}).encode()
    response.headers["Content-Type"] = "application/json"
    try:
        docker.errors.create_api_error_from_http_exception(requests.HTTPError(response=response))
    except docker.errors.APIError as exc:
        return exc
    raise AssertionError("the SDK raised nothing")


class _Engine:
    """An engine whose pulls follow ``script``: each entry is what one pull call does (raise, or stream events)."""

    def __init__(self, script: list[Callable[[], Iterator[dict[str, Any]]]]) -> None:
        self.script = script
        self.pulls = 0
        self.loaded = False
        self.loads: list[bytes] = []
        self.auth_configs: list[dict[str, Any]] = []
        self.api = self

    # -- the low-level API the transfer calls ----------------------------------------------------------------------
    def inspect_image(self, image_id: str) -> dict[str, Any]:
        import docker.errors

        if not self.loaded:
            raise docker.errors.ImageNotFound(f"No such image: {image_id}")
        return {"Id": image_id, "RootFS": {"Layers": []}}

    def pull(self, repository: str, tag: str, stream: bool, decode: bool,
             auth_config: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        assert (repository, tag, stream, decode) == ("127.0.0.1:5000/toolchain/tiny", DIGEST, True, True)
        # Always given: None would make the SDK send the workstation's own `docker login` to the unit.
        assert auth_config is not None
        self.auth_configs.append(auth_config)
        step = self.script[self.pulls]
        self.pulls += 1
        return step()

    def load_image(self, body: Any, quiet: bool) -> Iterator[dict[str, Any]]:
        self.loads.append(body.read())
        self.loaded = True
        return iter([{"stream": "Loaded image ID: x\n"}])

    def images(self, quiet: bool) -> list[str]:
        return []

    def tag(self, image_id: str, repository: str, tag: str) -> None:
        pass

    def ping(self) -> bool:
        return True


def _fails_with(error: Exception) -> Callable[[], Iterator[dict[str, Any]]]:
    def call() -> Iterator[dict[str, Any]]:
        raise error
    return call


def _streams(*events: dict[str, Any]) -> Callable[[], Iterator[dict[str, Any]]]:
    def call() -> Iterator[dict[str, Any]]:
        yield from events
    return call


def _succeeds(engine_box: list[_Engine]) -> Callable[[], Iterator[dict[str, Any]]]:
    def call() -> Iterator[dict[str, Any]]:
        yield {"status": "Pulling from toolchain/tiny", "id": DIGEST}
        for layer in ("a" * 12, "b" * 12):
            yield {"status": "Pull complete", "id": layer, "progressDetail": {}}
        engine_box[0].loaded = True
        yield {"status": f"Digest: {DIGEST}"}
    return call


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transfer_module, "BACKOFF_S", 0.0)


def _pull(engine: _Engine, notes: list[str] | None = None) -> Any:
    return transfer_image(engine, transport="pull", image_id=IMAGE_ID, tag="", archive=None, pushed=PUSHED,
                          attempts=3, note=(notes.append if notes is not None else None))


def test_a_link_dropped_while_the_engine_fetches_a_manifest_is_retried() -> None:
    """The engine's stream says "manifest" (and "unknown") but carries no code: that is a link, not a refusal."""
    box: list[_Engine] = []
    engine = _Engine([
        _streams({"status": "Pulling from toolchain/tiny", "id": DIGEST},
                 {"errorDetail": {"message": RESET + " (manifest unknown to this link)"}, "error": RESET}),
        _fails_with(_http_error(500, f"Get \"http://127.0.0.1:5000/v2/toolchain/tiny/manifests/{DIGEST}\": EOF")),
        _succeeds(box),
    ])
    box.append(engine)
    notes: list[str] = []
    stats = _pull(engine, notes)
    assert engine.pulls == 3 and stats.attempts == 3 and engine.loaded
    # both attempts that reached the stream fetched the manifest and the config; the layers crossed once
    assert stats.transport == "pull" and stats.layers_sent == 2 and stats.bytes_sent == 3000 + 2 * (500 + 900)
    assert len(notes) == 2 and all("retrying" in note for note in notes) and "ConnectionError" in notes[0]


def test_a_manifest_the_registry_does_not_know_is_a_refusal_not_retried() -> None:
    """The engine answers 404 when the registry said "manifest unknown": one try, and the message says what to do."""
    engine = _Engine([_fails_with(_http_error(
        404, f"manifest for 127.0.0.1:5000/toolchain/tiny@{DIGEST} not found: manifest unknown: manifest unknown"))])
    with pytest.raises(TransferError, match="refused.*HTTP 404.*manifest unknown.*push the image again") as caught:
        _pull(engine)
    assert engine.pulls == 1 and caught.value.stats.attempts == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_every_refusal_status_stops_at_once_in_either_form(status: int) -> None:
    engine = _Engine([_fails_with(_http_error(status, "no"))])
    with pytest.raises(TransferError, match=f"HTTP {status}"):
        _pull(engine)
    assert engine.pulls == 1
    streamed = _Engine([_streams({"status": "Pulling from toolchain/tiny"},
                                 {"errorDetail": {"code": status, "message": "authentication required"},
                                  "error": "authentication required"})])
    with pytest.raises(TransferError, match=f"code {status}"):
        _pull(streamed)
    assert streamed.pulls == 1


def test_what_is_not_recognised_is_retried_until_the_attempts_run_out() -> None:
    from toolchain.images.outcome import refused_status

    engine = _Engine([_fails_with(_http_error(429, "toomanyrequests")), _fails_with(_http_error(503, "unknown")),
                      _streams({"error": "unknown: not found in this mirror"})])
    with pytest.raises(TransferError, match="failed 3 time") as caught:
        _pull(engine)
    assert engine.pulls == 3 and caught.value.stats.attempts == 3
    assert [refused_status(s) for s in (400, 404, 408, 429, 500, None, "404", True)] == \
        [True, True, False, False, False, False, False, False]


def test_a_gzipped_image_tar_reaches_docker_load_compressed_once(tmp_path: Path) -> None:
    """`--image-tar img.tar.gz` (compress on, the default): the engine gets a gzip of the tar, not a gzip of a gzip."""
    from toolchain.deploy.rollout import DeployConfig, _release_archive

    layers = [_layer("base"), _layer("model")]
    config = _config(layers)
    plain = _write(tmp_path / "image.tar", _classic([(config, layers, ["toolchain/tiny:x"])]))
    packed = tmp_path / "image.tar.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    record = _image_record(image_id=f"sha256:{_sha(config)}", tag="toolchain/tiny:x", tags=["toolchain/tiny:x"])
    (tmp_path / "work").mkdir()
    archive = _release_archive(record, DeployConfig(ref="x", fleet=tmp_path / "fleet.toml", image_tar=packed), tmp_path / "work")
    engine = _Engine([])
    stats = transfer_image(engine, transport="load", image_id=record.body["image_id"], tag="", archive=archive,
                           pushed=None, compress=True)
    assert stats.transport == "load-full" and stats.bytes_sent == packed.stat().st_size
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(engine.loads[0])), mode="r:") as sent:
        assert "manifest.json" in sent.getnames()


class _ResettingLink:
    """A TCP link to a registry that resets the connection the first time a request for ``path`` crosses it."""

    def __init__(self, target: str, path: bytes) -> None:
        import socket
        import threading

        self.target = target.rsplit(":", 1)[0], int(target.rsplit(":", 1)[1])
        self.path, self.resets = path, 0
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: Any, sink: Any, requests: bool) -> None:
        import socket
        import struct

        seen = b""
        try:
            while data := source.recv(65536):
                seen = (seen + data)[-4096:]
                if requests and self.path in seen:
                    with self.lock:
                        first = self.resets == 0
                        self.resets += 1 if first else 0
                    if first:  # drop the link: RST to the engine, mid-pull
                        for sock in (source, sink):
                            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                            sock.close()
                        return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


def _engine_fixtures() -> tuple[Any, Any]:
    from tests.docker import conftest as engine

    return engine.docker_url, engine.docker_client


docker_url, docker_client = _engine_fixtures()


@pytest.fixture()
def real_registry(tmp_path: Path) -> Iterator[Any]:
    from tests.docker.fleet_sim import Registry
    from tests.services import skip_or_fail

    missing = Registry.missing()
    if missing:
        skip_or_fail("registry", missing)
    registry = Registry(tmp_path / "registry").start()
    yield registry
    registry.stop()


@pytest.mark.docker
def test_a_real_engine_pull_is_refused_for_an_unknown_manifest_and_retried_after_a_reset(
        tmp_path: Path, docker_client: Any, real_registry: Any) -> None:
    """Docker 20.10 and docker-registry: a digest the registry lacks is a 404 (one try); a link reset while the engine
    fetches the platform manifest of an index (after the pull began: a stream error naming the manifest) is retried."""
    from tests.package.registry_images import upload_image

    repository = f"toolchain-test/reset-{tmp_path.name[-10:].lower()}"
    image = upload_image(real_registry.address, repository, f"hello {tmp_path.name}")
    missing = PushedImage(registry=real_registry.address, repository=repository, digest="sha256:" + "0" * 64)
    with pytest.raises(TransferError, match="refused.*HTTP 404.*manifest unknown") as caught:
        transfer_image(docker_client, transport="pull", image_id=image.config, tag="", archive=None, pushed=missing)
    assert caught.value.stats.attempts == 1

    link = _ResettingLink(real_registry.address, f"/manifests/{image.manifest}".encode())
    pushed = PushedImage(registry=link.address, repository=repository, digest=image.manifest_list,
                         layers=(image.layer,))
    notes: list[str] = []
    try:
        stats = transfer_image(docker_client, transport="pull", image_id=image.config, tag="", archive=None,
                               pushed=pushed, attempts=3, note=notes.append)
        assert link.resets == 1 and stats.attempts == 2 and "manifests" in notes[0], notes
        assert stats.layers_sent == 1 and docker_client.api.inspect_image(image.config)["Id"] == image.config
    finally:
        link.close()
        try:
            docker_client.images.remove(image.config, force=True)
        except Exception:  # noqa: BLE001 - cleanup
            pass

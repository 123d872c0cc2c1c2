"""Registry logins from the credentials file (``[registries."HOST:PORT"]``): parsed and checked without quoting a
secret, registered for redaction, kept out of a unit's own credentials file; ``package --push`` hands the login to
the engine's push request and reads the manifest back with it; ``deploy`` hands it to the unit engine's pull request;
TLS and login failures are said with what to do. The real registry (htpasswd, TLS, an expired certificate, an
unknown CA) is tests/docker/test_registry_auth.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.package.test_push import PASSWORD, REPOSITORY, _image_manifest, _Registry, registry  # noqa: F401 - fixture
from toolchain.errors import BadInputError, MissingEnvironmentError
from toolchain.redaction import scrub
from toolchain.serve.credentials import (
    RegistryCredential, load_credentials, load_registry_credentials, parse_credentials, registry_credentials_from,
    to_json,
)

CA = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----"
SECRET = "Reg1stry-S3cret-zz"  # noqa: S105 - a test credential


def test_the_registries_table_is_read_by_host_and_port_and_its_password_is_masked(tmp_path: Path) -> None:
    path = tmp_path / "secrets.toml"
    path.write_text(f"""
[cameras.north]
username = "cam"
password = "campw-1"

[registries."registry.example.org:5000"]
username = "ci"
password = "{SECRET}"
ca = '''
{CA}
'''

[registries."10.0.0.7"]
ca = '''{CA}'''
""")
    logins = load_registry_credentials(path)
    assert set(logins) == {"registry.example.org:5000", "10.0.0.7"}
    login = logins["registry.example.org:5000"]
    assert (login.username, login.password, login.ca_pem) == ("ci", SECRET, CA + "\n")
    assert login.auth_config() == {"username": "ci", "password": SECRET}
    assert logins["10.0.0.7"].auth_config() is None and logins["10.0.0.7"].ca_pem == CA + "\n"  # a CA, no login
    assert SECRET not in repr(login) and "ci" not in repr(login) and SECRET not in str(logins)
    assert scrub(f"engine said: {SECRET} was refused") == "engine said: *** was refused"
    # the cameras are read as before, and a unit's own file never carries a registry login
    cameras = load_credentials(path)
    assert set(cameras) == {"north"}
    assert "registries" not in json.loads(to_json(cameras)) and SECRET not in to_json(cameras)
    assert load_registry_credentials(None) == {} and registry_credentials_from({"cameras": {}}) == {}


@pytest.mark.parametrize("table, expected", [
    ([], "must be a table of registries"),
    ({"https://registry.example.org": {"username": "u", "password": SECRET}}, "HOST[:PORT]"),
    ({"registry.example.org/path": {"username": "u", "password": SECRET}}, "HOST[:PORT]"),
    ({f"u:{SECRET}@registry.example.org": {"username": "u", "password": SECRET}}, "a registry in the credentials"),
    ({"r.example": "u:" + SECRET}, "must be a table"),
    ({"r.example": {"username": "u", "password": SECRET, "token": SECRET}}, "unknown key(s) 'token'"),
    ({"r.example": {"username": "u", "password": 7}}, "password in the credentials file must be a string"),
    ({"r.example": {"password": SECRET}}, "has a password but no username"),
    ({"r.example": {"username": "u"}}, "has a username but no password"),
    ({"r.example": {"username": "u", "password": SECRET, "ca": SECRET}}, "is not a PEM certificate"),
    ({"r.example": {}}, "is empty"),
])
def test_a_malformed_registries_table_is_refused_without_quoting_a_secret(table: Any, expected: str) -> None:
    with pytest.raises(BadInputError) as caught:
        parse_credentials({"registries": table}, "secrets.toml")
    assert expected in str(caught.value) and SECRET not in str(caught.value)


def test_unit_credentials_of_a_pulling_unit_with_only_a_registry_login_is_no_file(tmp_path: Path) -> None:
    from toolchain.deploy.fleet import load_fleet
    from toolchain.deploy.unit import unit_credentials

    (tmp_path / "secrets.toml").write_text(f'[registries."10.0.0.7:5000"]\nusername = "u"\npassword = "{SECRET}"\n')
    (tmp_path / "fleet.toml").write_text("""
[defaults]
target = "x86-64-cpu"
cameras = ["synthetic:64x64@5"]
credentials = "secrets.toml"

[[unit]]
name = "pulls"
url = "unix:///tmp/a.sock"
transfer = "pull"
registry = "10.0.0.7:5000"

[[unit]]
name = "loads"
url = "unix:///tmp/b.sock"
""")
    pulls, loads = load_fleet(tmp_path / "fleet.toml").units
    assert unit_credentials(pulls) is None  # nothing for the service: the login goes to the engine's pull only
    with pytest.raises(BadInputError, match="credentials for none of loads's cameras"):
        unit_credentials(loads)


class _PushingEngine:
    """The Engine API's push as the SDK calls it: records the X-Registry-Auth it was given; streams ``events``."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.api = self
        self.events = events
        self.auth: list[Any] = []

    def tag(self, image_id: str, repository: str, tag: str) -> None:
        pass

    def push(self, repository: str, tag: str, stream: bool, decode: bool, **kwargs: Any) -> Iterator[dict[str, Any]]:
        self.auth.append(kwargs.get("auth_config"))
        yield from self.events


def _image(workspace: Any) -> Any:
    from toolchain.registry import NewRecord

    image, _, _ = workspace.registry.commit(NewRecord(kind="image", name="tiny", body={
        "image_id": "sha256:" + "c" * 64, "tag": "toolchain/tiny:x86-64-cpu-1", "platform": "linux/amd64"}))
    return image


def test_push_gives_the_engine_the_files_login_and_reads_the_manifest_back_with_it(
        registry: _Registry, tmp_path: Path) -> None:  # noqa: F811 - the fixture
    from toolchain.images import push as push_module
    from toolchain.workspace import Workspace

    data = _image_manifest("amd64")
    digest = registry.add(data)
    registry.auth = "basic"  # wants ci:PASSWORD; no `docker login` here (the fixture empties DOCKER_CONFIG)
    login = RegistryCredential(username="ci", password=PASSWORD)
    engine = _PushingEngine([{"status": "Pushed"}, {"aux": {"Tag": "x", "Digest": digest, "Size": len(data)}}])
    with Workspace(tmp_path / "ws") as workspace:
        record = push_module.push_image(workspace, engine, _image(workspace), registry.address, login=login)
    assert engine.auth == [{"username": "ci", "password": PASSWORD}]
    assert record.body["manifest_size"] == len(data) and "manifest_note" not in record.body
    assert PASSWORD not in json.dumps(record.body)


@pytest.mark.parametrize("error, expected", [
    ("unauthorized: authentication required", "refused the login (username/password of secrets.toml's "
                                              '[registries."{address}"])'),
    ('Get "https://{address}/v2/": x509: certificate signed by unknown authority',
     "put the CA that signed it in /etc/docker/certs.d/{address}/ca.crt on the engine's machine"),
    ('Get "https://{address}/v2/": x509: certificate has expired or is not yet valid', "certificate has expired"),
])
def test_a_refused_push_says_what_to_fix(registry: _Registry, tmp_path: Path, error: str,  # noqa: F811
                                         expected: str) -> None:
    from toolchain.images import push as push_module
    from toolchain.workspace import Workspace

    address = registry.address
    engine = _PushingEngine([{"errorDetail": {"message": error.format(address=address)},
                              "error": error.format(address=address)}])
    login = RegistryCredential(username="ci", password=SECRET)
    with Workspace(tmp_path / "ws") as workspace:
        with pytest.raises(MissingEnvironmentError) as caught:
            push_module.push_image(workspace, engine, _image(workspace), address, login=login,
                                   credentials="secrets.toml")
        assert not workspace.registry.find(kind="push")
    assert expected.format(address=address) in str(caught.value) and SECRET not in str(caught.value)
    # without a login from a file, a registry that wants one says where to give it
    engine = _PushingEngine([{"error": "no basic auth credentials"}])
    with Workspace(tmp_path / "ws2") as workspace, pytest.raises(MissingEnvironmentError, match="wants a login"):
        push_module.push_image(workspace, engine, _image(workspace), address)
    assert engine.auth == [None]


def test_the_read_back_trusts_the_files_ca_and_goes_https_even_on_loopback(tmp_path: Path) -> None:
    from toolchain.images.manifest import _Reader

    reader = _Reader("127.0.0.1:5000", REPOSITORY, RegistryCredential(ca_pem=CA + "\n"))
    try:
        assert reader.base == "https://127.0.0.1:5000"
        assert Path(str(reader.verify)).read_text() == CA + "\n"
        ca_file = Path(str(reader.verify))
    finally:
        reader.close()
    assert not ca_file.exists()  # the temporary CA file goes with the reader
    plain = _Reader("127.0.0.1:5000", REPOSITORY, RegistryCredential(username="u", password=SECRET))
    assert plain.base == "http://127.0.0.1:5000"
    plain.close()


class _PullingEngine:
    """An engine whose pull fails as a real one does when the registry's TLS or login fails (HTTP 500)."""

    def __init__(self, message: str) -> None:
        self.api = self
        self.message = message
        self.auth: list[Any] = []

    def inspect_image(self, image_id: str) -> dict[str, Any]:
        import docker.errors

        raise docker.errors.ImageNotFound(image_id)

    def pull(self, repository: str, tag: str, stream: bool, decode: bool, **kwargs: Any) -> Iterator[dict[str, Any]]:
        from tests.deploy.test_transfer import _http_error

        self.auth.append(kwargs.get("auth_config"))
        raise _http_error(500, self.message)

    def ping(self) -> bool:
        return True


@pytest.mark.parametrize("message, expected", [
    ("unauthorized: authentication required", "refused the login"),
    ('Get "https://10.0.0.7:5000/v2/": x509: certificate signed by unknown authority',
     "/etc/docker/certs.d/10.0.0.7:5000/ca.crt on the unit, with the unit's provisioning"),
    ('Get "https://10.0.0.7:5000/v2/": x509: certificate has expired or is not yet valid: current time',
     "TLS certificate has expired"),
])
def test_a_pull_gets_the_login_in_its_request_and_a_failure_says_what_to_fix(
        monkeypatch: pytest.MonkeyPatch, message: str, expected: str) -> None:
    from toolchain.images import transfer as transfer_module
    from toolchain.images.outcome import TransferError
    from toolchain.images.pull import PushedImage
    from toolchain.images.transfer import transfer_image

    monkeypatch.setattr(transfer_module, "BACKOFF_S", 0.0)
    engine = _PullingEngine(message)
    pushed = PushedImage(registry="10.0.0.7:5000", repository="toolchain/tiny", digest="sha256:" + "d" * 64)
    login = RegistryCredential(username="ci", password=SECRET)
    with pytest.raises(TransferError) as caught:
        transfer_image(engine, transport="pull", image_id="sha256:" + "e" * 64, tag="", archive=None, pushed=pushed,
                       attempts=2, login=login, credentials="secrets.toml")
    assert engine.auth == [{"username": "ci", "password": SECRET}] * 2  # retried: judged on no words
    assert expected in str(caught.value) and SECRET not in str(caught.value)


def test_registry_login_prefers_the_address_the_unit_reaches(tmp_path: Path) -> None:
    from toolchain.deploy.unit import registry_login

    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"registries": {
        "10.0.0.7:5000": {"username": "lan", "password": SECRET},
        "127.0.0.1:5000": {"username": "pushed", "password": SECRET + "2"}}}))
    assert registry_login(path, "10.0.0.7:5000", "127.0.0.1:5000").username == "lan"
    assert registry_login(path, "", "127.0.0.1:5000").username == "pushed"
    assert registry_login(path, "elsewhere:1", "elsewhere:2") is None and registry_login(None, "x") is None

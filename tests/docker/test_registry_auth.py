"""A registry with a login and TLS, for real: Debian's ``docker-registry`` with htpasswd (bcrypt) and a certificate
from a CA the test makes, on an address off loopback (Docker skips certificate checks on loopback registries).

``package --push`` logs in with the credentials file's ``[registries."HOST:PORT"]`` table (the engine gets it in
the push request) and reads the manifest back over HTTPS, trusting the file's ``ca``; a unit (the test engine)
pulls by digest with the login ``deploy`` hands its engine in the pull request alone. The engines trust the CA
through ``/etc/docker/certs.d/HOST:PORT/ca.crt``, read per connection. A wrong password, an expired certificate and
a CA the engine does not trust are each a clear error at the push and at the pull, the unit keeps serving its old
release, and the password shows in no output, record, registry file or ``docker inspect``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.docker.fleet_sim import Registry, remove_deployed, remove_images, unit_ports, write_fleet
from tests.docker.fleet_sim import toolchain_json as _tc
from tests.onnx_fixtures import register_tiny_onnx
from tests.services import skip_or_fail
from toolchain.workspace import Workspace

pytestmark = pytest.mark.docker
MODEL = "regauth-onnx"
SERVING = f"toolchain-{MODEL}"
USER = "ci-pusher"
PASSWORD = "Reg-Pw-" + secrets.token_hex(6)  # the secret the tests hunt for
WRONG = "Wrong-Pw-" + secrets.token_hex(6)


def _clean(where: str, text: str) -> None:
    for secret in (PASSWORD, WRONG):
        assert secret not in text, f"{where} shows a registry password"


def _secrets_file(path: Path, registry: Registry, password: str) -> Path:
    path.write_text(f"""[registries."{registry.address}"]
username = "{USER}"
password = "{password}"
ca = '''
{registry.ca_pem.strip()}
'''
""")
    return path


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory, docker_url: str, docker_client: Any,
           base_image: str) -> Iterator[dict[str, Any]]:
    """The TLS registry with a login (its CA trusted by this machine's engines), and two releases of MODEL packaged
    and pushed to it with the login from a credentials file."""
    missing = Registry.missing(tls=True, auth=True)
    if missing:
        skip_or_fail("registry", missing)
    tmp = tmp_path_factory.mktemp("regauth")
    registry = Registry(tmp / "registry", auth=(USER, PASSWORD), tls=True).start()
    registry.install_ca()
    good = _secrets_file(tmp / "secrets.toml", registry, PASSWORD)
    wrong = _secrets_file(tmp / "wrong.toml", registry, WRONG)
    ws = tmp / "ws"
    with Workspace(ws) as workspace:
        for seed in range(2):
            register_tiny_onnx(workspace, tmp / f"m{seed}", name=MODEL, seed=seed)
    images: dict[str, Any] = {}
    outputs: list[str] = []
    try:
        for version in ("v1", "v2"):
            code, _, err = _tc(ws, "build", f"{MODEL}@{version}", "--target", "x86-64-cpu")
            assert code == 0, err
            code, image, err = _tc(ws, "package", f"{MODEL}@{version}", "--target", "x86-64-cpu", "--base-image",
                                   base_image, "--docker-host", docker_url, "--push", registry.address,
                                   "--credentials", str(good))
            assert code == 0, err
            outputs += [json.dumps(image), err]
            images[version] = image
        yield {"registry": registry, "ws": ws, "good": good, "wrong": wrong, "images": images, "tmp": tmp,
               "outputs": outputs}
    finally:
        registry.stop()
        remove_images(docker_client, [image["image_id"] for image in images.values()])


@pytest.mark.timeout(600)
def test_package_push_logs_in_from_the_credentials_file_and_says_what_is_wrong(
        pushed: dict[str, Any], docker_url: str, base_image: str) -> None:
    registry, ws = pushed["registry"], pushed["ws"]
    v1 = pushed["images"]["v1"]
    for output in pushed["outputs"]:
        _clean("package --push", output)
    # the manifest was read back over HTTPS with the file's login and CA: sizes, no note
    with Workspace(ws) as workspace:
        record = workspace.registry.get(v1["push"]["record"])
        assert record is not None and record.body["registry"] == registry.address
        assert record.body["layers"] and record.body["config_size"] > 0 and "manifest_note" not in record.body

    def push(credentials: Path) -> tuple[int, str]:
        code, report, err = _tc(ws, "package", f"{MODEL}@v1", "--target", "x86-64-cpu", "--base-image", base_image,
                                "--docker-host", docker_url, "--push", registry.address, "--credentials",
                                str(credentials))
        text = json.dumps(report) + err
        _clean("package --push", text)
        return code, text

    code, text = push(pushed["wrong"])
    assert code == 5 and "refused the login" in text and "registries." in text and registry.address in text, text
    try:
        registry.restart("expired")
        code, text = push(pushed["good"])
        assert code == 5 and "certificate has expired" in text, text
        registry.restart("unknown-ca")
        code, text = push(pushed["good"])
        assert code == 5 and f"/etc/docker/certs.d/{registry.address}/ca.crt" in text, text
        assert "does not trust" in text
    finally:
        registry.restart("valid")
    with Workspace(ws) as workspace:  # no failed push left a record
        assert len(workspace.registry.find(kind="push")) == 2


@pytest.mark.timeout(900)
def test_a_unit_pulls_with_the_login_deploy_hands_its_engine_and_keeps_serving_when_the_registry_fails(
        pushed: dict[str, Any], docker_url: str, docker_client: Any) -> None:
    registry, ws, tmp, images = pushed["registry"], pushed["ws"], pushed["tmp"], pushed["images"]
    # the unit (this engine) must pull: take the packaged images off it (the base image's layers stay)
    remove_images(docker_client, [image["image_id"] for image in images.values()])
    ports = unit_ports(["regauth-unit"])
    fleets = {}
    for name, secrets_file in (("good", pushed["good"]), ("wrong", pushed["wrong"])):
        fleets[name] = write_fleet(tmp / f"fleet-{name}.toml", {"regauth-unit": docker_url}, ports=ports,
                                   defaults=f'transfer = "pull"\ntransfer_attempts = 2\n'
                                            f'credentials = "{secrets_file.name}"')
    outputs: list[str] = []

    def deploy(version: str, fleet: str) -> tuple[int, dict[str, Any]]:
        code, report, err = _tc(ws, "deploy", f"{MODEL}@{version}", "--fleet", str(fleets[fleet]))
        outputs.extend([json.dumps(report), err])
        assert report is not None, err
        return code, report["units"][0]

    def serving() -> str:
        container = docker_client.containers.get(SERVING)
        assert container.attrs["State"]["Health"]["Status"] == "healthy"
        return str(container.attrs["Image"])

    try:
        code, unit = deploy("v1", "good")
        assert code == 0 and unit["result"] == "deployed" and unit["transport"] == "pull", unit
        assert unit["layers_sent"] >= 1 and serving() == images["v1"]["image_id"]

        code, unit = deploy("v2", "wrong")
        assert code != 0 and unit["result"] == "failed", unit
        assert "refused the login" in unit["message"] and "still serves" in unit["message"], unit
        assert serving() == images["v1"]["image_id"]
        try:
            registry.restart("expired")
            code, unit = deploy("v2", "good")
            assert code != 0 and "certificate has expired" in unit["message"], unit
            assert "still serves" in unit["message"] and serving() == images["v1"]["image_id"]
            registry.restart("unknown-ca")
            code, unit = deploy("v2", "good")
            assert code != 0 and f"/etc/docker/certs.d/{registry.address}/ca.crt on the unit" in unit["message"], unit
            assert "still serves" in unit["message"] and serving() == images["v1"]["image_id"]
        finally:
            registry.restart("valid")
        assert images["v2"]["image_id"] not in {image.id for image in docker_client.images.list()}

        code, unit = deploy("v2", "good")
        assert code == 0 and unit["result"] == "deployed" and unit["transport"] == "pull", unit
        assert unit["layers_sent"] == 1 and serving() == images["v2"]["image_id"]

        # the password went only into the pull requests' X-Registry-Auth header
        for output in outputs:
            _clean("deploy", output)
        for container in docker_client.containers.list(all=True, filters={"name": SERVING}):
            _clean(f"docker inspect {container.name}", json.dumps(docker_client.api.inspect_container(container.id)))
            _clean(f"logs of {container.name}", container.logs().decode(errors="replace"))
        for volume in docker_client.volumes.list(filters={"label": f"org.toolchain.model={MODEL}"}):
            assert volume.attrs["Labels"].get("org.toolchain.role") != "credentials", "the unit got a credentials file"
        for db in ws.rglob("*.db*"):
            data = db.read_bytes()
            assert PASSWORD.encode() not in data and WRONG.encode() not in data, f"{db} holds a registry password"
    finally:
        remove_deployed(docker_client, MODEL, images["v1"]["image_id"])
        remove_images(docker_client, [images["v2"]["image_id"]])

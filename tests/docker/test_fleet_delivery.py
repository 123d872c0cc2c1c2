"""Fleet delivery over thin links, for real: three unit engines per transport, a registry, 2 Mbit/s links
that count bytes (a fleet of 50: scripts/bench_fleet).

A first install sends the whole image; a model-only release sends one small layer (``load``: an archive
of only the layers a unit lacks; ``pull``: the unit pulls by digest and downloads only what it lacks);
``deploy --json`` counts the bytes, and the link's own count agrees. A rollback moves nothing. Images
beyond the retention are pruned. A transfer cut mid-way (by either transport) leaves the old release
serving; it is retried, and a rerun finishes it.
"""

from __future__ import annotations

import io
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.docker.fleet_sim import (
    Registry, ThinLink, can_start_engines, free_port, remove_images, start_engines, stop_engines, unit_ports, unix_link,
    write_fleet,
)
from tests.docker.fleet_sim import health as _health
from tests.docker.fleet_sim import toolchain_json as _tc
from tests.onnx_fixtures import register_tiny_onnx
from tests.services import skip_or_fail
from toolchain.workspace import Workspace

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parents[2]
UNITS = [f"unit-{i}" for i in range(1, 4)]
SERVING = "toolchain-tiny-onnx"
MB = 1_000_000






@pytest.fixture(scope="module")
def engines() -> Iterator[dict[str, str]]:
    why = can_start_engines()
    if why:
        skip_or_fail("docker", why)
    base = Path(tempfile.mkdtemp(prefix="tcf", dir="/tmp"))  # short: unix socket paths are limited
    names = [*UNITS, "pull-1", "pull-2", "pull-3"]
    try:
        # Two download attempts per pull instead of dockerd's 5 (its backoff between them is most of a failed
        # pull's time): the engine still retries and resumes on its own, the test spends a minute less waiting.
        yield start_engines(base, names, ("--max-download-attempts", "2"))
    except RuntimeError as exc:
        skip_or_fail("docker", str(exc))
    finally:
        stop_engines(base, names)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory, docker_url: str, base_image: str) -> Iterator[dict[str, Any]]:
    """A workspace with four packaged releases of tiny-onnx that differ only in the model (v4: a 2.8 MB one)."""
    tmp = tmp_path_factory.mktemp("fleet")
    ws = tmp / "ws"
    with Workspace(ws) as workspace:
        for seed in range(3):
            register_tiny_onnx(workspace, tmp / f"m{seed}", seed=seed)
        register_tiny_onnx(workspace, tmp / "fat", seed=9, hidden=100_000)
    images = {}
    for version in ("v1", "v2", "v3", "v4"):
        code, _, err = _tc(ws, "build", f"tiny-onnx@{version}", "--target", "x86-64-cpu")
        assert code == 0, err
        code, image, err = _tc(ws, "package", f"tiny-onnx@{version}", "--target", "x86-64-cpu", "--base-image",
                               base_image, "--docker-host", docker_url)
        assert code == 0, err
        images[version] = image
    yield {"ws": ws, "images": images, "tmp": tmp}
    import docker

    client = docker.DockerClient(base_url=docker_url)
    remove_images(client, [image["image_id"] for image in images.values()])
    client.close()


def _failures(report: dict[str, Any] | None) -> list[str]:
    """What went wrong on each unit that failed (for assertion messages)."""
    return [f"{u.get('unit')}: {u.get('result')}: {u.get('message')}" for u in (report or {}).get("units", [])
            if not u.get("ok", True)]


def _units(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {u["unit"]: u for u in report["units"]}


def _serving(url: str) -> str:
    import docker

    client = docker.DockerClient(base_url=url)
    try:
        container = client.containers.get(SERVING)
        assert container.attrs["State"]["Health"]["Status"] == "healthy"
        return str(container.attrs["Image"])
    finally:
        client.close()


def _images(url: str) -> set[str]:
    import docker

    client = docker.DockerClient(base_url=url)
    try:
        return {image.id for image in client.images.list()}
    finally:
        client.close()


@pytest.mark.timeout(1500)
def test_load_sends_only_the_new_model_layer_rolls_back_for_free_prunes_and_survives_a_cut_link(
        tmp_path: Path, engines: dict[str, str], releases: dict[str, Any]) -> None:
    ws, images = releases["ws"], releases["images"]
    ports = unit_ports(UNITS)
    direct = write_fleet(tmp_path / "direct.toml", {n: engines[n] for n in UNITS}, ports=ports)
    links = {name: unix_link(tmp_path, engines[name]) for name in UNITS}
    thin = write_fleet(tmp_path / "thin.toml", {n: links[n][2] for n in UNITS}, ports=ports)
    link_specs = {name: (listen, target) for name, (listen, target, _) in links.items()}

    # 1. first install, straight to the units: the whole image, gzip-compressed (a third of its 450 MB)
    code, first, err = _tc(ws, "deploy", "tiny-onnx@v1", "--fleet", str(direct), "--parallel", "3")
    assert code == 0, (err, _failures(first))
    for unit in first["units"]:
        assert unit["transport"] == "load-full" and unit["layers_reused"] == 0, unit
        assert 100 * MB < unit["bytes_sent"] < 250 * MB and unit["layers_sent"] == 5
    full = first["units"][0]["bytes_sent"]

    # 2. a model-only release through 2 Mbit/s links: one layer, counted as the link counts it
    with ThinLink(tmp_path, link_specs, rate="2mbit") as link:
        code, second, err = _tc(ws, "deploy", "tiny-onnx@v2", "--fleet", str(thin), "--parallel", "3")
        counted = link.stop()
    assert code == 0, (err, _failures(second))
    for unit in second["units"]:
        assert unit["result"] == "deployed" and unit["transport"] == "load-delta", unit
        assert (unit["layers_sent"], unit["layers_reused"]) == (1, 4)
        assert unit["bytes_sent"] <= 1 * MB and full / unit["bytes_sent"] >= 50, unit
        # The archive is what crossed the link; the rest is the Engine API's own requests.
        assert unit["bytes_sent"] <= counted[unit["unit"]]["up"] <= unit["bytes_sent"] + 200_000
    assert all(_serving(engines[n]) == images["v2"]["image_id"] for n in UNITS)
    with Workspace(ws) as workspace:
        recorded = [r for r in workspace.registry.find(kind="deployment") if r.body["deployment"] == second["deployment"]]
    assert {r.body["transport"] for r in recorded} == {"load-delta"} and all(r.body["bytes_sent"] > 0 for r in recorded)
    code, status, err = _tc(ws, "deploy", "status", "--fleet", str(direct))
    assert code == 0, (err, _failures(status))
    assert {row["last_deployment"]["transport"] for row in status["units"]} == {"load-delta"}

    # 3. rollback through the links: nothing sent, the same health rule, v1 serves again
    with ThinLink(tmp_path, link_specs, rate="2mbit") as link:
        code, back, err = _tc(ws, "deploy", "rollback", "--fleet", str(thin), "--parallel", "3")
        counted = link.stop()
    assert code == 0, (err, _failures(back))
    assert back["action"] == "rollback" and back["bytes_sent"] == 0
    for unit in back["units"]:
        assert unit["result"] == "deployed" and unit["transport"] == "none" and unit["bytes_sent"] == 0, unit
        assert unit["health"]["status"] == "healthy" and "rolled back to" in unit["message"]
        assert counted[unit["unit"]]["up"] < 200_000  # API requests only
    assert all(_serving(engines[n]) == images["v1"]["image_id"] for n in UNITS)
    assert all(_health(ports[n]) == 200 or _health(ports[n] + 1) == 200 for n in UNITS)

    # 4. v3 goes out; retention 2 keeps v3 and v1 (the last two served), v2 is pruned from every unit
    code, third, err = _tc(ws, "deploy", "tiny-onnx@v3", "--fleet", str(direct), "--parallel", "3")
    assert code == 0, (err, _failures(third))
    for unit in third["units"]:
        assert unit["pruned"] == [images["v2"]["image_id"]], unit
        held = _images(engines[unit["unit"]])
        assert images["v3"]["image_id"] in held and images["v1"]["image_id"] in held
        assert images["v2"]["image_id"] not in held

    # 5. a 2.8 MB model to unit-1 over a link that dies after 1 MB and stays down: retried, then failed,
    #    v3 still serves; the link comes back and cuts once more: the retry inside the rerun finishes it
    one = {"unit-1": link_specs["unit-1"]}
    with ThinLink(tmp_path, one, rate="0", cut_after=1 * MB, down_after_cut=True):
        code, cut, err = _tc(ws, "deploy", "tiny-onnx@v4", "--fleet", str(thin), "--unit", "unit-1")
    assert code != 0
    unit = cut["units"][0]
    assert unit["result"] == "failed" and unit["transfer_attempts"] == 3 and "still serves" in unit["message"], unit
    assert 1 * MB <= unit["bytes_sent"] < 4 * MB
    assert _serving(engines["unit-1"]) == images["v3"]["image_id"]
    assert images["v4"]["image_id"] not in _images(engines["unit-1"])  # nothing half-sent was loaded
    with ThinLink(tmp_path, one, rate="0", cut_after=1 * MB):
        code, rerun, err = _tc(ws, "deploy", "tiny-onnx@v4", "--fleet", str(thin), "--unit", "unit-1")
    assert code == 0, (err, _failures(rerun))
    unit = rerun["units"][0]
    assert unit["result"] == "deployed" and unit["transfer_attempts"] == 2 and unit["transport"] == "load-delta", unit
    assert _serving(engines["unit-1"]) == images["v4"]["image_id"]


@pytest.mark.timeout(1500)
def test_pull_by_digest_downloads_only_the_new_layer_through_a_thin_link_prunes_and_survives_a_cut_link(
        tmp_path: Path, engines: dict[str, str], releases: dict[str, Any], docker_url: str, base_image: str) -> None:
    missing = Registry.missing()
    if missing:
        skip_or_fail("registry", missing)
    ws, images = releases["ws"], releases["images"]
    registry = Registry(tmp_path / "registry").start()
    try:
        pushed = {}
        for version in ("v1", "v2"):
            code, image, err = _tc(ws, "package", f"tiny-onnx@{version}", "--target", "x86-64-cpu", "--base-image",
                                   base_image, "--docker-host", docker_url, "--push", registry.address)
            assert code == 0, err
            assert image["push"]["digest"].startswith("sha256:") and "@sha256:" in image["push"]["reference"]
            pushed[version] = image["push"]
        names = [n for n in engines if n.startswith("pull-")]
        ports = unit_ports(names)
        front = free_port()  # the link in front of the registry, as the units reach it
        fleet = write_fleet(tmp_path / "fleet.toml", {n: engines[n] for n in names}, ports=ports,
                            defaults=f'transfer = "pull"\nregistry = "127.0.0.1:{front}"')
        spec = {"registry": (f"tcp:127.0.0.1:{front}", f"tcp:{registry.address}")}

        with ThinLink(tmp_path, spec, rate="0") as link:  # first install: a fast link (150 MB at 2 Mbit/s is 10 min)
            code, first, err = _tc(ws, "deploy", "tiny-onnx@v1", "--fleet", str(fleet), "--parallel", "3")
            counted_first = link.stop()
        assert code == 0, (err, _failures(first))
        for unit in first["units"]:
            assert unit["transport"] == "pull" and unit["layers_sent"] == 5 and unit["bytes_sent"] > 100 * MB, unit
        total_first = sum(u["bytes_sent"] for u in first["units"])
        assert total_first <= counted_first["registry"]["down"] <= total_first + 500_000

        with ThinLink(tmp_path, spec, rate="2mbit") as link:
            code, second, err = _tc(ws, "deploy", "tiny-onnx@v2", "--fleet", str(fleet), "--parallel", "3")
            counted = link.stop()
        assert code == 0, (err, _failures(second))
        for unit in second["units"]:
            assert unit["transport"] == "pull" and (unit["layers_sent"], unit["layers_reused"]) == (1, 4), unit
            assert unit["bytes_sent"] <= 1 * MB and first["units"][0]["bytes_sent"] / unit["bytes_sent"] >= 50
        total = sum(u["bytes_sent"] for u in second["units"])
        assert total <= counted["registry"]["down"] <= total + len(names) * 100_000
        for name in names:
            assert _serving(engines[name]) == images["v2"]["image_id"]

        code, back, err = _tc(ws, "deploy", "rollback", "--fleet", str(fleet), "--unit", "pull-1")
        assert code == 0 and back["bytes_sent"] == 0, err
        assert _serving(engines["pull-1"]) == images["v1"]["image_id"]

        # v3 pulled by pull-1 (serving v1, holding v2): retention 2 keeps v3 and v1 (the last two served), prunes v2
        for version in ("v3", "v4"):
            code, image, err = _tc(ws, "package", f"tiny-onnx@{version}", "--target", "x86-64-cpu", "--base-image",
                                   base_image, "--docker-host", docker_url, "--push", registry.address)
            assert code == 0, err
        with ThinLink(tmp_path, spec, rate="0"):
            code, third, err = _tc(ws, "deploy", "tiny-onnx@v3", "--fleet", str(fleet), "--unit", "pull-1")
        assert code == 0, (err, _failures(third))
        unit = third["units"][0]
        assert unit["transport"] == "pull" and unit["pruned"] == [images["v2"]["image_id"]], unit
        held = _images(engines["pull-1"])
        assert {images["v3"]["image_id"], images["v1"]["image_id"]} <= held and images["v2"]["image_id"] not in held

        # v4's 2.8 MB model layer through a link that dies 1 MB into the pull and stays down: the engine's own
        # retries and the toolchain's fail, v3 still serves, and nothing of v4 is registered on the unit
        with ThinLink(tmp_path, spec, rate="0", cut_after=1 * MB, cut_direction="down", down_after_cut=True) as link:
            code, cut, err = _tc(ws, "deploy", "tiny-onnx@v4", "--fleet", str(fleet), "--unit", "pull-1")
            counted = link.stop()
        assert code != 0 and counted["registry"]["cut"], (err, counted)
        unit = cut["units"][0]
        assert unit["result"] == "failed" and unit["transfer_attempts"] == 3 and "still serves" in unit["message"], unit
        assert _serving(engines["pull-1"]) == images["v3"]["image_id"]
        assert images["v4"]["image_id"] not in _images(engines["pull-1"])

        # The link is back and cuts once more, 1 MB into the layer: the rerun finishes, the engine resuming the
        # download where the cut left it (restarting it would cross the link 1 MB more), and prunes v1
        with ThinLink(tmp_path, spec, rate="0", cut_after=1 * MB, cut_direction="down") as link:
            code, rerun, err = _tc(ws, "deploy", "tiny-onnx@v4", "--fleet", str(fleet), "--unit", "pull-1")
            counted = link.stop()
        assert code == 0, (err, _failures(rerun))
        unit = rerun["units"][0]
        assert unit["result"] == "deployed" and unit["transport"] == "pull" and unit["layers_sent"] == 1, unit
        assert counted["registry"]["cut"] and 2 * MB < unit["bytes_sent"] < 4 * MB, (counted, unit)
        assert unit["bytes_sent"] <= counted["registry"]["down"] <= unit["bytes_sent"] + 200_000, (counted, unit)
        assert _serving(engines["pull-1"]) == images["v4"]["image_id"]
        assert unit["pruned"] == [images["v1"]["image_id"]], unit
    finally:
        registry.stop()


def test_an_engine_that_will_not_load_a_partial_archive_gets_the_full_one(
        tmp_path: Path, docker_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback path, on a real engine: the partial archive claims a layer the engine lacks, which is what an
    engine that opens every listed layer would make of any partial archive; it refuses it, the full one loads."""
    from toolchain.images import layers as layers_module
    from toolchain.images.transfer import transfer_image

    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as archive:
        for name, text in (("Dockerfile", "FROM scratch\nCOPY a /a\nCOPY b /b\nCOPY c /c\n"), ("a", "one"),
                           ("b", "two " + tmp_path.name), ("c", "three")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    image, _ = docker_client.images.build(fileobj=io.BytesIO(context.getvalue()), custom_context=True, rm=True,
                                          tag=f"toolchain-test/three-layers:{tmp_path.name[-12:].lower()}")
    tag = image.tags[0]
    saved = tmp_path / "image.tar"
    with open(saved, "wb") as out:
        for chunk in image.save(named=tag):
            out.write(chunk)
    docker_client.images.remove(image.id, force=True)
    layers = layers_module.read_layers(saved)

    class Archive:
        def full(self) -> Path:
            return saved

        def layers(self) -> Any:
            return layers

        def partial(self, skip: int) -> Path:
            layers_module.write_partial(layers, skip, tmp_path / f"partial-{skip}.tar")
            return tmp_path / f"partial-{skip}.tar"

        def gzipped(self, path: Path) -> Path:
            raise AssertionError("compress=False sends archives as they are")

    monkeypatch.setattr(layers_module, "reusable", lambda diff_ids, chains: 2)  # a claim the engine cannot honour
    notes: list[str] = []
    stats = transfer_image(docker_client, transport="load", image_id=image.id, tag=tag, archive=Archive(), pushed=None,
                           compress=False, note=notes.append)
    try:
        assert stats.transport == "load-full" and "partial archive" in stats.fallback and stats.attempts == 2
        assert stats.bytes_sent >= saved.stat().st_size and docker_client.images.get(image.id).tags == [tag]
    finally:
        docker_client.images.remove(image.id, force=True)

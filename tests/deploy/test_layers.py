"""Partial image archives and the layer arithmetic behind them, on real tar files in both ``docker save`` layouts
(the engine side, loading such an archive, is tests/docker/test_fleet_delivery.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.test_integrity import _classic, _config, _layer, _oci, _sha, _write
from toolchain.deploy.fleet import load_fleet
from toolchain.images.layers import read_layers, reusable, write_partial
from toolchain.images.tarball import ImageTarballError, check_image_tarball

ROOT = Path(__file__).resolve().parents[2]
TAG = "toolchain/tiny:x86-64-cpu-0123456789ab"
LAYERS = [_layer("base os"), _layer("vendored deps"), _layer("runtime"), _layer("model v2")]
CONFIG = _config(LAYERS)


@pytest.mark.parametrize("layout", ["classic", "oci"])
def test_a_partial_archive_lists_every_layer_but_carries_only_the_missing_ones(tmp_path: Path, layout: str) -> None:
    files = _classic([(CONFIG, LAYERS, [TAG])]) if layout == "classic" else _oci(CONFIG, LAYERS, [TAG])
    full = _write(tmp_path / "full.tar", files)
    image = read_layers(full)
    assert image.diff_ids == tuple(f"sha256:{_sha(layer)}" for layer in LAYERS)
    assert image.layer_sizes == tuple(len(layer) for layer in LAYERS)

    size = write_partial(image, 3, tmp_path / "partial.tar")
    assert size == (tmp_path / "partial.tar").stat().st_size < full.stat().st_size
    with tarfile.open(tmp_path / "partial.tar") as archive:
        names = {m.name for m in archive.getmembers() if m.isfile()}
        manifest = json.loads(archive.extractfile("manifest.json").read())  # type: ignore[union-attr]
        model = archive.extractfile(image.layers[3]).read()  # type: ignore[union-attr]
        config = archive.extractfile(image.manifest["Config"]).read()  # type: ignore[union-attr]
    assert manifest == [image.manifest] and manifest[0]["Layers"] == list(image.layers)  # all four listed
    assert names == {"manifest.json", image.manifest["Config"], image.layers[3]}  # only the model's file
    assert model == LAYERS[3]
    # The same image: its config bytes (whose hash is the image id) and tags come from the checked full tarball.
    assert config == CONFIG and manifest[0]["RepoTags"] == [TAG]
    assert check_image_tarball(full, image_id=f"sha256:{_sha(CONFIG)}", tags=[TAG]).tags == (TAG,)


@pytest.mark.parametrize("compression", ["gz", "bz2", "xz"])
@pytest.mark.parametrize("layout", ["classic", "oci"])
def test_a_compressed_tarball_passes_the_check_and_gives_the_layers_and_a_partial_archive(
        tmp_path: Path, layout: str, compression: str) -> None:
    """`--image-tar img.tar.gz`: the check and the layer list are one read, so what passes the check can be sent."""
    import bz2
    import gzip
    import lzma

    from tests.deploy.test_integrity import _image_record
    from toolchain.deploy.rollout import DeployConfig, _release_archive

    files = _classic([(CONFIG, LAYERS, [TAG])]) if layout == "classic" else _oci(CONFIG, LAYERS, [TAG])
    plain = _write(tmp_path / "image.tar", files)
    packed = tmp_path / f"image.tar.{compression}"
    packed.write_bytes({"gz": gzip, "bz2": bz2, "xz": lzma}[compression].compress(plain.read_bytes()))
    image_id = f"sha256:{_sha(CONFIG)}"

    checked = check_image_tarball(packed, image_id=image_id, tags=[TAG])
    image = read_layers(packed)
    assert checked.tags == (TAG,) and checked.layers == image and image.compressed
    assert image.diff_ids == read_layers(plain).diff_ids and image.layer_sizes == tuple(len(x) for x in LAYERS)
    write_partial(image, 3, tmp_path / "from-packed.tar")
    write_partial(read_layers(plain), 3, tmp_path / "from-plain.tar")
    with tarfile.open(tmp_path / "from-packed.tar", mode="r:") as a, tarfile.open(tmp_path / "from-plain.tar") as b:
        assert sorted(a.getnames()) == sorted(b.getnames())
        assert a.extractfile(image.layers[3]).read() == LAYERS[3]  # type: ignore[union-attr]
        assert a.extractfile(image.manifest["Config"]).read() == CONFIG  # type: ignore[union-attr]

    # and the way a rollout reaches it: checked once for every unit, then the layers and the partial archive
    record = _image_record(image_id=image_id, tag=TAG, tags=[TAG])
    (tmp_path / "work").mkdir()
    archive = _release_archive(record, DeployConfig(ref="x", fleet=tmp_path / "fleet.toml", image_tar=packed), tmp_path / "work")
    assert archive.full() == packed and archive.layers().diff_ids == image.diff_ids
    with tarfile.open(archive.partial(2), mode="r:") as partial:
        carried = {m.name for m in partial.getmembers() if m.isfile()}
    assert carried == {"manifest.json", image.manifest["Config"], *image.layers[2:]}


def test_a_tarball_whose_layers_cannot_be_listed_is_refused_at_the_check_not_on_the_units(tmp_path: Path) -> None:
    """What the layer list refuses, the check refuses, before any unit is touched (same for a rollout's --image-tar)."""
    import gzip

    from tests.deploy.test_integrity import _image_record
    from toolchain.deploy.rollout import DeployConfig, _release_archive
    from toolchain.errors import CorruptStoreError

    image_id = f"sha256:{_sha(_config(LAYERS[:3]))}"
    record = _image_record(image_id=image_id, tag=TAG, tags=[TAG])
    mismatched = _write(tmp_path / "bad.tar", _classic([(_config(LAYERS[:3]), LAYERS, [TAG])]))
    only_oci = _oci(_config(LAYERS[:3]), LAYERS[:3], [TAG])
    del only_oci["manifest.json"]
    good = _write(tmp_path / "good.tar", _classic([(_config(LAYERS[:3]), LAYERS[:3], [TAG])])).read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(gzip.compress(good)[: len(gzip.compress(good)) * 2 // 3])  # a download cut short
    inner_cut = tmp_path / "inner-cut.tar.gz"
    inner_cut.write_bytes(gzip.compress(good[: len(good) * 2 // 3]))  # a whole gzip of a tar cut short
    for tarball, why in ((mismatched, "lists 4 layers but the config 3"),
                         (_write(tmp_path / "oci.tar", only_oci), "only the OCI layout"),
                         (cut, "not a readable image tarball"),
                         (inner_cut, "not a readable image tarball|lacks")):
        with pytest.raises(ImageTarballError, match=why):
            check_image_tarball(tarball, image_id=image_id, tags=[TAG])
        (tmp_path / "work").mkdir(exist_ok=True)
        config = DeployConfig(ref="x", fleet=tmp_path / "f.toml", image_tar=tarball)
        archive = _release_archive(record, config, tmp_path / "work")
        with pytest.raises(CorruptStoreError, match=why):
            archive.full()


def test_layers_are_reusable_only_on_the_same_layers_beneath() -> None:
    ids = ("sha256:a", "sha256:b", "sha256:c", "sha256:d")
    assert reusable(ids, frozenset()) == 0
    held = frozenset({ids[:1], ids[:2], ids[:3], ("sha256:a", "sha256:b", "sha256:c", "sha256:old-model")})
    assert reusable(ids, held) == 3  # release N+1 on a unit that runs release N: only the model is missing
    assert reusable(ids, frozenset({("sha256:a",), ("sha256:x", "sha256:b")})) == 1  # b on another base is not b here
    assert reusable(ids, frozenset({ids[:1], ids[:2], ids[:3], ids})) == 4


def test_a_tarball_whose_manifest_and_config_disagree_is_refused(tmp_path: Path) -> None:
    files = _classic([(_config(LAYERS[:3]), LAYERS, [TAG])])
    with pytest.raises(ImageTarballError, match="lists 4 layers but the config 3"):
        read_layers(_write(tmp_path / "bad.tar", files))


def test_a_file_that_is_no_tarball_is_refused_saying_what_to_do(tmp_path: Path) -> None:
    garbage = tmp_path / "image.tar"
    garbage.write_bytes(b"not a docker save tarball" * 100)
    with pytest.raises(ImageTarballError, match="not a readable image tarball.*--save"):
        read_layers(garbage)


def test_the_thin_link_rate_parser() -> None:
    sys.path.insert(0, str(ROOT))
    from scripts.thin_link import parse_rate

    assert parse_rate("2mbit") == 250_000 and parse_rate("500kbit") == 62_500 and parse_rate("1MB") == 1e6
    assert parse_rate("0") == 0


def test_the_thin_link_limits_the_rate_and_counts_bytes(tmp_path: Path) -> None:
    """A real transfer through scripts/thin_link.py at 800 kbit/s: 200 kB take about 2 s and are counted."""
    import socket
    import threading
    import time

    received = bytearray()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    target = server.getsockname()[1]

    def sink() -> None:
        connection, _ = server.accept()
        with connection:
            while chunk := connection.recv(65536):
                received.extend(chunk)

    thread = threading.Thread(target=sink, daemon=True)
    thread.start()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        front = probe.getsockname()[1]
    stats = tmp_path / "stats.json"
    link = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "thin_link.py"), "--rate", "800kbit", "--stats",
                             str(stats), "--link", f"one:tcp:127.0.0.1:{front}=tcp:127.0.0.1:{target}"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert link.stdout is not None and link.stdout.readline().strip() == "ready"
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", front)) as client:
            client.sendall(b"x" * 200_000)
            client.shutdown(socket.SHUT_WR)
            thread.join(timeout=30)
        took = time.monotonic() - started
    finally:
        link.terminate()
        link.wait(timeout=10)
        server.close()
    assert len(received) == 200_000
    assert 1.6 < took < 6, took  # 200 kB at 100 kB/s, less the 16 kB burst
    assert json.loads(stats.read_text())["one"]["up"] == 200_000


def test_fleet_transfer_fields(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.toml"
    fleet.write_text('[[unit]]\nname="a"\nurl="unix:///x"\ntarget="x86-64-cpu"\ncameras=["c"]\ntransfer="pull"\n'
                     'registry="10.0.0.2:5000"\nretention=3\ntransfer_attempts=5\n'
                     '[[unit]]\nname="b"\nurl="unix:///y"\ntarget="x86-64-cpu"\ncameras=["c"]\n')
    first, second = load_fleet(fleet).units
    assert (first.transfer, first.registry, first.retention, first.transfer_attempts) == ("pull", "10.0.0.2:5000", 3, 5)
    assert (second.transfer, second.registry, second.retention, second.transfer_attempts) == ("load", "", 2, 3)
    for line, message in (('registry="http://r:5000/x"', "registry must be HOST"), ("retention=0", "retention"),
                          ("transfer_attempts=true", "transfer_attempts")):
        fleet.write_text(f'[[unit]]\nname="a"\nurl="unix:///x"\ntarget="x86-64-cpu"\ncameras=["c"]\n{line}\n')
        with pytest.raises(Exception, match=message):
            load_fleet(fleet)


def test_push_refuses_a_registry_with_a_scheme_or_credentials() -> None:
    from toolchain.errors import BadInputError
    from toolchain.images.registries import check_registry

    assert check_registry("127.0.0.1:5000") == "127.0.0.1:5000" and check_registry("registry.example.org")
    for bad in ("http://127.0.0.1:5000", "user:secret@registry:5000", "registry/path", ""):
        with pytest.raises(BadInputError) as caught:
            check_registry(bad)
        assert "secret" not in str(caught.value)




def test_the_deployment_archive_makes_each_payload_once_and_gzips_it_losslessly(tmp_path: Path) -> None:
    import gzip

    from tests.deploy.test_integrity import _image_record
    from toolchain.deploy.rollout import DeployConfig, _release_archive

    config = _config(LAYERS)
    good = _write(tmp_path / "good.tar", _classic([(config, LAYERS, [TAG])]))
    record = _image_record(image_id=f"sha256:{_sha(config)}", tag=TAG, tags=[TAG],
                           save={"path": str(good), "sha256": _sha(good.read_bytes())})
    archive = _release_archive(record, DeployConfig(ref="x", fleet=tmp_path / "fleet.toml"), tmp_path / "work")
    (tmp_path / "work").mkdir()
    assert archive.full() == good and archive.layers().diff_ids[-1] == f"sha256:{_sha(LAYERS[-1])}"
    partial = archive.partial(3)
    assert archive.partial(3) == partial  # once per number of layers skipped, shared by every unit
    packed = archive.gzipped(partial)
    assert archive.gzipped(partial) == packed and gzip.decompress(packed.read_bytes()) == partial.read_bytes()


def _engine_fixtures() -> tuple[Any, Any]:
    from tests.docker import conftest as engine

    return engine.docker_url, engine.docker_client


docker_url, docker_client = _engine_fixtures()


@pytest.mark.docker
def test_a_real_engine_loads_a_gzipped_docker_save_in_full_and_as_a_partial_archive(
        tmp_path: Path, docker_client: Any) -> None:
    """Docker 20.10 (CI's engine) on a gzipped `docker save`: the layers the engine lacks, then the whole tarball as
    it is."""
    import gzip
    import io
    import shutil

    from toolchain.images.transfer import transfer_image

    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as archive:
        for name, text in (("Dockerfile", "FROM scratch\nCOPY a /a\nCOPY b /b\nCOPY c /c\n"),
                           ("Dockerfile.base", "FROM scratch\nCOPY a /a\nCOPY b /b\n"),
                           ("a", "one"), ("b", "two " + tmp_path.name), ("c", "three")):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(text), 1_700_000_000
            archive.addfile(info, io.BytesIO(text.encode()))
    suffix = tmp_path.name[-12:].lower()
    base, _ = docker_client.images.build(fileobj=io.BytesIO(context.getvalue()), custom_context=True, rm=True,
                                         dockerfile="Dockerfile.base", tag=f"toolchain-test/gz-base:{suffix}")
    image, _ = docker_client.images.build(fileobj=io.BytesIO(context.getvalue()), custom_context=True, rm=True,
                                          tag=f"toolchain-test/gz:{suffix}")
    tag = image.tags[0]
    try:
        assert image.attrs["RootFS"]["Layers"][:2] == base.attrs["RootFS"]["Layers"]
        saved = tmp_path / "image.tar"
        with open(saved, "wb") as out:
            for chunk in image.save(named=tag):
                out.write(chunk)
        packed = tmp_path / "image.tar.gz"
        with open(saved, "rb") as source, gzip.open(packed, "wb") as out:
            shutil.copyfileobj(source, out)
        assert check_image_tarball(packed, image_id=image.id, tags=[tag]).layers == read_layers(packed)
        layers = read_layers(packed)

        class Archive:
            def full(self) -> Path:
                return packed

            def layers(self) -> Any:
                return layers

            def partial(self, skip: int) -> Path:
                write_partial(layers, skip, tmp_path / f"partial-{skip}.tar")
                return tmp_path / f"partial-{skip}.tar"

            def gzipped(self, path: Path) -> Path:
                assert path != packed, "the gzipped tarball is sent as it is"
                with open(path, "rb") as source, gzip.open(tmp_path / f"{path.name}.gz", "wb") as out:
                    shutil.copyfileobj(source, out)
                return tmp_path / f"{path.name}.gz"

        docker_client.images.remove(image.id, force=True)  # the base image keeps the first two layers
        delta = transfer_image(docker_client, transport="load", image_id=image.id, tag=tag, archive=Archive(),
                               pushed=None, compress=True)
        assert (delta.transport, delta.layers_reused, delta.layers_sent, delta.attempts) == ("load-delta", 2, 1, 1)
        assert delta.bytes_sent == (tmp_path / "partial-2.tar.gz").stat().st_size
        docker_client.images.remove(image.id, force=True)
        docker_client.images.remove(base.id, force=True)
        full = transfer_image(docker_client, transport="load", image_id=image.id, tag=tag, archive=Archive(),
                              pushed=None, compress=True)
        assert (full.transport, full.layers_sent, full.attempts, full.bytes_sent) == \
            ("load-full", 3, 1, packed.stat().st_size)
        assert docker_client.images.get(image.id).tags == [tag]
    finally:
        for ref in (image.id, base.id):
            try:
                docker_client.images.remove(ref, force=True)
            except Exception:  # noqa: BLE001 - cleanup
                pass

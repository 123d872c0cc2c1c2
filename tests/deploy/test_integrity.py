"""Image tarballs are checked before any unit loads them: one image, the packaged one, under its own tags.

The tarballs here are real tar archives in the two layouts ``docker save`` writes: the classic one
(``manifest.json``, ``<config>.json``, ``<layer>/layer.tar``; Docker 20.10, as in CI) and the OCI one
newer Docker writes (``index.json``, ``oci-layout``, ``blobs/sha256/...`` plus a compatible
``manifest.json``), made with :mod:`tarfile` from small made-up layers.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from toolchain.images.tarball import ImageTarballError, check_image_tarball, familiar_ref
from toolchain.deploy.rollout import DeployConfig, _release_archive
from toolchain.release import checked_image_tarball
from toolchain.errors import CorruptStoreError, InputNotFoundError
from toolchain.registry import Record

TAG = "toolchain/tiny:x86-64-cpu-0123456789ab"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _layer(text: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as layer:
        data = text.encode()
        info = tarfile.TarInfo("opt/toolchain/release.txt")
        info.size = len(data)
        layer.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _config(layers: list[bytes], label: str = "a") -> bytes:
    return json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": {"org.toolchain.model": label}},
                       "rootfs": {"type": "layers", "diff_ids": [f"sha256:{_sha(layer)}" for layer in layers]}},
                      sort_keys=True).encode()


def _write(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
    return path


def _classic(images: list[tuple[bytes, list[bytes], list[str]]]) -> dict[str, bytes]:
    """The files of a classic ``docker save`` tarball of ``images`` ((config, layers, tags) each)."""
    files: dict[str, bytes] = {}
    manifest, repositories = [], {}
    for config, layers, tags in images:
        config_name = f"{_sha(config)}.json"
        files[config_name] = config
        names = []
        for layer in layers:
            layer_id = _sha(layer + config)  # v1 ids differ per image
            files[f"{layer_id}/VERSION"] = b"1.0"
            files[f"{layer_id}/json"] = json.dumps({"id": layer_id, "config": {}, "os": "linux"}).encode()
            files[f"{layer_id}/layer.tar"] = layer
            names.append(f"{layer_id}/layer.tar")
        manifest.append({"Config": config_name, "RepoTags": tags or None, "Layers": names})
        for tag in tags:
            repository, _, name = tag.rpartition(":")
            repositories.setdefault(repository, {})[name] = names[-1].split("/")[0]
    files["manifest.json"] = json.dumps(manifest).encode()
    if repositories:
        files["repositories"] = json.dumps(repositories).encode()
    return files


def _oci(config: bytes, layers: list[bytes], tags: list[str], *, extra_manifests: list[bytes] = ()) -> dict[str, bytes]:
    """The files of a newer Docker's ``docker save`` (OCI layout plus a compatible manifest.json)."""
    files = {f"blobs/sha256/{_sha(config)}": config}
    for layer in layers:
        files[f"blobs/sha256/{_sha(layer)}"] = layer
        legacy = json.dumps({"id": _sha(layer + config), "config": {}, "os": "linux"}).encode()  # v1 layer json
        files[f"blobs/sha256/{_sha(legacy)}"] = legacy
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": f"sha256:{_sha(config)}",
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": f"sha256:{_sha(layer)}",
                    "size": len(layer)} for layer in layers],
    }).encode()
    descriptors = []
    for blob in (manifest, *extra_manifests):
        files[f"blobs/sha256/{_sha(blob)}"] = blob
    for tag in tags:
        descriptors.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": f"sha256:{_sha(manifest)}",
                            "size": len(manifest), "annotations": {"io.containerd.image.name": f"docker.io/{tag}",
                                                                   "org.opencontainers.image.ref.name": tag.rsplit(":", 1)[1]}})
    for blob in extra_manifests:
        descriptors.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": f"sha256:{_sha(blob)}",
                            "size": len(blob)})
    files["index.json"] = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                                      "manifests": descriptors}).encode()
    files["oci-layout"] = b'{"imageLayoutVersion": "1.0.0"}'
    files["manifest.json"] = json.dumps([{"Config": f"blobs/sha256/{_sha(config)}", "RepoTags": tags,
                                          "Layers": [f"blobs/sha256/{_sha(layer)}" for layer in layers]}]).encode()
    return files


LAYERS = [_layer("base"), _layer("release a")]
CONFIG = _config(LAYERS)
IMAGE_ID = f"sha256:{_sha(CONFIG)}"


def _image_record(**body: Any) -> Record:
    return Record(id="f" * 64, kind="image", name="tiny-x86-64-cpu",
                  body={"image_id": IMAGE_ID, "tag": TAG, "tags": [TAG], **body},
                  created_at="2025-01-01T00:00:00+00:00", created_by="test@host", toolchain_version="0")


def test_a_good_classic_tarball_passes_and_says_what_it_holds(tmp_path: Path) -> None:
    tar = _write(tmp_path / "image.tar", _classic([(CONFIG, LAYERS, [TAG])]))
    checked = check_image_tarball(tar, image_id=IMAGE_ID, tags=[TAG])
    assert (checked.layout, checked.config_digest, checked.tags) == ("docker", IMAGE_ID, (TAG,))
    # saved by id (no tag at all) is fine too: loading it names nothing
    untagged = _write(tmp_path / "untagged.tar", _classic([(CONFIG, LAYERS, [])]))
    assert check_image_tarball(untagged, image_id=IMAGE_ID, tags=[TAG]).tags == ()


def test_a_good_oci_tarball_passes(tmp_path: Path) -> None:
    tar = _write(tmp_path / "image.tar", _oci(CONFIG, LAYERS, [TAG]))
    checked = check_image_tarball(tar, image_id=IMAGE_ID, tags=[TAG])
    assert (checked.layout, checked.config_digest, checked.tags) == ("docker+oci", IMAGE_ID, (TAG,))
    # saved by id: no descriptor in index.json, the image's manifest blob is still there (newer Docker)
    untagged = _write(tmp_path / "untagged.tar", _oci(CONFIG, LAYERS, []))
    assert check_image_tarball(untagged, image_id=IMAGE_ID, tags=[TAG]).tags == ()
    # the layer list comes from the same read: what a partial archive for a unit is made of
    assert checked.layers is not None and checked.layers.diff_ids == tuple(f"sha256:{_sha(x)}" for x in LAYERS)


def test_an_oci_only_tarball_is_refused_at_the_check_not_on_every_unit(tmp_path: Path) -> None:
    """Docker 20.10's `docker load` reads manifest.json; without it no unit could load the tarball or its layers."""
    only_oci = _oci(CONFIG, LAYERS, [TAG])
    del only_oci["manifest.json"]
    with pytest.raises(ImageTarballError, match="only the OCI layout.*toolchain package") as caught:
        check_image_tarball(_write(tmp_path / "oci.tar", only_oci), image_id=IMAGE_ID, tags=[TAG])
    assert isinstance(caught.value, CorruptStoreError)


def test_a_tampered_config_is_refused_by_its_bytes_not_its_name(tmp_path: Path) -> None:
    files = _classic([(CONFIG, LAYERS, [TAG])])
    # same file name (the packaged image's id), other bytes: a changed entrypoint, say
    files[f"{_sha(CONFIG)}.json"] = CONFIG.replace(b'"a"', b'"x"')
    tar = _write(tmp_path / "image.tar", files)
    with pytest.raises(CorruptStoreError, match="another image") as caught:
        check_image_tarball(tar, image_id=IMAGE_ID, tags=[TAG])
    assert "toolchain package" in str(caught.value)  # says what to do next
    oci = _oci(CONFIG, LAYERS, [TAG])
    oci[f"blobs/sha256/{_sha(CONFIG)}"] = CONFIG.replace(b'"a"', b'"x"')
    with pytest.raises(ImageTarballError, match="altered"):
        check_image_tarball(_write(tmp_path / "oci.tar", oci), image_id=IMAGE_ID, tags=[TAG])


def test_another_image_is_refused(tmp_path: Path) -> None:
    other_layers = [_layer("base"), _layer("release b")]
    other = _config(other_layers, "b")
    tar = _write(tmp_path / "image.tar", _classic([(other, other_layers, [TAG])]))
    with pytest.raises(ImageTarballError, match=f"holds image {'sha256:' + _sha(other)[:12]}"):
        check_image_tarball(tar, image_id=IMAGE_ID, tags=[TAG])


def test_two_images_are_refused_in_either_layout(tmp_path: Path) -> None:
    other_layers = [_layer("base"), _layer("miner")]
    other = _config(other_layers, "miner")
    tar = _write(tmp_path / "two.tar", _classic([(CONFIG, LAYERS, [TAG]), (other, other_layers, ["evil/miner:latest"])]))
    with pytest.raises(ImageTarballError, match="holds 2 images"):
        check_image_tarball(tar, image_id=IMAGE_ID, tags=[TAG])
    # a second manifest listed in index.json only (what a containerd-store engine would load too)
    other_manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                 "config": {"digest": f"sha256:{_sha(other)}", "size": len(other)}, "layers": []}).encode()
    files = _oci(CONFIG, LAYERS, [TAG], extra_manifests=[other_manifest])
    files[f"blobs/sha256/{_sha(other)}"] = other
    with pytest.raises(ImageTarballError, match="2 images in index.json"):
        check_image_tarball(_write(tmp_path / "two-oci.tar", files), image_id=IMAGE_ID, tags=[TAG])
    # a second image config hidden among the files, listed nowhere
    hidden = _classic([(CONFIG, LAYERS, [TAG])])
    hidden[f"{_sha(other)}.json"] = other
    with pytest.raises(ImageTarballError, match="second image config"):
        check_image_tarball(_write(tmp_path / "hidden.tar", hidden), image_id=IMAGE_ID, tags=[TAG])


def test_an_extra_tag_is_refused_wherever_it_is_named(tmp_path: Path) -> None:
    classic = _write(tmp_path / "tags.tar", _classic([(CONFIG, LAYERS, [TAG, "toolchain/tiny:production"])]))
    with pytest.raises(ImageTarballError, match="would tag the image toolchain/tiny:production"):
        check_image_tarball(classic, image_id=IMAGE_ID, tags=[TAG])
    oci = _write(tmp_path / "tags-oci.tar", _oci(CONFIG, LAYERS, [TAG, "library/nginx:latest"]))
    with pytest.raises(ImageTarballError, match="nginx:latest"):
        check_image_tarball(oci, image_id=IMAGE_ID, tags=[TAG])
    # only in the legacy repositories file
    files = _classic([(CONFIG, LAYERS, [TAG])])
    files["repositories"] = json.dumps({"toolchain/tiny": {"x86-64-cpu-0123456789ab": "x", "stable": "x"}}).encode()
    with pytest.raises(ImageTarballError, match="toolchain/tiny:stable"):
        check_image_tarball(_write(tmp_path / "repos.tar", files), image_id=IMAGE_ID, tags=[TAG])
    # every tag of the record is fine
    both = _write(tmp_path / "both.tar", _classic([(CONFIG, LAYERS, [TAG, "edge:v1"])]))
    assert check_image_tarball(both, image_id=IMAGE_ID, tags=[TAG, "edge:v1"]).tags == ("edge:v1", TAG)


def test_cut_short_and_not_a_tarball_are_refused(tmp_path: Path) -> None:
    good = _write(tmp_path / "image.tar", _classic([(CONFIG, LAYERS, [TAG])]))
    data = good.read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageTarballError):
        check_image_tarball(cut, image_id=IMAGE_ID, tags=[TAG])
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a docker save tarball" * 100)
    with pytest.raises(ImageTarballError, match="not a readable image tarball|neither manifest.json"):
        check_image_tarball(junk, image_id=IMAGE_ID, tags=[TAG])
    files = _classic([(CONFIG, LAYERS, [TAG])])
    del files[next(n for n in files if n.endswith("layer.tar"))]
    with pytest.raises(ImageTarballError, match="lacks the layer"):
        check_image_tarball(_write(tmp_path / "nolayer.tar", files), image_id=IMAGE_ID, tags=[TAG])
    with pytest.raises(InputNotFoundError):
        check_image_tarball(tmp_path / "missing.tar", image_id=IMAGE_ID, tags=[TAG])


def test_familiar_refs() -> None:
    assert familiar_ref("docker.io/library/nginx:1.27") == "nginx:1.27"
    assert familiar_ref("docker.io/toolchain/tiny") == "toolchain/tiny:latest"
    assert familiar_ref("localhost:5000/tiny") == "localhost:5000/tiny:latest"
    assert familiar_ref(TAG) == TAG


def test_a_user_tarball_without_sha256_file_is_checked_by_its_contents(tmp_path: Path) -> None:
    image = _image_record()
    good = _write(tmp_path / "good.tar", _classic([(CONFIG, LAYERS, [TAG])]))
    assert checked_image_tarball(good, None, image) == good  # no .sha256 beside it: the contents still decide
    two = _write(tmp_path / "two.tar", _classic([(CONFIG, LAYERS, [TAG]), (_config([_layer("x")], "x"), [_layer("x")], ["x:y"])]))
    with pytest.raises(CorruptStoreError, match="holds 2 images"):
        checked_image_tarball(two, None, image)
    # the whole-file digest is still checked first when known
    (tmp_path / "good.tar.sha256").write_text(f"{'0' * 64}  good.tar\n")
    with pytest.raises(CorruptStoreError, match="does not match its sha256"):
        checked_image_tarball(good, None, image)
    (tmp_path / "good.tar.sha256").write_text(f"{_sha(good.read_bytes())}  good.tar\n")
    assert checked_image_tarball(good, None, image) == good


def test_every_tarball_path_of_a_deploy_is_checked_once(tmp_path: Path) -> None:
    extra = _write(tmp_path / "extra.tar", _classic([(CONFIG, LAYERS, [TAG, "toolchain/tiny:production"])]))
    fleet = tmp_path / "fleet.toml"
    # --image-tar
    tarball = _release_archive(_image_record(), DeployConfig(ref="x", fleet=fleet, image_tar=extra), tmp_path)
    for _ in range(2):  # refused for every unit, from one check
        with pytest.raises(CorruptStoreError, match="production"):
            tarball.full()
    # the one `package --save` wrote (recorded in the image record)
    saved = _image_record(save={"path": str(extra), "sha256": _sha(extra.read_bytes())})
    with pytest.raises(CorruptStoreError, match="production"):
        _release_archive(saved, DeployConfig(ref="x", fleet=fleet), tmp_path).full()
    good = _write(tmp_path / "good.tar", _classic([(CONFIG, LAYERS, [TAG])]))
    ok = _image_record(save={"path": str(good), "sha256": _sha(good.read_bytes())})
    assert _release_archive(ok, DeployConfig(ref="x", fleet=fleet), tmp_path).full() == good


def test_a_containerd_store_tarball_with_an_index_and_attestation_passes(tmp_path: Path) -> None:
    """Docker's containerd image store names an image by its index digest and attaches build provenance."""
    files = _oci(CONFIG, LAYERS, [])  # manifest.json too: containerd's export writes one, and Docker 20.10 needs it
    manifest = next(v for k, v in files.items() if k.startswith("blobs/") and b'"schemaVersion"' in v)
    statement = b'{"_type": "https://in-toto.io/Statement/v0.1"}'
    attestation = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                              "config": {"digest": f"sha256:{_sha(b'{}')}", "size": 2},
                              "layers": [{"digest": f"sha256:{_sha(statement)}", "size": len(statement)}]}).encode()
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": f"sha256:{_sha(manifest)}",
         "size": len(manifest), "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": f"sha256:{_sha(attestation)}",
         "size": len(attestation), "annotations": {"vnd.docker.reference.type": "attestation-manifest"}},
    ]}).encode()
    for blob in (attestation, statement, b"{}", index):
        files[f"blobs/sha256/{_sha(blob)}"] = blob
    files["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": f"sha256:{_sha(index)}", "size": len(index),
         "annotations": {"io.containerd.image.name": f"docker.io/{TAG}"}}]}).encode()
    tar = _write(tmp_path / "image.tar", files)
    checked = check_image_tarball(tar, image_id=f"sha256:{_sha(index)}", tags=[TAG])
    assert (checked.layout, checked.config_digest, checked.tags) == ("docker+oci", IMAGE_ID, (TAG,))
    assert check_image_tarball(tar, image_id=IMAGE_ID, tags=[TAG]).config_digest == IMAGE_ID

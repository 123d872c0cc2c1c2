"""Send a unit only the layers it lacks: read an image tarball's layers, ask an engine which it holds, write
an archive with the rest.

A Docker engine stores layers by *chain id* (the layer plus every layer below it), so a layer can be
skipped on a unit only when the unit holds the same layer on the same stack of layers beneath it: the
image's first ``k`` layers are reusable when some image on the unit starts with the same ``k`` diff ids.
``docker load`` of an archive whose ``manifest.json`` lists *all* the image's layers but which carries
only the files of the missing ones loads the image: the engine skips a layer whose chain id it already
has without opening its file. Measured on Docker 20.10 (Debian's docker.io, what CI installs): a
model-only release of the demo image is a ~1 MB archive instead of ~450 MB. Where an engine does not skip
(it opens every listed layer), the load fails with "no such file" and nothing is loaded;
:mod:`toolchain.deploy.transfer` then sends the full archive.

Standard library only (``tarfile``); the layers are copied, never read into memory.
"""

from __future__ import annotations

import io
import json
import posixpath
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolchain.deploy.imagetar import MAX_JSON_BYTES, ImageTarballError
from toolchain.fileio import atomic_output


@dataclass(frozen=True, kw_only=True)
class ImageLayers:
    """The layers of the one image in a ``docker save`` tarball (classic or OCI layout with manifest.json).

    Attributes:
        path: The tarball.
        manifest: Its ``manifest.json`` entry (``Config``, ``RepoTags``, ``Layers``).
        diff_ids: The config's ``rootfs.diff_ids``, bottom layer first (the same order as ``Layers``).
        layer_sizes: Bytes of each layer file in the tarball.
    """

    path: Path
    manifest: dict[str, Any]
    diff_ids: tuple[str, ...]
    layer_sizes: tuple[int, ...]

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(self.manifest["Layers"])


def read_layers(path: Path) -> ImageLayers:
    """The layers of the (already checked, see :func:`toolchain.deploy.imagetar.check_image_tarball`) tarball.

    Raises:
        ImageTarballError: not a tarball, no single manifest.json entry, or layers that do not match the config.
    """
    try:
        return _read_layers(path)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ImageTarballError(f"{path} is not a readable image tarball ({exc}); save the image again with "
                                "`toolchain package REF --target T --save FILE`") from exc


def _read_layers(path: Path) -> ImageLayers:
    with tarfile.open(path, mode="r:") as archive:
        manifest = _json(archive, "manifest.json", path)
        if not isinstance(manifest, list) or len(manifest) != 1 or not isinstance(manifest[0], dict):
            raise ImageTarballError(f"{path}: manifest.json must list exactly one image")
        entry = manifest[0]
        config = _json(archive, _normal(entry.get("Config", "")), path)
        diff_ids = tuple((config.get("rootfs") or {}).get("diff_ids") or ())
        layers = entry.get("Layers") or []
        if len(layers) != len(diff_ids):
            raise ImageTarballError(f"{path}: manifest.json lists {len(layers)} layers but the config {len(diff_ids)}")
        sizes = tuple(_resolve(archive, _normal(layer), path).size for layer in layers)
    return ImageLayers(path=path, manifest=entry, diff_ids=diff_ids, layer_sizes=sizes)


def held_chains(client: Any) -> frozenset[tuple[str, ...]]:
    """Every stack of layers (diff ids, bottom first, each prefix of each image) the engine holds."""
    chains: set[tuple[str, ...]] = set()
    for image_id in client.api.images(quiet=True):
        try:
            layers = tuple((client.api.inspect_image(image_id).get("RootFS") or {}).get("Layers") or ())
        except Exception:  # noqa: BLE001 - an image removed meanwhile holds nothing
            continue
        chains.update(layers[:i] for i in range(1, len(layers) + 1))
    return frozenset(chains)


def reusable(diff_ids: Iterable[str], chains: frozenset[tuple[str, ...]]) -> int:
    """How many of the image's bottom layers the engine holding ``chains`` can reuse."""
    ids = tuple(diff_ids)
    count = 0
    while count < len(ids) and ids[: count + 1] in chains:
        count += 1
    return count


def write_partial(image: ImageLayers, skip: int, destination: Path) -> int:
    """Write an archive of ``image`` that carries only the layer files after the first ``skip``; its size.

    ``manifest.json`` still lists every layer and the config every diff id: the engine needs the whole
    stack to compute chain ids, and skips the ones it holds. ``repositories`` (a legacy index) is left out;
    the tags come from ``RepoTags``.
    """
    wanted = {_normal(layer) for layer in image.layers[skip:]}
    with tarfile.open(image.path, mode="r:") as source, atomic_output(destination) as out:
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
            manifest = json.dumps([image.manifest]).encode()
            info = tarfile.TarInfo("manifest.json")
            info.size, info.mode = len(manifest), 0o644
            archive.addfile(info, io.BytesIO(manifest))
            config = _normal(image.manifest["Config"])
            names = [config, *sorted(wanted)]
            added: set[str] = set()
            for name in names:
                _copy(source, archive, name, added, image.path)
    return destination.stat().st_size


def _copy(source: tarfile.TarFile, archive: tarfile.TarFile, name: str, added: set[str], path: Path) -> None:
    """Copy member ``name`` (and what a link points to, so the link resolves inside the new archive)."""
    if name in added:
        return
    member = source.getmember(name)
    added.add(name)
    if member.issym() or member.islnk():
        target = _link_target(member)
        _copy(source, archive, target, added, path)
        archive.addfile(member)
        return
    if not member.isfile():
        raise ImageTarballError(f"{path}: {name} is not a file")
    for parent in _parents(name):
        if parent not in added:
            added.add(parent)
            info = tarfile.TarInfo(parent)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            archive.addfile(info)
    fileobj = source.extractfile(member)
    assert fileobj is not None  # a regular file always has data
    archive.addfile(member, fileobj)


def _parents(name: str) -> list[str]:
    parts = name.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _link_target(member: tarfile.TarInfo) -> str:
    if member.islnk():
        return _normal(member.linkname)
    return _normal(posixpath.join(posixpath.dirname(member.name), member.linkname))


def _resolve(archive: tarfile.TarFile, name: str, path: Path) -> tarfile.TarInfo:
    """The regular file behind ``name``, following links inside the archive (older ``docker save`` links a
    layer saved twice)."""
    seen: set[str] = set()
    while True:
        try:
            member = archive.getmember(name)
        except KeyError as exc:
            raise ImageTarballError(f"{path}: has no {name}, which manifest.json lists") from exc
        if member.isfile():
            return member
        if not (member.issym() or member.islnk()) or name in seen:
            raise ImageTarballError(f"{path}: {name} is not a layer file")
        seen.add(name)
        name = _link_target(member)


def _json(archive: tarfile.TarFile, name: str, path: Path) -> Any:
    member = _resolve(archive, name, path)
    if member.size > MAX_JSON_BYTES:
        raise ImageTarballError(f"{path}: {name} is too large for an index file")
    handle = archive.extractfile(member)
    assert handle is not None
    try:
        return json.loads(handle.read())
    except ValueError as exc:
        raise ImageTarballError(f"{path}: {name} is not JSON") from exc


def _normal(name: str) -> str:
    return posixpath.normpath(str(name).lstrip("/"))

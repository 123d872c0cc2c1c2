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
:mod:`toolchain.images.load` then sends the full archive.

The tarball is read by :mod:`toolchain.images.tarball`, the same reader (and checks) that vets it before
a rollout, so a tarball that passed the check gives a layer list here: plain or compressed, the classic
``docker save`` layout or newer Docker's OCI layout beside its ``manifest.json``.

Standard library only (``tarfile``); the layers are copied, never read into memory, in one forward pass
over the tarball (cheap on a compressed one too).
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from toolchain.images.tarball import MAX_JSON_BYTES, ImageLayers, ImageTarballError, image_layers, normal_name
from toolchain.fileio import atomic_output

__all__ = ["MAX_JSON_BYTES", "ImageLayers", "held_chains", "read_layers", "reusable", "write_partial"]


def read_layers(path: Path) -> ImageLayers:
    """The layers of the tarball at ``path``, from the reader that checks it
    (:func:`toolchain.images.tarball.check_image_tarball`); a tarball read once is not read again.

    Raises:
        ImageTarballError: not a readable tarball, no single manifest.json entry, layers that do not match the
            config, or anything else the check refuses (the message says what to do).
    """
    return image_layers(Path(path))


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
    the tags come from ``RepoTags``. The archive is a plain tar, whatever the tarball was.
    """
    links = dict(image.links)
    needed: set[str] = set()
    for name in (image.config, *(normal_name(layer) for layer in image.layers[skip:])):
        while name not in needed:  # a link, and what it points to, so the link resolves in the new archive
            needed.add(name)
            if name not in links:
                break
            name = links[name]
    added: set[str] = set()
    with tarfile.open(image.path, mode="r:*") as source, atomic_output(destination) as out:
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
            manifest = json.dumps([image.manifest]).encode()
            info = tarfile.TarInfo("manifest.json")
            info.size, info.mode = len(manifest), 0o644
            archive.addfile(info, io.BytesIO(manifest))
            for member in source:  # in the tarball's order: a hard link comes after its target there too
                name = normal_name(member.name)
                if name not in needed or name in added or member.isdir():
                    continue
                if not (member.isfile() or member.issym() or member.islnk()):
                    raise ImageTarballError(f"{image.path}: {name} is not a file")
                for parent in _parents(name):
                    if parent not in added:
                        added.add(parent)
                        directory = tarfile.TarInfo(parent)
                        directory.type, directory.mode = tarfile.DIRTYPE, 0o755
                        archive.addfile(directory)
                added.add(name)
                archive.addfile(member, source.extractfile(member) if member.isfile() else None)
    missing = sorted(needed - added)
    if missing:
        destination.unlink(missing_ok=True)
        raise ImageTarballError(f"{image.path} no longer holds {', '.join(missing[:3])}, which it held when it was "
                                "checked: it changed since; deploy again")
    return destination.stat().st_size


def _parents(name: str) -> list[str]:
    parts = name.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]

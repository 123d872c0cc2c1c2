"""Check an image tarball before it is loaded on a unit: exactly one image, the packaged one, under its own tags.

``docker load`` loads every image a tarball lists and sets every tag it names, so a tarball that holds
a second image, or the packaged image under a tag the release does not own, would change what runs on
every unit of the fleet. Before anything is loaded, :func:`check_image_tarball` reads the tarball's
index files (never the layers into memory) and requires:

- one image: ``manifest.json`` (the classic ``docker save`` layout, also written by newer Docker next to
  its OCI files) lists exactly one entry, and ``index.json`` (the OCI layout newer Docker writes, with
  one descriptor per tag) points at exactly one manifest;
- the packaged one: the config blob's bytes, read from the tarball and hashed, are the record's image id
  (``docker load`` then checks each layer against the diff ids that config lists, and the unit checks
  the loaded id again), and each OCI blob it reads hashes to its name;
- its own tags: ``RepoTags``, ``repositories`` and the index's name annotations name only the record's
  tags (or none);
- nothing else: no other image config, image manifest or index anywhere in the archive.

Standard library only; the checks are on the tarball's structure, not a full hash of its layers (that
is the record's or the ``.sha256`` file's job, see :mod:`toolchain.deploy.rollout`).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from toolchain.errors import CorruptStoreError

# Index and config files are small; a JSON file larger than this in an image tarball is not something
# `docker save` writes, and is refused rather than read into memory.
MAX_JSON_BYTES = 16 << 20
_PEEK = 512
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"\x28\xb5\x2f\xfd")  # gzip, bzip2, xz, zstd
_MANIFEST_TYPES = {"application/vnd.oci.image.manifest.v1+json",
                   "application/vnd.docker.distribution.manifest.v2+json"}
_INDEX_TYPES = {"application/vnd.oci.image.index.v1+json",
                "application/vnd.docker.distribution.manifest.list.v2+json"}
_REDO = ("save the image again with `toolchain package REF --target T --save FILE` (one image, under the record's "
         "tag) and deploy that")


class ImageTarballError(CorruptStoreError):
    """An image tarball does not hold exactly the packaged image under its own tags."""


@dataclass(frozen=True, kw_only=True)
class ImageTarball:
    """What a checked tarball holds.

    Attributes:
        path: The tarball.
        layout: ``docker`` (manifest.json only), ``oci`` (index.json only) or ``docker+oci`` (both).
        config_digest: ``sha256:...`` of the image config read from the tarball.
        tags: The tags loading it sets (familiar form, ``repo:tag``).
    """

    path: Path
    layout: str
    config_digest: str
    tags: tuple[str, ...]


def familiar_ref(ref: str) -> str:
    """``ref`` the way ``docker images`` prints it: ``docker.io/library/`` dropped, ``:latest`` added if untagged."""
    name = ref.split("@", 1)[0]
    for prefix in ("docker.io/", "index.docker.io/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    if name.startswith("library/") and name.count("/") == 1:
        name = name[len("library/"):]
    if ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return name


def check_image_tarball(path: Path, *, image_id: str, tags: Iterable[str]) -> ImageTarball:
    """Refuse ``path`` unless it holds exactly the image ``image_id`` under (a subset of) ``tags``.

    Args:
        path: A ``docker save`` tarball (classic or OCI layout; compressed ones are read too, more slowly).
        image_id: The image record's ``image_id`` (``sha256:`` of its config; with Docker's containerd
            image store, the digest of the image's manifest or index is accepted too).
        tags: The record's tags; the tarball may carry these or none.

    Raises:
        InputNotFoundError: no such file.
        ImageTarballError: (a CorruptStoreError) what is wrong, and what to do next.
    """
    from toolchain.errors import InputNotFoundError

    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"image tarball {path} does not exist")
    allowed = {familiar_ref(t) for t in tags if t}
    try:
        with tarfile.open(path, mode="r:*") as archive:
            return _Inspection(path, archive, image_id=image_id, allowed=allowed).run()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ImageTarballError(f"{path} is not a readable image tarball ({exc}); {_REDO}") from exc


class _Inspection:
    """One pass over a tarball's member list, reading only the small JSON files it needs."""

    def __init__(self, path: Path, archive: tarfile.TarFile, *, image_id: str, allowed: set[str]) -> None:
        self.path, self.archive, self.image_id, self.allowed = path, archive, image_id, allowed
        self.files: dict[str, tarfile.TarInfo] = {}
        self.links: set[str] = set()
        size = path.stat().st_size
        with open(path, "rb") as head:
            plain = not head.read(6).startswith(_COMPRESSED)  # offsets are file offsets only in a plain tar
        for member in archive.getmembers():
            name = posixpath.normpath(member.name.lstrip("/")) if member.name else ""
            if member.name.startswith("/") or name == ".." or name.startswith("../"):
                self.fail(f"has a member outside the archive root ({member.name!r})")
            if member.isdir():
                continue
            if name in self.files or name in self.links:
                self.fail(f"holds {name} twice (the later copy would win on load)")
            if member.isfile():
                if plain and member.offset_data + member.size > size:
                    self.fail(f"ends inside {name}: it was cut short")
                self.files[name] = member
            else:
                self.links.add(name)  # older `docker save` links a layer saved twice; docker load keeps links inside
        self.ours: set[str] = set()  # index files and blobs of the one image (not scanned as "another image")

    def fail(self, why: str) -> NoReturn:
        raise ImageTarballError(f"image tarball {self.path} {why}; {_REDO}")

    # -- reading -------------------------------------------------------------------------------------------------
    def member(self, name: str, what: str) -> tarfile.TarInfo:
        member = self.files.get(name)
        if member is None:
            if name in self.links:
                self.fail(f"has {what} {name} as a link, not a file")
            self.fail(f"lacks {what} {name} (cut short, or not made by `docker save`)")
        return member

    def digest(self, name: str, what: str) -> str:
        """``sha256:`` of a member's bytes, streamed."""
        source = self.archive.extractfile(self.member(name, what))
        assert source is not None
        digest = hashlib.sha256()
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
        return "sha256:" + digest.hexdigest()

    def json(self, name: str, what: str) -> Any:
        member = self.member(name, what)
        if member.size > MAX_JSON_BYTES:
            self.fail(f"has a {member.size}-byte {what} {name}, far larger than `docker save` writes")
        source = self.archive.extractfile(member)
        assert source is not None
        try:
            return json.loads(source.read())
        except ValueError as exc:
            self.fail(f"has a {what} {name} that is not valid JSON ({exc})")

    def blob(self, digest: Any, what: str) -> str:
        """The member name of an OCI blob, after checking its bytes hash to ``digest``."""
        if not isinstance(digest, str) or not digest.startswith("sha256:") or len(digest) != 71:
            self.fail(f"names {what} by {digest!r}, not a sha256 digest")
        name = f"blobs/sha256/{digest[7:]}"
        if self.digest(name, what) != digest:
            self.fail(f"has {what} {name} whose bytes do not hash to its name: it was altered")
        self.ours.add(name)
        return name

    # -- the checks ----------------------------------------------------------------------------------------------
    def run(self) -> ImageTarball:
        has_manifest, has_index = "manifest.json" in self.files, "index.json" in self.files
        if not has_manifest and not has_index:
            self.fail("has neither manifest.json nor index.json: it is not a `docker save` tarball")
        tags: set[str] = set()
        config_from_manifest = self.check_manifest(tags) if has_manifest else None
        config_from_index, top = self.check_index(tags) if has_index else (None, None)
        if config_from_manifest and config_from_index and config_from_manifest != config_from_index:
            self.fail(f"lists one image in manifest.json ({config_from_manifest[:19]}) and another in index.json "
                      f"({config_from_index[:19]})")
        config = config_from_manifest or config_from_index
        if config is None:
            self.fail("lists no image (empty manifest.json and index.json)")
        if self.image_id not in {config, top}:
            self.fail(f"holds image {config[:19]}, but the image record is {self.image_id[:19]}: it is another image "
                      "(another build, or an altered config)")
        self.check_repositories(tags)
        extra = sorted(t for t in tags if t not in self.allowed)
        if extra:
            self.fail(f"would tag the image {', '.join(extra)} on every unit, and the record's tag is "
                      f"{', '.join(sorted(self.allowed)) or '(none)'}")
        self.check_no_other_image(config)
        layout = "docker+oci" if has_manifest and has_index else "docker" if has_manifest else "oci"
        return ImageTarball(path=self.path, layout=layout, config_digest=config, tags=tuple(sorted(tags)))

    def check_manifest(self, tags: set[str]) -> str | None:
        """The config digest of manifest.json's one entry (classic layout, and newer Docker's compatible copy)."""
        self.ours.add("manifest.json")
        entries = self.json("manifest.json", "manifest")
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            self.fail("has a manifest.json that is not a list of images")
        if not entries:
            return None
        if len(entries) != 1:
            listed = ", ".join(str(e.get("RepoTags") or e.get("Config")) for e in entries)
            self.fail(f"holds {len(entries)} images ({listed}); a release tarball holds only the packaged image")
        entry = entries[0]
        config_name = entry.get("Config")
        if not isinstance(config_name, str) or not config_name:
            self.fail("has a manifest.json entry without a Config")
        config_name = posixpath.normpath(config_name)
        self.ours.add(config_name)
        config = self.digest(config_name, "image config")
        if config_name.startswith("blobs/sha256/") and config != "sha256:" + config_name.rsplit("/", 1)[-1]:
            self.fail(f"has an image config {config_name} whose bytes do not hash to its name: it was altered")
        repo_tags = entry.get("RepoTags") or []
        if not isinstance(repo_tags, list) or not all(isinstance(t, str) for t in repo_tags):
            self.fail("has a manifest.json entry whose RepoTags is not a list of names")
        tags.update(familiar_ref(t) for t in repo_tags)
        layers = entry.get("Layers") or []
        if not isinstance(layers, list) or not all(isinstance(layer, str) for layer in layers):
            self.fail("has a manifest.json entry whose Layers is not a list of files")
        for layer in layers:
            name = posixpath.normpath(layer)
            if name not in self.files and name not in self.links:
                self.fail(f"lacks the layer {name} its manifest lists (cut short?)")
        return config

    def check_index(self, tags: set[str]) -> tuple[str | None, str | None]:
        """The config digest of index.json's one image, and the digest index.json points at (OCI layout)."""
        self.ours.update({"index.json", "oci-layout"})
        index = self.json("index.json", "OCI index")
        descriptors = index.get("manifests") if isinstance(index, dict) else None
        if not isinstance(descriptors, list) or not all(isinstance(d, dict) for d in descriptors):
            self.fail("has an index.json without a list of manifests")
        targets = sorted({str(d.get("digest")) for d in descriptors})
        if not targets:
            return None, None  # an image saved by id: manifest.json says which
        if len(targets) != 1:
            self.fail(f"holds {len(targets)} images in index.json ({', '.join(t[:19] for t in targets)}); a release "
                      "tarball holds only the packaged image")
        for descriptor in descriptors:
            tags.update(self.descriptor_tags(descriptor))
        top = descriptors[0]
        return self.resolve(top, depth=0), targets[0]

    def descriptor_tags(self, descriptor: dict[str, Any]) -> set[str]:
        annotations = descriptor.get("annotations") or {}
        if not isinstance(annotations, dict):
            self.fail("has an index.json descriptor whose annotations are not a map")
        found = set()
        full = annotations.get("io.containerd.image.name")
        if full:
            found.add(familiar_ref(str(full)))
        ref = annotations.get("org.opencontainers.image.ref.name")
        if ref and ("/" in str(ref) or ":" in str(ref)):
            found.add(familiar_ref(str(ref)))
        elif ref and not full:
            # A bare tag ("latest") with no repository: loading it names nothing of ours, so it must be one
            # of the record's tags' tag part (it is reported as such).
            bare = str(ref)
            matches = {t for t in self.allowed if t.rsplit(":", 1)[-1] == bare}
            found.update(matches or {f"?:{bare}"})
        return found

    def resolve(self, descriptor: dict[str, Any], depth: int) -> str:
        """The config digest of the one image a manifest or index descriptor stands for."""
        media_type = descriptor.get("mediaType")
        name = self.blob(descriptor.get("digest"), "manifest")
        body = self.json(name, "manifest")
        if not isinstance(body, dict):
            self.fail(f"has a manifest {name} that is not a JSON object")
        media_type = body.get("mediaType") or media_type
        if media_type in _INDEX_TYPES or "manifests" in body:
            if depth > 0:
                self.fail("nests image indexes; only one image, one platform, is deployed")
            children = body.get("manifests")
            if not isinstance(children, list) or not all(isinstance(c, dict) for c in children):
                self.fail(f"has an image index {name} without a list of manifests")
            images = []
            for child in children:
                if (child.get("annotations") or {}).get("vnd.docker.reference.type") == "attestation-manifest":
                    self.claim_attestation(child)  # build provenance attached to the image, not an image
                else:
                    images.append(child)
            if len(images) != 1:
                self.fail(f"has an image index with {len(images)} platform images; a release tarball holds one")
            return self.resolve(images[0], depth + 1)
        if media_type not in _MANIFEST_TYPES and "config" not in body:
            self.fail(f"has a manifest {name} of type {media_type!r}, not an image manifest")
        config = body.get("config") or {}
        config_name = self.blob(config.get("digest") if isinstance(config, dict) else None, "image config")
        for layer in body.get("layers") or []:
            if isinstance(layer, dict) and isinstance(layer.get("digest"), str):
                self.ours.add(f"blobs/sha256/{layer['digest'][7:]}")
        return "sha256:" + config_name.rsplit("/", 1)[-1]

    def claim_attestation(self, descriptor: dict[str, Any]) -> None:
        """Mark an attestation manifest (BuildKit provenance) and its blobs as part of the one image."""
        name = self.blob(descriptor.get("digest"), "attestation manifest")
        body = self.json(name, "attestation manifest")
        parts = [body.get("config"), *(body.get("layers") or [])] if isinstance(body, dict) else []
        for part in parts:
            if isinstance(part, dict) and isinstance(part.get("digest"), str):
                self.ours.add(f"blobs/sha256/{part['digest'][7:]}")

    def check_repositories(self, tags: set[str]) -> None:
        """The legacy ``repositories`` file ({repo: {tag: layer}}) names tags too."""
        if "repositories" not in self.files:
            return
        self.ours.add("repositories")
        repositories = self.json("repositories", "repositories file")
        if not isinstance(repositories, dict):
            self.fail("has a repositories file that is not a map")
        for repository, by_tag in repositories.items():
            for tag in (by_tag or {}) if isinstance(by_tag, dict) else ():
                tags.add(familiar_ref(f"{repository}:{tag}"))

    def check_no_other_image(self, config: str) -> None:
        """No other image config, manifest or index hides among the blobs and top-level files."""
        for name, member in self.files.items():
            if name in self.ours or not self.looks_like_json(member):
                continue
            if member.size > MAX_JSON_BYTES:
                self.fail(f"holds a {member.size}-byte JSON file {name}; `docker save` writes no such file")
            source = self.archive.extractfile(member)
            assert source is not None
            try:
                body = json.loads(source.read())
            except ValueError:
                continue  # not JSON after all (a layer whose first bytes look like it)
            if not isinstance(body, dict):
                continue
            if "rootfs" in body:
                self.fail(f"holds a second image config {name}; a release tarball holds only the packaged image")
            if body.get("mediaType") in _INDEX_TYPES or "manifests" in body:
                self.fail(f"holds another image index {name}")
            if body.get("mediaType") in _MANIFEST_TYPES or ("config" in body and "layers" in body):
                described = (body.get("config") or {}).get("digest") if isinstance(body.get("config"), dict) else None
                if described != config:  # newer Docker writes the image's manifest even when it has no tag
                    self.fail(f"holds another image manifest {name} (for {str(described)[:19]})")

    def looks_like_json(self, member: tarfile.TarInfo) -> bool:
        source = self.archive.extractfile(member)
        if source is None:
            return False
        head = source.read(_PEEK).lstrip()
        return not head and member.size > 0 or head[:1] in (b"{", b"[")

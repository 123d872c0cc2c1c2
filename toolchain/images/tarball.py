"""Read an image tarball once: check it before it is loaded on a unit, and list its layers for partial archives.

``docker load`` loads every image a tarball lists and sets every tag it names, so a tarball that holds
a second image, or the packaged image under a tag the release does not own, would change what runs on
every unit of the fleet. One reader, :func:`read_image_tarball`, makes a single pass over the tarball
(plain or compressed) and keeps only its small JSON files in memory (never the layers). From that one
read come both the check before anything is loaded (:func:`check_image_tarball`) and the layer list that
:mod:`toolchain.images.layers` builds partial archives from (:func:`image_layers`), so a tarball that
passes the check is one the units can be sent, and one the layer list cannot use is refused at the
check, not on every unit. The check requires:

- a layout Docker 20.10's ``docker load`` reads (Debian's docker.io, what CI installs, and the Docker of
  JetPack): ``manifest.json`` (the classic ``docker save`` layout, also written by newer Docker next to
  its OCI files), plain or gzip/bzip2/xz-compressed. A tarball with only the OCI ``index.json`` is
  refused: that ``docker load`` cannot load it, and its layer list is not in the form it reads;
- one image: ``manifest.json`` lists exactly one entry, whose layer files are all in the tarball and as
  many as its config's ``rootfs.diff_ids``, and ``index.json`` (when present) points at exactly one
  manifest, of the same image;
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
import threading
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from toolchain.errors import CorruptStoreError, InputNotFoundError

# Index and config files are small; a JSON file larger than this in an image tarball is not something
# `docker save` writes, and is refused rather than read into memory.
MAX_JSON_BYTES = 16 << 20
# All the JSON files of one tarball together (configs, manifests, indexes, v1 layer files) stay far below this.
MAX_JSON_TOTAL = 64 << 20
_PEEK = 512
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"\x28\xb5\x2f\xfd")  # gzip, bzip2, xz, zstd
_MANIFEST_TYPES = {"application/vnd.oci.image.manifest.v1+json",
                   "application/vnd.docker.distribution.manifest.v2+json"}
_INDEX_TYPES = {"application/vnd.oci.image.index.v1+json",
                "application/vnd.docker.distribution.manifest.list.v2+json"}
try:
    import lzma

    _LZMA_ERRORS: tuple[type[Exception], ...] = (lzma.LZMAError,)
except ImportError:  # a Python built without lzma reads no .xz tarball at all (tarfile says so)
    _LZMA_ERRORS = ()
_REDO = ("save the image again with `toolchain package REF --target T --save FILE` (one image, under the record's "
         "tag) and deploy that")


class ImageTarballError(CorruptStoreError):
    """An image tarball does not hold exactly the packaged image under its own tags."""


@dataclass(frozen=True, kw_only=True)
class ImageLayers:
    """The layers of the one image in a ``docker save`` tarball, as its ``manifest.json`` lists them.

    Attributes:
        path: The tarball (plain or compressed).
        manifest: Its ``manifest.json`` entry (``Config``, ``RepoTags``, ``Layers``).
        diff_ids: The config's ``rootfs.diff_ids``, bottom layer first (the same order as ``Layers``).
        layer_sizes: Bytes of each layer file in the tarball.
        compressed: Whether the tarball itself is compressed (``docker load`` reads it as it is).
        links: ``(member, target)`` of each link inside the tarball (older ``docker save`` links a layer
            saved twice), so a partial archive can carry what a link points to.
    """

    path: Path
    manifest: dict[str, Any]
    diff_ids: tuple[str, ...]
    layer_sizes: tuple[int, ...]
    compressed: bool = False
    links: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(self.manifest["Layers"])

    @property
    def config(self) -> str:
        """The member name of the image config."""
        return normal_name(self.manifest["Config"])


@dataclass(frozen=True, kw_only=True)
class ImageTarball:
    """What a checked tarball holds.

    Attributes:
        path: The tarball.
        layout: ``docker`` (manifest.json only) or ``docker+oci`` (manifest.json and index.json).
        config_digest: ``sha256:...`` of the image config read from the tarball.
        tags: The tags loading it sets (familiar form, ``repo:tag``).
        layers: Its layers, from the same read (what :mod:`toolchain.images.layers` sends).
    """

    path: Path
    layout: str
    config_digest: str
    tags: tuple[str, ...]
    layers: ImageLayers | None = None


@dataclass(frozen=True, kw_only=True)
class _Contents:
    """The identity-free result of reading a tarball: what :func:`check_image_tarball` then holds against a record."""

    layout: str
    config_digest: str
    top_digest: str | None  # what index.json points at (a containerd-store engine's image id)
    tags: frozenset[str]
    bare_refs: frozenset[str]  # OCI ref names with no repository ("latest"); judged against the record's tags
    layers: ImageLayers


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


def normal_name(name: str) -> str:
    """A member name as ``docker load`` resolves it inside the archive (no leading ``/`` or ``./``)."""
    return posixpath.normpath(str(name).lstrip("/"))


def is_compressed(path: Path) -> bool:
    """Whether ``path`` starts like a gzip, bzip2, xz or zstd stream (``docker load`` reads those as they are)."""
    with open(path, "rb") as head:
        return head.read(6).startswith(_COMPRESSED)


def verified_image_tarball(path: Path, sha256: str | None, *, image_id: str, tags: Iterable[str]) -> Path:
    """``path`` after checking it against ``sha256`` or its ``.sha256`` file, then its contents.

    ``package --save`` on an image already packaged rewrites the tarball and its ``.sha256`` file (the
    tag inside may differ), not the immutable image record, so either digest is accepted. The digests
    catch a tarball cut short or altered after it was saved; with neither (a user's ``--image-tar``
    without its ``.sha256``), nothing of the whole file is known in advance. Either way its index files
    are read next (:func:`check_image_tarball`): exactly one image, ``image_id``, tagged only with ``tags``,
    nothing else in it. (``docker load`` checks every layer against that config's diff ids, and the unit
    checks the loaded image's id.)

    Raises:
        InputNotFoundError: no such file.
        CorruptStoreError: a digest or the contents do not match; the message says why.
    """
    if not path.is_file():
        raise InputNotFoundError(f"image tarball {path} does not exist")
    sidecar = path.with_name(path.name + ".sha256")
    expected = [sha256] if sha256 else []
    if sidecar.is_file():
        words = sidecar.read_text(errors="replace").split()
        if not words or len(words[0]) != 64:
            raise CorruptStoreError(f"{sidecar} holds no sha256 (cut short?); write it again with `toolchain package "
                                    "--save`, or remove it to check the tarball by its contents only")
        expected.append(words[0].lower())
    if expected:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        if digest.hexdigest() not in expected:
            raise CorruptStoreError(f"image tarball {path} does not match its sha256 ({expected[0][:12]}...); "
                                    "it was altered or cut short: package it again with --save")
    check_image_tarball(path, image_id=image_id, tags=tags)
    return path


def check_image_tarball(path: Path, *, image_id: str, tags: Iterable[str]) -> ImageTarball:
    """Refuse ``path`` unless it holds exactly the image ``image_id`` under (a subset of) ``tags``.

    Args:
        path: A ``docker save`` tarball with ``manifest.json`` (classic layout, or newer Docker's OCI layout
            beside it); compressed ones are read too, more slowly.
        image_id: The image record's ``image_id`` (``sha256:`` of its config; with Docker's containerd
            image store, the digest of the image's manifest or index is accepted too).
        tags: The record's tags; the tarball may carry these or none.

    Returns:
        What it holds, its layer list included (the same one :func:`image_layers` gives).

    Raises:
        InputNotFoundError: no such file.
        ImageTarballError: (a CorruptStoreError) what is wrong, and what to do next.
    """
    path = Path(path)
    contents = read_image_tarball(path)
    allowed = {familiar_ref(t) for t in tags if t}
    found = set(contents.tags)
    for bare in contents.bare_refs:
        # A bare tag ("latest") with no repository: loading it names nothing of ours, so it must be one of the
        # record's tags' tag part (it is reported as such).
        found.update({t for t in allowed if t.rsplit(":", 1)[-1] == bare} or {f"?:{bare}"})

    def fail(why: str) -> NoReturn:
        raise ImageTarballError(f"image tarball {path} {why}; {_REDO}")

    config = contents.config_digest
    if image_id not in {config, contents.top_digest}:
        fail(f"holds image {config[:19]}, but the image record is {image_id[:19]}: it is another image "
             "(another build, or an altered config)")
    extra = sorted(t for t in found if t not in allowed)
    if extra:
        fail(f"would tag the image {', '.join(extra)} on every unit, and the record's tag is "
             f"{', '.join(sorted(allowed)) or '(none)'}")
    return ImageTarball(path=path, layout=contents.layout, config_digest=config, tags=tuple(sorted(found)),
                        layers=contents.layers)


def image_layers(path: Path) -> ImageLayers:
    """The layer list of the tarball at ``path``, from the same read (and checks) as :func:`check_image_tarball`.

    Raises:
        InputNotFoundError: no such file.
        ImageTarballError: a tarball the check refuses (the message says why and what to do).
    """
    return read_image_tarball(Path(path)).layers


# One read per tarball file: the check before a rollout and the layer list each unit's transfer needs come
# from it. Keyed by the file's identity and modification, so a rewritten tarball is read again.
_CACHE: dict[tuple[Any, ...], _Contents] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 8


def read_image_tarball(path: Path) -> _Contents:
    """Read ``path`` once (plain or compressed) and check its structure; identity checks are the caller's."""
    from toolchain.errors import InputNotFoundError

    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"image tarball {path} does not exist")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
    if cached is not None:
        return cached
    try:
        with tarfile.open(path, mode="r:*") as archive:
            contents = _Inspection(path, archive).run()
    except ImageTarballError:
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error, *_LZMA_ERRORS) as exc:  # a cut or corrupt stream
        why = " ".join(str(exc).split())  # tarfile lists each decompressor it tried, one per line
        raise ImageTarballError(f"{path} is not a readable image tarball, plain or gzip/bzip2/xz-compressed ({why}); "
                                f"{_REDO}") from exc
    with _CACHE_LOCK:
        while len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = contents
    return contents


class _Inspection:
    """One sequential pass over a tarball (cheap on a compressed one too), keeping only its small JSON files."""

    def __init__(self, path: Path, archive: tarfile.TarFile) -> None:
        self.path = path
        self.files: dict[str, tarfile.TarInfo] = {}
        self.links: dict[str, str] = {}  # link name -> target name (inside the archive)
        self.specials: set[str] = set()  # devices, fifos: never a layer
        self.data: dict[str, bytes] = {}  # the JSON-looking files, whole
        self.big: set[str] = set()  # JSON-looking files over MAX_JSON_BYTES (not read)
        self.compressed = is_compressed(path)
        size = path.stat().st_size  # member offsets are file offsets only in a plain tar
        total = 0
        for member in archive:
            name = normal_name(member.name) if member.name else ""
            if member.name.startswith("/") or name == ".." or name.startswith("../"):
                self.fail(f"has a member outside the archive root ({member.name!r})")
            if member.isdir():
                continue
            if name in self.files or name in self.links or name in self.specials:
                self.fail(f"holds {name} twice (the later copy would win on load)")
            if member.isfile():
                if not self.compressed and member.offset_data + member.size > size:
                    self.fail(f"ends inside {name}: it was cut short")
                self.files[name] = member
                total += self.take(archive, member, name)
                if total > MAX_JSON_TOTAL:
                    self.fail(f"holds more than {MAX_JSON_TOTAL >> 20} MiB of JSON files; `docker save` writes far less")
            elif member.issym() or member.islnk():
                self.links[name] = _link_target(member)  # older `docker save` links a layer saved twice
            else:
                self.specials.add(name)
        self.ours: set[str] = set()  # index files and blobs of the one image (not scanned as "another image")

    def take(self, archive: tarfile.TarFile, member: tarfile.TarInfo, name: str) -> int:
        """Keep a JSON-looking member's bytes; read through the rest when compressed (a cut stream shows here)."""
        source = archive.extractfile(member)
        assert source is not None  # a regular file always has data
        head = source.read(_PEEK)
        stripped = head.lstrip()
        if (stripped[:1] in (b"{", b"[")) or (not stripped and member.size > 0):
            if member.size > MAX_JSON_BYTES:
                self.big.add(name)
            else:
                self.data[name] = head + source.read()
                return member.size
        if self.compressed:  # reading forward is what reaching the next member costs anyway
            while source.read(1 << 20):
                pass
        return 0

    def fail(self, why: str) -> NoReturn:
        raise ImageTarballError(f"image tarball {self.path} {why}; {_REDO}")

    # -- reading -------------------------------------------------------------------------------------------------
    def bytes(self, name: str, what: str) -> bytes:
        if name not in self.files:
            if name in self.links:
                self.fail(f"has {what} {name} as a link, not a file")
            self.fail(f"lacks {what} {name} (cut short, or not made by `docker save`)")
        if name in self.big:
            self.fail(f"has a {self.files[name].size}-byte {what} {name}, far larger than `docker save` writes")
        if name not in self.data:
            self.fail(f"has a {what} {name} that is not valid JSON")
        return self.data[name]

    def digest(self, name: str, what: str) -> str:
        return "sha256:" + hashlib.sha256(self.bytes(name, what)).hexdigest()

    def json(self, name: str, what: str) -> Any:
        try:
            return json.loads(self.bytes(name, what))
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

    def regular(self, name: str, what: str) -> tarfile.TarInfo:
        """The regular file behind ``name``, following links inside the archive."""
        seen: set[str] = set()
        while name in self.links and name not in seen:
            seen.add(name)
            name = self.links[name]
        member = self.files.get(name)
        if member is None:
            if name in seen or name in self.specials:
                self.fail(f"has {what} {name} that is not a file (a link loop, or a device)")
            self.fail(f"lacks {what} {name} its manifest lists (cut short?)")
        return member

    # -- the checks ----------------------------------------------------------------------------------------------
    def run(self) -> _Contents:
        has_manifest, has_index = "manifest.json" in self.files, "index.json" in self.files
        if not has_manifest and not has_index:
            self.fail("has neither manifest.json nor index.json: it is not a `docker save` tarball")
        if not has_manifest:
            self.fail("has only the OCI layout (index.json, no manifest.json), which `docker load` on Docker 20.10 "
                      "(Debian's docker.io, as in CI) cannot load and whose layers cannot be sent to units one by one")
        tags: set[str] = set()
        bare: set[str] = set()
        config, layers = self.check_manifest(tags)
        config_from_index, top = self.check_index(tags, bare) if has_index else (None, None)
        if config_from_index and config != config_from_index:
            self.fail(f"lists one image in manifest.json ({config[:19]}) and another in index.json "
                      f"({config_from_index[:19]})")
        self.check_repositories(tags)
        self.check_no_other_image(config)
        return _Contents(layout="docker+oci" if has_index else "docker", config_digest=config, top_digest=top,
                         tags=frozenset(tags), bare_refs=frozenset(bare), layers=layers)

    def check_manifest(self, tags: set[str]) -> tuple[str, ImageLayers]:
        """The config digest and the layers of manifest.json's one entry (what `docker load` reads)."""
        self.ours.add("manifest.json")
        entries = self.json("manifest.json", "manifest")
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            self.fail("has a manifest.json that is not a list of images")
        if not entries:
            self.fail("lists no image in manifest.json (which `docker load` reads)")
        if len(entries) != 1:
            listed = ", ".join(str(e.get("RepoTags") or e.get("Config")) for e in entries)
            self.fail(f"holds {len(entries)} images ({listed}); a release tarball holds only the packaged image")
        entry = entries[0]
        config_name = entry.get("Config")
        if not isinstance(config_name, str) or not config_name:
            self.fail("has a manifest.json entry without a Config")
        config_name = normal_name(config_name)
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
        sizes = tuple(self.regular(normal_name(layer), "the layer").size for layer in layers)
        body = self.json(config_name, "image config")
        rootfs = body.get("rootfs") if isinstance(body, dict) else None
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
            self.fail(f"has an image config {config_name} without rootfs.diff_ids")
        if len(layers) != len(diff_ids):
            self.fail(f"is inconsistent: manifest.json lists {len(layers)} layers but the config {len(diff_ids)}")
        return config, ImageLayers(path=self.path, manifest=entry, diff_ids=tuple(diff_ids), layer_sizes=sizes,
                                   compressed=self.compressed, links=tuple(sorted(self.links.items())))

    def check_index(self, tags: set[str], bare: set[str]) -> tuple[str | None, str | None]:
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
            self.descriptor_tags(descriptor, tags, bare)
        return self.resolve(descriptors[0], depth=0), targets[0]

    def descriptor_tags(self, descriptor: dict[str, Any], tags: set[str], bare: set[str]) -> None:
        annotations = descriptor.get("annotations") or {}
        if not isinstance(annotations, dict):
            self.fail("has an index.json descriptor whose annotations are not a map")
        full = annotations.get("io.containerd.image.name")
        if full:
            tags.add(familiar_ref(str(full)))
        ref = annotations.get("org.opencontainers.image.ref.name")
        if ref and ("/" in str(ref) or ":" in str(ref)):
            tags.add(familiar_ref(str(ref)))
        elif ref and not full:
            bare.add(str(ref))

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
        for name in sorted(self.big - self.ours):
            self.fail(f"holds a {self.files[name].size}-byte JSON file {name}; `docker save` writes no such file")
        for name, data in self.data.items():
            if name in self.ours:
                continue
            try:
                body = json.loads(data)
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


def _link_target(member: tarfile.TarInfo) -> str:
    """The member a link points to, as a name inside the archive."""
    if member.islnk():
        return normal_name(member.linkname)
    return normal_name(posixpath.join(posixpath.dirname(normal_name(member.name)), member.linkname))

"""A workspace: the content-addressed blob store plus the registry, and reference resolution.

Its three parts may live in three places (a team shares the registry and the blobs; each user keeps
their own local state):

* the registry: ``--registry URI``, else ``$TOOLCHAIN_REGISTRY``, else ``sqlite:///ROOT/registry.db``;
* the blob store: ``--blobs DIR``, else ``$TOOLCHAIN_BLOBS``, else ROOT itself;
* local state (training run directories, caches, keys): always ROOT (``--workspace``, else
  ``$TOOLCHAIN_HOME``, else ``./.toolchain``).

With none of these set, a workspace directory holds all three::

    objects/ab/abcdef...   immutable blobs named by sha256
    tmp/                   in-flight blob writes (moved into objects/ atomically)
    registry.db            SQLite registry
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from toolchain.blobs import BlobStore, blob_dir
from toolchain.errors import InputNotFoundError, UsageError
from toolchain.hashing import is_hex_prefix
from toolchain.registry import Record, RegistryStore, Resolved, open_store

DEFAULT_DIRNAME = ".toolchain"
_VERSION_RE = re.compile(r"^v?(\d+)$")


def default_workspace_path() -> Path:
    """``$TOOLCHAIN_HOME`` when set, else ``./.toolchain``."""
    env = os.environ.get("TOOLCHAIN_HOME")
    return Path(env) if env else Path.cwd() / DEFAULT_DIRNAME


@dataclass(frozen=True, kw_only=True)
class WorkspaceLocation:
    """Where a workspace's local state, registry and blobs live (see the module docstring).

    Attributes:
        root: Local state; also the default home of the registry and the blobs.
        registry_uri: The registry store's URI (may carry credentials: print ``Workspace.registry.uri``).
        blobs: The blob store directory (holds ``objects/`` and ``tmp/``).
    """

    root: Path
    registry_uri: str = field(repr=False)  # may carry a password
    blobs: Path

    @classmethod
    def resolve(cls, root: Path, *, registry_uri: str | None = None, blobs: str | Path | None = None) -> WorkspaceLocation:
        """Options first, then ``$TOOLCHAIN_REGISTRY`` / ``$TOOLCHAIN_BLOBS``, then places under ``root``."""
        root = Path(root).absolute()
        uri = registry_uri or os.environ.get("TOOLCHAIN_REGISTRY") or f"sqlite:///{root / 'registry.db'}"
        blob_text = blobs if blobs is not None else os.environ.get("TOOLCHAIN_BLOBS")
        return cls(root=root, registry_uri=uri, blobs=blob_dir(blob_text) if blob_text else root)

    @property
    def default_registry(self) -> bool:
        """Whether the registry is the workspace's own SQLite file (it exists only once something was written)."""
        return self.registry_uri == f"sqlite:///{self.root / 'registry.db'}"

    def has_registry(self) -> bool:
        """Whether there is a registry to open without creating one: a named store, or an existing registry.db."""
        return not self.default_registry or (self.root / "registry.db").exists()


class Workspace:
    """Blob store + registry, with local state rooted at one directory.

    Args:
        root: Workspace directory for local state (created when missing).
        registry_uri: Registry store URI; defaults to ``$TOOLCHAIN_REGISTRY`` or
            ``sqlite:///<root>/registry.db``.
        blobs: Blob store directory (or ``file://`` URL); defaults to ``$TOOLCHAIN_BLOBS`` or ``root``.
    """

    def __init__(self, root: Path, *, registry_uri: str | None = None, blobs: str | Path | None = None) -> None:
        self.location = WorkspaceLocation.resolve(root, registry_uri=registry_uri, blobs=blobs)
        self.root = self.location.root
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"workspace {self.root} exists and is not a directory; pass --workspace DIR")
        self.root.mkdir(parents=True, exist_ok=True)
        self.blobs = BlobStore(self.location.blobs, create=self.location.blobs == self.root)
        self.registry: RegistryStore = open_store(self.location.registry_uri)

    def close(self) -> None:
        self.registry.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def resolve(self, ref: str, *, kind: str) -> Resolved:
        """Resolve a user reference to one record of ``kind``.

        Accepted forms: a full sha256 or a unique hex prefix (at least 4 characters), ``NAME``
        (latest version), ``NAME@vN`` / ``NAME@N``, ``NAME@latest`` and ``NAME@ALIAS``.
        """
        ref = ref.strip()
        if not ref:
            raise UsageError(f"empty {kind} reference")
        name, _, selector = ref.partition("@")
        if not selector:
            versions = self.registry.versions(kind, name)
            if versions:
                return Resolved(record=self._get(versions[-1].record_id), version=versions[-1])
            if is_hex_prefix(ref.lower()):
                return self._by_prefix(ref.lower(), kind)
            raise self._not_found(ref, kind)
        match = _VERSION_RE.match(selector)
        if match:
            number = int(match.group(1))
            for version in self.registry.versions(kind, name):
                if version.number == number:
                    return Resolved(record=self._get(version.record_id), version=version)
            raise self._not_found(ref, kind)
        if selector == "latest":
            return self.resolve(name, kind=kind)
        record_id = self.registry.get_alias(kind=kind, name=name, alias=selector)
        if record_id is None:
            raise self._not_found(ref, kind)
        return Resolved(record=self._get(record_id), version=self.registry.version_of(kind, name, record_id))

    def _by_prefix(self, prefix: str, kind: str) -> Resolved:
        matches = self.registry.find(kind=kind, id_prefix=prefix)
        if not matches:
            raise self._not_found(prefix, kind)
        if len(matches) > 1:
            shown = ", ".join(m.id[:12] for m in matches[:5])
            raise UsageError(f"'{prefix}' matches {len(matches)} {kind} records ({shown}...); type more characters")
        record = matches[0]
        return Resolved(record=record, version=self.registry.version_of(kind, record.name, record.id))

    def _get(self, record_id: str) -> Record:
        record = self.registry.get(record_id)
        if record is None:  # a version row always points at an existing record (foreign key)
            raise InputNotFoundError(f"record {record_id[:12]} is missing from the registry")
        return record

    def _not_found(self, ref: str, kind: str) -> InputNotFoundError:
        names = sorted({v.name for v in self.registry.versions(kind)})
        where = self.root if self.location.default_registry else self.registry.uri
        hint = f" Known {kind}s: {', '.join(names[:10])}." if names else f" There are no {kind}s in {where} yet."
        return InputNotFoundError(f"no {kind} matches '{ref}'.{hint} List them with `toolchain {kind_command(kind)} list`.")


def kind_command(kind: str) -> str:
    """The CLI group that lists records of ``kind``."""
    return {"dataset": "data"}.get(kind, "registry")

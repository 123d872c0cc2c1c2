"""Listing a data lake: an ImageFolder directory or a CSV/JSONL manifest of (uri, label[, group]).

URIs may be local paths or any fsspec URL. A manifest can only name files under the roots the user
named (the manifest's own directory, plus any ``--allow-root``): ``../../etc/passwd`` and symlinks
that lead elsewhere are quarantined as ``outside_source`` instead of being read.
"""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from toolchain.errors import BadInputError, InputNotFoundError, missing_extra

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"})
MANIFEST_NAMES = ("manifest.csv", "manifest.jsonl")
_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


@dataclass(frozen=True, kw_only=True)
class SourceItem:
    """One labelled image named by the lake.

    Attributes:
        uri: Absolute local path, or a URL with a scheme.
        label: Class label as written in the lake.
        camera: Camera id when the lake records one.
        sequence: Sequence (track) id when the lake records one.
        group: Explicit group key from a manifest's ``group`` column.
    """

    uri: str
    label: str
    camera: str = ""
    sequence: str = ""
    group: str = ""


@dataclass(frozen=True, kw_only=True)
class SourceRejection:
    """A lake entry refused before reading it."""

    uri: str
    label: str
    reason: str
    detail: str


@dataclass(frozen=True, kw_only=True)
class SourceListing:
    """What a lake names: readable items plus entries refused up front."""

    kind: str
    root: str
    items: tuple[SourceItem, ...]
    rejected: tuple[SourceRejection, ...]


def is_url(text: str) -> bool:
    """True for ``scheme://...`` (a single-letter scheme is a Windows drive, not a URL)."""
    if "://" not in text:  # the common case, without parsing
        return False
    scheme = urlparse(text).scheme
    return len(scheme) > 1 and "://" in text


def local_path(uri: str) -> str | None:
    """The local filesystem path of ``uri`` (plain path or ``file://``), or None for remote URLs."""
    if not is_url(uri):
        return uri
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme == "file" else None


def read_uri(uri: str) -> bytes:
    """Read all bytes of a local path or fsspec URL."""
    path = local_path(uri)
    if path is not None:
        with open(path, "rb") as f:
            return f.read()
    try:
        import fsspec
    except ImportError as exc:  # pragma: no cover - fsspec is in the [data] extra
        raise missing_extra("fsspec", "data") from exc
    with fsspec.open(uri, "rb") as f:
        return f.read()


def _normalise_root(root: str) -> str:
    path = local_path(root)
    if path is not None:
        return os.path.realpath(path)
    return root if root.endswith("/") else root + "/"


def is_inside(uri: str, roots: Sequence[str]) -> bool:
    """True when ``uri`` (after resolving ``..`` and symlinks) lies under one of ``roots``."""
    path = local_path(uri)
    if path is not None:
        real = os.path.realpath(path)
        for root in roots:
            if local_path(root) is None:
                continue
            base = _normalise_root(root)
            if real == base or real.startswith(base.rstrip(os.sep) + os.sep):
                return True
        return False
    parsed = urlparse(uri)
    clean = f"{parsed.scheme}://{parsed.netloc}{posixpath.normpath(parsed.path or '/')}"
    if ".." in (parsed.path or "").split("/"):
        return False
    return any(local_path(r) is None and clean.startswith(_normalise_root(r)) for r in roots)


def check_label(label: str, classes: Sequence[str] | None) -> str | None:
    """Why ``label`` is refused, or None when it is acceptable."""
    if not _LABEL_RE.match(label):
        return f"label '{label}' is empty or not a simple name (letters, digits, _ . -)"
    if classes is not None and label not in classes:
        return f"label '{label}' is not one of --classes {','.join(classes)}"
    return None


def list_source(source: str, *, allow_roots: Sequence[str] = (), classes: Sequence[str] | None = None) -> SourceListing:
    """List the images a lake names.

    Args:
        source: ImageFolder directory, or a ``.csv``/``.jsonl`` manifest (local path or URL).
        allow_roots: Extra directories/URL prefixes a manifest may point into.
        classes: Accepted labels; others are quarantined as ``unknown_label``. None accepts any
            well-formed label.

    Raises:
        InputNotFoundError: The source does not exist.
        BadInputError: The manifest is malformed (missing columns, bad JSON).
    """
    local = local_path(source)
    if local is not None:
        path = Path(local)
        if not path.exists():
            raise InputNotFoundError(f"source '{source}' does not exist; pass an ImageFolder directory or a .csv/.jsonl manifest")
        if path.is_dir():
            return _list_image_folder(path, allow_roots, classes)
        text = path.read_text(encoding="utf-8-sig")
        root = str(path.parent.resolve())
    else:
        try:
            text = read_uri(source).decode("utf-8-sig")
        except FileNotFoundError as exc:
            raise InputNotFoundError(f"manifest '{source}' does not exist") from exc
        root = source.rsplit("/", 1)[0] + "/"
    kind = "jsonl" if source.lower().endswith((".jsonl", ".ndjson")) else "csv"
    rows = _parse_jsonl(text, source) if kind == "jsonl" else _parse_csv(text, source)
    return _listing_from_rows(kind, root, rows, [root, *allow_roots], classes, base=root)


def _parse_csv(text: str, source: str) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text))
    fields = {f.strip().lower() for f in (reader.fieldnames or [])}
    if not ({"uri", "path"} & fields) or "label" not in fields:
        raise BadInputError(
            f"manifest {source} needs a header with 'uri' (or 'path') and 'label' columns; found {sorted(fields) or 'none'}"
        )
    rows = []
    for row in reader:
        if None in row:  # more fields than the header: usually an unquoted comma in a path
            raise BadInputError(
                f"{source} line {reader.line_num} has more fields than its header; quote values that contain commas"
            )
        rows.append({k.strip().lower(): (v or "").strip() for k, v in row.items()})
    return rows


def _parse_jsonl(text: str, source: str) -> list[dict[str, str]]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInputError(f"{source} line {number} is not valid JSON ({exc.msg}); fix or remove that line") from exc
        if not isinstance(value, dict) or not ({"uri", "path"} & value.keys()) or "label" not in value:
            raise BadInputError(f"{source} line {number} needs 'uri' (or 'path') and 'label' keys")
        rows.append({str(k).lower(): "" if v is None else str(v).strip() for k, v in value.items()})
    return rows


def _join(base: str, ref: str) -> str:
    if is_url(ref) or os.path.isabs(ref):
        return ref
    if local_path(base) is not None:
        return os.path.normpath(os.path.join(local_path(base) or "", ref))
    return base.rstrip("/") + "/" + ref


def _listing_from_rows(
    kind: str, root: str, rows: Iterable[dict[str, str]], roots: Sequence[str], classes: Sequence[str] | None, *, base: str
) -> SourceListing:
    items: list[SourceItem] = []
    rejected: list[SourceRejection] = []
    for row in rows:
        ref = row.get("uri") or row.get("path") or ""
        label = row.get("label", "")
        uri = _join(base, ref) if ref else ""
        if not ref:
            rejected.append(SourceRejection(uri="", label=label, reason="unreadable", detail="manifest row has an empty uri"))
            continue
        if not is_inside(uri, roots):
            rejected.append(SourceRejection(
                uri=ref, label=label, reason="outside_source",
                detail="path leaves the manifest's directory; name its root with --allow-root to permit it",
            ))
            continue
        problem = check_label(label, classes)
        if problem:
            rejected.append(SourceRejection(uri=uri, label=label, reason="unknown_label", detail=problem))
            continue
        items.append(SourceItem(
            uri=uri, label=label, camera=row.get("camera", ""), sequence=row.get("sequence", ""), group=row.get("group", "")
        ))
    return SourceListing(kind=kind, root=root, items=tuple(items), rejected=tuple(rejected))


def _list_image_folder(path: Path, allow_roots: Sequence[str], classes: Sequence[str] | None) -> SourceListing:
    root = path.resolve()
    metadata = _folder_metadata(root)
    roots = [str(root), *allow_roots]
    items: list[SourceItem] = []
    rejected: list[SourceRejection] = []
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise BadInputError(f"{path} has no class subdirectories; an ImageFolder lake looks like DIR/car/*.jpg, DIR/truck/*.jpg")
    for class_dir in class_dirs:
        label = class_dir.name
        label_problem = check_label(label, classes)
        for file_path, relative, is_link in _walk_files(class_dir, root):
            # Real files below a directory that is inside the lake are inside it; only links need resolving.
            if is_link and not is_inside(file_path, roots):
                rejected.append(SourceRejection(
                    uri=file_path, label=label, reason="outside_source", detail="symlink leads outside the lake directory"
                ))
                continue
            if os.path.splitext(file_path)[1].lower() not in IMAGE_EXTENSIONS:
                rejected.append(SourceRejection(
                    uri=file_path, label=label, reason="not_an_image", detail="file extension is not an image type"
                ))
                continue
            if label_problem:
                rejected.append(SourceRejection(uri=file_path, label=label, reason="unknown_label", detail=label_problem))
                continue
            meta = metadata.get(relative, {})
            items.append(SourceItem(
                uri=file_path, label=label, camera=meta.get("camera", ""), sequence=meta.get("sequence", ""),
                group=meta.get("group", ""),
            ))
    return SourceListing(kind="imagefolder", root=str(root), items=tuple(items), rejected=tuple(rejected))


def _walk_files(directory: Path, root: Path) -> Iterator[tuple[str, str, bool]]:
    """``(path, path relative to root with /, whether it or its directory is a symlink)``, sorted.

    Hidden entries are skipped; directory symlinks are not followed below the class folder (a
    symlinked class folder itself is listed, and each file in it is checked).
    """
    linked_dir = directory.is_symlink()
    prefix = os.path.relpath(directory, root).replace(os.sep, "/")
    stack = [(str(directory), prefix)]
    while stack:
        current, rel = stack.pop()
        with os.scandir(current) as entries:
            ordered = sorted(entries, key=lambda e: e.name)
        subdirs = []
        for entry in ordered:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                subdirs.append((entry.path, f"{rel}/{entry.name}"))
            elif entry.is_file():
                yield entry.path, f"{rel}/{entry.name}", linked_dir or entry.is_symlink()
        stack.extend(reversed(subdirs))


def _folder_metadata(root: Path) -> dict[str, dict[str, str]]:
    """Camera/sequence/group columns of an ImageFolder's own manifest, keyed by relative path."""
    for name in MANIFEST_NAMES:
        candidate = root / name
        if candidate.is_file():
            text = candidate.read_text(encoding="utf-8-sig")
            rows = _parse_jsonl(text, str(candidate)) if name.endswith(".jsonl") else _parse_csv(text, str(candidate))
            return {(r.get("path") or r.get("uri") or "").replace(os.sep, "/"): r for r in rows}
    return {}

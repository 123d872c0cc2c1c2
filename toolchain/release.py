"""The build that ships to a target: resolved from a reference, and re-hashed before anything leaves the workstation.

``package`` builds its image from it and ``deploy`` rolls that image out; both ask here, so neither imports the
other.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from toolchain.errors import InputNotFoundError

if TYPE_CHECKING:
    from toolchain.registry import Record
    from toolchain.targets.profile import Target
    from toolchain.workspace import Workspace


def resolve_build(workspace: Workspace, ref: str, target: Target) -> tuple[Record, tuple[str, ...]]:
    """The build ``ref`` stands for on ``target`` (per-target alias, version, or build id) and resolver warnings.

    Raises:
        InputNotFoundError: nothing of that name.
        BadInputError / MissingEnvironmentError: found, but no build matches the target.
    """
    from toolchain.registry.aliases import resolve_for_target

    errors: list[InputNotFoundError] = []
    for kind in ("build", "model", "artifact"):
        try:
            resolution = resolve_for_target(workspace, ref, target, kind=kind)
        except InputNotFoundError as exc:
            errors.append(exc)
            continue
        return resolution.build, resolution.warnings
    # The most useful message is the one about the kind that has aliases of that name.
    raise next((e for e in errors if "aliases of" in str(e)), errors[-1])


def verify_engine(workspace: Workspace, build: Record) -> Path:
    """Re-hash the build's blobs; the engine's path, or CorruptStoreError (nothing is shipped from a bad blob)."""
    from toolchain.registry.verify import verify_blobs

    blobs = list(dict.fromkeys([build.body["blob"], *(b.sha256 for b in workspace.registry.blob_refs(build.id))]))
    report = verify_blobs(workspace, blobs, scope=f"build {build.id[:12]}")
    if not report.passed:
        raise report.error()
    return workspace.blobs.path(build.body["blob"])


def checked_image_tarball(path: Path, sha256: str | None, image: Record) -> Path:
    """An image record's saved tarball after :func:`toolchain.images.tarball.verified_image_tarball`: its digest
    (``sha256`` or its ``.sha256`` file), then its contents against the record's image id and its tags (the one
    ``package`` built it under, then any added since). What ``deploy`` and ``bench --on`` load on a unit."""
    from toolchain.images.tarball import verified_image_tarball

    return verified_image_tarball(path, sha256, image_id=image.body["image_id"],
                                  tags=[image.body["tag"], *(image.body.get("tags") or [])])


def saved_image_tarball(image: Record) -> Path | None:
    """The tarball ``package --save`` wrote for an image record, checked (:func:`checked_image_tarball`); None when
    none was saved or the file is gone."""
    saved = image.body.get("save") or {}
    if not saved.get("path") or not Path(saved["path"]).is_file():
        return None
    return checked_image_tarball(Path(saved["path"]), saved.get("sha256"), image)

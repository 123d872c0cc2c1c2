"""``docker save``: an image out of its engine into a tarball (and its ``.sha256``), which units ``docker load``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toolchain.errors import MissingEnvironmentError
from toolchain.fileio import atomic_output, write_atomic


def save_image(image: Any, destination: Path, tag: str) -> dict[str, Any]:
    """``docker save`` into ``destination`` (atomically) and ``destination.sha256``; returns path, sha256, size."""
    import hashlib

    import docker.errors

    destination = Path(destination).absolute()
    digest = hashlib.sha256()
    sidecar = destination.with_name(destination.name + ".sha256")
    try:
        with atomic_output(destination) as out:
            for chunk in image.save(named=tag):
                out.write(chunk)
                digest.update(chunk)
            sha = digest.hexdigest()
            write_atomic(sidecar, f"{sha}  {destination.name}\n")  # before the tarball appears beside it
    except (docker.errors.DockerException, OSError) as exc:
        raise MissingEnvironmentError(f"docker save of {tag} into {destination} failed: {exc}; check the engine and the "
                                      "free space there, then rerun (the image is cached: only the save is redone)") from exc
    return {"path": str(destination), "sha256": sha, "size": destination.stat().st_size, "sha256_file": str(sidecar)}

"""An image on an engine by reference: the one it has, else pulled there (build images, base images)."""

from __future__ import annotations

from typing import Any

from toolchain.errors import MissingEnvironmentError


def ensure_image(client: Any, image: str) -> Any:
    """The image on the engine, pulled if missing; a clear error when neither works."""
    import docker.errors

    try:
        return client.images.get(image)
    except docker.errors.ImageNotFound:
        pass
    try:
        return client.images.pull(image)
    except docker.errors.DockerException as exc:
        raise MissingEnvironmentError(
            f"the build image {image} is not on the engine and could not be pulled ({exc}). Load it there "
            "(`docker load` / `docker pull` on the unit), or pass --build-image with an image the engine has"
        ) from exc

"""An image on an engine by reference: the one it has, else pulled there (build images, base images)."""

from __future__ import annotations

from typing import Any

from toolchain.errors import MissingEnvironmentError


def ensure_image(client: Any, image: str, *, role: str = "build image", option: str = "--build-image") -> Any:
    """The image on the engine, pulled if missing; a clear error when neither works.

    Args:
        client: A docker SDK client of the engine.
        image: The image reference.
        role: What the image is for, as the error names it (``build image``, ``base image``).
        option: The command's option that picks another image, as the error suggests it.
    """
    import docker.errors

    try:
        return client.images.get(image)
    except docker.errors.ImageNotFound:
        pass
    try:
        return client.images.pull(image)
    except docker.errors.DockerException as exc:
        raise MissingEnvironmentError(
            f"the {role} {image} is not on the engine and could not be pulled ({exc}). Load it there "
            f"(`docker load` / `docker pull` on that engine), or pass {option} with an image the engine has"
        ) from exc

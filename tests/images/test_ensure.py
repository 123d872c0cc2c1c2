"""ensure_image: the engine's image, else pulled, else an error naming the image's role and the option to change it."""

from __future__ import annotations

from typing import Any

import docker.errors
import pytest

from toolchain.errors import MissingEnvironmentError
from toolchain.images.ensure import ensure_image


class _Images:
    def __init__(self, have: set[str], pullable: set[str]) -> None:
        self.have, self.pullable = have, pullable
        self.pulled: list[str] = []

    def get(self, image: str) -> str:
        if image not in self.have:
            raise docker.errors.ImageNotFound(f"no such image: {image}")
        return f"got {image}"

    def pull(self, image: str) -> str:
        if image not in self.pullable:
            raise docker.errors.APIError(f"pull access denied for {image}")
        self.pulled.append(image)
        return f"pulled {image}"


class _Client:
    def __init__(self, have: set[str], pullable: set[str]) -> None:
        self.images = _Images(have, pullable)


def test_the_engines_image_is_used_and_a_missing_one_pulled() -> None:
    client: Any = _Client({"a:1"}, {"b:1"})
    assert ensure_image(client, "a:1") == "got a:1" and client.images.pulled == []
    assert ensure_image(client, "b:1") == "pulled b:1" and client.images.pulled == ["b:1"]


def test_an_image_neither_there_nor_pullable_names_its_role_and_option() -> None:
    client: Any = _Client(set(), set())
    with pytest.raises(MissingEnvironmentError, match=r"the build image c:1 .*--build-image"):
        ensure_image(client, "c:1")
    with pytest.raises(MissingEnvironmentError, match=r"the base image c:1 .*pull access denied.*--base-image"):
        ensure_image(client, "c:1", role="base image", option="--base-image")

"""Names on a Docker engine: an image reference's parts, and a model name as a name part.

``package`` names images with them and ``deploy`` names containers and volumes, so an image and the
containers that run it spell the model the same way.
"""

from __future__ import annotations


def split_tag(tag: str) -> tuple[str, str]:
    """``(repository, tag)`` of ``REPOSITORY[:TAG]`` (a registry host's port is not a tag)."""
    repository, sep, name = tag.rpartition(":")
    if not sep or "/" in name:
        return tag, "latest"
    return repository, name


def slug(text: str) -> str:
    """``text`` (a model name, without ``@version``) as a Docker container name part: ASCII letters, digits, ``_.-``."""
    cleaned = "".join(c if (c.isascii() and c.isalnum()) or c in "_.-" else "-"
                      for c in text.lower().split("@")[0]).strip("-._")
    return cleaned or "model"

"""A unit's release history, kept on the unit itself: the last ``retention`` releases' images stay, older go.

Each release a unit starts serving is tagged there as ``toolchain-releases/<model>:r<UTC time>``, so
``docker images`` on the unit shows its history, newest last, whichever workstation deployed it. A
rollback picks the newest release before the one serving (:func:`previous_release`) and needs no
transfer; after a successful rollout the images of older releases are removed (:func:`prune`), along
with a stopped ``-previous`` container that still holds one. Nothing here touches another model's images.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

HISTORY_REPOSITORY = "toolchain-releases"


@dataclass(frozen=True, kw_only=True)
class HistoryEntry:
    """One release a unit served: when it started (the tag) and its image."""

    tag: str
    image_id: str


def history_repository(model_slug: str) -> str:
    return f"{HISTORY_REPOSITORY}/{model_slug}"


def record_release(client: Any, model_slug: str, image_id: str, *, now: dt.datetime | None = None) -> str:
    """Tag ``image_id`` on the unit as the newest release of the model; the tag."""
    moment = (now or dt.datetime.now(dt.timezone.utc)).strftime("r%Y%m%dT%H%M%S%f")
    client.api.tag(image_id, history_repository(model_slug), moment)
    return f"{history_repository(model_slug)}:{moment}"


def history(client: Any, model_slug: str) -> list[HistoryEntry]:
    """The model's releases on the unit, oldest first."""
    prefix = history_repository(model_slug) + ":"
    entries = []
    for image in client.api.images(name=history_repository(model_slug)):
        for tag in image.get("RepoTags") or ():
            if tag.startswith(prefix):
                entries.append(HistoryEntry(tag=tag, image_id=image["Id"]))
    return sorted(entries, key=lambda e: e.tag)


def previous_release(client: Any, model_slug: str, serving_image: str) -> HistoryEntry | None:
    """The newest release before the one serving (another image), still on the unit; None if there is none."""
    for entry in reversed(history(client, model_slug)):
        if entry.image_id != serving_image:
            return entry
    return None


def prune(client: Any, model_slug: str, *, retention: int, keep: set[str], model_label: str) -> list[str]:
    """Remove the model's images beyond the newest ``retention`` releases; the image ids removed.

    Args:
        keep: Image ids never removed (the serving container's).
        model_label: Images labelled ``org.toolchain.model`` with this model (any version) and not in the
            history at all (loaded before the unit kept one) count as older than every release.
    """
    import docker.errors

    entries = history(client, model_slug)
    newest: list[str] = []
    for entry in reversed(entries):
        if entry.image_id not in newest:
            newest.append(entry.image_id)
    kept = set(newest[: max(1, retention)]) | keep
    stale = {entry.image_id for entry in entries} - kept
    for image in client.api.images(filters={"label": "org.toolchain.role=serve"}):
        labels = image.get("Labels") or {}
        if str(labels.get("org.toolchain.model", "")).split("@")[0] == model_label and image["Id"] not in kept:
            stale.add(image["Id"])
    removed = []
    for image_id in sorted(stale):
        holders = client.containers.list(all=True, filters={"ancestor": image_id})
        if any(c.status in ("running", "restarting") or c.labels.get("org.toolchain.role") != "serve" for c in holders):
            continue  # in use by something that runs, or by something not ours: kept
        try:
            for container in holders:
                container.remove(force=True)  # a stopped -previous of a release beyond the retention
            client.images.remove(image_id, force=True)
            removed.append(image_id)
        except docker.errors.APIError:
            pass  # another holder appeared meanwhile: kept until the next rollout
    return removed

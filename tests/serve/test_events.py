"""The events file rotates by size: a service that runs for months never fills the unit's disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolchain.errors import BadInputError
from toolchain.serve.events import RotatingFile


def test_events_rotate_by_size_and_keep_a_bounded_number_of_files(tmp_path: Path) -> None:
    path = tmp_path / "ev" / "events.jsonl"
    out = RotatingFile(path, max_bytes=1000, keep=2)
    lines = [json.dumps({"frame": i, "label": "car"}) + "\n" for i in range(400)]
    for line in lines:
        out.write(line)
    out.close()
    files = [path, path.with_name("events.jsonl.1"), path.with_name("events.jsonl.2")]
    assert all(f.is_file() and f.stat().st_size <= 1000 for f in files)
    assert not path.with_name("events.jsonl.3").exists()
    # the newest lines survive, in order, across the current file and the rotated ones
    kept = "".join(f.read_text() for f in reversed(files)).splitlines(keepends=True)
    assert kept == lines[-len(kept):] and len(kept) > 30
    assert sum(f.stat().st_size for f in files) <= 3 * 1000


def test_appends_to_an_existing_file_and_rotates_it_when_full(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("x" * 900 + "\n")
    out = RotatingFile(path, max_bytes=1000, keep=0)
    out.write("y" * 200 + "\n")  # does not fit: the old content is dropped (keep=0)
    out.close()
    assert path.read_text() == "y" * 200 + "\n" and not path.with_name("events.jsonl.1").exists()


def test_an_unwritable_events_path_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(BadInputError, match="writable file path"):
        RotatingFile(tmp_path / "file" / "events.jsonl")
    with pytest.raises(BadInputError, match="max-bytes"):
        RotatingFile(tmp_path / "e.jsonl", max_bytes=0)

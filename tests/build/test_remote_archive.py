"""What a remote build sends back is spooled to disk under a size cap and extracted flat, plain files only.

A stand-in container object plays the Docker engine only where ``run_in_container`` talks to it; the
archives it returns are real tar streams.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from toolchain.build.remote import MAX_OUTPUT_BYTES, ContainerJob, _untar, run_in_container
from toolchain.errors import BadInputError


def _archive(files: dict[str, bytes], *, links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        folder = tarfile.TarInfo("out")
        folder.type = tarfile.DIRTYPE
        archive.addfile(folder)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    return buffer.getvalue()


def _chunks(data: bytes, size: int = 4096) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


def test_plain_files_come_back_flat_and_nothing_else(tmp_path: Path) -> None:
    data = _archive({"out/model.onnx": b"engine", "out/sub/log.txt": b"log", "out/../../escape": b"x"},
                    links={"out/link": "/etc/passwd"})
    _untar(_chunks(data), tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["escape", "log.txt", "model.onnx"]
    assert (tmp_path / "out" / "model.onnx").read_bytes() == b"engine"
    assert not (tmp_path / "escape").exists()


def test_a_stream_past_the_cap_is_stopped_and_leaves_nothing(tmp_path: Path) -> None:
    pulled = 0
    closed = []

    class Endless:
        """An engine stream that never ends (a unit that misbehaves)."""

        def __iter__(self) -> Iterator[bytes]:
            nonlocal pulled
            for _ in itertools.count():
                pulled += 1
                yield b"\0" * (1 << 20)

        def close(self) -> None:
            closed.append(True)

    out = tmp_path / "out"
    with pytest.raises(BadInputError, match="more than 4.0 MiB.*nothing was kept"):
        _untar(Endless(), out, limit=4 << 20)
    assert pulled == 5 and closed  # stopped at the cap, not read to the end
    assert list(out.iterdir()) == []  # the partial spool file is gone
    assert MAX_OUTPUT_BYTES == 8 << 30


def test_an_unreadable_archive_is_refused(tmp_path: Path) -> None:
    import gzip

    with pytest.raises(BadInputError, match="not a readable archive"):
        _untar(_chunks(b"\x01" * 5000), tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []
    # the engine sends a plain tar: a compressed one (which could expand past the cap) is not opened
    with pytest.raises(BadInputError, match="not a readable archive"):
        _untar(_chunks(gzip.compress(_archive({"out/model.onnx": b"\0" * 100000}))), tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


class _Container:
    """The engine side of one container: get_archive returns what the 'builder' left in OUTDIR."""

    def __init__(self, archive: Any) -> None:
        self.archive, self.removed = archive, False

    def put_archive(self, path: str, data: bytes) -> bool:
        return True

    def start(self) -> None:
        pass

    def wait(self, timeout: float) -> dict[str, int]:
        return {"StatusCode": 0}

    def logs(self, **_: Any) -> bytes:
        return b"built\n"

    def get_archive(self, path: str) -> tuple[Any, dict[str, Any]]:
        return self.archive, {"name": "out"}

    def kill(self) -> None:
        pass

    def remove(self, force: bool = False) -> None:
        self.removed = True


class _Client:
    def __init__(self, container: _Container) -> None:
        image = type("Image", (), {"id": "sha256:" + "b" * 64})()
        self.images = type("Images", (), {"get": staticmethod(lambda name: image)})()
        self.containers = type("Containers", (), {"create": staticmethod(lambda *a, **k: container)})()


def _job(tmp_path: Path, **kwargs: Any) -> ContainerJob:
    script = tmp_path / "builder.py"
    script.write_text("print('stand-in')\n")
    return ContainerJob(image="build:1", artifact_name="model.onnx", script=script, request={"x": 1}, **kwargs)


def test_run_in_container_brings_back_a_checked_engine_under_the_cap(tmp_path: Path) -> None:
    engine = b"the engine bytes" * 100
    result = json.dumps({"engine_sha256": hashlib.sha256(engine).hexdigest()}).encode()
    container = _Container(_chunks(_archive({"out/model.onnx": engine, "out/result.json": result})))
    outcome = run_in_container(_Client(container), _job(tmp_path), tmp_path / "out")
    assert (outcome.out_dir / "model.onnx").read_bytes() == engine and container.removed


def test_run_in_container_refuses_an_oversized_output_and_removes_the_container(tmp_path: Path) -> None:
    engine = b"e" * (64 << 10)
    result = json.dumps({"engine_sha256": hashlib.sha256(engine).hexdigest()}).encode()
    container = _Container(_chunks(_archive({"out/model.onnx": engine, "out/result.json": result})))
    with pytest.raises(BadInputError, match="more than 32768 bytes"):
        run_in_container(_Client(container), _job(tmp_path, max_output_bytes=32 << 10), tmp_path / "out")
    assert container.removed and list((tmp_path / "out").iterdir()) == []

"""The hand-off folder is replaced in one step, and its permissions follow the umask without touching it."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from toolchain.errors import UsageError
from toolchain.handoff import folders
from toolchain.handoff.folders import REPORT_FILE, current_umask, exchange, normal_permissions, staged_folder

SWAPS = 60


def _write(stage: Path, version: int) -> None:
    (stage / "1").mkdir()
    (stage / "1" / "model.onnx").write_bytes(b"x" * 4096)
    (stage / REPORT_FILE).write_text(f'{{"version": {version}}}')


@pytest.fixture
def slow_renames(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every rename takes a little longer afterwards: any moment between two renames lasts long enough to be seen."""
    rename, path_rename = os.rename, Path.rename

    def slow_os_rename(*args: object, **kwargs: object) -> None:
        rename(*args, **kwargs)  # type: ignore[arg-type]
        time.sleep(0.01)

    def slow_path_rename(self: Path, target: object) -> Path:
        moved = path_rename(self, target)  # type: ignore[arg-type]
        time.sleep(0.01)
        return moved

    monkeypatch.setattr(os, "rename", slow_os_rename)
    monkeypatch.setattr(Path, "rename", slow_path_rename)


def test_a_reader_polling_the_destination_never_finds_it_missing_or_partial(tmp_path: Path, slow_renames: None) -> None:
    if not exchange_supported(tmp_path):
        pytest.skip("renameat2(RENAME_EXCHANGE) is unsupported here: the two-rename fallback has a gap by design")
    destination = tmp_path / "repository" / "classifier"
    with staged_folder(destination) as stage:
        _write(stage, 0)
    seen: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def poll() -> None:  # what Triton's poller does: is the model's folder there, with its files?
        while not stop.is_set():
            try:
                seen.append((destination / REPORT_FILE).read_text())
                if not (destination / "1" / "model.onnx").is_file():
                    failures.append("the model file was missing")
            except OSError as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        for version in range(1, SWAPS + 1):
            with staged_folder(destination) as stage:
                _write(stage, version)
    finally:
        stop.set()
        reader.join()
    assert not failures, f"{len(failures)} of {len(seen) + len(failures)} reads failed, first: {failures[0]}"
    # The reader's last read may have started before the last swap: check the order it saw, then the end state.
    versions = [json.loads(text)["version"] for text in seen]
    assert len(seen) > SWAPS and versions == sorted(versions), "a reader never goes back to an older folder"
    assert (destination / REPORT_FILE).read_text() == f'{{"version": {SWAPS}}}'
    assert sorted(p.name for p in destination.parent.iterdir()) == ["classifier"]  # no staging or old folder left


def exchange_supported(directory: Path) -> bool:
    (directory / "probe-a").mkdir()
    (directory / "probe-b").mkdir()
    try:
        return exchange(directory / "probe-a", directory / "probe-b")
    finally:
        (directory / "probe-a").rmdir()
        (directory / "probe-b").rmdir()


def test_exchange_swaps_two_folders_and_says_why_it_cannot(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "from-a").touch()
    if not exchange(tmp_path / "a", tmp_path / "b"):
        pytest.skip("renameat2(RENAME_EXCHANGE) is unsupported here")
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["from-a"] and not any((tmp_path / "a").iterdir())
    with pytest.raises(FileNotFoundError):
        exchange(tmp_path / "a", tmp_path / "missing")


def test_where_exchange_is_unsupported_the_two_renames_still_replace_the_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(folders, "exchange", lambda first, second: False)
    destination = tmp_path / "out"
    for version in range(3):
        with staged_folder(destination) as stage:
            _write(stage, version)
        assert (destination / REPORT_FILE).read_text() == f'{{"version": {version}}}'
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    destination.joinpath("1", "model.onnx").unlink()
    (destination / "1").rmdir()
    (destination / REPORT_FILE).unlink()
    with staged_folder(destination) as stage:  # an empty folder is replaced by a single rename
        _write(stage, 9)
    assert (destination / REPORT_FILE).read_text() == '{"version": 9}'


def test_a_failed_hand_off_leaves_the_previous_one_and_a_foreign_folder_is_refused(tmp_path: Path) -> None:
    destination = tmp_path / "out"
    with staged_folder(destination) as stage:
        _write(stage, 1)
    with pytest.raises(RuntimeError), staged_folder(destination) as stage:
        _write(stage, 2)
        raise RuntimeError("a check failed")
    assert (destination / REPORT_FILE).read_text() == '{"version": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").touch()
    with pytest.raises(UsageError, match="did not write"), staged_folder(tmp_path / "foreign"):
        pass


@pytest.fixture
def umask_027() -> object:
    previous = os.umask(0o027)
    yield
    os.umask(previous)


def test_permissions_follow_the_umask_which_is_read_and_never_set(
        tmp_path: Path, umask_027: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_umask(mask: int) -> int:  # setting it, even back, races every other thread that creates a file
        raise AssertionError(f"os.umask({oct(mask)}) was called")

    monkeypatch.setattr(os, "umask", no_umask)
    assert current_umask() == 0o027
    destination = tmp_path / "out"
    with staged_folder(destination) as stage:
        _write(stage, 1)
        (stage / "1" / "model.onnx").chmod(0o600)  # as mkstemp leaves it
    with staged_folder(destination) as stage:  # the replacing swap too
        _write(stage, 2)
    assert stat.S_IMODE(destination.stat().st_mode) == 0o750
    assert stat.S_IMODE((destination / "1").stat().st_mode) == 0o750
    assert stat.S_IMODE((destination / "1" / "model.onnx").stat().st_mode) == 0o640
    single = tmp_path / "single.txt"
    single.write_text("x")
    single.chmod(0o600)
    normal_permissions(single)
    assert stat.S_IMODE(single.stat().st_mode) == 0o640


def test_without_proc_the_umask_is_measured_with_a_probe_folder(
        umask_027: None, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = open

    def no_proc(file: object, *args: object, **kwargs: object) -> object:
        if str(file).startswith("/proc/"):
            raise FileNotFoundError(file)
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", no_proc)
    monkeypatch.setattr(os, "umask", lambda mask: pytest.fail("os.umask was called"))
    assert current_umask() == 0o027

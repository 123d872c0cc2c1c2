"""Tests of the synthetic data lake generator (toolchain.synth.lake)."""

from __future__ import annotations

import csv
import hashlib
import re
from collections import defaultdict
from pathlib import Path

import pytest
from PIL import Image, UnidentifiedImageError

from toolchain.errors import BadInputError
from toolchain.synth.lake import (
    BOMB_SIDE,
    CLASSES,
    CORRUPT_KINDS,
    MANIFEST_NAME,
    LakeConfig,
    LakeReport,
    _plan,
    generate_lake,
)

MIN_SIZE, MAX_SIZE = 48, 160


def _manifest(out: Path) -> list[dict[str, str]]:
    with open(out / MANIFEST_NAME, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == ["path", "label", "camera", "sequence"]
        return list(reader)


def _digests(out: Path) -> dict[str, str]:
    return {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LakeReport, list[int]]:
    out = tmp_path_factory.mktemp("lake") / "lake"
    calls: list[int] = []
    config = LakeConfig(images=60, seed=3, corrupt=5, cameras=4, workers=2, min_size=MIN_SIZE, max_size=MAX_SIZE)
    report = generate_lake(out, config, progress=calls.append)
    return out, report, calls


def test_report_and_counts(lake: tuple[Path, LakeReport, list[int]]) -> None:
    out, report, calls = lake
    rows = _manifest(out)
    valid = [r for r in rows if r["sequence"]]
    assert report.out == out
    assert report.images == len(valid) == 60
    assert report.corrupt == len(rows) - len(valid) == 5
    assert sum(report.per_class.values()) == 60
    assert set(report.per_class) == set(CLASSES) and all(n > 0 for n in report.per_class.values())
    for label in CLASSES:
        assert report.per_class[label] == sum(r["label"] == label for r in valid)
    assert report.sequences == len({r["sequence"] for r in valid})
    assert report.cameras == len({r["camera"] for r in valid}) <= 4
    assert report.seconds > 0
    assert sum(calls) == 60 and all(n > 0 for n in calls)


def test_manifest_matches_files(lake: tuple[Path, LakeReport, list[int]]) -> None:
    out, _, _ = lake
    rows = _manifest(out)
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {MANIFEST_NAME}
    assert {r["path"] for r in rows} == on_disk
    assert len(rows) == len(on_disk)
    assert not list(out.glob(".*"))  # no temp file left behind
    for row in rows:
        folder, name = row["path"].split("/")
        assert folder == row["label"] and folder in CLASSES
        if row["sequence"]:
            assert re.fullmatch(r"cam\d{2}", row["camera"])
            assert re.fullmatch(r"seq\d{6}", row["sequence"])
            assert name.startswith(f"{row['camera']}_{row['sequence']}_f") and name.endswith(".jpg")
        else:
            assert row["camera"] == "" and name.startswith("bad_")


def test_valid_images_decode_in_size_range(lake: tuple[Path, LakeReport, list[int]]) -> None:
    out, _, _ = lake
    sizes = set()
    for row in _manifest(out):
        if not row["sequence"]:
            continue
        with Image.open(out / row["path"]) as image:
            image.load()
            assert image.format == "JPEG" and image.mode == "RGB"
            width, height = image.size
        assert MIN_SIZE <= width <= MAX_SIZE and MIN_SIZE <= height <= MAX_SIZE
        sizes.add(image.size)
    assert len(sizes) > 10  # resolutions vary


def test_sequences_are_multi_frame_tracks(lake: tuple[Path, LakeReport, list[int]]) -> None:
    out, _, _ = lake
    tracks: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in _manifest(out):
        if row["sequence"]:
            tracks[row["sequence"]].append(row)
    ordered = sorted(tracks)
    for sequence in ordered:
        frames = tracks[sequence]
        assert len({r["camera"] for r in frames}) == 1 and len({r["label"] for r in frames}) == 1
        names = sorted(r["path"].rsplit("_f", 1)[1] for r in frames)
        assert names == sorted(f"{i}.jpg" for i in range(len(frames)))
        # only the last sequence may be cut short to hit the exact image count
        assert 3 <= len(frames) <= 6 or (sequence == ordered[-1] and len(frames) >= 1)


def test_corrupt_files_are_bad_as_named(lake: tuple[Path, LakeReport, list[int]], monkeypatch: pytest.MonkeyPatch) -> None:
    out, _, _ = lake
    bad = {r["path"].rsplit("_", 1)[1].removesuffix(".jpg"): out / r["path"] for r in _manifest(out) if not r["sequence"]}
    assert set(bad) == set(CORRUPT_KINDS)

    with Image.open(bad["truncated"]) as image, pytest.raises(OSError):
        image.load()
    assert bad["zero"].stat().st_size == 0
    with pytest.raises(UnidentifiedImageError):
        Image.open(bad["text"])
    with pytest.raises(Image.DecompressionBombError):
        Image.open(bad["bomb"])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with Image.open(bad["bomb"]) as image:
        assert image.size == (BOMB_SIDE, BOMB_SIDE) and image.size[0] * image.size[1] > 1e9
    assert bad["bomb"].stat().st_size < 10_000
    with Image.open(bad["tiny"]) as image:
        image.load()
        assert image.size == (8, 8)


def test_byte_identical_whatever_the_workers(tmp_path: Path) -> None:
    common = dict(images=30, seed=11, corrupt=5, cameras=3, min_size=40, max_size=120)
    one = generate_lake(tmp_path / "one", LakeConfig(workers=1, **common))
    two = generate_lake(tmp_path / "two", LakeConfig(workers=2, **common))
    assert one.per_class == two.per_class
    digests = _digests(tmp_path / "one")
    assert len(digests) == 30 + 5 + 1
    assert digests == _digests(tmp_path / "two")

    other = generate_lake(tmp_path / "other", LakeConfig(workers=1, **{**common, "seed": 12}))
    shared = set(_digests(tmp_path / "other").values()) & set(digests.values())
    assert other.images == 30 and len(shared) <= 2  # only the seed-free zero-byte and text files


def test_plan_is_roughly_balanced_with_some_hard_sequences() -> None:
    plan = _plan(LakeConfig(images=20_000, seed=0))
    assert sum(seq[3] for seq in plan) == 20_000
    cars = sum(seq[3] for seq in plan if seq[1] == "car") / 20_000
    assert 0.5 < cars < 0.62
    hard = sum(seq[4] for seq in plan) / len(plan)
    assert 0.015 < hard < 0.05


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"images": 0}, "images"),
        ({"images": -5}, "images"),
        ({"images": "10"}, "integer"),
        ({"images": True}, "integer"),
        ({"images": 10, "corrupt": -1}, "corrupt"),
        ({"images": 10, "cameras": 0}, "cameras"),
        ({"images": 10, "cameras": 100}, "cameras"),
        ({"images": 10, "workers": -1}, "workers"),
        ({"images": 10, "seed": -1}, "seed"),
        ({"images": 10, "min_size": 200, "max_size": 100}, "min_size"),
        ({"images": 10, "min_size": 4}, "min_size"),
        ({"images": 10, "max_size": 100_000}, "max_size"),
    ],
)
def test_invalid_config_is_bad_input(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        LakeConfig(**kwargs)  # type: ignore[arg-type]


def test_refuses_non_empty_or_file_output(tmp_path: Path) -> None:
    config = LakeConfig(images=3, workers=1, cameras=1)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep me")
    with pytest.raises(BadInputError, match="choose an empty directory or delete it"):
        generate_lake(busy, config)
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]

    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(BadInputError, match="is a file"):
        generate_lake(a_file, config)

    empty = tmp_path / "empty"
    empty.mkdir()
    report = generate_lake(empty, config)
    assert report.images == 3 and (empty / MANIFEST_NAME).exists()
    with pytest.raises(BadInputError, match="not empty"):
        generate_lake(empty, config)

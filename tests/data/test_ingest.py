"""Ingest end to end on small generated lakes: versions, dedup, near-duplicates, splits, growth."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.data.lakes import write_sequence_lake
from toolchain.data.decode import DecodeLimits, Decoded, decode_image
from toolchain.data.ingest import IngestConfig, ingest
from toolchain.data.splits import SplitFractions
from toolchain.data.versions import diff_datasets, list_datasets, load_dataset
from toolchain.errors import BadInputError, UsageError
from toolchain.workspace import Workspace


def _config(source: Path, **kwargs: object) -> IngestConfig:
    return IngestConfig(source=str(source), name=str(kwargs.pop("name", "lake")), image_size=32, workers=1, **kwargs)  # type: ignore[arg-type]


@pytest.fixture()
def workspace(tmp_path: Path) -> Workspace:
    with Workspace(tmp_path / "ws") as ws:
        yield ws


def test_ingest_stores_shards_manifest_and_counts(tmp_path: Path, workspace: Workspace) -> None:
    lake = tmp_path / "lake"
    write_sequence_lake(lake, sequences=20, frames=3)
    result = ingest(workspace, _config(lake))
    assert result.created and result.number == 1
    assert result.counts["all"] == {"car": 30, "truck": 30, "total": 60}
    assert sum(result.counts[s]["total"] for s in ("train", "val", "test")) == 60
    assert result.decoded == 60 and result.reused == 0 and not result.quarantined
    dataset = load_dataset(workspace, "lake@v1")
    assert dataset.id == result.version
    images, labels = dataset.load_split(workspace, "train")
    assert images.shape == (result.counts["train"]["total"], 32, 32, 3) and images.dtype == np.uint8
    assert set(labels.tolist()) <= {0, 1}
    # Pixels in the shard are exactly what decoding the source file gives.
    entry = dataset.manifest.entries[0]
    pixels = dataset.layout.gather(workspace.blobs, [0])[0]
    fresh = decode_image((lake / entry.source).read_bytes(), 32, DecodeLimits())
    assert isinstance(fresh, Decoded) and np.array_equal(pixels, fresh.array)
    assert entry.source.startswith(("car/", "truck/"))  # relative to the lake


def test_sequences_stay_in_one_split(tmp_path: Path, workspace: Workspace) -> None:
    lake = tmp_path / "lake"
    write_sequence_lake(lake, sequences=30, frames=4)
    result = ingest(workspace, _config(lake))
    dataset = load_dataset(workspace, result.version)
    split_of_sequence: dict[str, set[str]] = {}
    for entry in dataset.manifest.entries:
        sequence = Path(entry.source).name.split("_")[0]
        split_of_sequence.setdefault(sequence, set()).add(entry.split)
    assert all(len(splits) == 1 for splits in split_of_sequence.values())
    assert {s for splits in split_of_sequence.values() for s in splits} == {"train", "val", "test"}


def _leaked_sequences(workspace: Workspace, version: str) -> list[str]:
    by_sequence: dict[str, set[str]] = {}
    for entry in load_dataset(workspace, version).manifest.entries:
        by_sequence.setdefault(Path(entry.source).name.split("_")[0], set()).add(entry.split)
    return [s for s, splits in by_sequence.items() if len(splits) > 1]


def test_near_duplicates_without_group_info_share_a_split(tmp_path: Path, workspace: Workspace) -> None:
    lake = tmp_path / "lake"
    write_sequence_lake(lake, sequences=30, frames=4, recompress=True)
    (lake / "manifest.csv").unlink()  # no sequence column: only pixel similarity can group copies
    result = ingest(workspace, _config(lake, group_by="none"))
    assert result.near_duplicate_groups >= 27  # nearly all of the 30 groups of copies are found
    blind = ingest(workspace, _config(lake, name="blind", group_by="none", near_duplicate_distance=0))
    assert len(_leaked_sequences(workspace, result.version)) <= 3
    assert len(_leaked_sequences(workspace, blind.version)) >= 10  # what happens without near-dup grouping


def test_reingest_is_a_no_op_with_the_same_id(tmp_path: Path, workspace: Workspace) -> None:
    lake = tmp_path / "lake"
    write_sequence_lake(lake, sequences=10)
    first = ingest(workspace, _config(lake))
    blobs_before = sorted(workspace.blobs)
    second = ingest(workspace, _config(lake))
    assert (second.version, second.number, second.created, second.decoded) == (first.version, 1, False, 0)
    assert sorted(workspace.blobs) == blobs_before
    assert len(list_datasets(workspace)) == 1


def test_moved_lake_gets_the_same_id(tmp_path: Path, workspace: Workspace) -> None:
    lake = tmp_path / "lake"
    write_sequence_lake(lake, sequences=6)
    first = ingest(workspace, _config(lake))
    moved = tmp_path / "elsewhere"
    shutil.copytree(lake, moved)
    assert ingest(workspace, _config(moved, name="copy")).version == first.version


def test_grown_lake_decodes_only_new_images_and_keeps_splits(tmp_path: Path, workspace: Workspace) -> None:
    lake = tmp_path / "lake"
    write_sequence_lake(lake, sequences=30, frames=2)
    v1 = ingest(workspace, _config(lake))
    write_sequence_lake(lake, sequences=15, frames=2, start=30)
    v2 = ingest(workspace, _config(lake))
    assert v2.number == 2 and v2.version != v1.version
    assert v2.decoded == 30 and v2.reused == 60
    assert v2.parent == v1.version
    diff = diff_datasets(load_dataset(workspace, "lake@v1"), load_dataset(workspace, "lake@v2"))
    assert diff["summary"]["added"] == 30
    assert diff["summary"]["removed"] == diff["summary"]["moved"] == diff["summary"]["relabelled"] == 0


def test_splits_are_a_function_of_the_group_key(tmp_path: Path, workspace: Workspace) -> None:
    """A fresh ingest of part of a lake assigns each sequence the split the whole lake gives it."""
    whole, part = tmp_path / "whole", tmp_path / "part"
    write_sequence_lake(whole, sequences=40, frames=2)
    write_sequence_lake(part, sequences=20, frames=2)
    a = load_dataset(workspace, ingest(workspace, _config(whole, name="whole")).version)
    b = load_dataset(workspace, ingest(workspace, _config(part, name="part")).version)
    split_a = {e.sha256: e.split for e in a.manifest.entries}
    assert all(split_a[e.sha256] == e.split for e in b.manifest.entries)


def test_new_frame_of_an_existing_sequence_joins_its_split(tmp_path: Path, workspace: Workspace) -> None:
    lake = tmp_path / "lake"
    write_sequence_lake(lake, sequences=20, frames=3)
    v1 = load_dataset(workspace, ingest(workspace, _config(lake, group_by="none")).version)
    # A fourth, unlisted frame of every sequence: only its pixels tie it to its sequence.
    for entry in v1.manifest.entries:
        if entry.source.endswith("_f0.jpg"):
            image = np.asarray(Image.open(lake / entry.source)).astype(float)
            Image.fromarray(np.clip(image * 1.02, 0, 255).astype(np.uint8)).save(lake / entry.source.replace("_f0", "_f9"), quality=90)
    v2 = load_dataset(workspace, ingest(workspace, _config(lake, group_by="none")).version)
    split_v1 = {e.source: e.split for e in v1.manifest.entries}
    joined = [e for e in v2.manifest.entries if "_f9" in e.source]
    assert len(joined) == 20
    agree = sum(e.split == split_v1[e.source.replace("_f9", "_f0")] for e in joined)
    assert agree >= 18


def test_exact_duplicates_are_stored_once(tmp_path: Path, workspace: Workspace) -> None:
    lake = tmp_path / "lake"
    write_sequence_lake(lake, sequences=4, frames=2)
    shutil.copy(lake / "car/seq0000_f0.jpg", lake / "car/copy.jpg")
    result = ingest(workspace, _config(lake))
    assert result.duplicates == 1 and result.counts["all"]["total"] == 8


def test_same_pixels_under_two_labels_are_quarantined(tmp_path: Path, workspace: Workspace) -> None:
    lake = tmp_path / "lake"
    write_sequence_lake(lake, sequences=4, frames=2)
    shutil.copy(lake / "car/seq0000_f0.jpg", lake / "truck/same-bytes.jpg")
    # Same pixels, different bytes: a lossless PNG re-encode of a decoded JPEG, labelled truck.
    pixels = np.asarray(Image.open(lake / "car/seq0002_f1.jpg").convert("RGB"))
    Image.fromarray(pixels).save(lake / "truck/re-encoded.png")
    Image.fromarray(pixels).save(lake / "car/re-encoded-car.png")
    result = ingest(workspace, _config(lake))
    conflicts = sorted(Path(q.uri).name for q in result.quarantined if q.reason == "conflicting_labels")
    assert conflicts == ["re-encoded-car.png", "re-encoded.png", "same-bytes.jpg", "seq0000_f0.jpg"]


def test_every_bad_file_is_quarantined_and_the_rest_ingested(tmp_path: Path, workspace: Workspace) -> None:
    lake = tmp_path / "lake"
    write_sequence_lake(lake, sequences=4, frames=2)
    good = (lake / "car/seq0000_f0.jpg").read_bytes()
    (lake / "car/truncated.jpg").write_bytes(good[: len(good) // 2])
    (lake / "car/empty.jpg").write_bytes(b"")
    (lake / "truck/text.jpg").write_text("not an image")
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "JPEG")
    (lake / "truck/tiny.jpg").write_bytes(buf.getvalue())
    bomb = bytearray(good)
    sof = bomb.index(b"\xff\xc0")
    bomb[sof + 5 : sof + 9] = (40000).to_bytes(2, "big") * 2
    (lake / "truck/bomb.jpg").write_bytes(bytes(bomb))
    (lake / "car/notes.txt").write_text("hello")
    result = ingest(workspace, _config(lake))
    reasons = {Path(q.uri).name: q.reason for q in result.quarantined}
    assert reasons == {
        "truncated.jpg": "truncated", "empty.jpg": "empty", "text.jpg": "not_an_image", "tiny.jpg": "too_small",
        "bomb.jpg": "too_large", "notes.txt": "not_an_image",
    }
    assert result.counts["all"]["total"] == 8
    assert result.to_json()["quarantined"]["count"] == 6


def test_unknown_labels_from_a_manifest_are_quarantined(tmp_path: Path, workspace: Workspace) -> None:
    lake = tmp_path / "lake"
    rows = write_sequence_lake(lake, sequences=4, frames=2)
    manifest = tmp_path / "m.jsonl"
    lines = [f'{{"uri": "lake/{r["path"]}", "label": "{r["label"]}", "group": "{r["sequence"]}"}}' for r in rows]
    lines.append('{"uri": "lake/car/seq0000_f0.jpg", "label": "bus"}')
    manifest.write_text("\n".join(lines) + "\n")
    result = ingest(workspace, _config(manifest, classes=("car", "truck")))
    assert [q.reason for q in result.quarantined] == ["unknown_label"]
    assert result.classes == ("car", "truck")


def test_only_bad_files_is_a_clear_error(tmp_path: Path, workspace: Workspace) -> None:
    lake = tmp_path / "lake"
    (lake / "car").mkdir(parents=True)
    (lake / "car/empty.jpg").write_bytes(b"")
    with pytest.raises(BadInputError, match="no valid images"):
        ingest(workspace, _config(lake))
    assert list_datasets(workspace) == []


def test_config_validation() -> None:
    with pytest.raises(UsageError):
        IngestConfig(source="x", name="a@b")
    with pytest.raises(UsageError):
        IngestConfig(source="x", name="a", group_by="lane")
    with pytest.raises(UsageError):
        SplitFractions.parse("0.5,0.5")
    assert SplitFractions.parse("80,10,10") == SplitFractions.parse("0.8,0.1,0.1")


def test_parallel_workers_give_the_same_version_as_one(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    write_sequence_lake(lake, sequences=40, frames=2)
    with Workspace(tmp_path / "a") as a, Workspace(tmp_path / "b") as b:
        one = ingest(a, IngestConfig(source=str(lake), name="x", image_size=32, workers=1))
        two = ingest(b, IngestConfig(source=str(lake), name="x", image_size=32, workers=2, shard_size=16))
    assert one.version == two.version


def test_manifest_on_an_fsspec_filesystem(tmp_path: Path, workspace: Workspace) -> None:
    """A remote manifest whose relative URIs resolve on the same filesystem (fsspec's memory://)."""
    fsspec = pytest.importorskip("fsspec")
    lake = tmp_path / "lake"
    rows = write_sequence_lake(lake, sequences=4, frames=2)
    fs = fsspec.filesystem("memory")
    for row in rows:
        fs.pipe(f"/remote-lake/{row['path']}", (lake / row["path"]).read_bytes())
    lines = ["uri,label,group", *(f"{r['path']},{r['label']},{r['sequence']}" for r in rows)]
    lines.append("memory://elsewhere/x.jpg,car,")  # outside the manifest's prefix
    fs.pipe("/remote-lake/manifest.csv", ("\n".join(lines) + "\n").encode())
    result = ingest(workspace, IngestConfig(source="memory://remote-lake/manifest.csv", name="remote", image_size=32, workers=1))
    assert result.counts["all"]["total"] == 8
    assert [q.reason for q in result.quarantined] == ["outside_source"]
    ingest(workspace, _config(lake, name="local"))
    assert {e.sha256 for e in load_dataset(workspace, "remote").manifest.entries} == {
        e.sha256 for e in load_dataset(workspace, "local").manifest.entries
    }

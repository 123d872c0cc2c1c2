"""Tests for listing lakes: ImageFolder directories and CSV/JSONL manifests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from toolchain.data.sources import is_inside, is_url, list_source, local_path, read_uri
from toolchain.errors import BadInputError, InputNotFoundError, ToolchainError
from tests.helpers import make_image_folder, write_folder_manifest, write_jpeg, write_png


def by_name(listing) -> dict[str, object]:
    return {Path(local_path(i.uri) or i.uri).name: i for i in listing.items}


def rejected_by_name(listing) -> dict[str, str]:
    return {Path(local_path(r.uri) or r.uri).name if r.uri else "": r.reason for r in listing.rejected}


# --- ImageFolder ---------------------------------------------------------------------------------

def test_image_folder_labels_from_folder_names(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "lake", per_class=3, classes=("car", "truck"))
    listing = list_source(str(tmp_path / "lake"))
    assert listing.kind == "imagefolder"
    assert listing.root == str((tmp_path / "lake").resolve())
    assert listing.rejected == ()
    assert len(listing.items) == 6
    for item in listing.items:
        assert os.path.isabs(item.uri)
        assert Path(item.uri).parent.name == item.label
        assert item.camera == item.sequence == item.group == ""
    assert sorted(i.label for i in listing.items) == ["car"] * 3 + ["truck"] * 3


def test_image_folder_recurses_into_subfolders(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    write_jpeg(lake / "car" / "top.jpg", seed=1)
    write_jpeg(lake / "car" / "cam1" / "day" / "deep.jpg", seed=2)
    write_png(lake / "truck" / "cam2" / "t.PNG", seed=3)
    write_jpeg(lake / "truck" / "UPPER.JPG", seed=4)
    items = by_name(list_source(str(lake)))
    assert set(items) == {"top.jpg", "deep.jpg", "t.PNG", "UPPER.JPG"}
    assert items["deep.jpg"].label == "car"
    assert items["t.PNG"].label == "truck"
    assert items["UPPER.JPG"].label == "truck"


def test_image_folder_rejects_non_image_extensions(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    write_jpeg(lake / "car" / "ok.jpg", seed=1)
    (lake / "car" / "notes.txt").write_text("hello")
    (lake / "car" / "noext").write_bytes(b"\xff\xd8")
    listing = list_source(str(lake))
    assert set(by_name(listing)) == {"ok.jpg"}
    assert rejected_by_name(listing) == {"notes.txt": "not_an_image", "noext": "not_an_image"}
    assert all(r.label == "car" and r.detail for r in listing.rejected)


def test_image_folder_ignores_hidden_files_and_folders(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    write_jpeg(lake / "car" / "ok.jpg", seed=1)
    write_jpeg(lake / "car" / ".hidden.jpg", seed=2)
    (lake / "car" / ".DS_Store").write_bytes(b"\0\0")
    write_jpeg(lake / "car" / ".thumbs" / "t.jpg", seed=3)
    write_jpeg(lake / ".cache" / "c.jpg", seed=4)
    listing = list_source(str(lake))
    assert set(by_name(listing)) == {"ok.jpg"}
    assert listing.rejected == ()
    assert {i.label for i in listing.items} == {"car"}


def test_image_folder_ignores_its_own_manifest_and_stray_root_files(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    make_image_folder(lake, per_class=2)
    write_folder_manifest(lake, [])
    write_jpeg(lake / "stray.jpg", seed=99)
    listing = list_source(str(lake))
    assert len(listing.items) == 4
    assert listing.rejected == ()


def test_image_folder_symlink_outside_lake_is_rejected(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    write_jpeg(lake / "car" / "ok.jpg", seed=1)
    secret = write_jpeg(tmp_path / "elsewhere" / "secret.jpg", seed=2)
    (lake / "car" / "link.jpg").symlink_to(secret)
    listing = list_source(str(lake))
    assert set(by_name(listing)) == {"ok.jpg"}
    assert rejected_by_name(listing) == {"link.jpg": "outside_source"}


def test_image_folder_symlinked_class_dir_outside_lake_is_rejected(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    write_jpeg(lake / "car" / "ok.jpg", seed=1)
    write_jpeg(tmp_path / "elsewhere" / "truck" / "t.jpg", seed=2)
    (lake / "truck").symlink_to(tmp_path / "elsewhere" / "truck", target_is_directory=True)
    listing = list_source(str(lake))
    assert set(by_name(listing)) == {"ok.jpg"}
    assert rejected_by_name(listing) == {"t.jpg": "outside_source"}


def test_image_folder_symlink_inside_lake_is_accepted(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    target = write_jpeg(lake / "car" / "ok.jpg", seed=1)
    (lake / "car" / "alias.jpg").symlink_to(target)
    listing = list_source(str(lake))
    assert set(by_name(listing)) == {"ok.jpg", "alias.jpg"}


def test_image_folder_symlink_outside_accepted_with_allow_root(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    write_jpeg(lake / "car" / "ok.jpg", seed=1)
    secret = write_jpeg(tmp_path / "elsewhere" / "secret.jpg", seed=2)
    (lake / "car" / "link.jpg").symlink_to(secret)
    listing = list_source(str(lake), allow_roots=(str(tmp_path / "elsewhere"),))
    assert set(by_name(listing)) == {"ok.jpg", "link.jpg"}
    assert listing.rejected == ()


def test_image_folder_metadata_from_its_manifest(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    make_image_folder(lake, per_class=2)
    write_folder_manifest(lake, [
        {"path": "car/img_0000.jpg", "label": "car", "camera": "cam3", "sequence": "s17"},
        {"path": "truck/img_0001.jpg", "label": "truck", "camera": "cam4", "sequence": "s9"},
    ])
    items = {f"{i.label}/{Path(i.uri).name}": i for i in list_source(str(lake)).items}
    assert (items["car/img_0000.jpg"].camera, items["car/img_0000.jpg"].sequence) == ("cam3", "s17")
    assert (items["truck/img_0001.jpg"].camera, items["truck/img_0001.jpg"].sequence) == ("cam4", "s9")
    assert (items["car/img_0001.jpg"].camera, items["car/img_0001.jpg"].sequence) == ("", "")


def test_image_folder_classes_filter_and_odd_folder_names(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    make_image_folder(lake, per_class=1, classes=("car", "truck", "pick up"))
    listing = list_source(str(lake), classes=("car",))
    assert [i.label for i in listing.items] == ["car"]
    assert sorted((r.label, r.reason) for r in listing.rejected) == [
        ("pick up", "unknown_label"), ("truck", "unknown_label"),
    ]
    unfiltered = list_source(str(lake))
    assert sorted(i.label for i in unfiltered.items) == ["car", "truck"]
    assert [(r.label, r.reason) for r in unfiltered.rejected] == [("pick up", "unknown_label")]


def test_image_folder_without_class_dirs_is_bad_input(tmp_path: Path) -> None:
    write_jpeg(tmp_path / "flat" / "a.jpg")
    with pytest.raises(BadInputError, match="class subdirectories"):
        list_source(str(tmp_path / "flat"))


# --- manifests -----------------------------------------------------------------------------------

def test_csv_manifest_relative_paths_and_group(tmp_path: Path) -> None:
    write_jpeg(tmp_path / "imgs" / "a.jpg", seed=1)
    write_jpeg(tmp_path / "imgs" / "b.jpg", seed=2)
    manifest = tmp_path / "lake.csv"
    manifest.write_text("uri,label,group\nimgs/a.jpg,car,g1\n./imgs/b.jpg,truck,g2\n")
    listing = list_source(str(manifest))
    assert listing.kind == "csv"
    assert listing.root == str(tmp_path.resolve())
    assert listing.rejected == ()
    items = by_name(listing)
    assert items["a.jpg"].uri == str(tmp_path / "imgs" / "a.jpg")
    assert items["b.jpg"].uri == str(tmp_path / "imgs" / "b.jpg")
    assert (items["a.jpg"].label, items["a.jpg"].group) == ("car", "g1")
    assert (items["b.jpg"].label, items["b.jpg"].group) == ("truck", "g2")
    assert read_uri(items["a.jpg"].uri) == (tmp_path / "imgs" / "a.jpg").read_bytes()


def test_csv_manifest_path_column_camera_sequence_and_whitespace(tmp_path: Path) -> None:
    write_jpeg(tmp_path / "a.jpg", seed=1)
    manifest = tmp_path / "m.csv"
    manifest.write_text("\ufeffPath , Label ,camera,sequence\n a.jpg , car ,cam1,s1\n", encoding="utf-8")
    (item,) = list_source(str(manifest)).items
    assert item.uri == str(tmp_path / "a.jpg")
    assert (item.label, item.camera, item.sequence) == ("car", "cam1", "s1")


def test_jsonl_manifest(tmp_path: Path) -> None:
    write_jpeg(tmp_path / "d" / "a.jpg", seed=1)
    write_jpeg(tmp_path / "d" / "b.jpg", seed=2)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        json.dumps({"uri": "d/a.jpg", "label": "car", "group": "g1", "camera": "c1"}) + "\n\n"
        + json.dumps({"path": "d/b.jpg", "label": "truck", "sequence": 7}) + "\n"
    )
    listing = list_source(str(manifest))
    assert listing.kind == "jsonl"
    items = by_name(listing)
    assert items["a.jpg"].uri == str(tmp_path / "d" / "a.jpg")
    assert (items["a.jpg"].label, items["a.jpg"].group, items["a.jpg"].camera) == ("car", "g1", "c1")
    assert (items["b.jpg"].label, items["b.jpg"].sequence) == ("truck", "7")


def test_file_uris(tmp_path: Path) -> None:
    image = write_jpeg(tmp_path / "imgs" / "a.jpg", seed=1)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"uri,label\n{image.as_uri()},car\n")
    (item,) = list_source(str(manifest)).items
    assert is_url(item.uri)
    assert local_path(item.uri) == str(image)
    assert read_uri(item.uri) == image.read_bytes()
    # a manifest named by a file:// URI works too
    listing = list_source(manifest.as_uri())
    assert [local_path(i.uri) for i in listing.items] == [str(image)]


def test_file_uri_with_percent_encoding(tmp_path: Path) -> None:
    image = write_jpeg(tmp_path / "a b.jpg", seed=1)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"uri,label\n{image.as_uri()},car\n")  # file:///.../a%20b.jpg
    (item,) = list_source(str(manifest)).items
    assert read_uri(item.uri) == image.read_bytes()


def test_file_uri_outside_manifest_dir_is_rejected(tmp_path: Path) -> None:
    outside = write_jpeg(tmp_path / "outside" / "x.jpg", seed=1)
    (tmp_path / "lake").mkdir()
    manifest = tmp_path / "lake" / "m.csv"
    manifest.write_text(f"uri,label\n{outside.as_uri()},car\n")
    listing = list_source(str(manifest))
    assert listing.items == ()
    assert [r.reason for r in listing.rejected] == ["outside_source"]


def test_absolute_path_outside_manifest_dir_is_rejected(tmp_path: Path) -> None:
    outside = write_jpeg(tmp_path / "outside" / "x.jpg", seed=1)
    inside = write_jpeg(tmp_path / "lake" / "ok.jpg", seed=2)
    manifest = tmp_path / "lake" / "m.csv"
    manifest.write_text(f"uri,label\n{outside},car\n{inside},car\n/etc/passwd,car\n")
    listing = list_source(str(manifest))
    assert [i.uri for i in listing.items] == [str(inside)]
    assert [(r.uri, r.reason) for r in listing.rejected] == [
        (str(outside), "outside_source"), ("/etc/passwd", "outside_source"),
    ]
    assert all("--allow-root" in r.detail for r in listing.rejected)


def test_dotdot_escape_is_rejected(tmp_path: Path) -> None:
    write_jpeg(tmp_path / "outside" / "x.jpg", seed=1)
    (tmp_path / "lake" / "sub").mkdir(parents=True)
    write_jpeg(tmp_path / "lake" / "y.jpg", seed=2)
    manifest = tmp_path / "lake" / "m.csv"
    manifest.write_text("uri,label\n../outside/x.jpg,car\n../../../../../../etc/passwd,car\nsub/../y.jpg,car\n")
    listing = list_source(str(manifest))
    assert [i.uri for i in listing.items] == [str(tmp_path / "lake" / "y.jpg")]
    assert [r.reason for r in listing.rejected] == ["outside_source", "outside_source"]


def test_sibling_with_same_prefix_is_outside(tmp_path: Path) -> None:
    write_jpeg(tmp_path / "lake2" / "x.jpg", seed=1)
    (tmp_path / "lake").mkdir()
    manifest = tmp_path / "lake" / "m.csv"
    manifest.write_text("uri,label\n../lake2/x.jpg,car\n")
    assert [r.reason for r in list_source(str(manifest)).rejected] == ["outside_source"]


def test_symlink_in_manifest_dir_leading_outside_is_rejected(tmp_path: Path) -> None:
    outside = write_jpeg(tmp_path / "outside" / "x.jpg", seed=1)
    (tmp_path / "lake").mkdir()
    (tmp_path / "lake" / "x.jpg").symlink_to(outside)
    manifest = tmp_path / "lake" / "m.csv"
    manifest.write_text("uri,label\nx.jpg,car\n")
    listing = list_source(str(manifest))
    assert listing.items == ()
    assert [r.reason for r in listing.rejected] == ["outside_source"]


def test_allow_roots_accepts_outside_paths(tmp_path: Path) -> None:
    outside = write_jpeg(tmp_path / "outside" / "x.jpg", seed=1)
    (tmp_path / "lake").mkdir()
    manifest = tmp_path / "lake" / "m.csv"
    manifest.write_text(f"uri,label\n../outside/x.jpg,car\n{outside},truck\n{outside.as_uri()},car\n")
    listing = list_source(str(manifest), allow_roots=(str(tmp_path / "outside"),))
    assert listing.rejected == ()
    assert [local_path(i.uri) for i in listing.items] == [str(outside)] * 3
    # a file:// allow-root works the same way
    listing = list_source(str(manifest), allow_roots=((tmp_path / "outside").as_uri(),))
    assert len(listing.items) == 3


def test_is_inside_for_urls() -> None:
    roots = ["s3://bucket/lake/"]
    assert is_inside("s3://bucket/lake/car/a.jpg", roots)
    assert not is_inside("s3://bucket/lake/../other/a.jpg", roots)
    assert not is_inside("s3://bucket/lake2/a.jpg", roots)
    assert not is_inside("s3://bucket/lake/a.jpg", ["/tmp"])


@pytest.mark.parametrize("text", [
    "file,label\na.jpg,car\n",
    "uri,class\na.jpg,car\n",
    "",
])
def test_csv_missing_columns_is_bad_input(tmp_path: Path, text: str) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(text)
    with pytest.raises(BadInputError, match="'label'"):
        list_source(str(manifest))


def test_csv_row_with_extra_fields_is_not_an_internal_error(tmp_path: Path) -> None:
    write_jpeg(tmp_path / "a.jpg", seed=1)
    manifest = tmp_path / "m.csv"
    manifest.write_text("uri,label\na.jpg,car,unexpected,fields\n")
    try:
        listing = list_source(str(manifest))
    except BadInputError:
        return
    assert [i.label for i in listing.items] == ["car"]


def test_jsonl_bad_line_is_bad_input_with_line_number(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"uri": "a.jpg", "label": "car"}\n\n{"uri": "b.jpg", "label": \n')
    with pytest.raises(BadInputError, match=r"line 3\b") as info:
        list_source(str(manifest))
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("line", ['["a.jpg", "car"]', '{"uri": "a.jpg"}', '{"label": "car"}'])
def test_jsonl_line_without_keys_is_bad_input(tmp_path: Path, line: str) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"uri": "a.jpg", "label": "car"}\n' + line + "\n")
    with pytest.raises(BadInputError, match="line 2"):
        list_source(str(manifest))


def test_classes_filter_rejects_other_labels(tmp_path: Path) -> None:
    write_jpeg(tmp_path / "a.jpg", seed=1)
    write_jpeg(tmp_path / "b.jpg", seed=2)
    manifest = tmp_path / "m.csv"
    manifest.write_text("uri,label\na.jpg,car\nb.jpg,truck\n")
    listing = list_source(str(manifest), classes=("car",))
    assert [i.label for i in listing.items] == ["car"]
    (rejection,) = listing.rejected
    assert (rejection.label, rejection.reason) == ("truck", "unknown_label")
    assert "--classes" in rejection.detail


@pytest.mark.parametrize("label", ["", "a b", "-car", "car/truck", "x" * 65, "ünïcode"])
def test_empty_or_odd_labels_are_unknown(tmp_path: Path, label: str) -> None:
    write_jpeg(tmp_path / "a.jpg", seed=1)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"uri": "a.jpg", "label": label}) + "\n")
    listing = list_source(str(manifest))
    assert listing.items == ()
    assert [r.reason for r in listing.rejected] == ["unknown_label"]


def test_odd_labels_in_csv(tmp_path: Path) -> None:
    write_jpeg(tmp_path / "a.jpg", seed=1)
    manifest = tmp_path / "m.csv"
    manifest.write_text('uri,label\na.jpg,\na.jpg,"a b"\na.jpg,car_2.v-1\n')
    listing = list_source(str(manifest))
    assert [i.label for i in listing.items] == ["car_2.v-1"]
    assert [(r.label, r.reason) for r in listing.rejected] == [("", "unknown_label"), ("a b", "unknown_label")]


def test_jsonl_null_label_is_unknown(tmp_path: Path) -> None:
    write_jpeg(tmp_path / "a.jpg", seed=1)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"uri": "a.jpg", "label": null}\n')
    listing = list_source(str(manifest))
    assert listing.items == ()
    assert [r.reason for r in listing.rejected] == ["unknown_label"]


def test_empty_uri_is_rejected(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("uri,label\n,car\n")
    listing = list_source(str(manifest))
    assert listing.items == ()
    assert [r.reason for r in listing.rejected] == ["unreadable"]


@pytest.mark.parametrize("name", ["nope", "nope.csv", "nope.jsonl"])
def test_missing_source_is_input_not_found(tmp_path: Path, name: str) -> None:
    with pytest.raises(InputNotFoundError, match="does not exist") as info:
        list_source(str(tmp_path / name))
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, BadInputError)
    assert isinstance(info.value, ToolchainError)
    assert info.value.exit_code == 4


def test_missing_file_uri_source_is_input_not_found(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError):
        list_source((tmp_path / "nope.csv").as_uri())

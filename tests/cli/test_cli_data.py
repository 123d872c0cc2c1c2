"""CLI tests for ``toolchain data ...`` (and the group's help and exit codes), run in-process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import CliResult, add_bad_files, make_image_folder, run_main

HEX64 = re.compile(r"^[0-9a-f]{64}$")


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Run ``main([...])`` in-process with ``--workspace tmp_path/ws``; returns exit code and output."""
    monkeypatch.delenv("TOOLCHAIN_REGISTRY", raising=False)
    monkeypatch.delenv("TOOLCHAIN_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    workspace = tmp_path / "ws"

    def run(*args: object) -> CliResult:
        return run_main(["--workspace", workspace, *args], capsys)

    return run


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    root = tmp_path / "lake"
    make_image_folder(root, per_class=6, seed=1)
    return root


def ingest(cli, lake: Path, name: str = "cars", *extra: object) -> CliResult:
    return cli("data", "ingest", lake, "--name", name, "--json", "--workers", "1", *extra)


# --- help ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    [],
    ["doctor"],
    ["synth"],
    ["synth", "lake"],
    ["data"],
    ["data", "ingest"],
    ["data", "list"],
    ["data", "show"],
    ["data", "diff"],
    ["data", "manifest"],
])
def test_help_for_group_and_every_subcommand(cli, args: list[str]) -> None:
    result = cli(*args, "--help")
    assert result.code == 0
    assert "Usage:" in result.out
    assert ("toolchain " + " ".join(args)).strip() in result.out


def test_short_help_option(cli) -> None:
    result = cli("-h")
    assert result.code == 0
    assert "data" in result.out and "doctor" in result.out


def test_python_dash_m_toolchain_help(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "toolchain", "--help"], capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout
    assert "data" in proc.stdout


# --- ingest -------------------------------------------------------------------------------------

def test_ingest_prints_one_json_document(cli, lake: Path) -> None:
    result = ingest(cli, lake)
    assert result.code == 0, result.err
    doc = result.json()
    assert HEX64.match(doc["version"])
    assert doc["name"] == "cars"
    assert doc["number"] == 1
    assert doc["created"] is True
    assert doc["decoded"] == 12
    counts = doc["counts"]
    assert set(counts) == {"train", "val", "test", "all"}
    for split, row in counts.items():
        assert set(row) == {"car", "truck", "total"}, split
        assert row["total"] == row["car"] + row["truck"]
    assert counts["all"] == {"car": 6, "truck": 6, "total": 12}
    assert sum(counts[s]["total"] for s in ("train", "val", "test")) == 12
    for label in ("car", "truck"):
        assert sum(counts[s][label] for s in ("train", "val", "test")) == 6
    assert doc["quarantined"]["count"] == 0
    assert doc["quarantined"]["reasons"] == {}


def test_global_json_flag_before_subcommand(cli, lake: Path) -> None:
    result = cli("--json", "data", "ingest", lake, "--name", "cars", "--workers", "1")
    assert result.code == 0, result.err
    doc = result.json()
    assert HEX64.match(doc["version"])
    assert doc["counts"]["all"]["total"] == 12


def test_human_output_goes_to_stderr(cli, lake: Path) -> None:
    result = cli("data", "ingest", lake, "--name", "cars", "--workers", "1")
    assert result.code == 0
    assert result.out == ""
    assert "cars@v1" in result.err


def test_ingest_quarantines_bad_files(cli, lake: Path) -> None:
    add_bad_files(lake, "car")
    result = ingest(cli, lake)
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["quarantined"]["count"] == 3
    assert doc["quarantined"]["reasons"] == {"empty": 1, "not_an_image": 1, "truncated": 1}
    assert doc["counts"]["all"]["total"] == 12
    reasons = {Path(q["uri"]).name: q["reason"] for q in doc["quarantined"]["items"]}
    assert reasons == {"bad_empty.jpg": "empty", "bad_text.jpg": "not_an_image", "bad_truncated.jpg": "truncated"}


def test_reingest_unchanged_lake_is_same_version(cli, lake: Path) -> None:
    first = ingest(cli, lake).json()
    second = ingest(cli, lake)
    assert second.code == 0
    doc = second.json()
    assert doc["version"] == first["version"]
    assert doc["number"] == first["number"] == 1
    assert doc["created"] is False
    assert doc["decoded"] == 0
    assert doc["reused"] == 12
    listed = cli("data", "list", "--json").json()["datasets"]
    assert [row["ref"] for row in listed] == ["cars@v1"]


def test_ingest_classes_option_quarantines_other_labels(cli, lake: Path) -> None:
    doc = ingest(cli, lake, "cars", "--classes", "car").json()
    assert doc["classes"] == ["car"]
    assert doc["counts"]["all"] == {"car": 6, "total": 6}
    assert doc["quarantined"]["reasons"] == {"unknown_label": 6}


# --- list / show / manifest / diff -------------------------------------------------------------

def test_list_json(cli, lake: Path, tmp_path: Path) -> None:
    assert cli("data", "list", "--json").json() == {"datasets": []}
    version = ingest(cli, lake).json()["version"]
    rows = cli("data", "list", "--json").json()["datasets"]
    assert len(rows) == 1
    row = rows[0]
    assert row["ref"] == "cars@v1"
    assert row["name"] == "cars" and row["number"] == 1
    assert row["version"] == version
    assert row["images"] == 12
    assert row["quarantined"] == 0
    assert row["classes"] == ["car", "truck"]
    assert row["image_size"] == 128


def test_list_human(cli, lake: Path) -> None:
    empty = cli("data", "list")
    assert empty.code == 0 and "no datasets yet" in empty.err
    ingest(cli, lake)
    result = cli("data", "list")
    assert result.code == 0
    assert "cars@v1" in result.err


def test_show_json_counts_and_quarantined_items(cli, lake: Path) -> None:
    add_bad_files(lake, "truck")
    ingested = ingest(cli, lake).json()
    result = cli("data", "show", "cars", "--json")
    assert result.code == 0, result.err
    info = result.json()
    assert info["version"] == ingested["version"]
    assert info["refs"] == ["cars@v1"]
    assert info["counts"] == ingested["counts"]
    assert info["header"]["classes"] == ["car", "truck"]
    assert info["source"]["kind"] == "imagefolder"
    quarantined = info["quarantined"]
    assert quarantined["count"] == 3
    assert quarantined["reasons"] == {"empty": 1, "not_an_image": 1, "truncated": 1}
    assert len(quarantined["items"]) == 3
    for item in quarantined["items"]:
        assert item["label"] == "truck"
        assert item["reason"] in {"empty", "not_an_image", "truncated"}
        assert item["detail"]


def test_show_by_name_at_version_and_by_id_prefix(cli, lake: Path) -> None:
    version = ingest(cli, lake).json()["version"]
    human = cli("data", "show", "cars@v1")
    assert human.code == 0, human.err
    assert "cars@v1" in human.err
    assert cli("data", "show", "cars@1", "--json").json()["version"] == version
    assert cli("data", "show", "cars@latest", "--json").json()["version"] == version
    by_prefix = cli("data", "show", version[:10], "--json")
    assert by_prefix.code == 0, by_prefix.err
    assert by_prefix.json()["version"] == version
    assert by_prefix.json()["refs"] == ["cars@v1"]


def test_manifest_prints_json_lines(cli, lake: Path) -> None:
    ingest(cli, lake)
    result = cli("data", "manifest", "cars")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert len(lines) == 12
    rows = [json.loads(line) for line in lines]
    for row in rows:
        assert {"sha256", "label", "split", "group", "source"} <= row.keys()
        assert HEX64.match(row["sha256"])
        assert row["label"] in {"car", "truck"}
        assert row["split"] in {"train", "val", "test"}
        assert row["group"]
        assert row["width"] == row["height"] == 48
    assert sorted(r["source"] for r in rows) == sorted(
        f"{label}/img_{i:04d}.jpg" for label in ("car", "truck") for i in range(6)
    )
    assert len({r["sha256"] for r in rows}) == 12


def test_diff_after_growing_lake(cli, lake: Path) -> None:
    v1 = ingest(cli, lake).json()
    make_image_folder(lake, per_class=4, seed=1, start=6)  # 8 new images, old files untouched
    v2 = ingest(cli, lake).json()
    assert v2["number"] == 2 and v2["created"] is True
    assert v2["version"] != v1["version"]
    assert v2["decoded"] == 8
    assert v2["reused"] == 12
    assert v2["parent"] == v1["version"]
    result = cli("data", "diff", "cars@v1", "cars@v2", "--json")
    assert result.code == 0, result.err
    diff = result.json()
    assert diff["from"] == v1["version"] and diff["to"] == v2["version"]
    assert diff["summary"]["added"] == 8
    assert diff["summary"]["removed"] == 0
    assert diff["summary"]["moved"] == 0
    assert diff["summary"]["relabelled"] == 0
    assert diff["summary"]["unchanged"] == 12
    assert len(diff["added"]) == 8
    assert {Path(row["source"]).name for row in diff["added"]} == {
        f"img_{i:04d}.jpg" for i in range(6, 10)
    }
    human = cli("data", "diff", "cars@v1", "cars@v2")
    assert human.code == 0
    assert "+8 added" in human.err


# --- exit codes ----------------------------------------------------------------------------------

def test_missing_source_exits_4(cli, tmp_path: Path) -> None:
    result = cli("data", "ingest", tmp_path / "nope", "--name", "x", "--workers", "1")
    assert result.code == 4
    assert result.out == ""
    assert "does not exist" in result.err


def test_missing_source_json_error_document(cli, tmp_path: Path) -> None:
    result = cli("data", "ingest", tmp_path / "nope", "--name", "x", "--workers", "1", "--json")
    assert result.code == 4
    doc = result.json()
    assert set(doc) == {"error"}
    assert doc["error"]["exit_code"] == 4
    assert doc["error"]["type"] == "InputNotFoundError"
    assert "does not exist" in doc["error"]["message"]


def test_bad_split_exits_2(cli, lake: Path) -> None:
    result = cli("data", "ingest", lake, "--name", "x", "--workers", "1", "--split", "0.5,0.5")
    assert result.code == 2
    assert "--split" in result.err


def test_split_not_summing_to_one_exits_2(cli, lake: Path) -> None:
    result = cli("data", "ingest", lake, "--name", "x", "--workers", "1", "--split", "0.5,0.5,0.5")
    assert result.code == 2


def test_unknown_dataset_exits_4(cli) -> None:
    result = cli("data", "show", "nope")
    assert result.code == 4
    assert "nope" in result.err


def test_unknown_dataset_json_error(cli) -> None:
    result = cli("data", "show", "nope", "--json")
    assert result.code == 4
    assert result.json()["error"]["exit_code"] == 4


def test_unknown_version_number_exits_4(cli, lake: Path) -> None:
    ingest(cli, lake)
    assert cli("data", "show", "cars@v7").code == 4


def test_bogus_group_by_is_usage_error(cli, lake: Path) -> None:
    result = cli("data", "ingest", lake, "--name", "x", "--workers", "1", "--group-by", "bogus")
    assert result.code == 2
    assert "bogus" in result.err


def test_missing_required_name_is_usage_error(cli, lake: Path) -> None:
    assert cli("data", "ingest", lake).code == 2


def test_bad_name_is_usage_error(cli, lake: Path) -> None:
    assert cli("data", "ingest", lake, "--name", "a@b", "--workers", "1").code == 2


def test_unknown_command_is_usage_error(cli) -> None:
    assert cli("data", "frobnicate").code == 2


def test_lake_without_valid_images_exits_4(cli, tmp_path: Path) -> None:
    root = tmp_path / "badlake"
    add_bad_files(root, "car")
    result = cli("data", "ingest", root, "--name", "x", "--workers", "1", "--json")
    assert result.code == 4
    assert result.json()["error"]["type"] == "BadInputError"


# --- identity and manifests ----------------------------------------------------------------------

def test_moved_lake_has_same_version_id(cli, lake: Path, tmp_path: Path) -> None:
    import shutil

    first = ingest(cli, lake, "a").json()
    moved = tmp_path / "moved" / "lake-copy"
    shutil.copytree(lake, moved)
    second = ingest(cli, moved, "b").json()
    assert second["version"] == first["version"]
    assert second["decoded"] == 0


def test_ingest_csv_manifest_with_allow_root(cli, lake: Path, tmp_path: Path) -> None:
    manifest_dir = tmp_path / "manifests"
    manifest_dir.mkdir()
    manifest = manifest_dir / "lake.csv"
    rows = ["uri,label,group"]
    rows += [f"{path},{path.parent.name},{path.stem}" for path in sorted(lake.glob("*/*.jpg"))]
    rows.append("../../../etc/passwd,car,x")
    manifest.write_text("\n".join(rows) + "\n")
    refused = ingest(cli, manifest, "m")  # every row leaves the manifest's directory
    assert refused.code == 4
    assert "outside_source 13" in refused.json()["error"]["message"]
    # everything but /etc/passwd is accepted once the lake is an allowed root
    doc = ingest(cli, manifest, "m2", "--allow-root", lake).json()
    assert doc["counts"]["all"]["total"] == 12
    assert doc["quarantined"]["reasons"] == {"outside_source": 1}

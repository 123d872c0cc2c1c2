"""``toolchain registry copy``: a whole registry into another store (SQLite and a real PostgreSQL server) with ids
and stamps unchanged, its blobs copied where the copy keeps them elsewhere, rerunnable after SIGKILL at any point,
merging into a non-empty store, and the errors (conflicts, missing blobs, same store, unreachable server)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import run_main
from tests.postgres_server import PostgresServer
from toolchain.hashing import sha256_file
from toolchain.registry import CachedImage, NewRecord, RegistryStore, open_store
from toolchain.registry.copy import CopyConfig
from toolchain.registry.records import RECORD_KINDS
from toolchain.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]


def build_workspace(root: Path, *, models: int = 3, aliases: bool = True) -> dict[str, Any]:
    """A registry with every kind of row: two dataset versions (the second made from the first) with shards and an
    image index, and per model a run, a model version, an ONNX artifact, a build and a benchmark, blobs for each;
    aliases moved by several people per target, one removed; a plot blob named only inside a record body."""
    made: dict[str, Any] = {}
    with Workspace(root) as ws:
        reg, blobs = ws.registry, ws.blobs
        shard = blobs.put_bytes(b"decoded images " * 4000)
        manifest = blobs.put_bytes(b"path,label\ncar/1.jpg,car\n")
        v1, _, _ = reg.commit(NewRecord(kind="dataset", name="lake", id=manifest, body={"shards": [shard]}, version=True,
                                        blobs=((manifest, "manifest"), (shard, "shard"))))
        reg.add_cached_images("rgb-32", [
            CachedImage(content_sha256=f"{i:064x}", shard_sha256=shard, row=i, width=32, height=32, phash=(1 << 63) + i,
                        pixel_sha256=f"{i + 100:064x}") for i in range(12)])
        shard2 = blobs.put_bytes(b"more images " * 100)
        v2, _, _ = reg.commit(NewRecord(kind="dataset", name="lake", body={"shards": [shard, shard2]}, version=True,
                                        links=((v1.id, "parent"),), blobs=((shard, "shard"), (shard2, "shard"))))
        made["models"], made["plots"] = [], []
        for m in range(models):
            run, _, _ = reg.commit(NewRecord(kind="run", name="cls", body={"lr": 0.1 * (m + 1)}, links=((v2.id, "train_data"),)))
            weights = blobs.put_bytes(f"weights {m}".encode() * 100)
            model, _, _ = reg.commit(NewRecord(kind="model", name="cls", body={"weights": weights, "run": run.id}, version=True,
                                               links=((run.id, "run"), (v2.id, "train_data")), blobs=((weights, "weights"),)))
            onnx = blobs.put_bytes(f"onnx {m}".encode())
            artifact, _, _ = reg.commit(NewRecord(kind="artifact", name="cls-onnx", body={"type": "onnx", "blob": onnx},
                                                  version=True, links=((model.id, "model"),), blobs=((onnx, "onnx"),)))
            engine = blobs.put_bytes(f"engine {m}".encode())
            build, _, _ = reg.commit(NewRecord(kind="build", name="cls-x86-64-cpu", body={"blob": engine, "target": "x86-64-cpu"},
                                               links=((artifact.id, "onnx"),), blobs=((engine, "engine"),)))
            plot = blobs.put_bytes(f"png {m}".encode())  # referenced only from the body, as gc's view allows
            reg.commit(NewRecord(kind="benchmark", name="", body={"p99_ms": 3.0 + m, "plot": plot}, links=((build.id, "build"),)))
            made["models"].append(model.id)
            made["plots"].append(plot)
        made["required"] = sorted({b.sha256 for b in reg.blob_refs()})
        made["blobs"] = sorted(sha for sha in blobs)
        if not aliases:
            return made
        one, two, three = (made["models"] * 3)[:3]
        for alias, target, record, by, reason in (
            ("production", "jetson-orin-nano", one, "ann@laptop", "first"),
            ("staging", "", two, "bob@ci", ""),
            ("production", "jetson-orin-nano", two, "bob@ci", "v2 passed"),
            ("production", "", one, "ann@laptop", ""),
            ("staging", "", None, "carol@desk", "retired"),
            ("production", "jetson-orin-nano", three, "ann@laptop", "v3"),
            ("production", "jetson-orin-nano", two, "carol@desk", "rollback"),
        ):
            reg.set_alias(kind="model", name="cls", alias=alias, target=target, record_id=record, by=by, reason=reason)
    return made


def dump(store: RegistryStore) -> dict[str, Any]:
    """Every row of every table, in the store's own orders (two equal dumps: two equal registries)."""
    records = store.find()
    return {
        "records": records,
        "links": {r.id: store.links_from(r.id) for r in records},
        "blob_refs": store.blob_refs(),
        "versions": [v for kind in RECORD_KINDS for v in store.versions(kind)],
        "alias_history": store.alias_history(),
        "aliases": store.aliases(),
        "image_index": {t: store.cached_images(t) for t in store.image_index_transforms()},
        "team_keys": store.team_keys(),
    }


def dump_of(uri: str) -> dict[str, Any]:
    with open_store(uri) as store:
        return dump(store)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    build_workspace(root)
    return root


def _cli(capsys: pytest.CaptureFixture[str], *args: object, code: int = 0) -> dict[str, Any]:
    result = run_main(["--json", *args], capsys)
    assert result.code == code, result.out + result.err
    return result.json()


def _destination(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> str:
    if kind == "postgres":
        return str(request.getfixturevalue("postgres_uri"))
    return f"sqlite:///{tmp_path / 'dst' / 'registry.db'}"


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_copy_keeps_every_row_id_and_stamp_copies_and_verifies_the_blobs_and_a_rerun_copies_nothing(
    kind: str, source: Path, tmp_path: Path, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str],
) -> None:
    to = _destination(request, tmp_path, kind)
    blobs = tmp_path / "team-blobs"
    blobs.mkdir()
    with open_store(f"sqlite:///{source / 'registry.db'}") as store:
        store.team_key("credentials-volume")  # names the units' credential volumes: a copy must keep it
    before = dump_of(f"sqlite:///{source / 'registry.db'}")
    report = _cli(capsys, "--workspace", source, "registry", "copy", "--to", to, "--blobs", blobs)
    assert dump_of(to) == before  # ids, bodies, created_at/by, toolchain versions, alias times/who/why, all of it
    counts = {name: t["copied"] for name, t in report["tables"].items()}
    assert counts == {"records": 17, "links": 19, "blob_refs": 13, "versions": 8, "alias_history": 7, "aliases": 2,
                      "image_index": 12, "team_keys": 1}
    assert all(t["already_present"] == 0 and t["kept_destination"] == 0 for t in report["tables"].values())
    source_blobs = sorted(sha for sha in Workspace(source).blobs)
    assert report["blobs"] == {"shared": False, "copied": len(source_blobs), "already_present": 0, "missing": [], "altered": [],
                               "bytes_copied": sum((source / "objects" / s[:2] / s[2:]).stat().st_size for s in source_blobs)}
    copied = sorted(p.parent.name + p.name for p in (blobs / "objects").glob("*/*"))
    assert copied == source_blobs and all(sha256_file(blobs / "objects" / s[:2] / s[2:]) == s for s in copied)
    assert list((blobs / "tmp").iterdir()) == []
    assert report["destination"]["blobs"] == str(blobs) and report["complete"]
    if kind == "postgres":
        assert report["destination"]["registry"].startswith("postgresql://***@127.0.0.1")

    again = _cli(capsys, "--workspace", source, "registry", "copy", "--to", to, "--blobs", blobs)
    assert all(t["copied"] == 0 and t["already_present"] == counts[name] for name, t in again["tables"].items())
    assert again["blobs"]["copied"] == 0 and again["blobs"]["already_present"] == len(source_blobs)
    assert dump_of(to) == before  # nothing duplicated


def test_a_copy_from_postgresql_back_into_sqlite_is_the_same_registry(
    source: Path, tmp_path: Path, postgres_uri: str, capsys: pytest.CaptureFixture[str],
) -> None:
    before = dump_of(f"sqlite:///{source / 'registry.db'}")
    _cli(capsys, "--workspace", source, "registry", "copy", "--to", postgres_uri)  # blobs stay where they are
    back = tmp_path / "back"
    report = _cli(capsys, "--registry", postgres_uri, "--blobs", source, "--workspace", tmp_path / "local",
                  "registry", "copy", "--to", f"sqlite:///{back / 'registry.db'}")
    assert dump_of(f"sqlite:///{back / 'registry.db'}") == before
    assert report["destination"]["blobs"] == str(back) and report["blobs"]["copied"] == len(list(Workspace(source).blobs))
    assert _cli(capsys, "--workspace", back, "registry", "verify")["passed"]


def test_without_a_blob_location_the_copy_shares_the_source_blob_store(
    source: Path, tmp_path: Path, postgres_uri: str, capsys: pytest.CaptureFixture[str],
) -> None:
    report = _cli(capsys, "--workspace", source, "registry", "copy", "--to", postgres_uri)
    assert report["blobs"]["shared"] and report["blobs"]["copied"] == 0
    assert report["destination"]["blobs"] == report["source"]["blobs"] == str(source)
    shared = _cli(capsys, "--registry", postgres_uri, "--blobs", source, "--workspace", tmp_path / "other-host",
                  "registry", "verify")
    alone = _cli(capsys, "--workspace", source, "registry", "verify")
    assert shared["passed"] and {**shared, "seconds": 0} == {**alone, "seconds": 0}


# -- killed mid-way, rerun -----------------------------------------------------------------------------------------

_KILLED_COPY = textwrap.dedent('''
    """Copy in batches of 4 and SIGKILL this process at the point named by argv[1] (no cleanup can run)."""
    import os, shutil, signal, sys
    from pathlib import Path

    from toolchain.registry.copy import CopyConfig, copy_registry
    from toolchain.registry.postgres_store import PostgresStore
    from toolchain.registry.sqlite_store import SqliteStore
    from toolchain.workspace import Workspace

    point, limit, root, to, blobs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    seen = [0]

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if point == "mid-blob":  # the limit-th blob half-written into the destination's tmp/
        real_copy = shutil.copyfileobj
        def copyfileobj(src, dst, length=0):
            seen[0] += 1
            if seen[0] == limit:
                dst.write(src.read(100))
                die()
            return real_copy(src, dst, length)
        shutil.copyfileobj = copyfileobj
    elif point == "mid-transaction":  # the limit-th record inserted, its batch not committed
        real_sqlite = SqliteStore._import_record
        def import_record(self, db, item):
            outcome = real_sqlite(self, db, item)
            seen[0] += 1
            if seen[0] == limit:
                die()
            return outcome
        SqliteStore._import_record = import_record
        import psycopg
        real_execute = psycopg.Cursor.execute
        def execute(self, query, params=None, **kwargs):
            result = real_execute(self, query, params, **kwargs)
            if "INSERT INTO links" in str(query):
                seen[0] += 4
                if seen[0] >= limit:
                    die()
            return result
        psycopg.Cursor.execute = execute
    elif point == "after-commit":  # SIGKILL right after the batch holding the limit-th record committed
        for store in (SqliteStore, PostgresStore):
            def wrapped(self, items, real=store.import_records):
                outcomes = real(self, items)
                seen[0] += len(items)
                if seen[0] >= limit:
                    die()
                return outcomes
            store.import_records = wrapped
    with Workspace(Path(root)) as ws:
        copy_registry(ws, CopyConfig(to=to, blobs=Path(blobs), batch_size=4))
    sys.exit(3)  # never reached: the point above is always hit
''')


def _killed_copy(script: Path, point: str, limit: int, root: Path, to: str, blobs: Path) -> None:
    run = subprocess.run([sys.executable, str(script), point, str(limit), str(root), to, str(blobs)], cwd=REPO,
                         capture_output=True, text=True, timeout=120, check=False, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == -signal.SIGKILL, run.stdout + run.stderr


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_copy_killed_mid_blob_mid_transaction_and_after_a_commit_is_finished_by_a_rerun_with_nothing_duplicated(
    kind: str, source: Path, tmp_path: Path, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str],
) -> None:
    to = _destination(request, tmp_path, kind)
    blobs = tmp_path / "team-blobs"
    blobs.mkdir()
    script = tmp_path / "killed_copy.py"
    script.write_text(_KILLED_COPY)
    before = dump_of(f"sqlite:///{source / 'registry.db'}")

    _killed_copy(script, "mid-blob", 3, source, to, blobs)
    assert len(list((blobs / "objects").glob("*/*"))) == 2 and len(list((blobs / "tmp").iterdir())) == 1  # a torn write
    assert dump_of(to)["records"] == []  # no record before all its blobs are there

    _killed_copy(script, "mid-transaction", 6, source, to, blobs)
    assert len(dump_of(to)["records"]) == 4  # the first batch committed; the second, cut off inside, left no trace

    _killed_copy(script, "after-commit", 8, source, to, blobs)
    state = dump_of(to)
    assert len(state["records"]) == 8 and state["versions"] == [] and state["alias_history"] == []

    report = _cli(capsys, "--workspace", source, "registry", "copy", "--to", to, "--blobs", blobs)
    assert report["tables"]["records"] == {"copied": 9, "already_present": 8, "kept_destination": 0}
    assert report["tables"]["alias_history"]["copied"] == 7 and report["blobs"]["copied"] == 0
    assert dump_of(to) == before
    published = sorted(p.parent.name + p.name for p in (blobs / "objects").glob("*/*"))
    assert published == sorted(sha for sha in Workspace(source).blobs)
    assert all(sha256_file(blobs / "objects" / s[:2] / s[2:]) == s for s in published)  # the torn one never published
    verified = _cli(capsys, "--registry", to, "--blobs", blobs, "--workspace", tmp_path / "host2", "registry", "verify")
    alone = _cli(capsys, "--workspace", source, "registry", "verify")
    assert verified["passed"] and {**verified, "seconds": 0} == {**alone, "seconds": 0} and verified["checked"] == 12


# -- merging into a store that is in use -----------------------------------------------------------------------------

def test_a_copy_that_contradicts_the_destination_is_exit_4_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    to = f"sqlite:///{tmp_path / 'team' / 'registry.db'}"
    build_workspace(tmp_path / "a")
    _cli(capsys, "--workspace", tmp_path / "a", "registry", "copy", "--to", to)
    merged = dump_of(to)
    team_blobs = sorted(p.name for p in (tmp_path / "team" / "objects").glob("*/*"))

    # The same records made again elsewhere, with aliases moved at other times: the histories diverge.
    build_workspace(tmp_path / "b")
    result = run_main(["--json", "--workspace", tmp_path / "b", "registry", "copy", "--to", to], capsys)
    assert result.code == 4, result.err
    error = result.json()["error"]
    assert error["type"] == "RegistryConflictError" and "history of model cls@production for jetson-orin-nano" in error["message"]
    assert "diverges" in error["message"] and "copy into an empty registry" in error["message"]

    # A registry that numbered its own versions of the same name: lake@v1 is taken by another record.
    with Workspace(tmp_path / "c") as ws:
        ws.registry.commit(NewRecord(kind="dataset", name="lake", body={"other": True}, version=True,
                                     blobs=((ws.blobs.put_bytes(b"other bytes"), "manifest"),)))
    result = run_main(["--json", "--workspace", tmp_path / "c", "registry", "copy", "--to", to], capsys)
    assert result.code == 4 and "dataset lake@v1 is" in result.json()["error"]["message"]
    assert dump_of(to) == merged  # neither wrote a row ...
    assert sorted(p.name for p in (tmp_path / "team" / "objects").glob("*/*")) == team_blobs  # ... nor a blob


def test_merging_the_same_records_made_elsewhere_keeps_the_destinations_stamps_and_adds_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    to = f"sqlite:///{tmp_path / 'team' / 'registry.db'}"
    build_workspace(tmp_path / "a", models=2)
    _cli(capsys, "--workspace", tmp_path / "a", "registry", "copy", "--to", to)
    first = {r.id: r for r in dump_of(to)["records"]}
    build_workspace(tmp_path / "b", models=3, aliases=False)  # made later: other stamps, one more model
    report = _cli(capsys, "--workspace", tmp_path / "b", "registry", "copy", "--to", to)
    assert report["tables"]["records"] == {"copied": 5, "already_present": 0, "kept_destination": 12}
    assert report["tables"]["versions"] == {"copied": 2, "already_present": 0, "kept_destination": 6}
    assert report["tables"]["links"] == {"copied": 6, "already_present": 13, "kept_destination": 0}
    merged = dump_of(to)
    assert {r.id: r for r in merged["records"] if r.id in first} == first  # created_at/by as the first made them
    assert len(merged["records"]) == 17 and [v.number for v in merged["versions"] if v.name == "cls"] == [1, 2, 3]


# -- errors ----------------------------------------------------------------------------------------------------------

def test_missing_and_altered_source_blobs_are_exit_4_after_everything_else_was_copied_and_a_rerun_finishes(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    ws = Workspace(source)
    required = sorted({b.sha256 for b in ws.registry.blob_refs()})
    missing, altered = required[0], required[1]
    missing_bytes = ws.blobs.path(missing).read_bytes()
    ws.blobs.path(missing).unlink()
    altered_path = ws.blobs.path(altered)
    altered_bytes = altered_path.read_bytes()
    altered_path.chmod(0o644)
    altered_path.write_bytes(altered_bytes + b"flipped")
    ws.close()
    dest = tmp_path / "dst"
    to = f"sqlite:///{dest / 'registry.db'}"
    result = run_main(["--json", "--workspace", source, "registry", "copy", "--to", to], capsys)
    assert result.code == 4, result.err
    report = result.json()  # the one JSON document is the report, with what failed
    assert not report["complete"] and report["blobs"]["missing"] == [missing] and report["blobs"]["altered"] == [altered]
    assert report["tables"]["records"]["copied"] == 17 and "could not be copied" in result.err
    assert "rerun this copy" in result.err
    assert not (dest / "objects" / altered[:2] / altered[2:]).exists()  # altered bytes are never published
    # The copy answers verify as the source does (the altered one is missing there: its bytes were refused).
    problems = {p["sha256"]: p["problem"] for p in _cli(capsys, "--workspace", dest, "registry", "verify", code=4)["problems"]}
    assert problems == {missing: "missing", altered: "missing"}

    Workspace(source).blobs.put_bytes(missing_bytes)  # restored from a backup
    altered_path.write_bytes(altered_bytes)
    again = _cli(capsys, "--workspace", source, "registry", "copy", "--to", to)
    assert again["complete"] and again["blobs"]["copied"] == 2 and again["tables"]["records"]["copied"] == 0
    assert _cli(capsys, "--workspace", dest, "registry", "verify")["passed"]


def test_usage_and_environment_errors_say_what_to_do_and_never_print_the_password(
    source: Path, tmp_path: Path, postgres_server: PostgresServer, postgres_database: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    same = run_main(["--workspace", source, "registry", "copy", "--to", f"sqlite:///{source / 'registry.db'}"], capsys)
    assert same.code == 2 and "names the registry being copied" in same.err
    empty = run_main(["--workspace", tmp_path / "nothing", "registry", "copy", "--to", f"sqlite:///{tmp_path / 'x.db'}"], capsys)
    assert empty.code == 4 and "no registry in" in empty.err and "--workspace DIR" in empty.err
    no_dir = run_main(["--workspace", source, "registry", "copy", "--to", f"sqlite:///{tmp_path / 'y.db'}",
                       "--blobs", tmp_path / "not-mounted"], capsys)
    assert no_dir.code == 4 and "mkdir -p" in no_dir.err
    password = "s3cret-Passw0rd"
    closed = run_main(["--json", "--workspace", source, "registry", "copy", "--to",
                       f"postgresql://toolchain:{password}@127.0.0.1:1/registry?connect_timeout=2"], capsys)
    assert closed.code == 5 and "cannot reach the registry database postgresql://***@127.0.0.1:1" in closed.out
    wrong = run_main(["--workspace", source, "registry", "copy", "--to",
                      postgres_server.uri(postgres_database, password=password)], capsys)
    assert wrong.code == 4 and "refused the login" in wrong.err
    for text in (closed.out, closed.err, wrong.out, wrong.err):
        assert password not in text and postgres_server.app_password not in text


def test_help_names_the_options_and_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_main(["registry", "copy", "--help"], capsys)
    assert result.code == 0
    for words in ("--to URI", "--blobs DIR", "postgresql://", "sqlite:///", "Rerun after", "Exit 4", "5 if"):
        assert words in result.out, words


def test_the_config_refuses_nonsense() -> None:
    from toolchain.errors import UsageError

    with pytest.raises(UsageError, match="--to needs"):
        CopyConfig(to=" ")
    with pytest.raises(UsageError, match="batch size"):
        CopyConfig(to="sqlite:///x.db", batch_size=0)
    assert "secret" not in repr(CopyConfig(to="postgresql://u:secret@h/db"))


def test_records_are_imported_after_their_inputs_whatever_their_clocks_said() -> None:
    from toolchain.registry.copy import inputs_first
    from toolchain.registry.records import Link, Record
    from toolchain.registry.store import RecordImport

    def item(rid: str, *inputs: str) -> RecordImport:
        record = Record(id=rid * 64, kind="run", name="", body={}, created_at="t", created_by="u", toolchain_version="v")
        return RecordImport(record=record, links=tuple(Link(record_id=rid * 64, input_id=i * 64, role="r") for i in inputs))

    # Read oldest first, but host b's clock was behind: its model "predates" the dataset it was trained on.
    ordered = inputs_first([item("c", "b"), item("b", "a"), item("a"), item("d")], where="here")
    assert [i.record.id[0] for i in ordered] == ["a", "b", "c", "d"]  # each as soon as its inputs are in
    from toolchain.errors import CorruptStoreError

    with pytest.raises(CorruptStoreError, match="cycle"):
        inputs_first([item("a", "b"), item("b", "a")], where="here")


def test_the_human_output_shows_the_counts_and_how_to_use_the_copy(source: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    result = run_main(["--workspace", source, "registry", "copy", "--to", f"sqlite:///{tmp_path / 'dst' / 'registry.db'}"],
                      capsys)
    assert result.code == 0, result.err
    # The console wraps at its width, which the temporary folder's path length moves: compare words, not lines.
    said = " ".join(result.err.split())
    assert "records" in said and "17" in said and "image_index" in said
    assert "blobs: 15 copied" in said and "registry verify" in said  # and the next command to run

"""``registry export --mlflow`` (and ``train``/``evaluate --mlflow``) against a real ``mlflow server``.

The registry is built here (a tiny lake, a search with two trials, the final run, an evaluation,
aliases) and mirrored into a server started by ``tests/mlflow_server.py``; what arrived is read back
with MLflow's own ``MlflowClient``. Server-free checks (grouping trials, URIs, missing extra,
unreachable server) run without one.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.data.lakes import write_sequence_lake
from tests.helpers import run_main
from tests.mlflow_server import MlflowServer, free_port, mlflow_server
from toolchain.mlflow_mirror.plan import mlflow_alias
from toolchain.mlflow_mirror.trials import trials_by_final
from toolchain.workspace import Workspace

TINY = (("input_size", 32), ("batch_size", 16), ("width", 0.5))
TINY_CLI = ("--set", "input_size=32", "--set", "batch_size=16", "--set", "width=0.5")


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Tiny models train fastest on one thread (and leave the other core to the MLflow server)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _train(ws: Workspace, name: str, **options: Any) -> Any:
    from toolchain.train.search import TrainConfig, train

    with _one_thread():
        return train(ws, TrainConfig(data="tiny", name=name, overrides=TINY, device="cpu", **options))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace: dataset tiny@v1, cls@v1 from a 2-trial search, its evaluation, cls@candidate and a per-target alias."""
    pytest.importorskip("torch", reason="the [train] extra is not installed: pip install -e '.[dev]'")
    from toolchain.data.ingest import IngestConfig, ingest
    from toolchain.evaluate.model import EvaluateConfig, evaluate_model
    from toolchain.registry.aliases import AliasConfig, set_alias

    lake = tmp_path_factory.mktemp("mlflow-lake")
    write_sequence_lake(lake, sequences=30, frames=2)
    root = tmp_path_factory.mktemp("mlflow-ws") / "ws"
    with Workspace(root) as ws, _one_thread():
        ingest(ws, IngestConfig(source=str(lake), name="tiny", image_size=32, workers=1))
        _train(ws, "cls", epochs=2, search="random", trials=2, trial_epochs=1)
        evaluate_model(ws, EvaluateConfig(model="cls@v1"))
        set_alias(ws, AliasConfig(name="cls", alias="candidate", to="v1"))
        set_alias(ws, AliasConfig(name="cls", alias="production", to="v1", target="x86-64-cpu"))
    return root


@pytest.fixture
def workspace_root(trained: Path, tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    shutil.copytree(trained, root)
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    pytest.importorskip("mlflow", reason="the [mlflow] extra (mlflow-skinny) is not installed: pip install -e '.[mlflow]'")
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as running:
        yield running


def _client(server: MlflowServer) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=server.uri, registry_uri=server.uri)


def _export(root: Path, capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    result = run_main(["--workspace", root, "--json", "registry", "export", *args], capsys)
    assert result.code == 0, result.err
    return result.json()


def _artifact_paths(client: Any, run_id: str, path: str | None = None) -> list[str]:
    found = []
    for item in client.list_artifacts(run_id, path):
        found.extend(_artifact_paths(client, run_id, item.path) if item.is_dir else [f"{item.path}:{item.file_size}"])
    return sorted(found)


def _snapshot(client: Any, experiments: list[str], models: list[str]) -> dict[str, Any]:
    """Everything an export could have changed: runs of every lifecycle, their data, histories, artifacts; models."""
    from mlflow.entities import ViewType

    state: dict[str, Any] = {}
    for name in experiments:
        experiment = client.get_experiment_by_name(name)
        for run in client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL):
            histories = {k: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, k)]
                         for k in run.data.metrics}
            state[run.info.run_id] = (run.info.status, run.info.lifecycle_stage, run.info.end_time, run.data.params,
                                      run.data.tags, histories, _artifact_paths(client, run.info.run_id))
    for name in models:
        model = client.get_registered_model(name)
        versions = client.search_model_versions(f"name = '{name}'")
        state[f"model:{name}"] = (model.aliases, model.tags, sorted((v.version, v.run_id, v.source, sorted(v.tags.items()))
                                                                    for v in versions))
    return state


def _runs_by_record(client: Any, experiment: str) -> dict[tuple[str, str], Any]:
    found = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return {(r.data.tags["toolchain.record_id"], r.data.tags.get("toolchain.parent_record_id", "")): r for r in found}


def _download(client: Any, run_id: str, path: str, tmp_path: Path) -> bytes:
    return Path(client.download_artifacts(run_id, path, str(tmp_path))).read_bytes()


# -- against a real server -------------------------------------------------------------------------

def test_export_mirrors_runs_trials_evaluation_model_and_aliases_and_a_second_export_changes_nothing(
        workspace_root: Path, server: MlflowServer, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    client = _client(server)
    with Workspace(workspace_root) as ws:
        final = next(r for r in ws.registry.find(kind="run") if r.body["role"] == "final")
        trials = [r for r in ws.registry.find(kind="run") if r.body["role"] == "trial"]
        model = ws.resolve("cls@v1", kind="model").record
        evaluation = ws.registry.find(kind="evaluation")[0]
        blob = ws.blobs.read_bytes

        first = _export(workspace_root, capsys, "--mlflow", server.uri, "cls@candidate")
        assert first["scope"] == "model cls@v1" and first["changed"] is True
        assert first["runs"] == {"created": 4, "unchanged": 0, "updated": 0, "replaced": 0}  # final, 2 trials, evaluation
        assert first["registered_models"]["created"] == 1 and first["model_versions"]["created"] == 1
        assert first["aliases"]["set"] == 2 and first["warnings"] == []

        runs = _runs_by_record(client, "cls")
        parent = runs[(final.id, "")]
        assert parent.info.status == "FINISHED"
        assert parent.data.params["lr"] == json.dumps(final.body["params"]["lr"])
        assert parent.data.params["dataset"] == "tiny@v1" and parent.data.tags["toolchain.model_ref"] == "cls@v1"
        history = client.get_metric_history(parent.info.run_id, "val_accuracy")
        assert [(m.step, m.value) for m in history] == [(h["epoch"], h["val_accuracy"]) for h in final.body["history"]]
        assert parent.data.metrics["best_val_accuracy"] == final.body["val_accuracy"]
        for trial in trials:  # child runs of the final run, with their own params and metrics
            child = runs[(trial.id, final.id)]
            assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
            assert child.data.params["lr"] == json.dumps(trial.body["params"]["lr"])
            assert child.data.metrics["val_loss"] == trial.body["history"][-1]["val_loss"]
        assert len(runs) == 4

        judged = runs[(evaluation.id, "")]
        assert judged.data.metrics["accuracy"] == evaluation.body["metrics"]["accuracy"]
        assert judged.data.metrics["recall/truck"] == evaluation.body["metrics"]["recall"]["truck"]
        assert judged.data.tags["toolchain.model"] == model.id and judged.data.params["subject"] == "cls@v1"
        for plot, sha in evaluation.body["plots"].items():
            assert _download(client, judged.info.run_id, f"plots/{plot}.png", tmp_path / plot) == blob(sha)

        version, = client.search_model_versions("name = 'cls'")
        assert version.tags["toolchain.record_id"] == model.id and version.tags["toolchain.version"] == "v1"
        assert version.tags["toolchain.dataset_ref"] == "tiny@v1" and version.run_id == parent.info.run_id
        assert _download(client, parent.info.run_id, "model/weights.pt", tmp_path / "w") == blob(model.body["weights"])
        assert client.get_registered_model("cls").aliases == {"candidate": "1", "production--x86-64-cpu": "1"}

        before = _snapshot(client, ["cls"], ["cls"])
        again = _export(workspace_root, capsys, "--mlflow", server.uri, "cls@candidate")
        assert again["changed"] is False and again["runs"]["unchanged"] == 4
        assert again["runs"]["created"] == again["runs"]["updated"] == again["runs"]["replaced"] == 0
        assert again["model_versions"] == {"created": 0, "unchanged": 1, "updated": 0}
        assert again["aliases"] == {"set": 0, "unchanged": 2, "removed": 0, "skipped": 0}
        assert _snapshot(client, ["cls"], ["cls"]) == before

        # The registry moves on: a second version, candidate moved to it, the per-target alias removed.
        from toolchain.registry.aliases import AliasConfig, set_alias

        second = _train(ws, "cls", epochs=1).final
        set_alias(ws, AliasConfig(name="cls", alias="candidate", to="v2"))
        set_alias(ws, AliasConfig(name="cls", alias="production", target="x86-64-cpu", remove=True))

    everything = _export(workspace_root, capsys, "--mlflow", server.uri)
    assert everything["scope"] == "everything"
    assert everything["runs"] == {"created": 1, "unchanged": 4, "updated": 0, "replaced": 0}  # no search: no children
    assert everything["model_versions"] == {"created": 1, "unchanged": 1, "updated": 0}
    assert everything["aliases"] == {"set": 1, "unchanged": 0, "removed": 1, "skipped": 0}
    assert client.get_registered_model("cls").aliases == {"candidate": "2"}
    v2 = next(v for v in client.search_model_versions("name = 'cls'") if v.version == "2")
    assert v2.tags["toolchain.record_id"] == second.model_id
    assert not [r for r in _runs_by_record(client, "cls") if r[1] == second.run]  # a search-less run has no trials
    settled = _snapshot(client, ["cls"], ["cls"])
    assert _export(workspace_root, capsys, "--mlflow", server.uri)["changed"] is False
    assert _snapshot(client, ["cls"], ["cls"]) == settled


def test_an_interrupted_export_is_finished_and_a_duplicate_removed(
        workspace_root: Path, server: MlflowServer, capsys: pytest.CaptureFixture[str]) -> None:
    client = _client(server)
    with Workspace(workspace_root) as ws:
        evaluation = ws.registry.find(kind="evaluation")[0]
    experiment = client.create_experiment("interrupted")
    # What an export killed half-way leaves: our run, never set FINISHED, without its artifacts.
    half = client.create_run(experiment, tags={"toolchain.record_id": evaluation.id}).info.run_id

    args = ("--mlflow", server.uri, "--experiment", "interrupted", evaluation.id[:12])
    report = _export(workspace_root, capsys, *args)
    assert report["runs"] == {"created": 0, "unchanged": 0, "updated": 0, "replaced": 1}
    assert client.get_run(half).info.lifecycle_stage == "deleted"
    (_, run), = _runs_by_record(client, "interrupted").items()
    assert run.info.status == "FINISHED" and "evaluation.json" in " ".join(_artifact_paths(client, run.info.run_id))

    # Two exports racing leave two finished runs for one record: the next export keeps one.
    duplicate = client.create_run(experiment, tags={"toolchain.record_id": evaluation.id}).info.run_id
    client.set_terminated(duplicate, "FINISHED")
    assert _export(workspace_root, capsys, *args)["runs"]["updated"] == 1
    assert len(_runs_by_record(client, "interrupted")) == 1 and len(client.search_runs([experiment])) == 1
    assert _export(workspace_root, capsys, *args)["changed"] is False


def test_train_and_evaluate_mirror_with_the_mlflow_flag(
        workspace_root: Path, server: MlflowServer, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    with _one_thread():
        trained = run_main(["--workspace", workspace_root, "--json", "train", "--data", "tiny", "--name", "flagged",
                            "--epochs", "1", "--device", "cpu", *TINY_CLI, "--mlflow"], capsys)
    assert trained.code == 0, trained.err
    payload = trained.json()
    assert payload["model"] == "flagged@v1" and payload["mlflow"]["runs"]["created"] == 1
    assert payload["mlflow"]["model_versions"]["created"] == 1
    evaluated = run_main(["--workspace", workspace_root, "--json", "evaluate", "flagged@v1", "--mlflow"], capsys)
    assert evaluated.code == 0, evaluated.err
    assert evaluated.json()["mlflow"]["runs"] == {"created": 1, "unchanged": 0, "updated": 0, "replaced": 0}

    client = _client(server)
    runs = _runs_by_record(client, "flagged")
    assert set(runs) == {(payload["run"], ""), (evaluated.json()["evaluation"], "")}
    version, = client.search_model_versions("name = 'flagged'")
    assert version.tags["toolchain.record_id"] == payload["model_id"]


# -- without a server ------------------------------------------------------------------------------

def test_trials_are_grouped_under_the_final_run_their_search_chose(trained: Path) -> None:
    with Workspace(trained) as ws:
        runs = ws.registry.find(kind="run")
        final = next(r for r in runs if r.body["role"] == "final")
        trials = {r.id for r in runs if r.body["role"] == "trial"}
        assert len(trials) == 2
        assert {k: set(v) for k, v in trials_by_final(runs).items()} == {final.id: trials}
        assert trials_by_final([r for r in runs if r.id != final.id]) == {}  # a search killed before its final run


def test_mlflow_alias_names() -> None:
    assert mlflow_alias("candidate", "") == "candidate"
    assert mlflow_alias("production", "jetson-orin-nano") == "production--jetson-orin-nano"
    assert mlflow_alias("rc.1", "x86-64-cpu") == "rc_1--x86-64-cpu"  # MLflow allows letters, digits, _ and -


def test_unreachable_server_is_exit_5_and_the_password_is_never_printed(
        workspace_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("mlflow")
    uri = f"http://alice:s3cret-pw@127.0.0.1:{free_port()}"  # nothing listens there
    result = run_main(["--workspace", workspace_root, "--json", "registry", "export", "--mlflow", uri, "cls@v1"], capsys)
    assert result.code == 5, result.err
    assert "unreachable" in result.err and "127.0.0.1" in result.err
    assert "s3cret-pw" not in result.out + result.err and "alice" not in result.out + result.err
    assert result.json()["error"]["exit_code"] == 5


def test_usage_errors(workspace_root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    base = ["--workspace", workspace_root, "registry", "export"]
    assert run_main([*base, "cls@v1"], capsys).code == 2  # no --mlflow and no MLFLOW_TRACKING_URI
    bad = run_main([*base, "--mlflow", "ftp://host/x", "cls@v1"], capsys)
    assert bad.code == 2 and "tracking server URI" in bad.err
    dataset = run_main([*base, "--mlflow", "http://127.0.0.1:1", "tiny@v1"], capsys)
    assert dataset.code == 2 and "is a dataset" in dataset.err
    with Workspace(workspace_root) as ws:
        runs_before = len(ws.registry.find(kind="run"))
    unset = run_main(["--workspace", workspace_root, "train", "--data", "tiny", "--name", "x", "--epochs", "1", "--mlflow"],
                     capsys)
    assert unset.code == 2 and "MLFLOW_TRACKING_URI" in unset.err
    with Workspace(workspace_root) as ws:
        assert len(ws.registry.find(kind="run")) == runs_before  # refused before training


def test_without_the_extra_export_and_the_flags_exit_5_naming_it(tmp_path: Path) -> None:
    from tests.cli.test_cli_extras import assert_needs, run_hidden

    for args in (("registry", "export", "--mlflow", "http://127.0.0.1:1"), ("train", "--data", "x", "--mlflow"),
                 ("evaluate", "m", "--mlflow")):
        assert_needs(run_hidden({"mlflow"}, *args, cwd=tmp_path), "mlflow")
    assert not (tmp_path / "ws").exists(), "the check comes before any work"


def test_a_stage_whose_mirror_fails_is_still_recorded_and_says_how_to_mirror_it(
        workspace_root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with Workspace(workspace_root) as ws:
        before = len(ws.registry.find(kind="evaluation"))
    result = run_main(["--workspace", workspace_root, "evaluate", "cls@v1", "--split", "val", "--mlflow"], capsys)
    assert result.code == 5, result.err
    assert "is recorded in the registry" in result.err and "toolchain registry export --mlflow URI" in result.err
    with Workspace(workspace_root) as ws:
        assert len(ws.registry.find(kind="evaluation")) == before + 1


def test_a_missing_blob_is_left_out_of_the_plan_with_a_warning(workspace_root: Path) -> None:
    from toolchain.mlflow_mirror import scope
    from toolchain.mlflow_mirror.plan import plan

    with Workspace(workspace_root) as ws:
        evaluation = ws.registry.find(kind="evaluation")[0]
        gone = evaluation.body["plots"]["pr_curve"]
        ws.blobs.path(gone).unlink()  # lost from the store (a disk fault, a hand-deleted file)
        mirror = plan(ws, scope.of_ref(ws, "cls@v1"))
    judged = next(r for r in mirror.runs if r.record_id == evaluation.id)
    assert [a.path for a in judged.artifacts] == ["evaluation.json", "plots/confusion_matrix.png"]
    assert any(gone[:12] in w and "missing" in w for w in mirror.warnings)
    assert [(v.ref, v.model_dir) for v in mirror.versions] == [("cls@v1", "model")]
    assert {r.kind for r in mirror.runs} == {"run", "evaluation"} and len(mirror.runs) == 4

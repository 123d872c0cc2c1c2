"""`toolchain pipeline`: config validation, a whole small run, a second run that skips every stage,
and a run killed mid-training that resumes at the first unfinished stage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from toolchain.errors import BadInputError, InputNotFoundError
from toolchain.pipeline.config import DEFAULT_FILE, load_pipeline

SMALL = """
[pipeline]
name = "tiny"
workdir = "out"
[data]
images = 300
corrupt = 3
[train]
search = "random"
trials = 2
trial_epochs = 1
epochs = {epochs}
device = "cpu"
[train.overrides]
input_size = 32
width = 0.5
batch_size = 32
early_stopping_patience = 1000
[gates]
min_accuracy = 0.0
min_recall = 0.0
[quantize]
samples = 32
max_drop = 100.0
[bench]
seconds = 1
fps = 15
size = "160x96"
duration = 1
warmup = 0.2
"""


def _write(tmp_path: Path, epochs: int = 2) -> Path:
    path = tmp_path / "pipeline.toml"
    path.write_text(SMALL.format(epochs=epochs))
    return path


def _pipeline(tmp_path: Path, config: Path, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "toolchain", "--workspace", str(tmp_path / "ws"), "--json", "pipeline",
                             str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, **kwargs)  # type: ignore[call-overload]


def test_embedded_default_loads_and_bad_files_are_refused(tmp_path: Path) -> None:
    default = load_pipeline(None)
    assert default.targets[0].name == "x86-64-cpu" and default.targets[0].precisions == ("fp32", "int8")
    assert default.source == "embedded default" and DEFAULT_FILE.is_file()
    with pytest.raises(InputNotFoundError):
        load_pipeline(tmp_path / "missing.toml")
    cases = {
        "[train]\nepoch = 3\n": "unknown setting",
        "[trian]\n": "unknown section",
        "[train]\ntrials = 'many'\n": "whole number",
        "[[targets]]\nname = 'x86-64-cpu'\nprecisions = ['int4']\n": "precisions",
        "[gates]\non_fail = 'ignore'\n": "on_fail",
        "[train\n": "not valid TOML",
    }
    for text, message in cases.items():
        path = tmp_path / "bad.toml"
        path.write_text(text)
        with pytest.raises(BadInputError, match=message):
            load_pipeline(path)
    path = tmp_path / "ok.toml"
    path.write_text("[data]\nsource = 'lake'\n[train.overrides]\ninput_size = 64\n")
    config = load_pipeline(path)
    assert config.path(config.data.source) == tmp_path / "lake" and config.train.overrides == (("input_size", 64),)


def test_small_pipeline_runs_then_skips_every_stage(tmp_path: Path) -> None:
    config = _write(tmp_path)
    first = _pipeline(tmp_path, config)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    result = json.loads(out)
    names = [s["stage"] for s in result["stages"]]
    assert names[:4] == ["lake", "ingest", "train", "evaluate"] and "register" in names
    assert {(r["target"], r["precision"]) for r in result["rows"]} == {("x86-64-cpu", "fp32"), ("x86-64-cpu", "int8")}
    for row in result["rows"]:
        assert row["size_mb"] > 0 and 0 <= row["accuracy"] <= 1 and row["p99_ms"] > 0 and row["benchmark"]
        assert isinstance(row["realtime"], bool)
    assert result["alias"] == "tiny-edgenet@candidate"
    second = _pipeline(tmp_path, config)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    again = json.loads(out)
    assert again["skipped"] == len(again["stages"]) == len(result["stages"])
    assert again["rows"] == result["rows"]


def test_pipeline_killed_mid_training_resumes_from_training(tmp_path: Path) -> None:
    from toolchain.models.checkpoint import load_checkpoint

    config = _write(tmp_path, epochs=100)
    proc = _pipeline(tmp_path, config, start_new_session=True)
    runs = tmp_path / "ws" / "runs"
    deadline = time.monotonic() + 300
    killed = False
    while time.monotonic() < deadline and proc.poll() is None:
        # The final run (100 short epochs, no early stop) is the one with more than the trials' one epoch behind it.
        for checkpoint in runs.glob("*/checkpoint.pt") if runs.exists() else []:
            try:
                epoch = int(load_checkpoint(checkpoint)["epoch"])
                if 2 <= epoch < 60:
                    os.killpg(proc.pid, signal.SIGKILL)
                    killed = True
            except Exception:  # noqa: BLE001 - a checkpoint being replaced right now
                continue
            if killed:
                break
        if killed:
            break
        time.sleep(0.05)
    proc.wait()
    assert killed, "training finished before it could be killed"
    rerun = _pipeline(tmp_path, config)
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    result = json.loads(out)
    by_name = {s["stage"]: s for s in result["stages"]}
    assert by_name["lake"]["skipped"] and by_name["ingest"]["skipped"]
    assert not by_name["train"]["skipped"], by_name["train"]
    assert by_name["train"]["outputs"]["resumed_from_epoch"] >= 2
    assert len(result["rows"]) == 2


def test_a_lake_generation_killed_halfway_is_discarded_and_redone(tmp_path: Path) -> None:
    from toolchain.pipeline.config import parse_pipeline
    from toolchain.pipeline.run import PipelineRunner
    from toolchain.workspace import Workspace

    config = parse_pipeline({"pipeline": {"workdir": "out"}, "data": {"images": 120, "corrupt": 0}},
                            base=tmp_path, source="test")
    partial = tmp_path / "out" / "lake-120-seed7-corrupt0.partial"
    (partial / "car").mkdir(parents=True)
    (partial / "car" / "half-written.jpg").write_bytes(b"\xff\xd8")  # what a killed generator leaves
    with Workspace(tmp_path / "ws") as ws:
        lake = Path(PipelineRunner(ws, config)._lake())
        assert (lake / "manifest.csv").is_file() and not partial.exists()
        assert not (lake / "car" / "half-written.jpg").exists()
        again = PipelineRunner(ws, config)
        assert Path(again._lake()) == lake and again.outcomes[0].skipped


def test_train_seeds_key_defaults_to_one_is_checked_and_reaches_train(tmp_path: Path, monkeypatch) -> None:
    from toolchain.pipeline.config import parse_pipeline
    from toolchain.pipeline.run import PipelineRunner
    from toolchain.train import search
    from toolchain.train.loop import RunResult
    from toolchain.workspace import Workspace

    assert load_pipeline(None).train.seeds == 1
    path = tmp_path / "bad.toml"
    path.write_text("[train]\nseeds = 0\n")
    with pytest.raises(BadInputError, match="seeds must be at least 1"):
        load_pipeline(path)
    config = parse_pipeline({"train": {"seeds": 3}}, base=tmp_path, source="test")
    assert config.train.seeds == 3 and config.section("train")["seeds"] == 3  # part of the stage's cache key

    seen = []

    def fake_train(workspace, train_config, **kwargs):  # noqa: ANN001, ANN003, ANN202
        seen.append(train_config)
        final = RunResult(run="r" * 64, cached=False, resumed_from_epoch=0, best_epoch=0, val_accuracy=0.9,
                          val_loss=0.1, history=(), model_id="m" * 64, model_ref="highway-edgenet@v1")
        summary = {"count": 3, "picked_seed": 1, "test_accuracy": {"min": 0.9, "max": 0.95, "mean": 0.93, "std": 0.02,
                                                                   "spread": 0.05}}
        return search.TrainResult(final=final, trials=(), best_params={}, dataset="d", dataset_ref="d@v1",
                                  seed_summary=summary)

    monkeypatch.setattr(search, "train", fake_train)
    monkeypatch.setattr("toolchain.pipeline.run.save_stage", lambda *a, **k: "stage")
    with Workspace(tmp_path / "ws") as ws:
        runner = PipelineRunner(ws, config)
        assert runner._train("d" * 64) == "m" * 64
    assert seen[0].seeds == 3
    assert runner.outcomes[0].outputs["seeds"]["picked_seed"] == 1

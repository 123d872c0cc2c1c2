"""train / evaluate end to end through the CLI on a tiny dataset: registration, cache, resume,
search, gates, and DistributedDataParallel with two gloo processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")

from tests.train.conftest import TINY  # noqa: E402
from toolchain.registry import open_store  # noqa: E402
from toolchain.models.checkpoint import load_checkpoint  # noqa: E402


def _toolchain(workspace: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "toolchain", "--workspace", str(workspace), "--json", *args],
                          capture_output=True, text=True, check=check, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _train_args(epochs: int = 2, *extra: str) -> list[str]:
    return ["train", "--data", "tiny", "--device", "cpu", "--epochs", str(epochs), "--name", "cls", *TINY, *extra]


def test_train_registers_a_model_then_reruns_from_cache_and_evaluates(tiny_workspace: Path) -> None:
    first = json.loads(_toolchain(tiny_workspace, *_train_args()).stdout)
    assert first["model"] == "cls@v1" and len(first["run"]) == 64 and not first["cached"]
    assert len(first["history"]) == 2 and 0.0 <= first["val_accuracy"] <= 1.0
    again = json.loads(_toolchain(tiny_workspace, *_train_args()).stdout)
    assert again["cached"] and again["run"] == first["run"] and again["model"] == "cls@v1"
    renamed_args = ["other" if a == "cls" else a for a in _train_args()]
    renamed = json.loads(_toolchain(tiny_workspace, *renamed_args).stdout)
    assert renamed["cached"] and renamed["model"] == "other@v1" and renamed["model_id"] == first["model_id"]

    report = json.loads(_toolchain(tiny_workspace, "evaluate", "cls@v1").stdout)
    assert set(report["precision"]) == set(report["recall"]) == {"car", "truck"}
    assert report["passed"] is True and 0.0 <= report["accuracy"] <= 1.0
    assert set(report["plots"]) == {"confusion_matrix", "pr_curve"}
    png = tiny_workspace / "objects" / report["plots"]["confusion_matrix"][:2] / report["plots"]["confusion_matrix"][2:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Path(report["plot_paths"]["pr_curve"]).is_file()
    with open_store(str(tiny_workspace / "registry.db")) as store:
        links = {link.role: link.input_id for link in store.links_from(report["evaluation"])}
        assert links["model"] == first["model_id"]
        plot = store.get(links["plot:confusion_matrix"])
        assert plot.kind == "artifact" and plot.body["blob"] == report["plots"]["confusion_matrix"]


def test_gate_failure_exits_3_and_names_the_metric(tiny_workspace: Path) -> None:
    _toolchain(tiny_workspace, *_train_args(1))
    failed = _toolchain(tiny_workspace, "evaluate", "cls@v1", "--min-accuracy", "0.9999", "--min-recall", "0.9999", check=False)
    assert failed.returncode == 3
    assert json.loads(failed.stdout)["passed"] is False
    assert "recall of" in failed.stderr and "0.9999" in failed.stderr
    bad = _toolchain(tiny_workspace, "evaluate", "cls@v1", "--min-accuracy", "97", check=False)
    assert bad.returncode == 2  # percentages are refused with a hint


def test_killed_run_resumes_to_the_same_weights(tiny_workspace: Path, tmp_path: Path) -> None:
    import shutil

    clean = tmp_path / "clean"
    shutil.copytree(tiny_workspace, clean)
    args = _train_args(8)  # a wide window to kill it in, even on a fast machine
    proc = subprocess.Popen([sys.executable, "-m", "toolchain", "--workspace", str(tiny_workspace), "--json", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    runs = tiny_workspace / "runs"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        checkpoints = list(runs.glob("*/checkpoint.pt")) if runs.exists() else []
        if checkpoints and int(load_checkpoint(checkpoints[0])["epoch"]) >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    run_id = checkpoints[0].parent.name
    resumed = json.loads(_toolchain(tiny_workspace, "train", "--resume", run_id[:10]).stdout)
    assert resumed["run"] == run_id and resumed["resumed_from_epoch"] >= 2
    straight = json.loads(_toolchain(clean, *args).stdout)
    assert straight["run"] == run_id
    timing = ("images_per_second", "seconds")
    strip = lambda history: [{k: v for k, v in h.items() if k not in timing} for h in history]  # noqa: E731
    assert strip(straight["history"]) == strip(resumed["history"])
    a = load_checkpoint(tiny_workspace / "runs" / run_id / "checkpoint.pt")
    b = load_checkpoint(clean / "runs" / run_id / "checkpoint.pt")
    assert all((a["model"][k] == b["model"][k]).all() for k in a["model"])
    # the EMA of the weights (on by default) is checkpointed and resumes to the same average
    assert a["ema"].keys() == b["ema"].keys() and int(a["ema"]["n_averaged"]) > 0
    assert all((a["ema"][k] == b["ema"][k]).all() for k in a["ema"])
    assert any("ema_val_accuracy" in h for h in resumed["history"])
    assert (resumed["selected_weights"], resumed["best_epoch"]) == (straight["selected_weights"], straight["best_epoch"])
    assert resumed["smoothed_val_accuracy"] == straight["smoothed_val_accuracy"]
    kept = [load_checkpoint(_weights(ws, out["model_id"])) for ws, out in ((tiny_workspace, resumed), (clean, straight))]
    assert kept[0].keys() == kept[1].keys() and all((kept[0][k] == kept[1][k]).all() for k in kept[0])


def _weights(workspace: Path, model_id: str) -> bytes:
    with open_store(str(workspace / "registry.db")) as store:
        sha = store.get(model_id).body["weights"]
    return (workspace / "objects" / sha[:2] / sha[2:]).read_bytes()


def test_grid_search_records_every_trial_then_trains_the_best(tiny_workspace: Path) -> None:
    out = json.loads(_toolchain(
        tiny_workspace, *_train_args(2, "--search", "grid", "--trials", "4", "--trial-epochs", "1"),
        "--recipe", str(_small_search_recipe(tiny_workspace.parent)),
    ).stdout)
    assert len(out["trials"]) == 2
    best = max(out["trials"], key=lambda t: (t["val_accuracy"], -t["val_loss"]))
    assert out["best_params"] == best["params"]
    assert out["params"]["lr"] == best["params"]["lr"]
    with open_store(str(tiny_workspace / "registry.db")) as store:
        runs = store.find(kind="run")
        assert sorted(r.body["role"] for r in runs) == ["final", "trial", "trial"]
        assert all(r.body["dataset"] == runs[0].body["dataset"] for r in runs)
        final = next(r for r in runs if r.body["role"] == "final")
        trials = {r.id for r in runs if r.body["role"] == "trial"}
        assert {link.input_id for link in store.links_from(final.id) if link.role == "trial"} == trials


def _small_search_recipe(directory: Path) -> Path:
    from toolchain.models.recipe import load_recipe

    recipe = load_recipe("edgenet").to_dict()
    path = directory / "small-search.toml"
    lines = ['name = "small-search"', f'architecture = "{recipe["architecture"]}"', f'input_size = {recipe["input_size"]}',
             "[search]", "lr = [0.001, 0.01]"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_torchrun_two_gloo_processes_agree(tiny_workspace: Path) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "toolchain", "--workspace", str(tiny_workspace), "--json", *_train_args(1)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    payload = json.loads(out.stdout)
    assert payload["world_size"] == 2 and payload["ranks_agree"] is True
    assert payload["model"] == "cls@v1"


def test_fine_tune_from_a_local_weights_file(tiny_workspace: Path, tmp_path: Path) -> None:
    first = json.loads(_toolchain(tiny_workspace, *_train_args(1)).stdout)
    with open_store(str(tiny_workspace / "registry.db")) as store:
        weights_sha = store.get(first["model_id"]).body["weights"]
    weights = tmp_path / "start.pt"
    weights.write_bytes((tiny_workspace / "objects" / weights_sha[:2] / weights_sha[2:]).read_bytes())
    tuned = json.loads(_toolchain(
        tiny_workspace, "train", "--data", "tiny", "--device", "cpu", "--epochs", "1", "--name", "tuned", *TINY,
        "--weights", str(weights),
    ).stdout)
    assert tuned["model"] == "tuned@v1" and tuned["run"] != first["run"]
    with open_store(str(tiny_workspace / "registry.db")) as store:
        assert store.get(tuned["run"]).body["spec"]["weights"] is not None


def test_seeds_trains_k_seeds_picks_on_validation_and_records_the_spread(tiny_workspace: Path) -> None:
    out = json.loads(_toolchain(tiny_workspace, *_train_args(1, "--seeds", "3", "--seed", "4")).stdout)
    seeds = out["seeds"]
    assert seeds["count"] == 3 and seeds["seeds"] == [4, 5, 6] and len({r["run"] for r in seeds["runs"]}) == 3
    best = max(seeds["runs"], key=lambda r: (r["smoothed_val_accuracy"], -r["smoothed_val_loss"], -r["seed"]))
    assert seeds["picked_seed"] == best["seed"] == out["seed"] and seeds["picked_run"] == out["run"] == best["run"]
    tests = [r["test_accuracy"] for r in seeds["runs"]]
    spread = seeds["test_accuracy"]
    assert spread["min"] == min(tests) and spread["max"] == max(tests)
    assert spread["spread"] == pytest.approx(max(tests) - min(tests), abs=1e-6)
    assert spread["mean"] == pytest.approx(sum(tests) / 3, abs=1e-6) and spread["std"] >= 0
    assert seeds["test_images"] > 0 and out["model"] == "cls@v1"
    chance = spread["chance_spread"]  # what equally good seeds would spread on this test split
    assert 0 <= chance["p5"] <= chance["median"] <= chance["p95"] <= 1 and chance["shuffles"] > 0
    with open_store(str(tiny_workspace / "registry.db")) as store:
        model = store.get(out["model_id"])
        assert model.body["seeds"] == seeds
        links = {(link.input_id, link.role) for link in store.links_from(model.id)}
        assert (out["run"], "run") in links
        assert {i for i, role in links if role == "seed_run"} == {r["run"] for r in seeds["runs"]} - {out["run"]}
        assert len(store.find(kind="model")) == 1  # only the pick is registered

    again = json.loads(_toolchain(tiny_workspace, *_train_args(1, "--seeds", "3", "--seed", "4")).stdout)
    assert again["cached"] and again["model_id"] == out["model_id"] and again["model"] == "cls@v1"

    report = _toolchain(tiny_workspace, "evaluate", "cls@v1")
    assert json.loads(report.stdout)["seeds"]["test_accuracy"] == spread
    human = subprocess.run([sys.executable, "-m", "toolchain", "--workspace", str(tiny_workspace), "evaluate", "cls@v1"],
                           capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    text = " ".join(human.stderr.split())  # rich wraps long lines
    assert "over 3 seeds" in text and f"seed {seeds['picked_seed']} picked on validation" in text
    assert f"equally good seeds would spread {100 * chance['p5']:.1f}-{100 * chance['p95']:.1f} points" in text

    # one of those seeds trained alone is the same run, now registered as a plain model
    other = next(r for r in seeds["runs"] if r["seed"] != seeds["picked_seed"])
    single = json.loads(_toolchain(tiny_workspace, *_train_args(1, "--seed", str(other["seed"]))).stdout)
    assert single["cached"] and single["run"] == other["run"] and single["model"] == "cls@v2"
    assert "seeds" not in single
    rerun = json.loads(_toolchain(tiny_workspace, *_train_args(1, "--seeds", "3", "--seed", "4")).stdout)
    assert rerun["model"] == "cls@v1"  # the seeds' own plain models are not re-registered under the name
    with open_store(str(tiny_workspace / "registry.db")) as store:
        assert [v.number for v in store.versions("model", "cls")] == [1, 2]

    refused = _toolchain(tiny_workspace, "train", "--resume", out["run"][:10], "--seeds", "3", check=False)
    assert refused.returncode == 2 and "same `train --seeds` command again" in refused.stderr

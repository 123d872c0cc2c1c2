"""Every command under every install: it works, or exits 5 with one line naming the extra to install.

The installs (base, ``[data]``, ``[deploy]`` ...) are simulated in a fresh interpreter that hides the
modules the missing extras bring (``tests/hide_modules.py``, a meta path finder), so no virtualenv is
built per install; ``scripts/ci_wheel_smoke`` does the same against real virtualenvs made from the wheel.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest

from tests.helpers import make_image_folder, run_main
from toolchain import extras
from toolchain.cli.main import cli
from toolchain.extras import COMMANDS, EXTRAS

ROOT = Path(__file__).resolve().parents[2]
HIDER = ROOT / "tests" / "hide_modules.py"


def _leaf_commands(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found.update(_leaf_commands(command, f"{prefix}{name} "))
        else:
            found[f"{prefix}{name}"] = command
    return found


def _modules_without(*present: str) -> set[str]:
    """Import names of every extra except ``present`` (and what those include): what an install lacks."""
    keep = set()
    for name in present:
        keep |= set(extras._modules(name))
    return {module for extra in EXTRAS for module in EXTRAS[extra].modules} - keep


def _norm(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group(0)).lower()


def run_hidden(hidden: set[str], *args: object, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``toolchain ARGS`` in a fresh interpreter where ``hidden`` cannot be imported."""
    environment = {**os.environ, "TOOLCHAIN_HOME": str(cwd / "ws"), "COLUMNS": "400", **(env or {})}
    environment.pop("DOCKER_HOST", None)
    return subprocess.run([sys.executable, str(HIDER), ",".join(sorted(hidden)), "--", *map(str, args)],
                          cwd=cwd, env=environment, capture_output=True, text=True, timeout=120)


def assert_needs(run: subprocess.CompletedProcess, extra: str) -> None:
    """Exit 5, one error line naming the extra and the pip command, no traceback."""
    assert run.returncode == 5, run.stdout + run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, run.stderr
    assert f"[{extra}] extra" in errors[0] and f"pip install 'toolchain[{extra}]'" in errors[0], errors[0]
    assert "Traceback" not in run.stderr and "bug in toolchain" not in run.stderr


# -- the table -------------------------------------------------------------------------------------

def test_every_command_in_the_table_is_a_command_of_the_cli() -> None:
    leaves = _leaf_commands(cli)
    assert set(COMMANDS) <= set(leaves), set(COMMANDS) - set(leaves)
    for path, needs in COMMANDS.items():
        params = {p.name for p in leaves[path].params}
        for need in needs:
            assert need.extra in EXTRAS, (path, need)
            assert set(need.modules) <= set(extras._modules(need.extra)), (path, need)
            for option in (need.when, need.unless):
                assert option is None or option in params, f"{path} has no parameter {option!r}"


def test_the_extras_table_matches_pyproject() -> None:
    """Each extra of pyproject.toml is in EXTRAS with the same distributions and the same included extras."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(declared) == set(EXTRAS)
    for name, requirements in declared.items():
        includes = {extra for r in requirements if _norm(r) == "toolchain"
                    for extra in re.search(r"\[(.*)\]", r).group(1).split(",")}
        assert includes == set(EXTRAS[name].includes), name
        distributions = {_norm(r) for r in requirements if _norm(r) != "toolchain"} - {"setuptools"}  # a build tool
        assert distributions == {_norm(d) for d in EXTRAS[name].modules.values()}, name


def test_an_extra_is_named_for_each_of_its_modules() -> None:
    assert extras.extra_for_module("torch.nn") == "train"
    assert extras.extra_for_module("PIL.Image") == "data"
    assert extras.extra_for_module("docker.errors") == "deploy"
    assert extras.extra_for_module("numpy") is None


def test_needs_apply_with_their_options() -> None:
    pipeline, = COMMANDS["pipeline"]
    assert pipeline.applies({"print_default": False}) and not pipeline.applies({"print_default": True})
    onnx, docker = COMMANDS["build"]
    assert onnx.applies({"on": None}) and onnx.modules == ("onnx",)
    assert docker.applies({"on": "ssh://unit"}) and not docker.applies({"on": None})


# -- installs, simulated ---------------------------------------------------------------------------

@pytest.fixture
def tiny_onnx(tmp_path: Path) -> Path:
    from tests.onnx_fixtures import write_tiny_onnx

    return write_tiny_onnx(tmp_path / "tiny.onnx", size=16)


def test_base_install_every_command_with_a_missing_extra_exits_5_naming_it(tmp_path: Path) -> None:
    hidden = _modules_without()
    make_image_folder(tmp_path / "lake", per_class=2)
    (tmp_path / "fleet.toml").write_text("")
    cases = {
        ("train", "--data", "X"): "train",
        ("evaluate", "m"): "train",
        ("export", "m"): "train",
        ("quantize", "m"): "train",
        ("pipeline",): "train",
        ("data", "ingest", "lake", "--name", "x"): "data",
        ("synth", "lake", "out"): "data",
        ("package", "m", "--target", "x86-64-cpu"): "deploy",
        ("deploy", "m", "--fleet", "fleet.toml"): "deploy",
        ("deploy", "status", "--fleet", "fleet.toml"): "deploy",
        ("build", "m", "--target", "x86-64-cpu", "--on", "unix:///nowhere.sock"): "deploy",
        ("build", "m", "--target", "x86-64-cpu"): "deploy",  # reads the ONNX graph: onnx
    }
    for args, extra in cases.items():
        assert_needs(run_hidden(hidden, *args, cwd=tmp_path), extra)
    assert not (tmp_path / "out").exists() and not (tmp_path / "ws").exists(), "the check comes before any work"
    run = run_hidden(hidden, "--json", "train", "--data", "X", cwd=tmp_path)
    assert run.returncode == 5 and json.loads(run.stdout)["error"]["exit_code"] == 5


def test_base_install_runs_the_runtime_commands(tmp_path: Path, tiny_onnx: Path) -> None:
    hidden = _modules_without()
    for args in (("--help",), ("pipeline", "--print-default"), ("models", "list"), ("targets", "list"),
                 ("registry", "list"), ("data", "list"),
                 ("bench", tiny_onnx, "--source", "synthetic:64x48@30", "--duration", "0.5", "--warmup", "0.1")):
        run = run_hidden(hidden, *args, cwd=tmp_path)
        assert run.returncode == 0, (args, run.stderr[-2000:])


def test_help_of_every_command_works_in_the_base_install(tmp_path: Path) -> None:
    paths = sorted(_leaf_commands(cli))
    run = subprocess.run([sys.executable, str(HIDER), ",".join(sorted(_modules_without())), "--each"],
                         input="\n".join(f"{path} --help" for path in paths), cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "TOOLCHAIN_HOME": str(tmp_path / "ws")})
    exits = [line for line in run.stderr.splitlines() if line.startswith("EXIT ")]
    assert exits == [f"EXIT 0 {path} --help" for path in paths], run.stderr[-3000:]
    assert "Usage: toolchain package" in run.stdout and "Usage: toolchain train" in run.stdout


def test_doctor_shows_which_extras_are_present(tmp_path: Path) -> None:
    run = run_hidden(_modules_without("deploy"), "doctor", "--json", cwd=tmp_path,
                     env={"DOCKER_HOST": f"unix://{tmp_path}/none.sock"})
    assert run.returncode == 0, run.stderr
    checks = {c["name"]: c for c in json.loads(run.stdout)["checks"]}
    assert checks["[deploy]"]["ok"] is True and "docker" in checks["[deploy]"]["detail"]
    for extra in ("data", "train", "dev"):
        assert checks[f"[{extra}]"]["ok"] is False
        assert f"pip install 'toolchain[{extra}]'" in checks[f"[{extra}]"]["hint"]
    assert "torch" in checks["[train]"]["detail"]
    human = run_hidden(_modules_without("deploy"), "doctor", cwd=tmp_path, env={"DOCKER_HOST": f"unix://{tmp_path}/x"})
    assert "[deploy]" in human.stderr and "[train]" in human.stderr


def test_data_install_ingests_and_names_train_for_training(tmp_path: Path) -> None:
    hidden = _modules_without("data")
    make_image_folder(tmp_path / "lake", per_class=4)
    run = run_hidden(hidden, "--json", "data", "ingest", "lake", "--name", "cars", "--workers", "2", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert_needs(run_hidden(hidden, "train", "--data", "cars", cwd=tmp_path), "train")
    assert_needs(run_hidden(hidden, "package", "m", "--target", "x86-64-cpu", cwd=tmp_path), "deploy")


def test_deploy_install_gets_past_the_check(tmp_path: Path) -> None:
    hidden = _modules_without("deploy")
    for args in (("package", "nothing", "--target", "x86-64-cpu"), ("build", "nothing", "--target", "x86-64-cpu"),
                 ("build", "nothing", "--target", "x86-64-cpu", "--on", "unix:///nowhere.sock")):
        run = run_hidden(hidden, *args, cwd=tmp_path)
        assert run.returncode == 4, run.stderr  # past the extras: the reference does not exist
    assert_needs(run_hidden(hidden, "data", "ingest", "lake", "--name", "x", cwd=tmp_path), "data")
    assert_needs(run_hidden(hidden, "train", "--data", "X", cwd=tmp_path), "train")


def test_train_install_builds_here_and_names_deploy_for_docker(tmp_path: Path) -> None:
    hidden = _modules_without("train")
    run = run_hidden(hidden, "build", "nothing", "--target", "x86-64-cpu", cwd=tmp_path)
    assert run.returncode == 4, run.stderr  # onnx comes with [train] too: no need for [deploy] to build here
    assert_needs(run_hidden(hidden, "build", "nothing", "--target", "x86-64-cpu", "--on", "unix:///x.sock",
                            cwd=tmp_path), "deploy")
    assert_needs(run_hidden(hidden, "package", "m", "--target", "x86-64-cpu", cwd=tmp_path), "deploy")
    assert run_hidden(hidden, "train", "--data", "X", cwd=tmp_path).returncode == 4  # past the extras: no dataset X


# -- the library checks and the CLI's safety net ---------------------------------------------------

def test_ingest_checks_its_extra_before_starting_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from toolchain.data.ingest import IngestConfig, ingest
    from toolchain.errors import MissingEnvironmentError
    from toolchain.workspace import Workspace

    monkeypatch.setattr(extras, "importable", lambda module: module != "PIL")
    monkeypatch.setattr("toolchain.data.ingest.run_chunks", lambda *a, **k: pytest.fail("workers started"))
    make_image_folder(tmp_path / "lake", per_class=2)
    with Workspace(tmp_path / "ws") as ws, pytest.raises(MissingEnvironmentError, match=r"toolchain\[data\]"):
        ingest(ws, IngestConfig(source=str(tmp_path / "lake"), name="x"))


def test_a_missing_module_of_an_extra_anywhere_is_exit_5(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A module an extra brings, imported where the table did not foresee it: exit 5 naming the extra, not 1."""
    import toolchain.registry.ops

    def fails(*args: object, **kwargs: object) -> None:
        raise ModuleNotFoundError("No module named 'sklearn'", name="sklearn")

    monkeypatch.setattr(toolchain.registry.ops, "list_records", fails)
    monkeypatch.setattr(extras, "importable", lambda module: False)
    monkeypatch.setattr("toolchain.cli.main.importable", lambda module: False)
    result = run_main(["--workspace", tmp_path / "ws", "registry", "list"], capsys)
    assert result.code == 5, result.err
    assert "pip install 'toolchain[train]'" in result.err and "bug" not in result.err


def test_a_missing_module_no_extra_brings_is_still_a_bug(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import toolchain.registry.ops

    def fails(*args: object, **kwargs: object) -> None:
        raise ModuleNotFoundError("No module named 'toolchain.nothing'", name="toolchain.nothing")

    monkeypatch.setattr(toolchain.registry.ops, "list_records", fails)
    result = run_main(["--workspace", tmp_path / "ws", "registry", "list"], capsys)
    assert result.code == 1 and "bug in toolchain" in result.err


def test_an_ssh_unit_without_the_sdks_ssh_support_says_which_extra(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.toml"
    fleet.write_text('[[unit]]\nname = "u"\nurl = "ssh://admin@127.0.0.1:1"\ntarget = "x86-64-cpu"\ncameras = ["rtsp://10.0.0.9/s"]\n')
    run = run_hidden({"paramiko"}, "--json", "deploy", "status", "--fleet", fleet, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    row = json.loads(run.stdout)["units"][0]
    assert not row["reachable"] and "pip install 'toolchain[deploy]'" in row["error"] and "paramiko" in row["error"]

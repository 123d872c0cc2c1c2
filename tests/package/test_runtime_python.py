"""The code the runtime image ships runs on every target's Python: checked with vermin over exactly those files.

JetPack ships Python 3.6 (4.6), 3.8 (5.x), 3.10 (6.x); the runtime (serve, runners, sources, pipeline,
health check, bench on a unit, and what they import) must run on the Python of every target ``package``
accepts, and ``package`` refuses the targets below :data:`MIN_RUNTIME_PYTHON` with what to use instead.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from toolchain.errors import MissingEnvironmentError
from toolchain.package.image import PackageConfig, check_runtime_python
from toolchain.package.runtime_files import MIN_RUNTIME_PYTHON, PACKAGE, WORKSTATION_ONLY, copy_runtime, runtime_files
from toolchain.targets.profile import list_targets


def _vermin(files: list[Path], python: str) -> subprocess.CompletedProcess[str]:
    vermin = shutil.which("vermin") or str(Path(sys.executable).with_name("vermin"))
    if not Path(vermin).exists():
        pytest.skip("vermin is not installed (pip install 'toolchain[dev]')")
    return subprocess.run([vermin, f"-t={python}-", "--violations", "--no-tips",
                           *map(str, files)], capture_output=True, text=True, timeout=300)


def _minimum_python(files: list[Path], python: str) -> tuple[bool, str]:
    run = _vermin(files, python)
    return run.returncode == 0, run.stdout + run.stderr


def test_the_image_ships_the_runtime_files_only(tmp_path: Path) -> None:
    files = {str(p) for p in runtime_files()}
    assert {"serve/__main__.py", "serve/service.py", "serve/healthcheck.py", "runtime/runners.py", "runtime/sources.py",
            "runtime/pipeline.py", "bench/onunit.py", "redaction.py"} <= files
    # the vehicle pipeline (find, follow, count) runs on the unit; scoring against a hand count does not
    assert {"runtime/geometry.py", "runtime/find.py", "runtime/track.py", "runtime/lines.py", "runtime/vehicles.py"} <= files
    assert not any(f.startswith(("evaluate/", "count/")) for f in files)
    assert not any(f.startswith(("train/", "data/", "registry/", "export/", "quantize/", "deploy/")) for f in files)
    copy_runtime(tmp_path)
    assert sorted(str(p.relative_to(tmp_path / "toolchain")) for p in (tmp_path / "toolchain").rglob("*.py")) == sorted(files)


def _module_of(relative: Path) -> str:
    """``serve/__main__.py`` -> ``toolchain.serve.__main__``; a package's ``__init__.py`` -> the package."""
    return ".".join(("toolchain", *relative.with_suffix("").parts)).removesuffix(".__init__")


def _imports(relative: Path) -> list[tuple[str, tuple[str, ...]]]:
    """Every import of a runtime file, lazy ones included: (the module, the names taken from it), relative
    imports resolved; ``import a.b`` is ``("a.b", ())``."""
    package = _module_of(relative).split(".")
    if relative.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(ast.parse((PACKAGE / relative).read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.append((module, tuple(alias.name for alias in node.names)))
    return found


def test_every_toolchain_import_of_the_runtime_stays_inside_it() -> None:
    shipped = {_module_of(p) for p in runtime_files()}
    outside = []
    for relative in runtime_files():
        for name, _ in _imports(relative):
            if name.startswith("toolchain") and name not in shipped and name not in WORKSTATION_ONLY:
                outside.append(f"{relative}: {name}")
    assert not outside, f"runtime files import modules the image does not ship: {outside}"


def _is_cli(name: str) -> bool:
    return name == "toolchain.cli" or name.startswith("toolchain.cli.")


def test_no_shipped_file_imports_the_cli() -> None:
    """The image ships no CLI (the entry point runs :mod:`toolchain.serve.command`): no runtime file may import
    it, lazily, relatively (``from toolchain import cli`` too) or by name (``importlib.import_module``)."""
    assert not any(str(p).startswith("cli/") for p in runtime_files())
    found = []
    for relative in runtime_files():
        for module, names in _imports(relative):
            if _is_cli(module) or any(_is_cli(f"{module}.{name}") for name in names):
                found.append(f"{relative}: from {module} import {', '.join(names)}" if names else f"{relative}: {module}")
        for node in ast.walk(ast.parse((PACKAGE / relative).read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and _is_cli(node.value):
                found.append(f"{relative}: {node.value!r}")
    assert not found, f"runtime files import the CLI, which the image does not ship: {found}"


# The entry point as ``python -m toolchain.serve ARGS`` runs it, with toolchain.cli hidden (tests/hide_modules.py);
# the lookups refused (an ImportError caught and ignored included) are printed last.
_WITHOUT_CLI = """
import runpy, sys
from tests.hide_modules import hide
finder = hide({"toolchain.cli"})
try:
    runpy.run_module("toolchain.serve", run_name="__main__", alter_sys=True)
finally:
    print("refused:", finder.refused, file=sys.stderr)
"""


@pytest.mark.parametrize(("argv", "code", "expected"), [
    (["--help"], 0, "Usage: toolchain serve [OPTIONS] ARTIFACT"),
    ([], 2, "Missing argument 'ARTIFACT'"),
    (["https://unit:s3cret@registry.example/m", "--source", "synthetic"], 2, "is not a bundle directory"),
])
def test_the_entry_point_runs_with_the_cli_unimportable(argv: list[str], code: int, expected: str) -> None:
    """``python3 -m toolchain.serve`` imports nothing of ``toolchain.cli``: help, a usage error (2) and a bad
    ARTIFACT (2, its password scrubbed) as with the CLI there, never an ImportError."""
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, "-c", _WITHOUT_CLI, *argv], cwd=root, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == code, run.stdout + run.stderr
    assert expected in run.stdout + run.stderr
    assert run.stderr.rstrip().endswith("refused: []"), run.stderr
    assert "s3cret" not in run.stdout + run.stderr
    if argv == ["--help"]:
        assert all(option in run.stdout for option in ("--source", "--credentials", "--line", "--publish", "--json"))


@pytest.mark.parametrize("python", sorted({t.python for t in list_targets() if t.python_version >= MIN_RUNTIME_PYTHON},
                                          key=lambda v: tuple(map(int, v.split(".")))))
def test_the_runtime_files_run_on_every_supported_target_python(python: str) -> None:
    targets = [t.name for t in list_targets() if t.python == python]
    ok, report = _minimum_python([PACKAGE / p for p in runtime_files()], python)
    assert ok, f"the runtime image's code needs a newer Python than {python} ({', '.join(targets)}):\n{report}"


def test_the_check_fails_on_code_that_needs_a_newer_python(tmp_path: Path) -> None:
    newer = tmp_path / "newer.py"
    newer.write_text("from dataclasses import dataclass\n\n@dataclass(kw_only=True)\nclass C:\n    x: int = 0\n")
    ok, report = _minimum_python([newer], f"{MIN_RUNTIME_PYTHON[0]}.{MIN_RUNTIME_PYTHON[1]}")
    assert not ok and "kw_only" in report


def test_targets_whose_python_the_runtime_cannot_run_are_refused_with_what_to_use() -> None:
    old = [t for t in list_targets() if t.python_version and t.python_version < MIN_RUNTIME_PYTHON]
    assert [t.name for t in old] == ["jetson-nano"]
    with pytest.raises(MissingEnvironmentError, match="JetPack 5.1 or later"):
        check_runtime_python(old[0], PackageConfig(ref="m", target="jetson-nano"))
    check_runtime_python(old[0], PackageConfig(ref="m", target="jetson-nano", base_image="my/l4t-py38"))  # user's choice
    assert all(t.python for t in list_targets()), "every target profile states its Python"


def test_serve_runs_from_the_shipped_files_alone(tmp_path: Path) -> None:
    """The image's entry point, with only the runtime files on the path (no workspace, registry or deploy
    modules): a lazy import of a workstation module in the serve path would crash every unit's container."""
    import json

    from tests.serve.fixtures import tiny_build
    from toolchain.serve.bundle import model_from_registry, write_bundle
    from toolchain.workspace import Workspace

    with Workspace(tmp_path / "ws") as workspace:
        model = model_from_registry(workspace, tiny_build(workspace, tmp_path))
    bundle = write_bundle(model, tmp_path / "model")
    copy_runtime(tmp_path / "runtime")
    # -S: no site processing, so the editable install's finder (a .pth file) cannot supply modules the image
    # lacks; the third-party packages come from site-packages put on the path by hand, after the runtime.
    import sysconfig

    path = os.pathsep.join([str(tmp_path / "runtime"), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    probe = ("import sys, toolchain, importlib.util; assert toolchain.__file__.startswith(sys.argv[1]), toolchain.__file__; "
             "assert importlib.util.find_spec('toolchain.workspace') is None")
    assert subprocess.run([sys.executable, "-S", "-c", probe, str(tmp_path / "runtime")], env=env, cwd=tmp_path).returncode == 0
    run = subprocess.run([sys.executable, "-S", "-m", "toolchain.serve", str(bundle), "--source", "synthetic:64x64@10",
                          "--duration", "2", "--port", "0"], capture_output=True, text=True, timeout=120, env=env,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert [json.loads(line)["label"] for line in run.stdout.splitlines() if line.startswith("{")]

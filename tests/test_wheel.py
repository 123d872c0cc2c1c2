"""The wheel and sdist carry everything a command needs at run time, and work outside a git checkout.

Builds both with ``python -m build --no-isolation`` (the [dev] extra's build and setuptools; no network)
from a copy of the sources, then lists them. ``scripts/ci_wheel_smoke`` installs the wheel into fresh
virtualenvs and runs the commands.
"""

from __future__ import annotations

import email.parser
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from toolchain import __version__
from toolchain.extras import EXTRAS

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "toolchain"


def _source_files() -> set[str]:
    """Every file of the package in the source tree (what an install must have), as wheel paths."""
    return {p.relative_to(ROOT).as_posix() for p in PACKAGE.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo", ".so")}


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("build", reason="the [dev] extra's `build` is not installed: pip install -e '.[dev]'")
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"  # a copy: the build writes egg-info beside the sources, and others test in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(PACKAGE, source / "toolchain", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"))
    run = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp / "dist"), str(source)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return tmp / "dist"


def test_the_wheel_has_every_file_of_the_package(dist: Path) -> None:
    wheel, = dist.glob(f"toolchain-{__version__}-py3-none-any.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = _source_files() - names
    assert not missing, f"not in the wheel (add them to [tool.setuptools.package-data]): {sorted(missing)}"
    for needed in ("toolchain/package/Dockerfile.jetson", "toolchain/package/vendor-requirements.txt",
                   "toolchain/pipeline/default.toml", "toolchain/catalog/targets/x86-64-cpu.toml",
                   "toolchain/catalog/models/edgenet.toml", "toolchain/serve/healthcheck.py",
                   "toolchain/build/onnxruntime_builder.py"):
        assert needed in names, needed
    assert not [n for n in names if n.startswith("tests/") or "__pycache__" in n]
    info = f"toolchain-{__version__}.dist-info"
    metadata = email.parser.Parser().parsestr(zipfile.ZipFile(wheel).read(f"{info}/METADATA").decode())
    assert set(metadata.get_all("Provides-Extra")) == set(EXTRAS)
    assert "toolchain = toolchain.cli.main:main" in zipfile.ZipFile(wheel).read(f"{info}/entry_points.txt").decode()


def test_the_sdist_has_every_file_of_the_package(dist: Path) -> None:
    sdist, = dist.glob(f"toolchain-{__version__}.tar.gz")
    prefix = f"toolchain-{__version__}/"
    with tarfile.open(sdist) as tar:
        names = {m.name.removeprefix(prefix) for m in tar.getmembers() if m.isfile()}
    assert not _source_files() - names, sorted(_source_files() - names)
    assert {"pyproject.toml", "README.md"} <= names


def test_an_unpacked_wheel_finds_its_dockerfile_and_catalogs_outside_a_checkout(dist: Path, tmp_path: Path) -> None:
    """What ``package``, ``targets``, ``models`` and ``pipeline`` read comes from the package, not the checkout."""
    wheel, = dist.glob("*.whl")
    site = tmp_path / "site-packages"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import sys; from pathlib import Path\n"
        "import toolchain, toolchain.package.image as image\n"
        f"assert Path(toolchain.__file__).is_relative_to({str(site)!r}), toolchain.__file__\n"
        "assert not (image.REPO_ROOT / 'Dockerfile.jetson').exists()\n"
        "print(image._find_dockerfile(image.PackageConfig(ref='x', target='x86-64-cpu')))\n"
        "assert image.VENDOR_LOCK.is_file()\n"
        "from toolchain.targets.profile import load_target; load_target('x86-64-cpu'); load_target('jetson-orin-nano')\n"
        "from toolchain.models.recipe import list_recipes; assert list_recipes()\n"
        "from toolchain.pipeline.config import DEFAULT_FILE; assert Path(DEFAULT_FILE).is_file()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert Path(run.stdout.strip()) == site / "toolchain" / "package" / "Dockerfile.jetson"


def test_the_repository_dockerfile_is_the_packaged_one() -> None:
    """One source: Dockerfile.jetson at the root (README, hadolint) is a link to the one the package ships."""
    root = ROOT / "Dockerfile.jetson"
    packaged = PACKAGE / "package" / "Dockerfile.jetson"
    assert packaged.is_file() and not packaged.is_symlink()
    assert root.resolve() == packaged.resolve(), "Dockerfile.jetson must be a symlink to toolchain/package/Dockerfile.jetson"

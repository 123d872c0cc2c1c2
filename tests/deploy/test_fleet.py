"""fleet.toml parsing: defaults, typed units, and errors that say what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolchain.deploy.fleet import load_fleet
from toolchain.deploy.unit import container_names, slug
from toolchain.errors import BadInputError, InputNotFoundError

GOOD = """
[defaults]
target = "x86-64-cpu"
health_timeout_s = 30

[[unit]]
name = "a1-km12"
url = "ssh://deploy@10.0.12.7"
target = "jetson-orin-nano"
cameras = ["rtsp://10.0.12.20/s1", "north=rtsp://10.0.12.21/s1"]
canary = true
env = { TZ = "UTC", THREADS = 2 }

[[unit]]
name = "bench"
url = "unix:///tmp/u/docker.sock"
cameras = ["/cams/a.mp4"]
loop = true
mounts = ["/srv/cams:/cams:ro"]
http_port = 9100
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    return path


def test_a_fleet_parses_into_typed_units_with_defaults(tmp_path: Path) -> None:
    fleet = load_fleet(_write(tmp_path, GOOD))
    a, bench = fleet.units
    assert (a.name, a.target, a.canary, a.cameras) == ("a1-km12", "jetson-orin-nano", True,
                                                       ("rtsp://10.0.12.20/s1", "north=rtsp://10.0.12.21/s1"))
    assert a.env == (("THREADS", "2"), ("TZ", "UTC")) and a.health_timeout_s == 30 and a.network == "host"
    assert (bench.target, bench.loop, bench.mounts, bench.http_port, bench.transfer) == (
        "x86-64-cpu", True, ("/srv/cams:/cams:ro",), 9100, "load")
    assert fleet.unit("bench") is bench
    with pytest.raises(InputNotFoundError, match="no unit 'nope'"):
        fleet.unit("nope")


@pytest.mark.parametrize(("text", "message"), [
    ("[[unit]]\nname='a'\nurl='unix:///x'\ncameras=['c']\n", "'target' is missing"),
    ("[[unit]]\nname='a b'\nurl='unix:///x'\ntarget='x86-64-cpu'\ncameras=['c']\n", "name 'a b'"),
    ("[[unit]]\nname='a'\nurl='10.0.0.1'\ntarget='x86-64-cpu'\ncameras=['c']\n", "not a Docker Engine URL"),
    ("[[unit]]\nname='a'\nurl='unix:///x'\ntarget='nano-9000'\ncameras=['c']\n", "unit 1 \\(a\\)"),
    ("[[unit]]\nname='a'\nurl='unix:///x'\ntarget='x86-64-cpu'\ncameras=[]\n", "cameras is empty"),
    ("[[unit]]\nname='a'\nurl='unix:///x'\ntarget='x86-64-cpu'\ncameras='c'\n", "list of non-empty strings"),
    ("[[unit]]\nname='a'\nurl='unix:///x'\ntarget='x86-64-cpu'\ncameras=['c']\ncamera=['d']\n", "unknown field"),
    ("[[unit]]\nname='a'\nurl='unix:///x'\ntarget='x86-64-cpu'\ncameras=['c']\nmounts=['cams:/c']\n", "mount"),
    ("[[unit]]\nname='a'\nurl='unix:///x'\ntarget='x86-64-cpu'\ncameras=['c']\ntransfer='scp'\n", "transfer"),
    ("[[unit]]\nname='a'\nurl='unix:///x'\ntarget='x86-64-cpu'\ncameras=['c']\n" * 2, "more than once"),
    ("[units]\n", "unknown top-level"),
    ("", "lists no units"),
    ("[[unit]\n", "not valid TOML"),
    ("[defaults]\nurl='unix:///x'\n[[unit]]\nname='a'\n", "\\[defaults\\]"),
])
def test_bad_fleets_say_what_to_fix(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        load_fleet(_write(tmp_path, text))


def test_missing_fleet_file(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="does not exist"):
        load_fleet(tmp_path / "nope.toml")


def test_container_names_are_predictable_per_model() -> None:
    assert container_names("highway-cls@v7") == ("toolchain-highway-cls", "toolchain-highway-cls-previous",
                                                 "toolchain-highway-cls-next")
    assert slug("My Model/x") == "my-model-x" and slug("@@") == "model"


def test_container_names_are_valid_docker_names_for_any_model_name() -> None:
    import re

    for model in ("modèle-voiture@v2", "車両", "Ünïcode model", "a/b:c"):
        for name in container_names(model):
            assert re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+", name), name


def test_two_units_on_one_engine_are_refused(tmp_path: Path) -> None:
    """Containers are named per model on an engine: two units there would take each other's containers."""
    text = ("[defaults]\ntarget='x86-64-cpu'\ncameras=['c']\n"
            "[[unit]]\nname='a'\nurl='ssh://deploy@10.0.0.7'\n"
            "[[unit]]\nname='b'\nurl='ssh://deploy@10.0.0.7/'\n")
    with pytest.raises(BadInputError, match="same Docker engine"):
        load_fleet(_write(tmp_path, text))


def test_the_readme_fleet_example_parses(tmp_path: Path) -> None:
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    examples = [block for block in re.findall(r"```toml\n(.*?)```", readme, re.S) if "unit" in block]
    assert examples, "README.md shows no fleet.toml example"
    for block in examples:
        fleet = load_fleet(_write(tmp_path, block))
        assert fleet.units

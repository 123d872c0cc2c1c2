"""fleet.toml parsing: defaults, typed units, and errors that say what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolchain.deploy.fleet import load_fleet
from toolchain.deploy.unit import container_names
from toolchain.images.tags import slug
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


SECURE = """
[[unit]]
name = "a1"
url = "unix:///tmp/u/docker.sock"
target = "jetson-orin-nano"
cameras = ["north=rtsp://10.0.12.21/s1"]
credentials = "secrets/cameras.toml"
http_host = "10.0.12.7"
cpus = 1.5
log_driver = "local"
log_max_size = "5M"
log_max_file = 4
read_only = false

[[unit]]
name = "b1"
url = "unix:///tmp/v/docker.sock"
target = "x86-64-cpu"
cameras = ["/cams/a.mp4"]
"""


def test_security_settings_parse_with_safe_defaults_and_target_limits(tmp_path: Path) -> None:
    from toolchain.targets.profile import load_target

    fleet = load_fleet(_write(tmp_path, SECURE))
    a1, b1 = fleet.units
    assert a1.credentials == tmp_path / "secrets" / "cameras.toml"  # relative to the fleet file
    assert (a1.http_host, a1.log_driver, a1.log_max_size, a1.log_max_file, a1.read_only) == ("10.0.12.7", "local", "5m",
                                                                                           4, False)
    orin = load_target("jetson-orin-nano")
    assert a1.limits() == (orin.service_memory_mb, 1.5, orin.service_pids) and orin.service_memory_mb == 4096
    assert (b1.credentials, b1.http_host, b1.read_only, b1.log_driver) == (None, "127.0.0.1", True, "json-file")
    assert b1.limits() == (1024, 2.0, 256)


@pytest.mark.parametrize(("camera", "fragment"), [
    ("rtsp://admin:Secret-1@10.0.0.5/s1", "admin:Secret-1"),
    ("north=rtsp://tokenXYZ@10.0.0.5/s1", "tokenXYZ"),
    ("north=http://10.0.0.5/cgi?user=admin&pwd=Secret-2", "Secret-2"),
])
def test_camera_urls_with_inline_credentials_are_refused_without_echoing_them(tmp_path: Path, camera: str,
                                                                              fragment: str) -> None:
    text = SECURE.replace('cameras = ["/cams/a.mp4"]', f'cameras = ["{camera}"]')
    with pytest.raises(BadInputError, match="carries credentials") as info:
        load_fleet(_write(tmp_path, text))
    assert fragment not in str(info.value)


@pytest.mark.parametrize(("line", "message"), [
    ('log_driver = "syslog"', "log_driver must be one of"),
    ('log_max_size = "lots"', "log_max_size"),
    ("log_max_file = 0", "log_max_file"),
    ("memory_mb = 1", "memory_mb must be a number"),
    ("cpus = true", "cpus must be a number"),
    ('http_host = ""', "http_host"),
    ("credentials = 3", "credentials must be the path"),
])
def test_bad_security_settings_say_what_to_fix(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        load_fleet(_write(tmp_path, SECURE + line + "\n"))


def test_the_dockerfile_user_is_the_service_uid_deploy_gives_the_credentials_to() -> None:
    from toolchain.deploy.unit import SERVICE_UID

    dockerfile = (Path(__file__).resolve().parents[2] / "Dockerfile.jetson").read_text()
    users = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER ")]
    assert users == [f"{SERVICE_UID}:{SERVICE_UID}"] and SERVICE_UID != 0


def test_the_service_container_is_locked_down_with_limits_clamped_to_the_unit(tmp_path: Path) -> None:
    from toolchain.deploy.unit import lockdown

    class OneCpuEngine:  # the Docker engine boundary: only what lockdown asks of it
        def info(self) -> dict[str, int]:
            return {"NCPU": 1}

    unit = load_fleet(_write(tmp_path, SECURE)).units[1]
    options = lockdown(OneCpuEngine(), unit)
    assert options["cap_drop"] == ["ALL"] and options["security_opt"] == ["no-new-privileges:true"]
    assert options["read_only"] is True and options["tmpfs"]["/tmp"].startswith("rw,nosuid,nodev,noexec")
    assert options["mem_limit"] == options["memswap_limit"] == "1024m" and options["pids_limit"] == 256
    assert options["nano_cpus"] == 1_000_000_000  # the target asks 2 CPUs, the unit has 1
    assert options["log_config"]["Config"] == {"max-size": "10m", "max-file": "3"}


def test_lines_go_to_the_units_serve_and_are_checked_as_serve_reads_them(tmp_path: Path) -> None:
    from toolchain.deploy.fleet import load_fleet
    from toolchain.deploy.unit import _command

    fleet = tmp_path / "fleet.toml"
    base = ('[[unit]]\nname = "u1"\nurl = "unix:///tmp/x.sock"\ntarget = "x86-64-cpu"\n'
            'cameras = ["north=rtsp://10.0.0.9/s1", "rtsp://10.0.0.9/s2"]\n')
    fleet.write_text(base + 'lines = ["north/UP=0,150,235,150:up", "ALL=10,0,10,200"]\n')
    unit = load_fleet(fleet).units[0]
    command = _command(unit)
    assert command[command.index("--line") + 1] == "north/UP=0,150,235,150:up" and command.count("--line") == 2
    for bad, words in (('["south/UP=0,1,2,3"]', "not among the unit's cameras"), ('["UP=0,1,2"]', "x1,y1,x2,y2"),
                       ('["A=0,1,2,3", "A=4,5,6,7"]', "used twice")):
        fleet.write_text(base + f"lines = {bad}\n")
        with pytest.raises(BadInputError, match=words):
            load_fleet(fleet)


def test_publish_goes_to_the_units_serve_with_the_broker_login_only_in_its_credentials_file(tmp_path: Path) -> None:
    import json

    from toolchain.deploy.unit import _command, unit_credentials

    fleet = tmp_path / "fleet.toml"
    base = ('[[unit]]\nname = "u1"\nurl = "unix:///tmp/x.sock"\ntarget = "x86-64-cpu"\n'
            'cameras = ["north=rtsp://10.0.0.9/s1"]\ncredentials = "secrets.toml"\n')
    (tmp_path / "secrets.toml").write_text('[broker]\nusername = "rsu"\npassword = "br0ker-pw"\n')
    fleet.write_text(base + 'publish = { url = "mqtts://tmc.example:8883/traffic", interval_s = 30, spool_max_mb = 8 }\n')
    unit = load_fleet(fleet).units[0]
    command = _command(unit)
    assert command[command.index("--publish") + 1] == "mqtts://tmc.example:8883/traffic"
    assert command[command.index("--unit") + 1] == "u1" and command[command.index("--spool") + 1] == \
        "/var/lib/toolchain/spool"
    assert command[command.index("--spool-max-bytes") + 1] == str(8 << 20)
    assert command[command.index("--publish-interval") + 1] == "30"
    assert "br0ker-pw" not in " ".join(command)
    # The unit's credentials file carries the broker's login (no camera of it has one: that is fine here).
    assert json.loads(unit_credentials(unit) or "{}")["broker"] == {"username": "rsu", "password": "br0ker-pw"}
    fleet.write_text(base + 'publish = "mqtt://tmc.example/traffic"\n')
    assert load_fleet(fleet).units[0].publish.url == "mqtt://tmc.example/traffic"  # type: ignore[union-attr]
    for bad, words in (('"mqtt://rsu:pw@tmc.example/traffic"', "credentials file"), ('"http://tmc/x"', "mqtt://"),
                       ('{ url = "mqtt://tmc/x", colour = 1 }', "unknown key"),
                       ('{ url = "mqtt://tmc/x", spool_max_mb = 0.5 }', "whole megabytes"),
                       ('"mqtt://tmc.example/traffic/#"', "#")):
        fleet.write_text(base + f"publish = {bad}\n")
        with pytest.raises(BadInputError, match=words) as caught:
            load_fleet(fleet)
        assert "pw@" not in str(caught.value)


def test_deploy_status_reads_the_publishing_state_from_the_health_check_output() -> None:
    import json

    from toolchain.serve.healthcheck import publish_summary

    body = {"healthy": True, "publish": {"broker": "mqtt://tmc/traffic", "connected": False, "error": "refused",
                                         "spool_depth": 12, "oldest_unsent_age_s": 33.5, "evicted": {"crossing": 2},
                                         "lost": 0, "sent": 40, "in_flight": 0}}
    summary = publish_summary(json.dumps(body))
    assert summary is not None and summary["spool_depth"] == 12 and summary["connected"] is False
    assert "in_flight" not in summary
    assert publish_summary(json.dumps({"healthy": True})) is None and publish_summary("no answer on port 1") is None

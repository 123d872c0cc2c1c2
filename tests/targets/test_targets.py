"""Hardware targets: the built-in catalog's facts, validation errors, extra catalogs, paths and opset checks."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from toolchain.errors import BadInputError, InputNotFoundError, UsageError
from toolchain.targets import (
    DEFAULT_TARGET,
    KINDS,
    PRECISIONS,
    TARGETS_ENV,
    Target,
    check_opset,
    list_targets,
    load_target,
    max_opset_for,
    parse_target,
)
from toolchain.targets.profile import builtin_dir

BUILTIN = (
    "jetson-nano", "jetson-xavier-nx", "jetson-agx-xavier", "jetson-orin-nano", "jetson-orin-nx",
    "jetson-agx-orin", "jetson-thor", "x86-64-cpu", "aarch64-cpu",
)
JETSONS = tuple(name for name in BUILTIN if name.startswith("jetson-"))

CPU = '''name = "box"
kind = "onnxruntime"
architecture = "x86_64"
max_onnx_opset = 17
precisions = ["fp32", "int8"]
runtime_image = "python:3.11-slim"
build_image = "python:3.11-slim"
'''

GPU = '''name = "gpu"
kind = "tensorrt"
architecture = "aarch64"
gpu_compute_capability = "8.7"
dla_cores = 2
tensorrt = "10.3.0"
cuda = "12.6"
memory_gb = 32
max_onnx_opset = 17
precisions = ["fp32", "fp16", "int8"]
uint8_input = true
runtime_image = "nvcr.io/nvidia/l4t-jetpack:r36.4.0"
build_image = "nvcr.io/nvidia/l4t-jetpack:r36.4.0"
'''


@pytest.fixture(autouse=True)
def _no_user_catalog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TARGETS_ENV, raising=False)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def replace(text: str, key: str, line: str | None) -> str:
    """``text`` with the line setting ``key`` replaced by ``line`` (or removed)."""
    lines = [line if row.split("=")[0].strip() == key else row for row in text.splitlines()]
    return "\n".join(row for row in lines if row is not None) + "\n"


# --------------------------------------------------------------------------- the catalog


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_target_loads_and_round_trips(name: str) -> None:
    target = load_target(name)
    assert target.name == name
    assert target.kind in KINDS and target.description
    assert set(target.precisions) <= set(PRECISIONS) and "fp32" in target.precisions
    assert target.runtime_image and target.build_image
    assert target.camera_fps == 15 and target.latency_budget_ms == 66
    # Only the workstation target has run the toolchain's artifacts (here and in CI); no device has.
    assert target.verified_on_hardware is (name == "x86-64-cpu")
    assert 7 <= max_opset_for(target) <= 21
    assert parse_target(target.to_dict(), source=target.source) == target
    text = Path(target.source).read_text()
    assert text.startswith("#"), "every catalog file says where its facts come from"


@pytest.mark.parametrize("name", JETSONS)
def test_jetsons_are_tensorrt_on_aarch64(name: str) -> None:
    target = load_target(name)
    assert target.kind == "tensorrt" and target.backend == "tensorrt" and target.is_tensorrt
    assert target.architecture == "aarch64" and target.docker_platform == "linux/arm64"
    assert target.compute_capability is not None
    assert target.tensorrt and target.cuda and target.jetpack and target.l4t and target.memory_gb > 0


def test_catalog_facts() -> None:
    nano = load_target("jetson-nano")
    assert (nano.gpu_compute_capability, nano.dla_cores, nano.tensorrt_version[:2]) == ("5.3", 0, (8, 2))
    assert "int8" not in nano.precisions and nano.precisions == ("fp32", "fp16")
    assert nano.max_onnx_opset == 13 and nano.uint8_input is False
    assert (nano.jetpack, nano.l4t, nano.cuda, nano.memory_gb) == ("4.6", "32.7", "10.2", 4)

    for name, memory in (("jetson-xavier-nx", 8), ("jetson-agx-xavier", 32)):
        xavier = load_target(name)
        assert (xavier.gpu_compute_capability, xavier.dla_cores, xavier.tensorrt) == ("7.2", 2, "8.5.2")
        assert (xavier.jetpack, xavier.cuda, xavier.memory_gb, xavier.max_onnx_opset) == ("5.1", "11.4", memory, 17)
        assert xavier.uint8_input and xavier.supports("int8")
        assert "l4t-tensorrt:r8.5.2" in xavier.runtime_image

    for name, dla in (("jetson-orin-nano", 0), ("jetson-orin-nx", 2), ("jetson-agx-orin", 2)):
        orin = load_target(name)
        assert (orin.gpu_compute_capability, orin.dla_cores, orin.tensorrt_version[:2]) == ("8.7", dla, (10, 3))
        assert orin.cuda == "12.6" and orin.l4t == "36.4" and orin.supports("int8") and orin.supports("fp16")
    agx = load_target("jetson-agx-orin")
    assert agx.compute_capability == (8, 7) and agx.dla_cores == 2 and agx.dla_cores_verified
    # Orin Nano: do not trust a table for the DLA count, query num_DLA_cores on the device.
    orin_nano = load_target("jetson-orin-nano")
    assert not orin_nano.dla_cores_verified and "dla_cores" in orin_nano.unverified
    assert any("num_DLA_cores" in note for note in orin_nano.notes)
    assert "num_DLA_cores" in Path(orin_nano.source).read_text()

    thor = load_target("jetson-thor")
    assert thor.jetpack.startswith("7") and thor.is_tensorrt and thor.unverified

    for name, arch in (("x86-64-cpu", "x86_64"), ("aarch64-cpu", "aarch64")):
        cpu = load_target(name)
        assert cpu.kind == "onnxruntime" and cpu.architecture == arch and not cpu.is_tensorrt
        assert cpu.gpu_compute_capability == "" and cpu.compute_capability is None and cpu.dla_cores == 0
        assert cpu.tensorrt == "" and cpu.stack == "ONNX Runtime"
        assert cpu.precisions == ("fp32", "int8") and cpu.uint8_input and cpu.max_onnx_opset == 20


def test_catalog_lists_builtins_with_default_and_is_package_data() -> None:
    targets = list_targets()
    names = [t.name for t in targets]
    assert names == sorted(names) and set(BUILTIN) <= set(names)
    assert DEFAULT_TARGET == "x86-64-cpu" and load_target().name == DEFAULT_TARGET
    rows = {t.name: t.summary() for t in targets}
    assert rows["x86-64-cpu"]["default"] is True and rows["jetson-nano"]["default"] is False
    assert all(row["builtin"] for row in rows.values())
    for row in rows.values():
        assert {"name", "backend", "tensorrt", "jetpack", "compute_capability", "dla_cores"} <= set(row)
    assert (builtin_dir() / "jetson-nano.toml").is_file()
    top_level = Path(__file__).resolve().parents[2] / "targets"
    if top_level.exists():  # the repository's targets/ is the catalog (a symlink)
        assert (top_level / "jetson-nano.toml").resolve() == (builtin_dir() / "jetson-nano.toml").resolve()


def test_target_is_frozen_and_hashable() -> None:
    target = load_target("jetson-agx-orin")
    with pytest.raises(dataclasses.FrozenInstanceError):
        target.dla_cores = 1  # type: ignore[misc]
    assert hash(target) == hash(load_target("jetson-agx-orin"))
    assert load_target(target) is target


def test_latency_budget_defaults_to_one_frame_interval(tmp_path: Path) -> None:
    target = load_target(write(tmp_path / "box.toml", CPU + "camera_fps = 30\n"))
    assert target.camera_fps == 30 and target.latency_budget_ms == 33
    assert load_target(write(tmp_path / "box2.toml", CPU)).latency_budget_ms == 66


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        (CPU + "colour = 1\n", "colour", "unknown key"),
        (CPU + "dla_core = 1\n", "dla_core", "did you mean 'dla_cores'"),
        (replace(CPU, "kind", 'kind = "openvino"'), "kind", "tensorrt, onnxruntime"),
        (replace(CPU, "architecture", 'architecture = "arm64"'), "architecture", "aarch64"),
        (replace(CPU, "architecture", None), "architecture", "missing"),
        (replace(CPU, "runtime_image", None), "runtime_image", "missing"),
        (replace(CPU, "runtime_image", 'runtime_image = ""'), "runtime_image", "container image"),
        (replace(CPU, "max_onnx_opset", 'max_onnx_opset = "17"'), "max_onnx_opset", "integer"),
        (replace(CPU, "max_onnx_opset", "max_onnx_opset = 17.0"), "max_onnx_opset", "integer"),
        (replace(CPU, "max_onnx_opset", "max_onnx_opset = 6"), "max_onnx_opset", "between 7 and 21"),
        (replace(CPU, "max_onnx_opset", "max_onnx_opset = 22"), "max_onnx_opset", "between 7 and 21"),
        (replace(CPU, "precisions", 'precisions = "fp32"'), "precisions", "list"),
        (replace(CPU, "precisions", "precisions = []"), "precisions", "non-empty"),
        (replace(CPU, "precisions", 'precisions = ["fp32", "bf16"]'), "precisions", "fp32, fp16, int8"),
        (replace(CPU, "precisions", 'precisions = ["fp32", "fp32"]'), "precisions", "repeats"),
        (replace(CPU, "precisions", 'precisions = ["int8"]'), "precisions", "lacks fp32"),
        (replace(CPU, "precisions", 'precisions = ["fp32", "fp16"]'), "precisions", "onnxruntime"),
        (CPU + 'gpu_compute_capability = "8.7"\n', "gpu_compute_capability", "does not apply"),
        (CPU + 'tensorrt = "8.5.2"\n', "tensorrt", "does not apply"),
        (CPU + "dla_cores = 2\n", "dla_cores", "does not apply"),
        (CPU + "uint8_input = 1\n", "uint8_input", "true or false"),
        (CPU + "verified_on_hardware = \"no\"\n", "verified_on_hardware", "true or false"),
        (CPU + "camera_fps = 0\n", "camera_fps", "number in"),
        (CPU + "latency_budget_ms = -5\n", "latency_budget_ms", "number in"),
        (CPU + "memory_gb = -1\n", "memory_gb", "number in"),
        (CPU + 'unverified = ["dla_core"]\n', "unverified", "dla_cores"),
        (CPU + "notes = [1]\n", "notes", "string"),
        (replace(CPU, "name", 'name = "bad name!"'), "name", "letters, digits"),
        (replace(GPU, "gpu_compute_capability", None), "gpu_compute_capability", "missing on a tensorrt target"),
        (replace(GPU, "gpu_compute_capability", 'gpu_compute_capability = "sm87"'), "gpu_compute_capability", "major.minor"),
        (replace(GPU, "gpu_compute_capability", "gpu_compute_capability = 8.7"), "gpu_compute_capability", "string"),
        (replace(GPU, "tensorrt", None), "tensorrt", "missing on a tensorrt target"),
        (replace(GPU, "tensorrt", 'tensorrt = "ten"'), "tensorrt", "version"),
        (replace(GPU, "tensorrt", 'tensorrt = "7.1.3"'), "tensorrt", "older than TensorRT 8.0"),
        (replace(GPU, "cuda", None), "cuda", "missing on a tensorrt target"),
        (replace(GPU, "memory_gb", None), "memory_gb", "memory"),
        (replace(GPU, "dla_cores", "dla_cores = 9"), "dla_cores", "between 0 and 8"),
        (replace(replace(GPU, "tensorrt", 'tensorrt = "8.2.1"'), "uint8_input", None), "max_onnx_opset", "use 13"),
        (replace(GPU, "tensorrt", 'tensorrt = "8.2.1"').replace("max_onnx_opset = 17", "max_onnx_opset = 13"),
         "uint8_input", "8.5"),
        (replace(GPU, "tensorrt", 'tensorrt = "8.5.2"').replace("max_onnx_opset = 17", "max_onnx_opset = 18"),
         "max_onnx_opset", "use 17"),
        (replace(replace(GPU, "gpu_compute_capability", 'gpu_compute_capability = "5.3"'), "dla_cores", None),
         "precisions", "int8 needs"),
        (replace(GPU, "gpu_compute_capability", 'gpu_compute_capability = "6.1"').replace('"fp16", ', ""),
         "dla_cores", "predates the DLA"),
        (replace(replace(GPU, "gpu_compute_capability", 'gpu_compute_capability = "6.1"'), "dla_cores", None),
         "precisions", "fp16 needs"),
    ],
)
def test_bad_target_names_file_and_field(tmp_path: Path, text: str, field: str, words: str) -> None:
    path = write(tmp_path / "bad.toml", text)
    with pytest.raises(BadInputError) as info:
        load_target(path)
    message = str(info.value)
    assert str(path) in message
    assert f"'{field}'" in message
    assert words in message
    assert "fix it" in message
    assert info.value.exit_code == 4


def test_precision_rules_follow_the_compute_capability(tmp_path: Path) -> None:
    # SM 6.1 (GeForce 10): INT8 (dp4a) but no fast FP16, and no DLA.
    sm61 = replace(replace(GPU, "gpu_compute_capability", 'gpu_compute_capability = "6.1"'), "dla_cores", None)
    assert load_target(write(tmp_path / "a.toml", sm61.replace('"fp16", ', ""))).precisions == ("fp32", "int8")
    # SM 5.3 (Nano): FP16 but no INT8.
    sm53 = replace(replace(GPU, "gpu_compute_capability", 'gpu_compute_capability = "5.3"'), "dla_cores", None)
    assert load_target(write(tmp_path / "b.toml", sm53.replace(', "int8"', ""))).precisions == ("fp32", "fp16")


def test_name_must_match_the_catalog_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "extra" / "other.toml", CPU)  # says name = "box"
    monkeypatch.setenv(TARGETS_ENV, str(tmp_path / "extra"))
    with pytest.raises(BadInputError, match="other.toml; make them match"):
        load_target("other")


def test_invalid_toml_syntax_is_bad_input(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.toml", "name = \n")
    with pytest.raises(BadInputError, match="not valid TOML"):
        load_target(path)


def test_parse_target_refuses_non_table() -> None:
    with pytest.raises(BadInputError, match="table of target fields"):
        parse_target(["name"], source="x")  # type: ignore[arg-type]


def test_unknown_name_lists_available_and_suggests() -> None:
    with pytest.raises(InputNotFoundError) as info:
        load_target("jetson-nan")
    message = str(info.value)
    assert "did you mean 'jetson-nano'" in message and "x86-64-cpu" in message and "targets list" in message
    assert info.value.exit_code == 4


def test_missing_path_is_input_not_found(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError):
        load_target(tmp_path / "nope.toml")
    with pytest.raises(InputNotFoundError):
        load_target(str(tmp_path / "nope.toml"))


# --------------------------------------------------------------------------- extra catalogs and paths


def test_direct_path_loads_any_name(tmp_path: Path) -> None:
    path = write(tmp_path / "anything.toml", GPU)
    target = load_target(path)
    assert target.name == "gpu" and target.source == str(path)
    assert load_target(str(path)) == target
    assert target.summary()["builtin"] is False


def test_extra_catalog_dirs_add_and_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    write(first / "box.toml", CPU)
    write(second / "box.toml", CPU.replace("max_onnx_opset = 17", "max_onnx_opset = 15"))
    write(second / "jetson-nano.toml", Path(builtin_dir() / "jetson-nano.toml").read_text()
          .replace("camera_fps = 15", "camera_fps = 10").replace("latency_budget_ms = 66", "latency_budget_ms = 100"))
    monkeypatch.setenv(TARGETS_ENV, f"{first}{os.pathsep}{second}")
    assert load_target("box").max_onnx_opset == 17  # the first directory wins
    nano = load_target("jetson-nano")  # a user file hides the built-in of the same name
    assert nano.camera_fps == 10 and nano.source == str(second / "jetson-nano.toml")
    names = [t.name for t in list_targets()]
    assert "box" in names and "jetson-agx-orin" in names and names.count("jetson-nano") == 1


def test_extra_catalog_must_be_a_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TARGETS_ENV, str(tmp_path / "missing"))
    with pytest.raises(InputNotFoundError, match=TARGETS_ENV):
        list_targets()


def test_invalid_file_in_extra_catalog_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = write(tmp_path / "extra" / "box.toml", CPU + "colour = 1\n")
    monkeypatch.setenv(TARGETS_ENV, str(tmp_path / "extra"))
    with pytest.raises(BadInputError) as info:
        list_targets()
    assert str(bad) in str(info.value)


# --------------------------------------------------------------------------- opsets


def test_check_opset() -> None:
    nano = load_target("jetson-nano")
    assert max_opset_for(nano) == 13
    check_opset(nano, 11)
    check_opset(nano, 13)
    with pytest.raises(UsageError) as info:
        check_opset(nano, 17)
    message = str(info.value)
    assert "opset 17, but target jetson-nano (TensorRT 8.2) parses ONNX opsets up to 13;" in message
    assert message.endswith("re-export with --opset 13")
    assert info.value.exit_code == 2

    check_opset(load_target("jetson-xavier-nx"), 17)
    with pytest.raises(UsageError, match=r"TensorRT 8\.5\) parses ONNX opsets up to 17; re-export with --opset 17"):
        check_opset(load_target("jetson-xavier-nx"), 18)
    with pytest.raises(UsageError, match=r"x86-64-cpu \(ONNX Runtime\) runs ONNX opsets up to 20"):
        check_opset(load_target("x86-64-cpu"), 21)


def test_target_can_be_built_directly() -> None:
    target = Target(name="t", kind="onnxruntime", architecture="x86_64", max_onnx_opset=17, precisions=("fp32",),
                    runtime_image="img", build_image="img")
    assert target.latency_budget_ms == 66 and target.stack == "ONNX Runtime"
    assert target.describe()["frame_interval_ms"] == pytest.approx(66.667)

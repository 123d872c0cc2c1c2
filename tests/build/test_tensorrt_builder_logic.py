"""The TensorRT builder's own logic around the TensorRT calls, run against a stand-in for ``tensorrt``.

No TensorRT exists here, so the fake below follows NVIDIA's documented Python API (TensorRT 10.x, and
what 8.x lacks where the builder branches on it) closely enough to run ``tensorrt_builder``'s code: the
optimisation profile index check, a timing cache that does not deserialize, DLA layer placement read
back from the engine inspector and the build log (and the refusal of a DLA engine with nothing on the
DLA), the network's DLA capability check, and reading the request as UTF-8 under a C locale. What
TensorRT really prints and returns is unverified (see the README's TensorRT section); the log and
inspector samples here are the forms NVIDIA's samples and users' logs show.
"""

from __future__ import annotations

import enum
import json
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from tests.build.tiny_models import record_body, write_onnx
from toolchain.build import tensorrt_builder as tb
from toolchain.build.plan import BUILDER_SCRIPT, onnx_input_fields, plan_build
from toolchain.targets import load_target

DEVICE = {"name": "Orin (fake)", "compute_capability": "8.7", "total_memory_mib": None, "count": 1, "via": "fake"}

# --------------------------------------------------------------------------- a fake tensorrt


class Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class Scenario:
    """What the fake TensorRT does: how many layers it puts on the DLA, what it logs, what it returns."""

    def __init__(self, *, layers: int = 5, dla_capable: int | None = 5, dla_placed: int = 5, profile_index: int = 0,
                 cache: str = "ok", inspector: str = "detailed", log_style: str = "8.4", build_ok: bool = True) -> None:
        self.layers, self.dla_capable, self.dla_placed = layers, dla_capable, dla_placed
        self.profile_index, self.cache, self.inspector, self.log_style, self.build_ok = (
            profile_index, cache, inspector, log_style, build_ok)
        self.built = 0
        self.config: Any = None


def fake_tensorrt(s: Scenario) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0.30"

    class ILogger:
        Severity = Severity

        def __init__(self) -> None:
            pass

    class Flag(enum.IntEnum):
        EXPLICIT_BATCH = 0
        STRONGLY_TYPED = 1

    trt.ILogger = ILogger
    trt.NetworkDefinitionCreationFlag = Flag
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    trt.BuilderFlag = types.SimpleNamespace(FP16="fp16", INT8="int8", GPU_FALLBACK="gpu_fallback")
    trt.DeviceType = types.SimpleNamespace(GPU="gpu", DLA="dla")
    if s.inspector != "absent":  # TensorRT 8.0/8.1 have neither
        trt.ProfilingVerbosity = types.SimpleNamespace(LAYER_NAMES_ONLY="names", DETAILED="detailed", NONE="none")
        trt.LayerInformationFormat = types.SimpleNamespace(ONELINE="oneline", JSON="json")
    trt.TensorIOMode = types.SimpleNamespace(INPUT="input", OUTPUT="output")

    class Dtype:
        name = "FLOAT"

    class Tensor:
        def __init__(self, name: str, shape: tuple[int, ...]) -> None:
            self.name, self.shape = name, shape

    class Layer:
        def __init__(self, i: int) -> None:
            self.name, self.index = f"layer_{i}", i

    class Network:
        num_inputs = 1

        def __init__(self) -> None:
            self.num_layers = s.layers

        def get_input(self, i: int) -> Tensor:
            return Tensor("images", (-1, 3, 16, 16))

        def get_layer(self, i: int) -> Layer:
            return Layer(i)

    class Cache:
        def __init__(self, blob: bytes) -> None:
            self.blob = blob

        def serialize(self) -> bytes:
            return b"timings:" + self.blob

    class Profile:
        def set_shape(self, name: str, low: list[int], opt: list[int], high: list[int]) -> None:
            self.shape = (name, low, opt, high)

    class Config:
        def __init__(self) -> None:
            self.flags: list[str] = []
            self.default_device_type, self.DLA_core, self.profiling_verbosity = "gpu", -1, "names"
            self.cache: Cache | None = None
            s.config = self

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            self.pool = size

        def set_flag(self, flag: str) -> None:
            self.flags.append(flag)

        def add_optimization_profile(self, profile: Profile) -> int:
            return s.profile_index

        def create_timing_cache(self, blob: bytes) -> Cache | None:
            if blob and s.cache == "raise":
                raise RuntimeError("Serialized timing cache version mismatch")
            if blob and s.cache == "none":
                return None
            if blob and s.cache == "dropped":  # TensorRT 8.6 as NVIDIA/TensorRT#3566 shows it
                s.logger.log(Severity.ERROR, "1: [stdArchiveReader.cpp::StdArchiveReaderInitCommon::36] Error Code 1: "
                                             "Serialization (Serialization assertion magicTagRead == kMAGIC_TAG failed.")
                s.logger.log(Severity.ERROR, "4: The timing cache will not be used!")
                return Cache(b"")
            return Cache(blob)

        def set_timing_cache(self, cache: Cache, ignore_mismatch: bool) -> bool:
            if cache.blob and s.cache == "mismatch":
                return False
            self.cache = cache
            return True

        def get_timing_cache(self) -> Cache:
            assert self.cache is not None
            return self.cache

        def can_run_on_DLA(self, layer: Layer) -> bool:  # TensorRT's name
            return s.dla_capable is not None and layer.index < s.dla_capable

    if s.dla_capable is None:
        del Config.can_run_on_DLA  # an API difference: the post-build placement decides alone

    class Inspector:
        def get_engine_information(self, fmt: str) -> str:
            assert fmt == "json"
            layers: list[Any] = []
            if s.dla_placed:
                layers += ["images to nvm", f"{{ForeignNode[layer_0...layer_{s.dla_placed - 1}]}}",
                           "probabilities from nvm", "images copy finish", "probabilities copy finish"]
            layers += [f"layer_{i}" for i in range(s.dla_placed, s.layers)]
            if s.inspector == "detailed":
                layers = [{"Name": n, "LayerType": "Reformat" if "nvm" in n or "finish" in n else
                           ("ForeignNode" if n.startswith("{") else "CaskConvolution")} for n in layers]
            return json.dumps({"Layers": layers, "Bindings": ["images", "probabilities"]})

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i: int) -> str:
            return ["images", "probabilities"][i]

        def get_tensor_mode(self, name: str) -> str:
            return "input" if name == "images" else "output"

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return (-1, 3, 16, 16) if name == "images" else (-1, 2)

        def get_tensor_dtype(self, name: str) -> Dtype:
            return Dtype()

        def get_tensor_profile_shape(self, name: str, index: int) -> list[tuple[int, ...]]:
            return [(1, 3, 16, 16)] * 3

    if s.inspector != "absent":
        Engine.create_engine_inspector = lambda self: Inspector()  # type: ignore[attr-defined]

    class Builder:
        def __init__(self, logger: Any) -> None:
            self.logger, self.num_DLA_cores = logger, 2
            s.logger = logger

        def create_network(self, flags: int) -> Network:
            return Network()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes | None:
            s.built += 1
            log = self.logger.log
            log(Severity.VERBOSE, "Tactic timing: a verbose line the build log does not keep")
            if config.default_device_type == "dla" and s.log_style == "8.4":
                log(Severity.VERBOSE, "---------- Layers Running on DLA ----------")
                if s.dla_placed:
                    log(Severity.VERBOSE, f"[DlaLayer] {{ForeignNode[layer_0...layer_{s.dla_placed - 1}]}}")
                log(Severity.VERBOSE, "---------- Layers Running on GPU ----------")
                for i in range(s.dla_placed, s.layers):
                    log(Severity.VERBOSE, f"[GpuLayer] CONVOLUTION: layer_{i}")
            log(Severity.INFO, "Total Host Persistent Memory: 1024")
            return b"PLAN" * 8 if s.build_ok else None

    class Runtime:
        def __init__(self, logger: Any) -> None:
            self.DLA_core = -1

        def deserialize_cuda_engine(self, data: bytes) -> Engine:
            return Engine()

    class OnnxParser:
        num_errors = 0

        def __init__(self, network: Network, logger: Any) -> None:
            pass

        def parse_from_file(self, path: str) -> bool:
            return True

    trt.Builder, trt.Runtime, trt.OnnxParser = Builder, Runtime, OnnxParser
    return trt


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    write_onnx(folder / "model.onnx", batch="batch")
    return folder


def _request(workdir: Path, *, dla: int | None = 0, allow: bool = False, batch: tuple[int, int, int] = (1, 1, 1),
             timing_cache: str | None = None) -> dict[str, Any]:
    onnx = workdir / "model.onnx"
    body = {**record_body(onnx, batch="batch"), **onnx_input_fields(onnx)}
    options: dict[str, Any] = {"batch": batch}
    if dla is not None:
        options.update(dla_core=dla, allow_gpu_fallback_only=allow)
    plan = plan_build(load_target("jetson-agx-orin"), body, **options)
    return plan.request(onnx="model.onnx", timing_cache=timing_cache)


def _build(monkeypatch: pytest.MonkeyPatch, scenario: Scenario, request: dict[str, Any], workdir: Path,
           out: Path) -> dict[str, Any]:
    trt = fake_tensorrt(scenario)
    monkeypatch.setattr(tb, "check_environment", lambda req: (trt, dict(DEVICE)))
    return tb.build(request, workdir, out)


# --------------------------------------------------------------------------- DLA placement, end to end


def test_a_dla_build_records_where_its_layers_run(monkeypatch: pytest.MonkeyPatch, workdir: Path, tmp_path: Path) -> None:
    scenario = Scenario(layers=5, dla_placed=4)
    result = _build(monkeypatch, scenario, _request(workdir), workdir, tmp_path / "out")
    placement = result["layer_placement"]
    assert placement["source"] == "build_log"  # TensorRT's own device labels win over layer names
    assert (placement["dla"], placement["gpu"]) == (1, 1)  # one DLA subgraph, one GPU layer
    assert placement["dla_layers"] == ["{ForeignNode[layer_0...layer_3]}"] and placement["gpu_layers"] == [
        "CONVOLUTION: layer_4"]
    assert placement["engine_inspector"] == {"dla": 1, "gpu": 1, "dla_transfers": 4}
    assert placement["network_layers"] == 5 and placement["network_dla_capable"] == 5
    assert scenario.config.profiling_verbosity == "detailed"
    assert (tmp_path / "out" / tb.ENGINE_NAME).is_file()
    log = (tmp_path / "out" / tb.LOG_FILE).read_text()
    assert "[DlaLayer] {ForeignNode[layer_0...layer_3]}" in log and "Layers Running on GPU" in log
    assert "Tactic timing" not in log  # other VERBOSE lines are still dropped


def test_a_dla_build_with_nothing_on_the_dla_is_refused(monkeypatch: pytest.MonkeyPatch, workdir: Path,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(tb.BuilderError, match=r"placed no layer on DLA core 0: all 5 layers fell back to the GPU"
                                              r".*--allow-gpu-fallback-only") as caught:
        _build(monkeypatch, Scenario(dla_placed=0), _request(workdir), workdir, out)
    assert caught.value.code == tb.EXIT_BAD_INPUT
    assert not (out / tb.ENGINE_NAME).exists() and (out / tb.LOG_FILE).is_file()


def test_allow_gpu_fallback_only_keeps_such_an_engine(monkeypatch: pytest.MonkeyPatch, workdir: Path,
                                                      tmp_path: Path) -> None:
    result = _build(monkeypatch, Scenario(dla_placed=0), _request(workdir, allow=True), workdir, tmp_path / "out")
    assert result["layer_placement"]["dla"] == 0 and result["layer_placement"]["gpu"] == 5
    assert result["allow_gpu_fallback_only"] is True and result["device"] == "dla:0"


def test_a_network_the_dla_cannot_run_is_refused_before_building(monkeypatch: pytest.MonkeyPatch, workdir: Path,
                                                                 tmp_path: Path) -> None:
    scenario = Scenario(dla_capable=0, dla_placed=0)
    with pytest.raises(tb.BuilderError, match=r"none of the network's 5 layers can run on DLA core 0") as caught:
        _build(monkeypatch, scenario, _request(workdir), workdir, tmp_path / "out")
    assert caught.value.code == tb.EXIT_BAD_INPUT and scenario.built == 0


def test_without_can_run_on_dla_the_placement_still_decides(monkeypatch: pytest.MonkeyPatch, workdir: Path,
                                                            tmp_path: Path) -> None:
    result = _build(monkeypatch, Scenario(dla_capable=None), _request(workdir), workdir, tmp_path / "out")
    assert result["layer_placement"]["network_dla_capable"] is None and result["layer_placement"]["dla"] == 1


def test_the_engine_inspector_is_used_when_the_log_has_no_placement(monkeypatch: pytest.MonkeyPatch, workdir: Path,
                                                                    tmp_path: Path) -> None:
    result = _build(monkeypatch, Scenario(log_style="none", dla_placed=3), _request(workdir), workdir, tmp_path / "out")
    placement = result["layer_placement"]
    assert placement["source"] == "engine_inspector" and placement["build_log"] is None
    assert (placement["dla"], placement["gpu"], placement["dla_transfers"]) == (1, 2, 4)


def test_an_unknown_placement_is_refused_unless_allowed(monkeypatch: pytest.MonkeyPatch, workdir: Path,
                                                        tmp_path: Path) -> None:
    scenario = Scenario(log_style="none", inspector="absent")  # TensorRT 8.0: no inspector
    with pytest.raises(tb.BuilderError, match="reported no layer placement") as caught:
        _build(monkeypatch, scenario, _request(workdir), workdir, tmp_path / "out")
    assert caught.value.code == tb.EXIT_BUILD_FAILED
    result = _build(monkeypatch, Scenario(log_style="none", inspector="absent"), _request(workdir, allow=True),
                    workdir, tmp_path / "out2")
    assert result["layer_placement"]["dla"] is None and result["layer_placement"]["source"] == "none"


def test_a_gpu_build_records_its_layers_and_is_never_refused_for_them(monkeypatch: pytest.MonkeyPatch,
                                                                      workdir: Path, tmp_path: Path) -> None:
    result = _build(monkeypatch, Scenario(dla_placed=0, inspector="names"),
                    _request(workdir, dla=None, batch=(1, 1, 8)), workdir, tmp_path / "out")
    placement = result["layer_placement"]
    assert placement["source"] == "engine_inspector" and (placement["dla"], placement["gpu"]) == (0, 5)
    assert result["device"] == "gpu" and result["warnings"] == []


# --------------------------------------------------------------------------- profile index, timing cache


def test_a_profile_tensorrt_rejects_is_bad_input(monkeypatch: pytest.MonkeyPatch, workdir: Path,
                                                 tmp_path: Path) -> None:
    scenario = Scenario(profile_index=-1)
    with pytest.raises(tb.BuilderError, match=r"rejected the optimisation profile of input 'images'.*"
                                              r"add_optimization_profile returned -1") as caught:
        _build(monkeypatch, scenario, _request(workdir), workdir, tmp_path / "out")
    assert caught.value.code == tb.EXIT_BAD_INPUT and scenario.built == 0


@pytest.mark.parametrize(("behaviour", "said"), [
    ("raise", r"could not be read by TensorRT 10\.3\.0\.30 \(Serialized timing cache version mismatch\).*fresh cache"),
    ("none", r"could not be read by TensorRT 10\.3\.0\.30 \(TensorRT returned no cache\).*fresh cache"),
    ("mismatch", r"made on another device.*refused.*fresh cache"),
    ("dropped", r"TensorRT did not use the timing cache it was given"),
])
def test_a_timing_cache_tensorrt_cannot_use_is_replaced_and_said(monkeypatch: pytest.MonkeyPatch, workdir: Path,
                                                                 tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                 behaviour: str, said: str) -> None:
    (workdir / "timing.cache").write_bytes(b"a cache from TensorRT 8.6")
    request = _request(workdir, timing_cache="timing.cache")
    result = _build(monkeypatch, Scenario(cache=behaviour), request, workdir, tmp_path / "out")
    assert result["timing_cache"]["loaded"] is False
    (warning,) = result["warnings"]
    assert re.search(said, warning)
    assert warning in (tmp_path / "out" / tb.LOG_FILE).read_text()
    assert "tensorrt_builder: warning:" in capsys.readouterr().err
    assert (tmp_path / "out" / tb.TIMING_CACHE_FILE).read_bytes() == b"timings:"  # the fresh cache, saved


def test_a_good_timing_cache_is_used_silently(monkeypatch: pytest.MonkeyPatch, workdir: Path, tmp_path: Path) -> None:
    (workdir / "timing.cache").write_bytes(b"cache")
    result = _build(monkeypatch, Scenario(), _request(workdir, timing_cache="timing.cache"), workdir, tmp_path / "out")
    assert result["timing_cache"]["loaded"] is True and result["warnings"] == []


# --------------------------------------------------------------------------- placement parsers


def test_placement_from_the_tensorrt_8_4_log_form() -> None:
    lines = [  # as trtexec on a Xavier prints it (TensorRT 8.4), here through the builder's logger format
        "[05:35:26] [INFO] ---------- Layers Running on DLA ----------",
        "[05:35:26] [INFO] [DlaLayer] {ForeignNode[conv1_1...pool5]}",
        "[05:35:26] [INFO] [DlaLayer] {ForeignNode[relu6...fc8]}",
        "[05:35:26] [INFO] ---------- Layers Running on GPU ----------",
        "[05:35:26] [INFO] [GpuLayer] SHUFFLE: shuffle_between_pool5_and_fc6",
        "[05:35:26] [VERBOSE] [GpuLayer] POINTWISE: PWN(PWN(a, PWN(b, c)), d)",
        "[05:35:27] [INFO] Total Activation Memory: 1",
    ]
    placement = tb.placement_from_log(lines)
    assert placement is not None and (placement["dla"], placement["gpu"]) == (2, 2)
    assert placement["gpu_layers"][1] == "POINTWISE: PWN(PWN(a, PWN(b, c)), d)"


def test_placement_from_the_old_one_line_log_form() -> None:
    lines = [  # TensorRT 7/8.0: each section is one comma-separated line; commas inside groups are not separators
        "[13:12:43] [INFO] --------------- Layers running on DLA:",
        "[13:12:43] [INFO] {Tanh_3,Mul_4,Conv_5}, {Tanh_8,Mul_9}, {Tanh_13,Conv_20},",
        "[13:12:43] [INFO] --------------- Layers running on GPU:",
        ("[13:12:43] [INFO] Conv_0, 2253[Constant], (Unnamed Layer* 692) [Constant] + (Unnamed Layer* 693) "
         "[Shuffle], Softplus_2, PWN(PWN(x, y), z)"),
        "[13:12:44] [INFO] Detected 1 inputs and 3 output network tensors.",
    ]
    placement = tb.placement_from_log(lines)
    assert placement is not None and (placement["dla"], placement["gpu"]) == (3, 5)


def test_placement_from_the_sample_cudla_log_form_and_an_empty_gpu_section() -> None:
    lines = ["[I] [TRT] --------------- Layers running on DLA:",
             "[I] [TRT] [DlaLayer] {ForeignNode[(Unnamed Layer* 0) [ElementWise]]},",
             "[I] [TRT] --------------- Layers running on GPU:",
             "[I] [TRT] ",
             "[I] [TRT] Some later line, with a comma"]
    placement = tb.placement_from_log(lines)
    assert placement is not None and (placement["dla"], placement["gpu"]) == (1, 0)
    assert placement["dla_layers"] == ["{ForeignNode[(Unnamed Layer* 0) [ElementWise]]}"]
    assert tb.placement_from_log(["[I] [TRT] nothing about devices"]) is None


def test_placement_from_the_engine_inspector() -> None:
    names_only = {"Layers": ["images to nvm", "{ForeignNode[Conv_0...Relu_5]}", "output from nvm",
                             "images copy finish", "Flatten_6", "Gemm_7"], "Bindings": ["images", "output"]}
    placement = tb.placement_from_engine_information(json.dumps(names_only), dla_build=True)
    assert placement is not None and (placement["dla"], placement["gpu"], placement["dla_transfers"]) == (1, 2, 3)
    # On a GPU build a ForeignNode is a Myelin region, not a DLA one.
    gpu = tb.placement_from_engine_information(names_only, dla_build=False)
    assert gpu is not None and (gpu["dla"], gpu["gpu"]) == (0, 3)
    detailed = {"Layers": [{"Name": "{ForeignNode[a...b]}", "LayerType": "Myelin"},
                           {"Name": "{ForeignNode[c...d]}", "LayerType": "ForeignNode"},
                           {"Name": "x", "LayerType": "DLA"}]}
    placement = tb.placement_from_engine_information(detailed, dla_build=True)
    assert placement is not None and (placement["dla"], placement["gpu"]) == (2, 1)
    assert tb.placement_from_engine_information("not json", dla_build=True) is None
    assert tb.placement_from_engine_information(None, dla_build=True) is None
    assert tb.placement_from_engine_information('{"Layers": [], "Bindings": []}', dla_build=True) is None


def test_the_log_wins_over_the_inspector_on_dla_builds_only() -> None:
    inspected = tb._placement("engine_inspector", ["{ForeignNode[a...b]}"], [], [])
    logged = tb._placement("build_log", [], ["CONVOLUTION: a"], [])
    assert tb.layer_placement(inspected, logged, True)["source"] == "build_log"
    assert tb.layer_placement(inspected, logged, False)["source"] == "engine_inspector"
    assert tb.layer_placement(None, None, True)["dla"] is None


def test_check_placement_only_judges_dla_builds() -> None:
    nothing = tb.layer_placement(None, tb._placement("build_log", [], ["a"], []), True)
    tb.check_placement({"dla_core": None, "allow_gpu_fallback_only": False}, nothing)
    tb.check_placement({"dla_core": 1, "allow_gpu_fallback_only": True}, nothing)
    with pytest.raises(tb.BuilderError, match="DLA core 1"):
        tb.check_placement({"dla_core": 1, "allow_gpu_fallback_only": False}, nothing)


# --------------------------------------------------------------------------- request validation, encoding


@pytest.mark.parametrize(("changes", "message"), [
    ({"allow_gpu_fallback_only": "yes"}, "allow_gpu_fallback_only must be true or false"),
    ({"allow_gpu_fallback_only": True, "dla_core": None, "gpu_fallback": False}, "applies to DLA builds only"),
    ({"precision": "int8", "int8": True}, "explicitly quantized"),
])
def test_dla_request_validation(workdir: Path, changes: dict[str, Any], message: str) -> None:
    request = {**_request(workdir), **changes}
    with pytest.raises(tb.BuilderError, match=message) as caught:
        tb.validate_request(request)
    assert caught.value.code == tb.EXIT_USAGE


def test_a_request_without_allow_gpu_fallback_only_still_validates(workdir: Path) -> None:
    request = _request(workdir)
    del request["allow_gpu_fallback_only"]
    assert tb.validate_request(request)["allow_gpu_fallback_only"] is False


def test_the_request_is_read_as_utf8_under_a_c_locale(tmp_path: Path) -> None:
    """Python 3.6 under LANG=C reads text as ASCII; 3.7+ does too with UTF-8 mode and locale coercion off."""
    folder = tmp_path / "unit"
    folder.mkdir()
    script = folder / "tensorrt_builder.py"
    shutil.copy(BUILDER_SCRIPT, script)
    write_onnx(folder / "model.onnx", batch="batch")
    request = _request(folder, dla=None, batch=(1, 1, 8))
    request["target"] = "jetson-agx-orin – Autobahn-Süd"  # non-ASCII, as a user's own target name may be
    (folder / "request.json").write_text(json.dumps(request, ensure_ascii=False), encoding="utf-8")
    env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0"}
    probe = subprocess.run([sys.executable, "-S", "-X", "utf8=0", "-c",
                            "import locale; print(locale.getpreferredencoding(False))"],
                           env=env, capture_output=True, text=True, timeout=60, check=False)
    if "utf" in probe.stdout.lower():
        pytest.skip(f"this Python reads text as {probe.stdout.strip()} even under LC_ALL=C")
    result = subprocess.run([sys.executable, "-S", "-X", "utf8=0", str(script), "request.json", "out"], cwd=folder,
                            env=env, capture_output=True, text=True, timeout=60, check=False)
    # Read fine, then refused for the missing TensorRT (exit 5), not "cannot read the request" (exit 4).
    assert result.returncode == 5, result.stdout + result.stderr
    assert "tensorrt Python package does not import" in json.loads(result.stdout)["error"]["message"]

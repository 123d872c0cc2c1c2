"""The build plan: target checks, precision and DLA rules, opset limits, workspace, profiles, keys,
and the request the TensorRT builder reads, for every built-in target."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from tests.build.tiny_models import record_body, write_onnx
from toolchain.build import plan as plan_module
from toolchain.build import tensorrt_builder
from toolchain.build.plan import DEFAULT_MAX_BATCH, DEFAULT_WORKSPACE_MIB, BuildPlan, onnx_input_fields, plan_build
from toolchain.errors import BadInputError, UsageError
from toolchain.targets import Target, list_targets, load_target, parse_target

TARGETS = [t.name for t in list_targets() if t.source and "catalog" in t.source] or [t.name for t in list_targets()]
TENSORRT = [n for n in TARGETS if load_target(n).is_tensorrt]
CPU = [n for n in TARGETS if not load_target(n).is_tensorrt]
SHA = "ab" * 32


def body(*, batch: int | str = 1, opset: int = 13, qdq: bool = False, dtype: str = "float32",
         shape: list[Any] | None = None, sha: str = SHA) -> dict[str, Any]:
    """A record body as export (or quantize, with the input fields merged) writes it."""
    return {
        "type": "onnx-int8" if qdq else "onnx",
        "blob": sha,
        "opset": opset,
        "batch": "dynamic" if batch == "batch" else str(batch),
        "input_name": "images",
        "input_shape": shape if shape is not None else [batch, 3, 32, 32],
        "input_dtype": dtype,
        **({"qdq_nodes": 12, "symmetric": True} if qdq else {}),
    }


def test_catalog_has_the_targets_this_suite_expects() -> None:
    assert {"jetson-nano", "jetson-xavier-nx", "jetson-agx-xavier", "jetson-orin-nano", "jetson-orin-nx",
            "jetson-agx-orin", "jetson-thor", "x86-64-cpu", "aarch64-cpu"} <= set(TARGETS)


# --------------------------------------------------------------------------- precision


@pytest.mark.parametrize("name", TARGETS)
def test_best_precision_of_an_fp32_onnx(name: str) -> None:
    target = load_target(name)
    plan = plan_build(target, body())
    expected = "fp16" if target.is_tensorrt and "fp16" in target.precisions else "fp32"
    assert plan.precision == expected
    assert plan.backend == target.kind
    assert plan.target == name
    if target.is_tensorrt:
        assert plan.flags == ("FP16",) and plan.fp16 and not plan.int8 and not plan.strongly_typed
        assert plan.tensorrt == target.tensorrt and plan.compute_capability == target.gpu_compute_capability
        assert plan.jetpack == target.jetpack and plan.l4t == target.l4t
        assert plan.runtime == f"tensorrt {target.tensorrt}"
    else:
        assert plan.flags == () and plan.workspace_mib is None and plan.dla_core is None


@pytest.mark.parametrize("name", TENSORRT)
def test_fp32_and_fp16_on_tensorrt_targets(name: str) -> None:
    target = load_target(name)
    fp32 = plan_build(target, body(), precision="fp32")
    assert fp32.precision == "fp32" and fp32.flags == () and not fp32.fp16
    fp16 = plan_build(target, body(), precision="fp16")
    assert fp16.precision == "fp16" and fp16.fp16 and not fp16.int8


@pytest.mark.parametrize("name", CPU)
def test_cpu_targets_refuse_fp16(name: str) -> None:
    with pytest.raises(UsageError, match=r"does not run fp16.*no fast FP16.*--precision fp32"):
        plan_build(load_target(name), body(), precision="fp16")


@pytest.mark.parametrize("name", TARGETS)
def test_int8_from_an_fp32_onnx_says_to_quantize(name: str) -> None:
    with pytest.raises(UsageError, match=r"`toolchain quantize`.*calibrators are deprecated"):
        plan_build(load_target(name), body(), precision="int8")


def test_unknown_precision_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="fp32, fp16, int8, best"):
        plan_build(load_target("jetson-agx-orin"), body(), precision="fp8")


@pytest.mark.parametrize("name", TARGETS)
@pytest.mark.parametrize("requested", ["best", "int8"])
def test_qdq_onnx_builds_int8_with_the_right_flags_per_tensorrt_version(name: str, requested: str) -> None:
    target = load_target(name)
    if "int8" not in target.precisions:
        with pytest.raises(UsageError, match=r"does not run int8.*--precision fp16"):
            plan_build(target, body(qdq=True), precision=requested)
        return
    plan = plan_build(target, body(qdq=True), precision=requested)
    assert plan.precision == "int8" and plan.qdq
    if not target.is_tensorrt:
        assert plan.flags == ()
    elif target.tensorrt_version[0] >= 10:
        # TensorRT 10: strongly typed; precision flags are not allowed with it.
        assert plan.strongly_typed and not plan.int8 and not plan.fp16
        assert plan.flags == ("STRONGLY_TYPED",)
    else:
        # TensorRT 8: INT8 plus FP16 so the layers left in float may run in FP16.
        assert not plan.strongly_typed and plan.int8 and plan.fp16
        assert set(plan.flags) == {"INT8", "FP16"}


def test_nano_cannot_build_int8() -> None:
    with pytest.raises(UsageError, match="jetson-nano does not run int8"):
        plan_build(load_target("jetson-nano"), body(qdq=True))


@pytest.mark.parametrize("requested", ["fp32", "fp16"])
def test_qdq_onnx_refuses_float_precisions(requested: str) -> None:
    with pytest.raises(UsageError, match=r"this one is INT8.*--precision int8.*FP32 ONNX it was quantized from"):
        plan_build(load_target("jetson-agx-orin"), body(qdq=True), precision=requested)


def test_qdq_is_recognised_by_type_or_by_qdq_nodes() -> None:
    by_nodes = {**body(), "qdq_nodes": 3}
    assert plan_build(load_target("x86-64-cpu"), by_nodes).precision == "int8"
    assert plan_build(load_target("x86-64-cpu"), body()).precision == "fp32"


# --------------------------------------------------------------------------- opset, input


@pytest.mark.parametrize("name", TARGETS)
def test_opset_limit_of_every_target(name: str) -> None:
    target = load_target(name)
    assert plan_build(target, body(opset=target.max_onnx_opset)).opset == target.max_onnx_opset
    with pytest.raises(UsageError, match=rf"opset {target.max_onnx_opset + 1}.*--opset {target.max_onnx_opset}"):
        plan_build(target, body(opset=target.max_onnx_opset + 1))


def test_uint8_input_refused_where_the_runtime_cannot_take_it() -> None:
    uint8 = body(dtype="uint8", shape=[1, 32, 32, 3])
    with pytest.raises(UsageError, match=r"jetson-nano.*uint8.*--input float-nchw"):
        plan_build(load_target("jetson-nano"), uint8)
    assert plan_build(load_target("jetson-orin-nano"), uint8).input_dtype == "uint8"


@pytest.mark.parametrize(("change", "message"), [
    ({"blob": ""}, "no blob sha256"),
    ({"opset": None}, "no opset"),
    ({"input_shape": None}, "onnx_input_fields"),
    ({"input_shape": [1, 3, "h", 32]}, "dynamic dimension besides the batch"),
    ({"input_shape": [1, 0, 32, 32]}, "not valid"),
    ({"input_dtype": "float16"}, "float32 or uint8"),
    ({"batch": "4"}, "batch 4 but its input shape"),
])
def test_bad_record_bodies(change: dict[str, Any], message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        plan_build(load_target("jetson-agx-orin"), {**body(), **change})


def test_onnx_input_fields_complete_an_int8_record(tmp_path: Path) -> None:
    path = write_onnx(tmp_path / "q.onnx", batch="batch", qdq=True, opset=17)
    int8_body = record_body(path, batch="batch", qdq=True)
    with pytest.raises(BadInputError, match="onnx_input_fields"):
        plan_build(load_target("jetson-orin-nx"), int8_body)
    fields = onnx_input_fields(path)
    assert fields == {"input_name": "images", "input_shape": ["batch", 3, 16, 16], "input_dtype": "float32", "opset": 17}
    plan = plan_build(load_target("jetson-orin-nx"), {**int8_body, **fields})
    assert plan.precision == "int8" and plan.dynamic_batch and plan.max_shape == (DEFAULT_MAX_BATCH, 3, 16, 16)


def test_onnx_input_fields_of_a_non_onnx_file(tmp_path: Path) -> None:
    junk = tmp_path / "x.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(BadInputError, match="not a readable ONNX model"):
        onnx_input_fields(junk)


# --------------------------------------------------------------------------- DLA


DLA_TARGETS = [n for n in TENSORRT if load_target(n).dla_cores > 0 and load_target(n).dla_cores_verified]


def test_dla_targets_are_the_xaviers_and_the_bigger_orins() -> None:
    assert set(DLA_TARGETS) == {"jetson-xavier-nx", "jetson-agx-xavier", "jetson-orin-nx", "jetson-agx-orin"}


@pytest.mark.parametrize("name", DLA_TARGETS)
def test_dla_cores_within_the_target_and_always_with_gpu_fallback(name: str) -> None:
    target = load_target(name)
    for core in range(target.dla_cores):
        plan = plan_build(target, body(), dla_core=core)
        assert plan.dla_core == core and plan.gpu_fallback and plan.device == f"dla:{core}"
        assert {"DLA", "GPU_FALLBACK", "FP16"} <= set(plan.flags) and plan.precision == "fp16"
    with pytest.raises(UsageError, match=rf"has {target.dla_cores} DLA cores \(0 to {target.dla_cores - 1}\)"):
        plan_build(target, body(), dla_core=target.dla_cores)


@pytest.mark.parametrize("name", DLA_TARGETS)
def test_dla_refuses_fp32(name: str) -> None:
    with pytest.raises(UsageError, match=r"DLA runs only FP16 and INT8.*--precision fp16"):
        plan_build(load_target(name), body(), precision="fp32", dla_core=0)


@pytest.mark.parametrize("name", DLA_TARGETS)
@pytest.mark.parametrize("requested", ["best", "int8"])
@pytest.mark.parametrize("onnx_batch", [1, "batch"])
def test_dla_refuses_a_qdq_onnx_and_names_the_fp32_one(name: str, requested: str, onnx_batch: int | str) -> None:
    """The DLA runs only implicit quantization (NVIDIA/TensorRT#2222, NVIDIA/Model-Optimizer#1661): a Q/DQ
    ONNX is never planned for it, weakly typed or strongly typed (DLA_QDQ_DECISION)."""
    qdq = {**body(batch=onnx_batch, qdq=True), "fp32": "f0" * 32}
    batch = (1, 1, 1) if onnx_batch == "batch" else None
    with pytest.raises(UsageError, match=r"explicitly quantized.*implicitly quantized INT8.*NVIDIA/TensorRT#2222"
                                         r".*FP32 ONNX it was quantized from \(f0f0f0f0f0f0\).*--precision fp16 --dla 0"
                                         r".*for the GPU \(drop --dla\)"):
        plan_build(load_target(name), qdq, precision=requested, dla_core=0, batch=batch)
    gpu = plan_build(load_target(name), qdq, precision=requested, batch=batch)  # the same ONNX builds on the GPU
    assert gpu.precision == "int8" and gpu.dla_core is None


def test_the_dla_qdq_decision_names_its_sources() -> None:
    for source in ("NVIDIA/TensorRT#2222", "Model-Optimizer PR #1661", "Model-Optimizer#135", "qdq-translator",
                   "--fp16 --allowGPUFallback"):
        assert source in plan_module.DLA_QDQ_DECISION


# DLA and shapes: NVIDIA's "DLA Supported Layers and Restrictions" says the DLA has no dynamic dimensions
# (min = opt = max, and the run-time shape must be the built one).


@pytest.mark.parametrize("name", DLA_TARGETS)
def test_dla_refuses_a_dynamic_batch_without_a_static_one(name: str) -> None:
    with pytest.raises(UsageError, match=r"DLA does not support dynamic dimensions.*--batch N,N,N.*--batch 1,1,1"
                                         r".*toolchain export --batch N"):
        plan_build(load_target(name), body(batch="batch"), dla_core=0)
    # the same ONNX on the GPU keeps the default range
    assert plan_build(load_target(name), body(batch="batch")).batch == (1, 1, DEFAULT_MAX_BATCH)


@pytest.mark.parametrize(("batch", "hint"), [
    ((1, 1, 8), r"--batch 8,8,8 or --batch 1,1,1"),
    ((1, 4, 4), r"--batch 4,4,4 or --batch 1,1,1 \(`--batch N` alone means 1,N,N\)"),
    ((2, 4, 8), r"--batch 8,8,8 or --batch 2,2,2"),
    ((4, 4, 8), r"--batch 8,8,8 or --batch 4,4,4"),
])
def test_dla_refuses_a_batch_range(batch: tuple[int, int, int], hint: str) -> None:
    with pytest.raises(UsageError, match=rf"is a range, and the DLA does not support dynamic dimensions.*{hint}"):
        plan_build(load_target("jetson-agx-orin"), body(batch="batch"), dla_core=0, batch=batch)


@pytest.mark.parametrize("name", DLA_TARGETS)
@pytest.mark.parametrize("n", [1, 4])
def test_dla_with_a_static_batch_plans_a_static_profile(name: str, n: int) -> None:
    plan = plan_build(load_target(name), body(batch="batch"), dla_core=0, batch=(n, n, n))
    assert plan.batch == (n, n, n) and plan.min_shape == plan.opt_shape == plan.max_shape == (n, 3, 32, 32)
    profile = plan.request()["profile"]
    assert profile["min"] == profile["opt"] == profile["max"] == [n, 3, 32, 32]
    assert tensorrt_builder.validate_request(plan.request())["profile"] == profile
    assert any("static DLA profile" in note and "pads" in note for note in plan.notes)


@pytest.mark.parametrize("name", DLA_TARGETS)
def test_dla_with_a_fixed_batch_onnx_is_static_already(name: str) -> None:
    plan = plan_build(load_target(name), body(batch=2), dla_core=0)
    assert plan.batch is None and plan.min_shape == plan.opt_shape == plan.max_shape == (2, 3, 32, 32)
    assert plan.request()["profile"] is None
    with pytest.raises(UsageError, match="DLA runs batches of at most 4096"):
        plan_build(load_target(name), body(batch=5000), dla_core=0)


def test_builder_refuses_a_dla_request_with_a_dynamic_profile() -> None:
    request = plan_build(load_target("jetson-agx-orin"), body(batch="batch"), dla_core=0, batch=(1, 1, 1)).request()
    request["profile"]["max"] = [8, 3, 32, 32]  # a request made by hand, or by an older planner
    with pytest.raises(tensorrt_builder.BuilderError, match="DLA build needs a static profile") as caught:
        tensorrt_builder.validate_request(request)
    assert caught.value.code == 2


DLA_OPTIONS = [
    {"precision": p, "batch": b}
    for p in ("best", "fp16", "int8", "fp32")
    for b in (None, (1, 1, 1), (1, 1, 8), (1, 4, 4), (4, 4, 4), (2, 4, 8))
]


@pytest.mark.parametrize("name", DLA_TARGETS + ["jetson-orin-nano"])
@pytest.mark.parametrize("onnx_batch", [1, 4, "batch"])
@pytest.mark.parametrize("qdq", [False, True])
def test_no_dla_plan_has_a_dynamic_profile_or_qdq(name: str, onnx_batch: int | str, qdq: bool) -> None:
    """Every option combination for a DLA core either is refused (UsageError) or plans a static profile, fp16,
    no Q/DQ, and a request the builder accepts."""
    planned = 0
    for options in DLA_OPTIONS:
        try:
            plan = plan_build(load_target(name), body(batch=onnx_batch, qdq=qdq), dla_core=0, **options)
        except UsageError:
            continue
        planned += 1
        assert plan.min_shape == plan.opt_shape == plan.max_shape
        assert not plan.qdq and not plan.int8 and not plan.strongly_typed and plan.precision == "fp16"
        request = tensorrt_builder.validate_request(plan.request())
        assert request["profile"] is None or request["profile"]["min"] == request["profile"]["max"]
    assert planned == 0 if qdq else planned > 0


def test_allow_gpu_fallback_only_is_for_dla_builds() -> None:
    orin = load_target("jetson-agx-orin")
    with pytest.raises(UsageError, match="--allow-gpu-fallback-only is for DLA builds"):
        plan_build(orin, body(), allow_gpu_fallback_only=True)
    with pytest.raises(UsageError, match="--allow-gpu-fallback-only is for DLA builds"):
        plan_build(load_target("x86-64-cpu"), body(), allow_gpu_fallback_only=True)
    plan = plan_build(orin, body(), dla_core=0, allow_gpu_fallback_only=True)
    assert plan.allow_gpu_fallback_only
    request = tensorrt_builder.validate_request(plan.request())
    assert request["allow_gpu_fallback_only"] is True
    strict = plan_build(orin, body(), dla_core=0)
    assert tensorrt_builder.validate_request(strict.request())["allow_gpu_fallback_only"] is False
    assert strict.key != plan.key  # a kept GPU-only "DLA" engine is never a cache hit for a strict build


def test_nano_has_no_dla() -> None:
    with pytest.raises(UsageError, match=r"SM 5.3\) has no DLA.*drop --dla"):
        plan_build(load_target("jetson-nano"), body(), dla_core=0)


@pytest.mark.parametrize("name", CPU)
def test_cpu_targets_have_no_dla(name: str) -> None:
    with pytest.raises(UsageError, match="--dla needs a Jetson target"):
        plan_build(load_target(name), body(), dla_core=0)


@pytest.mark.parametrize("name", ["jetson-orin-nano", "jetson-thor"])
def test_unverified_dla_count_is_planned_with_a_note(name: str) -> None:
    target = load_target(name)
    assert "dla_cores" in target.unverified
    plan = plan_build(target, body(), dla_core=1)
    assert plan.dla_core == 1 and plan.gpu_fallback
    assert any("num_DLA_cores" in note for note in plan.notes)
    with pytest.raises(UsageError, match="at most 2"):
        plan_build(target, body(), dla_core=8)


def test_verified_target_without_dla_cores() -> None:
    data = {**load_target("jetson-orin-nx").to_dict(), "name": "orin-nx-8gb-no-dla", "dla_cores": 0}
    target = parse_target(data)
    with pytest.raises(UsageError, match="has no DLA cores"):
        plan_build(target, body(), dla_core=0)


@pytest.mark.parametrize("core", [-1, True, "0"])
def test_dla_core_must_be_a_number(core: Any) -> None:
    with pytest.raises(UsageError, match="not a DLA core number"):
        plan_build(load_target("jetson-agx-orin"), body(), dla_core=core)


# --------------------------------------------------------------------------- workspace


@pytest.mark.parametrize("name", TENSORRT)
def test_workspace_default_and_cap(name: str) -> None:
    target = load_target(name)
    cap = int(target.memory_gb * 1024)
    assert plan_build(target, body()).workspace_mib == min(DEFAULT_WORKSPACE_MIB, cap)
    assert plan_build(target, body(), workspace_mib=cap).workspace_mib == cap
    with pytest.raises(UsageError, match=rf"more than target {name} has .*use at most {cap}"):
        plan_build(target, body(), workspace_mib=cap + 1)


def test_workspace_default_is_capped_on_a_small_module() -> None:
    data = {**load_target("jetson-nano").to_dict(), "name": "nano-512", "memory_gb": 0.5}
    assert plan_build(parse_target(data), body()).workspace_mib == 512


@pytest.mark.parametrize("value", [0, -5, True, 1.5])
def test_workspace_must_be_a_positive_integer(value: Any) -> None:
    with pytest.raises(UsageError, match="not a size in MiB"):
        plan_build(load_target("jetson-agx-orin"), body(), workspace_mib=value)


@pytest.mark.parametrize("name", CPU)
def test_workspace_is_a_tensorrt_option(name: str) -> None:
    with pytest.raises(UsageError, match="drop --workspace"):
        plan_build(load_target(name), body(), workspace_mib=512)


# --------------------------------------------------------------------------- batch / profiles


@pytest.mark.parametrize("name", TENSORRT)
def test_dynamic_batch_default_profile(name: str) -> None:
    plan = plan_build(load_target(name), body(batch="batch"))
    assert plan.dynamic_batch and plan.batch == (1, 1, DEFAULT_MAX_BATCH)
    assert plan.min_shape == (1, 3, 32, 32) and plan.opt_shape == (1, 3, 32, 32)
    assert plan.max_shape == (DEFAULT_MAX_BATCH, 3, 32, 32)
    assert plan.input_shape == ("batch", 3, 32, 32)
    assert plan.request()["profile"] == {"input": "images", "min": [1, 3, 32, 32], "opt": [1, 3, 32, 32],
                                         "max": [DEFAULT_MAX_BATCH, 3, 32, 32]}


def test_explicit_batch_range() -> None:
    plan = plan_build(load_target("jetson-agx-orin"), body(batch="batch"), batch=(2, 4, 16))
    assert plan.batch == (2, 4, 16)
    assert (plan.min_shape[0], plan.opt_shape[0], plan.max_shape[0]) == (2, 4, 16)


@pytest.mark.parametrize("batch", [(4, 2, 8), (0, 1, 8), (1, 1, 10_000), (1, 2), ("1", 1, 8)])
def test_bad_batch_ranges(batch: Any) -> None:
    with pytest.raises(UsageError, match="--batch"):
        plan_build(load_target("jetson-agx-orin"), body(batch="batch"), batch=batch)


def test_fixed_batch_refuses_a_profile_and_plans_its_own_shape() -> None:
    with pytest.raises(UsageError, match=r"fixed batch of 4.*--batch dynamic"):
        plan_build(load_target("jetson-agx-orin"), body(batch=4), batch=(1, 1, 8))
    plan = plan_build(load_target("jetson-agx-orin"), body(batch=4))
    assert plan.batch is None and not plan.dynamic_batch
    assert plan.min_shape == plan.opt_shape == plan.max_shape == (4, 3, 32, 32)
    assert plan.request()["profile"] is None


@pytest.mark.parametrize("name", CPU)
def test_cpu_targets_take_no_batch_profile(name: str) -> None:
    with pytest.raises(UsageError, match="drop --batch"):
        plan_build(load_target(name), body(batch="batch"), batch=(1, 1, 8))
    plan = plan_build(load_target(name), body(batch="batch"))
    assert plan.batch is None and plan.dynamic_batch


# --------------------------------------------------------------------------- keys


BASE_TARGET = "jetson-agx-xavier"


def _key(target: str | Target = BASE_TARGET, onnx: dict[str, Any] | None = None, **options: Any) -> str:
    target = target if isinstance(target, Target) else load_target(target)
    return plan_build(target, onnx if onnx is not None else body(batch="batch"), **options).key


def _variant(**fields: Any) -> Target:
    return dataclasses.replace(load_target(BASE_TARGET), **fields)


def test_key_is_stable_for_the_same_inputs() -> None:
    assert _key() == _key() == _key(precision="best") == _key(precision="fp16")
    assert len(_key()) == 64


def test_key_changes_with_every_input() -> None:
    keys = {
        "base": _key(),
        "onnx": _key(onnx=body(batch="batch", sha="cd" * 32)),
        "target": _key("jetson-xavier-nx"),
        "precision": _key(precision="fp32"),
        "dla": _key(dla_core=0, batch=(1, 1, 1)),
        "dla core": _key(dla_core=1, batch=(1, 1, 1)),
        "dla gpu fallback only": _key(dla_core=1, batch=(1, 1, 1), allow_gpu_fallback_only=True),
        "dla static batch": _key(dla_core=1, batch=(2, 2, 2)),
        "workspace": _key(workspace_mib=2048),
        "batch": _key(batch=(1, 2, 8)),
        "input shape": _key(onnx=body(batch="batch", shape=["batch", 3, 64, 64])),
        "input name": _key(onnx={**body(batch="batch"), "input_name": "x"}),
        "tensorrt": _key(_variant(tensorrt="8.5.3")),
        "l4t": _key(_variant(l4t="35.4")),
        "jetpack": _key(_variant(jetpack="5.1.2")),
        "sm": _key(_variant(gpu_compute_capability="8.7")),
        "qdq": _key(onnx=body(batch="batch", qdq=True)),
    }
    assert len(set(keys.values())) == len(keys), keys


def test_key_ignores_what_does_not_change_the_engine() -> None:
    assert _key(_variant(description="another text", notes=("x",), build_image="example/other:1")) == _key()


def test_key_changes_with_the_builder_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = _key()
    changed = tmp_path / "tensorrt_builder.py"
    changed.write_bytes(plan_module.BUILDER_SCRIPT.read_bytes() + b"\n# changed\n")
    monkeypatch.setattr(plan_module, "BUILDER_SCRIPT", changed)
    assert _key() != before


def test_cpu_key_includes_the_onnxruntime_version(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime

    plan = plan_build(load_target("x86-64-cpu"), body())
    assert plan.runtime == f"onnxruntime {onnxruntime.__version__}"
    assert plan.key_fields()["runtime"] == plan.runtime
    monkeypatch.setattr(plan_module, "_onnxruntime_version", lambda: "0.0.1")
    assert plan_build(load_target("x86-64-cpu"), body()).key != plan.key


def test_cpu_keys_differ_by_target_and_precision() -> None:
    keys = {_key("x86-64-cpu", body()), _key("aarch64-cpu", body()), _key("x86-64-cpu", body(qdq=True))}
    assert len(keys) == 3


# --------------------------------------------------------------------------- request / json


@pytest.mark.parametrize("name", TENSORRT)
@pytest.mark.parametrize("case", ["fp32", "fp16", "int8", "dla", "fixed"])
def test_every_planned_request_passes_the_builders_validation(name: str, case: str) -> None:
    target = load_target(name)
    options: dict[str, Any] = {"precision": case if case in ("fp32", "fp16") else "best"}
    onnx = body(batch=4 if case == "fixed" else "batch", qdq=case == "int8")
    if case == "dla":
        if target.compute_capability < (7, 2):
            pytest.skip("no DLA on this target")
        options["dla_core"] = 0
        options["batch"] = (1, 1, 1)  # a dynamic-batch ONNX: the DLA needs a static profile
    if case == "int8" and not target.supports("int8"):
        pytest.skip("no int8 on this target")
    plan = plan_build(target, onnx, **options)
    request = plan.request(onnx="model.onnx", timing_cache="timing.cache")
    checked = tensorrt_builder.validate_request(request)
    assert checked["expect"] == {"tensorrt": target.tensorrt, "compute_capability": target.gpu_compute_capability}
    assert checked["key"] == plan.key and checked["onnx_sha256"] == SHA
    assert (checked["fp16"], checked["int8"], checked["strongly_typed"]) == (plan.fp16, plan.int8, plan.strongly_typed)
    assert checked["timing_cache"] == "timing.cache" and checked["workspace_mib"] == plan.workspace_mib


def test_cpu_plans_have_no_tensorrt_request() -> None:
    with pytest.raises(UsageError, match="ONNX Runtime target"):
        plan_build(load_target("x86-64-cpu"), body()).request()


def test_plan_is_frozen_and_serialises() -> None:
    plan = plan_build(load_target("jetson-agx-orin"), body(batch="batch"), dla_core=1, batch=(2, 2, 2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.precision = "fp32"  # type: ignore[misc]
    data = plan.to_json()
    assert data["device"] == "dla:1" and data["batch"] == [2, 2, 2] and data["key"] == plan.key
    assert data["allow_gpu_fallback_only"] is False
    assert isinstance(BuildPlan(**{**{f: getattr(plan, f) for f in plan.__dataclass_fields__}}), BuildPlan)

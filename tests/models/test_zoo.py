"""Model zoo: every architecture builds, forwards, loads local weights and exports to ONNX."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from toolchain.errors import BadInputError, InputNotFoundError, MissingEnvironmentError, UsageError
from toolchain.models.recipe import MODELS_ENV, Recipe, load_recipe
from toolchain.models.zoo import (
    HEAD_PREFIXES,
    build_model,
    count_macs,
    count_parameters,
    describe,
    load_weights,
    weights_report,
)

torch = pytest.importorskip("torch")

ARCHS = ("edgenet", "mobilenet_v3_small", "resnet18")
# ONNX operators TensorRT 8.2's parser handles; what the exported graphs may contain.
TRT_OPS = {"Conv", "Relu", "BatchNormalization", "GlobalAveragePool", "Flatten", "Gemm", "Reshape", "Add",
           "HardSwish", "HardSigmoid", "Mul", "MaxPool", "Identity"}
EDGENET_OPS = {"Conv", "Relu", "BatchNormalization", "GlobalAveragePool", "Flatten", "Gemm", "Identity"}  # Identity: eval dropout


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MODELS_ENV, raising=False)
    torch.manual_seed(0)


def recipe(arch: str, **overrides: object) -> Recipe:
    return load_recipe(arch).with_overrides(overrides)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("num_classes", [2, 5])
def test_builds_and_forwards_with_right_shape(arch: str, num_classes: int) -> None:
    r = recipe(arch)
    model = build_model(r, num_classes)
    assert model.training
    x = torch.randn(2, 3, r.input_size, r.input_size)
    assert model(x).shape == (2, num_classes)  # training mode (BN batch statistics, dropout)
    model.eval()
    with torch.no_grad():
        out = model(x)
        assert out.shape == (2, num_classes) and out.dtype == torch.float32
        assert torch.isfinite(out).all()
        # channels_last gives the same answer
        model_cl = model.to(memory_format=torch.channels_last)
        out_cl = model_cl(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(out, out_cl, atol=1e-4, rtol=1e-4)


def test_edgenet_is_small_and_width_scales_it() -> None:
    params = {w: count_parameters(build_model(recipe("edgenet", width=w), 2)) for w in (0.5, 1.0, 1.5)}
    assert 100_000 < params[1.0] < 1_000_000
    assert params[0.5] < params[1.0] < params[1.5]
    model = build_model(recipe("edgenet"), 2)
    assert count_parameters(model, trainable_only=True) == params[1.0]
    assert count_macs(model, 96) < 50_000_000
    # only TensorRT-friendly activations: plain ReLU, no SiLU/hardswish
    kinds = {type(m).__name__ for m in model.modules()}
    assert "ReLU" in kinds and not kinds & {"SiLU", "Hardswish", "GELU", "ReLU6"}


def test_edgenet_accepts_other_input_sizes() -> None:
    model = build_model(recipe("edgenet"), 2).eval()
    for size in (64, 128, 100):
        assert model(torch.randn(1, 3, size, size)).shape == (1, 2)


def test_dropout_follows_recipe() -> None:
    for arch in ARCHS:
        model = build_model(recipe(arch, dropout=0.3), 2)
        rates = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
        assert rates and all(p == 0.3 for p in rates), arch


def test_bad_num_classes_is_usage_error() -> None:
    with pytest.raises(UsageError):
        build_model(recipe("edgenet"), 0)


@pytest.mark.parametrize("arch", ARCHS)
def test_weights_with_other_head_load_body_and_skip_head(arch: str, tmp_path: Path) -> None:
    r = recipe(arch)
    source = build_model(r, 1000)  # e.g. an ImageNet checkpoint
    path = tmp_path / "imagenet.pt"
    torch.save(source.state_dict(), path)
    model = build_model(r, 2, weights=path)
    report = weights_report(model)
    assert report is not None
    head = HEAD_PREFIXES[arch]
    assert report.skipped and all(k.startswith(head) for k in report.skipped)
    assert not report.missing and not report.unexpected
    body = [k for k in source.state_dict() if not k.startswith(head)]
    target = model.state_dict()
    assert all(torch.equal(target[k], source.state_dict()[k]) for k in body)
    assert report.to_dict()["loaded"] == len(report.loaded) >= len(body)
    assert weights_report(build_model(r, 2)) is None


def test_same_shape_weights_load_everything_from_wrapped_checkpoints(tmp_path: Path) -> None:
    r = recipe("edgenet")
    source = build_model(r, 2)
    state = source.state_dict()
    torch.save({"model": state, "epoch": 3, "optimizer": "adamw"}, tmp_path / "ckpt.pt")
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "dp.pt")
    for name in ("ckpt.pt", "dp.pt"):
        model = build_model(r, 2, weights=tmp_path / name)
        report = weights_report(model)
        assert report is not None and len(report.loaded) == len(state) and not report.skipped
        assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_load_weights_into_existing_model_without_architecture(tmp_path: Path) -> None:
    source = build_model(recipe("edgenet"), 10)
    torch.save(source.state_dict(), tmp_path / "w.pt")
    report = load_weights(build_model(recipe("edgenet"), 2), tmp_path / "w.pt")
    assert set(report.skipped) == {"head.weight", "head.bias"}


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    torch.save(build_model(recipe("resnet18"), 2).state_dict(), tmp_path / "resnet.pt")
    with pytest.raises(BadInputError, match="none of its"):
        build_model(recipe("edgenet"), 2, weights=tmp_path / "resnet.pt")


def test_weights_of_another_width_are_refused(tmp_path: Path) -> None:
    torch.save(build_model(recipe("edgenet", width=0.5), 2).state_dict(), tmp_path / "narrow.pt")
    with pytest.raises(BadInputError, match="same architecture and width"):
        build_model(recipe("edgenet"), 2, weights=tmp_path / "narrow.pt")


def test_garbage_weights_are_bad_input(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a torch file\x00\x01\x02" * 10)
    with pytest.raises(BadInputError, match="cannot read weights"):
        build_model(recipe("edgenet"), 2, weights=garbage)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(BadInputError, match="not a state dict"):
        build_model(recipe("edgenet"), 2, weights=tmp_path / "list.pt")
    torch.save({}, tmp_path / "empty.pt")
    with pytest.raises(BadInputError):
        build_model(recipe("edgenet"), 2, weights=tmp_path / "empty.pt")
    with pytest.raises(InputNotFoundError):
        build_model(recipe("edgenet"), 2, weights=tmp_path / "missing.pt")


def test_weights_are_loaded_safely(tmp_path: Path) -> None:
    """weights_only=True: a pickle that would run code is refused, not executed."""

    class Evil:
        def __reduce__(self):  # noqa: ANN204
            return (print, ("pwned",))

    torch.save({"head.weight": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(BadInputError):
        build_model(recipe("edgenet"), 2, weights=tmp_path / "evil.pt")


@pytest.mark.parametrize("arch", ARCHS)
def test_describe_reports_size(arch: str) -> None:
    info = describe(load_recipe(arch))
    assert info["name"] == arch and info["architecture"] == arch
    assert info["params"] > 0 and info["macs"] > 0 and info["num_classes"] == 2
    assert info["input_shape"] == [1, 3, info["input_size"], info["input_size"]]
    assert info["recipe"]["training"]["lr"] > 0
    assert info["search_points"] >= 1


def test_missing_torch_is_missing_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(MissingEnvironmentError, match=r"toolchain\[train\]"):
        build_model(load_recipe("edgenet"), 2)
    info = describe(load_recipe("edgenet"))
    assert info["params"] is None and "toolchain[train]" in info["note"]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("opset", [11, 13, 17])
def test_exports_to_onnx(arch: str, opset: int) -> None:
    onnx = pytest.importorskip("onnx")
    r = recipe(arch)
    model = build_model(r, 2).eval()
    x = torch.randn(2, 3, r.input_size, r.input_size)
    buffer = io.BytesIO()
    torch.onnx.export(
        model, (x,), buffer, dynamo=False, opset_version=opset, input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    ops = {node.op_type for node in proto.graph.node}
    assert ops <= TRT_OPS, ops - TRT_OPS
    if arch == "edgenet":
        assert ops <= EDGENET_OPS, ops - EDGENET_OPS
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(x).numpy()
    (got,) = session.run(None, {"input": x.numpy()})
    assert got.shape == (2, 2)
    assert abs(got - expected).max() < 1e-3

"""Triton hand-off: config.pbtxt parsed with Triton's own schema (tritonclient's model_config_pb2 and
google.protobuf.text_format), checked against the model's tensors, and the ONNX repository's model run through
ONNX Runtime at the shapes the config declares."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.handoff.models import CLASSES, register_classifier, register_tensorrt_build
from toolchain.artifacts import Artifact
from toolchain.build.service import BuildConfig, build
from toolchain.errors import BadInputError, UsageError
from toolchain.handoff import HandoffConfig, handoff
from toolchain.handoff.model import model_info
from toolchain.handoff.numerics import model_input, run_onnx, sample_frames
from toolchain.handoff.triton_schema import check_repository
from toolchain.workspace import Workspace


def _schema() -> Any:
    """tritonclient's generated model_config_pb2, loaded from the installed package's file (its grpc package
    __init__ wants grpcio, which the plain tritonclient install does not bring)."""
    spec = importlib.util.find_spec("tritonclient")
    assert spec is not None and spec.submodule_search_locations, "tritonclient is part of the [handoff] extra"
    path = Path(next(iter(spec.submodule_search_locations))) / "grpc" / "model_config_pb2.py"
    module_spec = importlib.util.spec_from_file_location("test_triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
    module_spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _parse(path: Path) -> Any:
    from google.protobuf import text_format

    pb2 = _schema()
    return pb2, text_format.Parse(path.read_text(), pb2.ModelConfig())


def test_a_cpu_build_becomes_an_onnx_repository_that_runs_at_its_declared_shapes(workspace: Workspace, onnx: Artifact,
                                                                                  tmp_path: Path) -> None:
    built = build(workspace, BuildConfig(onnx=onnx.id, target="x86-64-cpu"))
    result = handoff(workspace, HandoffConfig(ref=built.build[:12], format="triton", out=tmp_path / "repo"))
    model_dir = tmp_path / "repo" / "tiny-edgenet-onnx-x86-64-cpu"
    assert sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*")) == [
        "1", "1/model.onnx", "config.pbtxt", "handoff.json", "labels.txt"]
    assert (model_dir / "1" / "model.onnx").read_bytes() == built.path.read_bytes()  # the verified build, as built
    pb2, config = _parse(model_dir / "config.pbtxt")
    assert config.name == model_dir.name and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 8 and config.HasField("dynamic_batching")
    assert [g.kind for g in config.instance_group] == [pb2.ModelInstanceGroup.KIND_CPU] and not config.cc_model_filenames
    # Against the model's own I/O, read here with ONNX Runtime.
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    (graph_in,), (graph_out,) = session.get_inputs(), session.get_outputs()
    (declared_in,), (declared_out,) = config.input, config.output
    assert declared_in.name == graph_in.name and list(declared_in.dims) == graph_in.shape[1:] == [3, 16, 16]
    assert declared_in.data_type == pb2.TYPE_FP32 and declared_out.data_type == pb2.TYPE_FP32
    assert declared_out.name == graph_out.name and list(declared_out.dims) == [2]
    assert (model_dir / declared_out.label_filename).read_text().splitlines() == list(CLASSES)
    # The repository's model, fed at [1, *dims] and [max_batch_size, *dims] as Triton would, gives the source's numbers.
    info = model_info(onnx.path)
    feed = model_input(info, sample_frames(16, count=config.max_batch_size))
    for batch in (1, config.max_batch_size):
        x = feed[:batch].astype(np.float32)
        assert list(x.shape) == [batch, *declared_in.dims]
        out = session.run(None, {declared_in.name: x})[0]
        assert list(out.shape) == [batch, *declared_out.dims]
        np.testing.assert_allclose(out, run_onnx(onnx.path, x), atol=1e-5)
    assert result.preprocessing.exact and result.preprocessing.max_error == 0.0
    assert result.checks["run"]["max_abs_vs_source"] < 1e-5 and [r["batch"] for r in result.checks["run"]["runs"]] == [1, 8]


def test_a_tensorrt_build_becomes_a_plan_bound_to_its_compute_capability(workspace: Workspace, onnx: Artifact,
                                                                         tmp_path: Path) -> None:
    plan = register_tensorrt_build(workspace, onnx, tmp_path, max_batch=4)
    result = handoff(workspace, HandoffConfig(ref=plan.id[:10], format="triton", out=tmp_path / "repo", name="cars"))
    model_dir = tmp_path / "repo" / "cars"
    pb2, config = _parse(model_dir / "config.pbtxt")
    assert config.platform == "tensorrt_plan" and (model_dir / "1" / "model.plan").is_file()
    assert dict(config.cc_model_filenames) == {"8.7": "model.plan"}
    assert config.max_batch_size == 4  # the engine's profile max
    assert [g.kind for g in config.instance_group] == [pb2.ModelInstanceGroup.KIND_GPU]
    assert result.checks["run"] is None and any("not run here" in n for n in result.notes)
    with pytest.raises(UsageError, match="profile"):
        handoff(workspace, HandoffConfig(ref=plan.id, format="triton", out=tmp_path / "repo", name="cars", max_batch=8))


def test_fixed_batch_models_declare_no_batching(workspace: Workspace, tmp_path: Path) -> None:
    fixed = register_classifier(workspace, tmp_path, name="tiny-fixed", layout="uint8-nhwc", batch=2)
    result = handoff(workspace, HandoffConfig(ref=fixed.ref, format="triton", out=tmp_path / "repo",
                                              target="jetson-orin-nano"))
    pb2, config = _parse(tmp_path / "repo" / "tiny-fixed" / "config.pbtxt")
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [2, 16, 16, 3] and config.input[0].data_type == pb2.TYPE_UINT8
    assert list(config.output[0].dims) == [2, 2]
    assert [g.kind for g in config.instance_group] == [pb2.ModelInstanceGroup.KIND_GPU]  # a GPU target, run by ORT
    assert result.source.precision == "fp32" and result.checks["run"]["runs"][0]["shape"] == [2, 2]
    with pytest.raises(UsageError, match="fixed batch"):
        handoff(workspace, HandoffConfig(ref=fixed.ref, format="triton", out=tmp_path / "r2", target="x86-64-cpu",
                                         max_batch=4))
    with pytest.raises(UsageError, match="fp16"):
        handoff(workspace, HandoffConfig(ref=fixed.ref, format="triton", out=tmp_path / "r3", target="jetson-orin-nano",
                                         precision="fp16"))


def test_the_repository_check_refuses_a_config_that_disagrees_with_the_model(workspace: Workspace, onnx: Artifact,
                                                                             tmp_path: Path) -> None:
    handoff(workspace, HandoffConfig(ref=onnx.ref, format="triton", out=tmp_path / "repo", target="x86-64-cpu"))
    model_dir = tmp_path / "repo" / "tiny-edgenet-onnx"
    config = model_dir / "config.pbtxt"
    good = config.read_text()
    info = model_info(onnx.path)

    def check() -> None:
        check_repository(model_dir, info, name="tiny-edgenet-onnx", kind="cpu", max_profile_batch=None)

    check()
    for original, broken, message in (
        ("dims: [ 3, 16, 16 ]", "dims: [ 16, 16, 3 ]", "dims"),
        ("data_type: TYPE_FP32\n    dims: [ 3", "data_type: TYPE_UINT8\n    dims: [ 3", "TYPE_UINT8"),
        ("kind: KIND_CPU", "kind: KIND_GPU", "instance_group"),
        ("max_batch_size: 8", "max_batch_size: 0", "dynamic-batch"),
        ('label_filename: "labels.txt"', 'label_filename: "nothing.txt"', "nothing.txt"),
        ("max_batch_size: 8", "max_batch_size: 8\nmax_batch: 4", "does not parse"),  # a field Triton does not know
        ("kind: KIND_CPU", "kind: KIND_TPU", "does not parse"),
    ):
        assert original in good
        config.write_text(good.replace(original, broken))
        with pytest.raises(BadInputError, match=message):
            check()
    config.write_text(good)
    check()


def test_names_and_references(workspace: Workspace, onnx: Artifact, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="Triton model name"):
        handoff(workspace, HandoffConfig(ref=onnx.ref, format="triton", out=tmp_path / "repo", target="x86-64-cpu",
                                         name="bad name"))
    from toolchain.errors import InputNotFoundError

    with pytest.raises(InputNotFoundError):
        handoff(workspace, HandoffConfig(ref="nothing@v3", format="triton", out=tmp_path / "repo", target="x86-64-cpu"))
    by_path = handoff(workspace, HandoffConfig(ref=str(onnx.path), format="triton", out=tmp_path / "repo",
                                               target="x86-64-cpu"))
    assert by_path.source.record.id == onnx.id
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        handoff(workspace, HandoffConfig(ref=onnx.ref, format="triton", out=tmp_path / "a-file", target="x86-64-cpu"))
    # Another model beside it in the same repository.
    other = register_classifier(workspace, tmp_path, name="tiny-other", seed=3)
    handoff(workspace, HandoffConfig(ref=other.ref, format="triton", out=tmp_path / "repo", target="x86-64-cpu"))
    assert {p.name for p in (tmp_path / "repo").iterdir()} == {"tiny-edgenet-onnx", "tiny-other"}

"""Static INT8 quantization of a tiny exported model: Q/DQ form, symmetric, calibration split, gate, lineage."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.data.lakes import write_sequence_lake
from toolchain.artifacts import register_file, resolve_artifact
from toolchain.data.ingest import IngestConfig, ingest
from toolchain.data.versions import load_dataset
from toolchain.errors import QualityGateError, UsageError
from toolchain.workspace import Workspace

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

from onnx import numpy_helper  # noqa: E402

from toolchain.quantize import (  # noqa: E402
    ARTIFACT_TYPE,
    CalibrationReader,
    QuantizeConfig,
    check_symmetric,
    quantize_model,
    quantize_onnx,
)
from toolchain.quantize import static as static_module  # noqa: E402
from toolchain.quantize.accuracy import input_spec  # noqa: E402

# Generous: 14 test images make one flipped prediction 7 points; the gate itself is tested with max_drop=-1.
LENIENT = 100.0


def _export(module: Any, path: Path, *, recipe: Any, layout: str, dynamic: bool, opset: int = 17) -> None:
    """What the exporter writes: input ``images`` (normalised NCHW or raw uint8 NHWC), softmax ``probabilities``."""
    nn = torch.nn
    size = recipe.input_size

    class Probabilities(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = module
            self.register_buffer("mean", torch.tensor(recipe.mean).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(recipe.std).view(1, 3, 1, 1))

        def forward(self, x: Any) -> Any:
            if layout == "uint8-nhwc":
                x = (x.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std
            return torch.softmax(self.net(x), dim=1)

    dummy = torch.zeros(1, size, size, 3, dtype=torch.uint8) if layout == "uint8-nhwc" else torch.zeros(1, 3, size, size)
    axes = {"images": {0: "batch"}, "probabilities": {0: "batch"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is deprecated, still fine here
        torch.onnx.export(
            Probabilities().eval(), (dummy,), str(path), input_names=["images"], output_names=["probabilities"],
            opset_version=opset, dynamic_axes=axes, dynamo=False,
        )


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A workspace with a tiny dataset, a 1-epoch model and two registered FP32 ONNX artifacts (made once)."""
    from toolchain.models.registered import load_registered_model
    from toolchain.train.search import TrainConfig, train

    root = tmp_path_factory.mktemp("quantize")
    write_sequence_lake(root / "lake", sequences=80, frames=2)
    torch.set_num_threads(1)
    with Workspace(root / "ws") as ws:
        ingest(ws, IngestConfig(source=str(root / "lake"), name="tiny", image_size=32, workers=1))
        trained = train(ws, TrainConfig(
            data="tiny", epochs=1, overrides=(("input_size", 32), ("batch_size", 16), ("width", 0.5)), device="cpu",
        ))
        model_id = trained.final.model_id
        loaded = load_registered_model(ws, model_id)
        refs = {}
        for name, layout, dynamic in (("tiny-onnx", "float-nchw", True), ("tiny-u8", "uint8-nhwc", False)):
            path = root / f"{name}.onnx"
            _export(loaded.module, path, recipe=loaded.recipe, layout=layout, dynamic=dynamic)
            artifact = register_file(ws, path, name=name, type="onnx", body={
                "model": model_id, "input": layout, "batch": "dynamic" if dynamic else "1", "opset": 17,
            })
            refs[name] = artifact.id
    return {"root": root / "ws", "model": model_id, **refs}


@pytest.fixture()
def ws(template: dict[str, Any], tmp_path: Path) -> Workspace:
    shutil.copytree(template["root"], tmp_path / "ws")
    with Workspace(tmp_path / "ws") as workspace:
        yield workspace


def _int8_artifacts(workspace: Workspace) -> list[Any]:
    return [r for r in workspace.registry.find(kind="artifact") if r.body.get("type") == ARTIFACT_TYPE]


def _initializers(model: Any) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def test_quantize_writes_symmetric_per_channel_qdq_and_registers_it(ws: Workspace, template: dict[str, Any]) -> None:
    result = quantize_model(ws, QuantizeConfig(onnx="tiny-onnx", samples=64, max_drop=LENIENT))

    assert result.passed and not result.cached
    assert result.ref == "tiny-onnx-int8@v1" and result.samples == 64 and result.method == "minmax"
    assert 0.0 <= result.accuracy_int8 <= 1.0 and 0.0 <= result.accuracy_fp32 <= 1.0
    assert result.accuracy_drop == pytest.approx(100 * (result.accuracy_fp32 - result.accuracy_int8), abs=1e-4)
    assert result.size_int8 < result.size_fp32
    assert result.latency_fp32_ms > 0 and result.latency_int8_ms > 0
    assert {"artifact", "path", "accuracy_fp32", "accuracy_int8", "accuracy_drop"} <= result.to_json().keys()

    model = onnx.load(result.path)
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > 0
    assert check_symmetric(model) == ops.count("QuantizeLinear") + ops.count("DequantizeLinear")
    inits = _initializers(model)
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            assert not np.any(inits[node.input[2]]), node.name  # zero point 0
            assert inits[node.input[2]].dtype == np.int8

    # Per-channel: the weight of every conv is dequantized with one scale per output channel.
    producers = {o: n for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert convs
    for conv in convs:
        dq = producers[conv.input[1]]
        assert dq.op_type == "DequantizeLinear"
        weight = inits[dq.input[0]]
        assert weight.dtype == np.int8
        assert inits[dq.input[1]].shape == (weight.shape[0],)
        if len(conv.input) > 2 and conv.input[2]:
            assert conv.input[2] in inits and inits[conv.input[2]].dtype == np.float32  # bias left in float for TRT
    # The probabilities stay float: no Q/DQ after the softmax.
    assert producers["probabilities"].op_type == "Softmax"
    assert {p.key: p.value for p in model.metadata_props}["precision"] == "int8"

    # Lineage: linked to the FP32 ONNX, the calibration dataset version and the model.
    artifact = resolve_artifact(ws, result.artifact)
    assert artifact.type == ARTIFACT_TYPE and artifact.path == Path(result.path)
    dataset = load_dataset(ws, "tiny")
    roles = {link.role: link.input_id for link in ws.registry.links_from(result.artifact)}
    assert roles == {"fp32": template["tiny-onnx"], "calibration_data": dataset.id, "model": template["model"]}
    body = artifact.record.body
    assert body["calibration"] == dataset.id and body["samples"] == 64 and body["per_channel"] is True
    assert body["config"]["method"] == "minmax" and body["input"] == "float-nchw"

    # Same inputs, config and code: the registered artifact comes back without recomputing.
    fp32_copy = shutil.copy(resolve_artifact(ws, "tiny-onnx").path, ws.root.parent / "fp32.onnx")
    again = quantize_model(ws, QuantizeConfig(onnx=str(fp32_copy), samples=64, max_drop=LENIENT))  # named by a path
    assert again.cached and again.artifact == result.artifact
    assert len(_int8_artifacts(ws)) == 1


def test_keep_float_gemm_leaves_the_head_in_float(ws: Workspace) -> None:
    result = quantize_model(ws, QuantizeConfig(onnx="tiny-onnx", samples=32, keep_float=("Gemm",), max_drop=LENIENT))
    model = onnx.load(result.path)
    inits = _initializers(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    gemms = [n for n in model.graph.node if n.op_type == "Gemm"]
    assert len(gemms) == 1 and result.excluded_nodes == (gemms[0].name,)
    weight = gemms[0].input[1]
    assert weight in inits and inits[weight].dtype == np.float32  # a float initializer, no DequantizeLinear
    assert weight not in producers
    assert any(n.op_type == "DequantizeLinear" for n in model.graph.node)  # the convs are still INT8


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_each_calibration_method_runs(ws: Workspace, method: str) -> None:
    result = quantize_model(ws, QuantizeConfig(onnx="tiny-onnx", samples=16, method=method, max_drop=LENIENT))
    assert result.method == method and result.samples == 16
    assert check_symmetric(onnx.load(result.path)) > 0


def test_calibration_reads_only_the_train_split(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    readers: list[CalibrationReader] = []

    class Spy(CalibrationReader):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            readers.append(self)

    monkeypatch.setattr(static_module, "CalibrationReader", Spy)
    quantize_model(ws, QuantizeConfig(onnx="tiny-onnx", samples=40, max_drop=LENIENT))
    dataset = load_dataset(ws, "tiny")
    train = set(dataset.split_indices("train").tolist())
    (reader,) = readers
    assert len(reader.indices) == 40 and len(set(reader.indices.tolist())) == 40
    assert reader.touched and set(reader.touched) <= train
    assert sorted(reader.touched) == sorted(reader.indices.tolist())


def test_calibration_sample_is_seeded_capped_and_skips_test_images(ws: Workspace) -> None:
    from toolchain.models.recipe import load_recipe

    dataset = load_dataset(ws, "tiny")
    recipe = load_recipe("edgenet").with_overrides({"input_size": 32, "width": 0.5})
    spec = input_spec(onnx.load(str(resolve_artifact(ws, "tiny-onnx").path)), "float-nchw", recipe)

    def reader(**kwargs: Any) -> CalibrationReader:
        return CalibrationReader(dataset, ws.blobs, spec, recipe, **kwargs)

    a, b, c = reader(samples=20, seed=0), reader(samples=20, seed=0), reader(samples=20, seed=1)
    assert a.indices.tolist() == b.indices.tolist() != c.indices.tolist()
    train = dataset.split_indices("train")
    assert len(reader(samples=10_000, seed=0).indices) == len(train)  # capped at the split
    first = next(iter(reader(samples=8, seed=0)))["images"]
    assert first.shape == (8, 3, 32, 32) and first.dtype == np.float32
    excluded = frozenset(dataset.manifest.entries[i].sha256 for i in train[:5])
    skipping = reader(samples=10_000, seed=0, exclude_sha256=excluded)
    assert skipping.excluded == 5 and not set(skipping.indices.tolist()) & set(train[:5].tolist())


def test_drop_gate_raises_and_registers_nothing(ws: Workspace) -> None:
    before = ws.registry.find(kind="artifact")
    with pytest.raises(QualityGateError, match="max-drop") as caught:
        quantize_model(ws, QuantizeConfig(onnx="tiny-onnx", samples=16, max_drop=-1.0))
    assert caught.value.exit_code == 3
    result = caught.value.result
    assert not result.passed and result.artifact == ""
    assert f"{result.accuracy_int8:.4f}" in str(caught.value) and f"{result.accuracy_fp32:.4f}" in str(caught.value)
    assert ws.registry.find(kind="artifact") == before and not _int8_artifacts(ws)


def test_bad_options_are_usage_errors(ws: Workspace) -> None:
    with pytest.raises(UsageError, match="--method"):
        QuantizeConfig(onnx="tiny-onnx", method="kl")
    with pytest.raises(UsageError, match="--samples"):
        QuantizeConfig(onnx="tiny-onnx", samples=0)
    assert QuantizeConfig(onnx="x", keep_float="Gemm").keep_float == ("Gemm",)
    with pytest.raises(UsageError, match="op types present"):
        quantize_model(ws, QuantizeConfig(onnx="tiny-onnx", samples=8, keep_float=("NoSuchLayer",)))
    assert not _int8_artifacts(ws)


def test_int8_artifact_is_not_quantized_again(ws: Workspace) -> None:
    result = quantize_model(ws, QuantizeConfig(onnx="tiny-onnx", samples=16, max_drop=LENIENT))
    with pytest.raises(UsageError, match="already an INT8"):
        quantize_model(ws, QuantizeConfig(onnx=result.artifact))


def test_same_config_gives_the_same_int8_bytes(ws: Workspace, tmp_path: Path) -> None:
    from toolchain.models.recipe import load_recipe

    dataset = load_dataset(ws, "tiny")
    recipe = load_recipe("edgenet").with_overrides({"input_size": 32, "width": 0.5})
    source = resolve_artifact(ws, "tiny-onnx").path
    spec = input_spec(onnx.load(str(source)), "float-nchw", recipe)
    outputs = []
    for i in range(2):
        reader = CalibrationReader(dataset, ws.blobs, spec, recipe, samples=48, seed=3)
        quantize_onnx(source, tmp_path / f"{i}.onnx", reader, method="minmax", per_channel=True)
        outputs.append((tmp_path / f"{i}.onnx").read_bytes())
    assert outputs[0] == outputs[1]


def test_uint8_nhwc_graph_with_static_batch(ws: Workspace) -> None:
    result = quantize_model(ws, QuantizeConfig(onnx="tiny-u8", samples=24, max_drop=LENIENT))
    model = onnx.load(result.path)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert check_symmetric(model) > 0
    assert resolve_artifact(ws, result.artifact).record.body["input"] == "uint8-nhwc"


def test_per_channel_needs_opset_13(ws: Workspace, tmp_path: Path) -> None:
    from toolchain.models.registered import load_registered_model

    loaded = load_registered_model(ws, resolve_artifact(ws, "tiny-onnx").record.body["model"])
    _export(loaded.module, tmp_path / "op11.onnx", recipe=loaded.recipe, layout="float-nchw", dynamic=True, opset=11)
    with pytest.raises(UsageError, match="--opset 13"):
        quantize_onnx(tmp_path / "op11.onnx", tmp_path / "q.onnx", reader=None, per_channel=True)

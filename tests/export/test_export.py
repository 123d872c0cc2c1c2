"""ONNX export of a tiny trained model: layouts, batch modes, metadata, checker, parity gate, registry,
determinism, and an independent consumer (OpenCV's dnn module)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from tests.export.conftest import MODEL  # noqa: E402
from toolchain.artifacts import resolve_artifact  # noqa: E402
from toolchain.errors import QualityGateError, UsageError  # noqa: E402
from toolchain.export import (  # noqa: E402
    LOGITS_NAME,
    ExportConfig,
    ExportResult,
    ParityError,
    export_model,
    read_metadata,
)
from toolchain.export import parity as parity_module  # noqa: E402
from toolchain.workspace import Workspace  # noqa: E402

METADATA_KEYS = {
    "classes", "input_size", "mean", "std", "input_layout", "input_name", "output_name", "batch", "architecture",
    "dataset", "dataset_ref", "model", "model_ref", "toolchain_version", "opset",
}


def _torch_reference(ws: Workspace, images: np.ndarray) -> np.ndarray:
    from toolchain.models.registered import load_registered_model

    loaded = load_registered_model(ws, MODEL)
    return parity_module.torch_probabilities(loaded.module, images, loaded.recipe)


def _test_images(ws: Workspace, count: int) -> np.ndarray:
    from toolchain.data.versions import load_dataset
    from toolchain.models.registered import load_registered_model

    dataset = load_dataset(ws, load_registered_model(ws, MODEL).dataset)
    return parity_module.parity_images(ws, dataset, count)[1]


def _float_inputs(ws: Workspace, images: np.ndarray) -> np.ndarray:
    import torch

    from toolchain.models.registered import load_registered_model
    from toolchain.train.batches import eval_transform

    return eval_transform(torch.from_numpy(images), load_registered_model(ws, MODEL).recipe).numpy()


def _session(result: ExportResult) -> ort.InferenceSession:
    return ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])


def test_float_nchw_export_is_checked_described_registered_and_deterministic(workspace: Workspace, capsys) -> None:
    result = export_model(workspace, ExportConfig(model=MODEL))
    assert capsys.readouterr().out == ""  # --json prints one document on stdout: nothing else may
    assert result.parity.passed and result.parity.images > 0 and result.parity.split == "test"
    assert result.parity.top1_agreement == 1.0 and result.parity.max_abs <= 1e-4
    assert result.ref == "sharp-onnx@v1" and result.simplified and result.size_bytes == result.path.stat().st_size

    model = onnx.load(str(result.path))
    onnx.checker.check_model(model, full_check=True)
    assert {o.domain: o.version for o in model.opset_import}[""] == 17
    assert [i.name for i in model.graph.input] == ["images"]
    assert [o.name for o in model.graph.output] == ["probabilities"]
    assert any(LOGITS_NAME in n.input for n in model.graph.node if n.op_type == "Softmax")
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 32, 32] and model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT

    meta = read_metadata(result.path)
    assert set(meta) == METADATA_KEYS
    assert json.loads(meta["classes"]) == ["car", "truck"] and meta["input_size"] == "32"
    assert json.loads(meta["mean"]) == pytest.approx([0.485, 0.456, 0.406]) and len(json.loads(meta["std"])) == 3
    assert meta["input_layout"] == "float-nchw" and meta["batch"] == "1" and meta["opset"] == "17"
    model_record = workspace.resolve(MODEL, kind="model").record
    assert meta["model"] == model_record.id and meta["model_ref"] == MODEL
    assert meta["dataset"] == model_record.body["dataset"] and meta["dataset_ref"] == "tiny@v1"

    artifact = resolve_artifact(workspace, result.artifact[:10])
    assert artifact.id == result.artifact and artifact.type == "onnx" and artifact.path == result.path
    body = artifact.record.body
    assert body["model"] == model_record.id and body["parity"]["passed"] and body["opset"] == 17
    assert body["metadata"] == meta and body["config"]["model"] == model_record.id
    links = {(link.input_id, link.role) for link in workspace.registry.links_from(result.artifact)}
    assert (model_record.id, "model") in links

    # Batch-1 graph: ORT fed one image at a time reproduces torch.
    images = _test_images(workspace, 5)
    session = _session(result)
    x = _float_inputs(workspace, images)
    probs = np.concatenate([session.run(["probabilities"], {"images": x[i : i + 1]})[0] for i in range(len(x))])
    np.testing.assert_allclose(probs, _torch_reference(workspace, images), atol=1e-5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert probs[:, 0].std() > 1e-3  # the model's answer depends on the image, so parity means something

    again = export_model(workspace, ExportConfig(model=MODEL))
    assert again.artifact == result.artifact and again.ref == result.ref and again.path == result.path
    assert len(workspace.registry.find(kind="artifact", name="sharp-onnx")) == 1


def test_export_bytes_do_not_depend_on_the_workspace_or_the_run(workspace: Workspace, tmp_path) -> None:
    import shutil

    first = export_model(workspace, ExportConfig(model=MODEL, batch="dynamic")).path.read_bytes()
    other_root = tmp_path / "other"
    shutil.copytree(workspace.root, other_root)
    with Workspace(other_root) as other:
        for artifact in other.registry.find(kind="artifact"):  # a fresh export, not the stored blob
            other.blobs.path(artifact.body["blob"]).unlink()
        second = export_model(other, ExportConfig(model=MODEL, batch="dynamic")).path.read_bytes()
    assert first == second


def test_dynamic_batch_runs_any_batch_size(workspace: Workspace) -> None:
    result = export_model(workspace, ExportConfig(model=MODEL, batch="dynamic", opset=13))
    assert result.input_shape == ("batch", 3, 32, 32) and result.to_json()["input_shape"] == ["batch", 3, 32, 32]
    model = onnx.load(str(result.path))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    images = _test_images(workspace, 3)
    probs = _session(result).run(["probabilities"], {"images": _float_inputs(workspace, images)})[0]
    assert probs.shape == (3, 2)
    np.testing.assert_allclose(probs, _torch_reference(workspace, images), atol=1e-5)
    assert [o.name for o in _session(result).get_outputs()] == ["probabilities"]


def test_uint8_nhwc_graph_normalises_raw_frames_itself(workspace: Workspace) -> None:
    # Fixed batch 3: the parity check feeds chunks of 3 and pads the last one.
    result = export_model(workspace, ExportConfig(model=MODEL, input="uint8-nhwc", batch="3"))
    assert result.parity.passed and result.parity.images % 3 != 0
    model = onnx.load(str(result.path))
    tensor_type = model.graph.input[0].type.tensor_type
    assert tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in tensor_type.shape.dim] == [3, 32, 32, 3]
    assert read_metadata(result.path)["input_layout"] == "uint8-nhwc"
    images = _test_images(workspace, 3)
    probs = _session(result).run(["probabilities"], {"images": images})[0]
    np.testing.assert_allclose(probs, _torch_reference(workspace, images), atol=1e-5)


def test_failed_parity_exits_3_with_the_numbers_and_registers_nothing(workspace: Workspace, monkeypatch) -> None:
    real = parity_module.onnx_probabilities

    def perturbed(*args, **kwargs):
        return real(*args, **kwargs)[:, ::-1]  # classes swapped: every top-1 flips

    monkeypatch.setattr(parity_module, "onnx_probabilities", perturbed)
    before = workspace.registry.find(kind="artifact")
    with pytest.raises(QualityGateError) as caught:
        export_model(workspace, ExportConfig(model=MODEL))
    assert caught.value.exit_code == 3 and isinstance(caught.value, ParityError)
    message = str(caught.value)
    assert "max abs error" in message and "max rel error" in message and "top-1 agreement" in message
    report = caught.value.report
    assert not report.passed and report.top1_agreement < 1.0 and report.max_abs > 1e-4
    assert workspace.registry.find(kind="artifact") == before


@pytest.mark.parametrize(("options", "word"), [
    ({"opset": 10}, "--opset"), ({"opset": 21}, "--opset"), ({"batch": "0"}, "--batch"), ({"batch": "x"}, "--batch"),
    ({"input": "nhwc"}, "--input"), ({"parity_images": 0}, "--parity-images"), ({"atol": -1.0}, "--atol"),
])
def test_bad_options_are_usage_errors(options: dict, word: str) -> None:
    with pytest.raises(UsageError, match=word) as caught:
        ExportConfig(model=MODEL, **options)
    assert caught.value.exit_code == 2


def test_without_onnxslim_the_export_says_it_was_not_simplified(workspace: Workspace, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxslim", None)  # import onnxslim -> ImportError
    result = export_model(workspace, ExportConfig(model=MODEL, opset=11))
    assert not result.simplified and any("onnxslim" in note for note in result.notes)
    assert result.parity.passed and result.to_json()["notes"] == list(result.notes)


def test_opencv_dnn_loads_the_export_and_agrees_with_onnxruntime(workspace: Workspace) -> None:
    cv2 = pytest.importorskip("cv2")
    images = _test_images(workspace, 3)
    for config, inputs in (
        (ExportConfig(model=MODEL), _float_inputs(workspace, images[:1])),
        (ExportConfig(model=MODEL, batch="dynamic"), _float_inputs(workspace, images)),
        (ExportConfig(model=MODEL, input="uint8-nhwc"), images[:1]),
    ):
        result = export_model(workspace, config)
        expected = _session(result).run(["probabilities"], {"images": inputs})[0]
        net = cv2.dnn.readNetFromONNX(str(result.path))
        net.setInput(inputs)
        np.testing.assert_allclose(net.forward(), expected, atol=1e-4, err_msg=str(config))


def test_compare_probabilities_counts_ties_and_rejects_nan() -> None:
    reference = np.array([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]])
    tie_flipped = reference + np.array([[-1e-6, 1e-6], [0, 0], [0, 0]])
    report = parity_module.compare_probabilities(reference, tie_flipped, atol=1e-4, rtol=1e-3)
    assert report.passed and report.top1_agreement == 1.0 and report.max_abs == pytest.approx(1e-6)
    flipped = parity_module.compare_probabilities(reference, reference[:, ::-1], atol=1e-4, rtol=1e-3)
    assert not flipped.passed and flipped.top1_agreement == pytest.approx(1 / 3)  # the 50:50 row is a tie
    broken = parity_module.compare_probabilities(reference, np.full_like(reference, np.nan), atol=1e-4, rtol=1e-3)
    assert not broken.passed and broken.to_json()["max_abs"] is None
    small = parity_module.compare_probabilities(
        np.array([[1 - 1e-5, 1e-5]]), np.array([[1 - 2e-5, 2e-5]]), atol=1e-4, rtol=1e-3,
    )
    assert small.passed and small.max_rel < 1e-4  # relative error of a 0.001% probability is not judged


def test_uint8_resize_matches_eval_transform() -> None:
    import torch

    from toolchain.models.recipe import load_recipe
    from toolchain.train.batches import eval_transform

    recipe = load_recipe("edgenet").with_overrides({"input_size": 32})
    frames = np.random.default_rng(0).integers(0, 256, (2, 48, 48, 3), dtype=np.uint8)
    resized = parity_module.resize_uint8(frames, 32)
    assert resized.shape == (2, 32, 32, 3) and resized.dtype == np.uint8
    a = eval_transform(torch.from_numpy(resized), recipe)
    b = eval_transform(torch.from_numpy(frames), recipe)
    assert float((a - b).abs().max()) <= 0.5 / 255 / min(recipe.std) + 1e-6  # only the rounding to uint8
    assert parity_module.resize_uint8(resized, 32) is resized

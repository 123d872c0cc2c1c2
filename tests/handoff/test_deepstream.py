"""DeepStream hand-off: the nvinfer config checked against the documented property list, the preprocessing
and the model's probabilities checked numerically, and the settings a 2-class classifier needs."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import numpy as np
import pytest

from tests.handoff.models import CLASSES, register_classifier, register_tensorrt_build, write_classifier
from toolchain.artifacts import Artifact
from toolchain.errors import BadInputError, UsageError
from toolchain.handoff import DeepStreamOptions, HandoffConfig, handoff, write_deepstream_files
from toolchain.handoff.activation import output_activation, require_softmax
from toolchain.handoff.model import model_info
from toolchain.handoff.numerics import compare_models
from toolchain.handoff.nvinfer_properties import PROPERTIES, check_classifier_config, read_config
from toolchain.workspace import Workspace


def _deepstream(ws: Workspace, ref: str, out: Path, **kwargs: object) -> object:
    options = kwargs.pop("options", DeepStreamOptions())
    return handoff(ws, HandoffConfig(ref=ref, format="deepstream", out=out, deepstream=options, **kwargs))  # type: ignore[arg-type]


def test_an_onnx_for_a_jetson_gets_exact_in_graph_preprocessing(workspace: Workspace, onnx: Artifact,
                                                                 tmp_path: Path) -> None:
    result = _deepstream(workspace, onnx.ref, tmp_path / "ds", target="jetson-orin-nano")
    out = tmp_path / "ds"
    assert {p.name for p in out.iterdir()} == {"config_infer_primary.txt", "labels.txt", "model.onnx", "handoff.json"}
    values, problems = read_config((out / "config_infer_primary.txt").read_text())
    assert problems == []
    assert values["onnx-file"] == "model.onnx" and "model-engine-file" not in values
    assert values["network-type"] == 1 and values["process-mode"] == 1 and values["network-mode"] == 2  # best: fp16
    assert values["net-scale-factor"] == 1.0 and values["offsets"] == [0.0, 0.0, 0.0]
    assert values["infer-dims"] == [3, 16, 16] and values["model-color-format"] == 0
    assert values["output-blob-names"] == ["probabilities"] and values["batch-size"] == 8
    assert (out / "labels.txt").read_text() == "car;truck\n"  # a classifier's labels: one line, ';'-separated
    assert result.preprocessing.exact and result.preprocessing.max_error == 0.0
    # The derived ONNX takes 0..255 float pixels and gives what the source gives on normalised ones.
    info = model_info(onnx.path)
    check = compare_models(info, onnx.path, out / "model.onnx", scale=1.0, offsets=(0, 0, 0))
    assert check.max_probability_error < 1e-6 and check.top1_agreement == 1.0
    assert result.checks["model"]["max_probability_error"] < 1e-6


def test_a_tensorrt_build_gets_the_measured_approximation(workspace: Workspace, onnx: Artifact, tmp_path: Path) -> None:
    build = register_tensorrt_build(workspace, onnx, tmp_path, max_batch=4, precision="fp16")
    result = _deepstream(workspace, build.name, tmp_path / "ds")
    out = tmp_path / "ds"
    values = check_classifier_config(out / "config_infer_primary.txt")
    assert values["model-engine-file"] == "model.plan" and "onnx-file" not in values
    assert (out / "model.plan").read_bytes() == workspace.blobs.path(build.body["blob"]).read_bytes()
    assert values["batch-size"] == 4 and values["network-mode"] == 2
    assert values["offsets"] == pytest.approx([123.675, 116.28, 103.53])
    p = result.preprocessing
    assert not p.exact and 0.02 < p.max_error < 0.03 and p.mode == "approximate"
    assert any("worst case" in note for note in result.notes)
    # The approximation moves probabilities a little, never the class on these frames.
    assert 0 < result.checks["model"]["max_probability_error"] < 0.05 and result.checks["model"]["top1_agreement"] == 1.0
    with pytest.raises(UsageError, match="graph is fixed"):
        _deepstream(workspace, build.name, tmp_path / "other", options=DeepStreamOptions(preprocessing="in-graph"))
    with pytest.raises(UsageError, match="optimisation profile"):
        _deepstream(workspace, build.name, tmp_path / "other", max_batch=16)


def test_nvinfer_defaults_collapse_a_2_class_model_to_probability_1_and_the_check_sees_it(
        workspace: Workspace, onnx: Artifact, tmp_path: Path) -> None:
    """Net-scale-factor 1 and no offsets (nvinfer's defaults) feed 0..255 pixels to a model trained on normalised ones:
    one class at exactly 1.0 on every frame. The hand-off's numbers do not."""
    info = model_info(onnx.path)
    naive = compare_models(info, onnx.path, onnx.path, scale=1.0, offsets=(0.0, 0.0, 0.0))
    assert naive.collapsed and naive.saturated_fraction == 1.0
    result = _deepstream(workspace, onnx.ref, tmp_path / "ds", target="jetson-orin-nano",
                         options=DeepStreamOptions(preprocessing="approximate"))
    model = result.checks["model"]
    assert not model["collapsed"] and model["saturated_fraction"] < 1.0 and model["top1_agreement"] == 1.0
    assert model["probability_sums"][0] == pytest.approx(1.0, abs=1e-5)


def test_outputs_nvinfer_would_misread_are_refused(workspace: Workspace, tmp_path: Path) -> None:
    for head, message in (("logits", "not a Softmax"), ("sigmoid", r"\(batch, 2\)"), ("softmax0", "axis 0")):
        artifact = register_classifier(workspace, tmp_path, name=f"tiny-{head}", head=head)
        with pytest.raises(BadInputError, match=message):
            _deepstream(workspace, artifact.ref, tmp_path / head, target="jetson-orin-nano")
        assert not (tmp_path / head).exists()
    softmax = write_classifier(tmp_path / "ok.onnx")
    activation = output_activation(softmax, "probabilities", 2)
    assert activation.op == "Softmax" and activation.axis == 1
    require_softmax(activation, "probabilities", 2)
    bare = register_classifier(workspace, tmp_path, name="tiny-bare", metadata=False)
    # The graph has no metadata_props, the export record has the metadata: the record fills the gap.
    assert _deepstream(workspace, bare.ref, tmp_path / "bare", target="jetson-orin-nano").preprocessing.exact  # type: ignore[attr-defined]
    no_meta = tmp_path / "no-meta.onnx"
    write_classifier(no_meta, metadata=False)
    with pytest.raises(BadInputError, match="never guessed"):
        model_info(no_meta)


def test_int8_qdq_onnx_gets_network_mode_1_and_a_cache_of_its_own_scales(workspace: Workspace, tmp_path: Path) -> None:
    int8 = register_classifier(workspace, tmp_path, name="tiny-int8", qdq=True)
    result = _deepstream(workspace, int8.ref, tmp_path / "ds", target="jetson-orin-nano")
    out = tmp_path / "ds"
    values = check_classifier_config(out / "config_infer_primary.txt")
    assert values["network-mode"] == 1 and values["int8-calib-file"] == "calibration.cache"
    header, *entries = (out / "calibration.cache").read_text().splitlines()
    assert header == "TRT-100300-EntropyCalibration2"  # TensorRT 10.3.0 of jetson-orin-nano
    name, hexed = entries[0].split(": ")
    import onnx

    graph = onnx.load(str(out / "model.onnx")).graph
    quantized = [n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"]
    assert name in quantized  # the tensor the derived graph quantizes, not the source's input
    assert struct.unpack(">f", bytes.fromhex(hexed))[0] == pytest.approx(3.0 / 127)
    assert result.preprocessing.exact and result.source.precision == "int8"


def test_uint8_models_stay_normalised_in_the_graph_and_their_engines_are_refused(workspace: Workspace,
                                                                                  tmp_path: Path) -> None:
    u8 = register_classifier(workspace, tmp_path, name="tiny-u8", layout="uint8-nhwc", batch=2)
    result = _deepstream(workspace, u8.ref, tmp_path / "ds", target="jetson-xavier-nx")
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "ds" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float)" and session.get_inputs()[0].shape == [2, 3, 16, 16]
    assert result.preprocessing.exact and result.checks["model"]["max_probability_error"] == 0.0
    assert check_classifier_config(tmp_path / "ds" / "config_infer_primary.txt")["batch-size"] == 2  # the fixed batch
    with pytest.raises(UsageError, match="uint8"):
        _deepstream(workspace, u8.ref, tmp_path / "x", target="jetson-xavier-nx",
                    options=DeepStreamOptions(preprocessing="approximate"))
    build = register_tensorrt_build(workspace, u8, tmp_path)
    with pytest.raises(UsageError, match="nvinfer always feeds float32"):
        _deepstream(workspace, build.id, tmp_path / "y")


def test_secondary_mode_and_dla_settings(workspace: Workspace, onnx: Artifact, tmp_path: Path) -> None:
    options = DeepStreamOptions(mode="secondary", operate_on_gie_id=1, operate_on_class_ids=(0, 2), tensor_meta=True,
                                classifier_threshold=0.6)
    _deepstream(workspace, onnx.ref, tmp_path / "ds", target="jetson-orin-nano", options=options)
    values = check_classifier_config(tmp_path / "ds" / "config_infer_secondary.txt")
    assert values["process-mode"] == 2 and values["gie-unique-id"] == 2 and values["operate-on-gie-id"] == 1
    assert values["operate-on-class-ids"] == [0, 2] and values["output-tensor-meta"] is True
    assert values["classifier-threshold"] == 0.6
    dla = register_tensorrt_build(workspace, onnx, tmp_path, target="jetson-agx-orin", dla_core=1)
    values = check_classifier_config(_deepstream(workspace, dla.id, tmp_path / "dla").files[0])  # type: ignore[attr-defined]
    assert values["enable-dla"] is True and values["use-dla-core"] == 1
    for bad in ({"classifier_threshold": 1.0}, {"mode": "secondary", "operate_on_gie_id": 2}, {"mode": "tertiary"}):
        with pytest.raises(UsageError):
            DeepStreamOptions(**bad)  # type: ignore[arg-type]


def test_cpu_targets_and_foreign_folders_are_refused(workspace: Workspace, onnx: Artifact, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="NVIDIA GPU"):
        _deepstream(workspace, onnx.ref, tmp_path / "ds", target="x86-64-cpu")
    with pytest.raises(UsageError, match="pass --target"):
        _deepstream(workspace, onnx.ref, tmp_path / "ds")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(UsageError, match="did not write"):
        _deepstream(workspace, onnx.ref, foreign, target="jetson-orin-nano")
    assert (foreign / "notes.txt").read_text() == "keep me"
    # A previous hand-off is replaced whole: nothing of it lingers (its calibration cache here).
    int8 = register_classifier(workspace, tmp_path, name="tiny-int8", qdq=True)
    _deepstream(workspace, int8.ref, tmp_path / "again", target="jetson-orin-nano")
    assert (tmp_path / "again" / "calibration.cache").is_file()
    _deepstream(workspace, onnx.ref, tmp_path / "again", target="jetson-orin-nano")
    assert not (tmp_path / "again" / "calibration.cache").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".again.")]
    # Readable by a DeepStream container running as another user: the umask's permissions, not mkstemp's 0600.
    import os

    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "again").stat().st_mode & 0o777 == 0o777 & ~umask
    assert (tmp_path / "again" / "model.onnx").stat().st_mode & 0o777 == 0o666 & ~umask


def test_the_property_checker_catches_what_nvinfer_would_ignore_or_refuse(workspace: Workspace, onnx: Artifact,
                                                                           tmp_path: Path) -> None:
    _deepstream(workspace, onnx.ref, tmp_path / "ds", target="jetson-orin-nano")
    path = tmp_path / "ds" / "config_infer_primary.txt"
    good = path.read_text()
    cases = {
        "labelfile-path=labels.txt": ("label-file-path=labels.txt", "not a documented"),
        "infer-dims=3;16;16": ("infer-dims=3;16", "needs 3 values"),
        "network-mode=2": ("network-mode=5", "not one of"),
        "classifier-threshold=0.5": ("classifier-threshold=1", "labels nothing"),
        "output-tensor-meta=0": ("output-tensor-meta=yes", "boolean"),
        "onnx-file=model.onnx": ("onnx-file=missing.onnx", "no such file"),
        "offsets=0;0;0": ("offsets=0;0", "2 values for 3"),
    }
    for original, (broken, message) in cases.items():
        assert original in good
        path.write_text(good.replace(original, broken))
        with pytest.raises(BadInputError, match=message):
            check_classifier_config(path)
    path.write_text(good)
    check_classifier_config(path)
    # Every key written is documented, with the type nvinfer reads it as.
    values, problems = read_config(good)
    assert not problems and set(values) <= set(PROPERTIES)


def test_write_deepstream_files_puts_a_config_next_to_a_packaged_engine(workspace: Workspace, onnx: Artifact,
                                                                        tmp_path: Path) -> None:
    build = register_tensorrt_build(workspace, onnx, tmp_path)
    model_dir = tmp_path / "context" / "model"
    model_dir.mkdir(parents=True)
    with pytest.raises(BadInputError, match="write the engine"):
        write_deepstream_files(workspace, build, "jetson-orin-nano", model_dir)
    (model_dir / "model.plan").write_bytes(workspace.blobs.path(build.body["blob"]).read_bytes())
    (model_dir / "model.json").write_text("{}")  # the bundle's manifest: left alone
    written = write_deepstream_files(workspace, build, "jetson-orin-nano", model_dir)
    assert {p.name for p in written.files} == {"config_infer_primary.txt", "labels.txt", "handoff.json"}
    values = check_classifier_config(written.config)
    assert values["model-engine-file"] == "model.plan" and values["labelfile-path"] == "labels.txt"
    assert (model_dir / "model.json").read_text() == "{}" and not written.preprocessing.exact
    with pytest.raises(UsageError, match="is for jetson-orin-nano"):
        write_deepstream_files(workspace, build, "jetson-agx-orin", model_dir)


def test_a_changed_engine_blob_is_not_handed_off(workspace: Workspace, onnx: Artifact, tmp_path: Path) -> None:
    build = register_tensorrt_build(workspace, onnx, tmp_path)
    blob = workspace.blobs.path(build.body["blob"])
    blob.chmod(0o644)
    blob.write_bytes(b"tampered")
    from toolchain.errors import CorruptStoreError

    with pytest.raises(CorruptStoreError):
        _deepstream(workspace, build.id, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_classes_come_from_the_model(workspace: Workspace, tmp_path: Path) -> None:
    artifact = register_classifier(workspace, tmp_path, name="tiny-2")
    info = model_info(artifact.path)
    assert info.classes == CLASSES and info.mean == pytest.approx((0.485, 0.456, 0.406))
    assert dataclasses.asdict(info)["size"] == 16 and info.fixed_batch is None
    assert np.isclose(sum(info.std), 0.678)

"""Bundles: what package puts in the image and serve reads back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.serve.fixtures import tiny_build
from toolchain.errors import BadInputError, CorruptStoreError, InputNotFoundError
from toolchain.serve.bundle import MANIFEST, load_bundle, model_from_build, model_from_registry, write_bundle
from toolchain.serve.service import make_runner
from toolchain.workspace import Workspace


def test_bundle_round_trip_serves_the_same_engine(tmp_path: Path) -> None:
    with Workspace(tmp_path / "ws") as ws:
        build_id = tiny_build(ws, tmp_path)
        model = model_from_registry(ws, build_id[:12])
    assert (model.backend, model.layout, model.size, model.classes) == ("onnxruntime", "float-nchw", 16, ("car", "truck"))
    assert model.info["build"] == build_id and model.info["target"] == "x86-64-cpu" and model.info["model"] == "tiny-onnx"
    bundle = load_bundle(write_bundle(model, tmp_path / "bundle"))
    assert bundle.engine.name == "model.onnx" and bundle.engine.read_bytes() == model.engine.read_bytes()
    assert (bundle.size, bundle.classes, bundle.info, bundle.mean) == (model.size, model.classes, model.info, model.mean)
    feed = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    with make_runner(model) as a, make_runner(bundle) as b:
        np.testing.assert_array_equal(a.infer(feed), b.infer(feed))


def test_export_metadata_json_strings_are_parsed() -> None:
    onnx_body = {"input": "uint8-nhwc", "input_shape": [1, 64, 64, 3],
                 "metadata": {"classes": '["car", "truck"]', "mean": "[0.5, 0.5, 0.5]", "std": "[0.25, 0.25, 0.25]",
                              "input_size": "64"}}
    model = model_from_build({"backend": "tensorrt", "input": "uint8-nhwc"}, onnx_body, Path("e"), {"build": "b"})
    assert (model.size, model.layout, model.classes, model.mean, model.std) == (
        64, "uint8-nhwc", ("car", "truck"), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    with pytest.raises(BadInputError, match="input size"):
        model_from_build({}, {}, Path("e"), {"build": "b"})


def test_bad_bundles_and_altered_engines_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="model.json"):
        load_bundle(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({"schema": 99}))
    with pytest.raises(BadInputError, match="schema"):
        load_bundle(tmp_path)
    with Workspace(tmp_path / "ws") as ws:
        build_id = tiny_build(ws, tmp_path)
        blob = ws.blobs.path(ws.registry.get(build_id).body["blob"])
        blob.chmod(0o644)
        blob.write_bytes(blob.read_bytes() + b"x")
        with pytest.raises(CorruptStoreError, match="altered"):
            model_from_registry(ws, build_id)


def test_the_engine_is_rehashed_at_start_against_model_json(tmp_path: Path) -> None:
    with Workspace(tmp_path / "ws") as ws:
        build_id = tiny_build(ws, tmp_path)
        model = model_from_registry(ws, build_id[:12])
    bundle = write_bundle(model, tmp_path / "bundle", sha256=model.info["artifact_sha256"])
    manifest = json.loads((bundle / MANIFEST).read_text())
    assert manifest["engine_sha256"] == model.info["artifact_sha256"]
    load_bundle(bundle)
    engine = bundle / "model.onnx"
    engine.write_bytes(engine.read_bytes()[:-1] + b"\0")  # one byte changed on the unit
    with pytest.raises(CorruptStoreError, match="model.onnx does not match the sha256") as caught:
        load_bundle(bundle)
    assert "Repackage the image" in str(caught.value)


def test_a_bundle_without_engine_sha256_falls_back_to_the_artifact_digest(tmp_path: Path) -> None:
    with Workspace(tmp_path / "ws") as ws:
        build_id = tiny_build(ws, tmp_path)
        model = model_from_registry(ws, build_id[:12])
    bundle = write_bundle(model, tmp_path / "bundle")
    manifest = json.loads((bundle / MANIFEST).read_text())
    del manifest["engine_sha256"]  # as written before the field existed
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    assert load_bundle(bundle).info["artifact_sha256"] == model.info["artifact_sha256"]
    (bundle / "model.onnx").write_bytes(b"another engine")
    with pytest.raises(CorruptStoreError, match="model.onnx"):
        load_bundle(bundle)
    # neither digest: nothing to check against (a hand-made bundle); it loads as before
    manifest["info"].pop("artifact_sha256")
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    assert load_bundle(bundle).engine.read_bytes() == b"another engine"
    manifest["engine_sha256"] = "not a digest"
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CorruptStoreError, match="no valid engine sha256"):
        load_bundle(bundle)

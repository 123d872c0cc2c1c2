"""The pipeline's [handoff] section: validated, and a stage per build and format that is skipped when unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.handoff.models import register_classifier
from toolchain.build.service import BuildConfig, build
from toolchain.errors import BadInputError
from toolchain.pipeline.config import load_pipeline, parse_pipeline
from toolchain.pipeline.run import PipelineRunner
from toolchain.workspace import Workspace


def test_the_section_is_validated(tmp_path: Path) -> None:
    assert load_pipeline(None).handoff.formats == ()  # off in the embedded default
    config = parse_pipeline({"handoff": {"formats": ["triton"], "mode": "secondary"}}, base=tmp_path, source="t")
    assert config.handoff.formats == ("triton",) and config.section("handoff")["mode"] == "secondary"
    for section, message in (({"formats": ["tensorflow"]}, "deepstream, triton"), ({"mode": "tertiary"}, "mode"),
                             ({"formats": "triton"}, "list of strings"), ({"format": ["triton"]}, "unknown setting"),
                             ({"formats": ["deepstream"]}, "no \\[\\[targets\\]\\] is a Jetson")):
        with pytest.raises(BadInputError, match=message):
            parse_pipeline({"handoff": section}, base=tmp_path, source="t")
    jetson = parse_pipeline({"handoff": {"formats": ["deepstream"]},
                             "targets": [{"name": "jetson-orin-nano", "precisions": ["fp16"]}]}, base=tmp_path, source="t")
    assert jetson.handoff.formats == ("deepstream",)


def test_a_handoff_stage_writes_once_and_is_skipped_after(tmp_path: Path) -> None:
    config = parse_pipeline({"pipeline": {"workdir": "out"}, "handoff": {"formats": ["triton"]}}, base=tmp_path,
                            source="t")
    with Workspace(tmp_path / "ws") as ws:
        onnx = register_classifier(ws, tmp_path)
        built = build(ws, BuildConfig(onnx=onnx.id, target="x86-64-cpu"))
        first = PipelineRunner(ws, config)
        outputs = first._handoff(built.build, "x86-64-cpu", "fp32", "triton")
        repo = tmp_path / "out" / "handoff" / "x86-64-cpu-fp32" / "triton"
        assert outputs["out"] == str(repo) and (repo / "tiny-edgenet-onnx-x86-64-cpu" / "config.pbtxt").is_file()
        assert outputs["preprocessing"] == {"exact": True, "max_error": 0.0}
        assert not first.outcomes[-1].skipped
        again = PipelineRunner(ws, config)
        again._handoff(built.build, "x86-64-cpu", "fp32", "triton")
        assert again.outcomes[-1].skipped and again.outcomes[-1].stage == "handoff-x86-64-cpu-fp32-triton"

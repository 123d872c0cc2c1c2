"""What bench reads off an artifact before it feeds it."""

from __future__ import annotations

from pathlib import Path

from tests.onnx_fixtures import write_tiny_onnx
from toolchain.artifacts import register_file
from toolchain.bench.subject import resolve_subject
from toolchain.workspace import Workspace


def test_an_onnx_record_without_its_input_size_gets_it_from_the_graph_not_a_default(tmp_path: Path) -> None:
    """A quantized ONNX's record may lack ``input_size``; a 32-px model was fed 128-px frames (--pure crashed)."""
    with Workspace(tmp_path / "ws") as workspace:
        path = write_tiny_onnx(tmp_path / "t.onnx", size=32)
        register_file(workspace, path, name="t32", type="onnx-int8",
                      body={"format": "onnx", "input": "float-nchw", "metadata": {"classes": ["car", "truck"]}})
        subject = resolve_subject(workspace, "t32@v1")
    assert subject.input_size == 32 and subject.classes == ("car", "truck")

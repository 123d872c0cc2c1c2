"""A tiny registered ONNX built for x86-64-cpu (no training), and media files for camera tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.onnx_fixtures import register_tiny_onnx
from toolchain.workspace import Workspace


def tiny_build(workspace: Workspace, tmp: Path, *, name: str = "tiny-onnx") -> str:
    """Register the tiny ONNX and build it for x86-64-cpu here; the build record id."""
    from toolchain.build.service import BuildConfig, build

    onnx = register_tiny_onnx(workspace, tmp, name=name)
    return build(workspace, BuildConfig(onnx=onnx.id, target="x86-64-cpu", verify_images=4)).build


def unpackaged_image_record(workspace: Workspace, build_id: str) -> str:
    """The ``image`` record ``package`` would make for the tiny build (its image is never needed where no unit can
    be reached); its id."""
    from toolchain.registry import NewRecord

    build = workspace.registry.get(build_id)
    assert build is not None
    image, _, _ = workspace.registry.commit(NewRecord(kind="image", name="tiny-onnx-x86-64-cpu", body={
        "image_id": "sha256:" + "0" * 64, "tag": "toolchain/tiny-onnx:test", "target": "x86-64-cpu",
        "model": "tiny-onnx", "build": build_id, "artifact_sha256": build.body["blob"], "backend": "onnxruntime",
    }, links=((build_id, "build"),)))
    return image.id


def write_video(path: Path, *, frames: int = 20, fps: int = 10, size: tuple[int, int] = (96, 64),
                fmt: str | None = None, options: dict[str, str] | None = None) -> Path:
    """A short H.264 video of a bar moving across the frame (``fmt="mpegts"`` makes it streamable over HTTP;
    ``options`` go to libx264)."""
    import av

    width, height = size
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream("libx264", rate=fps, options=options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            image = np.full((height, width, 3), 40, np.uint8)
            x = (i * 7) % max(1, width - 16)
            image[:, x : x + 16] = (230, 200, 30)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def http_body(port: int, path: str) -> str:
    """The body ``GET http://127.0.0.1:PORT/PATH`` answers, whatever the status (/healthz says 503 until a camera
    delivers)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.read().decode()

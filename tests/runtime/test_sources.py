from pathlib import Path

import numpy as np
import pytest

from toolchain.errors import BadInputError, InputNotFoundError, UsageError
from toolchain.runtime.sources import ImageDirSource, PyAVSource, SyntheticSource, open_source
from toolchain.runtime.scene import SceneRenderer
from toolchain.synth.video import VideoConfig, write_video

av = pytest.importorskip("av")


def test_synthetic_video_is_h264_with_the_asked_size_rate_and_length(tmp_path: Path) -> None:
    out = write_video(tmp_path / "clip.mp4", VideoConfig(width=96, height=64, fps=10, seconds=2, seed=1))
    with av.open(str(tmp_path / "clip.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and float(stream.average_rate) == 10
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert out["frames"] == len(frames) == 20 and frames[0].shape == (64, 96, 3)
    # Vehicles move: somewhere in the clip pixels change by far more than the sensor noise.
    assert max(np.abs(f.astype(int) - frames[0].astype(int)).max() for f in frames[1:]) > 80
    assert not (tmp_path / ".clip.tmp.mp4").exists()


def test_scene_is_deterministic_and_has_vehicles() -> None:
    a, b = SceneRenderer(160, 96, 30, seed=4), SceneRenderer(160, 96, 30, seed=4)
    assert np.array_equal(a.frame(50), b.frame(50))
    assert any(lane for lane in a.vehicles) and {v.truck for lane in a.vehicles for v in lane} == {True, False}
    with pytest.raises(BadInputError):
        VideoConfig(width=101, height=64)


def test_pyav_source_reads_every_frame_and_loops(tmp_path: Path) -> None:
    path = tmp_path / "c.mp4"
    write_video(path, VideoConfig(width=64, height=48, fps=15, seconds=1))
    with PyAVSource(str(path)) as source:
        frames = []
        while (frame := source.read()) is not None:
            frames.append(frame)
        assert source.fps == 15 and len(frames) == 15 and frames[0].shape == (48, 64, 3)
    with PyAVSource(str(path), loop=True) as looping:
        assert sum(looping.read() is not None for _ in range(40)) == 40


def test_pyav_source_skips_frames_without_converting_them_and_ends_and_loops_alike(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """skip() moves past a frame (decoded, never converted to RGB): reads and skips together cover the clip's
    15 frames, in order; at the end skip() says False where read() says None; looping, both go on."""
    path = tmp_path / "c.mp4"
    write_video(path, VideoConfig(width=64, height=48, fps=15, seconds=1))
    with PyAVSource(str(path)) as reference:
        every = [reference.read() for _ in range(15)]
    converted = []
    original = PyAVSource._convert
    monkeypatch.setattr(PyAVSource, "_convert", lambda self, frame: converted.append(1) or original(self, frame))
    with PyAVSource(str(path)) as source:
        got = [source.read() if i % 2 == 0 else source.skip() for i in range(15)]
        assert all(g is True for g in got[1::2]) and len(converted) == 8
        assert all(np.array_equal(g, every[i]) for i, g in enumerate(got) if i % 2 == 0)  # the right frames
        assert source.skip() is False and source.read() is None
    with PyAVSource(str(path), loop=True) as looping:
        assert all(looping.skip() for _ in range(40)) and looping.read() is not None


def test_image_directory_source_in_name_order(tmp_path: Path) -> None:
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.full((10, 12, 3), 60 * i, np.uint8)).save(tmp_path / f"{i:03d}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    source = open_source(str(tmp_path), fps=5)
    assert isinstance(source, ImageDirSource) and source.fps == 5
    with source:
        values = [int(source.read().mean()) for _ in range(3)]
        assert values == [0, 60, 120] and source.read() is None


def test_open_source_parses_specs_and_refuses_what_is_not_there(tmp_path: Path) -> None:
    s = open_source("synthetic:320x240@15", index=2)
    assert isinstance(s, SyntheticSource) and (s.width, s.height, s.fps, s.seed) == (320, 240, 15.0, 2)
    with s:
        assert s.read().shape == (240, 320, 3)
    assert SyntheticSource(frames=1, width=64, height=32).fps == 30
    with pytest.raises(UsageError):
        open_source(str(tmp_path / "nope.mp4"))
    with pytest.raises(InputNotFoundError, match="camera"):
        open_source("/dev/video99")
    assert open_source("rtsp://127.0.0.1:1/x").live
    (tmp_path / "bad.mp4").write_text("not a video")
    with pytest.raises(BadInputError):
        PyAVSource(str(tmp_path / "bad.mp4")).open()

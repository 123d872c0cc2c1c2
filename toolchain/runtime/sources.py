"""Frame sources: where a stream's frames come from.

* :class:`PyAVSource`: video files and network streams (``rtsp://``, ``http(s)://``...) through PyAV
  (FFmpeg), and camera devices (``/dev/video0`` through FFmpeg's ``v4l2`` input on Linux).
* :class:`ImageDirSource`: a directory of images, played in name order at a given fps.
* :class:`SyntheticSource`: the road scene of :mod:`toolchain.runtime.scene` rendered in memory (no
  decoder: used where PyAV is missing, e.g. a GPU box, and for controlled tests).

A source yields RGB uint8 (H, W, 3) frames; :meth:`FrameSource.read` returns None at the end of the
stream. ``live`` sources (cameras, network streams) deliver frames on their own clock; the
pipeline paces the others at their ``fps`` when asked for real time.
"""

from __future__ import annotations

import abc
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.errors import (
    BadInputError,
    InputNotFoundError,
    MissingEnvironmentError,
    UsageError,
)
from toolchain.redaction import redact_url, scrub

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
NETWORK_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
_NAMED_SOURCE = re.compile(r"^([A-Za-z][A-Za-z0-9_.-]{0,63})=(.+)$")
_SYNTHETIC_RE = re.compile(r"^synthetic(?::(\d+)x(\d+))?(?:@(\d+(?:\.\d+)?))?(?::(\d+))?$")


class StreamError(RuntimeError):
    """A stream broke while running (decode error, connection lost); reported, not fatal for other streams."""


class FrameSource(abc.ABC):
    """One stream of frames."""

    def __init__(self, name: str, *, fps: float, live: bool = False, loop: bool = False) -> None:
        self.name = name
        self.fps = fps
        self.live = live
        self.loop = loop
        self.output_size: tuple[int, int] | None = None

    def request_size(self, width: int, height: int) -> None:
        """Deliver frames already resized to ``width`` x ``height`` if this source can do it cheaper than the
        preprocessor (a decoder scaling as it converts colours); sources that cannot keep full frames."""
        self.output_size = (int(width), int(height))

    @abc.abstractmethod
    def open(self) -> None:
        """Connect / open the stream (may raise InputNotFoundError, MissingEnvironmentError)."""

    @abc.abstractmethod
    def read(self) -> np.ndarray | None:
        """The next frame (RGB uint8 HxWx3, decoded), or None when the stream has ended."""

    def skip(self) -> bool:
        """Move past the next frame without converting it to an image (a frame nobody will look at); False at
        the end of the stream, where :meth:`read` would return None. By default it reads and drops one."""
        return self.read() is not None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the decoder / connection."""

    def __enter__(self) -> FrameSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _av() -> Any:
    try:
        import av
    except ImportError as exc:
        raise MissingEnvironmentError(
            "PyAV is not installed, so video files, cameras and network streams cannot be decoded: pip install av "
            "(or use --source synthetic)"
        ) from exc
    return av


def _refused(av: Any) -> tuple[type[BaseException], ...]:
    """FFmpeg's errors for a server that refused the client's credentials (RTSP/HTTP 401 and 403)."""
    return tuple(getattr(av.error, name) for name in ("HTTPUnauthorizedError", "HTTPForbiddenError")
                 if hasattr(av.error, name))


class PyAVSource(FrameSource):
    """A video file, network stream or camera device decoded with PyAV.

    The URL (which may carry a camera's credentials) is kept only to open the stream: the source's
    ``name`` and every message use the redacted form.

    Args:
        uri: File path, URL, or camera device.
        fmt: FFmpeg input format (``v4l2`` for Linux cameras); None lets FFmpeg guess.
        loop: Start again at the end of a file (ignored for live sources).
        timeout_s: Network open/read timeout; a stream silent for longer is reported as stalled.
        threads: Decoder threads (1 keeps latency lowest: frame threading delays every frame).
    """

    def __init__(self, uri: str, *, fmt: str | None = None, loop: bool = False, timeout_s: float = 10.0,
                 threads: int = 1) -> None:
        live = uri.startswith(NETWORK_SCHEMES) or fmt in ("v4l2", "avfoundation", "dshow")
        super().__init__(redact_url(uri), fps=0.0, live=live, loop=loop and not live)
        self._uri, self.fmt, self.timeout_s, self.threads = uri, fmt, timeout_s, threads
        self._container: Any = None
        self._stream: Any = None
        self._frames: Any = None
        self._reformatter: Any = None
        self.arrival = 0.0

    def open(self) -> None:
        av = _av()
        if not self.live and not Path(self._uri).exists():
            raise InputNotFoundError(f"video {self.name} does not exist; pass a file, a URL, a camera or an image directory")
        options = {"rtsp_transport": "tcp"} if self._uri.startswith(("rtsp://", "rtsps://")) else {}
        try:
            self._container = av.open(self._uri, format=self.fmt, options=options,
                                      timeout=(self.timeout_s, self.timeout_s) if self.live else None)
        except (av.error.FileNotFoundError, av.error.OSError) as exc:
            # FFmpeg's message quotes the URL it was given, credentials included: scrub it.
            raise InputNotFoundError(f"cannot open {self.name}: {scrub(exc)}") from None
        except _refused(av) as exc:
            raise BadInputError(
                f"{self.name} refused the connection ({scrub(exc)}): the camera wants a username and password, and "
                "they are missing or wrong. Name the camera (--source NAME=URL, no credentials in the URL) and put them "
                "under that NAME in the --credentials FILE"
            ) from None
        except av.error.FFmpegError as exc:
            raise BadInputError(f"FFmpeg cannot read {self.name}: {scrub(exc)}; is it a video file or stream?") from None
        if not self._container.streams.video:
            self._container.close()
            raise BadInputError(f"{self.name} has no video stream")
        self._stream = self._container.streams.video[0]
        if self._stream.codec_context is None:  # FFmpeg found the stream but has no decoder for its codec
            codec = getattr(getattr(self._stream, "codec", None), "name", "") or "its codec"
            self._container.close()
            raise BadInputError(f"{self.name}: this FFmpeg cannot decode {codec}; set the camera to H.264 or H.265")
        self._stream.thread_count = self.threads
        rate = self._stream.average_rate or self._stream.guessed_rate or self._stream.base_rate
        self.fps = float(rate) if rate else 25.0
        self._frames = self._decode()

    def _decode(self) -> Any:
        # demux, then decode: ``arrival`` is when the frame's data came in, so a live stream's wait for the
        # network is not counted as decoding.
        for packet in self._container.demux(self._stream):
            self.arrival = time.perf_counter()
            yield from packet.decode()

    def read(self) -> np.ndarray | None:
        frame = self._next_frame()
        return None if frame is None else self._convert(frame)

    def skip(self) -> bool:
        """Decode the next frame (the stream moves on) without converting it to RGB."""
        return self._next_frame() is not None

    def _next_frame(self) -> Any:
        """The next decoded ``av.VideoFrame`` (looping where asked), or None at the end."""
        av = _av()
        while True:
            try:
                return next(self._frames)
            except StopIteration:
                if not self.loop:
                    return None
                self._container.seek(0)
                self._frames = self._decode()
            except av.error.FFmpegError as exc:
                raise StreamError(f"{self.name}: {scrub(exc)}") from None

    def _convert(self, frame: Any) -> np.ndarray:
        av = _av()
        try:
            if self._reformatter is None:
                # One per stream: ``frame.to_ndarray(...)`` makes a new one (a new SwsContext, filters built
                # again) for every frame, which cost more than the scaling itself (BENCHMARKS.md).
                self._reformatter = av.video.reformatter.VideoReformatter()
            if self.output_size is not None:
                # libswscale converts YUV to RGB and shrinks in one pass, straight to the model's input:
                # its bilinear filter widens with the downscale like the preprocessor's antialiased one
                # (agreement measured in tests/runtime/test_scaled_decode.py and BENCHMARKS.md).
                width, height = self.output_size
                return self._reformatter.reformat(frame, width=width, height=height, format="rgb24",
                                                  interpolation="BILINEAR").to_ndarray()
            return self._reformatter.reformat(frame, format="rgb24").to_ndarray()
        except av.error.FFmpegError as exc:
            raise StreamError(f"{self.name}: {scrub(exc)}") from None

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


class ImageDirSource(FrameSource):
    """The images of a directory in name order, decoded with PyAV (no Pillow on the roadside image)."""

    def __init__(self, path: Path, *, fps: float = 15.0, loop: bool = False) -> None:
        super().__init__(str(path), fps=fps, loop=loop)
        self.path = Path(path)
        self._files: list[Path] = []
        self._next = 0

    def open(self) -> None:
        _av()
        if not self.path.is_dir():
            raise InputNotFoundError(f"image directory {self.path} does not exist")
        self._files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self._files:
            raise BadInputError(f"{self.path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        self._next = 0

    def read(self) -> np.ndarray | None:
        av = _av()
        if self._next >= len(self._files):
            if not self.loop:
                return None
            self._next = 0
        path = self._files[self._next]
        self._next += 1
        try:
            with av.open(str(path)) as container:
                frame = next(container.decode(video=0))
                return frame.to_ndarray(format="rgb24")
        except (av.error.FFmpegError, StopIteration) as exc:
            raise StreamError(f"{path.name} is not a readable image: {exc}") from exc


class SyntheticSource(FrameSource):
    """Frames rendered in memory by :class:`toolchain.runtime.scene.SceneRenderer` (the "decode" is the render).

    Args:
        width, height, fps: Frame size and rate.
        frames: Frames before the stream ends (None: endless).
        seed: Scene seed; several streams get different seeds.
    """

    def __init__(self, *, width: int = 640, height: int = 352, fps: float = 30.0, frames: int | None = None,
                 seed: int = 0) -> None:
        super().__init__(f"synthetic:{width}x{height}@{fps:g}:{seed}", fps=fps)
        self.width, self.height, self.frames, self.seed = width, height, frames, seed
        self._renderer: Any = None
        self._next = 0

    def open(self) -> None:
        from toolchain.runtime.scene import SceneRenderer

        self._renderer = SceneRenderer(self.width, self.height, self.fps, seed=self.seed)
        self._next = 0

    def read(self) -> np.ndarray | None:
        if self.frames is not None and self._next >= self.frames:
            return None
        frame = self._renderer.frame(self._next)
        self._next += 1
        return frame


def camera_name(spec: str, index: int) -> tuple[str, str]:
    """``(name, url)`` of a ``--source`` (or a fleet camera): ``NAME=URL`` names it, else the URL, redacted, is
    the name (``serve``, ``deploy`` and the fleet file read camera entries through this one parser)."""
    match = _NAMED_SOURCE.match(spec)
    if match and "://" not in match.group(1) and not spec.startswith(("/", ".")):
        return match.group(1), match.group(2)
    return redact_url(spec), spec


def open_source(spec: str, *, index: int = 0, fps: float | None = None, loop: bool = False) -> FrameSource:
    """A source from what the user typed.

    Args:
        spec: ``synthetic[:WxH][@FPS][:SEED]``, a camera device (``/dev/video0``, ``v4l2:/dev/video0``),
            a network URL, a directory of images, or a video file.
        index: The stream number (gives synthetic streams distinct seeds).
        fps: Frame rate for image directories (and an override for synthetic streams).
        loop: Replay files and directories from the start when they end.
    """
    match = _SYNTHETIC_RE.match(spec)
    if match:
        w, h, rate, seed = match.groups()
        return SyntheticSource(width=int(w or 640), height=int(h or 352), fps=float(rate or fps or 30.0),
                               seed=int(seed or 0) + index)
    if spec.startswith("v4l2:") or (spec.startswith("/dev/video") and os.name == "posix"):
        device = spec.removeprefix("v4l2:")
        if not Path(device).exists():
            raise InputNotFoundError(f"camera {device} does not exist on this machine (no such device)")
        return PyAVSource(device, fmt="v4l2")
    if spec.startswith(NETWORK_SCHEMES):
        return PyAVSource(spec)
    path = Path(spec)
    if path.is_dir():
        return ImageDirSource(path, fps=fps or 15.0, loop=loop)
    if path.is_file():
        return PyAVSource(spec, loop=loop)
    raise UsageError(
        f"--source {redact_url(spec)!r} is not a file, directory, URL, camera or synthetic[:WxH][@FPS]; check the path"
    )

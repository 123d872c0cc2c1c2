"""Synthetic CCTV clips: cars and trucks driving along a road, seen from a roadside camera.

The scene is drawn in numpy only (no Pillow), so the same renderer feeds both
``toolchain synth video`` (H.264 via PyAV/libx264) and the in-memory synthetic frame source used
on machines without PyAV. Everything is a function of ``(seed, frame index)``: the same config gives
the same pixels.

A frame: verge and asphalt with lane markings (dashes move nowhere; vehicles move), 2 to 4 lanes
in both directions, vehicles with per-lane speeds: cars (short, low, saloon colours, windscreen) and
trucks (long trailer, cab, wheels), each with a soft shadow; mild sensor noise from a fixed tile set.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolchain.errors import BadInputError, MissingEnvironmentError
from toolchain.runtime.compat import frozen_config

_CAR_COLOURS = np.array([[200, 200, 205], [30, 30, 35], [150, 20, 25], [20, 50, 120], [120, 125, 130],
                         [230, 230, 225], [40, 90, 50], [180, 150, 60]], dtype=np.float32)
_TRUCK_COLOURS = np.array([[235, 235, 235], [200, 40, 30], [30, 70, 150], [90, 95, 100], [220, 170, 30],
                           [60, 60, 60]], dtype=np.float32)


@frozen_config
class VideoConfig:
    """What clip to make.

    Attributes:
        width: Frame width in pixels (even: H.264 4:2:0).
        height: Frame height in pixels (even).
        fps: Frames per second.
        seconds: Clip length.
        seed: Same seed, same pixels.
        crf: x264 constant rate factor (lower: larger, closer to the rendered frames).
    """

    width: int = 640
    height: int = 352
    fps: float = 30.0
    seconds: float = 10.0
    seed: int = 0
    crf: int = 23

    def __post_init__(self) -> None:
        if self.width < 32 or self.height < 32 or self.width % 2 or self.height % 2:
            raise BadInputError(f"--size {self.width}x{self.height}: both sides must be even and at least 32 (H.264 4:2:0)")
        if not 1 <= self.fps <= 240:
            raise BadInputError(f"--fps {self.fps} is out of range; use 1 to 240")
        if not 0 < self.seconds <= 3600:
            raise BadInputError(f"--seconds {self.seconds} is out of range; use more than 0 and at most 3600")

    @property
    def frames(self) -> int:
        return max(1, int(round(self.seconds * self.fps)))


@dataclass(frozen=True)
class _Vehicle:
    lane: int
    start: float  # seconds when its front enters the frame
    speed: float  # pixels per second (sign: direction)
    length: int
    depth: int  # height on screen
    truck: bool
    colour: tuple[float, float, float]


class SceneRenderer:
    """Renders frame ``i`` of a road scene; cheap enough (about 1 ms at 640x352) for a live source."""

    def __init__(self, width: int, height: int, fps: float, *, seed: int = 0) -> None:
        self.width, self.height, self.fps, self.seed = width, height, fps, seed
        rng = np.random.default_rng([seed, 0x56494445])
        self.lanes = int(rng.integers(2, 5)) * 2
        top, bottom = int(height * 0.28), int(height * 0.92)
        self.lane_edges = np.linspace(top, bottom, self.lanes + 1).astype(int)
        self.background = self._background(rng, top, bottom)
        self.noise = [rng.normal(0, 3.0, (height, width, 1)).astype(np.float32) for _ in range(4)]
        self.vehicles = self._schedule(rng)

    def _background(self, rng: np.random.Generator, top: int, bottom: int) -> np.ndarray:
        h, w = self.height, self.width
        bg = np.empty((h, w, 3), np.float32)
        grass = np.array([70, 105, 55], np.float32) * rng.uniform(0.8, 1.2)
        bg[:] = grass
        bg[: int(top * 0.5)] = np.array([150, 170, 190], np.float32)  # sky / far field
        asphalt = np.array([92, 92, 96], np.float32) * rng.uniform(0.85, 1.15)
        bg[top:bottom] = asphalt
        bg[top:bottom] += rng.normal(0, 4, (bottom - top, w, 1)).astype(np.float32)
        for k, y in enumerate(self.lane_edges):
            solid = k in (0, self.lanes, self.lanes // 2)
            for x in range(0, w, 1 if solid else 40):
                bg[max(0, y - 1) : y + 1, x : x + (1 if solid else 22)] = 225
        return bg

    def _schedule(self, rng: np.random.Generator) -> list[list[_Vehicle]]:
        """Vehicles per lane, in order of entry, for ~10 minutes (the schedule then repeats)."""
        lanes: list[list[_Vehicle]] = []
        for lane in range(self.lanes):
            direction = 1 if lane >= self.lanes // 2 else -1
            lane_h = self.lane_edges[lane + 1] - self.lane_edges[lane]
            speed = direction * self.width * rng.uniform(0.25, 0.5)
            t, items = rng.uniform(0, 2), []
            while t < 600:
                truck = bool(rng.random() < 0.4)
                length = int(lane_h * (rng.uniform(3.5, 5.5) if truck else rng.uniform(1.6, 2.3)))
                depth = int(lane_h * (0.8 if truck else 0.65))
                palette = _TRUCK_COLOURS if truck else _CAR_COLOURS
                colour = tuple(float(c) for c in palette[rng.integers(len(palette))])
                items.append(_Vehicle(lane, t, speed, length, depth, truck, colour))  # type: ignore[arg-type]
                t += (length + lane_h * rng.uniform(1.5, 8)) / abs(speed)
            lanes.append(items)
        return lanes

    def frame(self, index: int) -> np.ndarray:
        """The RGB uint8 (H, W, 3) frame ``index``."""
        t = (index / self.fps) % 600
        img = self.background.copy()
        for lane in self.vehicles:
            for v in lane:
                travelled = (t - v.start) * abs(v.speed)
                if travelled < 0:
                    break
                if travelled > self.width + v.length:
                    continue
                front = int(travelled) if v.speed > 0 else self.width - int(travelled)
                x0, x1 = (front - v.length, front) if v.speed > 0 else (front, front + v.length)
                self._draw(img, v, x0, x1)
        img += self.noise[index % len(self.noise)]
        return np.clip(img, 0, 255).astype(np.uint8)

    def _draw(self, img: np.ndarray, v: _Vehicle, x0: int, x1: int) -> None:
        w = self.width
        top, bottom = self.lane_edges[v.lane], self.lane_edges[v.lane + 1]
        y1 = bottom - max(1, (bottom - top - v.depth) // 2)
        y0 = y1 - v.depth
        c0, c1 = max(0, x0), min(w, x1)
        if c0 >= c1:
            return
        img[y1 : min(self.height, y1 + max(2, v.depth // 5)), max(0, x0 + 4) : min(w, x1 + 4)] *= 0.55  # shadow
        colour = np.asarray(v.colour, np.float32)
        img[y0:y1, c0:c1] = colour
        forward = v.speed > 0
        if v.truck:
            cab = max(4, v.length // 5)
            cx0, cx1 = (x1 - cab, x1) if forward else (x0, x0 + cab)
            gap = 2 if forward else -2
            cx0, cx1 = max(0, cx0 + gap), min(w, cx1 + gap)
            if cx0 < cx1:
                img[y0 + v.depth // 5 : y1, cx0:cx1] = colour * 0.6 + 40
                img[y0 + v.depth // 5 : y0 + v.depth // 2, cx0:cx1] = (60, 80, 95)  # cab window
            img[y0 : y0 + 2, c0:c1] *= 1.2  # roof edge highlight
            wheel_y = slice(max(0, y1 - 3), y1)
            for wx in np.linspace(x0 + 6, x1 - 6, 4 if v.length > 60 else 3).astype(int):
                if 0 <= wx < w:
                    img[wheel_y, max(0, wx - 3) : min(w, wx + 3)] = 15
        else:
            glass = (x0 + v.length // 4, x0 + v.length * 3 // 4)
            g0, g1 = max(0, glass[0]), min(w, glass[1])
            if g0 < g1:
                img[y0 + 1 : y0 + max(2, v.depth // 2), g0:g1] = (50, 65, 80)
            light = x1 - 2 if forward else x0
            if 0 <= light < w - 2:
                img[y0 + v.depth // 2 : y1 - 1, light : light + 2] = (250, 240, 200)


def write_video(out: Path, config: VideoConfig, progress=None) -> dict[str, object]:  # noqa: ANN001
    """Render and encode a clip as H.264 (libx264, yuv420p) into ``out`` (.mp4, .mkv, .avi...).

    Written to a temporary name next to ``out`` and renamed, so a reader never sees half a file.

    Returns:
        ``out``, frames, size and seconds taken.
    """
    try:
        import av
    except ImportError as exc:
        raise MissingEnvironmentError("PyAV is not installed: pip install av") from exc
    if "libx264" not in av.codecs_available:
        raise MissingEnvironmentError("this PyAV build has no libx264 encoder; install PyAV wheels from PyPI (they bundle it)")
    started = time.perf_counter()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    renderer = SceneRenderer(config.width, config.height, config.fps, seed=config.seed)
    from fractions import Fraction

    rate = Fraction(config.fps).limit_denominator(1001)
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = config.width, config.height, "yuv420p"
        stream.options = {"crf": str(config.crf), "preset": "veryfast", "g": str(max(1, int(math.ceil(config.fps))))}
        for i in range(config.frames):
            frame = av.VideoFrame.from_ndarray(renderer.frame(i), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
            if progress is not None:
                progress(1)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(out)
    return {"out": str(out), "frames": config.frames, "fps": config.fps, "width": config.width,
            "height": config.height, "bytes": out.stat().st_size, "seconds": time.perf_counter() - started}

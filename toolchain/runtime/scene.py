"""A synthetic road scene seen from a roadside camera, rendered frame by frame in numpy.

The unit's ``synthetic[:WxH][@FPS][:SEED]`` camera (:class:`toolchain.runtime.sources.SyntheticSource`)
draws its frames here, and ``toolchain synth video`` (:mod:`toolchain.synth.video`) encodes the same frames
to H.264 and derives the exact line crossings from :meth:`SceneRenderer.boxes`. It lives in the runtime
(which the roadside image ships) so that the runtime never imports the workstation's ``synth`` tools.

A frame: verge and asphalt with lane markings (dashes move nowhere; vehicles move), 2 to 4 lanes
in both directions, vehicles with per-lane speeds: cars (short, low, saloon colours, windscreen) and
trucks (long trailer, cab, wheels), each with a soft shadow; mild sensor noise from a fixed tile set.
Everything is a function of ``(seed, frame index)``: the same arguments give the same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

import numpy as np

from toolchain.runtime.geometry import Box

SCHEDULE_S = 600.0
"""The vehicle schedule covers this many seconds, then repeats (a longer clip starts it over: vehicles
on screen at the wrap vanish, and the schedule's first ones enter again)."""

_CAR_COLOURS = np.array([[200, 200, 205], [30, 30, 35], [150, 20, 25], [20, 50, 120], [120, 125, 130],
                         [230, 230, 225], [40, 90, 50], [180, 150, 60]], dtype=np.float32)
# No truck the colour of the asphalt (about 92, 92, 96) or of a shadow on it: motion finding cannot see those
# (a real limit of background subtraction, said in the README), and a clip that counts must show every vehicle.
_TRUCK_COLOURS = np.array([[235, 235, 235], [200, 40, 30], [30, 70, 150], [150, 90, 40], [220, 170, 30],
                           [20, 100, 60]], dtype=np.float32)


@dataclass(frozen=True)
class Vehicle:
    lane: int
    start: float  # seconds when its front enters the frame
    speed: float  # pixels per second (sign: direction)
    length: int
    depth: int  # height on screen
    truck: bool
    colour: tuple[float, float, float]
    id: int = 0  # unique in the schedule (lane-major order of entry); a truth row's track adds the period

    @property
    def cls(self) -> str:
        return "truck" if self.truck else "car"


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

    def _schedule(self, rng: np.random.Generator) -> list[list[Vehicle]]:
        """Vehicles per lane, in order of entry, for ~10 minutes (the schedule then repeats)."""
        lanes: list[list[Vehicle]] = []
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
                items.append(Vehicle(lane, t, speed, length, depth, truck, colour))  # type: ignore[arg-type]
                t += (length + lane_h * rng.uniform(1.5, 8)) / abs(speed)
            lanes.append(items)
        # Ids after the draws, so that adding them changed no seed's pixels.
        ids = iter(range(sum(len(items) for items in lanes)))
        return [[Vehicle(v.lane, v.start, v.speed, v.length, v.depth, v.truck, v.colour, next(ids)) for v in items]
                for items in lanes]

    @property
    def vehicle_count(self) -> int:
        """Vehicles in one schedule period (ids run from 0 to this, exclusive)."""
        return sum(len(lane) for lane in self.vehicles)

    # Placement: the one place that says where a vehicle is. frame() draws from it, boxes() and
    # crossing_truth() read it, so the truth can never disagree with the pixels.

    def time_of(self, index: int) -> float:
        """Schedule time (seconds, ``[0, SCHEDULE_S)``) of frame ``index``."""
        return (index / self.fps) % SCHEDULE_S

    def _span(self, v: Vehicle, t: float) -> Optional[Tuple[int, int]]:
        """The vehicle body's columns ``[x0, x1)`` at schedule time ``t`` (may reach past the frame edges),
        or None when it is not on the road then."""
        travelled = (t - v.start) * abs(v.speed)
        if travelled < 0 or travelled > self.width + v.length:
            return None
        front = int(travelled) if v.speed > 0 else self.width - int(travelled)
        return (front - v.length, front) if v.speed > 0 else (front, front + v.length)

    def _placements(self, t: float) -> Iterator[Tuple[Vehicle, int, int]]:
        for lane in self.vehicles:
            for v in lane:
                if t < v.start:
                    break  # a lane is in order of entry: the rest have not entered yet
                span = self._span(v, t)
                if span is not None:
                    yield v, span[0], span[1]

    def _rows(self, v: Vehicle) -> Tuple[int, int]:
        """The vehicle's rows ``[y0, y1)``: centred in its lane."""
        top, bottom = self.lane_edges[v.lane], self.lane_edges[v.lane + 1]
        y1 = int(bottom - max(1, (bottom - top - v.depth) // 2))
        return y1 - v.depth, y1

    def _cab(self, v: Vehicle, x0: int, x1: int) -> Tuple[int, int]:
        """A truck cab's columns, clipped to the frame (empty when ``cx0 >= cx1``): it overhangs the body's
        front by 2 pixels."""
        cab = max(4, v.length // 5)
        forward = v.speed > 0
        cx0, cx1 = (x1 - cab, x1) if forward else (x0, x0 + cab)
        gap = 2 if forward else -2
        return max(0, cx0 + gap), min(self.width, cx1 + gap)

    def visible_box(self, v: Vehicle, x0: int, x1: int) -> Optional[Box]:
        """The box of the vehicle's pixels inside the frame (body and a truck's cab, not the shadow), or
        None when none of it is drawn. A vehicle cut by the frame edge has the box of its visible part."""
        c0, c1 = max(0, x0), min(self.width, x1)
        if c0 >= c1:
            return None  # _draw draws nothing, the cab included
        if v.truck:
            cx0, cx1 = self._cab(v, x0, x1)
            if cx0 < cx1:
                c0, c1 = min(c0, cx0), max(c1, cx1)
        y0, y1 = self._rows(v)
        return Box(x1=float(c0), y1=float(y0), x2=float(c1), y2=float(y1))

    def boxes(self, index: int) -> list[tuple[Vehicle, Box]]:
        """Every vehicle drawn in frame ``index`` with the box of its visible pixels (pixel columns
        ``[x1, x2)``, rows ``[y1, y2)``), in drawing order."""
        found = []
        for v, x0, x1 in self._placements(self.time_of(index)):
            box = self.visible_box(v, x0, x1)
            if box is not None:
                found.append((v, box))
        return found

    def frame(self, index: int) -> np.ndarray:
        """The RGB uint8 (H, W, 3) frame ``index``."""
        img = self.background.copy()
        for v, x0, x1 in self._placements(self.time_of(index)):
            self._draw(img, v, x0, x1)
        img += self.noise[index % len(self.noise)]
        return np.clip(img, 0, 255).astype(np.uint8)

    def _draw(self, img: np.ndarray, v: Vehicle, x0: int, x1: int) -> None:
        w = self.width
        y0, y1 = self._rows(v)
        c0, c1 = max(0, x0), min(w, x1)
        if c0 >= c1:
            return
        img[y1 : min(self.height, y1 + max(2, v.depth // 5)), max(0, x0 + 4) : min(w, x1 + 4)] *= 0.55  # shadow
        colour = np.asarray(v.colour, np.float32)
        img[y0:y1, c0:c1] = colour
        forward = v.speed > 0
        if v.truck:
            cx0, cx1 = self._cab(v, x0, x1)
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

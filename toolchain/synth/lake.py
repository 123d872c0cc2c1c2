"""Synthetic data lake: labelled CCTV crops of cars and trucks, for tests, demos and benchmarks.

A lake is an ImageFolder plus a manifest::

    OUT/car/cam03_seq000123_f2.jpg
    OUT/truck/cam07_seq000124_f0.jpg
    OUT/car/bad_00001_truncated.jpg        (only with ``corrupt > 0``)
    OUT/manifest.csv                       path,label,camera,sequence (written last, atomically)

Each image is a crop around one vehicle seen from a roadside camera looking down at the road:
per-camera asphalt, lane markings, viewing elevation, sun and exposure; a vehicle built from
projected boxes (cars, hatchbacks, SUVs, vans and pickups versus rigid box trucks, semi-trailers,
tippers, tankers and flatbeds) with overlapping colours, lengths and aspect ratios; shadows,
occluders (poles, signs, foliage, other vehicles), day/dusk/night lighting, blur, sensor noise and
JPEG compression. Vehicles come in sequences of 3 to 6 near-duplicate frames from one camera, as a
tracker would crop them. About 3% of sequences are deliberately hard (heavy occlusion, mostly out
of frame, extreme darkness or blur), so a classifier cannot reach 100%.

Corrupt files (truncated JPEG, zero bytes, text, decompression bomb, 8x8 image) sit in the class
folders and the manifest like real bad uploads; their ``camera`` and ``sequence`` cells are empty.

Output is byte-identical for the same config whatever ``workers`` is: every sequence draws from its
own generator seeded with ``(seed, sequence index)`` and everything shared (camera styles, road
textures, noise tiles) is derived from the seed alone.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.errors import BadInputError, missing_extra
from toolchain.fileio import atomic_output
from toolchain.parallel import default_workers, worker_context

try:  # Pillow is in the [data] extra; the roadside install does not have it.
    from PIL import Image, ImageChops, ImageDraw, ImageFilter

    _PIL_ERROR: ImportError | None = None
except ImportError as _exc:  # pragma: no cover - exercised only without the extra
    _PIL_ERROR = _exc

__all__ = ["CLASSES", "CORRUPT_KINDS", "MANIFEST_NAME", "LakeConfig", "LakeReport", "generate_lake"]

CLASSES: tuple[str, ...] = ("car", "truck")
"""Class folder names, in label order."""

CORRUPT_KINDS: tuple[str, ...] = ("truncated", "zero", "text", "bomb", "tiny")
"""Kinds of bad file, cycled through in this order; the kind is part of the file name."""

MANIFEST_NAME = "manifest.csv"
MANIFEST_HEADER: tuple[str, ...] = ("path", "label", "camera", "sequence")

CAR_FRACTION = 0.55
"""Probability that a sequence shows a car (the rest are trucks)."""

HARD_FRACTION = 0.03
"""Probability that a sequence is intrinsically ambiguous (occluded, out of frame, dark, blurred)."""

BOMB_SIDE = 40000
"""Width and height the decompression-bomb files claim (1.6e9 pixels)."""

# Domain tags so the seed sequences of sequences, cameras, noise and the plan never coincide.
_TAG_PLAN = 0x504C414E
_TAG_CAMERA = 0x43414D
_TAG_TEXTURE = 0x544558
_TAG_NOISE = 0x4E4F4953
_TAG_CORRUPT = 0x42414400

_TEX = 1024  # side of a camera's ground texture, pixels
_PPM = 10.0  # ground texture pixels per metre
_NOISE_SIGMAS = (2.0, 4.0, 7.0, 11.0, 17.0)
_MAX_SIDE = 2048

# A planned sequence: (index, label, camera, frames, hard).
_Seq = tuple[int, str, int, int, bool]
# A manifest row: (path, label, camera, sequence).
_Row = tuple[str, str, str, str]


@dataclass(frozen=True, kw_only=True)
class LakeConfig:
    """What lake to generate.

    Attributes:
        images: Number of valid images, in total across classes.
        seed: Seed; the same config gives byte-identical files.
        corrupt: Number of extra bad files (cycling through :data:`CORRUPT_KINDS`).
        cameras: Number of distinct cameras (styles of road, viewpoint and exposure).
        workers: Worker processes; 0 means one per available CPU. Does not change the output.
        min_size: Smallest output image side, pixels.
        max_size: Largest output image side, pixels.
    """

    images: int
    seed: int = 0
    corrupt: int = 0
    cameras: int = 12
    workers: int = 0
    min_size: int = 64
    max_size: int = 320

    def __post_init__(self) -> None:
        _validate(self)


@dataclass(frozen=True, kw_only=True)
class LakeReport:
    """What :func:`generate_lake` wrote.

    Attributes:
        out: The lake directory.
        images: Valid images written.
        corrupt: Bad files written.
        per_class: Valid images per class folder.
        sequences: Number of vehicle sequences (tracks).
        cameras: Number of distinct cameras that appear in the lake.
        seconds: Wall-clock time taken.
    """

    out: Path
    images: int
    corrupt: int
    per_class: dict[str, int]
    sequences: int
    cameras: int
    seconds: float


def _validate(config: LakeConfig) -> None:
    def integer(name: str, low: int, high: int | None = None) -> int:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise BadInputError(f"lake {name} must be an integer, got {value!r}")
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise BadInputError(f"lake {name} must be {bound}, got {value}; pass a value in range")
        return int(value)

    integer("images", 1)
    integer("seed", 0)
    integer("corrupt", 0)
    integer("cameras", 1, 99)
    integer("workers", 0)
    low = integer("min_size", 16, _MAX_SIDE)
    high = integer("max_size", 16, _MAX_SIDE)
    if low > high:
        raise BadInputError(f"lake min_size ({low}) is larger than max_size ({high}); swap them or widen the range")


# ----------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------


def generate_lake(out: Path, config: LakeConfig, progress: Callable[[int], None] | None = None) -> LakeReport:
    """Generate a synthetic lake of labelled CCTV vehicle crops into an empty directory.

    Args:
        out: Directory to create (or an existing empty one).
        config: What to generate.
        progress: Called in this process with the number of images just completed.

    Rendering runs in ``config.workers`` worker processes (see :func:`toolchain.parallel.worker_context`).

    Returns:
        Counts of what was written and how long it took.

    Raises:
        BadInputError: The config is invalid, or ``out`` is a file or a non-empty directory.
        MissingEnvironmentError: Pillow is not installed.
    """
    started = time.perf_counter()
    _validate(config)
    if _PIL_ERROR is not None:
        raise missing_extra("PIL", "data")
    out = Path(out)
    _prepare_out(out)

    plan = _plan(config)
    for label in CLASSES:
        (out / label).mkdir(exist_ok=True)

    params = (config.seed, config.min_size, config.max_size)
    chunks = _chunks(plan, config)
    rows_by_sequence: dict[int, list[_Row]] = {}

    def collect(done: list[tuple[int, list[_Row]]]) -> None:
        rows_by_sequence.update(done)
        if progress is not None:
            progress(sum(len(rows) for _, rows in done))

    workers = min(config.workers or default_workers(), len(chunks))
    if workers <= 1:
        for chunk in chunks:
            collect(_render_chunk(str(out), params, chunk))
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=worker_context()) as pool:
            pending = {pool.submit(_render_chunk, str(out), params, chunk) for chunk in chunks}
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        collect(future.result())
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise

    rows = [row for seq in plan for row in rows_by_sequence[seq[0]]]
    per_class = {label: 0 for label in CLASSES}
    for row in rows:
        per_class[row[1]] += 1

    rows.extend(_write_corrupt(out, config))
    _write_manifest(out, rows)
    return LakeReport(
        out=out,
        images=sum(per_class.values()),
        corrupt=config.corrupt,
        per_class=per_class,
        sequences=len(plan),
        cameras=len({seq[2] for seq in plan}),
        seconds=time.perf_counter() - started,
    )


def _prepare_out(out: Path) -> None:
    if out.exists():
        if not out.is_dir():
            raise BadInputError(f"lake output {out} is a file; choose an empty directory")
        if any(out.iterdir()):
            raise BadInputError(
                f"lake output {out} is not empty; choose an empty directory or delete it "
                "(the generator never overwrites files)"
            )
    out.mkdir(parents=True, exist_ok=True)


def _plan(config: LakeConfig) -> list[_Seq]:
    """Decide label, camera, length and difficulty of every sequence, cheaply, in one process."""
    rng = np.random.default_rng([config.seed, 0, _TAG_PLAN])
    upper = config.images // 3 + 2
    frames = rng.integers(3, 7, size=upper)
    is_car = rng.random(upper) < CAR_FRACTION
    cameras = rng.integers(0, config.cameras, size=upper)
    hard = rng.random(upper) < HARD_FRACTION
    ends = np.cumsum(frames)
    count = int(np.searchsorted(ends, config.images)) + 1
    plan: list[_Seq] = []
    for index in range(count):
        start = int(ends[index - 1]) if index else 0
        n = min(int(frames[index]), config.images - start)
        plan.append((index, CLASSES[0] if is_car[index] else CLASSES[1], int(cameras[index]), n, bool(hard[index])))
    return plan


def _chunks(plan: list[_Seq], config: LakeConfig) -> list[list[_Seq]]:
    """Split the work; grouped by camera so a worker needs few camera textures at a time.

    The grouping changes only who renders what, never the bytes: each sequence has its own RNG.
    """
    workers = config.workers or default_workers()
    # Small enough for a smooth progress bar and load balance, large enough to amortise the IPC.
    size = max(1, min(64, len(plan) // (workers * 8) or 1))
    ordered = sorted(plan, key=lambda seq: (seq[2], seq[0]))
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def _write_manifest(out: Path, rows: list[_Row]) -> None:
    with atomic_output(out / MANIFEST_NAME, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(MANIFEST_HEADER)
        writer.writerows(rows)


# ----------------------------------------------------------------------------------------------
# Corrupt files
# ----------------------------------------------------------------------------------------------


def _jpeg_bytes(pixels: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _patch_sof(data: bytes, width: int, height: int) -> bytes:
    """Rewrite the frame size in a baseline JPEG's SOF0 header, leaving the (tiny) scan as it is."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xC0:
            patched = bytearray(data)
            patched[pos + 5 : pos + 7] = height.to_bytes(2, "big")
            patched[pos + 7 : pos + 9] = width.to_bytes(2, "big")
            return bytes(patched)
        pos += 2 + length
    raise RuntimeError("no SOF0 segment in a JPEG written by Pillow; this is a bug")


def _write_corrupt(out: Path, config: LakeConfig) -> list[_Row]:
    rows = []
    for number in range(1, config.corrupt + 1):
        kind = CORRUPT_KINDS[(number - 1) % len(CORRUPT_KINDS)]
        label = CLASSES[(number - 1) % len(CLASSES)]
        rng = np.random.default_rng([config.seed, number, _TAG_CORRUPT])
        if kind == "truncated":
            smooth = np.linspace(40, 200, 96, dtype=np.float32)[None, :, None] + rng.normal(0, 30, (96, 96, 3))
            whole = _jpeg_bytes(np.clip(smooth, 0, 255).astype(np.uint8))
            data = whole[: len(whole) // 2]
        elif kind == "zero":
            data = b""
        elif kind == "text":
            data = (
                "<html><head><title>504 Gateway Time-out</title></head>\n"
                f"<body><h1>504 Gateway Time-out</h1><p>camera upload {number} failed</p></body></html>\n"
            ).encode()
        elif kind == "bomb":
            small = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            data = _patch_sof(_jpeg_bytes(small), BOMB_SIDE, BOMB_SIDE)
        else:  # tiny
            data = _jpeg_bytes(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        relpath = f"{label}/bad_{number:05d}_{kind}.jpg"
        (out / relpath).write_bytes(data)
        rows.append((relpath, label, "", ""))
    return rows


# ----------------------------------------------------------------------------------------------
# Cameras: style and ground texture (cached per process; derived from the seed only)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Camera:
    road_angle: float  # direction of the lanes on the ground, radians
    lane_width: float
    elevation: float  # camera look-down angle, radians
    sun: tuple[float, float]  # ground shadow offset per metre of height
    shadow_alpha: int
    gain: float
    tint: tuple[float, float, float]
    haze: float
    verge: float  # signed distance across the road to a grass verge; 0 = road all the way
    noise: int  # base index into _NOISE_SIGMAS
    blur: float  # base blur radius at 160 px
    quality: tuple[int, int]
    subsampling: int
    textures: tuple[Any, ...]  # PIL images: full, 1/2, 1/4 resolution


_CAMERAS: OrderedDict[tuple[int, int], _Camera] = OrderedDict()  # LRU: a camera's textures are ~4 MB
_CAMERA_CACHE = 16
_NOISE: dict[tuple[int, int], list[Any]] = {}


def _lowfreq(rng: np.random.Generator, cells: int, size: int) -> np.ndarray:
    """Smooth zero-mean noise: a ``cells`` x ``cells`` Gaussian grid upsampled to ``size``."""
    small = Image.fromarray(rng.standard_normal((cells, cells), dtype=np.float32), "F")
    return np.asarray(small.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)


def _camera(seed: int, index: int) -> _Camera:
    """The style and road texture of one camera (cached: every worker derives the same from the seed)."""
    key = (seed, index)
    cached = _CAMERAS.get(key)
    if cached is not None:
        _CAMERAS.move_to_end(key)
        return cached
    rng = np.random.default_rng([seed, index, _TAG_CAMERA])
    road_angle = float(rng.uniform(0, math.pi))
    lane_width = float(rng.uniform(3.2, 3.8))
    elevation = math.radians(rng.uniform(32, 68))
    sun_angle, sun_len = rng.uniform(0, 2 * math.pi), rng.uniform(0.15, 0.9)
    overcast = rng.random() < 0.3
    warm = rng.normal(0, 0.04)
    style = dict(
        road_angle=road_angle,
        lane_width=lane_width,
        elevation=elevation,
        sun=(float(math.cos(sun_angle) * sun_len), float(math.sin(sun_angle) * sun_len)),
        shadow_alpha=int(rng.uniform(30, 60) if overcast else rng.uniform(80, 150)),
        gain=float(rng.uniform(0.85, 1.15)),
        tint=(float(1 + warm), float(1 + rng.normal(0, 0.015)), float(1 - warm)),
        haze=float(rng.uniform(0, 0.18) if rng.random() < 0.4 else 0.0),
        verge=float(rng.uniform(8, 16) * rng.choice([-1, 1]) if rng.random() < 0.45 else 0.0),
        noise=int(rng.integers(0, 3)),
        blur=float(rng.uniform(0.2, 0.9)),
        quality=(int(rng.integers(35, 60)), int(rng.integers(70, 96))),
        subsampling=int(rng.choice([0, 2, 2])),
    )
    camera = _Camera(textures=_ground_texture(np.random.default_rng([seed, index, _TAG_TEXTURE]), style), **style)
    _CAMERAS[key] = camera
    while len(_CAMERAS) > _CAMERA_CACHE:
        _CAMERAS.popitem(last=False)
    return camera


def _ground_texture(rng: np.random.Generator, style: dict[str, Any]) -> tuple[Any, ...]:
    """A road surface in ground coordinates (x right, y down, `_PPM` pixels per metre).

    Returns a pyramid (full, 1/2, 1/4 resolution) so crops never downsample much: cheap and unaliased.
    """
    n = _TEX
    f32 = np.float32
    axis = (np.arange(n, dtype=f32) - f32(n / 2 - 0.5)) / f32(_PPM)
    ca, sa = f32(math.cos(style["road_angle"])), f32(math.sin(style["road_angle"]))
    along = axis[None, :] * ca + axis[:, None] * sa
    across = axis[:, None] * ca - axis[None, :] * sa
    lane = f32(style["lane_width"])

    lum = _lowfreq(rng, 7, n) * f32(rng.uniform(5, 14)) + f32(rng.uniform(68, 135))
    lum += _lowfreq(rng, 48, n) * f32(rng.uniform(2, 6))
    lum += rng.standard_normal((n, n), dtype=f32) * f32(rng.uniform(2, 6))
    # Darker tyre tracks in every lane.
    pos = np.abs(np.abs(np.mod(across, lane) - lane / 2) - f32(0.85))
    lum -= f32(rng.uniform(2, 12)) * np.exp(-((pos / f32(0.4)) ** 2))

    # Lane lines: dashed, every few lines a solid one; worn unevenly.
    line_index = np.floor(across / lane + f32(0.5))
    dist = np.abs(across - line_index * lane)
    solid_every = int(rng.integers(3, 6))
    period, dash = f32(rng.uniform(9, 13)), f32(rng.uniform(2.5, 4.5))
    dashed = np.abs(np.mod(along + line_index * f32(3.7), period) - dash / 2)
    dashed = np.clip((dash / 2 - dashed) * f32(_PPM) + f32(0.5), 0, 1)
    dashed[np.mod(line_index, solid_every) == 0] = 1
    mark = np.clip((f32(rng.uniform(0.07, 0.12)) - dist) * f32(_PPM) + f32(0.5), 0, 1) * dashed
    mark *= np.clip(_lowfreq(rng, 24, n) * f32(0.25) + f32(rng.uniform(0.6, 0.95)), 0, 1)
    yellow = rng.random() < 0.3
    paint = np.array([225, 190, 70] if yellow else [225, 225, 218], dtype=f32) * f32(rng.uniform(0.85, 1.05))
    tint = (1 + rng.normal(0, 0.025, 3)).astype(f32)
    channels = [lum * tint[c] + (paint[c] - lum * tint[c]) * mark for c in range(3)]

    # Some cameras see the verge: a kerb and grass beyond the road edge.
    if style["verge"]:
        edge = f32(style["verge"])
        beyond = across * np.sign(edge) - abs(edge)
        kerb = np.clip((f32(0.25) - np.abs(beyond - f32(0.25))) * f32(_PPM) + f32(0.5), 0, 1)
        verge = np.clip(beyond * f32(_PPM) - 5, 0, 1)
        shade = _lowfreq(rng, 30, n) * f32(0.18) + rng.standard_normal((n, n), dtype=f32) * f32(0.08) + 1
        grass = np.array([78, 96, 52], dtype=f32) * f32(rng.uniform(0.75, 1.15))
        for c in range(3):
            channels[c] += (170 - channels[c]) * kerb
            channels[c] += (grass[c] * shade - channels[c]) * verge
    rgb = np.stack([np.clip(ch, 0, 255).astype(np.uint8) for ch in channels], axis=-1)
    image = Image.fromarray(rgb, "RGB")

    # Patches, oil stains and cracks.
    draw = ImageDraw.Draw(image, "RGBA")
    for _ in range(int(rng.integers(10, 40))):
        x, y = rng.uniform(0, n, 2)
        rx, ry = rng.uniform(3, 25, 2)
        shade_v = int(rng.integers(0, 60)) if rng.random() < 0.7 else int(rng.integers(150, 200))
        draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=(shade_v, shade_v, shade_v, int(rng.integers(15, 60))))
    for _ in range(int(rng.integers(5, 25))):
        points = np.cumsum(rng.normal(0, 6, (int(rng.integers(3, 9)), 2)), axis=0) + rng.uniform(0, n, 2)
        draw.line(points.ravel().tolist(), fill=(20, 20, 20, int(rng.integers(60, 140))), width=1)
    half = image.reduce(2)
    return (image, half, half.reduce(2))


def _noise_tiles(seed: int, side: int) -> list[Any]:
    """Zero-mean sensor noise around 128 (partly shared across channels, like luma noise)."""
    key = (seed, side)
    tiles = _NOISE.get(key)
    if tiles is None:
        rng = np.random.default_rng([seed, side, _TAG_NOISE])
        tiles = []
        for sigma in _NOISE_SIGMAS:
            luma = rng.normal(0, sigma * 0.8, (side, side, 1)).astype(np.float32)
            chroma = rng.normal(0, sigma * 0.6, (side, side, 3)).astype(np.float32)
            tiles.append(Image.fromarray(np.clip(128 + luma + chroma, 0, 255).astype(np.uint8), "RGB"))
        _NOISE[key] = tiles
    return tiles


# ----------------------------------------------------------------------------------------------
# Vehicles: boxes in local metres (u forward, v left, z up)
# ----------------------------------------------------------------------------------------------

# name, rgb, weight for cars, weight for trucks: the palettes overlap on purpose.
_PALETTE: tuple[tuple[str, tuple[int, int, int], float, float], ...] = (
    ("white", (232, 232, 228), 0.20, 0.28),
    ("silver", (178, 181, 186), 0.17, 0.11),
    ("grey", (108, 110, 114), 0.14, 0.09),
    ("black", (24, 24, 27), 0.17, 0.06),
    ("navy", (26, 38, 88), 0.06, 0.07),
    ("blue", (40, 80, 170), 0.05, 0.08),
    ("red", (168, 26, 26), 0.08, 0.11),
    ("maroon", (98, 22, 28), 0.03, 0.03),
    ("green", (32, 92, 48), 0.03, 0.06),
    ("darkgreen", (26, 56, 36), 0.02, 0.03),
    ("yellow", (222, 190, 42), 0.01, 0.03),
    ("orange", (220, 112, 32), 0.01, 0.03),
    ("beige", (192, 172, 132), 0.02, 0.01),
    ("brown", (98, 70, 46), 0.01, 0.02),
)
_CAR_P = np.array([p[2] for p in _PALETTE]) / sum(p[2] for p in _PALETTE)
_TRUCK_P = np.array([p[3] for p in _PALETTE]) / sum(p[3] for p in _PALETTE)

Rgb = tuple[int, int, int]


def _colour(rng: np.random.Generator, label: str) -> np.ndarray:
    base = np.array(_PALETTE[int(rng.choice(len(_PALETTE), p=_CAR_P if label == "car" else _TRUCK_P))][1], float)
    return np.clip(base * rng.uniform(0.88, 1.08) + rng.normal(0, 6, 3), 0, 255)


def _rgb(colour: np.ndarray, factor: float = 1.0) -> Rgb:
    r, g, b = np.clip(colour * factor, 0, 255).astype(int).tolist()
    return (r, g, b)


def _glass(rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.25:  # sky reflection
        return np.array([120, 130, 142], float) * rng.uniform(0.8, 1.2)
    return np.array([30, 36, 46], float) * rng.uniform(0.7, 1.6)


def _rect(u0: float, u1: float, half: float, chamfer: float = 0.0) -> np.ndarray:
    """A footprint from u0 (rear) to u1 (front), ``half`` wide either side, optionally with cut corners."""
    if chamfer <= 0:
        return np.array([[u1, half], [u1, -half], [u0, -half], [u0, half]], float)
    c = min(chamfer, (u1 - u0) / 3, half / 2)
    return np.array(
        [[u1, half - c], [u1, -half + c], [u1 - c, -half], [u0 + c, -half], [u0, -half + c], [u0, half - c],
         [u0 + c, half], [u1 - c, half]],
        float,
    )


def _at(poly2: np.ndarray, z: float) -> np.ndarray:
    return np.column_stack([poly2, np.full(len(poly2), z)])


# A decal: a flat polygon (n, 3) drawn over its part, and the outward normal (u, v) of the face it
# lies on when that face is vertical (drawn only when the face looks towards the camera).
_Decal = tuple[np.ndarray, Rgb, tuple[float, float] | None]


@dataclass
class _Part:
    """A prism from ``base`` (at its z) to ``top`` (at its z), plus decals drawn over it.

    Parts are drawn in painter's order: ``order`` first (0 = under everything: chassis, wheels),
    then groups (a cab, a trailer, a car body) far to near, then ``level`` within a group (a car's
    cabin stands on its body).
    """

    base: np.ndarray  # (n, 3)
    top: np.ndarray  # (m, 3)
    side: Rgb
    roof: Rgb
    order: int = 1
    group: int = 0
    level: int = 0
    decals: list[_Decal] = field(default_factory=list)

    @property
    def points(self) -> np.ndarray:
        return np.vstack([self.base, self.top])


@dataclass
class _Vehicle:
    parts: list[_Part]
    lights: list[tuple[np.ndarray, bool]]  # (point, is_front)


def _prism(u0: float, u1: float, half: float, z0: float, z1: float, colour: np.ndarray, *, chamfer: float = 0.0,
           inset: tuple[float, float, float] = (0.0, 0.0, 0.0), side: np.ndarray | None = None, order: int = 1,
           group: int = 0, level: int = 0) -> _Part:
    """A box; ``inset`` = (rear, front, sides) shrinks the top face (sloped glass, rounded roofs)."""
    return _Part(
        base=_at(_rect(u0, u1, half, chamfer), z0),
        top=_at(_rect(u0 + inset[0], u1 - inset[1], half - inset[2], chamfer), z1),
        side=_rgb(colour, 0.62) if side is None else _rgb(side),
        roof=_rgb(colour),
        order=order,
        group=group,
        level=level,
    )


def _quad(points: Sequence[tuple[float, float, float]]) -> np.ndarray:
    return np.array(points, float)


def _side_window(u0: float, u1: float, half: float, z0: float, z1: float, slope: float = 0.0) -> list[np.ndarray]:
    """Quads on both vertical sides (v = +half and v = -half)."""
    return [
        _quad([(u0, s * half, z0), (u1, s * half, z0), (u1 - slope, s * half, z1), (u0 + slope, s * half, z1)])
        for s in (1.0, -1.0)
    ]


def _wheels(axles: Sequence[float], half: float, radius: float) -> list[_Decal]:
    """Dark wheel arches on the visible side of a body."""
    t = np.linspace(0, np.pi, 7)
    decals: list[_Decal] = []
    for u in axles:
        for s in (1.0, -1.0):
            arc = np.column_stack([u + radius * np.cos(t), np.full(7, s * (half + 0.01)), radius * 0.9 * np.sin(t)])
            decals.append((arc, (18, 18, 20), (0.0, s)))
    return decals


def _car(rng: np.random.Generator, kind: str, colour: np.ndarray) -> _Vehicle:
    glass = _glass(rng)
    roof_colour = np.array([22, 22, 24], float) if rng.random() < 0.08 else colour
    if kind == "van":
        length, half = rng.uniform(4.8, 7.0), rng.uniform(0.95, 1.05)
        hood, height, belt = rng.uniform(0.4, 0.9), rng.uniform(1.9, 2.7), rng.uniform(0.95, 1.1)
        front = length / 2 - hood
        body = _prism(-length / 2, length / 2, half, 0, belt, colour, chamfer=0.2)
        slope = rng.uniform(0.3, 0.6)
        cabin = _prism(-length / 2, front, half - 0.03, belt, height, roof_colour, chamfer=0.12,
                       inset=(0.0, slope, 0.04), side=colour * 0.66, level=1)
        # windscreen on the sloped front face, door windows on the sides
        cabin.decals.append((_quad([(front, half - 0.12, belt + 0.08), (front, -half + 0.12, belt + 0.08),
                                    (front - slope, -half + 0.16, height - 0.12), (front - slope, half - 0.16, height - 0.12)]),
                             _rgb(glass), None))
        for window in _side_window(front - 1.0, front - 0.05, half - 0.02, belt + 0.1, height - 0.25, 0.1):
            cabin.decals.append((window, _rgb(glass), (0.0, float(np.sign(window[0, 1])))))
        if rng.random() < 0.35:  # roof rack / ribs
            for u in np.linspace(-length / 2 + 0.4, front - slope - 0.3, int(rng.integers(3, 7))):
                cabin.decals.append((_at(_rect(u - 0.04, u + 0.04, half - 0.1), height + 0.01), _rgb(colour, 0.5), None))
        body.decals.extend(_wheels((length / 2 - hood - 0.1, -length / 2 + 0.9), half, 0.36))
        return _Vehicle([body, cabin], _lights(length, half, 0.8, 1.0))

    if kind == "pickup":
        length, half = rng.uniform(5.0, 5.9), rng.uniform(0.93, 1.0)
        belt, roof_h = rng.uniform(1.0, 1.15), rng.uniform(1.75, 1.9)
        hood = rng.uniform(1.3, 1.6)
        cab_rear = length / 2 - hood - rng.uniform(1.6, 2.4)
        body = _prism(-length / 2, length / 2, half, 0, belt, colour, chamfer=0.2)
        bed = _rgb(colour, 0.35) if rng.random() < 0.7 else _rgb(_colour(rng, "truck"))
        body.decals.append((_at(_rect(-length / 2 + 0.12, cab_rear - 0.1, half - 0.1), belt + 0.01), bed, None))
        body.decals.extend(_wheels((length / 2 - 1.0, -length / 2 + 1.1), half, 0.4))
        cab = _prism(cab_rear, length / 2 - hood, half - 0.08, belt, roof_h, roof_colour, chamfer=0.1,
                     inset=(0.1, 0.5, 0.1), side=glass, level=1)
        return _Vehicle([body, cab], _lights(length, half, 0.8, 0.9))

    if kind == "suv":
        length, half = rng.uniform(4.3, 4.95), rng.uniform(0.9, 1.0)
        belt, roof_h, hood, tail = rng.uniform(0.95, 1.1), rng.uniform(1.6, 1.85), rng.uniform(1.0, 1.3), rng.uniform(0.1, 0.3)
        slopes = (rng.uniform(0.1, 0.25), rng.uniform(0.45, 0.7))
    elif kind == "hatch":
        length, half = rng.uniform(3.6, 4.35), rng.uniform(0.83, 0.92)
        belt, roof_h, hood, tail = rng.uniform(0.8, 0.95), rng.uniform(1.4, 1.55), rng.uniform(0.85, 1.15), rng.uniform(0.1, 0.3)
        slopes = (rng.uniform(0.2, 0.4), rng.uniform(0.55, 0.8))
    else:  # sedan / estate
        length, half = rng.uniform(4.3, 5.1), rng.uniform(0.87, 0.95)
        belt, roof_h, hood = rng.uniform(0.75, 0.92), rng.uniform(1.38, 1.5), rng.uniform(1.1, 1.45)
        estate = rng.random() < 0.25
        tail = rng.uniform(0.15, 0.35) if estate else rng.uniform(0.75, 1.1)
        slopes = (rng.uniform(0.25, 0.45) if estate else rng.uniform(0.45, 0.7), rng.uniform(0.6, 0.85))
    body = _prism(-length / 2, length / 2, half, 0, belt, colour, chamfer=0.35, inset=(0.08, 0.12, 0.06))
    body.decals.extend(_wheels((length / 2 - 0.9, -length / 2 + 0.85), half, 0.33))
    rear, front = -length / 2 + tail, length / 2 - hood
    cabin = _prism(rear, front, half - 0.1, belt, roof_h, roof_colour, chamfer=0.2,
                   inset=(slopes[0], slopes[1], 0.14), side=glass, level=1)
    pillar = _rgb(colour, 0.75)
    for s in (1.0, -1.0):  # B-pillar between the side windows
        mid = (rear + front) / 2 + 0.1
        cabin.decals.append((_quad([(mid - 0.06, s * (half - 0.1), belt), (mid + 0.06, s * (half - 0.1), belt),
                                    (mid + 0.06, s * (half - 0.24), roof_h), (mid - 0.06, s * (half - 0.24), roof_h)]),
                             pillar, (0.0, s)))
    if rng.random() < 0.15:  # sunroof
        mid = (rear + slopes[0] + front - slopes[1]) / 2
        cabin.decals.append((_at(_rect(mid - 0.3, mid + 0.3, half - 0.45), roof_h + 0.01), _rgb(glass, 0.8), None))
    return _Vehicle([body, cabin], _lights(length, half, 0.7, 0.85))


def _lights(length: float, half: float, z_front: float, z_rear: float) -> list[tuple[np.ndarray, bool]]:
    return [
        (np.array([length / 2, half - 0.25, z_front]), True),
        (np.array([length / 2, -half + 0.25, z_front]), True),
        (np.array([-length / 2, half - 0.2, z_rear]), False),
        (np.array([-length / 2, -half + 0.2, z_rear]), False),
    ]


def _cab(rng: np.random.Generator, front: float, colour: np.ndarray, half: float, *, long: bool) -> tuple[list[_Part], float]:
    """A truck cab whose front is at ``front``; returns its parts and where it ends at the back."""
    glass = _glass(rng)
    parts = []
    height = rng.uniform(2.9, 3.5) if long else rng.uniform(2.4, 3.0)
    if long and rng.random() < 0.25:  # bonneted (conventional) tractor
        bonnet = rng.uniform(1.1, 1.6)
        parts.append(_prism(front - bonnet, front, half - 0.25, 0.3, 1.5, colour, chamfer=0.15, inset=(0, 0.2, 0.1), group=1))
        front -= bonnet
    depth = rng.uniform(2.0, 2.5) if long else rng.uniform(1.6, 2.1)
    slope = rng.uniform(0.1, 0.3)
    cab = _prism(front - depth, front, half, 0.4, height, colour, chamfer=0.1, inset=(0.0, slope, 0.05), group=1)
    cab.decals.append((_quad([(front, half - 0.15, 1.35), (front, -half + 0.15, 1.35),
                              (front - slope * 0.8, -half + 0.2, height - 0.3), (front - slope * 0.8, half - 0.2, height - 0.3)]),
                       _rgb(glass), None))
    for window in _side_window(front - 0.9, front - 0.1, half, 1.5, height - 0.35):
        cab.decals.append((window, _rgb(glass), (0.0, float(np.sign(window[0, 1])))))
    parts.append(cab)
    if long and rng.random() < 0.5:  # roof air deflector
        parts.append(_prism(front - depth + 0.05, front - depth + 1.2, half - 0.2, height, height + rng.uniform(0.3, 0.6),
                            colour, inset=(0.0, 0.7, 0.1), group=1, level=1))
    return parts, front - depth


def _truck(rng: np.random.Generator, kind: str, colour: np.ndarray) -> _Vehicle:
    half = rng.uniform(1.12, 1.27)
    cargo_colour = colour if rng.random() < 0.3 else _colour(rng, "truck")
    if rng.random() < 0.45:
        cargo_colour = np.array([230, 230, 226], float) * rng.uniform(0.85, 1.02)
    long = kind in ("semi", "tanker", "flatbed")
    if long:
        length = rng.uniform(10.0, 18.0)
    elif kind == "tipper":
        length = rng.uniform(6.0, 9.0)
    else:  # rigid box truck: the short ones are van-sized
        length = rng.uniform(5.4, 10.0)
    parts, cab_back = _cab(rng, length / 2, colour, half - rng.uniform(0.0, 0.1), long=long)
    gap = rng.uniform(0.5, 1.4) if long else rng.uniform(0.08, 0.4)
    cargo_front, cargo_rear = cab_back - gap, -length / 2
    dark = np.array([30, 30, 32.0])
    parts.append(_prism(cargo_rear + 0.3, cab_back + 0.2, 0.55, 0.3, 1.15, np.array([45, 45, 48.0]), order=0))
    axles = [length / 2 - 1.1, cab_back - gap - 0.3 if long else cargo_rear + 1.4]
    if long:
        axles += [cargo_rear + 1.3 + 1.3 * i for i in range(int(rng.integers(2, 4)))]
    elif length > 8:
        axles.append(cargo_rear + 2.7)
    for u in axles:  # tyres: dark blocks under the body, visible from an angle
        parts.append(_prism(u - 0.5, u + 0.5, half - 0.08, 0, 1.0, dark, side=dark * 0.8, order=0))
    if kind == "tanker":
        radius = rng.uniform(0.95, 1.2)
        tank = _prism(cargo_rear, cargo_front, radius, 1.0, 1.0 + 2 * radius * 0.95, cargo_colour, chamfer=0.5,
                      inset=(0.15, 0.15, radius * 0.55), group=2)
        z = tank.top[0, 2] + 0.01
        tank.decals.append((_at(_rect(cargo_rear + 0.3, cargo_front - 0.3, radius * 0.15), z), _rgb(cargo_colour, 1.15), None))
        parts.append(tank)
    elif kind == "flatbed":
        deck = _prism(cargo_rear, cargo_front, half, 1.0, 1.35, np.array([70, 62, 55.0]) * rng.uniform(0.8, 1.3), group=2)
        parts.append(deck)
        u = cargo_front - 0.2
        while u > cargo_rear + 1.0:
            size = rng.uniform(1.0, 3.5)
            if rng.random() < 0.8:
                parts.append(_prism(max(u - size, cargo_rear + 0.1), u, half - rng.uniform(0.05, 0.3), 1.35,
                                    1.35 + rng.uniform(0.6, 2.2), _colour(rng, "truck"), group=2, level=1))
            u -= size + rng.uniform(0.1, 0.6)
    else:
        height = rng.uniform(2.8, 3.6) if kind == "tipper" else rng.uniform(3.2, 4.05)
        z0 = 1.0 if kind == "tipper" else rng.uniform(0.8, 1.2)
        box = _prism(cargo_rear, cargo_front, half + rng.uniform(0.0, 0.05), z0, height, cargo_colour, group=2)
        if kind == "tipper":  # open top: load inside
            load = np.array([95, 85, 72.0]) * rng.uniform(0.6, 1.3)
            box.decals.append((_at(_rect(cargo_rear + 0.15, cargo_front - 0.15, half - 0.15), height + 0.01), _rgb(load), None))
        elif rng.random() < 0.4:  # container / reefer ribs
            ribs = int((cargo_front - cargo_rear) / rng.uniform(0.5, 1.2))
            for u in np.linspace(cargo_rear + 0.3, cargo_front - 0.3, max(ribs, 2)):
                box.decals.append((_at(_rect(u - 0.05, u + 0.05, half - 0.05), height + 0.01), _rgb(cargo_colour, 0.8), None))
        parts.append(box)
    return _Vehicle(parts, _lights(length, half, 1.1, 1.2))


_CAR_KINDS = ("sedan", "hatch", "suv", "van", "pickup")
_CAR_KIND_P = (0.36, 0.24, 0.2, 0.14, 0.06)
_TRUCK_KINDS = ("box", "semi", "tipper", "tanker", "flatbed")
_TRUCK_KIND_P = (0.38, 0.34, 0.12, 0.08, 0.08)


def _vehicle(rng: np.random.Generator, label: str) -> _Vehicle:
    colour = _colour(rng, label)
    if label == "car":
        return _car(rng, _CAR_KINDS[int(rng.choice(5, p=_CAR_KIND_P))], colour)
    return _truck(rng, _TRUCK_KINDS[int(rng.choice(5, p=_TRUCK_KIND_P))], colour)


# ----------------------------------------------------------------------------------------------
# Projection and drawing
# ----------------------------------------------------------------------------------------------


def _hull(points: np.ndarray) -> np.ndarray:
    """Convex hull (monotone chain) of a few 2-D points."""
    pts = sorted(set(map(tuple, np.round(points, 4).tolist())))
    if len(pts) <= 2:
        return np.array(pts, float)

    def half(seq: list[tuple[float, float]]) -> list[tuple[float, float]]:
        chain: list[tuple[float, float]] = []
        for p in seq:
            while len(chain) >= 2:
                (ax, ay), (bx, by) = chain[-2], chain[-1]
                if (bx - ax) * (p[1] - ay) - (by - ay) * (p[0] - ax) > 0:
                    break
                chain.pop()
            chain.append(p)
        return chain

    lower, upper = half(pts), half(pts[::-1])
    return np.array(lower[:-1] + upper[:-1], float)


class _Projector:
    """Vehicle-local metres -> screen metres (x right, y down) for a heading and camera elevation."""

    def __init__(self, heading: float, elevation: float) -> None:
        self.c, self.s = math.cos(heading), math.sin(heading)
        self.se, self.ce = math.sin(elevation), math.cos(elevation)

    def ground(self, p: np.ndarray) -> np.ndarray:
        """Local (u, v) -> ground (x, y)."""
        return np.column_stack([p[:, 0] * self.c - p[:, 1] * self.s, p[:, 0] * self.s + p[:, 1] * self.c])

    def __call__(self, p: np.ndarray) -> np.ndarray:
        g = self.ground(p)
        return np.column_stack([g[:, 0], g[:, 1] * self.se - p[:, 2] * self.ce])

    def shadow(self, p: np.ndarray, sun: tuple[float, float]) -> np.ndarray:
        g = self.ground(p)
        return np.column_stack([g[:, 0] + p[:, 2] * sun[0], (g[:, 1] + p[:, 2] * sun[1]) * self.se])


# A drawable: (polygon in screen metres relative to the vehicle's bbox centre, fill).
_Shape = tuple[np.ndarray, tuple[int, ...]]


def _vehicle_shapes(vehicle: _Vehicle, proj: _Projector) -> list[_Shape]:
    """Projected polygons of a vehicle in painter's order (see :class:`_Part`)."""
    groups: dict[int, list[float]] = {}
    for part in vehicle.parts:
        if part.level == 0:
            groups.setdefault(part.group, []).extend(proj.ground(part.base)[:, 1].tolist())
    group_depth = {group: float(np.mean(ys)) for group, ys in groups.items()}

    def key(part: _Part) -> tuple[int, float, int, float]:
        depth = float(proj.ground(part.base)[:, 1].mean())
        return (part.order, depth if part.order == 0 else group_depth.get(part.group, depth), part.level, depth)

    shapes: list[_Shape] = []
    for part in sorted(vehicle.parts, key=key):
        shapes.append((_hull(proj(part.points)), part.side))
        shapes.append((proj(part.top), part.roof))
        for decal, colour, normal in part.decals:
            if normal is not None and proj.ground(np.array([normal]))[0, 1] < 0.08:
                continue  # on a face turned away from the camera
            shapes.append((proj(decal), colour))
    return shapes


def _bbox(shapes: Sequence[_Shape]) -> tuple[float, float, float, float]:
    allp = np.vstack([s[0] for s in shapes])
    x0, y0 = allp.min(axis=0)
    x1, y1 = allp.max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)


def _shifted(shapes: Sequence[_Shape], dx: float, dy: float) -> list[_Shape]:
    return [(poly + (dx, dy), fill) for poly, fill in shapes]


def _occluders(rng: np.random.Generator, kind: str, box: tuple[float, float, float, float], proj: _Projector,
               heavy: bool) -> list[_Shape]:
    """Things in front of the vehicle, in the vehicle's screen metres (bbox centred at 0)."""
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    shapes: list[_Shape] = []
    if kind in ("pole", "sign"):
        x = rng.uniform(-0.4, 0.4) * bw if not heavy else rng.uniform(-0.15, 0.15) * bw
        width = rng.uniform(0.12, 0.35) * (4 if heavy else 1)
        tilt = rng.normal(0, 0.08)
        grey = float(rng.uniform(70, 170))
        top, bottom = y0 - 4 * bh - 10, y1 + 4 * bh + 10
        poly = np.array([[x - width / 2 + tilt * top, top], [x + width / 2 + tilt * top, top],
                         [x + width / 2 + tilt * bottom, bottom], [x - width / 2 + tilt * bottom, bottom]])
        shapes.append((poly, (int(grey * 0.7),) * 3))
        shapes.append((poly * (0.4, 1) + (0.6 * x - 0.1 * width, 0), (int(grey),) * 3))
        if kind == "sign":
            cy = rng.uniform(y0, y0 + 0.5 * bh)
            sw, sh = rng.uniform(0.8, 2.0) * (2 if heavy else 1), rng.uniform(0.6, 1.4) * (2 if heavy else 1)
            cx = x + tilt * cy
            face = [(30, 70, 160), (20, 110, 60), (225, 225, 225), (200, 40, 30), (230, 180, 30)][int(rng.integers(5))]
            shapes.append((np.array([[cx - sw / 2, cy - sh / 2], [cx + sw / 2, cy - sh / 2], [cx + sw / 2, cy + sh / 2],
                                     [cx - sw / 2, cy + sh / 2]]), (235, 235, 235)))
            inner = 0.12
            shapes.append((np.array([[cx - sw / 2 + inner, cy - sh / 2 + inner], [cx + sw / 2 - inner, cy - sh / 2 + inner],
                                     [cx + sw / 2 - inner, cy + sh / 2 - inner], [cx - sw / 2 + inner, cy + sh / 2 - inner]]),
                           face))
    elif kind == "foliage":
        corner = np.array([x0 if rng.random() < 0.5 else x1, y0 if rng.random() < 0.5 else y1])
        centre = corner * (0.3 if heavy else 1.0)
        spread = max(bw, bh) * (0.6 if heavy else 0.3)
        for _ in range(int(rng.integers(6, 14)) * (2 if heavy else 1)):
            c = centre + rng.normal(0, spread / 2, 2)
            r = rng.uniform(0.15, 0.45) * spread
            green = (int(rng.uniform(20, 60)), int(rng.uniform(45, 95)), int(rng.uniform(20, 45)))
            t = np.linspace(0, 2 * np.pi, 10, endpoint=False)
            shapes.append((np.column_stack([c[0] + r * np.cos(t), c[1] + r * np.sin(t) * 0.8]), green))
    else:  # another vehicle in front, partly in frame
        other = _car(rng, ("sedan", "hatch", "suv", "van")[int(rng.integers(4))], _colour(rng, "car"))
        other_shapes = _vehicle_shapes(other, proj)
        ox0, oy0, ox1, oy1 = _bbox(other_shapes)
        side = rng.integers(4)
        cover = rng.uniform(0.5, 0.8) if heavy else rng.uniform(0.1, 0.3)
        ocx, ocy = (ox0 + ox1) / 2, (oy0 + oy1) / 2
        if side == 0:  # from the left
            dx, dy = x0 + cover * bw - ox1, rng.uniform(-0.3, 0.3) * bh - ocy
        elif side == 1:
            dx, dy = x1 - cover * bw - ox0, rng.uniform(-0.3, 0.3) * bh - ocy
        elif side == 2:  # from below (nearer the camera)
            dx, dy = rng.uniform(-0.3, 0.3) * bw - ocx, y1 - cover * bh - oy0
        else:
            dx, dy = rng.uniform(-0.3, 0.3) * bw - ocx, y0 + cover * bh - oy1
        shapes.extend(_shifted(other_shapes, dx, dy))
    return shapes


_RAMP = np.arange(256, dtype=np.float64) / 255.0


def _lut(gain: float, gamma: float, tint: tuple[float, float, float], haze: float, lift: float) -> list[int]:
    """Per-channel exposure table for ``Image.point``: gain and tint, gamma, haze, black lift."""
    y = np.clip(np.multiply.outer(np.array(tint) * gain, _RAMP), 0, 1) ** gamma
    y = y * (1 - haze) + (haze * 0.75 + lift)
    return np.clip(np.round(y * 255), 0, 255).astype(np.uint8).ravel().tolist()


# ----------------------------------------------------------------------------------------------
# Rendering one sequence
# ----------------------------------------------------------------------------------------------


def _render_chunk(out: str, params: tuple[int, int, int], chunk: Sequence[_Seq]) -> list[tuple[int, list[_Row]]]:
    """Worker entry: render whole sequences, write their JPEGs, return (sequence index, manifest rows)."""
    return [(seq[0], _render_sequence(Path(out), params, seq)) for seq in chunk]


def _render_sequence(out: Path, params: tuple[int, int, int], seq: _Seq) -> list[_Row]:
    """Render and write the frames of one sequence; everything random comes from its own RNG."""
    seed, min_size, max_size = params
    index, label, cam_index, frames, hard = seq
    cam = _camera(seed, cam_index)
    tiles = _noise_tiles(seed, max_size + 64)
    rng = np.random.default_rng([seed, index])
    camera_name, seq_name = f"cam{cam_index:02d}", f"seq{index:06d}"

    # What is going on in this sequence.
    vehicle = _vehicle(rng, label)
    lanes = [
        lane for lane in range(-6, 6)
        if not cam.verge or ((lane + 1) * cam.lane_width < cam.verge if cam.verge > 0 else lane * cam.lane_width > cam.verge)
    ]
    lane = lanes[int(rng.integers(len(lanes)))]
    across = (lane + 0.5) * cam.lane_width + rng.normal(0, 0.25)
    forward = lane >= 0
    heading = cam.road_angle + (0.0 if forward else math.pi) + rng.normal(0, math.radians(3))
    if rng.random() < 0.1:  # changing lanes / turning
        heading += rng.normal(0, math.radians(15))
    proj = _Projector(heading, cam.elevation)
    shapes = _vehicle_shapes(vehicle, proj)
    all_points = np.vstack([part.points for part in vehicle.parts])
    shadow = _hull(proj.shadow(all_points, cam.sun))
    x0, y0, x1, y1 = _bbox(shapes)
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    shapes = _shifted(shapes, -centre[0], -centre[1])
    shadow = shadow - centre
    box = (x0 - centre[0], y0 - centre[1], x1 - centre[0], y1 - centre[1])
    bw, bh = x1 - x0, y1 - y0

    hard_kind = ["occluded", "outside", "dark", "blur"][int(rng.integers(4))] if hard else ""
    occ_kind = ""
    if hard_kind == "occluded":
        occ_kind = ["vehicle", "vehicle", "foliage", "sign", "pole"][int(rng.integers(5))]
    elif rng.random() < 0.22:
        occ_kind = ["pole", "sign", "foliage", "vehicle", "vehicle"][int(rng.integers(5))]
    occluders = _occluders(rng, occ_kind, box, proj, hard_kind == "occluded") if occ_kind else []
    occ_moves = occ_kind != "vehicle"  # street furniture is static: it slides past the tracked vehicle

    # Crop geometry: the tracker's box, its size in pixels, and where the vehicle sits in it.
    aspect = float(np.clip(math.exp(0.5 * math.log(bw / max(bh, 1e-3)) + rng.normal(0, 0.15)), 0.75, 1.33))
    side = math.exp(rng.uniform(math.log(min_size), math.log(max_size)))
    fill = rng.uniform(0.62, 0.95) if rng.random() > 0.12 else rng.uniform(0.95, 1.25)
    offset = rng.normal(0, 0.04, 2)
    if rng.random() < 0.08:  # partly out of frame
        offset[int(rng.integers(2))] += rng.choice([-1, 1]) * rng.uniform(0.2, 0.4)
    if hard_kind == "outside":
        offset[int(rng.integers(2))] = rng.choice([-1, 1]) * rng.uniform(0.62, 0.8)
        fill = rng.uniform(1.0, 1.6)
    speed = rng.uniform(0.3, 1.6)  # metres per frame along the heading
    step = np.array([math.cos(heading), math.sin(heading)]) * speed
    zoom = rng.normal(0, 0.025)
    position = np.array([(across * -math.sin(cam.road_angle)), across * math.cos(cam.road_angle)])
    position += np.array([math.cos(cam.road_angle), math.sin(cam.road_angle)]) * rng.uniform(-25, 25)

    # Light and optics.
    tod = rng.random()
    if tod < 0.75:
        gain, gamma, tint_shift, lights = rng.uniform(0.85, 1.2), rng.uniform(0.85, 1.1), 0.0, rng.random() < 0.08
    elif tod < 0.92:  # dusk
        gain, gamma, tint_shift, lights = rng.uniform(0.55, 0.85), rng.uniform(1.0, 1.25), rng.normal(0.06, 0.04), True
    else:  # night under street lights, auto-exposure pushing the gain (and the noise)
        gain, gamma, tint_shift, lights = rng.uniform(0.38, 0.55), rng.uniform(1.1, 1.35), 0.1, True
    noise_level = cam.noise + (0 if tod < 0.75 else 1 if tod < 0.92 else 2)
    blur = cam.blur * rng.uniform(0.6, 1.5)
    blur_kind = "gauss"
    r = rng.random()
    if r < 0.1:
        blur_kind = "motion"
    elif r < 0.18:
        blur *= rng.uniform(2.0, 3.5)  # defocus
    quality_low, quality_high = cam.quality
    if hard_kind == "dark":
        gain, gamma, noise_level, lights = rng.uniform(0.07, 0.14), rng.uniform(1.3, 1.8), 4, rng.random() < 0.5
        quality_low, quality_high = 35, min(quality_high, 55)
    elif hard_kind == "blur":
        blur, blur_kind = rng.uniform(0.05, 0.09) * 160, "gauss"
        quality_low, quality_high = 35, min(quality_high, 50)
    tint = (cam.tint[0] * (1 + tint_shift), cam.tint[1], cam.tint[2] * (1 - tint_shift))
    shadow_alpha = int(cam.shadow_alpha * (1.0 if tod < 0.75 else 0.3))
    lift = rng.uniform(0, 0.03)

    rows = []
    for frame in range(frames):
        jitter = rng.normal(0, 0.04)
        w = min(max(round(side * math.sqrt(aspect) * (1 + jitter)), min_size), max_size)
        h = min(max(round(side / math.sqrt(aspect) * (1 + jitter + rng.normal(0, 0.02))), min_size), max_size)
        ppm = fill * (1 + zoom * frame + rng.normal(0, 0.015)) * min(w / bw, h / bh)
        cx = w / 2 + (offset[0] + rng.normal(0, 0.025)) * w
        cy = h / 2 + (offset[1] + rng.normal(0, 0.025)) * h
        ground_centre = position + step * frame
        gx = ground_centre[0] + (w / 2 - cx) / ppm
        gy = ground_centre[1] + ((h / 2 - cy) / ppm + centre[1]) / proj.se

        # Optics: a soft camera (or a crop upscaled from a small sensor region) is rendered small and
        # upscaled, which blurs for less than a blur filter and makes everything before it cheaper.
        radius = blur * min(w, h) / 160 * rng.uniform(0.85, 1.15)
        k = min(1.0 + 0.9 * radius, 5.0) if radius >= 0.5 else 1.0
        rw, rh = max(8, round(w / k)), max(8, round(h / k))
        sx, sy = rw / w, rh / h
        rppm = ppm * min(sx, sy)
        origin = np.array([cx * sx, cy * sy])

        # Background: the ground under the crop, squashed by the view angle, from the pyramid level
        # that needs the least downsampling (downsampling a big box is slow and aliases).
        level = 0
        while level < len(cam.textures) - 1 and _PPM / 2**level > rppm * 1.3:
            level += 1
        tex, tex_ppm = cam.textures[level], _PPM / 2**level
        size = tex.width
        half_w = min(w / ppm * tex_ppm / 2, size / 2 - 1)
        half_h = min(h / (ppm * proj.se) * tex_ppm / 2, size / 2 - 1)
        tx = min(max(size / 2 + gx * tex_ppm, half_w), size - half_w)
        ty = min(max(size / 2 + gy * tex_ppm, half_h), size - half_h)
        image = tex.resize((rw, rh), Image.Resampling.BILINEAR, box=(tx - half_w, ty - half_h, tx + half_w, ty + half_h))

        draw = ImageDraw.Draw(image, "RGBA")

        def px(poly: np.ndarray) -> list[float]:
            return (poly * rppm + origin).ravel().tolist()

        draw.polygon(px(shadow), fill=(0, 0, 0, shadow_alpha))
        for poly, fill_rgb in shapes:
            draw.polygon(px(poly), fill=fill_rgb)
        if occluders:
            drift = -step * frame * (1.0 if occ_moves else -0.1)
            d = np.array([drift[0], drift[1] * proj.se])
            for poly, fill_rgb in occluders:
                draw.polygon(px(poly + d), fill=fill_rgb)

        image = image.point(_lut(gain * cam.gain * (1 + rng.normal(0, 0.03)), gamma, tint, cam.haze, lift))
        if lights:
            draw = ImageDraw.Draw(image, "RGBA")
            dot = max(0.7, 0.14 * rppm)
            for point, is_front in vehicle.lights:
                facing = math.sin(heading) if is_front else -math.sin(heading)
                if facing < -0.35:
                    continue
                x, y = (proj(point[None, :])[0] - centre) * rppm + origin
                colour = (255, 248, 215) if is_front else (230, 35, 25)
                glow = dot * (3.0 if is_front else 2.0)
                draw.ellipse((x - glow, y - glow, x + glow, y + glow), fill=(*colour, 70))
                draw.ellipse((x - dot, y - dot, x + dot, y + dot), fill=colour)

        if blur_kind == "motion":
            streak = speed * rppm * rng.uniform(0.6, 1.2)
            image = image.filter(ImageFilter.BoxBlur((abs(streak * math.cos(heading)) / 2 + 0.3,
                                                      abs(streak * math.sin(heading) * proj.se) / 2 + 0.3)))
        elif radius / k > 1.0:  # more blur than the upscale gives (defocus, hard cases)
            image = image.filter(ImageFilter.BoxBlur(radius / k * 0.8))
        if (rw, rh) != (w, h):
            image = image.resize((w, h), Image.Resampling.BILINEAR)

        # Sensor noise: a random window of a pre-generated zero-mean (128) noise tile.
        tile = tiles[min(noise_level + int(rng.integers(0, 2)), len(tiles) - 1)]
        ox, oy = int(rng.integers(0, tile.width - w + 1)), int(rng.integers(0, tile.height - h + 1))
        image = ImageChops.add(image, tile.crop((ox, oy, ox + w, oy + h)), 1.0, -128)

        quality = min(max(int(rng.integers(quality_low, quality_high + 1)) + int(rng.integers(-3, 4)), 35), 95)
        name = f"{camera_name}_{seq_name}_f{frame}.jpg"
        image.save(out / label / name, format="JPEG", quality=quality, subsampling=cam.subsampling)
        rows.append((f"{label}/{name}", label, camera_name, seq_name))
    return rows

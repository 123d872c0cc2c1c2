"""Find: the vehicle pipeline's first stage, a frame in, :class:`~toolchain.runtime.geometry.Box` es out.

Two finders, one per camera stream (a finder may keep state across one stream's frames):

* :class:`MotionFinder` (the default): background subtraction on a fixed camera with OpenCV's MOG2, on a
  downscaled frame (colour by default, grey optionally). Shadows (MOG2 marks them 127) are dropped, the mask is
  closed (a vehicle's parts joined) and opened (speckle removed), and each connected region of a plausible size
  is a box. It cannot tell a vehicle from other motion, loses vehicles that stop for long (they become
  background), takes headlights at night and a shaking camera for motion, misses a vehicle the colour of the
  road or of a shadow on it, and joins vehicles that touch in the picture.
* :class:`DetectorFinder`: an object detector ONNX the user brings, run with ONNX Runtime.

Detector inputs: one image input, NCHW (``[1, 3, H, W]``) or NHWC (``[1, H, W, 3]``); float (fed RGB on the
0..1 scale) or uint8 (fed 0..255). H and W are read from the model; where they are dynamic,
``DetectorConfig.input_size`` is used. The frame is letterboxed (scaled to fit, centred, padded with grey 114,
as YOLO trains) or, with ``letterbox=False``, plainly resized.

Detector outputs accepted (``DetectorConfig.layout``; ``auto`` decides from the output shapes and names):

* ``yolo``: YOLOv8 / YOLO11 heads, one output ``[1, 4+C, N]`` (rows ``cx, cy, w, h`` in input pixels, then C
  class scores; no objectness) or its transpose ``[1, N, 4+C]`` (auto: the smaller of the two dims is
  ``4+C``). YOLOv5-style heads with an objectness column are not accepted (it would be read as a class).
* ``ssd``: two to four outputs: boxes ``[1, N, 4]`` (``x1, y1, x2, y2``; or ``y1, x1, y2, x2`` with
  ``box_order="yxyx"``; normalised 0..1 or input pixels, see ``box_units``), then either scores ``[1, N, C]``,
  or scores ``[1, N]`` and class ids ``[1, N]`` (scores ``[1, N]`` alone: one class, id 0); optionally a
  detection count ``[1]`` (TensorFlow's ``num_detections``): only the first that many rows are read.
  Boxes are the ``[1, N, 4]`` output (the one named ``*box*`` if two fit), the count is the one-value output,
  and of scores and class ids, the class ids are the output named ``*class*`` or ``*label*``, else the integer
  one, else the later one.
* ``end2end``: one output ``[1, N, 6]`` of rows ``x1, y1, x2, y2, score, class`` in input pixels (an export
  with NMS inside, YOLOv10's or Ultralytics' ``nms=True``). Never chosen by ``auto``: ``[1, N, 6]`` reads as
  a two-class YOLO head, so name it.

After decoding: the confidence threshold, the ``classes`` filter (a box's best class must be one of them),
per-class NMS (numpy), at most ``max_detections`` boxes, mapped back to full-frame pixels and clipped.

Python 3.8 compatible (the roadside runtime); numpy at import time, OpenCV and ONNX Runtime only when a
finder is made.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from toolchain.errors import BadInputError, InputNotFoundError, MissingEnvironmentError, UsageError
from toolchain.runtime.compat import frozen_config
from toolchain.runtime.geometry import Box
from toolchain.runtime.preprocess import resize_taps
from toolchain.runtime.runners import ORT_PROVIDER_ALIASES, OnnxRuntimeRunner

OPENCV = "opencv-python-headless"
"""The distribution that provides OpenCV, which motion finding needs (a base dependency of the toolchain)."""

LAYOUTS = ("auto", "yolo", "ssd", "end2end")
"""Detector output layouts (see the module docstring)."""

PAD_GREY = 114
"""The letterbox padding value YOLO trains with."""


def _import_cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:
        raise MissingEnvironmentError(f"motion finding needs OpenCV, which is not installed: pip install {OPENCV} "
                                      "(toolchain's base install has it); or find with a detector (--detector ONNX)"
                                      ) from exc
    return cv2


class Finder(abc.ABC):
    """Turns one stream's frames, in order, into boxes in full-frame pixels. One instance per stream."""

    @abc.abstractmethod
    def find(self, frame: np.ndarray) -> List[Box]:
        """The boxes in ``frame``: (H, W, 3) uint8 RGB at full resolution (MotionFinder also takes (H, W) grey)."""

    def close(self) -> None:
        """Release what the finder holds (a model session); it finds nothing afterwards."""

    def __enter__(self) -> Finder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------- motion


@frozen_config
class MotionConfig:
    """How :class:`MotionFinder` finds moving vehicles.

    Kernel sides are pixels of the working (downscaled) frame; areas are fractions of the frame, so they hold
    at any resolution. The defaults were tuned on synthetic clips (2 to 4 lanes each way, 320x240 and
    640x352) and on a real 320x240 motorway camera.

    Attributes:
        scale_width: Width the frame is downscaled to before subtraction (never upscaled). Halving it
            quarters the cost but joins vehicles whose gap shrinks below a pixel or two.
        colour: Subtract on the colour frame (MOG2 then tells a shadow, which darkens without changing hue,
            from a coloured vehicle darker than the road); False: on the grey frame, where any vehicle
            between half as bright as the road and the road's brightness is taken for a shadow. Colour cost
            10 to 25% more time than grey here.
        history: Frames MOG2 learns the background over (its learning rate is 1/history; it learns faster
            over the first ``history`` frames).
        var_threshold: MOG2's squared Mahalanobis distance beyond which a pixel is foreground.
        background_ratio: Share of a pixel's history that counts as background (MOG2's default is 0.9). Lower
            keeps slow, long or queued vehicles foreground longer: at 0.9 a colour seen for about history/10
            frames is background (fewer while MOG2 is young), and the uniform sides of long trucks were partly
            absorbed on synthetic clips (one box for 92% of vehicles, against 100% at 0.5).
        shadow_ratio: A pixel darkened to between this share of the background's brightness and 1 (with the
            same hue, in colour) is a shadow (MOG2's tau).
        warm_up: Frames at the start during which nothing is reported: the first frame is the first
            background, so vehicles in it leave ghosts until MOG2 has seen the road behind them (on the real
            clip, mostly gone after 5 to 8 frames; a vehicle that stood still over the first frames leaves one
            for longer).
        close_px: Side of the closing done first: fills the holes MOG2 leaves where a vehicle's dark parts
            look like shadow, and joins its parts (0: none). 2 px: 3 px joined vehicles in adjacent lanes of
            dense synthetic scenes (a quarter of boxes wrong at 640x352, 4 lanes each way), 1 px split real
            vehicles (3 extra counts on the real dev clip); 2 px does neither on either.
        open_px: Side of the opening done next: removes speckle (0: none).
        min_area: Smallest region reported, as a fraction of the frame's area.
        max_area: Largest region reported, as a fraction of the frame's area; larger is a lighting change or a
            camera shake, not a vehicle.
        waist: Split a region at a waist: a run of rows (or columns) whose foreground is below this share of
            the region's fullest row (column), with a part on each side (0: never split). Vehicles side by side
            in adjacent lanes join through the few pixels between them once H.264 has blurred them, and through
            their shadows; the rows between them are then sparse and broken. With ``waist_stretch``, the
            synthetic 3- and 4-lanes-each-way clips (640x352, 12 s, seeds 0 and 5) went from 47 and 83
            crossings counted to 53 of 53 and 96 of 96 (94 within 2 frames of the truth), the real dev clip
            kept its 43 counted, 42 matched (BENCHMARKS.md), and finding cost about 0.25 ms more a frame on
            the dense clip. See :func:`split_at_waists`.
        waist_stretch: ... and whose longest stretch of foreground is below this share of the region's
            longest. Without it (1.0), a real vehicle's windscreen row was taken for a waist: 3 extra counts
            on the real clip at ``waist`` 0.35; with fill alone at 0.2, the 4-lane clip kept 2 merges.
        min_part_px: The fewest rows (columns), in working-frame pixels, of the part on each side of a waist.
    """

    scale_width: int = 320
    colour: bool = True
    history: int = 500
    var_threshold: float = 16.0
    background_ratio: float = 0.5
    shadow_ratio: float = 0.5
    warm_up: int = 5
    close_px: int = 2
    open_px: int = 3
    min_area: float = 0.0015
    max_area: float = 0.5
    waist: float = 0.45
    waist_stretch: float = 0.15
    min_part_px: int = 5

    def __post_init__(self) -> None:
        if self.scale_width < 16 or self.history < 1 or self.var_threshold <= 0 or self.warm_up < 0:
            raise UsageError("motion finding needs scale_width >= 16, history >= 1, var_threshold > 0 and warm_up >= 0")
        if not (0 < self.background_ratio <= 1 and 0 < self.shadow_ratio < 1):
            raise UsageError("motion finding needs 0 < background_ratio <= 1 and 0 < shadow_ratio < 1")
        if self.open_px < 0 or self.close_px < 0:
            raise UsageError("motion finding's open_px and close_px are kernel sides in pixels: 0 or more")
        if not (0 <= self.waist < 1 and 0 < self.waist_stretch <= 1 and self.min_part_px >= 1):
            raise UsageError(f"motion finding needs 0 <= waist < 1 (0: never split), 0 < waist_stretch <= 1 and "
                             f"min_part_px >= 1, not {self.waist}, {self.waist_stretch} and {self.min_part_px}")
        if not 0 <= self.min_area < self.max_area <= 1:
            raise UsageError(f"motion finding needs 0 <= min_area < max_area <= 1 (fractions of the frame), "
                             f"not {self.min_area} and {self.max_area}")


def split_at_waists(region: np.ndarray, x: int, y: int, waist: Tuple[float, float], min_part: int,
                    depth: int = 3) -> List[Tuple[int, int, int, int, int]]:
    """A region's mask cut at its waists: ``(x, y, width, height, area)`` of each part, tight around its pixels.

    A waist is a run of rows (then, for each part, of columns) that are thin twice over: their foreground is
    below ``waist[0]`` times the fullest row's, and their longest stretch of foreground is below ``waist[1]``
    times the longest row's. The join between vehicles side by side is both (a few blurred specks and
    shadow); a vehicle's own narrower part (a windscreen, a roof) is one solid stretch, and a real vehicle's
    ragged mask is rarely sparse as well. At least ``min_part`` rows (columns) of region lie on each side.
    The region is cut at the run, which is left out, and each part is cut again, to ``depth`` levels. A
    region without a waist comes back whole.

    Args:
        region: Boolean mask of the region's bounding box (its own pixels only).
        x: The box's left column in the working frame.
        y: The box's top row in the working frame.
        waist: ``(fill share, stretch share)`` under which a row (column) is thin.
        min_part: Fewest rows (columns) of a part on each side of a waist.
        depth: How many levels of cuts at most.
    """
    for axis in (1, 0):  # rows first (lanes side by side in the picture's height), then columns
        lines = region if axis == 1 else region.T
        cut = _waist_run(lines, waist, min_part) if depth > 0 else None
        if cut is None:
            continue
        start, stop = cut
        parts = ((region[:start], x, y), (region[stop:], x, y + stop)) if axis == 1 else (
            (region[:, :start], x, y), (region[:, stop:], x + stop, y))
        out: List[Tuple[int, int, int, int, int]] = []
        for part, px, py in parts:
            rows, cols = np.flatnonzero(part.any(axis=1)), np.flatnonzero(part.any(axis=0))
            if not len(rows):
                continue
            tight = part[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
            out.extend(split_at_waists(tight, px + int(cols[0]), py + int(rows[0]), waist, min_part, depth - 1))
        return out
    return [(x, y, region.shape[1], region.shape[0], int(region.sum()))]


def longest_runs(mask: np.ndarray) -> np.ndarray:
    """The longest run of consecutive True in each row of a 2-D boolean ``mask``."""
    ones = mask.astype(np.int32)
    total = np.cumsum(ones, axis=1)
    at_gaps = np.maximum.accumulate(np.where(ones == 0, total, 0), axis=1)  # the count at the last gap so far
    return (total - at_gaps).max(axis=1) if mask.size else np.zeros(len(mask), np.int32)


def _waist_run(lines: np.ndarray, waist: Tuple[float, float], min_part: int) -> Optional[Tuple[int, int]]:
    """``(start, stop)`` of the waist run among a region's rows (``lines``), or None: of several, the thinnest."""
    n = len(lines)
    if n < 2 * min_part + 1:
        return None
    fill = lines.sum(axis=1)
    share = fill / max(float(fill.max()), 1.0)
    thin = share < waist[0]
    if not thin[min_part:n - min_part].any():
        return None  # most regions: one vehicle, no thin row (the cheap test first)
    runs = longest_runs(lines)
    thin &= runs < waist[1] * max(float(runs.max()), 1.0)
    best: Optional[Tuple[int, int]] = None
    best_share = 1.0
    i = min_part
    while i < n - min_part:
        if not thin[i]:
            i += 1
            continue
        j = i
        while j < n and thin[j]:
            j += 1
        if j <= n - min_part and float(share[i:j].min()) < best_share:
            best, best_share = (i, j), float(share[i:j].min())
        i = j
    return best


class MotionFinder(Finder):
    """Background subtraction (OpenCV MOG2, shadows detected) on a fixed camera: each moving region is a box.

    Args:
        config: Its settings (default: :class:`MotionConfig`).

    Raises:
        MissingEnvironmentError: OpenCV is not installed.
    """

    def __init__(self, config: Optional[MotionConfig] = None) -> None:
        self.config = config or MotionConfig()
        self._cv2 = cv2 = _import_cv2()
        # Elliptical (at 3 px a cross): square kernels joined more vehicles of adjacent lanes on synthetic clips.
        self._kernels = [(op, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side)))
                         for op, side in ((cv2.MORPH_CLOSE, self.config.close_px), (cv2.MORPH_OPEN, self.config.open_px))
                         if side > 0]
        self._subtractor: Any = None
        self._frames = 0
        self.reset()

    def _components(self, mask: np.ndarray) -> Tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        """8-connected components of ``mask`` with their stats. Grana's block-based labelling: the same labels
        and stats as OpenCV's default (Spaghetti), 0.1-0.3 ms less per frame found on (BENCHMARKS.md, "Cheaper
        steps of the finder")."""
        cv2 = self._cv2
        grana = getattr(cv2, "CCL_GRANA", None)
        if grana is None:  # an OpenCV without the choice of algorithm
            return cv2.connectedComponentsWithStats(mask, connectivity=8)
        return cv2.connectedComponentsWithStatsWithAlgorithm(mask, 8, cv2.CV_32S, grana)

    def reset(self) -> None:
        """Forget the background (after the camera moved, or a stream reconnected to another scene)."""
        c = self.config
        self._subtractor = self._cv2.createBackgroundSubtractorMOG2(history=c.history, varThreshold=c.var_threshold,
                                                                    detectShadows=True)
        self._subtractor.setBackgroundRatio(c.background_ratio)
        self._subtractor.setShadowThreshold(c.shadow_ratio)
        self._frames = 0

    def find(self, frame: np.ndarray) -> List[Box]:
        if self._subtractor is None:
            raise UsageError("this MotionFinder is closed; make a new one per stream")
        if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] != 3):
            raise BadInputError(f"a frame is (H, W, 3) RGB or (H, W) grey, not {frame.shape}")
        cv2, c = self._cv2, self.config
        height, width = frame.shape[:2]
        small = frame
        if width > c.scale_width:
            # Shrink before converting (fewer pixels); INTER_AREA averages, which also quietens sensor noise.
            small = cv2.resize(frame, (c.scale_width, max(1, round(height * c.scale_width / width))),
                               interpolation=cv2.INTER_AREA)
        if small.ndim == 3 and not c.colour:
            small = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        mask = self._subtractor.apply(small)
        self._frames += 1
        if self._frames <= c.warm_up:
            return []
        # MOG2 marks foreground 255 and shadow 127: keep the foreground.
        mask = cv2.threshold(mask, 200, 255, cv2.THRESH_BINARY)[1]
        for op, kernel in self._kernels:
            mask = cv2.morphologyEx(mask, op, kernel)
        count, labels, stats, _ = self._components(mask)
        h, w = mask.shape
        sx, sy = width / w, height / h
        low, high = c.min_area * h * w, c.max_area * h * w
        regions: List[Tuple[int, int, int, int, int]] = []
        for k, (x, y, bw, bh, area) in enumerate(stats[1:count].tolist(), start=1):  # row 0 is the background
            if area < low or area > high:
                continue
            if c.waist > 0 and min(bw, bh) >= 2 * c.min_part_px:
                regions.extend(split_at_waists(labels[y:y + bh, x:x + bw] == k, x, y, (c.waist, c.waist_stretch),
                                               c.min_part_px))
            else:
                regions.append((x, y, bw, bh, area))
        return [Box(x1=x * sx, y1=y * sy, x2=(x + bw) * sx, y2=(y + bh) * sy)
                for x, y, bw, bh, area in regions if area >= low]

    def close(self) -> None:
        self._subtractor = None


# ------------------------------------------------------------------------------------------- detector

BOX_UNITS = ("auto", "normalised", "pixels")
BOX_ORDERS = ("xyxy", "yxyx")
MAX_CANDIDATES = 3000
"""Boxes above the confidence threshold that NMS considers at most (the best scoring)."""


@frozen_config
class DetectorConfig:
    """How :class:`DetectorFinder` runs a detector ONNX and reads its outputs (layouts: the module docstring).

    Attributes:
        path: The detector's .onnx file.
        confidence: Boxes scoring below this are dropped.
        iou: NMS drops a box overlapping a better one of the same class by more than this IoU.
        classes: Class ids kept (a box's best class must be one of them); empty: all.
        letterbox: Scale the frame to fit the input keeping its aspect, padded with grey 114 (as YOLO
            trains); False: stretch it to the input.
        input_size: Input side used where the model's input height or width is dynamic.
        layout: ``auto``, ``yolo``, ``ssd`` or ``end2end``.
        box_units: SSD boxes: ``normalised`` (0..1 of the input), ``pixels`` (of the input) or ``auto``
            (normalised when no coordinate exceeds 1.5).
        box_order: SSD boxes: ``xyxy`` or ``yxyx`` (TensorFlow's).
        max_detections: Boxes kept per frame at most (the best scoring).
        device: ``cpu``, ``cuda`` or ``tensorrt`` (ONNX Runtime's execution providers, with CPU fallback).
        threads: ONNX Runtime intra-op threads (0: its default).
    """

    path: Path
    confidence: float = 0.25
    iou: float = 0.45
    classes: Tuple[int, ...] = ()
    letterbox: bool = True
    input_size: int = 640
    layout: str = "auto"
    box_units: str = "auto"
    box_order: str = "xyxy"
    max_detections: int = 100
    device: str = "cpu"
    threads: int = 0

    def __post_init__(self) -> None:
        for name, value, allowed in (("layout", self.layout, LAYOUTS), ("box_units", self.box_units, BOX_UNITS),
                                     ("box_order", self.box_order, BOX_ORDERS),
                                     ("device", self.device, tuple(ORT_PROVIDER_ALIASES))):
            if value not in allowed:
                raise UsageError(f"detector {name} {value!r} is not one of {', '.join(allowed)}")
        if not (0 <= self.confidence <= 1 and 0 < self.iou <= 1):
            raise UsageError(f"detector confidence must be in 0..1 and iou in (0, 1], not {self.confidence} and {self.iou}")
        if self.input_size < 1 or self.max_detections < 1 or self.threads < 0:
            raise UsageError("detector input_size and max_detections must be >= 1, threads >= 0")


class DetectorRunner(OnnxRuntimeRunner):
    """ONNX Runtime on a detector: :meth:`infer_all` returns every output (a detector has one to four).

    One runner may serve the finders of several streams (an ONNX Runtime session runs calls from several
    threads); activate it before handing it over.
    """

    def infer_all(self, feed: np.ndarray) -> List[np.ndarray]:
        """All outputs, in the graph's order, for one input batch."""
        if not self.is_active:
            raise UsageError(f"runner {self.name} must be activated before infer (use it as a context manager)")
        return list(self._session.run(None, {self.input_name: feed}))

    @property
    def output_names(self) -> List[str]:
        return [o.name for o in self._session.get_outputs()] if self._session is not None else []


class DetectorFinder(Finder):
    """A detector ONNX the user brings: letterbox, infer, decode, confidence, class filter, NMS, map back.

    Args:
        config: The detector and how to read it.
        runner: An active :class:`DetectorRunner` for ``config.path`` to share across streams; None: one of
            its own, closed with the finder.

    Raises:
        InputNotFoundError: No such file.
        MissingEnvironmentError: A TensorRT engine (not supported yet), or the device asked for is missing.
        BadInputError: ONNX Runtime cannot load it, or its input is not one image.
    """

    def __init__(self, config: DetectorConfig, *, runner: Optional[DetectorRunner] = None) -> None:
        self.config = config
        path = Path(config.path)
        if path.suffix.lower() in (".engine", ".plan", ".trt"):
            raise MissingEnvironmentError(
                f"{path.name} is a TensorRT engine; the detector finder runs ONNX only for now. Give the detector's "
                ".onnx (with device='tensorrt' ONNX Runtime builds its own TensorRT engine where onnxruntime-gpu has it)")
        if runner is None:
            if not path.is_file():
                raise InputNotFoundError(f"no detector at {path}; give the path of the detector's .onnx")
            runner = DetectorRunner(path, providers=ORT_PROVIDER_ALIASES[config.device], threads=config.threads)
            try:
                runner.activate()
            except BadInputError as exc:
                raise BadInputError(f"ONNX Runtime could not load the detector {path.name} ({exc.__cause__ or exc}); "
                                    "check that it is a valid ONNX model, e.g. re-export it") from exc
            self._owns_runner = True
        elif not runner.is_active:
            raise UsageError(f"activate the shared runner {runner.name} before giving it to a DetectorFinder")
        else:
            self._owns_runner = False
        self._runner: Optional[DetectorRunner] = runner
        self._cv2 = _optional_cv2()
        self._taps: Dict[Tuple[int, int, int, int], Tuple[np.ndarray, ...]] = {}
        self._plan: Optional[Dict[str, Any]] = None
        self._read_input(runner.input_shape, runner.input_type)

    def _read_input(self, shape: Sequence[Any], dtype: str) -> None:
        dims = [d if isinstance(d, int) and d > 0 else None for d in shape]
        if len(dims) != 4 or not (dims[1] in (3, None) or dims[3] == 3):
            raise BadInputError(f"the detector's input has shape {list(shape)}; the finder feeds one RGB image, "
                                "[1, 3, H, W] (NCHW) or [1, H, W, 3] (NHWC)")
        if dtype not in ("tensor(float)", "tensor(float16)", "tensor(uint8)"):
            raise BadInputError(f"the detector's input is {dtype}; the finder feeds float (0..1) or uint8 images")
        self._nchw = dims[1] in (3, None) and dims[3] != 3
        height, width = (dims[2], dims[3]) if self._nchw else (dims[1], dims[2])
        self.input_height = height or self.config.input_size
        self.input_width = width or self.config.input_size
        self._batch = dims[0] or 1
        self._dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8}[dtype]

    def find(self, frame: np.ndarray) -> List[Box]:
        if self._runner is None:
            raise UsageError("this DetectorFinder is closed; make a new one")
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise BadInputError(f"a frame is (H, W, 3) RGB, not {frame.shape}")
        feed, transform = self.preprocess(frame)
        outputs = self._runner.infer_all(feed)
        if self._plan is None:  # output shapes may be dynamic in the graph: decide on the first real ones
            self._plan = plan_layout(outputs, self._runner.output_names, self.config.layout)
        boxes, scores, class_ids = decode(outputs, self._plan, self.config, self.input_width, self.input_height)
        return self._select(boxes, scores, class_ids, transform, frame.shape[1], frame.shape[0])

    def preprocess(self, frame: np.ndarray) -> Tuple[np.ndarray, Tuple[float, float, float, float]]:
        """The model's input for ``frame``, and ``(scale_x, scale_y, left, top)``: input x = frame x * scale_x + left."""
        h, w = frame.shape[:2]
        in_w, in_h = self.input_width, self.input_height
        if self.config.letterbox:
            ratio = min(in_w / w, in_h / h)
            new_w, new_h = max(1, int(round(w * ratio))), max(1, int(round(h * ratio)))
        else:
            new_w, new_h = in_w, in_h
        left, top = (in_w - new_w) // 2, (in_h - new_h) // 2
        image = frame if (new_w, new_h) == (w, h) else self._resize(frame, new_w, new_h)
        if (new_w, new_h) != (in_w, in_h):
            canvas = np.full((in_h, in_w, 3), PAD_GREY, np.uint8)
            canvas[top : top + new_h, left : left + new_w] = image
            image = canvas
        if self._nchw:
            image = image.transpose(2, 0, 1)
        feed = image[None].astype(self._dtype) if self._dtype == np.uint8 else (image[None] / np.float32(255)).astype(self._dtype)
        if self._batch > 1:  # a graph with a fixed batch: fill it with copies, read the first
            feed = np.repeat(feed, self._batch, axis=0)
        return np.ascontiguousarray(feed), (new_w / w, new_h / h, float(left), float(top))

    def _resize(self, frame: np.ndarray, width: int, height: int) -> np.ndarray:
        if self._cv2 is not None:  # bilinear, as Ultralytics letterboxes
            return self._cv2.resize(np.ascontiguousarray(frame), (width, height), interpolation=self._cv2.INTER_LINEAR)
        # Without OpenCV: separable antialiased bilinear taps (what the classifier's preprocessing uses).
        h, w = frame.shape[:2]
        key = (h, w, height, width)
        if key not in self._taps:
            self._taps[key] = resize_taps(h, height) + resize_taps(w, width)
        iy, wy, ix, wx = self._taps[key]
        rows = sum(wy[:, k, None, None] * frame[iy[:, k]] for k in range(iy.shape[1]))  # (height, w, 3)
        out = sum(wx[None, :, k, None] * rows[:, ix[:, k]] for k in range(ix.shape[1]))  # (height, width, 3)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    def _select(self, boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray,
                transform: Tuple[float, float, float, float], width: int, height: int) -> List[Box]:
        c = self.config
        keep = scores >= c.confidence
        if c.classes:
            keep &= np.isin(class_ids, c.classes)
        boxes, scores, class_ids = boxes[keep], scores[keep], class_ids[keep]
        if len(scores) > MAX_CANDIDATES:
            best = np.argsort(-scores, kind="stable")[:MAX_CANDIDATES]
            boxes, scores, class_ids = boxes[best], scores[best], class_ids[best]
        kept = nms(boxes, scores, c.iou, class_ids, limit=c.max_detections)
        sx, sy, left, top = transform
        out = []
        for (x1, y1, x2, y2), score, cls in zip(boxes[kept].tolist(), scores[kept].tolist(), class_ids[kept].tolist()):
            x1, x2 = (min(max((x - left) / sx, 0.0), width) for x in (x1, x2))
            y1, y2 = (min(max((y - top) / sy, 0.0), height) for y in (y1, y2))
            if x2 > x1 and y2 > y1:  # a box wholly in the padding is nothing
                out.append(Box(x1=x1, y1=y1, x2=x2, y2=y2, score=score, class_id=int(cls)))
        return out

    def close(self) -> None:
        if self._runner is not None and self._owns_runner:
            self._runner.deactivate()
        self._runner = None


def _optional_cv2() -> Any:
    try:
        import cv2
    except ImportError:
        return None
    return cv2


ACCEPTED = ("YOLOv8/YOLO11 [1, 4+C, N] or [1, N, 4+C]; SSD boxes [1, N, 4] with scores [1, N, C], or scores [1, N] "
            "and classes [1, N], and optionally a count [1]; end2end [1, N, 6] (x1, y1, x2, y2, score, class; "
            "set layout='end2end')")


def plan_layout(outputs: Sequence[np.ndarray], names: Sequence[str], layout: str = "auto") -> Dict[str, Any]:
    """Which output is what, from the outputs' shapes, names and dtypes (see the module docstring).

    Args:
        outputs: One inference's outputs (batch first).
        names: Their names (may be empty).
        layout: ``auto`` or the layout to read them as.

    Returns:
        ``{"layout": "yolo", "transposed": bool}``, ``{"layout": "end2end"}`` or ``{"layout": "ssd", "boxes": i,
        "scores": j, "classes": k or None, "count": m or None}`` (indices into ``outputs``).

    Raises:
        BadInputError: The outputs match none of the accepted layouts.
    """
    shapes = [tuple(np.shape(o)) for o in outputs]
    names = [n.lower() for n in names] if len(names) == len(outputs) else [""] * len(outputs)
    unknown = BadInputError(f"the detector's outputs {[list(s) for s in shapes]} match no layout the finder reads"
                            f"{'' if layout == 'auto' else f' as {layout!r}'}; accepted: {ACCEPTED}. "
                            "Export the detector in one of them (Ultralytics: format=onnx)")
    if len(outputs) == 1 and len(shapes[0]) == 3 and layout in ("auto", "yolo", "end2end"):
        rows, cols = shapes[0][1:]
        if layout == "end2end":
            if cols != 6:
                raise unknown
            return {"layout": "end2end"}
        if min(rows, cols) < 5:
            raise unknown
        return {"layout": "yolo", "transposed": rows > cols}  # N (anchors) outnumbers 4+C
    if not 2 <= len(outputs) <= 4 or layout not in ("auto", "ssd"):
        raise unknown
    rest = list(range(len(outputs)))
    box_like = [i for i in rest if len(shapes[i]) == 3 and shapes[i][2] == 4]
    if not box_like:
        raise unknown
    boxes = next((i for i in box_like if "box" in names[i]), box_like[0])
    rest.remove(boxes)
    batch, n = shapes[boxes][:2]
    # A detection count (TensorFlow's num_detections) has one value per image.
    count = next((i for i in rest if len(shapes[i]) <= 2 and int(np.prod(shapes[i])) == batch), None)
    if count is not None and len(rest) > 1:
        rest.remove(count)
    else:
        count = None
    if len(rest) == 1 and shapes[rest[0]][:2] == (batch, n) and len(shapes[rest[0]]) in (2, 3):
        return {"layout": "ssd", "boxes": boxes, "scores": rest[0], "classes": None, "count": count}
    if len(rest) != 2 or any(shapes[i] != (batch, n) for i in rest):
        raise unknown
    by_name = [i for i in rest if "class" in names[i] or "label" in names[i]]
    by_dtype = [i for i in rest if np.issubdtype(outputs[i].dtype, np.integer)]
    classes = (by_name or by_dtype or rest[1:])[0]
    scores = rest[0] if classes == rest[1] else rest[1]
    return {"layout": "ssd", "boxes": boxes, "scores": scores, "classes": classes, "count": count}


def decode(outputs: Sequence[np.ndarray], plan: Dict[str, Any], config: DetectorConfig, input_width: int,
           input_height: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first image's candidate boxes ``(N, 4)`` x1, y1, x2, y2 in input pixels, scores ``(N,)`` and class ids
    ``(N,)`` (a YOLO head's anchors below ``config.confidence`` already left out)."""
    if plan["layout"] == "yolo":
        pred = np.asarray(outputs[0][0], np.float32)
        pred = pred.T if plan["transposed"] else pred  # (4+C, N)
        # Most of the N anchors score nothing: drop them before the argmax (a 640 px YOLO head has 8400).
        best = pred[4:].max(axis=0)
        keep = np.flatnonzero(best >= config.confidence)
        pred = pred[:, keep]
        cx, cy, half_w, half_h = pred[0], pred[1], pred[2] / 2, pred[3] / 2
        boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)
        return boxes, best[keep], pred[4:].argmax(axis=0)
    if plan["layout"] == "end2end":
        pred = np.asarray(outputs[0][0], np.float32)
        return pred[:, :4], pred[:, 4], pred[:, 5].round().astype(np.int64)
    boxes = np.asarray(outputs[plan["boxes"]][0], np.float32)
    raw = np.asarray(outputs[plan["scores"]][0], np.float32)
    if raw.ndim == 2:  # (N, C): the best class of each box
        class_ids = raw.argmax(axis=1)
        scores = np.take_along_axis(raw, class_ids[:, None], axis=1)[:, 0]
    else:
        scores = raw
        class_ids = (np.zeros(len(raw), np.int64) if plan["classes"] is None
                     else np.asarray(outputs[plan["classes"]][0]).round().astype(np.int64))
    if plan["count"] is not None:  # rows past the count are padding
        valid = int(np.asarray(outputs[plan["count"]]).ravel()[0])
        boxes, scores, class_ids = boxes[:valid], scores[:valid], class_ids[:valid]
    if config.box_order == "yxyx":
        boxes = boxes[:, [1, 0, 3, 2]]
    normalised = config.box_units == "normalised" or (
        config.box_units == "auto" and (boxes.size == 0 or float(np.abs(boxes).max()) <= 1.5))
    if normalised:
        boxes = boxes * np.array([input_width, input_height, input_width, input_height], np.float32)
    return boxes, scores, class_ids


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, class_ids: Optional[np.ndarray] = None,
        limit: Optional[int] = None) -> np.ndarray:
    """Greedy non-maximum suppression.

    Args:
        boxes: ``(N, 4)`` x1, y1, x2, y2.
        scores: ``(N,)``.
        iou: A box overlapping a kept, better-scoring one by more than this is dropped.
        class_ids: ``(N,)``; boxes of different classes never suppress each other. None: one class.
        limit: Stop after keeping this many (None: no limit).

    Returns:
        Indices of the kept boxes, best first.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    if class_ids is not None:
        # Shift each class into its own region so that boxes of two classes never overlap.
        span = float(boxes.max() - boxes.min()) + 1.0
        boxes = boxes + (np.asarray(class_ids, np.float64) * span)[:, None]
    x1, y1, x2, y2 = boxes.T
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep = []
    while order.size and (limit is None or len(keep) < limit):
        best, order = order[0], order[1:]
        keep.append(best)
        w = np.maximum(np.minimum(x2[best], x2[order]) - np.maximum(x1[best], x1[order]), 0)
        h = np.maximum(np.minimum(y2[best], y2[order]) - np.maximum(y1[best], y1[order]), 0)
        inter = w * h
        order = order[inter <= iou * np.maximum(areas[best] + areas[order] - inter, 1e-12)]
    return np.asarray(keep, np.int64)


def make_finder(spec: Union[str, Path, MotionConfig, DetectorConfig] = "motion", *, classes: Sequence[int] = (),
                runner: Optional[DetectorRunner] = None) -> Finder:
    """A new finder for one stream.

    Args:
        spec: ``"motion"`` (a :class:`MotionFinder` with default settings), the path of a detector ONNX (a
            :class:`DetectorFinder` with default settings), or a config.
        classes: With a detector path: the class ids kept (empty: all).
        runner: With a detector: an active shared runner (see :class:`DetectorFinder`).
    """
    if isinstance(spec, MotionConfig):
        return MotionFinder(spec)
    if isinstance(spec, DetectorConfig):
        return DetectorFinder(spec, runner=runner)
    if str(spec) == "motion":
        return MotionFinder()
    return DetectorFinder(DetectorConfig(path=Path(spec), classes=tuple(int(c) for c in classes)), runner=runner)

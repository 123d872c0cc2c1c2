"""The unit's counting lines as a Gst-nvdsanalytics config (``config_nvdsanalytics.txt``), and its checker.

A DeepStream user counts on the same lines as the unit: each of our lines (``[CAMERA/]NAME=x1,y1,x2,y2[:DIR]``,
frame pixels) becomes ``line-crossing-<NAME>-<DIR>`` entries in the ``[line-crossing-stream-N]`` group of the
camera's stream, and the file is read back and checked against the documented keys before it is handed off.

What the file says, and where each rule comes from:

* **Groups and keys.** ``[property]`` (``enable``, ``config-width``, ``config-height``, ``osd-mode`` 0..2,
  ``display-font-size``, ``obj-cnt-win-in-ms``, ``display-obj-cnt``) and per stream ``[roi-filtering-stream-N]``,
  ``[overcrowding-stream-N]``, ``[line-crossing-stream-N]`` (``enable``, ``line-crossing-<label>``, ``class-id``,
  ``extended``, ``mode``) and ``[direction-detection-stream-N]``: NVIDIA DeepStream Developer Guide,
  "Gst-nvdsanalytics" (https://docs.nvidia.com/metropolis/deepstream/dev-guide/text/DS_plugin_gst-nvdsanalytics.html),
  NVIDIA's sample ``sources/apps/sample_apps/deepstream-nvdsanalytics-test/config_nvdsanalytics.txt`` and the
  plugin's key-file parser ``sources/gst-plugins/gst-nvdsanalytics/nvdsanalytics_property_parser.cpp`` (DeepStream
  6.x sources, MIT), which is what the table :data:`GROUPS` follows: exact key names, ``;`` as the list separator,
  ``g_key_file_get_boolean`` / ``_integer`` / ``_integer_list`` / ``_string`` per key. A key it does not know is
  printed ("Unknown key") and ignored, an unknown group ignored: a misspelt key silently does nothing, hence
  the checker.
* **``line-crossing-<label>=dx1;dy1;dx2;dy2;x1;y1;x2;y2``**: 8 non-negative integers (the parser refuses
  negatives), the first four a direction vector (from ``(dx1, dy1)`` to ``(dx2, dy2)``), the last four the
  line, in the pixels of ``config-width`` x ``config-height`` (nvdsanalytics scales them to the
  nvstreammux resolution; ``StreamInfo::config_width/config_height`` in ``nvds_analytics.h``). A vehicle is
  counted on the label when it crosses the line going the way of the vector. We draw the vector through the
  line's midpoint, perpendicular to it, from the side a vehicle leaves to the side it reaches, so it crosses
  the line in the counted direction (as NVIDIA's sample does); the checker verifies that it does.
* **Labels.** Always ``<NAME>-<DIRECTION>`` with the unit's direction names (``up``/``down`` for a line more
  horizontal than vertical, ``left``/``right`` otherwise; judged by the side reached, as
  :meth:`toolchain.runtime.geometry.Line.direction_to`): a line counted one way gives one entry, a line counted
  both ways (no ``:DIR``) two, so a label always names the unit's ``(line, direction)`` counter.
* **``extended=0``**: only the segment counts, as on the unit ("a track that never touches the segment does not
  count"). The parser defaults ``extended`` to 1 (the whole infinite line) when the key is absent, so it is
  always written.
* **``mode=loose``** (default; ``--line-mode``): the sample documents ``loose`` as counting every crossing without
  strong adherence to the direction, ``balanced`` and ``strict`` as increasingly strict about it. The unit counts
  any crossing of the segment and names its direction by the side reached, whatever the angle, so ``loose`` is
  the nearest. (An unknown mode falls back to ``loose`` in the parser, silently: the checker refuses it.)
* **``class-id``**: the detector's classes to count, ``-1`` for all (the sample's value). Secondary hand-offs
  with ``--operate-on-class-ids`` count those classes, the ones the classifier labels; otherwise ``-1``.
* **Anchor.** nvdsanalytics judges the bottom centre of a box, ``(x_left + width/2, y_top + height)`` (Developer
  Guide), and line crossing needs a tracker id. The unit judges ``--anchor`` (``centre`` by default): with
  ``centre`` a vehicle reaches a line at a different moment in DeepStream, and a line within half a vehicle's
  height of the frame's top or bottom edge may count differently. That is said in the file and the report;
  ``--anchor bottom`` on the unit (``serve``/``count``) judges the same point.

One ``config-width``/``config-height`` holds for every stream (it is a ``[property]`` key): lines of cameras
with other resolutions must be scaled to one frame size first. Streams are nvstreammux's source indices
(``sink_N``): ``--stream CAMERA=N``, or, without it, the cameras in the order their lines first appear (lines
without a camera go to every stream; with no camera at all, stream 0).
"""

from __future__ import annotations

import configparser
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolchain.errors import BadInputError, UsageError
from toolchain.fileio import write_atomic
from toolchain.runtime.geometry import ANCHORS, DIRECTIONS, Line

ANALYTICS_FILE = "config_nvdsanalytics.txt"
LINE_MODES = ("loose", "balanced", "strict")
NVDSANALYTICS_ANCHOR = "bottom"
SOURCES = (
    "NVIDIA DeepStream Developer Guide, Gst-nvdsanalytics "
    "(https://docs.nvidia.com/metropolis/deepstream/dev-guide/text/DS_plugin_gst-nvdsanalytics.html); "
    "DeepStream sample deepstream-nvdsanalytics-test/config_nvdsanalytics.txt; "
    "gst-nvdsanalytics/nvdsanalytics_property_parser.cpp"
)

BOOL, UINT, INT_LIST, UINT_LIST, CHOICE = "bool", "uint", "int-list", "uint-list", "choice"


@dataclass(frozen=True, kw_only=True)
class Key:
    """How nvdsanalytics reads one key: its type, and for lists and choices what it accepts."""

    type: str
    choices: tuple[Any, ...] = ()
    length: int | None = None  # exact list length
    even: bool = False  # a list of x;y pairs


@dataclass(frozen=True, kw_only=True)
class Group:
    """A documented group: its exact keys, and the key prefixes that carry a ``<label>``."""

    keys: dict[str, Key]
    labelled: dict[str, Key] = field(default_factory=dict)


_CLASS_ID = Key(type=INT_LIST)
_ENABLE = Key(type=BOOL)
_MODE = Key(type=CHOICE, choices=LINE_MODES)
GROUPS: dict[str, Group] = {
    "property": Group(keys={
        "enable": _ENABLE, "config-width": Key(type=UINT), "config-height": Key(type=UINT),
        "osd-mode": Key(type=UINT, choices=(0, 1, 2)),  # 0 nothing, 1 lines/ROIs and labels, 2 also counts
        "display-font-size": Key(type=UINT), "obj-cnt-win-in-ms": Key(type=UINT), "display-obj-cnt": Key(type=BOOL),
    }),
    "roi-filtering-stream-": Group(keys={"enable": _ENABLE, "class-id": _CLASS_ID, "inverse-roi": Key(type=BOOL)},
                                   labelled={"roi-": Key(type=UINT_LIST, even=True)}),
    "overcrowding-stream-": Group(keys={"enable": _ENABLE, "class-id": _CLASS_ID, "object-threshold": Key(type=UINT),
                                        "time-threshold": Key(type=UINT)},
                                  labelled={"roi-": Key(type=UINT_LIST, even=True)}),
    "line-crossing-stream-": Group(keys={"enable": _ENABLE, "class-id": _CLASS_ID, "extended": Key(type=BOOL),
                                         "mode": _MODE},
                                   labelled={"line-crossing-": Key(type=UINT_LIST, length=8)}),
    "direction-detection-stream-": Group(keys={"enable": _ENABLE, "class-id": _CLASS_ID, "mode": _MODE},
                                         labelled={"direction-": Key(type=UINT_LIST, length=4)}),
}
"""Every documented nvdsanalytics group (``...-stream-`` groups end in the stream index) and its keys, per
:data:`SOURCES` (the parser's key names and readers)."""

_INT = re.compile(r"^[+-]?\d+$")
_STREAM_GROUP = re.compile(r"^(?P<kind>[a-z-]+-stream-)(?P<stream>\d+)$")
_FRAME_SIZE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


@dataclass(frozen=True, kw_only=True)
class Crossing:
    """One ``line-crossing-<label>`` entry: a line of a stream counted in one direction.

    Attributes:
        stream: nvstreammux source index (``[line-crossing-stream-N]``).
        camera: The camera the line belongs to ("" for a stream standing for every camera).
        line: The line in whole pixels.
        direction: The counted direction (``up``/``down``/``left``/``right``).
        vector: The direction vector ``(x1, y1, x2, y2)`` across the line, in whole pixels.
    """

    stream: int
    camera: str
    line: Line
    direction: str
    vector: tuple[int, int, int, int]

    @property
    def label(self) -> str:
        return f"{self.line.name}-{self.direction}"

    @property
    def numbers(self) -> tuple[int, ...]:
        """The 8 values: direction vector, then line."""
        return (*self.vector, *(int(v) for v in (self.line.x1, self.line.y1, self.line.x2, self.line.y2)))

    def value(self) -> str:
        return ";".join(map(str, self.numbers))


@dataclass(frozen=True, kw_only=True)
class AnalyticsOptions:
    """The lines a DeepStream hand-off writes as an nvdsanalytics config.

    Attributes:
        lines: ``(camera, line)`` pairs; camera "" for a line every camera counts on.
        frame_size: ``(width, height)`` of the frames the line coordinates are in (``config-width/height``).
        streams: ``(camera, stream index)`` pairs (nvstreammux ``sink_N``); empty: in order of appearance.
        anchor: The point of a box the unit judges (``centre`` or ``bottom``); nvdsanalytics judges the bottom.
        mode: nvdsanalytics ``mode`` (``loose``, ``balanced``, ``strict``).
    """

    lines: tuple[tuple[str, Line], ...]
    frame_size: tuple[int, int]
    streams: tuple[tuple[str, int], ...] = ()
    anchor: str = "centre"
    mode: str = "loose"

    def __post_init__(self) -> None:
        if not self.lines:
            raise UsageError("an nvdsanalytics config needs at least one --line")
        if self.anchor not in ANCHORS:
            raise UsageError(f"--anchor must be one of {', '.join(ANCHORS)}, not {self.anchor!r}")
        if self.mode not in LINE_MODES:
            raise UsageError(f"--line-mode must be one of {', '.join(LINE_MODES)}, not {self.mode!r}")
        width, height = self.frame_size
        if width < 1 or height < 1:
            raise UsageError(f"--frame-size {width}x{height}: give the frame's width and height in pixels, e.g. 1920x1080")
        cameras = [c for c, _ in self.streams]
        indices = [n for _, n in self.streams]
        if len(set(cameras)) != len(cameras) or len(set(indices)) != len(indices):
            raise UsageError(f"--stream {', '.join(f'{c}={n}' for c, n in self.streams)}: give each camera one stream "
                             "index and each index one camera")
        if any(n < 0 for n in indices) or any(not c for c in cameras):
            raise UsageError("--stream takes CAMERA=N with a camera name and N >= 0 (nvstreammux's sink_N)")
        for camera, line in self.lines:
            outside = [(x, y) for x, y in ((line.x1, line.y1), (line.x2, line.y2))
                       if not (0 <= x <= width and 0 <= y <= height)]
            if outside:
                where = f" of camera {camera}" if camera else ""
                raise UsageError(f"line {line.name}{where}: point(s) {', '.join(f'({x:g}, {y:g})' for x, y in outside)} "
                                 f"lie outside the {width}x{height} frame of --frame-size (line coordinates are pixels "
                                 f"of the full frame: x in 0..{width}, y in 0..{height}); fix the line or the frame size")
        self.crossings()  # stream mapping, duplicate labels, direction vectors: refused now, not after the model work

    @classmethod
    def parse(cls, lines: Sequence[str], *, frame_size: str | None, streams: Sequence[str] = (),
              anchor: str = "centre", mode: str = "loose") -> AnalyticsOptions | None:
        """The options from the CLI's ``--line``, ``--frame-size``, ``--stream``, ``--anchor``, ``--line-mode``
        (None without lines).

        Raises:
            UsageError: A malformed value; ``--frame-size`` missing with lines; ``--frame-size``/``--stream``
                without lines.
        """
        if not lines:
            if frame_size or streams:
                raise UsageError("--frame-size and --stream describe the --line coordinates; give at least one --line "
                                 "(or leave them out)")
            return None
        if not frame_size:
            raise UsageError("--line needs --frame-size WxH: the size of the frames the line coordinates are in (the "
                             "camera's full decoded frame, e.g. 1920x1080); nvdsanalytics scales them from it "
                             "(config-width/config-height)")
        match = _FRAME_SIZE.match(frame_size)
        if match is None:
            raise UsageError(f"--frame-size {frame_size!r} is not WxH, e.g. 1920x1080")
        from toolchain.runtime.vehicles import VehicleConfig  # the unit's own `[CAMERA/]NAME=...` reader

        parsed = tuple(VehicleConfig.parse_line(text) for text in lines)
        pairs = []
        for text in streams:
            camera, eq, index = text.partition("=")
            if not eq or not camera.strip() or not _INT.match(index.strip()):
                raise UsageError(f"--stream {text!r} is not CAMERA=N (N: nvstreammux's source index, sink_N)")
            pairs.append((camera.strip(), int(index)))
        return cls(lines=parsed, frame_size=(int(match.group(1)), int(match.group(2))), streams=tuple(pairs),
                   anchor=anchor, mode=mode)

    def stream_ids(self) -> dict[str, int]:
        """Camera -> stream index ("" -> 0 when no line names a camera and no ``--stream`` is given)."""
        named = list(dict.fromkeys(camera for camera, _ in self.lines if camera))
        if self.streams:
            mapping = dict(self.streams)
            missing = [c for c in named if c not in mapping]
            if missing:
                raise UsageError(f"camera(s) {', '.join(missing)} have lines but no --stream CAMERA=N; give every "
                                 "camera its nvstreammux source index (or leave --stream out to number them in order)")
            return mapping
        return {c: i for i, c in enumerate(named)} if named else {"": 0}

    def crossings(self) -> tuple[Crossing, ...]:
        """Every ``line-crossing-<label>`` entry, by stream, then line order, then direction."""
        shared = [line for camera, line in self.lines if not camera]
        result = []
        for camera, stream in sorted(self.stream_ids().items(), key=lambda item: item[1]):
            own = [line for name, line in self.lines if name and name == camera]
            labels: set[str] = set()
            for line in shared + own:
                whole = _whole(line)
                for direction in line.counted:
                    crossing = Crossing(stream=stream, camera=camera, line=whole, direction=direction,
                                        vector=direction_vector(whole, direction, self.frame_size))
                    if crossing.label in labels:
                        raise UsageError(f"line {line.name} is given twice for {f'camera {camera}' if camera else 'the stream'}"
                                         " (a shared line and a camera's own line share the name?); name each line once")
                    labels.add(crossing.label)
                    result.append(crossing)
        return tuple(result)


@dataclass(frozen=True, kw_only=True)
class AnalyticsHandoff:
    """The written file, what its check found, and what differs from the unit."""

    path: Path
    report: dict[str, Any]
    notes: tuple[str, ...] = ()


def _whole(line: Line) -> Line:
    """The line with its end points on whole pixels (nvdsanalytics reads integers)."""
    coords = [int(v + 0.5) if v >= 0 else int(v - 0.5) for v in (line.x1, line.y1, line.x2, line.y2)]
    return Line(name=line.name, x1=coords[0], y1=coords[1], x2=coords[2], y2=coords[3], direction=line.direction)


def _arrow_crosses(line: Line, direction: str, vector: Sequence[float]) -> str | None:
    """None when ``vector`` crosses the segment of ``line`` from the other side to the ``direction`` side;
    else what is wrong."""
    sx, sy, ex, ey = vector
    if (sx, sy) == (ex, ey):
        return "the direction vector has no length"
    start, end = line.side(sx, sy), line.side(ex, ey)
    if start == 0 or end == 0 or (start > 0) == (end > 0):
        return "the direction vector does not go from one side of the line to the other"
    if not _segments_cross((sx, sy, ex, ey), (line.x1, line.y1, line.x2, line.y2)):
        return "the direction vector does not cross the segment (only its extension)"
    reached = line.direction_to(end)
    if direction and reached != direction:
        return f"the direction vector goes {reached} across the line, not {direction}"
    return None


def _segments_cross(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether segment ``a`` meets segment ``b`` (end points on the other segment count)."""
    def orient(px: float, py: float, qx: float, qy: float, rx: float, ry: float) -> float:
        return (qx - px) * (ry - py) - (qy - py) * (rx - px)

    ax1, ay1, ax2, ay2 = a
    bx1, by1, bx2, by2 = b
    d1, d2 = orient(bx1, by1, bx2, by2, ax1, ay1), orient(bx1, by1, bx2, by2, ax2, ay2)
    d3, d4 = orient(ax1, ay1, ax2, ay2, bx1, by1), orient(ax1, ay1, ax2, ay2, bx2, by2)
    return d1 * d2 <= 0 and d3 * d4 <= 0


def direction_vector(line: Line, direction: str, frame_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """A whole-pixel vector through the middle of ``line``, perpendicular to it, crossing it towards ``direction``,
    inside the frame: about 4% of the frame's smaller side long on each side of the line, shorter where the
    frame's edge is nearer.

    Raises:
        UsageError: No such vector fits in the frame (the line lies along the frame's edge, where no anchor
            crosses it).
    """
    width, height = frame_size
    mx, my = (line.x1 + line.x2) / 2, (line.y1 + line.y2) / 2
    dx, dy = line.x2 - line.x1, line.y2 - line.y1
    length = (dx * dx + dy * dy) ** 0.5
    nx, ny = -dy / length, dx / length
    if line.direction_to(line.side(mx + nx, my + ny)) != direction:
        nx, ny = -nx, -ny
    for half in range(max(2, round(0.04 * min(width, height))), 0, -1):
        vector = tuple(int(v + 0.5) if v >= 0 else int(v - 0.5)
                       for v in (mx - half * nx, my - half * ny, mx + half * nx, my + half * ny))
        inside = all(0 <= x <= width for x in vector[::2]) and all(0 <= y <= height for y in vector[1::2])
        if inside and _arrow_crosses(line, direction, vector) is None:
            return vector  # type: ignore[return-value]
    raise UsageError(f"line {line.name}: no direction vector crossing it {direction} fits inside the {width}x{height} "
                     "frame (it lies along the frame's edge, where no vehicle's anchor can cross it); move it inside")


def render(options: AnalyticsOptions, *, class_ids: Sequence[int], source: str, pipeline: Sequence[str]) -> str:
    """The ``config_nvdsanalytics.txt`` text (a GLib key file: whole-line ``#`` comments, ``;`` lists)."""
    width, height = options.frame_size
    streams = options.stream_ids()
    anchor = (("nvdsanalytics judges the box's bottom centre, and so does the unit (--anchor bottom).",)
              if options.anchor == NVDSANALYTICS_ANCHOR else
              (f"KNOWN DIFFERENCE: nvdsanalytics judges the box's bottom centre, the unit its {options.anchor} "
               f"(--anchor {options.anchor}):",
               "# the same vehicles cross, at other moments; pass --anchor bottom to serve/count for the same point."))
    lines = [
        f"# Gst-nvdsanalytics config written by `toolchain handoff` from {source}: the unit's counting lines.",
        f"# Coordinates are pixels of a {width}x{height} frame; nvdsanalytics scales them to the nvstreammux resolution.",
        "# line-crossing-<LINE>-<DIRECTION>: vehicles crossing LINE going DIRECTION (as the unit names it); the first",
        "# four numbers are a direction vector across the line, the last four the line. A line counted both ways has",
        "# one entry per direction. extended=0: only the segment counts, as on the unit.",
        f"# Anchor: {anchor[0]}", *anchor[1:],
        *(f"# Pipeline: {step}" if i == 0 else f"#   -> {step}" for i, step in enumerate(pipeline)),
        "# Rerun `toolchain handoff` rather than editing: the file is checked against nvdsanalytics' documented keys.",
        "[property]",
        "enable=1",
        f"config-width={width}",
        f"config-height={height}",
        "osd-mode=2",
    ]
    by_stream: dict[int, list[Crossing]] = {}
    for crossing in options.crossings():
        by_stream.setdefault(crossing.stream, []).append(crossing)
    cameras = {n: c for c, n in streams.items()}
    for stream, crossings in sorted(by_stream.items()):
        camera = cameras.get(stream, "")
        lines += ["", f"# stream {stream} (nvstreammux sink_{stream}): " + (f"camera {camera}" if camera else "every camera"),
                  f"[line-crossing-stream-{stream}]", "enable=1"]
        lines += [f"line-crossing-{c.label}={c.value()}" for c in crossings]
        lines += [f"class-id={';'.join(map(str, class_ids)) if class_ids else -1}", "extended=0", f"mode={options.mode}"]
    return "\n".join(lines) + "\n"


def _read_value(raw: str, key: Key) -> Any:
    """``raw`` as the nvdsanalytics parser reads it (GLib key file); ValueError when it cannot."""
    text = raw.strip()
    if key.type == BOOL:
        if text not in ("1", "0", "true", "false"):
            raise ValueError(f"{text!r} is not a key-file boolean (1, 0, true or false)")
        return text in ("1", "true")
    if key.type == CHOICE:
        if text not in key.choices:
            raise ValueError(f"{text!r} is not one of {', '.join(key.choices)} (nvdsanalytics would fall back silently)")
        return text
    if key.type == UINT:
        if not _INT.match(text) or int(text) < 0:
            raise ValueError(f"{text!r} is not a non-negative integer")
        value = int(text)
        if key.choices and value not in key.choices:
            raise ValueError(f"{value} is not one of {', '.join(map(str, key.choices))}")
        return value
    items = [i.strip() for i in text.split(";")]
    if items and items[-1] == "":
        items.pop()  # GLib allows a trailing separator
    if not items or not all(_INT.match(i) for i in items):
        raise ValueError(f"{text!r} is not a ';'-separated list of integers")
    values = [int(i) for i in items]
    if key.type == UINT_LIST and any(v < 0 for v in values):
        raise ValueError("has negative values (nvdsanalytics refuses them)")
    if key.length is not None and len(values) != key.length:
        raise ValueError(f"needs {key.length} integers separated by ';', has {len(values)}")
    if key.even and len(values) % 2:
        raise ValueError("needs x;y pairs (an even count)")
    return values


def read_analytics(text: str) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """``(groups, problems)``: every group of an nvdsanalytics config with its values typed as the plugin reads
    them, and every group, key or value it would ignore or refuse."""
    parser = configparser.RawConfigParser(delimiters=("=",), comment_prefixes=("#",), inline_comment_prefixes=None,
                                          strict=True, interpolation=None, default_section="\x00")
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive in a key file
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        return {}, [f"not a key file: {exc}"]
    problems = []
    if not parser.has_section("property"):
        problems.append("no [property] group (nvdsanalytics requires it)")
    groups: dict[str, dict[str, Any]] = {}
    for name in parser.sections():
        match = _STREAM_GROUP.match(name)
        spec = GROUPS.get("property") if name == "property" else GROUPS.get(match.group("kind")) if match else None
        if spec is None:
            problems.append(f"[{name}]: not a documented nvdsanalytics group (it is ignored)")
            continue
        values: dict[str, Any] = {}
        for key, raw in parser.items(name):
            rule = spec.keys.get(key)
            if rule is None:
                rule = next((r for prefix, r in spec.labelled.items() if key.startswith(prefix) and len(key) > len(prefix)),
                            None)
            if rule is None:
                problems.append(f"[{name}] {key}: not a documented nvdsanalytics key (it is ignored)")
                continue
            try:
                values[key] = _read_value(raw, rule)
            except ValueError as exc:
                problems.append(f"[{name}] {key}={raw}: {exc}")
        groups[name] = values
    return groups, problems


def check_analytics_config(path: Path, expected: Sequence[Crossing] | None = None) -> dict[str, Any]:
    """Check a written nvdsanalytics config: documented groups, keys and value types; frame size; every line
    crossing entry's 8 integers inside the frame, its direction vector crossing the segment in the counted
    direction (the ``-<DIRECTION>`` of its label); ``extended=0``; and, with ``expected``, exactly those entries.

    Returns:
        The report (keys per group, frame, entries) that goes into ``handoff.json``.

    Raises:
        BadInputError: Any problem (listed); a generated file that fails is a bug in the generator.
    """
    groups, problems = read_analytics(path.read_text())
    prop = groups.get("property", {})
    width, height = prop.get("config-width"), prop.get("config-height")
    if "property" in groups:
        if prop.get("enable") is not True:
            problems.append("[property] enable is not 1: nvdsanalytics passes everything through")
        if not width or not height:
            problems.append("[property] needs config-width and config-height above 0 (the frame the coordinates are in)")
    entries = []
    for name, values in groups.items():
        if not name.startswith("line-crossing-stream-"):
            continue
        stream = int(name.rsplit("-", 1)[1])
        labelled = {k[len("line-crossing-"):]: v for k, v in values.items() if k.startswith("line-crossing-")}
        if not labelled:
            problems.append(f"[{name}] has no line-crossing-<label> (nvdsanalytics refuses the file)")
        if values.get("enable") is not True:
            problems.append(f"[{name}] enable is not 1: its lines count nothing")
        if values.get("extended") is not False:
            problems.append(f"[{name}] extended must be 0 (nvdsanalytics takes 1, the infinite line, when it is absent; "
                            "the unit counts the segment only)")
        if "class-id" not in values:
            problems.append(f"[{name}] has no class-id (-1: every class)")
        for label, numbers in labelled.items():
            if not isinstance(numbers, list) or len(numbers) != 8:
                continue  # already a problem
            if width and height and not (all(0 <= x <= width for x in numbers[::2])
                                         and all(0 <= y <= height for y in numbers[1::2])):
                problems.append(f"[{name}] line-crossing-{label}: {numbers} leaves the {width}x{height} frame of "
                                "config-width/config-height")
                continue
            if tuple(numbers[4:6]) == tuple(numbers[6:8]):
                problems.append(f"[{name}] line-crossing-{label}: the line has the same start and end")
                continue
            line = Line(name=label, x1=numbers[4], y1=numbers[5], x2=numbers[6], y2=numbers[7])
            suffix = label.rsplit("-", 1)[-1]
            direction = suffix if suffix in DIRECTIONS else ""
            if direction and direction not in line.directions:
                problems.append(f"[{name}] line-crossing-{label}: a {'horizontal' if line.horizontal else 'vertical'}-ish "
                                f"line is crossed {' or '.join(line.directions)}, not {direction}")
                continue
            wrong = _arrow_crosses(line, direction, numbers[:4])
            if wrong:
                problems.append(f"[{name}] line-crossing-{label}: {wrong}")
                continue
            entries.append({"stream": stream, "label": label, "direction": direction or None, "vector": numbers[:4],
                            "segment": numbers[4:], "crosses": True})
    if expected is not None:
        want = {(c.stream, c.label): list(c.numbers) for c in expected}
        have = {(e["stream"], e["label"]): e["vector"] + e["segment"] for e in entries}
        if not problems and want != have:
            problems.append(f"the entries {sorted(have.items())} are not the lines asked for {sorted(want.items())}")
    if problems:
        raise BadInputError(f"{path} is not a valid Gst-nvdsanalytics config: " + "; ".join(problems))
    return {
        "file": path.name, "documented": True, "sources": SOURCES,
        "keys": {name: sorted(values) for name, values in groups.items()},
        "frame": [width, height], "entries": entries,
    }


def write_analytics(folder: Path, options: AnalyticsOptions, *, class_ids: Sequence[int], source: str,
                    pipeline: Sequence[str] = ()) -> AnalyticsHandoff:
    """Write ``config_nvdsanalytics.txt`` into ``folder`` (next to the nvinfer config) and check it.

    Args:
        class_ids: The detector's classes to count (empty: ``-1``, all).
        source: What the hand-off was made from (a comment in the file).
        pipeline: The DeepStream elements in order (comments in the file).
    """
    path = folder / ANALYTICS_FILE
    write_atomic(path, render(options, class_ids=class_ids, source=source, pipeline=pipeline))
    crossings = options.crossings()
    report = check_analytics_config(path, expected=crossings)
    differences = []
    if options.anchor != NVDSANALYTICS_ANCHOR:
        differences.append(f"anchor: nvdsanalytics judges a box's bottom centre, the unit its {options.anchor} "
                           "(--anchor); a vehicle reaches a line at another moment, and a line within half a vehicle's "
                           "height of the frame's top or bottom edge may count differently; --anchor bottom on "
                           "serve/count judges the same point")
    differences.append("crossing rule: the unit counts a crossing of the segment with a hysteresis band and names its "
                       f"direction by the side reached; nvdsanalytics applies its own history and mode={options.mode}: "
                       "counts agree on clean crossings, not necessarily frame for frame")
    differences.append("vehicles: nvdsanalytics counts the objects your detector (PGIE) finds and nvtracker follows, "
                       "with class-id filtering the detector's classes; the car/truck class of a counted vehicle is "
                       "this classifier's label on that object (SGIE), joined in your probe")
    camera_line = {(c.stream, c.label): (c.camera or "*", c.line.name) for c in crossings}
    for entry in report["entries"]:  # what was read back, with the camera and line each entry stands for
        entry["camera"], entry["line"] = camera_line[(entry["stream"], entry["label"])]
    report.update({
        "streams": {camera or "*": n for camera, n in options.stream_ids().items()}, "mode": options.mode,
        "extended": False,
        "class_ids": list(class_ids) or [-1],
        "anchor": {"unit": options.anchor, "nvdsanalytics": NVDSANALYTICS_ANCHOR,
                   "same": options.anchor == NVDSANALYTICS_ANCHOR},
        "known_differences": differences,
    })
    notes = [f"{ANALYTICS_FILE}: {len(crossings)} line-crossing entr{'y' if len(crossings) == 1 else 'ies'} on "
             f"stream(s) {', '.join(str(n) for n in sorted(set(c.stream for c in crossings)))}, checked against "
             "nvdsanalytics' documented keys; labels are <LINE>-<DIRECTION>"]
    if options.anchor != NVDSANALYTICS_ANCHOR:
        notes.append(f"{ANALYTICS_FILE}: nvdsanalytics judges the bottom centre of a box, the unit --anchor "
                     f"{options.anchor}: a known difference (pass --anchor bottom to serve/count for the same point)")
    return AnalyticsHandoff(path=path, report=report, notes=tuple(notes))

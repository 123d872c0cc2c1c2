"""Boxes and counting lines in frame pixels: the vocabulary the vehicle pipeline's stages share.

``find`` turns a frame into :class:`Box` es, ``follow`` gives them track ids, ``count`` judges an anchor
of each tracked box against :class:`Line` s. Coordinates are pixels of the full decoded frame, x to the
right and y down, as images are stored.

Standard library only, Python 3.8 compatible (the roadside runtime).
"""

from __future__ import annotations

import re
from typing import Tuple

from toolchain.errors import UsageError
from toolchain.runtime.compat import frozen_config

DIRECTIONS = ("up", "down", "left", "right")
"""How a crossing is named: by the way the vehicle moved across the line in the picture."""

ANCHORS = ("centre", "bottom")
"""Which point of a box is judged against a line: its centre (what a person counting by eye follows),
or its bottom centre (where the vehicle meets the road; what DeepStream's nvdsanalytics uses)."""


@frozen_config
class Box:
    """An axis-aligned box in frame pixels, with what found it.

    Attributes:
        x1: Left edge.
        y1: Top edge.
        x2: Right edge (> x1).
        y2: Bottom edge (> y1).
        score: The finder's confidence (1.0 for motion).
        class_id: The detector's class (-1: motion, no class).
    """

    x1: float
    y1: float
    x2: float
    y2: float
    score: float = 1.0
    class_id: int = -1

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    def anchor(self, which: str = "centre") -> Tuple[float, float]:
        """The point judged against lines (see :data:`ANCHORS`)."""
        x = (self.x1 + self.x2) / 2
        return (x, self.y2) if which == "bottom" else (x, (self.y1 + self.y2) / 2)

    def iou(self, other: Box) -> float:
        """Intersection over union with ``other`` (0 when they do not overlap)."""
        w = min(self.x2, other.x2) - max(self.x1, other.x1)
        h = min(self.y2, other.y2) - max(self.y1, other.y1)
        if w <= 0 or h <= 0:
            return 0.0
        inter = w * h
        return inter / (self.area + other.area - inter)


_LINE = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)=(?P<coords>[-0-9.,\s]+?)(?::(?P<direction>[a-z]+))?$")


@frozen_config
class Line:
    """A counting line: a segment from ``(x1, y1)`` to ``(x2, y2)`` in frame pixels.

    A vehicle crosses it when its anchor passes from one side to the other between two frames at a point
    on the segment (not on the line's extension). A line more horizontal than vertical has crossings
    ``up`` and ``down``; a steeper one ``left`` and ``right``. ``direction`` keeps one of them (empty:
    both, counted apart).

    Attributes:
        name: What counts and events call it.
        x1: Start, x.
        y1: Start, y.
        x2: End, x.
        y2: End, y.
        direction: The only direction counted, or "" for both.
    """

    name: str
    x1: float
    y1: float
    x2: float
    y2: float
    direction: str = ""

    def __post_init__(self) -> None:
        if (self.x1, self.y1) == (self.x2, self.y2):
            raise UsageError(f"line {self.name!r} has the same start and end; give two different points")
        if self.direction and self.direction not in self.directions:
            raise UsageError(f"line {self.name!r} is {'horizontal' if self.horizontal else 'vertical'}-ish, so its "
                             f"direction is one of {', '.join(self.directions)}, not {self.direction!r}")

    @property
    def horizontal(self) -> bool:
        """Whether the segment is more horizontal than vertical (its crossings are up or down)."""
        return abs(self.x2 - self.x1) >= abs(self.y2 - self.y1)

    @property
    def directions(self) -> Tuple[str, str]:
        """The two directions a crossing of this line can have."""
        return ("up", "down") if self.horizontal else ("left", "right")

    @property
    def counted(self) -> Tuple[str, ...]:
        """The directions this line counts: its one ``direction``, else both."""
        return (self.direction,) if self.direction else self.directions

    @classmethod
    def parse(cls, text: str) -> Line:
        """``NAME=x1,y1,x2,y2[:DIRECTION]`` (pixels of the full frame), e.g. ``UP=0,150,235,150:up``."""
        match = _LINE.match(text.strip())
        if match is None:
            raise UsageError(f"--line {text!r} is not NAME=x1,y1,x2,y2[:up|down|left|right] (frame pixels), "
                             "e.g. north=0,150,235,150:up")
        try:
            x1, y1, x2, y2 = (float(v) for v in match.group("coords").split(","))
        except ValueError as exc:
            raise UsageError(f"--line {text!r}: give four numbers x1,y1,x2,y2") from exc
        return cls(name=match.group("name"), x1=x1, y1=y1, x2=x2, y2=y2, direction=match.group("direction") or "")

    def spec(self) -> str:
        """The ``NAME=x1,y1,x2,y2[:DIRECTION]`` text :meth:`parse` reads back."""
        coords = ",".join(f"{v:g}" for v in (self.x1, self.y1, self.x2, self.y2))
        return f"{self.name}={coords}" + (f":{self.direction}" if self.direction else "")

    def side(self, x: float, y: float) -> float:
        """Signed distance in pixels of ``(x, y)`` from the line through the segment (its sign: which side)."""
        dx, dy = self.x2 - self.x1, self.y2 - self.y1
        return (dx * (y - self.y1) - dy * (x - self.x1)) / (dx * dx + dy * dy) ** 0.5

    def along(self, x: float, y: float) -> float:
        """Where ``(x, y)`` projects on the segment: 0 at the start, 1 at the end (outside: beyond an end)."""
        dx, dy = self.x2 - self.x1, self.y2 - self.y1
        return ((x - self.x1) * dx + (y - self.y1) * dy) / (dx * dx + dy * dy)

    def direction_of(self, before: Tuple[float, float], after: Tuple[float, float]) -> str:
        """The direction of a move from ``before`` to ``after`` across this line (see :attr:`directions`)."""
        return self.direction_to(self.side(*after))

    def direction_to(self, side_after: float) -> str:
        """The direction of a crossing that ends on the side ``side_after`` (the sign of :meth:`side`).

        Judged by the side reached, not by the move's own up/down or left/right component: a vehicle driving
        horizontally across a slanted, mostly horizontal line still goes ``up`` or ``down`` across it.
        """
        mx, my = (self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2
        if self.horizontal:
            reference, names = self.side(mx, my - 1.0), ("up", "down")  # the side above the line
        else:
            reference, names = self.side(mx - 1.0, my), ("left", "right")  # the side left of it
        return names[0] if (side_after > 0) == (reference > 0) else names[1]

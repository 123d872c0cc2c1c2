"""Count: judge an anchor of each confirmed track against the camera's counting lines.

The rules, each against a failure seen in the field (numbers: supervision's issue tracker):

- **Anchor.** A crossing is judged on one point of the box: its centre (what a person counting by eye
  follows) or its bottom centre (nvdsanalytics'). Never on all four corners, which a box cut by the frame
  edge never puts on the far side (#1838).
- **Hysteresis.** A track's side of a line is known only while its anchor is more than ``hysteresis_px`` from
  the line; inside that band the side stays what it was, so jitter on the line never flips it (#1540).
- **On the segment.** A crossing is a change of known side whose path, the straight move between the last
  two known-side anchors, meets the line on the segment (1 px of tolerance at the ends). A vehicle passing
  beside the segment's end changes side without counting.
- **Once.** A track crosses each line at most once: its first crossing decides, and a flicker back never
  counts as a reverse crossing (#2598). A crossing in a direction the line does not count still uses it up.
- **No minimum history.** One known-side anchor on each side suffices (#1838): a track born inside the band
  takes its side on leaving it; a track first seen on one side and next on the other counts.
- **Frame edges.** Given ``frame_size``, a track whose first box touches an edge and then moves away from it
  came in through that edge: it starts at the point just beyond the edge where its path, followed back,
  leaves the picture. One whose last box touches an edge, moving towards it, left through it:
  :meth:`LineCounter.end` counts it leaving, on its path followed on. So a line a few pixels from the edge
  still counts, although no finder sees the sliver of a vehicle beyond it, and so does a line drawn to the
  edge that a vehicle coming in diagonally is first seen on (the real dev clip's left-edge lane: 2 of its 45
  crossings).
- **Observed positions only.** The counter reads a track's matched boxes (``Track.history``), never its
  predictions: a coasting track counts nothing until it is matched again, and then its crossing is judged
  on the straight move from its last known-side anchor. A prediction that drifts across a line after a
  vehicle stopped or left never counts.
- **Confirmed tracks only** (#2578). When a track is confirmed, the counter replays its history from its
  first box, so a vehicle that crosses while still tentative is counted, at the frame it crossed.

Counts are kept per (line, direction); the class is the pipeline's, which joins it on ``Crossing.track_id``
once the vote is known.

Standard library only, Python 3.8 compatible (the roadside runtime).
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from toolchain.errors import UsageError
from toolchain.runtime.compat import frozen_config
from toolchain.runtime.geometry import ANCHORS, Box, Line
from toolchain.runtime.track import Track

END_TOLERANCE_PX = 1.0
"""How far beyond a segment's end a crossing point may lie and still count (rounding, not reach)."""
EDGE_PX = 2.0
"""A box within this many pixels of a frame edge touches it (finders clip boxes to the frame)."""
MOVE_PX = 1.0
"""How far a track's anchor must move away from (towards) an edge for it to have come in (gone out) there."""

Point = Tuple[float, float]


@frozen_config
class Crossing:
    """A track's anchor crossed a line.

    Attributes:
        line: The line's name.
        direction: How the vehicle moved across it (one of ``Line.directions``).
        track_id: The crossing track's id: the pipeline joins the vehicle's class on it.
        frame: The first frame with the anchor past the line (the hand-count rule): the first observation on
            the new side after the last known-side one, inside the band included. For a vehicle that left
            through a frame edge, the frame after its last box.
        judged_frame: The frame the counter decided it in (``update``'s ``frame_index``), ``frame`` or later:
            later by the frames spent inside the band, by a tentative track's confirmation, or by the
            lost-track buffer for a vehicle that left through an edge. Event latency is measured from ``frame``.
        x: Where the anchor's path met the line, x.
        y: Where the anchor's path met the line, y.
    """

    line: str
    direction: str
    track_id: int
    frame: int
    judged_frame: int
    x: float
    y: float


class _Side:
    """What the counter knows of one track against one line."""

    __slots__ = ("side", "point", "beyond", "done")

    def __init__(self) -> None:
        self.side = 0                         # -1 or +1 once known: the sign of Line.side outside the band
        self.point: Point = (0.0, 0.0)        # the last anchor outside the band
        self.beyond: Optional[int] = None     # first frame since then with the anchor past the line
        self.done = False                     # crossed (counted or not): never again


class _Follow:
    __slots__ = ("last_frame", "sides")

    def __init__(self, lines: int) -> None:
        self.last_frame: Optional[int] = None
        self.sides = [_Side() for _ in range(lines)]


class LineCounter:
    """Counts confirmed tracks crossing a camera's lines (one counter per stream).

    Args:
        lines: The camera's lines, names unique (none: nothing is counted).
        anchor: The box's point judged against the lines: ``centre`` or ``bottom`` (see ``geometry.ANCHORS``).
        hysteresis_px: Half-width of the band around each line in which a track's side is not updated. 3 px is
            above the centre jitter of a motion box on 320-640 px frames, and a vehicle at a few px per frame
            is through it in a frame or two.
        frame_size: ``(width, height)`` of the frame, to count vehicles that enter or leave through an edge
            across a line near it (see the module's rules). None: edges are not used.

    Raises:
        UsageError: Two lines share a name, or the anchor or hysteresis is not one of the accepted values.
    """

    def __init__(self, lines: Sequence[Line], anchor: str = "centre", hysteresis_px: float = 3.0,
                 frame_size: Optional[Tuple[int, int]] = None) -> None:
        names = [line.name for line in lines]
        if len(set(names)) != len(names):
            raise UsageError(f"line names {names} repeat; give each of a camera's lines its own name")
        if anchor not in ANCHORS:
            raise UsageError(f"anchor {anchor!r} is not one of {', '.join(ANCHORS)}")
        if hysteresis_px < 0:
            raise UsageError(f"hysteresis_px is {hysteresis_px}; give 0 or more pixels, e.g. 3")
        self.lines = tuple(lines)
        self.anchor = anchor
        self.hysteresis_px = float(hysteresis_px)
        self.frame_size = frame_size
        self._counts: Dict[Tuple[str, str], int] = {
            (line.name, d): 0
            for line in self.lines for d in line.counted}
        self._follows: Dict[int, _Follow] = {}

    @property
    def counts(self) -> Dict[Tuple[str, str], int]:
        """Crossings so far per ``(line, direction)``; every direction a line counts is there, 0 included."""
        return dict(self._counts)

    def update(self, tracks: Iterable[Track], frame_index: int) -> List[Crossing]:
        """Judge the tracks' new matched boxes against the lines.

        Args:
            tracks: The stream's tracks (``TrackUpdate.active``); unconfirmed ones are ignored, and coasting
                ones have nothing new. Call it every frame, so no box drops out of a track's history unread.
            frame_index: The frame being processed (the crossings' ``judged_frame``).

        Returns:
            The crossings counted in this call, in the order found.
        """
        crossings: List[Crossing] = []
        for track in tracks:
            if track.confirmed:
                self._read(track, frame_index, crossings)
        return crossings

    def end(self, tracks: Iterable[Track], frame_index: int) -> List[Crossing]:
        """Finish ended tracks (``TrackUpdate.ended``, ``Tracker.flush()``): read what is left, then forget them.

        A track whose last box touches a frame edge, after moving towards it, left the picture there: it
        crosses the lines between its last anchor and that edge (with ``frame_size``).

        Returns:
            The crossings counted in this call.
        """
        crossings: List[Crossing] = []
        for track in tracks:
            if not track.confirmed:
                continue
            follow = self._read(track, frame_index, crossings)
            exit_point = self._edge_point(track.box, [b for _, b in track.history][-4:], leaving=True)
            if exit_point is not None:
                self._observe(follow, track.id, track.last_frame + 1, exit_point, frame_index, crossings)
            del self._follows[track.id]
        return crossings

    def _read(self, track: Track, frame_index: int, crossings: List[Crossing]) -> _Follow:
        follow = self._follows.get(track.id)
        if follow is None:
            follow = self._follows[track.id] = _Follow(len(self.lines))
            first_frame, first_box = track.history[0]
            if first_frame == track.first_frame:  # the whole life is there: did it come in through an edge?
                entry = self._edge_point(first_box, [b for _, b in track.history][:4], leaving=False)
                if entry is not None:
                    self._observe(follow, track.id, first_frame, entry, frame_index, crossings)
        fresh = []  # the matches not read yet, newest first (usually one: the latest)
        for frame, box in reversed(track.history):
            if follow.last_frame is not None and frame <= follow.last_frame:
                break
            fresh.append((frame, box))
        for frame, box in reversed(fresh):
            self._observe(follow, track.id, frame, box.anchor(self.anchor), frame_index, crossings)
            follow.last_frame = frame
        return follow

    def _observe(self, follow: _Follow, track_id: int, frame: int, point: Point, frame_index: int,
                 crossings: List[Crossing]) -> None:
        for line, known in zip(self.lines, follow.sides):
            if known.done:
                continue
            distance = line.side(*point)
            if abs(distance) <= self.hysteresis_px:
                if known.side * distance < 0 and known.beyond is None:
                    known.beyond = frame
                continue
            side = 1 if distance > 0 else -1
            if known.side != -side:  # first known side, or the same one again
                known.side, known.point, known.beyond = side, point, None
                continue
            before, first_past = known.point, known.beyond
            known.side, known.point, known.beyond = side, point, None
            # Where the straight move from the last known-side anchor meets the line; it must be on the segment.
            d0 = line.side(*before)
            t = d0 / (d0 - distance)
            x, y = before[0] + t * (point[0] - before[0]), before[1] + t * (point[1] - before[1])
            length = ((line.x2 - line.x1) ** 2 + (line.y2 - line.y1) ** 2) ** 0.5
            along, slack = line.along(x, y), END_TOLERANCE_PX / length
            if not -slack <= along <= 1 + slack:
                continue  # passed beside the segment: the side changed, nothing crossed
            known.done = True
            direction = line.direction_of(before, point)
            if line.direction and direction != line.direction:
                continue
            self._counts[(line.name, direction)] += 1
            crossings.append(Crossing(line=line.name, direction=direction, track_id=track_id,
                                      frame=frame if first_past is None else first_past, judged_frame=frame_index,
                                      x=x, y=y))

    def _edge_point(self, box: Box, boxes: List[Box], leaving: bool) -> Optional[Point]:
        """A point just beyond the edge ``box`` touches, on the track's path, if ``boxes`` (oldest first) moved
        away from that edge (``leaving``: towards it); None otherwise or without ``frame_size``.

        The path is the straight move from the first anchor of ``boxes`` to the last, followed back (entering)
        or on (leaving) until it is ``hysteresis_px + 1`` beyond the edge. A vehicle coming in diagonally, its
        anchor already on a line drawn to the frame's edge, thus starts on the side it came from. The shift along
        the edge is at most the box's size that way, so a track moving almost parallel to the edge is not sent
        far along it.
        """
        if self.frame_size is None or len(boxes) < 2:
            return None
        width, height = self.frame_size
        (ax, ay), (bx, by) = boxes[0].anchor(self.anchor), boxes[-1].anchor(self.anchor)
        sign = -1 if leaving else 1
        dx, dy = sign * (bx - ax), sign * (by - ay)  # the move away from where it came in (towards its exit)
        x, y = box.anchor(self.anchor)
        out = self.hysteresis_px + 1  # outside the band of any line drawn inside the frame along that edge
        candidates = []               # (distance of the anchor to the edge, point beyond the edge)
        if box.y1 <= EDGE_PX and dy >= MOVE_PX:
            shift = _capped(dx * (y + out) / dy, box.width)
            candidates.append((y, (x - shift, -out)))
        if box.y2 >= height - EDGE_PX and -dy >= MOVE_PX:
            shift = _capped(dx * (height - y + out) / -dy, box.width)
            candidates.append((height - y, (x - shift, height + out)))
        if box.x1 <= EDGE_PX and dx >= MOVE_PX:
            shift = _capped(dy * (x + out) / dx, box.height)
            candidates.append((x, (-out, y - shift)))
        if box.x2 >= width - EDGE_PX and -dx >= MOVE_PX:
            shift = _capped(dy * (width - x + out) / -dx, box.height)
            candidates.append((width - x, (width + out, y - shift)))
        return min(candidates)[1] if candidates else None


def _capped(shift: float, limit: float) -> float:
    return max(-limit, min(limit, shift))

"""Follow: give the finder's boxes track ids that last while a vehicle crosses the picture.

A small tracker in the manner of SORT and ByteTrack, numpy and stdlib only. (norfair pins numpy<2;
supervision's tracker needs Python 3.9+ and its line fixes 0.31; the roadside runtime runs on 3.8.)

Each :meth:`Tracker.update`:

1. predicts every live track's box at this frame: its last matched box moved by its smoothed velocity
   (constant velocity; the size is kept, since a motion box's size is too noisy to extrapolate);
2. matches boxes to tracks greedily, best pair first: first the pairs whose IoU with the prediction reaches
   ``iou_threshold`` (highest IoU first), then, for small or fast vehicles whose boxes do not overlap from
   one frame to the next, the pairs whose centres lie within ``centre_gate`` times the boxes' mean side
   (nearest first). Greedy rather than Hungarian: with a handful of gated pairs per frame the two rarely
   differ, and greedy is a few lines of numpy;
3. starts a tentative track for every box left over. A tentative track is confirmed, and only then gets its
   id, after ``min_hits`` matches; it is dropped once it misses more than ``max_lost_tentative`` frames in a
   row, so a blip never becomes a track. A confirmed track coasts up to ``max_lost`` frames without a match
   (an occlusion, a frame the finder missed), then ends.

Only confirmed tracks leave the tracker, so an unconfirmed track can never be counted (supervision #2578).

Python 3.8 compatible (the roadside runtime).
"""

from __future__ import annotations

import collections
from typing import Deque, Iterable, List, Optional, Tuple

import numpy as np

from toolchain.errors import UsageError
from toolchain.runtime.compat import frozen_config
from toolchain.runtime.geometry import Box


@frozen_config
class TrackerConfig:
    """How the tracker matches, confirms and lets go.

    Attributes:
        min_hits: Matches before a track is confirmed (gets an id and leaves the tracker). 3 frames is
            100-200 ms at 15-30 fps: short against the second or more a vehicle is in view, long enough
            that a blip or a shadow flicker never becomes a vehicle.
        max_lost: Frames a confirmed track coasts without a match before it ends: the lost-track buffer.
            15 frames is 0.5-1 s at 30-15 fps, enough to bridge a vehicle hidden behind another.
        max_lost_tentative: Frames a tentative track may miss in a row before it is dropped. 1 forgives a
            finder that misses a single frame while a vehicle enters, without letting one-frame blips confirm.
        iou_threshold: IoU with the predicted box from which a pair matches by overlap (SORT's 0.3).
        centre_gate: The fallback for pairs below ``iou_threshold``: they match when their centres are at most
            this many times the boxes' mean side apart. 1.0 covers a vehicle that moves its own size in a
            frame; the velocity prediction covers faster ones once a track has two matches.
        smoothing: Weight of the newest measurement in the velocity's exponential average (1: no smoothing).
        history: Matched boxes each track keeps (``Track.history``). At least ``min_hits``, so a track's whole
            life before its confirmation is still there when the counter first sees it.
    """

    min_hits: int = 3
    max_lost: int = 15
    max_lost_tentative: int = 1
    iou_threshold: float = 0.3
    centre_gate: float = 1.0
    smoothing: float = 0.5
    history: int = 32

    def __post_init__(self) -> None:
        if self.min_hits < 1:
            raise UsageError(f"min_hits is {self.min_hits}; give 1 or more (1 confirms every box at once)")
        if self.max_lost < 0 or self.max_lost_tentative < 0:
            raise UsageError("max_lost and max_lost_tentative are frames a track may miss; give 0 or more")
        if not 0 < self.iou_threshold <= 1:
            raise UsageError(f"iou_threshold is {self.iou_threshold}; give a value in (0, 1], e.g. 0.3")
        if self.centre_gate < 0:
            raise UsageError(f"centre_gate is {self.centre_gate}; give 0 (IoU only) or more, e.g. 1.0")
        if not 0 < self.smoothing <= 1:
            raise UsageError(f"smoothing is {self.smoothing}; give a weight in (0, 1], e.g. 0.5")
        if self.history < self.min_hits:
            raise UsageError(f"history ({self.history}) must keep at least min_hits ({self.min_hits}) boxes")


class Track:
    """One followed vehicle. The tracker updates it in place; read it, do not change it.

    Attributes:
        id: The stream's vehicle number, 1, 2, ... in order of confirmation; -1 while tentative.
        box: The last matched box (as the finder gave it: a coasting track keeps it; see :meth:`predicted`).
        history: ``(frame_index, box)`` of the latest matches, oldest first (``TrackerConfig.history`` of them).
        hits: Matches so far.
        age: Frames from the first match to the latest update, both included.
        lost: Frames since the last match (0: matched in the latest update).
        confirmed: Whether it has had ``min_hits`` matches (once confirmed, always confirmed).
        first_frame: Frame of the first match.
        last_frame: Frame of the last match.
        velocity: Smoothed motion of the box's centre, pixels per frame ``(vx, vy)``.
    """

    __slots__ = ("id", "box", "history", "hits", "age", "lost", "confirmed", "first_frame", "last_frame",
                 "velocity")

    def __init__(self, box: Box, frame_index: int, history: int = 32) -> None:
        self.id = -1
        self.box = box
        self.history: Deque[Tuple[int, Box]] = collections.deque([(frame_index, box)], maxlen=history)
        self.hits = 1
        self.age = 1
        self.lost = 0
        self.confirmed = False
        self.first_frame = frame_index
        self.last_frame = frame_index
        self.velocity = (0.0, 0.0)

    def predicted(self, frame_index: int) -> Box:
        """Where the box is expected at ``frame_index``: the last box moved at the smoothed velocity."""
        x1, y1, x2, y2 = _moved(self.box, self.velocity, frame_index - self.last_frame)
        return Box(x1=x1, y1=y1, x2=x2, y2=y2, score=self.box.score, class_id=self.box.class_id)

    def _match(self, box: Box, frame_index: int, smoothing: float) -> None:
        dt = frame_index - self.last_frame
        old = self.box
        vx = (box.x1 + box.x2 - old.x1 - old.x2) / (2 * dt)  # the centre's motion per frame
        vy = (box.y1 + box.y2 - old.y1 - old.y2) / (2 * dt)
        if self.hits > 1:  # the first measurement is all there is; later ones are averaged in
            vx = smoothing * vx + (1 - smoothing) * self.velocity[0]
            vy = smoothing * vy + (1 - smoothing) * self.velocity[1]
        self.velocity = (vx, vy)
        self.box = box
        self.history.append((frame_index, box))
        self.hits += 1
        self.last_frame = frame_index

    def __repr__(self) -> str:
        state = "confirmed" if self.confirmed else "tentative"
        return (f"Track(id={self.id}, {state}, frames {self.first_frame}-{self.last_frame}, hits={self.hits}, "
                f"lost={self.lost}, box=({self.box.x1:.0f},{self.box.y1:.0f},{self.box.x2:.0f},{self.box.y2:.0f}))")


def _moved(box: Box, velocity: Tuple[float, float], frames: int) -> Tuple[float, float, float, float]:
    dx, dy = velocity[0] * frames, velocity[1] * frames
    return box.x1 + dx, box.y1 + dy, box.x2 + dx, box.y2 + dy


@frozen_config
class TrackUpdate:
    """What one :meth:`Tracker.update` hands on. The tracks are live: the next update changes them, so read
    them (or copy what you need) before it.

    Attributes:
        active: The live confirmed tracks, matched in this frame or coasting (``lost > 0``), oldest id first.
        matched: Those of ``active`` matched in this frame: the ones with a fresh box to crop and classify.
        ended: Confirmed tracks that ended in this frame (lost for more than ``max_lost`` frames): finalise
            these vehicles (vote the class, close the counter's state). Tentative tracks end unreported.
    """

    active: Tuple[Track, ...] = ()
    matched: Tuple[Track, ...] = ()
    ended: Tuple[Track, ...] = ()


class Tracker:
    """Follows boxes across the frames of one stream (use one tracker per stream).

    Args:
        config: Matching, confirmation and lost-track settings (defaults: :class:`TrackerConfig`).
    """

    def __init__(self, config: Optional[TrackerConfig] = None) -> None:
        self.config = config or TrackerConfig()
        self._tracks: List[Track] = []
        self._next_id = 1
        self._frame: Optional[int] = None

    @property
    def tracks(self) -> Tuple[Track, ...]:
        """Every live track, tentative ones included (for overlays and debugging; never count these)."""
        return tuple(self._tracks)

    def update(self, boxes: Iterable[Box], frame_index: int) -> TrackUpdate:
        """Match this frame's boxes to the tracks, start, confirm and end tracks.

        Args:
            boxes: The finder's boxes in this frame (full-frame pixels).
            frame_index: The frame's index in its stream; strictly increasing (gaps are fine: dropped frames
                count as frames in which nothing was matched).

        Returns:
            The live confirmed tracks and the ones that ended in this frame.

        Raises:
            UsageError: ``frame_index`` is not after the previous update's.
        """
        if self._frame is not None and frame_index <= self._frame:
            raise UsageError(f"frame {frame_index} came after frame {self._frame}; give a tracker its stream's frames "
                             "in increasing order, and use one Tracker per stream")
        self._frame = frame_index
        config, boxes = self.config, list(boxes)
        predicted = np.array([_moved(t.box, t.velocity, frame_index - t.last_frame) for t in self._tracks],
                             dtype=np.float64).reshape(-1, 4)
        taken = set()
        for ti, bi in greedy_match(predicted, corners(boxes), config.iou_threshold, config.centre_gate):
            self._tracks[ti]._match(boxes[bi], frame_index, config.smoothing)
            taken.add(bi)
        self._tracks.extend(Track(b, frame_index, config.history) for i, b in enumerate(boxes) if i not in taken)

        live: List[Track] = []
        ended: List[Track] = []
        for track in self._tracks:
            track.age = frame_index - track.first_frame + 1
            track.lost = frame_index - track.last_frame
            if track.lost > (config.max_lost if track.confirmed else config.max_lost_tentative):
                if track.confirmed:
                    ended.append(track)
                continue
            if not track.confirmed and track.hits >= config.min_hits:
                # Ids at confirmation, not birth: the stream's vehicles are numbered 1, 2, 3 without the blips.
                track.confirmed, track.id = True, self._next_id
                self._next_id += 1
            live.append(track)
        self._tracks = live
        active = tuple(sorted((t for t in live if t.confirmed), key=lambda t: t.id))
        return TrackUpdate(active=active, matched=tuple(t for t in active if t.lost == 0), ended=tuple(ended))

    def flush(self) -> Tuple[Track, ...]:
        """End every live track (the stream ended): returns the confirmed ones, to finalise like ``ended``."""
        ended = tuple(t for t in self._tracks if t.confirmed)
        self._tracks = []
        return ended


def corners(boxes: Iterable[Box]) -> np.ndarray:
    """``boxes`` as an ``(N, 4)`` float array of ``x1, y1, x2, y2``."""
    return np.array([(b.x1, b.y1, b.x2, b.y2) for b in boxes], dtype=np.float64).reshape(-1, 4)


def greedy_match(tracks: np.ndarray, boxes: np.ndarray, iou_threshold: float,
                 centre_gate: float) -> List[Tuple[int, int]]:
    """Pair predicted track boxes with found boxes, best pair first, each at most once.

    Pairs with IoU >= ``iou_threshold`` come first, highest IoU first; then pairs whose centres are within
    ``centre_gate`` times the two boxes' mean side, nearest first; other pairs never match.

    Args:
        tracks: ``(T, 4)`` predicted boxes, ``x1, y1, x2, y2`` (see :func:`corners`).
        boxes: ``(D, 4)`` found boxes.
        iou_threshold: IoU from which a pair matches by overlap.
        centre_gate: Centre distance, in mean sides, up to which a pair matches by nearness.

    Returns:
        ``(track_index, box_index)`` pairs.
    """
    if not len(tracks) or not len(boxes):
        return []
    a, b = tracks[:, None, :], boxes[None, :, :]
    wa, ha = a[..., 2] - a[..., 0], a[..., 3] - a[..., 1]
    wb, hb = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
    inter = (np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
             * np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None))
    iou = inter / np.maximum(wa * ha + wb * hb - inter, 1e-9)
    distance = np.hypot(a[..., 0] + a[..., 2] - b[..., 0] - b[..., 2],
                        a[..., 1] + a[..., 3] - b[..., 1] - b[..., 3]) / 2
    near = distance / np.maximum((wa + ha + wb + hb) / 4, 1e-9)
    # One ranking: overlap pairs cost 1 - IoU (< 1), fallback pairs 2 + distance (>= 2), the rest never.
    cost = np.where(iou >= iou_threshold, 1 - iou, np.where(near <= centre_gate, 2 + near, np.inf)).ravel()
    candidates = np.flatnonzero(cost < np.inf)
    order = candidates[np.argsort(cost[candidates], kind="stable")]
    pairs: List[Tuple[int, int]] = []
    used_tracks, used_boxes = set(), set()
    most = min(len(tracks), len(boxes))
    for ti, bi in zip(*(i.tolist() for i in np.divmod(order, len(boxes)))):
        if ti not in used_tracks and bi not in used_boxes:
            pairs.append((ti, bi))
            used_tracks.add(ti)
            used_boxes.add(bi)
            if len(pairs) == most:
                break
    return pairs

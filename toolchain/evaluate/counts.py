"""Scoring vehicle counts against a hand count: how a user accepts a unit on their own footage.

Inputs are two lists of crossings of counting lines: the truth (:class:`TruthRow`, read from a hand
count ``line,frame,class[,certain,note]`` CSV, optionally with ``direction`` and ``track`` columns) and
what the unit counted (:class:`CountedCrossing`, written and read back as
``line,frame,class,direction,score,track,time_s``). :func:`score_counts` gives a :class:`CountScore`:

* crossings matched to the truth per line (and per direction where the truth names one) within
  :attr:`CountScoreConfig.tolerance_frames`, one to one; precision, recall and F1 of the matching;
* count error per class (counted - truth, and relative to truth), in total and per interval, because
  totals hide errors that cancel;
* classification accuracy on the matched pairs and their confusion matrix;
* a plot of cumulative counts against the truth, per class;
* all of it twice: with every truth row, and with the ``certain = no`` rows left out.

Matching (see :func:`match_frames`): an optimal one-to-one assignment on frame distance. It first
maximises the number of matches, then minimises the summed ``|counted frame - truth frame|``. The
obvious greedy (take the closest pair first) is not optimal here: truth at frames 0 and 4, counted at
3 and 8, tolerance 4: the greedy pairs 4-3 and leaves both others unmatched, where 0-3 and 4-8 match
both. In one dimension an optimal assignment never crosses (if a <= b and c <= d, pairing a-c and b-d
is never worse than a-d and b-c, and keeps both within the tolerance), so a dynamic programme over the
two sorted lists finds it exactly, run separately on clusters of crossings that are more than the
tolerance apart (in practice a handful each). No scipy needed.

``certain = no`` rows (vehicles the counter could not be sure of, e.g. cut by the frame edge) are
"don't care" in the certain-only figures, as ignore regions are in detection benchmarks: a counted
crossing matched to one is neither a true nor a false positive there (it is dropped from the counted
side, from the count errors too), and the row itself is no miss. For those figures the matching is
run again, preferring certain rows (it maximises matched certain rows first), so an uncertain row
never takes a crossing a certain row could have had. The full figures count every row as truth.

Standard library only (matplotlib, lazily, for the plot), Python 3.8 compatible.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

from toolchain.errors import BadInputError, InputNotFoundError, MissingEnvironmentError, UsageError, missing_extra
from toolchain.fileio import atomic_output
from toolchain.runtime.compat import frozen_config
from toolchain.runtime.geometry import DIRECTIONS

TRUTH_COLUMNS = ("line", "frame", "class")
"""Columns a truth CSV must have; ``certain`` (yes/no, default yes), ``note``, ``direction`` and ``track``
are optional, and any other column (``score``, ``time_s``...) is ignored."""

CROSSINGS_HEADER = ("line", "frame", "class", "direction", "score", "track", "time_s")
"""The header :func:`write_crossings_csv` writes; :func:`read_truth_csv` reads such a file too."""

PLOT_SKIPPED = "no plot: matplotlib is not installed (pip install 'toolchain[train]')"

_YES = {"yes", "y", "true", "1", ""}
_NO = {"no", "n", "false", "0"}
_DIGITS = 4


# --------------------------------------------------------------------------------------------- inputs


@frozen_config
class TruthRow:
    """One crossing in a hand count (or any other reference).

    Attributes:
        line: The line's name.
        frame: The first frame (decode order, 0-based) past the line.
        cls: The class as counted (before any class map).
        certain: False for rows marked ``certain = no``.
        note: Free text.
        direction: The crossing's direction, or "" when the count does not say.
        track: A vehicle id, when the reference has one.
    """

    line: str
    frame: int
    cls: str
    certain: bool = True
    note: str = ""
    direction: str = ""
    track: Optional[int] = None


@frozen_config
class CountedCrossing:
    """One crossing the vehicle pipeline counted.

    Attributes:
        line: The line's name.
        frame: The frame (decode order, 0-based) in which it was counted.
        cls: The class the pipeline gave the vehicle.
        direction: The crossing's direction ("" if unknown).
        score: The class's score.
        track: The tracker's id of the vehicle.
        time_s: Time of the crossing in the stream (None: ``frame / fps`` where an fps is known).
    """

    line: str
    frame: int
    cls: str
    direction: str = ""
    score: float = 1.0
    track: Optional[int] = None
    time_s: Optional[float] = None


def read_truth_csv(path: Path) -> list[TruthRow]:
    """Read a hand count: header ``line,frame,class[,certain,note]``, optionally ``direction`` and ``track``.

    Blank rows and rows whose first cell starts with ``#`` are skipped; other columns are ignored, so
    the CSV of :func:`write_crossings_csv` (a unit's own count) reads as truth too. A row may leave out
    trailing optional cells.

    Raises:
        InputNotFoundError: No such file.
        BadInputError: A missing column or a malformed row (the message gives its line number).
    """
    return [_truth_row(path, number, cells) for number, cells in _rows(path)]


def read_crossings_csv(path: Path) -> list[CountedCrossing]:
    """Read counted crossings back from :func:`write_crossings_csv` (or any CSV :func:`read_truth_csv` reads:
    ``score`` defaults to 1).

    Raises:
        InputNotFoundError: No such file.
        BadInputError: A missing column or a malformed row (the message gives its line number).
    """
    crossings = []
    for number, cells in _rows(path):
        row = _truth_row(path, number, cells)
        score = _float(path, number, "score", cells.get("score", ""), default=1.0)
        time_s = _float(path, number, "time_s", cells.get("time_s", ""), default=None)
        crossings.append(CountedCrossing(line=row.line, frame=row.frame, cls=row.cls, direction=row.direction,
                                         score=float(score), track=row.track, time_s=time_s))  # type: ignore[arg-type]
    return crossings


def write_crossings_csv(path: Path, crossings: Iterable[CountedCrossing], *, fps: Optional[float] = None) -> Path:
    """Write counted crossings as CSV (:data:`CROSSINGS_HEADER`), atomically (temp file, then rename).

    Args:
        path: Where to write.
        crossings: The crossings, in the order to write them.
        fps: The clip's frame rate: ``time_s`` of a crossing without its own is ``frame / fps``
            (empty without either).

    Returns:
        ``path``.
    """
    path = Path(path)
    with atomic_output(path, "w", newline="", encoding="utf-8") as handle:
        write_crossings_csv_to(handle, crossings, fps=fps)
    return path


def write_crossings_csv_to(handle: Any, crossings: Iterable[CountedCrossing], *, fps: Optional[float] = None) -> None:
    """Write counted crossings as CSV to an open text ``handle`` (stdout, or the file :func:`write_crossings_csv` makes)."""
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(CROSSINGS_HEADER)
    for c in crossings:
        time_s = c.time_s if c.time_s is not None else (c.frame / fps if fps else None)
        writer.writerow((c.line, c.frame, c.cls, c.direction, f"{c.score:.4f}", "" if c.track is None else c.track,
                         "" if time_s is None else f"{time_s:.3f}"))


def _rows(path: Path) -> Iterable[Tuple[int, Dict[str, str]]]:
    """``(line number, {column: cell})`` of each data row, header checked."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"{path}: no such file; give the hand count CSV (header line,frame,class[,certain,note])")
    with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: spreadsheets write a BOM
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
        except csv.Error as exc:
            raise BadInputError(f"{path}:1: {exc}; fix the header line,frame,class[,certain,note]") from exc
        columns = [c.strip().lower() for c in header or []]
        missing = [c for c in TRUTH_COLUMNS if c not in columns]
        if missing:
            raise BadInputError(f"{path}:1: the header has no {', '.join(missing)} column; the first line must be "
                                f"line,frame,class[,certain,note] (optionally also direction, track); found {header!r}")
        duplicated = sorted({c for c in columns if columns.count(c) > 1 and c})
        if duplicated:
            raise BadInputError(f"{path}:1: column {', '.join(duplicated)} appears twice in the header; keep one")
        rows = []
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                raise BadInputError(f"{path}:{reader.line_num}: {exc}; fix the quoting of that row") from exc
            if not any(c.strip() for c in cells) or cells[0].lstrip().startswith("#"):
                continue
            if len(cells) > len(columns):
                raise BadInputError(f"{path}:{reader.line_num}: {len(cells)} cells where the header has {len(columns)}; "
                                    "quote a note that contains commas")
            cells = cells + [""] * (len(columns) - len(cells))
            rows.append((reader.line_num, {c: v.strip() for c, v in zip(columns, cells)}))
    return rows


def _truth_row(path: Path, number: int, cells: Mapping[str, str]) -> TruthRow:
    where = f"{path}:{number}"
    line, cls = cells["line"], cells["class"]
    if not line:
        raise BadInputError(f"{where}: the line is empty; name the counting line the vehicle crossed")
    if not cls:
        raise BadInputError(f"{where}: the class is empty; give the vehicle's class (e.g. car, truck)")
    text = cells["frame"]
    if not re.fullmatch(r"\d+", text):
        raise BadInputError(f"{where}: frame {text!r} is not a frame number; give the 0-based frame index "
                            "(decode order) of the first frame past the line")
    certain = cells.get("certain", "").lower()
    if certain not in _YES | _NO:
        raise BadInputError(f"{where}: certain is {cells['certain']!r}; write yes or no (empty: yes)")
    direction = cells.get("direction", "").lower()
    if direction not in ("",) + DIRECTIONS:
        raise BadInputError(f"{where}: direction {cells['direction']!r} is not one of {', '.join(DIRECTIONS)} (or empty)")
    track_text = cells.get("track", "")
    if track_text and not re.fullmatch(r"-?\d+", track_text):
        raise BadInputError(f"{where}: track {track_text!r} is not a whole number; leave it empty or give the vehicle id")
    return TruthRow(line=line, frame=int(text), cls=cls, certain=certain in _YES, note=cells.get("note", ""),
                    direction=direction, track=int(track_text) if track_text else None)


def _float(path: Path, number: int, name: str, text: str, *, default: Optional[float]) -> Optional[float]:
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise BadInputError(f"{path}:{number}: {name} {text!r} is not a number; leave it empty or give a number")
    return value


# --------------------------------------------------------------------------------------------- config


def parse_class_map(texts: Iterable[str] | str) -> tuple[tuple[str, str], ...]:
    """``van=car,pickup=car`` (one or more such texts, e.g. a repeated ``--map``) -> ``(("van", "car"), ...)``.

    Raises:
        UsageError: An item that is not ``fine=coarse``, or a fine class mapped twice to different classes.
    """
    pairs: dict[str, str] = {}
    for text in [texts] if isinstance(texts, str) else texts:
        for item in filter(None, (part.strip() for part in text.split(","))):
            fine, sep, coarse = (s.strip() for s in item.partition("="))
            if not sep or not fine or not coarse:
                raise UsageError(f"--map {item!r} is not fine=coarse; e.g. --map van=car,articulated=truck")
            if pairs.get(fine, coarse) != coarse:
                raise UsageError(f"--map gives {fine!r} two classes ({pairs[fine]} and {coarse}); keep one")
            pairs[fine] = coarse
    return tuple(pairs.items())


def parse_interval(text: str) -> float:
    """``10s``, ``10``, ``2m`` or ``1h`` -> seconds (``--interval``).

    Raises:
        UsageError: Not a positive duration.
    """
    match = re.fullmatch(r"(\d+(?:\.\d*)?)\s*(s|m|h|min)?", text.strip().lower())
    seconds = float(match.group(1)) * {None: 1, "s": 1, "m": 60, "min": 60, "h": 3600}[match.group(2)] if match else 0.0
    if seconds <= 0:
        raise UsageError(f"--interval {text!r} is not a positive duration; e.g. 10s, 1m or 15m")
    return seconds


@frozen_config
class CountScoreConfig:
    """How to score counted crossings against the truth.

    Attributes:
        tolerance_frames: A crossing matches a truth row at most this many frames away (either way).
            The default 7 is about half a second at 15 fps: hand counts are ±1 frame, a tracker's anchor
            lags or leads the eye's by a few.
        fps: The clip's frame rate: needed for intervals, gives seconds in the report and plot.
        interval_s: Count errors also per interval of this many seconds (None: totals only).
        class_map: ``(fine, coarse)`` pairs applied to the truth's classes (``van -> car``).
        classes: The classifier's classes: truth classes outside them after the map are reported
            (empty: not checked). They also fix the confusion matrix's first rows and columns.
        lines: The lines scored (empty: every line the truth names); crossings of other lines, on
            either side, are left out and reported.
        frames: The clip's length in frames, when known: intervals then run to its end.
    """

    tolerance_frames: int = 7
    fps: Optional[float] = None
    interval_s: Optional[float] = None
    class_map: Tuple[Tuple[str, str], ...] = ()
    classes: Tuple[str, ...] = ()
    lines: Tuple[str, ...] = ()
    frames: Optional[int] = None

    def __post_init__(self) -> None:
        if self.tolerance_frames < 0:
            raise UsageError(f"the frame tolerance must be 0 or more, not {self.tolerance_frames}")
        if self.fps is not None and not self.fps > 0:
            raise UsageError(f"fps must be positive, not {self.fps}")
        if self.interval_s is not None:
            if not self.interval_s > 0:
                raise UsageError(f"--interval must be positive, not {self.interval_s}")
            if self.fps is None:
                raise UsageError("counts per interval need the clip's frame rate; give fps with the interval")

    @property
    def interval_frames(self) -> Optional[float]:
        return None if self.interval_s is None or self.fps is None else self.interval_s * self.fps

    def to_json(self) -> dict[str, Any]:
        return {"tolerance_frames": self.tolerance_frames, "fps": self.fps, "interval_s": self.interval_s,
                "class_map": dict(self.class_map), "classes": list(self.classes), "lines": list(self.lines),
                "frames": self.frames}


# --------------------------------------------------------------------------------------------- result


@frozen_config
class ClassCount:
    """Truth and counted crossings of one class (or all): the count error is ``counted - truth``.

    Attributes:
        truth: Truth rows.
        counted: Counted crossings.
    """

    truth: int
    counted: int

    @property
    def error(self) -> int:
        return self.counted - self.truth

    @property
    def relative_error(self) -> Optional[float]:
        """``error / truth`` (None when the truth has none)."""
        return self.error / self.truth if self.truth else None

    def to_json(self) -> dict[str, Any]:
        return {"truth": self.truth, "counted": self.counted, "error": self.error,
                "relative_error": _round(self.relative_error)}


@frozen_config
class IntervalCounts:
    """Counts in one interval of the clip: frames ``[start_frame, end_frame)``.

    Attributes:
        index: 0 for the first interval.
        start_frame: First frame in it.
        end_frame: First frame after it.
        start_s: Its start in seconds.
        end_s: Its end in seconds.
        per_class: Counts per class.
        total: All classes together.
    """

    index: int
    start_frame: int
    end_frame: int
    start_s: float
    end_s: float
    per_class: Dict[str, ClassCount]
    total: ClassCount

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "start_frame": self.start_frame, "end_frame": self.end_frame,
                "start_s": _round(self.start_s), "end_s": _round(self.end_s),
                "per_class": {k: v.to_json() for k, v in self.per_class.items()}, "total": self.total.to_json()}


@frozen_config
class GroupFigures:
    """Matching figures of one line (and direction, where the truth has directions)."""

    line: str
    direction: str
    truth: int
    counted: int
    matched: int

    def to_json(self) -> dict[str, Any]:
        return {"line": self.line, "direction": self.direction, "truth": self.truth, "counted": self.counted,
                "matched": self.matched, "precision": _round(_ratio(self.matched, self.counted)),
                "recall": _round(_ratio(self.matched, self.truth))}


@frozen_config
class CountFigures:
    """Every figure for one choice of truth rows (all of them, or the certain ones only).

    Attributes:
        truth: Truth rows scored.
        counted: Counted crossings scored (certain-only: those matched to an uncertain row left out).
        matched: Matched pairs (true positives).
        ignored: Counted crossings left out for matching an uncertain row (0 in the full figures).
        precision: ``matched / counted`` (None when nothing was counted).
        recall: ``matched / truth`` (None when the truth is empty).
        f1: Harmonic mean of precision and recall (None when either is None or both are 0).
        total: Count of all classes.
        per_class: Count per class.
        intervals: Counts per interval (empty without :attr:`CountScoreConfig.interval_s`).
        accuracy: Share of matched pairs whose counted class is the truth class (after the class map).
        classes: Rows and columns of :attr:`confusion`.
        confusion: ``confusion[truth class][counted class]`` over matched pairs.
        groups: Matching per line (and direction).
        frame_offset_mean: Mean ``counted frame - truth frame`` over matched pairs (the counter's lag).
        frame_offset_max: Largest ``|counted frame - truth frame|`` over matched pairs.
        pairs: ``(truth index, counted index)`` of each match, indices into the lists given to
            :func:`score_counts` (not in the JSON).
    """

    truth: int
    counted: int
    matched: int
    ignored: int
    total: ClassCount
    per_class: Dict[str, ClassCount]
    intervals: Tuple[IntervalCounts, ...]
    classes: Tuple[str, ...]
    confusion: Tuple[Tuple[int, ...], ...]
    groups: Tuple[GroupFigures, ...]
    frame_offset_mean: Optional[float]
    frame_offset_max: Optional[int]
    pairs: Tuple[Tuple[int, int], ...] = ()

    @property
    def precision(self) -> Optional[float]:
        return _ratio(self.matched, self.counted)

    @property
    def recall(self) -> Optional[float]:
        return _ratio(self.matched, self.truth)

    @property
    def f1(self) -> Optional[float]:
        p, r = self.precision, self.recall
        return None if p is None or r is None or p + r == 0 else 2 * p * r / (p + r)

    @property
    def accuracy(self) -> Optional[float]:
        correct = sum(self.confusion[i][i] for i in range(len(self.classes)))
        return _ratio(correct, self.matched)

    def to_json(self) -> dict[str, Any]:
        return {
            "truth": self.truth, "counted": self.counted, "matched": self.matched, "ignored": self.ignored,
            "false_positives": self.counted - self.matched, "false_negatives": self.truth - self.matched,
            "precision": _round(self.precision), "recall": _round(self.recall), "f1": _round(self.f1),
            "count": self.total.to_json(), "per_class": {k: v.to_json() for k, v in self.per_class.items()},
            "intervals": [i.to_json() for i in self.intervals],
            "classification": {"accuracy": _round(self.accuracy), "matched": self.matched, "classes": list(self.classes),
                               "confusion_matrix": [list(row) for row in self.confusion]},
            "groups": [g.to_json() for g in self.groups],
            "frame_offset": {"mean": _round(self.frame_offset_mean), "max": self.frame_offset_max},
        }


@frozen_config
class CountScore:
    """A count scored against a truth: :attr:`full` with every truth row, :attr:`certain` without the
    ``certain = no`` ones.

    Attributes:
        config: How it was scored.
        full: Figures with every truth row.
        certain: Figures with the uncertain rows left out (see the module's docstring).
        unknown_classes: Truth classes (after the class map) the classifier does not have, with their
            rows: they can only be misclassified; map them (``--map motorcycle=car``) or accept that.
        unscored: Rows left out for naming a line not scored: ``{"truth": {line: n}, "counted": {line: n}}``.
        plot: The PNG of cumulative counts, when one was written.
        notes: What the reader should know (classes unknown, lines left out, plot skipped).
    """

    config: CountScoreConfig
    full: CountFigures
    certain: CountFigures
    unknown_classes: Dict[str, int] = field(default_factory=dict)
    unscored: Dict[str, Dict[str, int]] = field(default_factory=dict)
    plot: Optional[str] = None
    notes: Tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types; ratios rounded to 4 digits, ``null`` where undefined."""
        return {"config": self.config.to_json(), "all": self.full.to_json(), "certain_only": self.certain.to_json(),
                "unknown_classes": dict(self.unknown_classes), "unscored": self.unscored, "plot": self.plot,
                "notes": list(self.notes)}


# --------------------------------------------------------------------------------------------- scoring


def score_counts(truth: Sequence[TruthRow], counted: Sequence[CountedCrossing],
                 config: CountScoreConfig = CountScoreConfig(), *, plot: Optional[Path] = None) -> CountScore:
    """Score counted crossings against the truth (see the module's docstring for the rules).

    Args:
        truth: The reference crossings (classes before the class map).
        counted: What the unit counted.
        config: Tolerance, intervals, class map, classes, lines.
        plot: Write the cumulative-count PNG here (skipped, with a note, without matplotlib).

    Returns:
        The score; ``pairs`` index into ``truth`` and ``counted`` as given.

    Raises:
        BadInputError: The truth gives a direction on some rows of a line and not on others.
    """
    mapping = dict(config.class_map)
    mapped = [_mapped(row, mapping) for row in truth]
    scored = set(config.lines) if config.lines else {row.line for row in truth}
    truth_idx = [i for i, row in enumerate(mapped) if row.line in scored]
    counted_idx = [j for j, c in enumerate(counted) if c.line in scored]
    unscored = {"truth": _tally(row.line for row in mapped if row.line not in scored),
                "counted": _tally(c.line for c in counted if c.line not in scored)}
    notes = []
    for side, lines in unscored.items():
        if lines:
            notes.append(f"{side} crossings of lines not scored were left out: "
                         + ", ".join(f"{k} ({v})" for k, v in lines.items()))
    unknown: dict[str, int] = {}
    if config.classes:
        unknown = _tally(mapped[i].cls for i in truth_idx if mapped[i].cls not in config.classes)
        if unknown:
            notes.append("truth classes the classifier does not have (they count as misclassified): "
                         + ", ".join(f"{k} ({v})" for k, v in unknown.items())
                         + "; map them with --map fine=coarse")
    classes = _classes(config, [mapped[i].cls for i in truth_idx], [counted[j].cls for j in counted_idx])

    groups = _groups(mapped, truth_idx, counted, counted_idx)
    full_pairs = _match_groups(groups, mapped, counted, config.tolerance_frames, certain_first=False)
    certain_pairs = _match_groups(groups, mapped, counted, config.tolerance_frames, certain_first=True)
    full = _figures(mapped, counted, truth_idx, counted_idx, full_pairs, groups, classes, config, certain_only=False)
    certain = _figures(mapped, counted, truth_idx, counted_idx, certain_pairs, groups, classes, config, certain_only=True)

    written = None
    if plot is not None:
        try:
            written = str(_plot(mapped, counted, truth_idx, counted_idx, classes, config, Path(plot)))
        except MissingEnvironmentError:
            notes.append(PLOT_SKIPPED)
    return CountScore(config=config, full=full, certain=certain, unknown_classes=unknown, unscored=unscored,
                      plot=written, notes=tuple(notes))


def match_frames(truth: Sequence[int], counted: Sequence[int], tolerance: int,
                 priority: Optional[Sequence[int]] = None) -> list[tuple[int, int]]:
    """An optimal one-to-one matching of truth frames to counted frames at most ``tolerance`` apart.

    Maximises, in this order: the summed ``priority`` of the matched truth frames (default 0 each),
    the number of matches, then minimises the summed frame distance. Exact (see the module's docstring).

    Args:
        truth: Truth frames, any order.
        counted: Counted frames, any order.
        tolerance: Largest ``|counted - truth|`` of a match.
        priority: Per truth frame, how much matching it matters beyond the count (e.g. 1 for certain rows).

    Returns:
        ``(truth index, counted index)`` pairs, in order of truth frame.
    """
    weight = list(priority) if priority is not None else [0] * len(truth)
    events = sorted([(f, 0, i) for i, f in enumerate(truth)] + [(f, 1, j) for j, f in enumerate(counted)])
    pairs: list[tuple[int, int]] = []
    start = 0
    for end in range(1, len(events) + 1):
        # Crossings more than the tolerance apart can never be matched across: solve each cluster alone.
        if end == len(events) or events[end][0] - events[end - 1][0] > tolerance:
            cluster = events[start:end]
            t = [i for _, kind, i in cluster if kind == 0]
            c = [j for _, kind, j in cluster if kind == 1]
            if t and c:
                pairs.extend(_match_sorted(t, c, truth, counted, weight, tolerance))
            start = end
    return sorted(pairs, key=lambda p: (truth[p[0]], p[0]))


def _match_sorted(t: list[int], c: list[int], truth: Sequence[int], counted: Sequence[int], weight: Sequence[int],
                  tolerance: int) -> list[tuple[int, int]]:
    """Dynamic programme over non-crossing matchings of two frame-sorted index lists."""
    n, m = len(t), len(c)
    # best[a][b]: the best (priority, matches, -distance) using t[:a] and c[:b].
    best = [[(0, 0, 0)] * (m + 1) for _ in range(n + 1)]
    for a in range(1, n + 1):
        fa = truth[t[a - 1]]
        row, above = best[a], best[a - 1]
        for b in range(1, m + 1):
            value = max(above[b], row[b - 1])
            gap = abs(counted[c[b - 1]] - fa)
            if gap <= tolerance:
                p, k, d = above[b - 1]
                value = max(value, (p + weight[t[a - 1]], k + 1, d - gap))
            row[b] = value
    pairs = []
    a, b = n, m
    while a > 0 and b > 0:
        if best[a][b] == best[a - 1][b]:
            a -= 1
        elif best[a][b] == best[a][b - 1]:
            b -= 1
        else:
            pairs.append((t[a - 1], c[b - 1]))
            a, b = a - 1, b - 1
    return pairs


# --------------------------------------------------------------------------------------------- internals


@dataclass(frozen=True)
class _Group:
    line: str
    direction: str  # "" when the truth of the line has no directions: then any counted direction matches
    truth: Tuple[int, ...]
    counted: Tuple[int, ...]


def _mapped(row: TruthRow, mapping: Mapping[str, str]) -> TruthRow:
    coarse = mapping.get(row.cls, row.cls)
    if coarse == row.cls:
        return row
    return TruthRow(line=row.line, frame=row.frame, cls=coarse, certain=row.certain, note=row.note,
                    direction=row.direction, track=row.track)


def _groups(truth: Sequence[TruthRow], truth_idx: Sequence[int], counted: Sequence[CountedCrossing],
            counted_idx: Sequence[int]) -> list[_Group]:
    """What is matched with what: per line, and per direction where the truth gives directions."""
    lines = sorted({truth[i].line for i in truth_idx} | {counted[j].line for j in counted_idx})
    groups = []
    for line in lines:
        rows = [i for i in truth_idx if truth[i].line == line]
        crossings = [j for j in counted_idx if counted[j].line == line]
        with_direction = {bool(truth[i].direction) for i in rows}
        if with_direction == {True, False}:
            raise BadInputError(f"the truth gives a direction on some rows of line {line!r} and not on others; "
                                "give one on every row of a line, or on none (then directions are not compared)")
        if with_direction == {True}:
            for direction in sorted({truth[i].direction for i in rows} | {counted[j].direction for j in crossings}):
                groups.append(_Group(line, direction, tuple(i for i in rows if truth[i].direction == direction),
                                     tuple(j for j in crossings if counted[j].direction == direction)))
        else:
            groups.append(_Group(line, "", tuple(rows), tuple(crossings)))
    return groups


def _match_groups(groups: Sequence[_Group], truth: Sequence[TruthRow], counted: Sequence[CountedCrossing],
                  tolerance: int, *, certain_first: bool) -> list[tuple[int, int]]:
    pairs = []
    for g in groups:
        priority = [int(truth[i].certain) for i in g.truth] if certain_first else None
        found = match_frames([truth[i].frame for i in g.truth], [counted[j].frame for j in g.counted], tolerance, priority)
        pairs.extend((g.truth[a], g.counted[b]) for a, b in found)
    return sorted(pairs)


def _figures(truth: Sequence[TruthRow], counted: Sequence[CountedCrossing], truth_idx: Sequence[int],
             counted_idx: Sequence[int], pairs: Sequence[tuple[int, int]], groups: Sequence[_Group],
             classes: Sequence[str], config: CountScoreConfig, *, certain_only: bool) -> CountFigures:
    if certain_only:
        # Crossings matched to an uncertain row are "don't care": neither hits nor false alarms.
        ignored = {j for i, j in pairs if not truth[i].certain}
        pairs = [(i, j) for i, j in pairs if truth[i].certain]
        truth_idx = [i for i in truth_idx if truth[i].certain]
        counted_idx = [j for j in counted_idx if j not in ignored]
    else:
        ignored = set()
    truth_set, counted_set = set(truth_idx), set(counted_idx)
    per_class = _class_counts(classes, [truth[i].cls for i in truth_idx], [counted[j].cls for j in counted_idx])
    position = {name: k for k, name in enumerate(classes)}
    confusion = [[0] * len(classes) for _ in classes]
    for i, j in pairs:
        confusion[position[truth[i].cls]][position[counted[j].cls]] += 1
    offsets = [counted[j].frame - truth[i].frame for i, j in pairs]
    matched_truth = {i for i, _ in pairs}
    group_figures = tuple(GroupFigures(line=g.line, direction=g.direction,
                                       truth=sum(i in truth_set for i in g.truth),
                                       counted=sum(j in counted_set for j in g.counted),
                                       matched=sum(i in matched_truth for i in g.truth)) for g in groups)
    return CountFigures(
        truth=len(truth_idx), counted=len(counted_idx), matched=len(pairs), ignored=len(ignored),
        total=ClassCount(truth=len(truth_idx), counted=len(counted_idx)), per_class=per_class,
        intervals=_intervals(config, classes, [truth[i] for i in truth_idx], [counted[j] for j in counted_idx]),
        classes=tuple(classes), confusion=tuple(tuple(row) for row in confusion), groups=group_figures,
        frame_offset_mean=sum(offsets) / len(offsets) if offsets else None,
        frame_offset_max=max(map(abs, offsets)) if offsets else None, pairs=tuple(sorted(pairs)))


def _intervals(config: CountScoreConfig, classes: Sequence[str], truth: Sequence[TruthRow],
               counted: Sequence[CountedCrossing]) -> tuple[IntervalCounts, ...]:
    size = config.interval_frames
    if size is None:
        return ()
    last = max([r.frame for r in truth] + [c.frame for c in counted] + [(config.frames or 0) - 1, 0])
    buckets = int(last // size) + 1
    truth_in: list[list[str]] = [[] for _ in range(buckets)]
    counted_in: list[list[str]] = [[] for _ in range(buckets)]
    for r in truth:
        truth_in[int(r.frame // size)].append(r.cls)
    for c in counted:
        counted_in[int(c.frame // size)].append(c.cls)
    out = []
    for k in range(buckets):
        per_class = _class_counts(classes, truth_in[k], counted_in[k])
        out.append(IntervalCounts(index=k, start_frame=math.ceil(k * size), end_frame=math.ceil((k + 1) * size),
                                  start_s=k * float(config.interval_s or 0), end_s=(k + 1) * float(config.interval_s or 0),
                                  per_class=per_class, total=ClassCount(truth=len(truth_in[k]), counted=len(counted_in[k]))))
    return tuple(out)


def _class_counts(classes: Sequence[str], truth: Sequence[str], counted: Sequence[str]) -> dict[str, ClassCount]:
    t, c = _tally(truth), _tally(counted)
    return {name: ClassCount(truth=t.get(name, 0), counted=c.get(name, 0)) for name in classes}


def _classes(config: CountScoreConfig, truth: Sequence[str], counted: Sequence[str]) -> list[str]:
    """The classifier's classes first, in its order; then every other class seen, sorted."""
    seen = set(truth) | set(counted)
    return list(config.classes) + sorted(seen - set(config.classes))


def _tally(items: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return dict(sorted(counts.items()))


def _ratio(a: int, b: int) -> Optional[float]:
    return a / b if b else None


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, _DIGITS)


# --------------------------------------------------------------------------------------------- plot


def plot_cumulative_counts(truth: Sequence[TruthRow], counted: Sequence[CountedCrossing], path: Path,
                           config: CountScoreConfig = CountScoreConfig()) -> Path:
    """Draw cumulative counts over the clip per class, counted (solid) against truth (dashed), as a PNG.

    The truth is class-mapped and lines are filtered as :func:`score_counts` does. Written atomically.

    Raises:
        MissingEnvironmentError: matplotlib is not installed.
    """
    mapping = dict(config.class_map)
    mapped = [_mapped(row, mapping) for row in truth]
    scored = set(config.lines) if config.lines else {row.line for row in truth}
    truth_idx = [i for i, row in enumerate(mapped) if row.line in scored]
    counted_idx = [j for j, c in enumerate(counted) if c.line in scored]
    classes = _classes(config, [mapped[i].cls for i in truth_idx], [counted[j].cls for j in counted_idx])
    return _plot(mapped, counted, truth_idx, counted_idx, classes, config, Path(path))


def _plot(truth: Sequence[TruthRow], counted: Sequence[CountedCrossing], truth_idx: Sequence[int],
          counted_idx: Sequence[int], classes: Sequence[str], config: CountScoreConfig, path: Path) -> Path:
    try:
        import matplotlib
    except ImportError as exc:
        raise missing_extra("matplotlib", "train") from exc
    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # no pyplot: no global state between plots or threads

    scale = 1.0 / config.fps if config.fps else 1.0
    end = max([truth[i].frame for i in truth_idx] + [counted[j].frame for j in counted_idx]
              + [(config.frames or 1) - 1, 1]) * scale
    fig = Figure(figsize=(7.0, 4.5), dpi=120)
    ax = fig.add_subplot()
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    series = [(name, colours[k % len(colours)]) for k, name in enumerate(classes)] + [("all", "black")]
    for name, colour in series:
        t = sorted(truth[i].frame * scale for i in truth_idx if name in ("all", truth[i].cls))
        c = sorted(counted[j].frame * scale for j in counted_idx if name in ("all", counted[j].cls))
        ax.step([0.0] + t + [end], list(range(len(t) + 1)) + [len(t)], where="post", color=colour,
                linestyle="--", linewidth=1.2, label=f"{name} truth ({len(t)})")
        ax.step([0.0] + c + [end], list(range(len(c) + 1)) + [len(c)], where="post", color=colour,
                linestyle="-", linewidth=1.6, label=f"{name} counted ({len(c)})")
    ax.set_xlim(0.0, end)
    ax.set_xlabel("time (s)" if config.fps else "frame")
    ax.set_ylabel("crossings so far")
    ax.set_title("Cumulative counts: counted (solid) against truth (dashed)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, ncol=2)
    fig.tight_layout()
    with atomic_output(path) as handle:
        fig.savefig(handle, format="png")
    return path

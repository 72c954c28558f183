"""Early windows: each segment's slices read at fixed ages, rolled into windows, tested as they come.

A slice is read at age `a` once the watermark has passed its end plus `a` (`monitor.stats.readings`
says what a reading holds). At each age, read slices roll in time order into windows of at least
`size` decisions, as complete windows do at the horizon. Each window at an early age is tested
against the segment's reference read at the same age (`monitor.engine.early_alerts`); the last
age is the horizon, whose readings are the final numbers and confirm or withdraw early alerts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from monitor.contract import report
from monitor.contract.spec import Spec
from monitor.engine.comparisons import iso
from monitor.engine.state import EarlyWindowState, SavedReading
from monitor.stats.metrics import Estimate
from monitor.stats.readings import Ages, EarlyMetric, Filling, Reading, early_metrics


@dataclass
class EarlyWindow:
    """A window of one segment read at one age: decisions with `start <= ts < end`."""

    segment: int
    index: int  # the age's position in `spec.reading_ages`
    age: float
    start: float
    end: float
    reading: Reading
    slices: list[int] = field(default_factory=list)
    found: dict[str, Estimate] | None = None  # its estimates, once computed: a complete window never changes


def filling(spec: Spec) -> Filling | None:
    """What a decision without an outcome yet counts as in a reading: `outcome.missing`, or nothing."""
    missing = spec.missing
    if missing is None:
        return None
    return Filling(missing.label, tuple(None if k.agg == "p90" else k.read(missing.label, missing.value, missing.kpis)
                                        for k in spec.kpis))


def spec_metrics(spec: Spec) -> tuple[EarlyMetric, ...]:
    return early_metrics(tuple((k.name, k.better, k.agg == "sum") for k in spec.kpis if k.agg != "p90"),
                         spec.task == "binary")


def age_text(seconds: float) -> str:
    """An age as people write it: 30m, 2h, 1.5h, 24h, 3d.

    >>> [age_text(s) for s in (450, 1800, 5400, 86400, 259200, 90)]
    ['7.5m', '30m', '1.5h', '24h', '3d', '1.5m']
    """
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= max(size, 2 * 86400.0 if unit == "d" else 0.0) and (seconds / size) % 0.5 == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


FLOOR = -(2**62)  # a slice id below every other


class EarlyWindows:
    """Merged early parts per (segment, slice), read at each age as the watermark passes it.

    `read_before[j]`: slices below it have been read at age `j`. It is one list for every segment, but a
    metrics partition restored from a save that a crash cut may have stored some segments' progress
    past the rest; those segments keep their own (`ahead`) until the others catch up."""

    def __init__(self, spec: Spec, on_window: Callable[[EarlyWindow], None],
                 wanted: Callable[[int, int], bool] = lambda segment, j: True,
                 on_final: Callable[[int, int, Reading], None] | None = None,
                 waiting: Callable[[int, int], bool] = lambda segment, slice_id: False) -> None:
        self.spec = spec
        self.wanted = wanted  # whether windows of (segment, age index) are still needed
        self.on_final = on_final  # takes a slice's final reading, when `waiting(segment, slice)`
        self.waiting = waiting
        self.ages = spec.reading_ages
        self.width = spec.slice_seconds
        self.kpis = len(spec.kpis)
        self.on_window = on_window
        self.open: dict[tuple[int, int], Ages] = {}
        self.read_before = [FLOOR] * len(self.ages)
        self.ahead: dict[int, list[int]] = {}  # segments restored ahead of `read_before`
        self.building: dict[tuple[int, int], EarlyWindow] = {}  # (segment, age index) -> the window it rolls
        # What a metrics partition saves, when it asks (`tracked`): segments read and slices read at the last age.
        self.tracked = False
        self.touched: set[int] = set()
        self.finished: list[tuple[int, int]] = []
        self._done: list[EarlyWindow] = []  # windows completed by the current `advance`
        self._next = -math.inf

    def since(self, segment: int, j: int) -> int:
        """Slices of `segment` below this id have been read at age `j`."""
        own = self.ahead.get(segment)
        return self.read_before[j] if own is None else own[j]

    def takes(self, segment: int, slice_id: int) -> bool:
        """Whether a part of this slice still counts: it has not been read at every age (else a redelivery)."""
        return slice_id >= self.since(segment, -1)

    def merge(self, segment: int, slice_id: int, ages: Ages) -> None:
        if not self.takes(segment, slice_id):
            return
        mine = self.open.get((segment, slice_id))
        if mine is None:
            self.open[(segment, slice_id)] = ages
        else:
            mine.merge(ages, adopt=True)

    def _read_through(self, segment: int, slice_id: int) -> int:
        """The last age this slice has been read at (-1: none)."""
        return sum(1 for j in range(len(self.ages)) if slice_id < self.since(segment, j)) - 1

    def advance(self, watermark: float) -> None:
        """Read every slice whose end plus an age the watermark has passed, at that age.

        Windows complete and slices become final in the order of the time they are read at,
        whatever steps the watermark takes: what the detector makes of them depends on that order."""
        if watermark < self._next:
            return
        last = len(self.ages) - 1
        finals: list[tuple[int, int, Reading]] = []
        for j, age in enumerate(self.ages):
            through = int((watermark - age) // self.width)
            if through <= self.read_before[j]:
                continue
            due = sorted((slice_id, segment) for segment, slice_id in self.open
                         if self.since(segment, j) <= slice_id < through)
            self.read_before[j] = through
            for own in self.ahead.values():
                own[j] = max(own[j], through)
            for slice_id, segment in due:
                if self.tracked:
                    self.touched.add(segment)
                if j < last:
                    if self.wanted(segment, j):  # else nothing needs this reading: left unread
                        self._roll(segment, j, slice_id, self.open[(segment, slice_id)].read(j, self.kpis), owned=True)
                    continue
                final = self.open.pop((segment, slice_id)).read_last(self.kpis)
                if self.tracked:
                    self.finished.append((segment, slice_id))
                finals.append((segment, slice_id, final))
                if self.wanted(segment, j):
                    self._roll(segment, j, slice_id, final, owned=False)
        self.ahead = {s: own for s, own in self.ahead.items() if own != self.read_before}
        self._next = min((self.read_before[j] + 1) * self.width + age for j, age in enumerate(self.ages))
        horizon = self.ages[-1]
        events: list[tuple[float, int, float, EarlyWindow | tuple[int, int, Reading]]] = [
            (w.end + w.age, w.index, w.start, w) for w in self._done]
        events += [((slice_id + 1) * self.width + horizon, last, slice_id * self.width, (segment, slice_id, final))
                   for segment, slice_id, final in finals]
        self._done = []
        for _, _, _, event in sorted(events, key=lambda e: e[:3]):
            if isinstance(event, EarlyWindow):
                self.on_window(event)
            elif self.on_final is not None and self.waiting(event[0], event[1]):
                self.on_final(*event)

    def _roll(self, segment: int, j: int, slice_id: int, reading: Reading, owned: bool) -> None:
        """Roll a slice's reading into its window; a reading not `owned` (a final one, which also settles
        provisional alerts) is copied before a window takes it."""
        start, end = slice_id * self.width, (slice_id + 1) * self.width
        window = self.building.get((segment, j))
        if window is None:
            window = self.building[(segment, j)] = EarlyWindow(segment, j, self.ages[j], start, end,
                                                               reading if owned else reading.copy())
        else:
            window.reading.merge(reading)
            window.end = end
        window.slices.append(slice_id)
        decisions = window.reading.n if self.spec.missing is not None else window.reading.matched
        if self.spec.window_period is not None or decisions >= self.spec.window_size:
            del self.building[(segment, j)]
            self._done.append(window)

    def changes(self) -> tuple[set[int], list[tuple[int, int]]]:
        """The segments read and the slices done with since the last call (`tracked` only)."""
        touched, finished = self.touched, self.finished
        self.touched, self.finished = set(), []
        return touched, finished

    def restore_slice(self, segment: int, slice_id: int, ages: Ages) -> None:
        """A stored open slice; call after `restore_progress`."""
        if self.takes(segment, slice_id):
            self.open[(segment, slice_id)] = ages
            ages.mark_read(self._read_through(segment, slice_id))

    def restore_progress(self, read_before: list[int], segments: dict[int, list[int]]) -> None:
        """The partition's stored progress, and each segment's where a cut save left it ahead."""
        self.read_before = list(read_before)
        self.ahead = {s: [max(a, b) for a, b in zip(own, read_before, strict=True)] for s, own in segments.items()
                      if any(a > b for a, b in zip(own, read_before, strict=True))}
        self._next = -math.inf

    def progress(self, segment: int) -> list[int]:
        return list(self.ahead.get(segment, self.read_before))

    def windows_of(self, segment: int) -> list[EarlyWindowState]:
        """The segment's windows still rolling slices in, to persist."""
        found = (self.building.get((segment, j)) for j in range(len(self.ages)))
        return [EarlyWindowState(w.index, w.start, w.end, list(w.slices), saved(w.reading)) for w in found if w]

    def restore_windows(self, segment: int, windows: list[EarlyWindowState]) -> None:
        for w in windows:
            self.building[(segment, w.index)] = EarlyWindow(segment, w.index, self.ages[w.index], w.start, w.end,
                                                            restored(w.reading), list(w.slices))


def saved(reading: Reading) -> SavedReading:
    """A reading as it is stored: with the entries it takes back, so a restore reads it as it was."""
    return reading.state(), None if reading.out is None else reading.out.state()


def restored(state: SavedReading) -> Reading:
    reading = Reading.from_state(state[0])
    if state[1] is not None:
        reading.out = Reading.from_state(state[1])
    return reading


def estimates(metrics: tuple[EarlyMetric, ...], reading: Reading, fill: Filling | None) -> dict[str, Estimate]:
    return {m.name: m.read(reading, fill) for m in metrics}


def window_estimates(window: EarlyWindow, metrics: tuple[EarlyMetric, ...],
                     fill: Filling | None) -> dict[str, Estimate]:
    """A complete window's estimates, computed once for the report, the gauges and the tests."""
    if window.found is None:
        window.found = estimates(metrics, window.reading, fill)
    return window.found


def shown_reading(window: EarlyWindow, metrics: tuple[EarlyMetric, ...], fill: Filling | None) -> report.Reading:
    """A window's reading as the report and the gauges show it; NaN as None."""
    r = window.reading
    found = window_estimates(window, metrics, fill)
    model: dict[str, float | None] = {}
    kpi: dict[str, float | None] = {}
    for m in metrics:
        value = m.reported(r, fill, found[m.name])
        (model if m.side == "model" else kpi)[m.name] = None if math.isnan(value) else value
    return report.Reading(age=age_text(window.age), start=iso(window.start), end=iso(window.end),
                          decisions=r.n if fill is not None else r.matched, matched=r.matched, model=model, kpi=kpi)

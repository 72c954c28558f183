"""Windows in decision time, built from slices that close only when every decision in them is final.

A decision lands in the slice of its own `ts` and its own segment, whenever it finalizes. A slice
closes once the join's frontier (watermark − horizon) has passed its end: by then each of its
decisions has matched or expired. Closed slices roll, in time order, into windows of at least
`size` decisions (or one slice per window with a `period`), so a rolling window never shows the
bias of finalization order: converters finalize within hours, non-converters only at the horizon.
The overall segment is one segment among the others here: its parts are merged at the source.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from monitor.contract.spec import Spec
from monitor.engine.state import SegmentState
from monitor.stats.metrics import Estimate, Metric, values
from monitor.stats.summary import Summary

SegmentKey = tuple[str, ...]  # the `by` values of a segment; () for the overall segment
NEVER = -(2**62)


@dataclass
class Window:
    """A window of one segment: decisions with `start <= ts < end`; complete once emitted."""

    segment: int
    start: float
    end: float
    summary: Summary
    metrics: tuple[Metric, ...] = field(repr=False, default=())

    @cached_property
    def estimates(self) -> dict[str, Estimate]:
        """A complete window never changes, so its estimates are computed once."""
        return {m.name: m.estimate(self.summary) for m in self.metrics}

    @property
    def values(self) -> tuple[dict[str, float], dict[str, float]]:
        """Model metric values and KPI values (sums for `agg = "sum"`)."""
        model = {m.name: self.estimates[m.name].value for m in self.metrics if m.side == "model"}
        return model, values(tuple(m for m in self.metrics if m.side == "kpi"), self.summary)


class Windows:
    """Open slices per segment, the totals of closed ones, and the windows they roll into."""

    def __init__(self, spec: Spec, on_window: Callable[[Window], None]) -> None:
        self.spec = spec
        self.width = spec.slice_seconds
        self.on_window = on_window
        self.open: dict[tuple[int, int], Summary] = {}
        self.closed: dict[int, Summary] = {}  # emitted windows, and decisions of closed slices
        self.closed_before = NEVER  # every slice id below this has closed
        self._building: dict[int, Window] = {}

    def merge(self, segment: int, slice_id: int, part: Summary, late: bool = False) -> Summary:
        """Add the summary of some decisions of one slice, handing `part` over; returns what it merged into.

        A late part (its decisions finalized after the source saw the slice close), or one whose
        slice has closed here, counts in the totals only."""
        if late or slice_id < self.closed_before:
            return self._closed(segment).merge(part)
        summary = self.open.get((segment, slice_id))
        if summary is None:  # the part is the caller's to give away: taken as it is, not copied
            summary = self.open[(segment, slice_id)] = part
            return summary
        return summary.merge(part)

    def open_slice(self, segment: int, slice_id: int) -> Summary | None:
        """What an open slice has merged so far; None once it has closed."""
        return self.open.get((segment, slice_id))

    def close(self, frontier: float) -> list[tuple[int, int]]:
        """Close every slice that ends at or before `frontier`, oldest first; returns their (segment, slice)."""
        through = int(frontier // self.width)
        if through <= self.closed_before:
            return []
        self.closed_before = through
        due = sorted((slice_id, segment) for segment, slice_id in self.open if slice_id < through)
        for slice_id, segment in due:
            self._roll(segment, slice_id, self.open.pop((segment, slice_id)))
        return [(segment, slice_id) for slice_id, segment in due]

    def total(self, segment: int) -> Summary:
        """Every finalized decision of a segment so far."""
        summary = self._closed(segment).copy()
        building = self._building.get(segment)
        if building is not None:
            summary.merge(building.summary)
        for (seg, _), part in self.open.items():
            if seg == segment:
                summary.merge(part)
        return summary

    def decisions(self, segment: int) -> int:
        """How many decisions `total(segment)` holds, without building it."""
        building = self._building.get(segment)
        return (self._closed(segment).n + (0 if building is None else building.summary.n)
                + sum(part.n for (seg, _), part in self.open.items() if seg == segment))

    def segments(self) -> set[int]:
        return set(self.closed) | {segment for segment, _ in self.open} | set(self._building)

    def state(self, segment: int) -> SegmentState:
        building = self._building.get(segment)
        return SegmentState(self._closed(segment).state(), None if building is None else (
            building.start, building.end, building.summary.state()))

    def restore(self, segment: int, state: SegmentState) -> None:
        shape = self.spec.shape
        self.closed[segment] = Summary.from_state(shape, state.closed)
        if state.building is not None:
            start, end, summary = state.building
            self._building[segment] = Window(segment, start, end, Summary.from_state(shape, summary),
                                             self.spec.metrics)

    def _closed(self, segment: int) -> Summary:
        summary = self.closed.get(segment)
        if summary is None:
            summary = self.closed[segment] = Summary(self.spec.shape)
        return summary

    def _roll(self, segment: int, slice_id: int, part: Summary) -> None:
        start, end = slice_id * self.width, (slice_id + 1) * self.width
        window = self._building.get(segment)
        if window is None:
            window = self._building[segment] = Window(segment, start, end, part, self.spec.metrics)
        else:
            window.summary.merge(part)
            window.end = end
        if self.spec.window_period is not None or window.summary.n >= self.spec.window_size:
            del self._building[segment]
            self._closed(segment).merge(window.summary)
            self.on_window(window)

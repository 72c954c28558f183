"""Windows in decision time, built from slices that close only when every decision in them is final.

A decision lands in the slice of its own `ts` and its own segment, whenever it finalizes. The
overall segment is the merge of the others, done once per slice rather than once per decision. A slice closes once the
join's frontier (watermark − horizon) has passed its end: by then each of its decisions has
matched or expired. Closed slices roll, in time order, into windows of at least `size`
decisions (or one slice per window with a `period`), so a rolling window never shows the bias of
finalization order: converters finalize within hours, non-converters only at the horizon.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from monitor.contract.spec import Spec
from monitor.engine.join import Decision
from monitor.engine.segments import OVERALL
from monitor.stats.summary import Estimate, Summary


@dataclass
class Window:
    """A complete window of one segment: decisions with `start <= ts < end`."""

    segment: int
    start: float
    end: float
    summary: Summary

    @cached_property
    def estimates(self) -> dict[str, Estimate]:
        """A complete window never changes, so its estimates are computed once."""
        return self.summary.estimates()

    @property
    def values(self) -> tuple[dict[str, float], dict[str, float]]:
        """Model metric values and KPI values (sums for `agg = "sum"`)."""
        return {m: self.estimates[m].value for m in self.summary.spec.model_metrics}, self.summary.kpi()


class Windows:
    """Slices per segment, their closed totals, and the windows they roll into."""

    def __init__(self, spec: Spec, on_window: Callable[[Window], None], derive_overall: bool = True) -> None:
        self.spec = spec
        self.width = spec.slice_seconds
        self.on_window = on_window
        self.derived = derive_overall and bool(spec.segment_by)  # overall = merge of the others
        self.always_overall = derive_overall  # report the overall segment even before it has data
        self.open: dict[tuple[int, int], Summary] = {}
        self.closed: dict[int, Summary] = {}  # emitted windows, and decisions of closed slices
        self.closed_before = -(2**62)  # every slice id below this has closed
        self._building: dict[int, Window] = {}

    def add(self, segment: int, d: Decision) -> None:
        slice_id = int(d.ts // self.width)
        if slice_id < self.closed_before:  # its slice already closed: totals only
            self._closed(segment).update(d)
            if self.derived:
                self._closed(OVERALL).update(d)
            return
        summary = self.open.get((segment, slice_id))
        if summary is None:
            summary = self.open[(segment, slice_id)] = Summary(self.spec)
        summary.update(d)

    def merge(self, segment: int, slice_id: int, part: Summary) -> Summary:
        """Add a partial summary of one slice (from another worker); returns what it merged into."""
        if slice_id < self.closed_before:  # already closed: totals only, as in `add`
            return self._closed(segment).merge(part)
        summary = self.open.get((segment, slice_id))
        if summary is None:
            summary = self.open[(segment, slice_id)] = Summary(self.spec)
        return summary.merge(part)

    def close(self, frontier: float) -> None:
        """Close every slice that ends at or before `frontier`, oldest first."""
        through = int(frontier // self.width)
        if through <= self.closed_before:
            return
        self.closed_before = through
        due = sorted((slice_id, segment) for segment, slice_id in self.open if slice_id < through)
        for i, (slice_id, segment) in enumerate(due):
            part = self.open.pop((segment, slice_id))
            if self.derived:
                if i == 0 or due[i - 1][0] != slice_id:
                    overall = Summary(self.spec)
                overall.merge(part)
                if i + 1 == len(due) or due[i + 1][0] != slice_id:
                    self._roll(OVERALL, slice_id, overall)
            self._roll(segment, slice_id, part)

    def total(self, segment: int) -> Summary:
        """Every finalized decision of a segment so far."""
        summary = self._closed(segment).copy()
        building = self._building.get(segment)
        if building is not None:
            summary.merge(building.summary)
        for (seg, _), part in self.open.items():
            if seg == segment or (segment == OVERALL and self.derived):
                summary.merge(part)
        return summary

    def segments(self) -> set[int]:
        found = set(self.closed) | {segment for segment, _ in self.open} | set(self._building)
        return found | {OVERALL} if self.always_overall else found

    def _closed(self, segment: int) -> Summary:
        summary = self.closed.get(segment)
        if summary is None:
            summary = self.closed[segment] = Summary(self.spec)
        return summary

    def _roll(self, segment: int, slice_id: int, part: Summary) -> None:
        start, end = slice_id * self.width, (slice_id + 1) * self.width
        window = self._building.get(segment)
        if window is None:
            window = self._building[segment] = Window(segment, start, end, part)
        else:
            window.summary.merge(part)
            window.end = end
        if self.spec.window_period is not None or window.summary.n >= self.spec.window_size:
            del self._building[segment]
            self._closed(segment).merge(window.summary)
            self.on_window(window)

"""Windows in decision time, built from slices that close only when every decision in them is final.

A decision lands in the slice of its own `ts`, whenever it finalizes. A slice closes once the
join's frontier (watermark − horizon) has passed its end: by then each of its decisions has
matched or expired. Closed slices roll, in time order, into windows of at least `size`
decisions (or one slice per window with a `period`), so a rolling window never shows the bias of
finalization order: converters finalize within hours, non-converters only at the horizon.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from monitor.join import Decision
from monitor.spec import Spec
from monitor.summary import Summary


@dataclass
class Window:
    """A complete window of one segment: decisions with `start <= ts < end`."""

    segment: int
    start: float
    end: float
    summary: Summary


class Windows:
    """Slices per segment, their closed totals, and the windows they roll into."""

    def __init__(self, spec: Spec, on_window: Callable[[Window], None]) -> None:
        self.spec = spec
        self.width = spec.slice_seconds
        self.on_window = on_window
        self.open: dict[tuple[int, int], Summary] = {}
        self.closed: dict[int, Summary] = {}
        self.closed_before = -(2**62)  # every slice id below this has closed
        self._building: dict[int, Window] = {}

    def add(self, segment: int, d: Decision) -> None:
        slice_id = int(d.ts // self.width)
        if slice_id < self.closed_before:  # its slice already closed: totals only
            self._closed(segment).update(d)
            return
        summary = self.open.get((segment, slice_id))
        if summary is None:
            summary = self.open[(segment, slice_id)] = Summary(self.spec)
        summary.update(d)

    def close(self, frontier: float) -> None:
        """Close every slice that ends at or before `frontier`, oldest first."""
        through = int(frontier // self.width)
        if through <= self.closed_before:
            return
        self.closed_before = through
        due = sorted((slice_id, segment) for segment, slice_id in self.open if slice_id < through)
        for slice_id, segment in due:
            self._roll(segment, slice_id, self.open.pop((segment, slice_id)))

    def total(self, segment: int) -> Summary:
        """Every finalized decision of a segment so far."""
        summary = self._closed(segment).copy()
        for (seg, _), part in self.open.items():
            if seg == segment:
                summary.merge(part)
        return summary

    def segments(self) -> set[int]:
        return set(self.closed) | {segment for segment, _ in self.open}

    def _closed(self, segment: int) -> Summary:
        summary = self.closed.get(segment)
        if summary is None:
            summary = self.closed[segment] = Summary(self.spec)
        return summary

    def _roll(self, segment: int, slice_id: int, part: Summary) -> None:
        self._closed(segment).merge(part)
        start, end = slice_id * self.width, (slice_id + 1) * self.width
        if self.spec.window_period is not None:
            self.on_window(Window(segment, start, end, part))
            return
        window = self._building.get(segment)
        if window is None:
            window = self._building[segment] = Window(segment, start, end, part)
        else:
            window.summary.merge(part)
            window.end = end
        if window.summary.n >= self.spec.window_size:
            del self._building[segment]
            self.on_window(window)

"""The metrics stage: parts of final decisions in; windows, totals, timelines and alerts out.

In process it sits right behind a `Source`; in a worker it holds the segments of one partition
of the internal topic. Per segment it can be saved as one `SegmentBase` (closed totals, the
window being built, the detector and the latest window), so what a restart reads stays flat as
the run grows: open slices and one base per segment.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from monitor.contract import report
from monitor.contract.spec import Spec
from monitor.engine.alerts import Alert, Detector
from monitor.engine.comparisons import CAPTURE, KINDS, iso
from monitor.engine.early_alerts import EARLY_KINDS, STATUSES, EarlyAlert, EarlyDetector
from monitor.engine.early_windows import EarlyWindow, EarlyWindows, age_text, filling, shown_reading, spec_metrics
from monitor.engine.segments import OVERALL, Segments
from monitor.engine.source import EarlyPart, Part
from monitor.engine.state import EarlySegmentState, SegmentBase
from monitor.engine.windows import SegmentKey, Window, Windows
from monitor.stats.metrics import KpiMetric, Metric, values
from monitor.stats.readings import Reading
from monitor.stats.summary import Summary


class Sections(NamedTuple):
    """What a report says of the rollups that hold a run's segments."""

    segments: list[report.Segment]
    alerts: list[report.Alert]
    early_alerts: list[report.EarlyAlert]


class Rollup:
    """Merges parts, closes slices as the watermark passes them, tests each complete window."""

    def __init__(self, spec: Spec, replay_source: str = CAPTURE,
                 on_alert: Callable[[Alert], None] | None = None, segments: Segments | None = None,
                 overall: bool = False, on_early: Callable[[EarlyAlert], None] | None = None) -> None:
        self.spec = spec
        self.segments = segments if segments is not None else Segments(spec)
        self.windows = Windows(spec, self._window)
        self.detector = Detector(spec, replay_source)
        self.on_alert = on_alert
        self.overall = overall  # report the overall segment even before it has decisions
        self.alerts: list[Alert] = []
        self.timeline: dict[int, list[report.Window]] = {}
        self.watermark = -math.inf
        self._next_close = -math.inf
        # Early readings (monitor.engine.early_windows): windows read at fixed ages, and their alerts.
        self.early_detector = EarlyDetector(spec, self.labels, replay_source)
        self.early = EarlyWindows(spec, self._early_window, self._early_wanted, self._early_final,
                                  self.early_detector.waiting)
        self.on_early = on_early
        self.early_alerts: list[EarlyAlert] = []
        self.early_timeline: dict[int, dict[int, list[report.Reading]]] = {}  # segment -> age index -> windows
        self.early_latest: dict[tuple[int, str], report.Reading] = {}  # (segment, age) -> latest reading
        self._early_metrics, self._fill = spec_metrics(spec), filling(spec)
        self._shown = {i for i, age in enumerate(spec.reading_ages) if age in spec.early_ages}

    def merge(self, part: Part) -> tuple[int, Summary]:
        """Add one part; returns its segment id and the summary it merged into."""
        segment = self.segments.intern(part.segment)
        return segment, self.windows.merge(segment, part.slice_id, part.summary, part.late)

    def take(self, parts: list[Part], early: list[EarlyPart], watermark: float) -> None:
        """One drain of a source: its parts, then its early parts, then its watermark."""
        for part in parts:
            self.merge(part)
        for e in early:
            self.merge_early(e)
        self.advance(watermark)

    def sections(self) -> Sections:
        return sections([self])

    def merge_early(self, part: EarlyPart) -> None:
        """Add what a source learnt of a slice at each age."""
        self.early.merge(self.segments.intern(part.segment), part.slice_id, part.ages)

    def advance(self, watermark: float) -> list[tuple[int, int]]:
        """Close the slices whose decisions are all final by `watermark`; returns them as (segment, slice)."""
        if watermark <= self.watermark:
            return []
        self.watermark = watermark
        self.early.advance(watermark)
        frontier = watermark - self.spec.horizon
        if frontier < self._next_close:  # cheap when no slice is due
            return []
        closed = self.windows.close(frontier)
        self._next_close = (self.windows.closed_before + 1) * self.windows.width
        return closed

    def key(self, segment: int) -> SegmentKey:
        return self.segments.key(segment)

    def labels(self, segment: int) -> dict[str, str]:
        return self.segments.labels(segment)

    def held(self) -> list[int]:
        """The segments this rollup holds, in id order."""
        found = self.windows.segments() | set(self.timeline) | set(self.early_timeline)
        return sorted(found | {OVERALL} if self.overall else found)

    def totals(self) -> dict[int, dict[str, Any]]:
        """Per segment: finalized decisions, model metrics and KPIs over the whole run, and outcome delays
        (matched decisions per bucket of `DELAY_BUCKETS`, and their sum)."""
        return {segment: self.total(summary) for segment, summary in self.summaries().items()}

    def summaries(self) -> dict[int, Summary]:
        """Per segment, the summary of every finalized decision so far: built anew at each call, from the
        closed windows and the open ones, so it is the caller's to keep or change."""
        return {segment: self.windows.total(segment) for segment in self.held()}

    def latest(self, segment: int) -> report.Window | None:
        """The segment's latest complete window."""
        timeline = self.timeline.get(segment)
        return timeline[-1] if timeline else None

    def segment_reports(self) -> list[report.Segment]:
        """Per segment: totals, their standard errors (null where a metric has none) and the timeline."""
        found = []
        for s, summary in self.summaries().items():  # each built once: values and errors read the same estimates
            t = self.total(summary)
            found.append(report.Segment(
                segment=self.labels(s), decisions=t["decisions"], model=clean(t["model"]), kpi=clean(t["kpi"]),
                se=self._errors(summary), timeline=self.timeline.get(s, []),
                early=[w for _, shown in sorted(self.early_timeline.get(s, {}).items()) for w in shown]))
        return found

    def total(self, summary: Summary) -> dict[str, Any]:
        """A segment's `totals` entry, from its summary."""
        spec = self.spec
        return {"decisions": summary.n, "model": values(spec.model_metrics, summary),
                "kpi": values(spec.kpi_metrics, summary), "delays": (summary.delays, summary.delay_sum)}

    def _errors(self, summary: Summary) -> report.Errors:
        return report.Errors(model=clean({m.name: _se(m, summary) for m in self.spec.model_metrics}),
                             kpi=clean({m.name: _se(m, summary) for m in self.spec.kpi_metrics}))

    def active(self, segment: int) -> dict[str, bool]:
        """Per alert kind, whether an episode is open in the segment."""
        open_kinds = self.detector.active.get(segment, set())
        return {kind: kind in open_kinds for kind in KINDS}

    def base(self, segment: int) -> SegmentBase:
        kept = self.timeline.get(segment, [])[-self.spec.windows_kept:]
        return SegmentBase(self.windows.state(segment), self.detector.state(segment), self.latest(segment), kept)

    def restore(self, key: SegmentKey, base: SegmentBase) -> int:
        """Take back a segment's base (after a restart): its timeline goes on from the windows it kept."""
        segment = self.segments.intern(key)
        self.windows.restore(segment, base.windows)
        if base.detector is not None:
            self.detector.restore(segment, base.detector)
        if base.timeline:
            self.timeline[segment] = list(base.timeline)
        elif base.latest is not None:  # a base written before bases kept their windows
            self.timeline[segment] = [base.latest]
        return segment

    def early_references(self, segment: int) -> dict[str, tuple[report.Values, report.Values]]:
        """Per early age shown, the segment's reference read at it, once complete: (model, KPI) values."""
        found = {}
        for j in sorted(self._shown):
            values = self.early_detector.reference(segment, j)
            if values is not None:
                model = {m.name: values[m.name] for m in self._early_metrics if m.side == "model"}
                kpi = {m.name: values[m.name] for m in self._early_metrics if m.side == "kpi"}
                found[age_text(self.spec.reading_ages[j])] = (model, kpi)
        return found

    def early_segments(self) -> set[int]:
        """The segments with early state: windows rolling, references, episodes, alerts waiting or a timeline."""
        return {s for s, _ in self.early.building} | self.early_detector.segments() | set(self.early_timeline)

    def early_state(self, segment: int) -> EarlySegmentState:
        """A segment's early readings and detector between slices, to persist (`restore_early` takes it back)."""
        kept = self.spec.windows_kept
        references, episodes, pending = self.early_detector.state(segment)
        timeline = [(j, shown[-kept:]) for j, shown in sorted(self.early_timeline.get(segment, {}).items())]
        return EarlySegmentState(self.early.progress(segment), self.early.windows_of(segment), references,
                                 episodes, pending, timeline)

    def restore_early(self, key: SegmentKey, state: EarlySegmentState) -> int:
        """Take back a segment's early state; the caller then restores the partition's progress and open slices."""
        segment = self.segments.intern(key)
        self.early.restore_windows(segment, state.building)
        self.early_detector.restore(segment, state.references, state.episodes, state.pending)
        for j, shown in state.timeline:
            self.early_timeline.setdefault(segment, {})[j] = list(shown)
            if shown:
                self.early_latest[(segment, shown[-1].age)] = shown[-1]
        return segment

    def _window(self, window: Window) -> None:
        model, kpi = window.values
        self.timeline.setdefault(window.segment, []).append(report.Window(
            start=iso(window.start), end=iso(window.end), decisions=window.summary.n,
            model=clean(model), kpi=clean(kpi)))
        for alert in self.detector.update(window, self.labels(window.segment)):
            self.alerts.append(alert)
            if self.on_alert is not None:
                self.on_alert(alert)


    def _early_window(self, window: EarlyWindow) -> None:
        if window.index in self._shown:
            shown = shown_reading(window, self._early_metrics, self._fill)
            self.early_timeline.setdefault(window.segment, {}).setdefault(window.index, []).append(shown)
            self.early_latest[(window.segment, shown.age)] = shown
        self._early(self.early_detector.update(window))

    def _early_wanted(self, segment: int, index: int) -> bool:
        return index in self._shown or self.early_detector.wanted(segment, index)

    def _early_final(self, segment: int, slice_id: int, reading: Reading) -> None:
        self._early(self.early_detector.final(segment, slice_id, reading))

    def _early(self, alerts: list[EarlyAlert]) -> None:
        for alert in alerts:
            self.early_alerts.append(alert)
            if self.on_early is not None:
                self.on_early(alert)


def sections(rollups: Iterable[Rollup]) -> Sections:
    """What a report says of the rollups that hold a run's segments: totals and timelines, then alerts."""
    held = list(rollups)
    segments = sorted((r for rollup in held for r in rollup.segment_reports()),
                      key=lambda r: tuple(r.segment.values()))
    alerts = sorted((a for rollup in held for a in rollup.alerts), key=alert_order)
    early = sorted((a for rollup in held for a in rollup.early_alerts), key=early_order)
    return Sections(segments, [a.event() for a in alerts], [a.event() for a in early])


def early_order(alert: EarlyAlert) -> tuple[float, tuple[tuple[str, str], ...], int, int, float, float]:
    """Early alert events in the order of event time, then segment, kind, status, window and age."""
    return (alert.at, tuple(alert.segment.items()), EARLY_KINDS.index(alert.kind), STATUSES.index(alert.status),
            alert.window.start, alert.age)


def _se(metric: Metric, summary: Summary) -> float:
    """A reported value's standard error; a `sum` KPI's is its mean's times the decisions it sums over."""
    se = metric.estimate(summary).se
    if isinstance(metric, KpiMetric) and metric.agg == "sum":
        return se * summary.kpis[metric.index].n
    return se


def clean(found: dict[str, float]) -> dict[str, float | None]:
    """JSON-safe metric values: NaN (undefined) becomes null."""
    return {k: (None if math.isnan(v) else v) for k, v in found.items()}


def alert_order(alert: Alert) -> tuple[float, tuple[tuple[str, str], ...], int]:
    """Alerts in the order of event time, then segment, then kind: the same in every process."""
    return alert.at, tuple(alert.segment.items()), KINDS.index(alert.kind)

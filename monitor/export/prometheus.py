"""The Prometheus contract: every series the monitor exports, declared in one place.

Gauges are set from the engine's state at publish time (once per window or scrape interval),
never per event. Counters advance by the difference since the last publish.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from monitor.contract.spec import Spec
from monitor.engine.alerts import KINDS, Alert
from monitor.engine.join import JoinCounts
from monitor.engine.monitor import Monitor, Rollup

STATUSES = ("matched", "expired", "late", "duplicate", "orphan", "invalid")
_COUNT_OF = {"matched": "matched", "expired": "expired", "late": "late", "duplicate": "duplicates",
             "orphan": "orphans", "invalid": "invalid"}
DELAY_BUCKETS = (60, 300, 900, 1800, 3600, 7200, 21600, 43200, 86400, 172800, 604800, math.inf)


def label_name(field: str) -> str:
    """The Prometheus label of a `by` field: `segment.country` becomes `segment_country`."""
    return re.sub(r"[^A-Za-z0-9_]", "_", field)


class Exporter:
    """Publishes a Monitor's state into a `CollectorRegistry` of its own."""

    def __init__(self, spec: Spec, registry: CollectorRegistry, prefix: str = "monitor") -> None:
        self.spec = spec
        self.by = [label_name(f) for f in spec.segment_by]
        by = ["decision", *self.by]
        self.model_metric = Gauge(f"{prefix}_model_metric", "Model metric of a segment, over the whole run"
                                  " (window=total) or the latest complete window (window=rolling).",
                                  [*by, "metric", "window"], registry=registry)
        self.kpi = Gauge(f"{prefix}_kpi", "Business KPI of a segment (window=total or rolling).",
                         [*by, "kpi", "window"], registry=registry)
        self.decisions = Counter(f"{prefix}_decisions", "Records by how the join ended them.",
                                 ["decision", "status"], registry=registry)
        self.records = Counter(f"{prefix}_records", "Records consumed, per topic.", ["decision", "topic"],
                               registry=registry)
        self.pending = Gauge(f"{prefix}_pending_decisions", "Decisions waiting for an outcome.",
                             ["decision"], registry=registry)
        self.alerts = Counter(f"{prefix}_alerts", "Alerts fired, per kind.", ["decision", "kind"],
                              registry=registry)
        self.alert_active = Gauge(f"{prefix}_alert_active", "1 while an alert episode of this kind is open"
                                  " in the segment.", [*by, "kind"], registry=registry)
        self.misalignment = Gauge(f"{prefix}_misalignment", "(z_model − z_kpi)/√2 of the latest window"
                                  " against the reference; positive: the business did worse than the"
                                  " model suggests.", [*by, "model_metric", "kpi"], registry=registry)
        self.delay = Histogram(f"{prefix}_outcome_delay_seconds", "Seconds from decision to its outcome.",
                               ["decision"], buckets=DELAY_BUCKETS, registry=registry)
        self._sent: dict[tuple[str, str], float] = {}
        self._alerts_seen: dict[int, int] = {}  # alerts already counted, per rollup
        for status in STATUSES:
            self.decisions.labels(spec.name, status)
        for kind in KINDS:
            self.alerts.labels(spec.name, kind)

    def publish(self, monitor: Monitor) -> None:
        """Bring every series up to date with an in-process monitor."""
        self.update(monitor.joiner.counts(), monitor.records, [monitor.rollup])

    def update(self, counts: JoinCounts, records: Mapping[str, int], rollups: Iterable[Rollup]) -> None:
        """Bring every series up to date: join counts and the segments of each rollup."""
        name = self.spec.name
        for status in STATUSES:
            self._advance(self.decisions, ("status", status), getattr(counts, _COUNT_OF[status]))
        for topic, n in records.items():
            self._advance(self.records, ("topic", topic), n)
        self.pending.labels(name).set(counts.pending)
        histogram = self.delay.labels(name)
        alerts = 0
        for rollup in rollups:
            alerts += len(rollup.alerts)
            for delay in rollup.delays:
                histogram.observe(delay)
            rollup.delays.clear()
            self._segments(rollup)
        for alert in self._new_alerts(rollups):
            self.alerts.labels(name, alert.kind).inc()

    def forget(self, rollup: Rollup) -> None:
        """Remove a rollup's segment series: its partition now belongs to another worker."""
        spec = self.spec
        for segment in rollup.windows.segments():
            labels = self._labels(rollup, segment)
            for window in ("total", "rolling"):
                for metric in spec.model_metrics:
                    _remove(self.model_metric, *labels, metric, window)
                for kpi in spec.kpis:
                    _remove(self.kpi, *labels, kpi.name, window)
            for kind in KINDS:
                _remove(self.alert_active, *labels, kind)
            for metric in spec.model_metrics:
                for kpi in spec.kpis:
                    _remove(self.misalignment, *labels, metric, kpi.name)
        self._alerts_seen.pop(id(rollup), None)

    def reset_counts(self) -> None:
        """Start the join counters again from zero: the partitions behind them changed hands."""
        for counter, label in ((self.decisions, "status"), (self.records, "topic")):
            for key in [k for k in self._sent if k[0] == label]:
                _remove(counter, self.spec.name, key[1])
                del self._sent[key]

    def _new_alerts(self, rollups: Iterable[Rollup]) -> list[Alert]:
        fresh: list[Alert] = []
        for rollup in rollups:
            seen = self._alerts_seen.get(id(rollup), 0)
            fresh.extend(rollup.alerts[seen:])
            self._alerts_seen[id(rollup)] = len(rollup.alerts)
        return fresh

    def _segments(self, rollup: Rollup) -> None:
        for segment, total in rollup.totals().items():
            labels = self._labels(rollup, segment)
            self._values(labels, total["model"], total["kpi"], "total")
            timeline = rollup.timeline.get(segment)
            if timeline:
                latest = timeline[-1]
                self._values(labels, latest["model"], latest["kpi"], "rolling")
            active = rollup.detector.active.get(segment, set())
            for kind in KINDS:
                self.alert_active.labels(*labels, kind).set(int(kind in active))
            for (metric, kpi), score in rollup.detector.misalignment.get(segment, {}).items():
                self.misalignment.labels(*labels, metric, kpi).set(score)

    def _labels(self, rollup: Rollup, segment: int) -> list[str]:
        key = rollup.segments.key(segment)
        return [self.spec.name, *(key if key else ("",) * len(self.by))]

    def _values(self, labels: list[str], model: dict[str, float | None], kpi: dict[str, float | None],
                window: str) -> None:
        for metric, value in model.items():
            self.model_metric.labels(*labels, metric, window).set(math.nan if value is None else value)
        for name, value in kpi.items():
            self.kpi.labels(*labels, name, window).set(math.nan if value is None else value)

    def _advance(self, counter: Counter, label: tuple[str, str], value: float) -> None:
        delta = value - self._sent.get(label, 0)
        if delta > 0:
            counter.labels(self.spec.name, label[1]).inc(delta)
            self._sent[label] = value


def _remove(metric: Gauge | Counter, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # a series never exported
        metric.remove(*labels)

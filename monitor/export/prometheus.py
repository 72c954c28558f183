"""The Prometheus contract: every series the monitor exports, declared and built in one place.

`MonitorCollector` builds the series from the engine's state at scrape time: a scrape reads and
changes nothing, and two scrapes in a row give the same samples. Counters are the engine's own
running totals; a worker that gives up partitions reports smaller ones, which Prometheus reads as
a counter reset.
"""

from __future__ import annotations

import contextlib
import math
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import NamedTuple, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from monitor.contract.spec import Spec
from monitor.engine.comparisons import KINDS
from monitor.engine.join import JoinCounts
from monitor.engine.rollup import Rollup
from monitor.engine.segments import OTHER, OVERALL, UNKNOWN
from monitor.export.early_series import add_early, early_alerts
from monitor.stats.experiment import always_valid_p, srm_p_value
from monitor.stats.metrics import QUANTILES, KpiMetric
from monitor.stats.summary import DELAY_BUCKETS, Summary

# The `status` label of monitor_decisions_total, and the JoinCounts field behind each.
STATUSES = {"matched": "matched", "expired": "expired", "late": "late", "duplicate": "duplicates",
            "orphan": "orphans", "invalid": "invalid"}


def label_name(field: str) -> str:
    """The Prometheus label of a `by` field: `segment.country` becomes `segment_country`."""
    return re.sub(r"[^A-Za-z0-9_]", "_", field)


_LE = [floatToGoString(bound) for bound in DELAY_BUCKETS]  # type: ignore[no-untyped-call]  # Prometheus' own `le` text


class Readings(Protocol):
    """What a collector reads: an in-process monitor, or a worker's stages."""

    def join_counts(self) -> JoinCounts: ...

    def record_counts(self) -> Mapping[str, int]: ...

    def event_counts(self) -> Mapping[tuple[str, str], int]:
        """Outcome events per (type, status); empty without `[outcome.events]`."""
        ...

    def rollups(self) -> Iterable[Rollup]: ...

    def folded(self) -> int: ...

    def whole(self) -> bool:
        """Whether the rollups hold every segment (one process, or a worker holding every metrics partition)."""
        ...


class _Families(NamedTuple):
    model: GaugeMetricFamily
    kpi: GaugeMetricFamily
    decisions: CounterMetricFamily
    records: CounterMetricFamily
    pending: GaugeMetricFamily
    alerts: CounterMetricFamily
    active: GaugeMetricFamily
    misalignment: GaugeMetricFamily
    delay: HistogramMetricFamily
    folded: CounterMetricFamily
    evicted: CounterMetricFamily
    lift: GaugeMetricFamily
    p_value: GaugeMetricFamily
    srm: GaugeMetricFamily
    early_active: GaugeMetricFamily


class _Arm:
    """An experiment arm over its segments: decisions and KPI moments, merged as `Summary.merge` merges
    them (so the same floats), without the score histograms and sketches the gauges do not read."""

    def __init__(self, summary: Summary) -> None:
        self.n = summary.n
        self.kpis = [moments.copy() for moments in summary.kpis]

    def merge(self, summary: Summary) -> None:
        self.n += summary.n
        for mine, theirs in zip(self.kpis, summary.kpis, strict=True):
            mine.merge(theirs)


class MonitorCollector(Collector):
    """Builds the metrics contract from `readings` at each scrape.

    Register it on a registry of its own: `registry.register(MonitorCollector(spec, readings))`.
    Pass `lock` when another thread changes the engine while scrapes happen (the demo does)."""

    def __init__(self, spec: Spec, readings: Readings, prefix: str = "monitor",
                 lock: threading.Lock | None = None) -> None:
        self.spec = spec
        self.readings = readings
        self.prefix = prefix
        self.by = [label_name(f) for f in spec.segment_by]
        self.lock = lock

    def describe(self) -> Iterable[Metric]:
        found = [*self._families(), early_alerts(self.prefix, self.spec.name, [])]
        return found + ([self._events()] if self.spec.events is not None else [])

    def collect(self) -> Iterator[Metric]:
        with self.lock or contextlib.nullcontext():
            families = self._families()
            self._fill(families)
            early = early_alerts(self.prefix, self.spec.name, self.readings.rollups())
        yield from families
        yield early
        if self.spec.events is not None:
            yield self._events()

    def _families(self) -> _Families:
        p, by = self.prefix, ["decision", *self.by]
        return _Families(
            GaugeMetricFamily(f"{p}_model_metric", "Model metric of a segment, over the whole run (window=total)"
                              " or the latest complete window (window=rolling).", labels=[*by, "metric", "window"]),
            GaugeMetricFamily(f"{p}_kpi", "Business KPI of a segment (window=total or rolling).",
                              labels=[*by, "kpi", "window"]),
            CounterMetricFamily(f"{p}_decisions", "Records by how the join ended them.",
                                labels=["decision", "status"]),
            CounterMetricFamily(f"{p}_records", "Records consumed, per topic.", labels=["decision", "topic"]),
            GaugeMetricFamily(f"{p}_pending_decisions", "Decisions waiting for an outcome.", labels=["decision"]),
            CounterMetricFamily(f"{p}_alerts", "Alerts fired, per kind.", labels=["decision", "kind"]),
            GaugeMetricFamily(f"{p}_alert_active", "1 while an alert episode of this kind is open in the segment.",
                              labels=[*by, "kind"]),
            GaugeMetricFamily(f"{p}_misalignment", "(z_model − z_kpi)/√2 of the latest window against the"
                              " reference; positive: the business did worse than the model suggests.",
                              labels=[*by, "model_metric", "kpi"]),
            HistogramMetricFamily(f"{p}_outcome_delay_seconds", "Seconds from decision to its outcome.",
                                  labels=["decision"]),
            CounterMetricFamily(f"{p}_segments_folded", "Decisions counted under an `other` segment value"
                                " because a segments cap was reached.", labels=["decision"]),
            CounterMetricFamily(f"{p}_join_evicted", "What the join's memory limits forced out: pending decisions"
                                " finalized early as expired, held outcomes dropped as orphans, final ids"
                                " forgotten early.",
                                labels=["decision", "kind"]),
            GaugeMetricFamily(f"{p}_experiment_lift", "Relative change of a KPI's mean per decision, variant against"
                              " the spec's control, over the whole run.", labels=["decision", "kpi", "variant"]),
            GaugeMetricFamily(f"{p}_experiment_p_value", "Always-valid (mSPRT) p-value of the variant's KPI"
                              " difference against the control: safe to read at every scrape.",
                              labels=["decision", "kpi", "variant"]),
            GaugeMetricFamily(f"{p}_experiment_srm_p_value", "Sample-ratio mismatch: χ² p-value of the arms' finalized"
                              " decisions against the planned split (experiment.split, else equal); below 0.001"
                              " the experiment is broken.",
                              labels=["decision"]),
            GaugeMetricFamily(f"{p}_early_alert_active", "1 while an early episode of this kind is open in the segment"
                              " with its alert in this status: provisional until the window's outcomes are final,"
                              " then confirmed; a withdrawn alert shows in neither.", labels=[*by, "kind", "status"]),
        )

    def _events(self) -> CounterMetricFamily:
        family = CounterMetricFamily(f"{self.prefix}_outcome_events", "Outcome events per type and what became of"
                                     " them: counted into their decision, late, duplicate, orphan, unknown (a type"
                                     " not in [outcome.events]) or over_limit.", labels=["decision", "type", "status"])
        for (kind, status), n in sorted(self.readings.event_counts().items()):
            family.add_metric([self.spec.name, kind, status], n)
        return family

    def _fill(self, families: _Families) -> None:
        model, kpi, decisions, records, pending, alerts, active, misalignment, delay, folded, evicted = families[:11]
        name, readings = self.spec.name, self.readings
        counts = readings.join_counts()
        for status, field in STATUSES.items():
            decisions.add_metric([name, status], getattr(counts, field))
        for topic, n in sorted(readings.record_counts().items()):
            records.add_metric([name, topic], n)
        pending.add_metric([name], counts.pending)
        folded.add_metric([name], readings.folded())
        evicted.add_metric([name, "pending"], counts.evicted_pending)
        evicted.add_metric([name, "held"], counts.evicted_held)
        evicted.add_metric([name, "finals"], counts.evicted_finals)
        fired = dict.fromkeys(KINDS, 0)
        # Each segment's whole run, built once per scrape: a copy of its closed windows' summary, score
        # histogram included, and the open slices merged in. The gauges and the experiment read it.
        wholes = [(rollup, rollup.summaries()) for rollup in readings.rollups()]
        for rollup, summaries in wholes:
            for alert in rollup.alerts:
                fired[alert.kind] += 1
            for segment, summary in summaries.items():
                total = rollup.total(summary)
                key = rollup.key(segment)
                labels = [name, *(key if key else ("",) * len(self.by))]
                for side, family in (("model", model), ("kpi", kpi)):
                    for metric, value in total[side].items():
                        family.add_metric([*labels, metric, "total"], value)
                latest = rollup.latest(segment)
                if latest is not None:
                    for values, family in ((latest.model, model), (latest.kpi, kpi)):
                        for metric, value in values.items():
                            family.add_metric([*labels, metric, "rolling"], math.nan if value is None else value)
                add_early(model, kpi, rollup, segment, dict(zip(["decision", *self.by], labels, strict=True)))
                for kind, is_open in rollup.active(segment).items():
                    active.add_metric([*labels, kind], int(is_open))
                for (kind, status), is_open in rollup.early_detector.active(segment).items():
                    families.early_active.add_metric([*labels, kind, status], int(is_open))
                for (metric, kpi_name), score in rollup.detector.misalignment.get(segment, {}).items():
                    misalignment.add_metric([*labels, metric, kpi_name], score)
                if segment == OVERALL:  # the delay histogram is the overall segment's
                    counts, total_delay = total["delays"]
                    cumulative, buckets = 0, []
                    for le, count in zip(_LE, counts, strict=True):
                        cumulative += count
                        buckets.append((le, cumulative))
                    delay.add_metric([name], buckets, total_delay)
        for kind, n in fired.items():
            alerts.add_metric([name, kind], n)
        if self.spec.experiment is not None and readings.whole():  # arms split over workers would mislead
            self._experiment(families, wholes)

    def _experiment(self, families: _Families, wholes: list[tuple[Rollup, dict[int, Summary]]]) -> None:
        """Per variant against the control: each KPI's lift and always-valid p-value, and the SRM p-value.

        The arms are the segments' whole-run summaries merged by the experiment's `by` value, so the
        gauges need nothing beyond what the engine keeps per segment. They need every segment: a
        worker that holds only some metrics partitions exports none (docs/metrics-contract.md)."""
        spec = self.spec
        experiment = spec.experiment
        assert experiment is not None
        at = spec.segment_by.index(experiment.field)
        arms: dict[str, _Arm] = {}
        for rollup, summaries in wholes:
            for segment, summary in summaries.items():
                key = rollup.key(segment)
                if segment == OVERALL or not key or key[at] in (OTHER, UNKNOWN):
                    continue
                if key[at] in arms:
                    arms[key[at]].merge(summary)
                else:
                    arms[key[at]] = _Arm(summary)
        control = arms.get(experiment.control)
        if control is None or len(arms) < 2:
            return
        name = spec.name
        split = experiment.split
        if split is None:
            families.srm.add_metric([name], srm_p_value([arms[v].n for v in sorted(arms)]))
        else:  # the planned arms, one seen nowhere counting zero
            families.srm.add_metric([name], srm_p_value([arms[v].n if v in arms else 0 for v in split],
                                                        list(split.values())))
        for variant, arm in sorted(arms.items()):
            if variant == experiment.control:
                continue
            for metric in spec.kpi_metrics:
                if not isinstance(metric, KpiMetric) or metric.agg in QUANTILES:
                    continue  # a mean per decision is compared; a percentile has no moments to test
                a, b = control.kpis[metric.index], arm.kpis[metric.index]
                lift = b.mean / a.mean - 1 if a.n and b.n and a.mean else math.nan
                p = float(always_valid_p(a.n, a.mean, a.variance, b.n, b.mean, b.variance))
                families.lift.add_metric([name, metric.name, variant], lift)
                families.p_value.add_metric([name, metric.name, variant], p)

"""What changed: explanations of a change between a reference period and a current one.

A `Collector` keeps every final decision of a replay (and its prediction's `features`); it is
installed only when explanations are asked for, so the engine's per-record path is untouched
otherwise. `explain` then compares two sets of decisions and returns explanations, largest first:

    segment_mix, outcome_rate, value_per_outcome   the KPI's change split by shift-share (they add up to it)
    model_metric                                    a model metric that moved (two-sided p < 0.05)
    score_drift                                     the score distribution moved (PSI, KS)
    feature_drift                                   a feature's distribution moved (PSI and KS, or χ²)

Every explanation has a `size`, a share with no unit, which orders the list: for the shift-share
parts the part's share of the KPI's reference value, for a model metric its relative change, for a
drift the share of traffic that moved (KS's D, or the total variation distance for categories).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from monitor.contract import report
from monitor.contract.events import Incoming
from monitor.contract.report import Explained as Explanation
from monitor.contract.spec import Spec
from monitor.engine.alerts import Alert, Detector
from monitor.engine.comparisons import iso
from monitor.engine.monitor import Monitor
from monitor.engine.rollup import alert_order
from monitor.stats import drift
from monitor.stats.decision import Decision
from monitor.stats.shiftshare import Cell, kpi, shift_share
from monitor.stats.summary import Summary

Features = dict[str, Any]
TOP_FEATURES = 3  # feature drifts listed per comparison
SHIFT_SHARE: tuple[tuple[type[report.Part], str], ...] = (
               (report.SegmentMix, "traffic shifted between segments"),
               (report.OutcomeRate, "within segments, positive outcomes became {dir} frequent"),
               (report.ValuePerOutcome, "within segments, each positive outcome is worth {dir}"))


class Collector:
    """Every final decision of one Monitor, whether it counted in its window, and its features."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self.spec = monitor.spec
        self.decisions: list[Decision] = []
        self.late: list[bool] = []  # finalized after its slice closed: in the totals, not in a window
        self.features: list[Features | None] = []
        self._waiting: dict[str, Features] = {}  # features of predictions not final yet
        self._arrays: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]] | None = None
        source = monitor.source
        parts, inner = source.parts, source.joiner.on_final

        def final(d: Decision) -> None:
            inner(d)
            self.decisions.append(d)
            self.late.append(int(d.ts // parts.width) < parts.closed_before)
            self.features.append(self._waiting.pop(d.decision_id, None))

        source.joiner.on_final = final

    def observe(self, record: Incoming) -> None:
        """See a record before the engine does: keep a prediction's features until it is final."""
        if record.topic != self.spec.topics.predictions:
            return
        found = self.spec.reader.features(record.value, record.key, record.timestamp)
        if found is not None:
            self._waiting.setdefault(*found)

    def select(self, start: float, end: float, segment: int | None = None,
               windowed: bool = False) -> list[int]:
        """Indexes of the decisions made in [start, end), of one combination segment if given;
        `windowed` leaves out those that finalized too late to count in a window."""
        ts, segments, late = self._columns()
        keep = (ts >= start) & (ts < end)
        if segment is not None:
            keep &= segments == segment
        if windowed:
            keep &= ~late
        return [int(i) for i in np.flatnonzero(keep)]

    def _columns(self) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """Decision times, segments and late flags as arrays, built once the replay has ended."""
        if self._arrays is None or len(self._arrays[0]) != len(self.decisions):
            self._arrays = (np.array([d.ts for d in self.decisions], dtype=float),
                            np.array([d.segment for d in self.decisions], dtype=np.int64),
                            np.array(self.late, dtype=bool))
        return self._arrays

    def explain(self, reference: list[int], current: list[int]) -> list[Explanation]:
        return explain(self.spec, self.monitor.segments.labels, [self.decisions[i] for i in reference],
                       [self.decisions[i] for i in current], [self.features[i] for i in reference],
                       [self.features[i] for i in current])

    def for_alerts(self) -> list[list[Explanation]]:
        """Explanations of every alert, in the report's order: its window against its segment's reference."""
        found = []
        for alert in sorted(self.monitor.alerts, key=alert_order):
            segment = self._segment(alert)
            start, end = self._reference(alert, segment)
            whose = None if segment == 0 else segment
            found.append(self.explain(self.select(start, end, whose, windowed=True),
                                      self.select(alert.window.start, alert.window.end, whose, windowed=True)))
        return found

    def between(self, reference: tuple[float, float], current: tuple[float, float]) -> report.WhatChanged:
        """What changed from one period to another, over every decision made in each."""
        ref, cur = self.select(*reference), self.select(*current)
        if not ref or not cur:
            raise ValueError(f"no final decisions in the {'reference' if not ref else 'current'} period")
        return report.WhatChanged(reference=_period(reference, len(ref)), current=_period(current, len(cur)),
                                  explanations=self.explain(ref, cur))

    def _segment(self, alert: Alert) -> int:
        key = tuple(alert.segment[f] for f in self.spec.segment_by) if alert.segment else ()
        return self.monitor.segments.known().index(key)

    def _reference(self, alert: Alert, segment: int) -> tuple[float, float]:
        """The span of the segment's reference windows: its first `reference` tested windows."""
        settings = self.spec.alerts
        tested = [w for w in self.monitor.timeline.get(segment, []) if w.decisions >= settings.min_decisions]
        first, last = tested[0], tested[settings.reference - 1]
        return _epoch(first.start), _epoch(last.end)


def explain(spec: Spec, labels: Callable[[int], dict[str, str]], reference: Sequence[Decision],
            current: Sequence[Decision], ref_features: Sequence[Features | None] = (),
            cur_features: Sequence[Features | None] = ()) -> list[Explanation]:
    """Every explanation of the change from `reference` to `current` decisions, largest first."""
    found: list[Explanation] = []
    for i, k in enumerate(spec.kpis):
        if k.agg in ("mean", "sum"):  # a sum KPI is tested, and split, on its mean per decision
            found += _shift_share(k.name, _cells(reference, i, labels), _cells(current, i, labels))
    found += _model_metrics(spec, reference, current)
    if spec.task == "binary" and len(reference) > 1 and len(current) > 1:
        found.append(_score_drift(np.array([d.score for d in reference]), np.array([d.score for d in current])))
    found += _feature_drifts(ref_features, cur_features)[:TOP_FEATURES]
    return sorted(found, key=lambda e: -e.size)


def _cells(decisions: Iterable[Decision], index: int, labels: Callable[[int], dict[str, str]]) -> dict[str, Cell]:
    n: Counter[int] = Counter()
    nonzero: Counter[int] = Counter()
    total: dict[int, float] = {}
    for d in decisions:
        x = d.kpis[index]
        if x is None:
            continue
        n[d.segment] += 1
        nonzero[d.segment] += x != 0
        total[d.segment] = total.get(d.segment, 0.0) + x
    return {_name(labels(s)): Cell(n[s], nonzero[s], total[s]) for s in n}


def _shift_share(name: str, reference: dict[str, Cell], current: dict[str, Cell]) -> list[Explanation]:
    if not reference or not current:
        return []
    before, after = kpi(reference), kpi(current)
    parts = shift_share(reference, current)
    scale = max(abs(before), 1e-12)
    return [kind(kpi=name, contribution=float(part), size=float(abs(part) / scale), reference=float(before),
                 current=float(after),
                 summary=f"{name}: {words.format(dir='more' if part > 0 else 'less')}, "
                         f"{part:+.4g} of {after - before:+.4g}")
            for (kind, words), part in zip(SHIFT_SHARE, parts, strict=True)]


def _model_metrics(spec: Spec, reference: Sequence[Decision], current: Sequence[Decision]) -> list[Explanation]:
    ref, cur = _summary(spec, reference), _summary(spec, current)
    estimates = [{m.name: m.estimate(s) for m in spec.metrics} for s in (ref, cur)]
    found: list[Explanation] = []
    for c in Detector(spec).compare(*estimates):
        if c.side != "model" or 0.025 <= c.p <= 0.975:  # two-sided p < 0.05
            continue
        change = (c.current - c.reference) / max(abs(c.reference), 1e-12)
        found.append(report.ModelMetric(
            metric=c.name, reference=c.reference, current=c.current, change=change, p_value=2 * min(c.p, 1 - c.p),
            size=abs(change), summary=f"{c.name} {c.metric.format(c.reference)} → {c.metric.format(c.current)} "
                                      f"({100 * change:+.0f}%)"))
    return found


def _score_drift(reference: np.ndarray[Any, Any], current: np.ndarray[Any, Any]) -> Explanation:
    found = drift.numbers(reference, current)
    return report.ScoreDrift(
        psi=float(found.statistic), ks=float(found.distance), p_value=float(found.p_value), size=float(found.distance),
        summary=f"scores: PSI {found.statistic:.3f}, KS D {found.distance:.3f} (p={found.p_value:.2g})")


def _feature_drifts(reference: Sequence[Features | None], current: Sequence[Features | None]) -> list[Explanation]:
    found = []
    names = sorted({k for f in [*reference, *current] if f for k in f})
    for name in names:
        before, after = _column(reference, name), _column(current, name)
        if len(before) < 2 or len(after) < 2:
            continue
        if all(_number(x) for x in before + after):
            stat = drift.numbers(np.array(before, dtype=float), np.array(after, dtype=float))
            test, words = "psi", f"PSI {stat.statistic:.3f}, KS D {stat.distance:.3f}"
        else:
            stat = drift.categories(Counter(map(str, before)), Counter(map(str, after)))
            test, words = "chi2", f"χ² {stat.statistic:.4g}, shares moved {stat.distance:.3f}"
        found.append(report.FeatureDrift(
            feature=name, test=test, statistic=float(stat.statistic), p_value=float(stat.p_value),
            distance=float(stat.distance), size=float(stat.distance),
            summary=f"feature {name}: {words} (p={stat.p_value:.2g})"))
    return sorted(found, key=lambda e: -e.size)


def _column(rows: Sequence[Features | None], name: str) -> list[Any]:
    return [f[name] for f in rows if f and f.get(name) is not None and not isinstance(f[name], dict | list)]


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _summary(spec: Spec, decisions: Iterable[Decision]) -> Summary:
    summary = Summary(spec.shape)
    for d in decisions:
        summary.update(d)
    return summary


def _name(labels: dict[str, str]) -> str:
    return "/".join(labels.values()) or "all"


def _period(span: tuple[float, float], decisions: int) -> report.Period:
    return report.Period(start=iso(span[0]), end=iso(span[1]), decisions=decisions)


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()

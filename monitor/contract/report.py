"""The replay report's shape: what `monitor replay --report` writes, and what the page, `monitor diff`
and the console read back.

msgspec structs, so a report is checked as it is read (`read`), written in one call (`write`), and
its JSON Schema (`schema`) comes from the same classes the engine builds. Times are ISO 8601 in UTC;
a metric with no value (too few decisions, one class only) is null.
"""

from __future__ import annotations

from typing import Any

import msgspec

Values = dict[str, float | None]  # metric or KPI name -> value, null where undefined


class Report(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One replay: how every record ended up, totals and timelines per segment, and the alerts raised."""

    decision: str  # the spec's decision name
    join: Join
    invalid_reasons: dict[str, int]  # why records were dead-lettered, most frequent first
    segments: list[Segment]  # all decisions first, then each segment in the order of its labels
    alerts: list[Alert]
    early_alerts: list[EarlyAlert]
    what_changed: WhatChanged | None = None  # with `--reference` and `--current`
    # with [outcome.events]: per event type, how many events were counted, late, duplicate, orphan,
    # unknown (a type not in the table) or over_limit
    outcome_events: dict[str, dict[str, int]] | None = None


class Join(msgspec.Struct, kw_only=True):
    """How every record ended up (the join's counts, docs/join.md)."""

    predictions: int = 0
    outcomes: int = 0
    matched: int = 0
    expired: int = 0
    late: int = 0
    duplicates: int = 0
    orphans: int = 0
    invalid: int = 0
    pending: int = 0
    evicted_pending: int = 0
    evicted_held: int = 0
    evicted_finals: int = 0


class Errors(msgspec.Struct, kw_only=True):
    """The standard errors of a segment's totals, null where a metric has none."""

    model: Values
    kpi: Values


class Window(msgspec.Struct, kw_only=True):
    """One complete window of a segment's timeline."""

    start: str
    end: str
    decisions: int
    model: Values
    kpi: Values


class Reading(msgspec.Struct, kw_only=True):
    """One window read at a fixed age (early warning): what was known of it then."""

    age: str  # as people write it: 30m, 2h, 3d
    start: str
    end: str
    decisions: int  # counted at the age (matched ones only when nothing fills the unknown outcomes)
    matched: int
    model: Values
    kpi: Values


class Segment(msgspec.Struct, kw_only=True):
    """One segment over the whole replay: totals, their standard errors, the timeline and early readings."""

    segment: dict[str, str]  # field -> value; empty for all decisions
    decisions: int
    model: Values
    kpi: Values
    se: Errors
    timeline: list[Window]
    early: list[Reading]


class Compared(msgspec.Struct, kw_only=True):
    """One metric of an alert's window against its reference."""

    name: str
    reference: float
    current: float
    change: float  # relative: -0.1 is 10% lower
    p_value: float  # one-sided, of worsening


class Span(msgspec.Struct, kw_only=True, omit_defaults=True):
    start: str
    end: str
    decisions: int | None = None  # an early alert's window is read before its decisions are all known


class Period(msgspec.Struct, kw_only=True):
    start: str
    end: str
    decisions: int


class Explanation(msgspec.Struct, kw_only=True, tag_field="kind"):
    """One explanation of a change, largest `size` first (docs/debugging.md)."""

    size: float  # share of the KPI's change, relative change of a metric, or distance between distributions
    summary: str  # in words


class ShiftShare(Explanation, kw_only=True):
    """One part of a KPI's change per decision: the three parts add up to the change."""

    kpi: str
    contribution: float
    reference: float
    current: float


class SegmentMix(ShiftShare, tag="segment_mix"):
    """The part of the change that traffic moving between segments made."""


class OutcomeRate(ShiftShare, tag="outcome_rate"):
    """The part that more or fewer decisions with an outcome made."""


class ValuePerOutcome(ShiftShare, tag="value_per_outcome"):
    """The part that the value of each outcome made."""


class ModelMetric(Explanation, kw_only=True, tag="model_metric"):
    metric: str
    reference: float
    current: float
    change: float
    p_value: float  # two-sided


class ScoreDrift(Explanation, kw_only=True, tag="score_drift"):
    psi: float
    ks: float
    p_value: float


class FeatureDrift(Explanation, kw_only=True, tag="feature_drift"):
    feature: str
    test: str  # "psi" for numbers, "chi2" for categories
    statistic: float
    p_value: float
    distance: float


Explained = SegmentMix | OutcomeRate | ValuePerOutcome | ModelMetric | ScoreDrift | FeatureDrift
Part = SegmentMix | OutcomeRate | ValuePerOutcome
SHIFT_SHARE: tuple[type[Part], ...] = (SegmentMix, OutcomeRate, ValuePerOutcome)  # in the order they add up


class Alert(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A complete window's alert (docs/metrics-and-alerts.md)."""

    id: str  # the same for every copy: delivery is at least once
    decision: str
    kind: str
    at: str
    segment: dict[str, str]
    subject: str  # the metric or KPI it is about
    severity: str
    message: str
    metrics: list[Compared]
    kpis: list[Compared]
    window: Span
    replay: str  # the command that reproduces it
    explanations: list[Explained] = []  # with `--explain`


class EarlyAlert(msgspec.Struct, kw_only=True):
    """One event of an early alert: provisional, then confirmed or withdrawn (docs/early-warning.md)."""

    id: str
    decision: str
    kind: str
    status: str  # provisional, confirmed or withdrawn
    provisional: bool
    alert: str  # the provisional event's id, the same on its confirmation or withdrawal
    age: str
    at: str
    segment: dict[str, str]
    subject: str
    message: str
    metrics: list[Compared]
    kpis: list[Compared]
    known: dict[str, int]  # decisions seen and outcomes matched at the age
    window: Span
    replay: str


class WhatChanged(msgspec.Struct, kw_only=True):
    """An asked-for comparison of two periods."""

    reference: Period
    current: Period
    explanations: list[Explained]


_decoder = msgspec.json.Decoder(Report)


def read(data: bytes) -> Report:
    """A report from its JSON; raises msgspec.ValidationError (with where) or msgspec.DecodeError."""
    return _decoder.decode(data)


def write(report: Report) -> bytes:
    """A report as indented JSON, the way `monitor replay --report` writes it."""
    return msgspec.json.format(msgspec.json.encode(report), indent=2)


def schema() -> dict[str, Any]:
    """The report's JSON Schema (published in the docs as docs/report.schema.json)."""
    return msgspec.json.schema(Report)

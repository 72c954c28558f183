"""The early readings' series: `window="early"` gauges with an `age` label, and early alert events.

They join the families of `monitor.export.prometheus` (the metrics contract), which calls these
at scrape time; an early series carries one label more than the `total` and `rolling` ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.samples import Sample

from monitor.contract.report import Values
from monitor.engine.early_alerts import EARLY_KINDS, STATUSES
from monitor.engine.rollup import Rollup


def add_early(model: GaugeMetricFamily, kpi: GaugeMetricFamily, rollup: Rollup, segment: int,
              labels: dict[str, str]) -> None:
    """The segment's latest window read at each early age (`window="early"`), and its reference read at the same
    age (`window="early_reference"`: the mean of its reference windows)."""
    for (seg, age), shown in sorted(rollup.early_latest.items()):
        if seg != segment:
            continue
        _add(model, kpi, labels, shown.model, shown.kpi, "early", age)
    for age, (ref_model, ref_kpi) in rollup.early_references(segment).items():
        _add(model, kpi, labels, ref_model, ref_kpi, "early_reference", age)


def _add(model: GaugeMetricFamily, kpi: GaugeMetricFamily, labels: dict[str, str], model_values: Values,
         kpi_values: Values, window: str, age: str) -> None:
    for values, family, key in ((model_values, model, "metric"), (kpi_values, kpi, "kpi")):
        for name, value in values.items():
            family.samples.append(Sample(family.name, {**labels, key: name, "window": window, "age": age},
                                         math.nan if value is None else value))


def early_alerts(prefix: str, decision: str, rollups: Iterable[Rollup]) -> CounterMetricFamily:
    """Early alert events, per kind and status: provisional, then confirmed or withdrawn."""
    family = CounterMetricFamily(f"{prefix}_early_alerts", "Early alert events: provisional, then confirmed or"
                                 " withdrawn once the window's outcomes are final.",
                                 labels=["decision", "kind", "status"])
    counts = {(kind, status): 0 for kind in EARLY_KINDS for status in STATUSES}
    for rollup in rollups:
        for alert in rollup.early_alerts:
            counts[(alert.kind, alert.status)] += 1
    for (kind, status), n in counts.items():
        family.add_metric([decision, kind, status], n)
    return family

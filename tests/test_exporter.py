"""The Prometheus contract, read back from a fresh registry."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from monitor.apps.simulate import simulate
from monitor.contract.spec import Spec
from monitor.engine.monitor import Monitor
from monitor.export.prometheus import MonitorCollector
from monitor.testing import encode


@pytest.fixture(scope="module")
def published(request: pytest.FixtureRequest) -> tuple[Monitor, CollectorRegistry]:
    spec: Spec = request.getfixturevalue("spec")
    registry = CollectorRegistry()
    monitor = Monitor(spec)
    registry.register(MonitorCollector(spec, monitor))
    for i, record in enumerate(simulate("business_drop", 40_000, seed=2)):
        monitor.process(str(record["topic"]), encode(record["value"]))
        if i % 10_000 == 0:
            generate_latest(registry)  # scrapes along the way change nothing
    monitor.finish()
    first = generate_latest(registry)
    assert generate_latest(registry) == first  # a scrape has no side effect
    return monitor, registry


def test_counters_equal_the_join_counts(published: tuple[Monitor, CollectorRegistry]) -> None:
    monitor, registry = published
    counts = monitor.joiner.counts()
    for status, count in [("matched", counts.matched), ("expired", counts.expired), ("late", counts.late),
                          ("duplicate", counts.duplicates), ("orphan", counts.orphans),
                          ("invalid", counts.invalid)]:
        value = registry.get_sample_value("monitor_decisions_total",
                                          {"decision": "checkout_offer", "status": status})
        assert value == count, status
    assert registry.get_sample_value("monitor_pending_decisions", {"decision": "checkout_offer"}) == counts.pending
    consumed = sum(registry.get_sample_value("monitor_records_total", {"decision": "checkout_offer", "topic": t})
                   or 0 for t in ("predictions", "outcomes"))
    assert consumed == sum(monitor.records.values())
    assert registry.get_sample_value("monitor_outcome_delay_seconds_count",
                                     {"decision": "checkout_offer"}) == counts.matched


def test_gauges_carry_the_segment_labels(published: tuple[Monitor, CollectorRegistry]) -> None:
    monitor, registry = published
    totals = monitor.totals()
    for segment, total in totals.items():
        key = monitor.segments.key(segment)
        labels = {"decision": "checkout_offer", "variant": key[0] if key else "",
                  "segment_country": key[1] if key else ""}
        auc = registry.get_sample_value("monitor_model_metric", {**labels, "metric": "roc_auc", "window": "total"})
        assert auc == pytest.approx(total["model"]["roc_auc"])
        revenue = registry.get_sample_value("monitor_kpi", {**labels, "kpi": "revenue", "window": "total"})
        assert revenue == pytest.approx(total["kpi"]["revenue"])
        rolling = registry.get_sample_value("monitor_kpi", {**labels, "kpi": "revenue", "window": "rolling"})
        assert rolling == pytest.approx(monitor.timeline[segment][-1].kpi["revenue"])


def test_alerts_and_misalignment(published: tuple[Monitor, CollectorRegistry]) -> None:
    monitor, registry = published
    overall = {"decision": "checkout_offer", "variant": "", "segment_country": ""}
    fired = registry.get_sample_value("monitor_alerts_total", {"decision": "checkout_offer",
                                                               "kind": "misalignment"})
    assert fired == sum(1 for a in monitor.alerts if a.kind == "misalignment") >= 1
    assert registry.get_sample_value("monitor_alert_active", {**overall, "kind": "misalignment"}) == 1
    assert registry.get_sample_value("monitor_alert_active", {**overall, "kind": "model_degradation"}) == 0
    score = registry.get_sample_value("monitor_misalignment", {**overall, "model_metric": "roc_auc",
                                                               "kpi": "revenue"})
    assert score is not None and score > 3  # the business fell while the model held
    text = generate_latest(registry).decode()
    assert ('monitor_model_metric{decision="checkout_offer",metric="roc_auc",segment_country="",variant="",'
            'window="total"}') in text
    assert not any(math.isinf(s.value) for m in registry.collect() for s in m.samples
                   if not s.name.endswith("_bucket"))


def test_experiment_gauges_agree_with_the_joined_table(spec_text: str, tmp_path) -> None:
    """Lift, always-valid p and SRM from the engine's segments equal the same numbers computed on the table's rows."""
    from scipy import stats

    from monitor.apps.replay import replay
    from monitor.apps.simulate import write_jsonl
    from monitor.contract.spec import parse
    from monitor.export.joined import JoinedTable
    from monitor.stats.experiment import always_valid_p

    spec = parse(spec_text + '\n[experiment]\nfield = "variant"\ncontrol = "control"\n')
    stream = tmp_path / "stream.jsonl"
    write_jsonl(simulate("business_drop", 20_000, seed=4), stream)
    table = JoinedTable(spec)
    monitor = replay(spec, stream, joined=table)
    registry = CollectorRegistry()
    registry.register(MonitorCollector(spec, monitor))
    rows = table.frame()
    rows = rows[rows["label"].notna()]
    arms = {v: rows[rows["variant"] == v] for v in ("control", "treatment")}
    counts = [len(arms["control"]), len(arms["treatment"])]
    srm = registry.get_sample_value("monitor_experiment_srm_p_value", {"decision": "checkout_offer"})
    assert srm == pytest.approx(stats.chisquare(counts).pvalue, rel=1e-9)
    for kpi in ("conversion", "revenue", "items"):
        a, b = (arms[v][f"kpi.{kpi}"].dropna() for v in ("control", "treatment"))
        labels = {"decision": "checkout_offer", "kpi": kpi, "variant": "treatment"}
        lift = registry.get_sample_value("monitor_experiment_lift", labels)
        assert lift == pytest.approx(b.mean() / a.mean() - 1, rel=1e-9)
        p = registry.get_sample_value("monitor_experiment_p_value", labels)
        assert p == pytest.approx(float(always_valid_p(a.size, a.mean(), a.var(), b.size, b.mean(), b.var())), rel=1e-6)
        assert registry.get_sample_value("monitor_experiment_lift", {**labels, "variant": "control"}) is None


def test_no_experiment_gauges_without_an_experiment(published: tuple[Monitor, CollectorRegistry]) -> None:
    _, registry = published
    assert registry.get_sample_value("monitor_experiment_srm_p_value", {"decision": "checkout_offer"}) is None
    assert "monitor_experiment_lift{" not in generate_latest(registry).decode()


def test_the_srm_gauge_tests_the_planned_split(spec_text: str) -> None:
    from scipy import stats

    from monitor.contract.spec import parse

    planned = parse(spec_text + '\n[experiment]\nfield = "variant"\ncontrol = "control"\n'
                    'split = { control = 0.48, treatment = 0.52 }\n')
    monitor = Monitor(planned)
    for record in simulate("healthy", 20_000, seed=3):
        monitor.process(str(record["topic"]), encode(record["value"]))
    monitor.finish()
    registry = CollectorRegistry()
    registry.register(MonitorCollector(planned, monitor))
    counts = dict.fromkeys(("control", "treatment"), 0)
    for rollup in monitor.rollups():
        for segment, total in rollup.totals().items():
            key = rollup.key(segment)
            if key:  # (variant, country); the overall segment's key is ()
                counts[key[0]] += total["decisions"]
    n = sum(counts.values())
    want = stats.chisquare(list(counts.values()), [n * 0.48, n * 0.52]).pvalue
    got = registry.get_sample_value("monitor_experiment_srm_p_value", {"decision": "checkout_offer"})
    assert 0 < got < 1e-3 and got == pytest.approx(want, rel=1e-9)  # a 50/50 stream against a 48/52 plan


def test_early_gauges_carry_the_age_and_equal_the_latest_reading(published: tuple[Monitor, CollectorRegistry]) -> None:
    monitor, registry = published
    report = monitor.report()
    overall = report.segments[0]
    by_age = {w.age: w for w in overall.early}  # the latest window per age (windows come in time order)
    assert set(by_age) == {"7.5m", "30m", "1.5h"}
    empty = {"segment_country": "", "variant": ""}
    for age, window in by_age.items():
        labels = {"decision": "checkout_offer", **empty, "window": "early", "age": age}
        assert registry.get_sample_value("monitor_kpi", {**labels, "kpi": "revenue"}) == window.kpi["revenue"]
        assert registry.get_sample_value("monitor_model_metric", {**labels, "metric": "roc_auc"}) == \
            window.model["roc_auc"]
    for status in ("provisional", "confirmed", "withdrawn"):
        want = sum(1 for a in report.early_alerts if a.kind == "kpi_degradation" and a.status == status)
        assert registry.get_sample_value("monitor_early_alerts_total", {
            "decision": "checkout_offer", "kind": "kpi_degradation", "status": status}) == want
    assert any(a.status == "provisional" for a in report.early_alerts)


def test_early_references_pool_the_first_windows_read_at_each_age(published: tuple[Monitor, CollectorRegistry]) -> None:
    """window="early_reference" is the segment's first `reference` windows at the age, pooled: a KPI at the age is
    their decisions' mean, a KPI per outcome their matched outcomes' mean (from the report's early timeline)."""
    monitor, registry = published
    spec = monitor.spec
    overall = monitor.report().segments[0]
    labels = {"decision": "checkout_offer", "segment_country": "", "variant": "", "window": "early_reference"}
    for age in ("7.5m", "30m", "1.5h"):
        first = [w for w in overall.early if w.age == age][:spec.alerts.reference]
        assert len(first) == spec.alerts.reference
        at_age = sum(w.kpi["conversion"] * w.decisions for w in first) / sum(w.decisions for w in first)
        per_outcome = sum(w.kpi["revenue_per_outcome"] * w.matched for w in first) / sum(w.matched for w in first)
        assert registry.get_sample_value("monitor_kpi", {**labels, "age": age, "kpi": "conversion"}) == \
            pytest.approx(at_age, rel=1e-9)
        assert registry.get_sample_value("monitor_kpi", {**labels, "age": age, "kpi": "revenue_per_outcome"}) == \
            pytest.approx(per_outcome, rel=1e-9)


def test_early_alert_states_follow_the_events(published: tuple[Monitor, CollectorRegistry]) -> None:
    """A segment's early alert shows provisional until its confirmation, then confirmed (or nothing once withdrawn),
    while its episode is open; the gauge agrees with the last event of each open episode."""
    monitor, registry = published
    report = monitor.report()
    shown = {(s.labels["segment_country"], s.labels["variant"], s.labels["kind"], s.labels["status"]): s.value
             for family in registry.collect() if family.name == "monitor_early_alert_active" for s in family.samples}
    assert shown and set(shown.values()) <= {0.0, 1.0}
    assert any(shown.values()), "the scenario should leave an early episode open"
    for (country, variant, kind, status), value in shown.items():
        if not value:
            continue
        events = [a for a in report.early_alerts if a.kind == kind
                  and (a.segment.get("segment.country", ""), a.segment.get("variant", "")) == (country, variant)]
        assert events, (country, variant, kind)
        first = events[-1].alert  # the episode's provisional alert
        settled = [a.status for a in events if a.alert == first and a.status != "provisional"]
        assert status == (settled[0] if settled else "provisional")

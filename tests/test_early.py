"""Early readings: checked against numpy/scipy on the raw decisions, and against the final numbers at the horizon."""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import pytest
from scipy import stats

from monitor.apps.simulate import simulate
from monitor.contract import spec as specs
from monitor.contract.errors import SpecError
from monitor.contract.report import Report
from monitor.engine.monitor import Monitor
from monitor.stats.decision import Decision
from monitor.stats.readings import Ages, Reading
from monitor.testing import Stream, edit_spec, encode

START = 1_767_225_600.0
AGES = {"30m": 1800.0, "2h": 7200.0}


def clean_stream(n: int, seed: int) -> tuple[Stream, dict[str, np.ndarray]]:
    """Decisions over three days and their purchases, every record in event-time order."""
    rng = np.random.default_rng(seed)
    ts = np.sort(START + rng.uniform(0, 3 * 86400, n)).round(3)
    x = rng.standard_normal(n)
    label = rng.random(n) < 1 / (1 + np.exp(-(-1.5 + 1.2 * x)))
    score = np.round(1 / (1 + np.exp(-(-1.5 + 1.2 * (x + 0.5 * rng.standard_normal(n))))), 4)
    delay = np.round(np.exp(rng.normal(np.log(2400), 1.0, n)), 3)
    value = np.round(np.exp(rng.normal(3.5, 0.5, n)), 2)
    events = [(t, 0, i) for i, t in enumerate(ts.tolist())]
    events += [(ts[i] + delay[i], 1, i) for i in np.flatnonzero(label & (delay < 6 * 3600)).tolist()]
    stream = Stream()
    for t, kind, i in sorted(events):
        if kind == 0:
            stream.predict(f"d{i}", float(t), float(score[i]))
        else:
            stream.outcome(f"d{i}", float(t), 1, value=float(value[i]))
    return stream, {"ts": ts, "label": label, "score": score, "delay": delay, "value": value}


def seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@pytest.fixture
def early_spec(spec_text: str) -> specs.Spec:
    return specs.parse(edit_spec(spec_text, {"windows.size": 500, "segments.by": [],
                                             "outcome.early": ["30m", "2h", "6h"]}))


def test_early_readings_equal_numpy_on_the_raw_decisions(early_spec: specs.Spec) -> None:
    stream, raw = clean_stream(8000, seed=3)
    report = stream.feed(Monitor(early_spec)).report()
    windows = [w for w in report.segments[0].early if w.age in AGES]
    assert len(windows) > 20
    for w in windows:
        age = AGES[w.age]
        inside = (raw["ts"] >= seconds(w.start)) & (raw["ts"] < seconds(w.end))
        converted = inside & raw["label"] & (raw["delay"] < age)
        n = int(inside.sum())
        assert w.decisions == n >= 500
        assert w.matched == int(converted.sum())
        assert w.kpi["conversion"] == pytest.approx(converted.sum() / n, rel=1e-12)
        assert w.kpi["revenue"] == pytest.approx(raw["value"][converted].sum() / n, rel=1e-9)
        assert w.kpi["revenue_per_outcome"] == pytest.approx(raw["value"][converted].mean(), rel=1e-9)
        pos, neg = raw["score"][converted], raw["score"][inside & ~converted]
        u = stats.mannwhitneyu(pos, neg).statistic  # ties count one half, as the histogram's AUC does
        assert w.model["roc_auc"] == pytest.approx(u / (pos.size * neg.size), abs=1e-9)


def test_reading_at_the_horizon_equals_the_final_window(early_spec: specs.Spec) -> None:
    """On a messy stream (duplicates, early and late outcomes, orphans, malformed records)."""
    monitor = Monitor(early_spec)
    for r in simulate("business_drop", 30_000, seed=4):
        monitor.process(str(r["topic"]), encode(r["value"]))
    monitor.finish()
    for segment in monitor.report().segments:
        final = segment.timeline
        at_horizon = [w for w in segment.early if w.age == "6h"]
        assert len(final) == len(at_horizon) > 5
        for f, e in zip(final, at_horizon, strict=True):
            assert (e.start, e.end, e.decisions) == (f.start, f.end, f.decisions)
            for mine, theirs in ((e.model, f.model), (e.kpi, f.kpi)):
                for name in mine.keys() & theirs.keys():
                    assert mine[name] == pytest.approx(theirs[name], rel=1e-9), name


def test_a_reading_grows_with_age_and_the_share_matched_follows_the_delays(early_spec: specs.Spec) -> None:
    stream, _ = clean_stream(6000, seed=5)
    report = stream.feed(Monitor(early_spec)).report()
    by_age: dict[str, dict[str, int]] = {}
    for w in report.segments[0].early:
        by_age.setdefault(w.age, {})[w.start] = w.matched
    final = by_age["6h"]  # the last windows read early never reach the horizon before the stream ends
    shares = {age: sum(v[start] for start in final) / sum(final.values()) for age, v in by_age.items()}
    assert shares["30m"] < shares["2h"] < shares["6h"] == 1.0
    expected = {age: stats.lognorm(1.0, scale=2400).cdf(AGES.get(age, 6 * 3600)) / stats.lognorm(
        1.0, scale=2400).cdf(6 * 3600) for age in shares}
    for age, share in shares.items():
        assert share == pytest.approx(expected[age], abs=0.03), age


def test_early_parts_merge_like_one_source() -> None:
    """Split any way into parts and merged back, a reading is the same as one source's."""
    rng = np.random.default_rng(0)
    decisions = [Decision(0.0, 0, float(rng.random()), True, float(rng.random() < 0.3), None,
                          (float(rng.normal()),), 1.0) for _ in range(300)]
    whole, parts = Ages(3), [Ages(3) for _ in range(4)]
    for i, d in enumerate(decisions):
        j = i % 3
        for ages in (whole, parts[i % 4]):
            ages.part(j, 1).see(d.score)
            if i % 2:
                ages.part(j, 1).match(d)
    merged = Ages(3)
    for p in parts:
        merged.merge(Ages.from_state(p.state()))
    for j in range(3):
        a, b = whole.reading(j, 1), merged.reading(j, 1)
        assert (a.n, a.matched) == (b.n, b.matched)
        assert (sorted(a.scores), sorted(a.pos), sorted(a.neg)) == (sorted(b.scores), sorted(b.pos), sorted(b.neg))
        ma, mb = a.moments(0), b.moments(0)
        assert (ma.n, ma.mean, ma.m2) == (mb.n, pytest.approx(mb.mean), pytest.approx(mb.m2))
    assert Reading(1).merge(whole.reading(2, 1)).n == 300


def test_default_ages_come_from_the_horizon(spec: specs.Spec) -> None:
    assert spec.early_ages == (spec.horizon / 48, spec.horizon / 12, spec.horizon / 4)
    assert spec.reading_ages[-1] == spec.horizon


@pytest.mark.parametrize("value", ["2h", ["7h"], ["soon"], [2]])
def test_a_wrong_early_list_fails_naming_the_key(spec_text: str, value: object) -> None:
    with pytest.raises(SpecError) as info:
        specs.parse(edit_spec(spec_text, {"outcome.early": value}))
    assert "outcome.early" in str(info.value)


def test_no_missing_reads_matched_outcomes_only(spec_text: str) -> None:
    text = edit_spec(spec_text, {"windows.size": 200, "segments.by": [], "outcome.missing": None,
                                 "outcome.early": ["2h"]})
    stream, _ = clean_stream(4000, seed=6)
    report = stream.feed(Monitor(specs.parse(text))).report()
    assert report.segments[0].early
    for w in report.segments[0].early:
        assert w.decisions == w.matched
        assert math.isclose(w.kpi["conversion"], 1.0)


PER_DAY = 360 * 24  # the stream of the detection table (docs/early-warning.md): 24 h horizon, 360 decisions an hour


@pytest.fixture
def day_spec(spec_text: str) -> specs.Spec:
    return specs.parse(edit_spec(spec_text, {"outcome.horizon": "24h", "windows.size": None}))


def replayed(spec: specs.Spec, scenario: str, n: int, **effects: float) -> tuple[Report, float]:
    monitor = Monitor(spec)
    change = math.nan
    for r in simulate(scenario, n, seed=1, per_day=PER_DAY, **effects):  # type: ignore[arg-type]
        value = r["value"]
        if r["topic"] == "predictions" and r["key"] == f"d-{n // 2:07d}" and isinstance(value, dict):
            change = float(value["ts"])
        monitor.process(str(r["topic"]), encode(value))
    monitor.finish()
    return monitor.report(), change


def test_slower_outcomes_are_an_outcome_delay_not_a_drop(day_spec: specs.Spec) -> None:
    report, change = replayed(day_spec, "slower_outcomes", 30_000)
    assert report.alerts == []  # the complete windows see no drop
    early = report.early_alerts
    assert {a.kind for a in early} == {"outcome_delay"}
    first = early[0]
    assert first.status == "provisional" and first.provisional
    assert 0 < seconds(first.at) - change < 6 * 3600
    assert "Whether they are slower or fewer is known at the horizon" in first.message
    settled = [a for a in early if a.alert == first.id and a.status != "provisional"]
    assert [a.status for a in settled] == ["confirmed"]
    assert settled[0].age == "24h" and seconds(settled[0].at) > seconds(first.at)


def test_a_revenue_drop_is_found_early_and_confirmed(day_spec: specs.Spec) -> None:
    report, change = replayed(day_spec, "business_drop", 30_000, value_drop=0.5)
    first = next(a for a in report.early_alerts if a.kind == "kpi_degradation")
    assert first.subject == "revenue_per_outcome" and "provisional" in first.message
    assert 0 < seconds(first.at) - change < 6 * 3600
    final = next(a for a in report.alerts if a.kind == "kpi_degradation")
    assert seconds(final.at) - seconds(first.at) > 18 * 3600  # complete windows come a horizon later
    statuses = {a.status for a in report.early_alerts if a.alert == first.id}
    assert statuses == {"provisional", "confirmed"}
    assert not any(a.kind == "outcome_delay" for a in report.early_alerts)


def test_a_healthy_stream_raises_no_early_alert(day_spec: specs.Spec) -> None:
    report, _ = replayed(day_spec, "healthy", 60_000)
    assert report.segments[0].early
    assert report.early_alerts == [] and report.alerts == []

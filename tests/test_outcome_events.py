"""Outcome events: several business events per decision, combined, against an independent oracle.

The oracle reads the raw records with plain Python: first prediction per id, events told apart by
their id, each decision's outcome the largest label and the summed amounts of its events before
its horizon. Replay, the in-memory worker (through a crash and redeliveries) and any interleaving
of the two topics must give its numbers.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.apps.simulate import simulate
from monitor.contract import spec as specs
from monitor.contract.errors import SpecError
from monitor.contract.spec import Spec
from monitor.engine.monitor import Monitor
from monitor.engine.source import Source
from monitor.stats.decision import Decision
from monitor.testing import InMemoryWorker, Memory, Stream, edit_spec, encode
from tests.test_stream import partition_of

EVENTS_SPEC = Path(__file__).resolve().parent.parent / "monitor" / "checkout_events.toml"
PER_DAY = 4_000  # decisions a day: 20,000 decisions span five days, two of them past the 3-day horizon


@pytest.fixture(scope="module")
def events_spec() -> Spec:
    return specs.load(EVENTS_SPEC)


def spec_with(changes: dict[str, object]) -> Spec:
    return specs.parse(edit_spec(EVENTS_SPEC.read_text(), changes))


# -- the spec --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("changes", "key"), [
    ({"outcome.events.type": None}, "outcome.events.type"),
    ({"outcome.events.refund": {"value": "-"}}, "outcome.events.refund.value"),
    ({"outcome.events.refund": {"value": True}}, "outcome.events.refund.value"),
    ({"outcome.events.refund": {"amount": "x"}}, "outcome.events.refund.amount"),
    ({"kpi.1.field": "kpis.disputes"}, "kpi[1].field"),
    ({"outcomes.label": "ok"}, "outcomes.label"),
    ({"outcome.events.id": "decision_id"}, "outcome.events.id"),
    ({"outcome.events.purchase": {"label": 2, "value": "amount"}}, "outcome.events.purchase.label"),
])
def test_a_wrong_events_table_fails_at_start_naming_the_key(changes: dict[str, object], key: str) -> None:
    with pytest.raises(SpecError) as caught:
        spec_with(changes)
    assert caught.value.key == key


def test_kpis_given_by_events_are_summed() -> None:
    spec = spec_with({"outcome.events.chargeback": {"value": "-amount", "kpis": {"disputes": 1}},
                      "kpi.1": {"name": "disputes", "field": "kpis.disputes", "agg": "sum", "better": "lower"}})
    stream = Stream().predict("a", 100.0, 0.9).predict("z", 900_000.0, 0.2)
    for i, (event, amount) in enumerate([("purchase", 30.0), ("chargeback", 30.0), ("chargeback", 5.0)]):
        stream.raw("outcomes", {"decision_id": "a", "ts": 200.0 + i, "event": event, "event_id": str(i),
                                "amount": amount})
    stream.raw("outcomes", {"decision_id": "z", "ts": 900_000.0, "event": "purchase", "event_id": "z",
                            "amount": 1.0})
    finals: list[Decision] = []
    _feed(spec, stream, finals)
    (a,) = [d for d in finals if d.decision_id == "a"]
    assert (a.label, a.value, a.kpis) == (1.0, -5.0, (1.0, 2.0))
    assert a.events == (1, 0, 2)  # per type, in the table's order: purchase, refund, chargeback


def _feed(spec: Spec, stream: Stream, finals: list[Decision]) -> Monitor:
    monitor = Monitor(spec, on_final=finals.append)
    stream.feed(monitor)
    return monitor


# -- the case that started it ------------------------------------------------------------------------
def purchases_and_a_refund(refund_again: bool = False) -> Stream:
    spec = {"decision_id": "a"}
    stream = Stream().predict("a", 100.0, 0.9)
    events = [("purchase", 200.0, 30.0), ("purchase", 300.0, 20.0), ("refund", 400.0, 30.0)]
    if refund_again:
        events.append(events[-1])
    for event, ts, amount in events:
        stream.raw("outcomes", {**spec, "ts": ts, "event": event, "amount": amount})
    return stream.predict("later", 100_000_000.0, 0.1).raw(
        "outcomes", {"decision_id": "later", "ts": 100_000_000.0, "event": "refund", "amount": 1.0})


@pytest.mark.parametrize("refund_again", [False, True], ids=["once", "redelivered"])
def test_purchases_of_30_and_20_less_a_refund_of_30_give_20(refund_again: bool) -> None:
    spec = spec_with({"outcome.events.id": None})  # told apart by their bytes and time
    finals: list[Decision] = []
    monitor = _feed(spec, purchases_and_a_refund(refund_again), finals)
    (a,) = [d for d in finals if d.decision_id == "a"]
    assert (a.label, a.value) == (1.0, 20.0)
    report = monitor.report()
    assert report.join.duplicates == int(refund_again)
    assert report.join.matched == 1 and report.join.late == 0
    assert report.segments[0].kpi["revenue"] == 20.0
    assert report.outcome_events == {"purchase": {"counted": 2},  # and the refund of the decision still pending:
                                     "refund": {"counted": 2, **({"duplicate": 1} if refund_again else {})}}


def test_events_after_the_horizon_are_late_one_by_one(events_spec: Spec) -> None:
    horizon = events_spec.horizon
    stream = Stream().predict("a", 0.0, 0.9)
    for i, ts in enumerate([10.0, horizon - 1, horizon, horizon + 5]):
        stream.raw("outcomes", {"decision_id": "a", "ts": ts, "event": "purchase", "event_id": str(i), "amount": 1})
    stream.raw("outcomes", {"decision_id": "a", "ts": horizon + 5, "event": "purchase", "event_id": "3",
                            "amount": 1})  # a repeat of a late one: a duplicate
    stream.raw("outcomes", {"decision_id": "a", "ts": horizon + 9, "event": "gift", "event_id": "g"})
    finals: list[Decision] = []
    report = _feed(events_spec, stream.predict("z", 10 * horizon, 0.5), finals).report()
    assert [d.value for d in finals if d.decision_id == "a"] == [2.0]
    assert report.join.late == 2 and report.join.duplicates == 1
    assert report.outcome_events == {"purchase": {"counted": 2, "late": 2, "duplicate": 1}, "gift": {"unknown": 1}}


def test_held_events_past_the_limit_are_dropped_oldest_first() -> None:
    spec = spec_with({"limits.max_held": 2})
    stream = Stream()
    for i in range(4):  # events of four decisions whose predictions have not come
        stream.raw("outcomes", {"decision_id": f"h{i}", "ts": 10.0 + i, "event": "purchase", "event_id": f"e{i}",
                                "amount": 1.0})
    for i in range(4):
        stream.predict(f"h{i}", 5.0 + i, 0.5)
    stream.predict("z", 10 * spec.horizon, 0.5).raw("outcomes", {"decision_id": "z", "ts": 10 * spec.horizon,
                                                                  "event": "refund", "amount": 1.0})
    finals: list[Decision] = []
    report = _feed(spec, stream, finals).report()
    assert sorted((d.decision_id, d.value) for d in finals if d.decision_id != "z") == [
        ("h0", 0.0), ("h1", 0.0), ("h2", 1.0), ("h3", 1.0)]  # the two oldest events were dropped: missing
    assert (report.join.orphans, report.join.evicted_held) == (2, 2)
    assert report.outcome_events == {"purchase": {"counted": 2, "orphan": 2}, "refund": {"counted": 1}}


def test_a_runaway_decision_is_bounded_and_counted() -> None:
    spec = spec_with({"limits.max_events_per_decision": 3})
    stream = Stream().predict("a", 0.0, 0.9)
    for i in range(5):
        stream.raw("outcomes", {"decision_id": "a", "ts": 1.0 + i, "event": "purchase", "event_id": str(i),
                                "amount": 1})
    stream.predict("z", 10 * spec.horizon, 0.5).raw("outcomes", {"decision_id": "z", "ts": 10 * spec.horizon,
                                                                  "event": "refund", "amount": 1})
    finals: list[Decision] = []
    report = _feed(spec, stream, finals).report()
    assert [d.value for d in finals if d.decision_id == "a"] == [3.0]
    assert report.outcome_events == {"purchase": {"counted": 3, "over_limit": 2}, "refund": {"counted": 1}}


def test_an_event_without_its_number_is_dead_lettered_with_the_reason(events_spec: Spec) -> None:
    stream = Stream().predict("a", 0.0, 0.9).raw("outcomes", {"decision_id": "a", "ts": 1.0, "event": "purchase"})
    report = _feed(events_spec, stream, []).report()
    assert report.join.invalid == 1
    assert any("no number at `amount`" in reason for reason in report.invalid_reasons)


# -- an independent oracle -----------------------------------------------------------------------
def oracle(records: list[dict[str, Any]], spec: Spec) -> dict[str, Any]:
    """The final decisions' numbers, from the raw records with plain Python."""
    predictions: dict[str, tuple[float, float]] = {}
    events: dict[str, dict[str, tuple[float, str, float]]] = defaultdict(dict)
    newest = {"predictions": -math.inf, "outcomes": -math.inf}
    for r in records:
        v = r["value"]
        if not isinstance(v, dict) or not isinstance(v.get("ts"), float):
            continue
        if r["topic"] == "predictions" and isinstance(v.get("score"), float) and isinstance(v.get("model"), str):
            predictions.setdefault(v["decision_id"], (v["ts"], v["score"]))
        elif r["topic"] == "outcomes" and v.get("event") in ("purchase", "refund") and "amount" in v:
            events[v["decision_id"]].setdefault(v["event_id"], (v["ts"], v["event"], v["amount"]))
        else:
            continue
        newest[r["topic"]] = max(newest[r["topic"]], v["ts"])
    watermark = min(newest.values())
    final = {d: p for d, p in predictions.items() if p[0] + spec.horizon <= watermark}
    labels, values, matched = [], [], 0
    for decision_id, (ts, _) in final.items():
        mine = [e for e in events.get(decision_id, {}).values() if e[0] < ts + spec.horizon]
        matched += bool(mine)
        labels.append(1.0 if any(kind == "purchase" for _, kind, _ in mine) else 0.0)
        values.append(sum(amount if kind == "purchase" else -amount for _, kind, amount in mine))
    return {"decisions": len(final), "matched": matched, "conversion": sum(labels) / len(labels),
            "revenue": math.fsum(values) / len(values)}


@pytest.mark.parametrize("scenario", ["refunds", "repeat_purchases"])
def test_replay_equals_an_independent_oracle(events_spec: Spec, scenario: str) -> None:
    records = simulate(scenario, 20_000, seed=3, per_day=PER_DAY)
    want = oracle(records, events_spec)
    monitor = Monitor(events_spec)
    for r in records:
        monitor.process(str(r["topic"]), encode(r["value"]), timestamp=int(r["timestamp"]), key=r["key"])
    monitor.finish()
    report = monitor.report()
    overall = report.segments[0]
    assert overall.segment == {}
    assert (overall.decisions, report.join.matched) == (want["decisions"], want["matched"])
    assert overall.kpi["conversion"] == pytest.approx(want["conversion"], rel=1e-12)
    assert overall.kpi["revenue"] == pytest.approx(want["revenue"], rel=1e-9)
    counted = report.outcome_events or {}
    assert counted["purchase"]["duplicate"] > 0  # redeliveries, told apart by the event id
    if scenario == "refunds":
        assert counted["refund"]["counted"] > 0.1 * counted["purchase"]["counted"]


def test_early_readings_are_cumulative_curves_of_the_events(events_spec: Spec) -> None:
    """At each age a window's revenue holds each decision's events with delay below the age."""
    spec = spec_with({"windows.period": "12h"})
    records = simulate("refunds", 12_000, seed=4, per_day=PER_DAY)
    monitor = Monitor(spec)
    for r in records:
        monitor.process(str(r["topic"]), encode(r["value"]), timestamp=int(r["timestamp"]), key=r["key"])
    monitor.finish()
    events: dict[str, dict[str, tuple[float, float]]] = defaultdict(dict)
    decided: dict[str, float] = {}
    for r in records:
        v = r["value"]
        if not isinstance(v, dict) or v.get("decision_id", "").startswith(("bad", "orphan")):
            continue
        if r["topic"] == "predictions":
            decided.setdefault(v["decision_id"], v["ts"])
        else:
            events[v["decision_id"]].setdefault(v["event_id"], (v["ts"], v["amount"] * (
                1 if v["event"] == "purchase" else -1)))
    checked = 0
    for reading in monitor.report().segments[0].early:
        age = {"30m": 1800, "2h": 7200, "6h": 21600, "24h": 86400, "3d": 259200}[reading.age]
        start, end = (_seconds(t) for t in (reading.start, reading.end))
        mine = [d for d, ts in decided.items() if start <= ts < end]
        curve = [math.fsum(x for ts, x in events.get(d, {}).values() if ts - decided[d] < age) for d in mine]
        assert reading.decisions == len(mine)
        assert reading.kpi["revenue"] == pytest.approx(math.fsum(curve) / len(curve), rel=1e-9), reading
        checked += 1
    assert checked > 10


def _seconds(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


# -- the worker ----------------------------------------------------------------------------------
def replayed(spec: Spec, stream: list[Any]) -> Any:
    """The report of replay on the records a worker takes (topic, partition, offset, value)."""
    monitor = Monitor(spec)
    for topic, _, _, value in stream:
        monitor.process(topic, value)
    monitor.finish()
    return monitor.report()


@pytest.mark.parametrize("partitions", [1, 4])
def test_the_worker_equals_replay_through_a_crash_and_redeliveries(events_spec: Spec, partitions: int) -> None:
    raw = simulate("repeat_purchases", 8_000, seed=5, per_day=1_500)  # five days: two past the horizon
    end = max(r["value"]["ts"] for r in raw if r["topic"] == "predictions" and isinstance(r["value"], dict)
              and isinstance(r["value"].get("ts"), float))
    tail = Stream()  # each partition ends far ahead, so each watermark passes everything, as replay's does
    for p in range(partitions):
        key = next(f"tail-{p}-{i}" for i in range(10**6) if partition_of(f"tail-{p}-{i}", partitions) == p)
        tail.predict(key, end + 4 * 86400, 0.5).raw("outcomes", {"decision_id": key, "ts": end + 4 * 86400 + 1,
                                                                 "event": "refund", "event_id": key, "amount": 1},
                                                    key=key)
    raw += tail.records
    offsets: dict[tuple[str, int], int] = {}
    stream = []
    for r in raw:
        topic, partition = str(r["topic"]), partition_of(str(r["key"]), partitions)
        offset = offsets[(topic, partition)] = offsets.get((topic, partition), -1) + 1
        stream.append((topic, partition, offset, encode(r["value"])))
    want = replayed(events_spec, stream)
    stores = (Memory(), Memory())
    first = InMemoryWorker(events_spec, stores, sources=partitions, snapshot_min_bytes=20_000)
    cut = len(stream) // 2
    clock = first.feed(stream[:cut])
    first.crash_after_checkpoint()
    second = InMemoryWorker(events_spec, stores, sources=partitions, snapshot_min_bytes=20_000)
    second.redeliver(first.topics.sent)  # the metrics stage's unacked deltas first, as Kafka hands them back
    clock = second.feed(stream[cut - 500:], clock)  # not yet acked: delivered again
    second.redeliver(first.topics.sent[-20:])
    second.finish(clock)
    got = second.report()
    got.join.orphans += second.worker.join.held_outcomes()
    assert got.join == want.join and want.join.matched > 500  # orphans: still held on the worker, at the end in replay

    def unheld(counts: dict[str, dict[str, int]] | None) -> dict[str, dict[str, int]]:
        return {kind: {k: n for k, n in statuses.items() if k != "orphan"} for kind, statuses in (counts or {}).items()}

    assert unheld(got.outcome_events) == unheld(want.outcome_events)
    mine = {tuple(sorted(s.segment.items())): s for s in got.segments}
    for s in want.segments:
        other = mine[tuple(sorted(s.segment.items()))]
        assert other.decisions == s.decisions
        for name, value in s.kpi.items():
            assert other.kpi[name] == pytest.approx(value, rel=1e-9, nan_ok=True), (s.segment, name)


# -- any interleaving ------------------------------------------------------------------------------
@st.composite
def decisions_and_events(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    predictions, events = [], []
    for i in range(draw(st.integers(1, 6))):
        ts = float(draw(st.integers(0, 50)) * 600)
        predictions.append({"decision_id": f"d{i}", "ts": ts, "model": "m", "score": 0.5})
        for k in range(draw(st.integers(0, 4))):
            delay = float(draw(st.sampled_from([1, 600, 3600, 86400, 259199, 259200, 300000])))
            kind = draw(st.sampled_from(["purchase", "refund", "gift"]))
            events.append({"decision_id": f"d{i}", "ts": ts + delay, "event": kind, "event_id": f"d{i}-{k}",
                           "amount": float(draw(st.integers(1, 90)))})
    return sorted(predictions, key=lambda v: v["ts"]), sorted(events, key=lambda v: v["ts"])


def combined(spec: Spec, topics: list[tuple[str, dict[str, Any]]]) -> dict[str, tuple[float, float | None]]:
    finals: dict[str, tuple[float, float | None]] = {}
    source = Source(spec, on_final=lambda d: finals.__setitem__(d.decision_id, (d.label, d.value)))
    for topic, value in topics:
        source.handle(topic, encode(value))
    source.advance(1e12)
    return finals


@settings(max_examples=150, deadline=None)
@given(decisions_and_events(), st.randoms(use_true_random=False), st.integers(0, 3))
def test_the_combined_outcome_is_the_same_whatever_the_interleaving(
        drawn: tuple[list[dict[str, Any]], list[dict[str, Any]]], rng: random.Random, redelivered: int) -> None:
    spec = specs.load(EVENTS_SPEC)
    predictions, events = drawn
    events = events + [dict(e) for e in events[:redelivered]]  # redeliveries, later
    events.sort(key=lambda v: v["ts"])
    merged: list[tuple[str, dict[str, Any]]] = []
    queues = [[("predictions", v) for v in predictions], [("outcomes", v) for v in events]]
    while any(queues):
        side = rng.choice([q for q in queues if q])
        merged.append(side.pop(0))
    in_order = [("predictions", v) for v in predictions] + [("outcomes", v) for v in events]
    got, want = combined(spec, merged), combined(spec, in_order)
    assert got == want
    for p in predictions:
        mine = {e["event_id"]: e for e in events if e["decision_id"] == p["decision_id"]
                and e["event"] != "gift" and e["ts"] < p["ts"] + spec.horizon}
        value = math.fsum(e["amount"] * (1 if e["event"] == "purchase" else -1) for e in mine.values())
        label = 1.0 if any(e["event"] == "purchase" for e in mine.values()) else 0.0
        assert want[p["decision_id"]] == ((label, value) if mine else (0.0, 0.0))


def test_the_live_simulator_fits_event_delays_to_the_events_horizon(events_spec: Spec) -> None:
    from monitor.apps.live import delay_scale

    assert delay_scale(events_spec.horizon, "refunds") == 1.0
    assert delay_scale(6 * 3600.0) == 1.0  # the bundled single-outcome spec's horizon


def test_the_worked_example_of_the_docs(events_spec: Spec) -> None:
    """docs/outcome-events.md: 30 + 20 − 30, a redelivered refund and a purchase after the horizon."""
    spec = spec_with({"outcome.events.id": None})
    stream = Stream().predict("a", 0.0, 0.9)
    for event, delay, amount in [("purchase", 300, 30.0), ("purchase", 3600, 20.0), ("refund", 2 * 86400, 30.0),
                                 ("refund", 2 * 86400, 30.0), ("purchase", 4 * 86400, 5.0)]:
        stream.raw("outcomes", {"decision_id": "a", "ts": float(delay), "event": event, "amount": amount})
    stream.predict("z", 10 * spec.horizon, 0.5).raw(
        "outcomes", {"decision_id": "z", "ts": 10 * spec.horizon, "event": "refund", "amount": 1.0})
    finals: list[Decision] = []
    report = _feed(spec, stream, finals).report()
    assert [(d.label, d.value) for d in finals if d.decision_id == "a"] == [(1.0, 20.0)]
    assert (report.join.matched, report.join.duplicates, report.join.late) == (1, 1, 1)
    assert report.outcome_events == {"purchase": {"counted": 2, "late": 1},
                                     "refund": {"counted": 2, "duplicate": 1}}  # z's refund: pending, counted


@settings(max_examples=25, deadline=None)
@given(decisions_and_events(), st.randoms(use_true_random=False), st.floats(0.05, 0.95), st.integers(0, 8))
def test_a_worker_restarted_anywhere_in_the_events_ends_with_replays_numbers(
        drawn: tuple[list[dict[str, Any]], list[dict[str, Any]]], rng: random.Random, at: float,
        again: int) -> None:
    spec = specs.load(EVENTS_SPEC)
    predictions, events = drawn
    merged: list[tuple[str, dict[str, Any]]] = []
    queues = [[("predictions", v) for v in predictions], [("outcomes", v) for v in events]]
    while any(queues):
        side = rng.choice([q for q in queues if q])
        merged.append(side.pop(0))
    far = 10 * spec.horizon  # then a decision far ahead moves the watermark past every horizon
    merged += [("predictions", {"decision_id": "far", "ts": far, "model": "m", "score": 0.5}),
               ("outcomes", {"decision_id": "far", "ts": far, "event": "refund", "event_id": "far", "amount": 1.0})]
    offsets = {"predictions": -1, "outcomes": -1}
    stream = []
    for topic, value in merged:
        offsets[topic] += 1
        stream.append((topic, 0, offsets[topic], encode(value)))
    want = replayed(spec, stream)
    stores = (Memory(), Memory())
    first = InMemoryWorker(spec, stores)
    cut = max(1, int(at * len(stream)))
    clock = first.feed(stream[:cut])
    first.crash_after_checkpoint()
    second = InMemoryWorker(spec, stores)
    second.finish(second.feed(stream[max(0, cut - again):], clock))  # the records not yet acked, again
    got = second.report()
    assert (got.join.matched, got.join.expired, got.join.duplicates) == \
        (want.join.matched, want.join.expired, want.join.duplicates)
    mine, theirs = got.segments[0], want.segments[0]
    assert mine.decisions == theirs.decisions
    for name, value in theirs.kpi.items():
        assert mine.kpi[name] == pytest.approx(value, rel=1e-12, nan_ok=True), name


def test_replay_of_refunds_raises_a_misalignment_and_its_page_and_table_show_the_events(
        tmp_path: Path, open_page: Any) -> None:
    import json
    import subprocess
    import sys

    import pandas as pd

    from monitor.apps.simulate import write_jsonl

    stream, report, page, joined = (tmp_path / n for n in ("s.jsonl", "r.json", "r.html", "j.csv"))
    write_jsonl(simulate("refunds", 40_000, seed=2), stream)  # eight days of decisions, the change half way
    done = subprocess.run([sys.executable, "-m", "monitor.cli", "replay", "--spec", str(EVENTS_SPEC), "--input",
                           str(stream), "--report", str(report), "--html", str(page), "--joined", str(joined)],
                          capture_output=True, text=True, cwd=EVENTS_SPEC.parent.parent, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(report.read_text())
    kinds = {(a["kind"], a.get("status", "final")) for a in result["alerts"] + result["early_alerts"]}
    assert ("misalignment", "provisional") in kinds  # net revenue fell while the model held
    assert {"purchase", "refund"} <= set(result["outcome_events"])
    table = pd.read_csv(joined)
    assert {"events", "events.purchase", "events.refund"} <= set(table.columns)
    assert (table["events"] == table["events.purchase"] + table["events.refund"]).all()
    overall = result["segments"][0]
    assert len(table) == overall["decisions"]
    assert table["kpi.revenue"].mean() == pytest.approx(overall["kpi"]["revenue"], rel=1e-9)
    assert "KPIs by age" in page.read_text()
    seen = open_page(page, "replay-report-events")
    assert seen.console_errors == [] and seen.plots >= 3 and seen.rendered == seen.plots

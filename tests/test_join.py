"""The join's semantics, case by case, and its invariants under hypothesis."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.contract.spec import Spec
from monitor.engine.monitor import Monitor
from monitor.testing import Stream, same

H = 6 * 3600.0


def run(spec: Spec, stream: Stream) -> Monitor:
    return stream.feed(Monitor(spec))


def test_match_within_horizon(spec: Spec) -> None:
    m = run(spec, Stream().predict("a", 0.0, 0.9).outcome("a", H - 1, 1, value=10.0))
    c = m.joiner.counts()
    assert (c.predictions, c.outcomes, c.matched, c.expired, c.pending) == (1, 1, 1, 0, 0)
    assert m.totals()[0]["kpi"]["revenue"] == 10.0


def test_outcome_at_the_horizon_is_late(spec: Spec) -> None:
    m = run(spec, Stream().predict("a", 0.0, 0.9).outcome("a", H, 1, value=10.0))
    c = m.joiner.counts()
    assert (c.matched, c.late, c.outcomes, c.pending) == (0, 1, 1, 1)
    # Once both topics pass its horizon the decision expires, finalized with `missing`.
    m = run(spec, Stream().predict("a", 0.0, 0.9).outcome("a", H, 1, value=10.0).predict("b", H, 0.1))
    c = m.joiner.counts()
    assert (c.matched, c.expired, c.late) == (0, 1, 1)
    total = m.totals()[0]
    assert total["decisions"] == 1 and total["kpi"]["revenue"] == 0.0


def test_expiry_is_inclusive_and_precedes_the_record(spec: Spec) -> None:
    s = Stream().predict("a", 0.0, 0.9).outcome("x", H, 1).predict("b", H, 0.2).outcome("a", H, 1)
    c = run(spec, s).joiner.counts()
    assert (c.expired, c.late, c.matched) == (1, 1, 0)


def test_a_topic_running_ahead_does_not_expire_decisions(spec: Spec) -> None:
    # The prediction topic is consumed hours ahead of the outcome topic: nothing may expire early.
    s = Stream().predict("a", 0.0, 0.9)
    for i in range(10):
        s.predict(f"later{i}", H + 3600 * i, 0.1)
    s.outcome("a", H - 1, 1, value=5.0)
    c = run(spec, s).joiner.counts()
    assert (c.matched, c.expired, c.late) == (1, 0, 0)


def test_late_outcome_never_changes_metrics(spec: Spec) -> None:
    base = (Stream().predict("a", 0.0, 0.9).predict("b", 10.0, 0.2).outcome("b", 20.0, 0)
            .predict("clock", 2 * H, 0.5).outcome("clock", 2 * H, 0))
    before = run(spec, base).totals()
    late = Stream()
    late.records = [*base.records]
    late.outcome("a", 2 * H + 1, 1, value=99.0)
    m = run(spec, late)
    assert m.joiner.counts().late == 1
    assert same(m.totals(), before)


def test_outcome_before_prediction_is_held_then_matched(spec: Spec) -> None:
    m = run(spec, Stream().outcome("a", 50.0, 1, value=5.0).predict("a", 40.0, 0.7))
    c = m.joiner.counts()
    assert (c.matched, c.orphans, c.pending) == (1, 0, 0)


def test_unmatched_held_outcome_is_an_orphan(spec: Spec) -> None:
    m = run(spec, Stream().outcome("ghost", 50.0, 1))
    assert m.joiner.counts().orphans == 1
    # ...and also once its horizon passes while streaming.
    m = Monitor(spec)
    Stream().outcome("ghost", 50.0, 1).predict("x", 50 + H, 0.1).feed(m)
    assert m.joiner.counts().orphans == 1


def test_first_record_wins_on_duplicates(spec: Spec) -> None:
    s = (Stream().predict("a", 0.0, 0.9).predict("a", 1.0, 0.1)
         .outcome("a", 5.0, 1, value=10.0).outcome("a", 6.0, 0, value=0.0))
    m = run(spec, s)
    c = m.joiner.counts()
    assert (c.predictions, c.outcomes, c.duplicates, c.matched) == (1, 1, 2, 1)
    total = m.totals()[0]
    assert total["model"]["roc_auc"] is not None
    assert total["kpi"]["revenue"] == 10.0 and total["kpi"]["conversion"] == 1.0


def test_pending_decisions_are_excluded(spec: Spec) -> None:
    m = run(spec, Stream().predict("a", 0.0, 0.9).predict("b", 1.0, 0.9).outcome("a", 2.0, 1))
    c = m.joiner.counts()
    assert (c.matched, c.pending) == (1, 1)
    assert m.totals()[0]["decisions"] == 1


def test_without_missing_expired_decisions_are_left_out(spec: Spec) -> None:
    from dataclasses import replace

    strict = replace(spec, missing=None)
    m = run(strict, Stream().predict("a", 0.0, 0.9).outcome("b", 1.0, 1).predict("b", 2.0, 0.8)
            .predict("clock", 3 * H, 0.5).outcome("c", 3 * H, 1))
    c = m.joiner.counts()
    assert (c.matched, c.expired) == (1, 1)
    assert m.totals()[0]["decisions"] == 1


def test_out_of_order_predictions_expire_by_their_own_time(spec: Spec) -> None:
    s = (Stream().predict("new", 1000.0, 0.9).predict("old", 0.0, 0.9).predict("clock", H + 1, 0.1)
         .outcome("o", H + 1, 1))
    m = run(spec, s)
    c = m.joiner.counts()
    assert (c.expired, c.pending) == (1, 2)  # "old" expired; "new" and "clock" still wait


# -- properties ---------------------------------------------------------------------------------

decisions = st.lists(
    st.tuples(
        st.floats(0, H / 2, allow_nan=False),  # decision time
        st.floats(0, 1),  # score
        st.one_of(st.none(), st.floats(0, H / 2 - 1)),  # outcome delay, or no outcome
        st.floats(0, 500, allow_nan=False),  # value
        st.sampled_from(["control", "treatment"]),
    ),
    min_size=1, max_size=60,
)


Item = tuple[float, float, float | None, float, str]


def records(items: list[Item]) -> list[tuple[str, int, float, float, str]]:
    """(kind, index, ts, score, variant) per record: a prediction, then its outcome if any."""
    found = []
    for i, (ts, score, delay, _, variant) in enumerate(items):
        found.append(("p", i, ts, score, variant))
        if delay is not None:
            found.append(("o", i, ts + delay, score, variant))
    return found


def stream(items: list[Item], arranged: list[tuple[str, int, float, float, str]]) -> Stream:
    s = Stream()
    for kind, i, ts, score, variant in arranged:
        if kind == "p":
            s.predict(f"d{i}", ts, score, variant=variant, segment={"country": "US"})
        else:
            s.outcome(f"d{i}", ts, 1, value=items[i][3])
    return s


@settings(max_examples=150, deadline=None)
@given(decisions, st.integers(0, 10))
def test_every_prediction_ends_exactly_once(spec: Spec, items: list, dupes: int) -> None:  # type: ignore[type-arg]
    arranged = records(items)
    dupes = min(dupes, len(arranged))
    s = stream(items, arranged + arranged[:dupes])
    s.predict("clock", H * (1 + (len(items) % 3) / 4), 0.5)  # expire some, leave some pending
    m = run(spec, s)
    c = m.joiner.counts()
    assert c.predictions == len(items) + 1
    assert c.predictions == c.matched + c.expired + c.pending
    assert c.outcomes == sum(1 for it in items if it[2] is not None)
    assert c.duplicates == dupes
    assert c.orphans == 0 and c.invalid == 0
    assert m.totals()[0]["decisions"] == c.matched + c.expired  # `missing` fills expired decisions


@settings(max_examples=100, deadline=None)
@given(decisions, st.randoms(use_true_random=False))
def test_totals_do_not_depend_on_interleaving(spec: Spec, items: list, rnd) -> None:  # type: ignore[no-untyped-def,type-arg]
    arranged = records(items)
    shuffled_records = list(arranged)
    rnd.shuffle(shuffled_records)
    ordered, shuffled = stream(items, arranged), stream(items, shuffled_records)
    for s in (ordered, shuffled):
        s.predict("clock", 2 * H, 0.5).outcome("clock", 2 * H, 0)  # both topics pass every horizon
    a, b = run(spec, ordered), run(spec, shuffled)
    assert a.joiner.counts() == b.joiner.counts()
    ta = {tuple(a.segments.labels(k).values()): t for k, t in a.totals().items()}
    tb = {tuple(b.segments.labels(k).values()): t for k, t in b.totals().items()}
    assert ta.keys() == tb.keys()
    for seg in ta:
        assert ta[seg]["decisions"] == tb[seg]["decisions"]
        for side in ("model", "kpi"):
            for name, x in ta[seg][side].items():
                y = tb[seg][side][name]
                assert (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9)


late_or_repeated = st.lists(
    st.tuples(
        st.floats(0, 3 * H, allow_nan=False),  # decision time
        st.one_of(st.none(), st.floats(0, 2 * H)),  # outcome delay: within or past the horizon, or none
        st.integers(1, 3),  # copies of the outcome
        st.booleans(),  # the outcome's record comes before the prediction's on its topic's timeline
    ),
    min_size=1, max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(late_or_repeated, st.randoms(use_true_random=False))
def test_counts_do_not_depend_on_how_the_two_topics_interleave(spec: Spec, items: list, rnd) -> None:  # type: ignore[no-untyped-def,type-arg]
    """Each topic in its own order, interleaved as two consumers might: late and repeated outcomes
    are classified the same way (a repeat of a late outcome is a duplicate, whichever came first)."""
    predictions, outcomes = [], []
    for i, (ts, delay, copies, early) in enumerate(items):
        predictions.append((ts, f"d{i}"))
        if delay is not None:
            outcomes += [((ts - 1.0 if early else ts + delay), f"d{i}")] * copies
    predictions.sort()
    outcomes.sort()

    def run_order(take_prediction: list[bool]) -> Monitor:
        s, p, o = Stream(), iter(predictions), iter(outcomes)
        for pick in take_prediction:
            item = next(p, None) if pick else next(o, None)
            if item is None:
                item, pick = (next(o, None), False) if pick else (next(p, None), True)
            if item is not None:
                (s.predict(item[1], item[0], 0.5) if pick else s.outcome(item[1], item[0], 1, value=2.0))
        s.predict("clock", 10 * H, 0.5).outcome("clock", 10 * H, 0)
        return run(spec, s)

    total = len(predictions) + len(outcomes)
    first = run_order([True] * len(predictions) + [False] * len(outcomes))
    other = run_order([rnd.random() < 0.5 for _ in range(2 * total)])
    assert first.joiner.counts() == other.joiner.counts()

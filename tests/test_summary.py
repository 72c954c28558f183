"""The summary's batch fold: bit-for-bit the numbers of one update per decision, and River's confusion metrics."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st
from river import metrics as river

from monitor.stats.decision import Decision
from monitor.stats.metrics import model_metrics
from monitor.stats.moments import Moments
from monitor.stats.summary import EPS, Shape, Summary

scores = st.floats(0.0, 1.0)
kpi = st.one_of(st.none(), st.floats(-1e6, 1e6))
decisions = st.lists(st.builds(
    lambda score, label, predicted, kpis, delay: Decision(0.0, 0, score, predicted, label, kpis[0], kpis, delay),
    scores, st.sampled_from([0.0, 1.0]), st.booleans(), st.tuples(kpi, kpi),
    st.one_of(st.none(), st.floats(0.0, 1e6))), max_size=60)
SHAPE = Shape(binary=True, sketched=(False, True))


def one_by_one(values: list[float]) -> Moments:
    found = Moments()
    for x in values:
        found.update(x)
    return found


@settings(max_examples=200, deadline=None)
@given(decisions)
def test_a_batch_fold_gives_the_moments_of_one_update_per_value(ds: list[Decision]) -> None:
    s = Summary(SHAPE).extend(ds)
    losses = [-math.log(p) if (p := d.score if d.label else 1.0 - d.score) > EPS else -math.log(EPS) for d in ds]
    assert s.loss.state() == one_by_one(losses).state()
    # e * e as the summary computes it: e ** 2 may round differently
    assert s.brier.state() == one_by_one([(e := d.score - d.label) * e for d in ds]).state()
    for i in range(2):
        assert s.kpis[i].state() == one_by_one([x for d in ds if (x := d.kpis[i]) is not None]).state()
    assert s.n == len(ds)
    assert sum(s.delays) == sum(d.delay is not None for d in ds)


@settings(max_examples=200, deadline=None)
@given(decisions, st.lists(st.integers(0, 60), max_size=5))
def test_a_fold_in_any_chunks_equals_one_fold(ds: list[Decision], cuts: list[int]) -> None:
    whole = Summary(SHAPE).extend(ds)
    chunked = Summary(SHAPE)
    bounds = [0, *sorted(c for c in cuts if c <= len(ds)), len(ds)]
    for start, end in itertools.pairwise(bounds):
        chunked.extend(ds[start:end])
    assert chunked.state() == whole.state()
    one_at_a_time = Summary(SHAPE)
    for d in ds:
        one_at_a_time.update(d)
    assert one_at_a_time.state() == whole.state()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), max_size=40))
def test_confusion_metrics_equal_rivers_exactly(pairs: list[tuple[bool, bool]]) -> None:
    summary = Summary(Shape(binary=True))
    cm = river.ConfusionMatrix()
    for truth, predicted in pairs:
        summary.update(Decision(0.0, 0, 0.5, predicted, float(truth), None, (), None))
        cm.update(truth, predicted)
    ours = {m.name: m.value(summary) for m in model_metrics("binary")[:4]}
    c = summary.cells()
    references = {"accuracy": river.Accuracy, "precision": river.Precision, "recall": river.Recall, "f1": river.F1}
    theirs = {name: metric(cm=cm).get() for name, metric in references.items()}
    # Where a metric's denominator is empty the monitor reports it undefined; River says 0.0.
    defined = {"accuracy": bool(pairs), "precision": bool(c["tp"] + c["fp"]), "recall": bool(c["tp"] + c["fn"]),
               "f1": bool(2 * c["tp"] + c["fp"] + c["fn"])}
    for name, value in ours.items():
        assert (value == theirs[name]) if defined[name] else math.isnan(value), name


def test_the_replay_command_starts_without_river_scipy_stats_or_pandas() -> None:
    code = ("import sys, monitor.cli, monitor.apps.ranges, monitor.apps.replay;"
            "print(sorted(m for m in ('river', 'scipy.stats', 'pandas') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert loaded.strip() == "[]"

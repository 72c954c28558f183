"""Every total and rolling metric against numpy/scipy on the same joined decisions."""

from __future__ import annotations

import itertools
import math
import tomllib
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from monitor.apps.simulate import simulate
from monitor.contract import spec as specs
from monitor.contract.spec import Spec
from monitor.engine.monitor import Monitor
from monitor.engine.segments import OVERALL
from monitor.engine.windows import Window
from monitor.stats.decision import FIELDS, Decision
from monitor.testing import Stream, edit_spec, encode

H = 6 * 3600


class Recorder:
    """Runs a monitor while keeping every final decision and every complete window."""

    def __init__(self, spec: Spec) -> None:
        self.monitor = Monitor(spec)
        self.decisions: list[Decision] = []
        self.windows: list[Window] = []
        joiner, windows = self.monitor.joiner, self.monitor.windows
        final, emit = joiner.on_final, windows.on_window
        joiner.on_final = lambda d: (self.decisions.append(d), final(d))  # type: ignore[func-returns-value]
        windows.on_window = lambda w: (self.windows.append(w), emit(w))  # type: ignore[func-returns-value]

    def frame(self) -> pd.DataFrame:
        frame = pd.DataFrame([d.row() for d in self.decisions], columns=list(FIELDS))
        return frame.drop(columns=["kpis"]).join(pd.DataFrame(
            [d.kpis for d in self.decisions], columns=[k.name for k in self.monitor.spec.kpis]))


def binary_oracle(frame: pd.DataFrame, spec: Spec) -> dict[str, float]:
    y = frame["label"].to_numpy() >= 0.5
    yhat = frame["predicted"].to_numpy(bool)
    score = frame["score"].to_numpy(float)
    tp, fp = np.sum(y & yhat), np.sum(~y & yhat)
    fn, tn = np.sum(y & ~yhat), np.sum(~y & ~yhat)
    p = np.clip(score, 1e-15, 1 - 1e-15)
    worth = spec.value or {}
    u = stats.mannwhitneyu(score[y], score[~y]).statistic if y.any() and (~y).any() else math.nan
    return {
        "accuracy": (tp + tn) / len(y),
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0,
        "roc_auc": u / (y.sum() * (~y).sum()),
        "pr_auc": average_precision(y, score),
        "log_loss": float(np.mean(-np.where(y, np.log(p), np.log(1 - p)))),
        "brier": float(np.mean((score - y) ** 2)),
        "business_value": (tp * worth["tp"] + fp * worth["fp"] + fn * worth["fn"] + tn * worth["tn"]) / len(y),
    }


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """scikit-learn's average precision: Σ (R_k − R_{k−1}) · P_k over the distinct scores, highest first."""
    if not y.any():
        return math.nan
    order = np.argsort(-score, kind="stable")
    ranked, hits = score[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]  # the last index of each distinct score
    tp = np.cumsum(hits)[last]
    precision = tp / (last + 1)
    recall_step = np.diff(np.r_[0, tp]) / y.sum()
    return float(np.sum(recall_step * precision))


def kpi_oracle(frame: pd.DataFrame, spec: Spec) -> dict[str, float]:
    return {k.name: float(frame[k.name].sum() if k.agg == "sum" else frame[k.name].mean()) for k in spec.kpis}


def assert_close(got: dict[str, Any], expected: dict[str, float], what: str) -> None:
    for name, want in expected.items():
        value = got[name]
        tol = {"roc_auc": 1e-4, "pr_auc": 1e-3}.get(name, 1e-9)  # both read scores binned to 1e-5
        if value is None or (isinstance(value, float) and math.isnan(value)):
            assert math.isnan(want), f"{what} {name}: undefined, expected {want}"
        else:
            assert value == pytest.approx(want, rel=tol, abs=tol), f"{what} {name}"


@pytest.fixture(scope="module")
def recorded(request: pytest.FixtureRequest) -> Recorder:
    spec: Spec = request.getfixturevalue("spec")
    recorder = Recorder(spec)
    for record in simulate("model_rot", 30_000, seed=3):
        recorder.monitor.process(str(record["topic"]), encode(record["value"]))
    recorder.monitor.finish()
    return recorder


def test_totals_match_numpy_and_scipy(recorded: Recorder, spec: Spec) -> None:
    frame = recorded.frame()
    totals = recorded.monitor.totals()
    for segment, total in totals.items():
        labels = recorded.monitor.segments.labels(segment)
        part = frame if segment == OVERALL else frame[frame["segment"] == segment]
        assert total["decisions"] == len(part) > 0
        assert_close(total["model"], binary_oracle(part, spec), f"total {labels}")
        assert_close(total["kpi"], kpi_oracle(part, spec), f"total {labels}")
    assert len(totals) == 1 + 2 * 3  # overall + variant × country


def test_rolling_windows_match_numpy_and_scipy(recorded: Recorder, spec: Spec) -> None:
    frame = recorded.frame()
    assert len(recorded.windows) > 20
    seen = set()
    for window in recorded.windows:
        part = frame[(frame["ts"] >= window.start) & (frame["ts"] < window.end)]
        if window.segment != OVERALL:
            part = part[part["segment"] == window.segment]
        assert window.summary.n == len(part) >= spec.window_size
        model, kpi = window.values
        assert_close(model, binary_oracle(part, spec), f"window {window.start}")
        assert_close(kpi, kpi_oracle(part, spec), f"window {window.start}")
        seen.add(window.segment)
    assert OVERALL in seen and len(seen) > 3


def test_windows_follow_decision_time_and_tile_it(recorded: Recorder) -> None:
    by_segment: dict[int, list[Window]] = {}
    for window in recorded.windows:
        by_segment.setdefault(window.segment, []).append(window)
    for windows in by_segment.values():
        for before, after in itertools.pairwise(windows):
            assert before.end <= after.start  # emitted in decision-time order, never overlapping


def test_join_counts_match_a_pandas_join(spec: Spec) -> None:
    """On simulated streams (arrival follows event time), a decision matches iff its first outcome
    comes within the horizon; pandas computes that independently of the streaming join."""
    records = simulate("label_delay", 20_000, seed=5)
    monitor = Monitor(spec)
    for record in records:
        monitor.process(str(record["topic"]), encode(record["value"]))
    monitor.finish()
    valid = [r for r in records if isinstance(r["value"], dict) and _valid(r["value"], r["topic"])]
    preds = pd.DataFrame([r["value"] for r in valid if r["topic"] == "predictions"])
    outs = pd.DataFrame([r["value"] for r in valid if r["topic"] == "outcomes"])
    preds, outs = preds.drop_duplicates("decision_id"), outs.drop_duplicates("decision_id")
    joined = preds.merge(outs, on="decision_id", how="left", suffixes=("", "_o"))
    matched = int(((joined["ts_o"] - joined["ts"]) < spec.horizon).sum())
    counts = monitor.joiner.counts()
    assert counts.predictions == len(preds)
    assert counts.outcomes == len(outs)
    assert counts.matched == matched
    never_predicted = len(set(outs["decision_id"]) - set(preds["decision_id"]))
    # An outcome more than three horizons late may find its decision forgotten: an orphan, not late.
    very_late = int(((joined["ts_o"] - joined["ts"]) >= 3 * spec.horizon).sum())
    assert never_predicted <= counts.orphans <= never_predicted + very_late
    assert counts.matched + counts.late + counts.orphans == counts.outcomes
    assert counts.invalid == len(records) - len(valid)


def _valid(value: dict[str, Any], topic: object) -> bool:
    if not isinstance(value.get("ts"), (int, float)):
        return False
    if topic == "predictions":
        return isinstance(value.get("score"), float)
    return value.get("label") in (0, 1) and not isinstance(value.get("label"), str)


def test_regression_metrics_match_numpy(spec: Spec) -> None:
    regression = replace(spec, task="regression", value=None, window_size=200, segment_by=())
    rng = np.random.default_rng(11)
    stream = Stream()
    n = 3000
    truth = rng.gamma(2.0, 20.0, n)
    guess = truth + rng.normal(0, 8, n)
    for i in range(n):
        stream.predict(f"r{i}", 1000.0 + 10 * i, float(guess[i]))
        stream.outcome(f"r{i}", 1000.0 + 10 * i + 5, float(truth[i]), value=float(truth[i]), kpis={"items": 1})
    stream.predict("clock", 1000.0 + 10 * n + 2 * H, 0.0).outcome("tick", 1000.0 + 10 * n + 2 * H, 0.0)
    recorder = Recorder(regression)
    stream.feed(recorder.monitor)
    frame = recorder.frame()
    assert len(frame) == n  # the clock decision is still pending

    def oracle(part: pd.DataFrame) -> dict[str, float]:
        err = part["label"].to_numpy() - part["score"].to_numpy()
        y = part["label"].to_numpy()
        return {"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err**2))),
                "r2": float(1 - np.sum(err**2) / np.sum((y - y.mean()) ** 2))}

    assert len(recorder.windows) >= 10
    for window in recorder.windows[:-1]:
        part = frame[(frame["ts"] >= window.start) & (frame["ts"] < window.end)]
        assert window.summary.n == len(part)
        assert_close(window.values[0], oracle(part), "regression window")
    total = recorder.monitor.totals()[OVERALL]
    assert_close(total["model"], oracle(frame), "regression total")


def test_quantile_kpi_matches_numpy(spec_text: str) -> None:
    """A `p90` KPI, from mergeable sketches, against numpy on the same decisions: totals and windows."""
    kpis = [*tomllib.loads(spec_text)["kpi"], {"name": "revenue_p90", "field": "value", "agg": "p90"}]
    with_p90 = specs.parse(edit_spec(spec_text, {"kpi": kpis}))
    recorder = Recorder(with_p90)
    for record in simulate("business_drop", 30_000, seed=4):
        recorder.monitor.process(str(record["topic"]), encode(record["value"]))
    recorder.monitor.finish()
    frame = recorder.frame()

    def p90(part: pd.DataFrame) -> float:
        return float(np.quantile(part["revenue_p90"].dropna().to_numpy(), 0.9, method="lower"))

    total = recorder.monitor.totals()[OVERALL]["kpi"]["revenue_p90"]
    assert total == pytest.approx(p90(frame), rel=0.01)  # the sketch's relative accuracy
    windows = [w for w in recorder.windows if w.segment == OVERALL]
    assert len(windows) > 10
    for window in windows:
        part = frame[(frame["ts"] >= window.start) & (frame["ts"] < window.end)]
        assert window.values[1]["revenue_p90"] == pytest.approx(p90(part), rel=0.01)
    # The standard error the alert test uses, against a bootstrap of the same window.
    rng = np.random.default_rng(0)
    for window in (windows[1], windows[-2]):
        part = frame[(frame["ts"] >= window.start) & (frame["ts"] < window.end)]["revenue_p90"].dropna().to_numpy()
        boot = [np.quantile(rng.choice(part, part.size), 0.9, method="lower") for _ in range(400)]
        assert 0.5 < window.estimates["revenue_p90"].se / np.std(boot) < 2

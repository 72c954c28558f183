"""A mergeable summary of finalized decisions: everything the model metrics and KPIs need.

Slices of decision time each hold one `Summary` per segment; windows and totals are merges of
slices. Classification metrics share one River confusion matrix.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from river import metrics

from monitor.contract.spec import CELLS, Spec
from monitor.engine.join import Decision
from monitor.stats.histogram import ScoreHistogram
from monitor.stats.moments import Moments

_EPS = 1e-15
_MAX_LOSS = -math.log(_EPS)  # log loss clips probabilities to [1e-15, 1 − 1e-15], like scikit-learn


_CELL_KEYS = ((True, True), (False, True), (True, False), (False, False))  # tp, fp, fn, tn
# n, confusion cells, score histogram (positives, negatives), moments: see `Summary.state`
SummaryState = tuple[int, list[float], dict[int, int], dict[int, int], list[list[float]]]


class Estimate(NamedTuple):
    """A metric's value and its standard error (NaN where no test applies)."""

    value: float
    se: float


class Summary:
    """Sufficient statistics of a set of decisions, for one spec."""

    __slots__ = ("abs_err", "binary", "cm", "kpis", "loss", "n", "scores", "spec", "sq_err", "target")

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.binary = spec.task == "binary"
        self.n = 0
        self.cm = metrics.ConfusionMatrix()
        self.scores = ScoreHistogram()
        self.loss = Moments()  # binary: per-decision log loss
        self.abs_err = Moments()  # regression: |y − ŷ|
        self.sq_err = Moments()  # regression: (y − ŷ)²
        self.target = Moments()  # regression: y, for R²
        self.kpis = [Moments() for _ in spec.kpis]

    def update(self, d: Decision) -> None:
        self.n += 1
        if self.binary:
            positive = d.label >= 0.5
            self.cm.update(positive, d.predicted)
            self.scores.update(d.score, positive)
            p = d.score if positive else 1.0 - d.score
            self.loss.update(-math.log(p) if p > _EPS else _MAX_LOSS)
        else:
            error = d.label - d.score
            self.abs_err.update(abs(error))
            self.sq_err.update(error * error)
            self.target.update(d.label)
        for moments, x in zip(self.kpis, d.kpis, strict=True):
            if x is not None:
                moments.update(x)

    def merge(self, other: Summary) -> Summary:
        self.n += other.n
        for truth, row in other.cm.data.items():
            for predicted, weight in row.items():
                if weight:
                    self.cm.update(truth, predicted, w=weight)
        self.scores.merge(other.scores)
        for mine, theirs in zip(self._moments(), other._moments(), strict=True):
            mine.merge(theirs)
        return self

    def copy(self) -> Summary:
        return Summary(self.spec).merge(self)

    def state(self) -> SummaryState:
        """Everything in plain values, to send between workers or persist."""
        c = self.cells() if self.binary else {}
        return (self.n, [c.get(cell, 0) for cell in ("tp", "fp", "fn", "tn")], self.scores.pos, self.scores.neg,
                [m.state() for m in self._moments()])

    @classmethod
    def from_state(cls, spec: Spec, state: SummaryState) -> Summary:
        n, cells, pos, neg, moments = state
        summary = cls(spec)
        summary.n = n
        for (truth, predicted), weight in zip(_CELL_KEYS, cells, strict=True):
            if weight:
                summary.cm.update(truth, predicted, w=weight)
        summary.scores.pos, summary.scores.neg = dict(pos), dict(neg)
        for mine, saved in zip(summary._moments(), moments, strict=True):
            mine.n, mine.mean, mine.m2 = int(saved[0]), saved[1], saved[2]
        return summary

    def cells(self) -> dict[str, float]:
        data = self.cm.data
        return {
            "tp": data[True][True], "fp": data[False][True],
            "fn": data[True][False], "tn": data[False][False],
        }

    def model(self) -> dict[str, float]:
        """Model metric values, in the order of `spec.model_metrics`; NaN where undefined."""
        return {name: self.estimate(name).value for name in self.spec.model_metrics}

    def kpi(self) -> dict[str, float]:
        """KPI values: the mean per decision, or the sum for `agg = "sum"`."""
        return {
            k.name: (m.total if k.agg == "sum" else m.mean) if m.n else math.nan
            for k, m in zip(self.spec.kpis, self.kpis, strict=True)
        }

    def estimates(self) -> dict[str, Estimate]:
        """Every model metric, and every KPI's mean per decision, with standard errors."""
        return {name: self.estimate(name) for name in (*self.spec.model_metrics, *(k.name for k in self.spec.kpis))}

    def estimate(self, metric: str) -> Estimate:
        """Value and standard error of a model metric, or of a KPI's mean per decision."""
        for k, m in zip(self.spec.kpis, self.kpis, strict=True):
            if k.name == metric:
                return _mean(m)
        if self.n == 0:
            return Estimate(math.nan, math.nan)
        if metric == "log_loss":
            return _mean(self.loss)
        if metric == "mae":
            return _mean(self.abs_err)
        if metric == "rmse":
            mse = self.sq_err
            rmse = math.sqrt(mse.mean)
            # Delta method: se(sqrt(m)) = se(m) / (2 sqrt(m)).
            return Estimate(rmse, _mean(mse).se / (2 * rmse) if rmse > 0 else math.nan)
        if metric == "r2":
            var = self.target.m2 / self.target.n
            return Estimate(1 - self.sq_err.mean / var if var > 0 else math.nan, math.nan)
        if metric == "roc_auc":
            return _auc(self.scores, self.cells())
        if metric == "business_value":
            return self._business_value()
        return self._ratio(metric)

    def _ratio(self, metric: str) -> Estimate:
        c = self.cells()
        total = {  # the denominator of each ratio
            "accuracy": self.n,
            "precision": c["tp"] + c["fp"],
            "recall": c["tp"] + c["fn"],
            "f1": 2 * c["tp"] + c["fp"] + c["fn"],
        }[metric]
        if metric == "f1":  # no simple standard error; reported, not tested
            return Estimate(metrics.F1(cm=self.cm).get() if total else math.nan, math.nan)
        if total == 0:
            return Estimate(math.nan, math.nan)
        value = {"accuracy": metrics.Accuracy, "precision": metrics.Precision,
                 "recall": metrics.Recall}[metric](cm=self.cm).get()
        return Estimate(value, math.sqrt(value * (1 - value) / total))

    def _business_value(self) -> Estimate:
        worth = self.spec.value or {}
        c = self.cells()
        mean = sum(c[cell] * worth[cell] for cell in CELLS) / self.n
        second = sum(c[cell] * worth[cell] ** 2 for cell in CELLS) / self.n
        var = max(second - mean * mean, 0.0) * self.n / max(self.n - 1, 1)
        return Estimate(mean, math.sqrt(var / self.n))

    def _moments(self) -> list[Moments]:
        return [self.loss, self.abs_err, self.sq_err, self.target, *self.kpis]


def _mean(m: Moments) -> Estimate:
    if m.n == 0:
        return Estimate(math.nan, math.nan)
    return Estimate(m.mean, math.sqrt(m.variance / m.n) if m.n > 1 else math.nan)


def _auc(scores: ScoreHistogram, c: dict[str, float]) -> Estimate:
    """AUC with the Hanley–McNeil (1982) standard error."""
    a = scores.auc()
    n_pos, n_neg = c["tp"] + c["fn"], c["fp"] + c["tn"]
    if math.isnan(a):
        return Estimate(a, math.nan)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    return Estimate(a, math.sqrt(max(var, 0.0)))

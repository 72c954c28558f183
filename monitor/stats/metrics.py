"""Metrics as objects: one definition per metric, everything about it in one place.

A `Metric` knows its name, its side (a model metric or a business KPI), which way is better, how
to compute itself from a `Summary` (value and standard error, for the alert tests) and how to
print itself. `model_metrics(...)` is the catalog per task; adding a model metric means adding
one class instance there.

    >>> from monitor.stats.decision import Decision
    >>> from monitor.stats.summary import Shape, Summary
    >>> s = Summary(Shape(binary=True))
    >>> for score, label in [(0.9, 1), (0.8, 0), (0.3, 1), (0.1, 0)]:
    ...     _ = s.update(Decision(0.0, 0, score, score >= 0.5, label, None, (), None))
    >>> [f"{m.name}={m.format(m.value(s))}" for m in model_metrics("binary")[:5]]
    ['accuracy=0.5', 'precision=0.5', 'recall=0.5', 'f1=0.5', 'roc_auc=0.75']
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

from monitor.stats.moments import Moments
from monitor.stats.summary import Summary

Side = Literal["model", "kpi"]
Better = Literal["higher", "lower"]
NAN = math.nan
CELLS = ("tp", "fp", "fn", "tn")


class Estimate(NamedTuple):
    """A metric's value and its standard error (NaN where no test applies)."""

    value: float
    se: float


UNDEFINED = Estimate(NAN, NAN)


@dataclass(frozen=True)
class Metric:
    """One number per segment and window. `estimate` gives what the alert test compares: a value
    and its standard error; a NaN error means the metric is reported but never tested."""

    name: str
    side: Side = "model"
    better: Better = "higher"
    fmt: str = ".4g"
    headline: bool = False  # shown in the terminal's summary table

    def estimate(self, s: Summary) -> Estimate:
        raise NotImplementedError

    def value(self, s: Summary) -> float:
        """The reported value; NaN where undefined (an AUC with one class)."""
        return self.estimate(s).value

    def format(self, x: float) -> str:
        return "n/a" if math.isnan(x) else format(x, self.fmt)


@dataclass(frozen=True)
class Proportion(Metric):
    """A share of a confusion-matrix total: binomial standard error. Accuracy by default."""

    numerator: tuple[str, ...] = ("tp", "tn")
    denominator: tuple[str, ...] = CELLS

    def estimate(self, s: Summary) -> Estimate:
        c = s.cells()
        total = sum(c[cell] for cell in self.denominator) if s.n else 0
        if total == 0:
            return UNDEFINED
        value = sum(c[cell] for cell in self.numerator) / total
        return Estimate(value, math.sqrt(value * (1 - value) / total))


@dataclass(frozen=True)
class F1(Metric):
    """Harmonic mean of precision and recall; no simple standard error, so reported, not tested."""

    def estimate(self, s: Summary) -> Estimate:
        c = s.cells()
        if not s.n or not 2 * c["tp"] + c["fp"] + c["fn"]:
            return UNDEFINED
        precision = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 0.0
        recall = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 0.0
        both = precision + recall
        return Estimate(2 * precision * recall / both if both else 0.0, NAN)


@dataclass(frozen=True)
class RocAuc(Metric):
    """P(score of a positive > score of a negative), ties one half; Hanley–McNeil (1982) standard error."""

    headline: bool = True

    def estimate(self, s: Summary) -> Estimate:
        a = s.scores.auc()
        if math.isnan(a):
            return UNDEFINED
        c = s.cells()
        return Estimate(a, hanley_mcneil(a, c["tp"] + c["fn"], c["fp"] + c["tn"]))


def hanley_mcneil(a: float, n_pos: int | float, n_neg: int | float) -> float:
    """The standard error of an AUC `a` over `n_pos` positives and `n_neg` negatives (Hanley and McNeil, 1982)."""
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    return math.sqrt(max(var, 0.0))


@dataclass(frozen=True)
class PrAuc(Metric):
    """Average precision over the score thresholds (scikit-learn's definition, thresholds at 1e-5
    bins); reported, not tested: its sampling distribution has no simple closed form."""

    def estimate(self, s: Summary) -> Estimate:
        return Estimate(s.scores.average_precision(), NAN)


@dataclass(frozen=True)
class MeanOf(Metric):
    """The mean of one per-decision quantity the summary keeps as running moments."""

    field: str = "loss"

    def estimate(self, s: Summary) -> Estimate:
        moments: Moments = getattr(s, self.field)
        return mean(moments)


@dataclass(frozen=True)
class Rmse(Metric):
    better: Better = "lower"
    headline: bool = True

    def estimate(self, s: Summary) -> Estimate:
        if s.sq_err.n == 0:
            return UNDEFINED
        rmse = math.sqrt(s.sq_err.mean)
        # Delta method: se(sqrt(m)) = se(m) / (2 sqrt(m)).
        return Estimate(rmse, mean(s.sq_err).se / (2 * rmse) if rmse > 0 else NAN)


@dataclass(frozen=True)
class R2(Metric):
    headline: bool = True

    def estimate(self, s: Summary) -> Estimate:
        var = s.target.m2 / s.target.n if s.target.n else 0.0
        return Estimate(1 - s.sq_err.mean / var if var > 0 else NAN, NAN)


@dataclass(frozen=True)
class BusinessValue(Metric):
    """Mean money per decision from the value of each confusion cell (`business.value`)."""

    worth: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # tp, fp, fn, tn
    headline: bool = True

    def estimate(self, s: Summary) -> Estimate:
        if s.n == 0:
            return UNDEFINED
        c = s.cells()
        counts = [c[cell] for cell in CELLS]
        first = sum(n * w for n, w in zip(counts, self.worth, strict=True)) / s.n
        second = sum(n * w * w for n, w in zip(counts, self.worth, strict=True)) / s.n
        var = max(second - first * first, 0.0) * s.n / max(s.n - 1, 1)
        return Estimate(first, math.sqrt(var / s.n))


Aggregate = Literal["mean", "sum", "p90"]
QUANTILES = {"p90": 0.9}  # aggregates read from a quantile sketch


@dataclass(frozen=True)
class KpiMetric(Metric):
    """A business KPI: the mean per decision, the total, or a quantile of the values its outcomes carry.

    A decision whose outcome lacks the KPI's field does not count. `sum` is tested on the mean
    per decision (a total grows with traffic); a quantile on itself, with the sparsity standard
    error sqrt(q(1−q)/n) / f(x_q), the density estimated from the sketch's neighbouring quantiles."""

    side: Side = "kpi"
    headline: bool = True
    index: int = 0  # position among the spec's KPIs
    agg: Aggregate = "mean"

    def value(self, s: Summary) -> float:
        moments = s.kpis[self.index]
        if moments.n == 0:
            return NAN
        if self.agg == "sum":
            return moments.total
        return self.estimate(s).value

    def estimate(self, s: Summary) -> Estimate:
        q = QUANTILES.get(self.agg)
        if q is None:
            return mean(s.kpis[self.index])
        sketch = s.sketches[self.index]
        n = 0 if sketch is None else sketch.n
        if sketch is None or n == 0:
            return UNDEFINED
        h = min(0.05, q / 2, (1 - q) / 2)
        spread = (sketch.quantile(q + h) - sketch.quantile(q - h)) / (2 * h)  # 1 / density at x_q
        se = spread * math.sqrt(q * (1 - q) / n) if n > 1 and spread > 0 else NAN
        return Estimate(sketch.quantile(q), se)


def model_metrics(task: str, worth: dict[str, float] | None = None) -> tuple[Metric, ...]:
    """The model metrics of a task, in report order; `worth` (binary only) adds business value."""
    if task == "regression":
        return (MeanOf("mae", better="lower", field="abs_err", headline=True), Rmse("rmse"), R2("r2"))
    found: tuple[Metric, ...] = (
        Proportion("accuracy"),
        Proportion("precision", numerator=("tp",), denominator=("tp", "fp")),
        Proportion("recall", numerator=("tp",), denominator=("tp", "fn")),
        F1("f1"),
        RocAuc("roc_auc"),
        PrAuc("pr_auc"),
        MeanOf("log_loss", better="lower", field="loss", headline=True),
        MeanOf("brier", better="lower", field="brier"),
    )
    if worth is not None:
        found += (BusinessValue("business_value", worth=tuple(worth[c] for c in CELLS)),)  # type: ignore[arg-type]
    return found


MODEL_METRIC_NAMES = frozenset(
    m.name for task in ("binary", "regression") for m in model_metrics(task, dict.fromkeys(CELLS, 0.0)))


def mean(m: Moments) -> Estimate:
    """A mean with its standard error (NaN below two values)."""
    if m.n == 0:
        return UNDEFINED
    return Estimate(m.mean, math.sqrt(m.variance / m.n) if m.n > 1 else NAN)


def values(chosen: tuple[Metric, ...], s: Summary) -> dict[str, float]:
    """Each metric's reported value, by name."""
    return {m.name: m.value(s) for m in chosen}

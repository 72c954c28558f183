"""A mergeable summary of finalized decisions: everything the metrics need, and nothing of the spec.

Slices of decision time each hold one `Summary` per segment; windows and totals are merges of
slices. Classification metrics share one River confusion matrix. The metric objects
(`monitor.stats.metrics`) read a summary; a summary never computes a metric itself.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass

from river import metrics

from monitor.stats.decision import Decision
from monitor.stats.histogram import ScoreHistogram
from monitor.stats.moments import Moments
from monitor.stats.sketch import QuantileSketch, SketchState

EPS = 1e-15
_MAX_LOSS = -math.log(EPS)  # log loss clips probabilities to [1e-15, 1 − 1e-15], like scikit-learn
# Upper bounds (seconds) of the outcome-delay buckets, Prometheus `le` style: a delay counts in the first bound ≥ it.
DELAY_BUCKETS = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 43200.0, 86400.0, 172800.0, 604800.0, math.inf)
_CELL_KEYS = ((True, True), (False, True), (True, False), (False, False))  # tp, fp, fn, tn
# n, confusion cells, score histogram (positives, negatives), moments, KPI sketches, delay buckets, delay sum
SummaryState = tuple[int, list[float], dict[int, int], dict[int, int], list[list[float]], list[SketchState | None],
                     list[int], float]


@dataclass(frozen=True)
class Shape:
    """What a summary keeps: the statistics of its task and, per KPI, whether it needs a quantile sketch."""

    binary: bool
    sketched: tuple[bool, ...] = ()  # one per KPI

class Summary:
    """Sufficient statistics of a set of decisions."""

    __slots__ = ("abs_err", "binary", "brier", "cm", "delay_sum", "delays", "kpis", "loss", "n", "scores",
                 "shape", "sketches", "sketching", "sq_err", "target")

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.binary = shape.binary
        self.n = 0
        self.cm = metrics.ConfusionMatrix()
        self.scores = ScoreHistogram()
        self.loss = Moments()  # binary: per-decision log loss
        self.brier = Moments()  # binary: (score − label)²
        self.abs_err = Moments()  # regression: |y − ŷ|
        self.sq_err = Moments()  # regression: (y − ŷ)²
        self.target = Moments()  # regression: y, for R²
        self.kpis = [Moments() for _ in shape.sketched]
        self.sketches = [QuantileSketch() if kept else None for kept in shape.sketched]
        self.sketching = any(shape.sketched)
        self.delays = [0] * len(DELAY_BUCKETS)  # matched decisions per delay bucket
        self.delay_sum = 0.0

    def update(self, d: Decision) -> Summary:
        self.n += 1
        if self.binary:
            positive = d.label >= 0.5
            self.cm.update(positive, d.predicted)
            self.scores.update(d.score, positive)
            p = d.score if positive else 1.0 - d.score
            self.loss.update(-math.log(p) if p > EPS else _MAX_LOSS)
            miss = d.score - positive
            self.brier.update(miss * miss)
        else:
            error = d.label - d.score
            self.abs_err.update(abs(error))
            self.sq_err.update(error * error)
            self.target.update(d.label)
        for moments, x in zip(self.kpis, d.kpis):  # noqa: B905  # hot path: lengths agree by construction
            if x is not None:
                moments.update(x)
        if self.sketching:
            for sketch, x in zip(self.sketches, d.kpis):  # noqa: B905
                if sketch is not None and x is not None:
                    sketch.update(x)
        if d.delay is not None:
            self.delays[bisect_left(DELAY_BUCKETS, d.delay)] += 1
            self.delay_sum += d.delay
        return self

    def merge(self, other: Summary) -> Summary:
        self.n += other.n
        for truth, row in other.cm.data.items():
            for predicted, weight in row.items():
                if weight:
                    self.cm.update(truth, predicted, w=weight)
        self.scores.merge(other.scores)
        for mine, theirs in zip(self._moments(), other._moments(), strict=True):
            mine.merge(theirs)
        for sketch, other_sketch in zip(self.sketches, other.sketches, strict=True):
            if sketch is not None and other_sketch is not None:
                sketch.merge(other_sketch)
        self.delays = [a + b for a, b in zip(self.delays, other.delays, strict=True)]
        self.delay_sum += other.delay_sum
        return self

    def copy(self) -> Summary:
        return Summary(self.shape).merge(self)

    def state(self) -> SummaryState:
        """Everything in plain values, to send between workers or persist."""
        c = self.cells() if self.binary else {}
        return (self.n, [c.get(cell, 0) for cell in ("tp", "fp", "fn", "tn")], self.scores.pos, self.scores.neg,
                [m.state() for m in self._moments()], [None if s is None else s.state() for s in self.sketches],
                self.delays, self.delay_sum)

    @classmethod
    def from_state(cls, shape: Shape, state: SummaryState) -> Summary:
        n, cells, pos, neg, moments, sketches, delays, delay_sum = state
        summary = cls(shape)
        summary.n = n
        for (truth, predicted), weight in zip(_CELL_KEYS, cells, strict=True):
            if weight:
                summary.cm.update(truth, predicted, w=weight)
        summary.scores.pos, summary.scores.neg = dict(pos), dict(neg)
        for mine, saved in zip(summary._moments(), moments, strict=True):
            mine.n, mine.mean, mine.m2 = int(saved[0]), saved[1], saved[2]
        summary.sketches = [None if s is None else QuantileSketch.from_state(s) for s in sketches]
        summary.delays, summary.delay_sum = list(delays), delay_sum
        return summary

    def cells(self) -> dict[str, float]:
        data = self.cm.data
        return {
            "tp": data[True][True], "fp": data[False][True],
            "fn": data[True][False], "tn": data[False][False],
        }

    def _moments(self) -> list[Moments]:
        return [self.loss, self.brier, self.abs_err, self.sq_err, self.target, *self.kpis]

"""A mergeable summary of finalized decisions: everything the metrics need, and nothing of the spec.

Slices of decision time each hold one `Summary` per segment; windows and totals are merges of
slices. Classification metrics share one confusion matrix (four counts). The metric objects
(`monitor.stats.metrics`) read a summary; a summary never computes a metric itself.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

from monitor.stats.decision import Decision
from monitor.stats.histogram import BINS, ScoreHistogram
from monitor.stats.moments import Moments
from monitor.stats.sketch import QuantileSketch, SketchState

EPS = 1e-15
_MAX_LOSS = -math.log(EPS)  # log loss clips probabilities to [1e-15, 1 − 1e-15], like scikit-learn
# Upper bounds (seconds) of the outcome-delay buckets, Prometheus `le` style: a delay counts in the first bound ≥ it.
DELAY_BUCKETS = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 43200.0, 86400.0, 172800.0, 604800.0, math.inf)
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

    __slots__ = ("abs_err", "binary", "brier", "delay_sum", "delays", "fn", "fp", "kpis", "loss", "n", "scores",
                 "shape", "sketches", "sq_err", "target", "tn", "tp")

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.binary = shape.binary
        self.n = 0
        self.tp = self.fp = self.fn = self.tn = 0.0  # the confusion matrix (a positive label is >= 0.5)
        self.scores = ScoreHistogram()
        self.loss = Moments()  # binary: per-decision log loss
        self.brier = Moments()  # binary: (score − label)²
        self.abs_err = Moments()  # regression: |y − ŷ|
        self.sq_err = Moments()  # regression: (y − ŷ)²
        self.target = Moments()  # regression: y, for R²
        self.kpis = [Moments() for _ in shape.sketched]
        self.sketches = [QuantileSketch() if kept else None for kept in shape.sketched]
        self.delays = [0] * len(DELAY_BUCKETS)  # matched decisions per delay bucket
        self.delay_sum = 0.0

    def update(self, d: Decision) -> Summary:
        return self.extend((d,))

    def extend(self, ds: Sequence[Decision]) -> Summary:
        """Add decisions in order. Each statistic takes its values in one loop over local variables:
        the same floating-point operations in the same order as one `update` after another, at a
        fraction of the calls."""
        self.n += len(ds)
        if self.binary:
            self._classify(ds)
        else:
            errors = [d.label - d.score for d in ds]
            _welford(self.abs_err, [abs(e) for e in errors])
            _welford(self.sq_err, [e * e for e in errors])
            _welford(self.target, [d.label for d in ds])
        for i, (moments, sketch) in enumerate(zip(self.kpis, self.sketches, strict=True)):
            xs = [x for d in ds if (x := d.kpis[i]) is not None]
            _welford(moments, xs)
            if sketch is not None:
                for x in xs:
                    sketch.update(x)
        delays, delay_sum = self.delays, self.delay_sum
        for d in ds:
            delay = d.delay
            if delay is not None:
                delays[bisect_left(DELAY_BUCKETS, delay)] += 1
                delay_sum += delay
        self.delay_sum = delay_sum
        return self

    def _classify(self, ds: Sequence[Decision]) -> None:
        """Confusion counts, score histogram, log loss and Brier terms of binary decisions."""
        tp = fp = fn = tn = 0
        pos, neg = self.scores.pos, self.scores.neg
        losses: list[float] = []
        squares: list[float] = []
        for d in ds:
            score = d.score
            b = int(score * BINS + 0.5)
            if d.label >= 0.5:
                if d.predicted:
                    tp += 1
                else:
                    fn += 1
                pos[b] = pos.get(b, 0) + 1
                p = score
                miss = score - 1
            else:
                if d.predicted:
                    fp += 1
                else:
                    tn += 1
                neg[b] = neg.get(b, 0) + 1
                p = 1.0 - score
                miss = score
            losses.append(-math.log(p) if p > EPS else _MAX_LOSS)
            squares.append(miss * miss)
        self.tp += tp
        self.fp += fp
        self.fn += fn
        self.tn += tn
        _welford(self.loss, losses)
        _welford(self.brier, squares)

    def merge(self, other: Summary) -> Summary:
        self.n += other.n
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.tn += other.tn
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
        summary.tp, summary.fp, summary.fn, summary.tn = cells
        summary.scores.pos, summary.scores.neg = dict(pos), dict(neg)
        for mine, saved in zip(summary._moments(), moments, strict=True):
            mine.n, mine.mean, mine.m2 = int(saved[0]), saved[1], saved[2]
        summary.sketches = [None if s is None else QuantileSketch.from_state(s) for s in sketches]
        summary.delays, summary.delay_sum = list(delays), delay_sum
        return summary

    def cells(self) -> dict[str, float]:
        return {"tp": float(self.tp), "fp": float(self.fp), "fn": float(self.fn), "tn": float(self.tn)}

    def _moments(self) -> list[Moments]:
        return [self.loss, self.brier, self.abs_err, self.sq_err, self.target, *self.kpis]


def _welford(m: Moments, xs: list[float]) -> None:
    """`Moments.update` over many values, with the running numbers in local variables."""
    n, mean, m2 = m.n, m.mean, m.m2
    for x in xs:
        n += 1
        delta = x - mean
        mean += delta / n
        m2 += delta * (x - mean)
    m.n, m.mean, m.m2 = n, mean, m2

"""Mergeable quantiles with a relative-accuracy guarantee (after DDSketch, Masson et al., VLDB 2019)."""

from __future__ import annotations

import math
import sys

MIN_VALUE = 1e-9  # |x| at or below this counts as zero: log-spaced buckets cannot reach zero itself
_LN_MAX = math.log(sys.float_info.max)

# relative accuracy, zero count, positive and negative bucket counts: see `QuantileSketch.state`
SketchState = tuple[float, int, dict[int, int], dict[int, int]]


class QuantileSketch:
    """Counts of values in log-spaced buckets, for quantiles of KPIs of either sign.

    Bucket k holds |x| in (γ^(k−1), γ^k] with γ = (1 + a)/(1 − a), so 2γ^k/(γ + 1) is within
    relative accuracy a of everything in it; counts are exact, so a quantile lands in the right
    bucket and merging sketches is adding counts. Values must be finite: NaN and ±inf raise.

    >>> s = QuantileSketch(accuracy=0.01)
    >>> for x in (-3.0, 0.0, 1.0, 2.0, 100.0):
    ...     s = s.update(x)
    >>> s.n, [round(s.quantile(q), 2) for q in (0.0, 0.25, 0.5, 1.0)]
    (5, [-2.97, 0.0, 0.99, 100.49])
    """

    __slots__ = ("_ln_gamma", "_scale", "accuracy", "neg", "pos", "zero")

    def __init__(self, accuracy: float = 0.01) -> None:
        if not 0.0 < accuracy < 1.0:
            raise ValueError(f"QuantileSketch: accuracy must be in (0, 1), got {accuracy!r}")
        self.accuracy = accuracy
        self._ln_gamma = math.log((1.0 + accuracy) / (1.0 - accuracy))
        self._scale = 1.0 / self._ln_gamma  # a multiply instead of a divide in `update`
        self.zero = 0
        self.pos: dict[int, int] = {}
        self.neg: dict[int, int] = {}

    def update(self, x: float) -> QuantileSketch:
        if x > MIN_VALUE:
            counts = self.pos
        elif x < -MIN_VALUE:
            counts, x = self.neg, -x
        elif x == x:  # false only for NaN
            self.zero += 1
            return self
        else:
            raise ValueError(f"QuantileSketch.update: values must be finite, got {x!r}")
        try:
            k = math.ceil(math.log(x) * self._scale)
        except OverflowError:  # infinity: checked here rather than before, to keep the finite path short
            got = -x if counts is self.neg else x
            raise ValueError(f"QuantileSketch.update: values must be finite, got {got!r}") from None
        counts[k] = counts.get(k, 0) + 1
        return self

    def merge(self, other: QuantileSketch) -> QuantileSketch:
        if other.accuracy != self.accuracy:
            raise ValueError(
                f"QuantileSketch.merge: accuracy {other.accuracy!r} differs from this sketch's {self.accuracy!r}")
        self.zero += other.zero
        for mine, theirs in ((self.pos, other.pos), (self.neg, other.neg)):
            for k, count in theirs.items():
                mine[k] = mine.get(k, 0) + count
        return self

    @property
    def n(self) -> int:
        return self.zero + sum(self.pos.values()) + sum(self.neg.values())

    def quantile(self, q: float) -> float:
        """The value at rank ⌊q·(n − 1)⌋ of the sorted values, within relative accuracy; NaN when empty."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"QuantileSketch.quantile: q must be in [0, 1], got {q!r}")
        n = self.n
        if n == 0:
            return math.nan
        rank = math.floor(q * (n - 1))  # numpy's method="lower", computed the same way
        seen = 0
        for k in sorted(self.neg, reverse=True):  # the largest |x| is the smallest value
            seen += self.neg[k]
            if seen > rank:
                return -self._value(k)
        seen += self.zero
        if seen > rank:
            return 0.0
        for k in sorted(self.pos):
            seen += self.pos[k]
            if seen > rank:
                return self._value(k)
        raise AssertionError("unreachable: the ranks add up to n")

    def _value(self, k: int) -> float:
        """2γ^k/(γ + 1), the point of bucket k within relative accuracy of both its ends."""
        # through the log, capped, so the top bucket of the floats does not overflow
        return math.exp(min(k * self._ln_gamma + math.log1p(-self.accuracy), _LN_MAX))

    def copy(self) -> QuantileSketch:
        return QuantileSketch(self.accuracy).merge(self)

    def state(self) -> SketchState:
        """Everything in plain values, to send between workers or persist."""
        return (self.accuracy, self.zero, dict(self.pos), dict(self.neg))

    @classmethod
    def from_state(cls, state: SketchState) -> QuantileSketch:
        accuracy, zero, pos, neg = state
        sketch = cls(accuracy)
        sketch.zero = int(zero)
        # int(): a round trip through JSON rather than msgpack brings the keys back as strings
        sketch.pos = {int(k): int(c) for k, c in pos.items()}
        sketch.neg = {int(k): int(c) for k, c in neg.items()}
        return sketch

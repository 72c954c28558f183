"""Mergeable running moments (count, mean, variance)."""

from __future__ import annotations

import math


class Moments:
    """Count, mean and sum of squared deviations, updated one value at a time or merged.

    Welford's update and Chan's merge keep the variance exact in floating point, and merging is
    what lets slices roll up into windows and partitions into totals.

    >>> m = Moments().update(1.0).update(3.0)
    >>> (m.n, m.mean, m.variance)
    (2, 2.0, 2.0)
    """

    __slots__ = ("m2", "mean", "n")

    def __init__(self, n: int = 0, mean: float = 0.0, m2: float = 0.0) -> None:
        self.n, self.mean, self.m2 = n, mean, m2

    def update(self, x: float) -> Moments:
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)
        return self

    def merge(self, other: Moments) -> Moments:
        if other.n == 0:
            return self
        n = self.n + other.n
        delta = other.mean - self.mean
        self.mean += delta * other.n / n
        self.m2 += other.m2 + delta * delta * self.n * other.n / n
        self.n = n
        return self

    @property
    def variance(self) -> float:
        """Sample variance (n − 1 in the denominator); NaN below two values."""
        return self.m2 / (self.n - 1) if self.n > 1 else math.nan

    @property
    def total(self) -> float:
        return self.mean * self.n

    def copy(self) -> Moments:
        return Moments(self.n, self.mean, self.m2)

    def state(self) -> list[float]:
        return [self.n, self.mean, self.m2]

    @classmethod
    def from_state(cls, state: list[float]) -> Moments:
        return cls(int(state[0]), state[1], state[2])

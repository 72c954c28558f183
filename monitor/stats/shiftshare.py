"""Shift-share: a mean KPI's change between two periods split into three parts that add up exactly.

Per segment s, a KPI averaged over decisions is  K = Σ_s w_s · r_s · v_s  with
w_s the segment's share of the decisions, r_s the share of its decisions with a nonzero value
(the positive outcomes) and v_s the mean of those nonzero values. Each term equals the segment's
sum over all decisions, so the identity holds with no remainder.

The change K₁ − K₀ is split by each factor's Shapley value, which for a product of three factors is

    mix   = Σ_s Δw_s · S(r_s, v_s)      rate  = Σ_s Δr_s · S(w_s, v_s)      value = Σ_s Δv_s · S(w_s, r_s)
    S(b, c) = (b₀c₀ + b₁c₁)/3 + (b₀c₁ + b₁c₀)/6

and mix + rate + value = K₁ − K₀ exactly. A segment absent from one period takes the other
period's r and v there (its whole change is mix); a segment without a positive outcome takes the
other period's v.

>>> before = {"US": Cell(100, 10, 500.0), "FR": Cell(100, 10, 200.0)}
>>> after = {"US": Cell(50, 5, 250.0), "FR": Cell(150, 15, 300.0)}
>>> [round(x, 6) for x in shift_share(before, after)]  # traffic moved to FR, where outcomes are worth less
[-0.75, 0.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple, TypeVar

K = TypeVar("K")


class Cell(NamedTuple):
    """One segment in one period: decisions carrying the KPI, those with a nonzero value, and the sum."""

    n: int
    nonzero: int
    total: float


class Parts(NamedTuple):
    mix: float  # traffic moved between segments
    rate: float  # within segments, positive outcomes became more or less frequent
    value: float  # within segments, each positive outcome is worth more or less


def kpi(cells: Mapping[K, Cell]) -> float:
    """The KPI of one period: the sum of values over the decisions."""
    n = sum(c.n for c in cells.values())
    return sum(c.total for c in cells.values()) / n if n else float("nan")


def shift_share(reference: Mapping[K, Cell], current: Mapping[K, Cell]) -> Parts:
    """The change of the KPI from `reference` to `current`, as mix, rate and value parts."""
    n0 = sum(c.n for c in reference.values())
    n1 = sum(c.n for c in current.values())
    if not (n0 and n1):
        raise ValueError(f"both periods need decisions, got {n0} and {n1}")
    empty = Cell(0, 0, 0.0)
    mix = rate = value = 0.0
    for key in [*reference, *(k for k in current if k not in reference)]:  # a fixed order: sums repeat exactly
        a, b = reference.get(key, empty), current.get(key, empty)
        w0, w1 = a.n / n0, b.n / n1
        r0, r1 = _fill(_ratio(a.nonzero, a.n), _ratio(b.nonzero, b.n))
        v0, v1 = _fill(_ratio(a.total, a.nonzero), _ratio(b.total, b.nonzero))
        mix += (w1 - w0) * _both(r0, r1, v0, v1)
        rate += (r1 - r0) * _both(w0, w1, v0, v1)
        value += (v1 - v0) * _both(w0, w1, r0, r1)
    return Parts(mix, rate, value)


def _ratio(x: float, n: int) -> float | None:
    return x / n if n else None


def _fill(x0: float | None, x1: float | None) -> tuple[float, float]:
    """A factor missing in one period takes the other's value, so it contributes nothing there."""
    if x0 is None:
        x0 = 0.0 if x1 is None else x1
    return x0, x0 if x1 is None else x1


def _both(b0: float, b1: float, c0: float, c1: float) -> float:
    """The Shapley weight of the other two factors, b and c, over the two periods."""
    return (b0 * c0 + b1 * c1) / 3 + (b0 * c1 + b1 * c0) / 6

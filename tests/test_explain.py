"""Explanations' statistics against independent computations, and the shift-share identity."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from monitor.stats import drift
from monitor.stats.shiftshare import Cell, kpi, shift_share

cells = st.builds(
    lambda n, share, value: Cell(n, round(n * share), round(n * share) * value),
    st.integers(0, 10_000), st.floats(0, 1), st.floats(-100, 1_000, allow_nan=False))
periods = st.dictionaries(st.sampled_from(["US", "DE", "FR", "other", "unknown"]), cells, max_size=5).filter(
    lambda d: sum(c.n for c in d.values()) > 0)


@settings(max_examples=400, deadline=None)
@given(periods, periods)
def test_the_three_parts_add_up_to_the_kpi_change(reference: dict[str, Cell], current: dict[str, Cell]) -> None:
    parts = shift_share(reference, current)
    change = kpi(current) - kpi(reference)
    assert sum(parts) == pytest.approx(change, rel=1e-9, abs=1e-9)


def brute_shapley(before: tuple[float, float, float], after: tuple[float, float, float]) -> list[float]:
    """Shapley values of a product's three factors, from every order in which they can change."""
    from itertools import permutations

    found = [0.0, 0.0, 0.0]
    for order in permutations(range(3)):
        now = list(before)
        for i in order:
            old = math.prod(now)
            now[i] = after[i]
            found[i] += (math.prod(now) - old) / 6
    return found


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(1, 100), min_size=4, max_size=4))
def test_one_segment_parts_are_the_shapley_values(x: list[float]) -> None:
    # One segment: w = 1 in both periods, so mix is 0 and rate and value are the Shapley values of r·v.
    n0, n1 = 1000, 1000
    r0, r1 = x[0] / 100, x[1] / 100
    reference = {"a": Cell(n0, round(n0 * r0), round(n0 * r0) * x[2])}
    current = {"a": Cell(n1, round(n1 * r1), round(n1 * r1) * x[3])}
    parts = shift_share(reference, current)
    a, b = reference["a"], current["a"]
    want = brute_shapley((1.0, a.nonzero / a.n, x[2]), (1.0, b.nonzero / b.n, x[3]))
    assert list(parts) == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_each_scenario_kind_lands_in_its_own_part() -> None:
    before = {"US": Cell(500, 50, 2500.0), "FR": Cell(500, 50, 1000.0)}
    assert shift_share(before, {"US": Cell(200, 20, 1000.0), "FR": Cell(800, 80, 1600.0)}).rate == pytest.approx(0)
    assert shift_share(before, {"US": Cell(500, 25, 1250.0), "FR": Cell(500, 25, 500.0)})[:] == \
        pytest.approx((0.0, -1.75, 0.0))
    assert shift_share(before, {"US": Cell(500, 50, 1250.0), "FR": Cell(500, 50, 500.0)})[:] == \
        pytest.approx((0.0, 0.0, -1.75))
    # A segment new in the current period: all of its effect is mix.
    assert shift_share({"US": Cell(100, 10, 100.0)}, {"US": Cell(100, 10, 100.0), "BR": Cell(100, 50, 500.0)}) == \
        pytest.approx((kpi({"US": Cell(100, 10, 100.0), "BR": Cell(100, 50, 500.0)}) - 1.0, 0.0, 0.0))


def test_psi_against_a_hand_computation() -> None:
    reference = np.arange(1000, dtype=float)  # deciles at 99.9, 199.8, …: ten bins of 100
    current = np.concatenate([np.arange(0, 500, dtype=float), np.arange(500, 1000, 2, dtype=float)])
    # Current: 100 per bin in the first five, 50 in the last five, out of 750.
    p = np.full(10, 0.1)
    q = np.array([100] * 5 + [50] * 5) / 750
    assert drift.psi(reference, current) == pytest.approx(float(np.sum((p - q) * np.log(p / q))), rel=1e-12)
    assert drift.psi(reference, reference) == 0.0


def test_psi_smooths_empty_bins_and_reads_large_shifts_as_large() -> None:
    rng = np.random.default_rng(1)
    reference, shifted = rng.normal(0, 1, 5000), rng.normal(3, 1, 5000)
    assert math.isfinite(drift.psi(reference, shifted)) and drift.psi(reference, shifted) > 1.0
    assert drift.psi(reference, rng.normal(0, 1, 5000)) < 0.02


def test_numbers_use_scipys_ks_and_categories_its_chi_square() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 1, 800), rng.normal(0.2, 1, 900)
    found = drift.numbers(a, b)
    ks = stats.ks_2samp(a, b)
    assert (found.distance, found.p_value) == (pytest.approx(ks.statistic), pytest.approx(ks.pvalue))
    before, after = {"x": 30, "y": 50, "z": 20}, {"x": 45, "y": 40, "w": 5}
    chi = drift.categories(before, after)
    table = np.array([[0, 30, 50, 20], [5, 45, 40, 0]])  # w, x, y, z
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0) / table.sum()
    statistic = float(((table - expected) ** 2 / expected).sum())
    assert chi.statistic == pytest.approx(statistic)
    assert chi.p_value == pytest.approx(stats.chi2.sf(statistic, 3))
    assert chi.distance == pytest.approx(0.5 * (5 / 90 + (45 / 90 - 0.3) + (0.5 - 40 / 90) + 0.2))

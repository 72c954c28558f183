"""QuantileSketch against numpy's exact quantiles (method="lower"), and its merge and state."""

from __future__ import annotations

import itertools
import math
import random
import sys

import msgspec
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.stats.sketch import MIN_VALUE, QuantileSketch, SketchState

A = 0.01
QS = [0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0]

finite = st.floats(allow_nan=False, allow_infinity=False)  # the whole range, huge and subnormal included
kpi = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
zeroish = st.sampled_from([0.0, -0.0, MIN_VALUE, -MIN_VALUE, 1e-12, -3e-10])  # all count as zero


def sketch_of(values: list[float], accuracy: float = A) -> QuantileSketch:
    s = QuantileSketch(accuracy)
    for x in values:
        s.update(x)
    return s


def check_quantiles(values: list[float], extra_q: float, accuracy: float = A) -> None:
    s = sketch_of(values, accuracy)
    assert s.n == len(values)
    for q in [*QS, extra_q]:
        got, true = s.quantile(q), float(np.quantile(values, q, method="lower"))
        # the relative slack covers rounding in log and exp for a value on a bucket's edge
        assert abs(got - true) <= accuracy * abs(true) * (1 + 1e-9) + MIN_VALUE, (q, got, true)


@given(st.lists(finite, min_size=1, max_size=200), st.floats(0, 1))
def test_mixed_signs_any_magnitude(values: list[float], q: float) -> None:
    check_quantiles(values, q)


@given(st.lists(st.one_of(zeroish, kpi), min_size=1, max_size=200), st.floats(0, 1))
def test_zero_heavy(values: list[float], q: float) -> None:
    check_quantiles(values, q)


@given(st.integers(0, 2**32 - 1), st.integers(1, 500), st.floats(0.5, 4), st.floats(0, 0.3), st.floats(0, 1))
def test_heavy_tailed(seed: int, size: int, sigma: float, refunds: float, q: float) -> None:
    rng = np.random.default_rng(seed)
    signs = np.where(rng.random(size) < refunds, -1.0, 1.0)
    check_quantiles(list(rng.lognormal(3.0, sigma, size) * signs), q)


@given(st.lists(kpi, min_size=1, max_size=100), st.sampled_from([0.001, 0.05, 0.2]), st.floats(0, 1))
def test_other_accuracies(values: list[float], accuracy: float, q: float) -> None:
    check_quantiles(values, q, accuracy)


@given(st.lists(st.one_of(zeroish, finite), max_size=200), st.lists(st.integers(0, 200), max_size=5), st.randoms())
def test_merge_equals_the_sketch_of_the_concatenation(values: list[float], cuts: list[int], rnd: random.Random) -> None:
    bounds = [0, *sorted(min(c, len(values)) for c in cuts), len(values)]
    parts = [sketch_of(values[lo:hi]) for lo, hi in itertools.pairwise(bounds)]
    rnd.shuffle(parts)  # merging is order-free
    merged = QuantileSketch()
    for part in parts:
        assert merged.merge(part) is merged
    whole = sketch_of(values)
    assert merged.state() == whole.state()
    assert merged.n == whole.n == len(values)
    for q in QS:
        assert merged.quantile(q) == whole.quantile(q) or math.isnan(whole.quantile(q))


@given(st.lists(st.one_of(zeroish, finite), max_size=100))
def test_state_round_trip(values: list[float]) -> None:
    s = sketch_of(values)
    for back in (
        QuantileSketch.from_state(msgspec.msgpack.decode(msgspec.msgpack.encode(s.state()), type=SketchState)),
        QuantileSketch.from_state(msgspec.msgpack.decode(msgspec.msgpack.encode(s.state()))),
        QuantileSketch.from_state(msgspec.json.decode(msgspec.json.encode(s.state()))),  # keys come back as str
    ):
        assert back.state() == s.state()
        assert [back.quantile(q) for q in QS] == [s.quantile(q) for q in QS] or not values


@pytest.mark.parametrize("accuracy", [0.001, 0.01, 0.02, 0.1, 0.5])
def test_the_largest_floats_do_not_overflow(accuracy: float) -> None:
    top = sys.float_info.max  # for some accuracies the top bucket's middle lies beyond it
    s = sketch_of([-top, top], accuracy)
    assert -top <= s.quantile(0.0) <= -top * (1 - accuracy)
    assert top * (1 - accuracy) <= s.quantile(1.0) <= top


def test_copy_is_independent() -> None:
    s = sketch_of([1.0, -2.0, 0.0])
    c = s.copy().update(5.0).update(-7.0).update(0.0)
    assert s.state() == sketch_of([1.0, -2.0, 0.0]).state()
    assert c.n == 6


def test_update_returns_self_and_merge_with_itself_doubles() -> None:
    s = QuantileSketch()
    assert s.update(3.0) is s
    assert s.merge(s).n == 2


def test_empty_gives_nan() -> None:
    s = QuantileSketch()
    assert s.n == 0
    assert all(math.isnan(s.quantile(q)) for q in QS)
    assert math.isnan(QuantileSketch().merge(s).quantile(0.5))


@pytest.mark.parametrize("x", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_refused(x: float) -> None:
    s = QuantileSketch().update(1.0)
    with pytest.raises(ValueError, match=f"finite, got {x!r}"):
        s.update(x)
    assert s.state() == QuantileSketch().update(1.0).state()


def test_merging_different_accuracies_is_refused() -> None:
    with pytest.raises(ValueError, match="accuracy"):
        QuantileSketch(0.01).merge(QuantileSketch(0.02))


@pytest.mark.parametrize("accuracy", [0.0, 1.0, -0.1, math.nan])
def test_bad_accuracy_is_refused(accuracy: float) -> None:
    with pytest.raises(ValueError, match="accuracy"):
        QuantileSketch(accuracy)


@pytest.mark.parametrize("q", [-0.1, 1.1, math.nan])
def test_bad_q_is_refused(q: float) -> None:
    with pytest.raises(ValueError, match="q must be"):
        QuantileSketch().update(1.0).quantile(q)

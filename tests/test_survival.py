"""The log-rank test against SciPy's, with censoring and ties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from monitor.stats.survival import logrank


def scipy_logrank(t1: np.ndarray, e1: np.ndarray, t2: np.ndarray, e2: np.ndarray) -> tuple[float, float]:
    found = stats.logrank(stats.CensoredData(uncensored=t1[e1], right=t1[~e1]),
                          stats.CensoredData(uncensored=t2[e2], right=t2[~e2]))
    return float(found.statistic), float(found.pvalue)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n1=st.integers(2, 80), n2=st.integers(2, 80),
       censored=st.floats(0.0, 0.8), decimals=st.integers(0, 2))
def test_equals_scipy_with_censoring_and_ties(seed: int, n1: int, n2: int, censored: float, decimals: int) -> None:
    rng = np.random.default_rng(seed)
    t1, t2 = np.round(rng.exponential(1.0, n1), decimals), np.round(rng.exponential(1.4, n2), decimals)
    e1, e2 = rng.random(n1) >= censored, rng.random(n2) >= censored
    if not (e1.any() or e2.any()):
        e1[0] = True
    z, p = logrank(t1, e1, t2, e2)
    want_z, want_p = scipy_logrank(t1, e1, t2, e2)
    if np.isnan(want_z):
        assert np.isnan(z)
    else:
        assert z == pytest.approx(want_z, rel=1e-9, abs=1e-12)
        assert p == pytest.approx(want_p, rel=1e-9, abs=1e-12)


def test_slower_arrivals_give_a_negative_z() -> None:
    rng = np.random.default_rng(0)
    slow, usual = rng.lognormal(np.log(5400), 1.0, 300), rng.lognormal(np.log(1800), 1.0, 300)
    horizon = 7200.0  # what has not come by two hours is censored there
    z, p = logrank(np.minimum(slow, horizon), slow < horizon, np.minimum(usual, horizon), usual < horizon)
    assert z < -5 and p < 1e-6


def test_no_events_is_undefined() -> None:
    z, p = logrank([1.0, 2.0], [False, False], [3.0], [False])
    assert np.isnan(z) and np.isnan(p)

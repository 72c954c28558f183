"""The offline A/B statistics against scipy and closed forms, and their error rates in A/A simulations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from monitor.offline import twosample
from monitor.offline.power import sample_size
from monitor.offline.sequential import always_valid_p, path
from monitor.stats.experiment import srm_p_value

EXPERIMENTS = 2_000


def revenue(rng: np.random.Generator, shape: tuple[int, ...], rate: float = 0.2) -> np.ndarray:
    """Zero-heavy, skewed revenue: most units buy nothing, buyers spend a log-normal amount."""
    return (rng.random(shape) < rate) * rng.lognormal(3.0, 1.0, shape)


@pytest.fixture(scope="module")
def arms() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return revenue(rng, (3, 400)), revenue(rng, (3, 500), rate=0.25)


def test_welch_matches_scipy(arms: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = arms
    t, p = twosample.welch(a, b)
    ref = stats.ttest_ind(b, a, axis=-1, equal_var=False)
    np.testing.assert_allclose(t, ref.statistic, rtol=1e-10)
    np.testing.assert_allclose(p, ref.pvalue, rtol=1e-8)


def test_mann_whitney_matches_scipy_with_ties(arms: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = arms  # 75-80% zeros: one huge tie group
    u, p = twosample.mann_whitney(a, b)
    for i in range(a.shape[0]):
        ref = stats.mannwhitneyu(b[i], a[i], method="asymptotic", use_continuity=True)
        assert u[i] == pytest.approx(ref.statistic)
        assert p[i] == pytest.approx(ref.pvalue, rel=1e-9)


def test_z_test_matches_the_chi_square_test_of_the_two_by_two_table() -> None:
    rng = np.random.default_rng(3)
    a, b = (rng.random(5_000) < 0.10).astype(float), (rng.random(6_000) < 0.11).astype(float)
    z, p = twosample.z_test(a, b)
    table = [[a.sum(), a.size - a.sum()], [b.sum(), b.size - b.sum()]]
    chi2, p_ref, _, _ = stats.chi2_contingency(table, correction=False)
    assert z * z == pytest.approx(chi2, rel=1e-10)  # the pooled z-test is the χ² test of the 2×2 table
    assert p == pytest.approx(p_ref, rel=1e-9)


def test_bootstrap_interval_matches_the_normal_interval_on_large_samples() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(10, 2, 4_000), rng.normal(10.3, 2, 4_000)
    found = twosample.bootstrap(a, b, resamples=2_000, seed=1)
    se = np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    diff = b.mean() - a.mean()
    np.testing.assert_allclose(found["diff_ci"], [diff - 1.96 * se, diff + 1.96 * se], atol=0.15 * se)
    same = twosample.bootstrap(a, b, resamples=2_000, seed=1)
    np.testing.assert_array_equal(found["diff_ci"], same["diff_ci"])  # seeded: the same interval every run


def test_mean_interval_matches_scipy() -> None:
    x = np.random.default_rng(2).exponential(3.0, 300)
    lo, hi = twosample.mean_ci(x)
    ref = stats.t.interval(0.95, x.size - 1, loc=x.mean(), scale=stats.sem(x))
    assert (lo, hi) == pytest.approx(ref, rel=1e-10)


def test_srm_flags_a_50_8_split_of_100000_units_and_not_a_fair_one() -> None:
    assert srm_p_value([50_800, 49_200]) < 0.001
    assert srm_p_value([50_000, 50_000]) == 1.0
    fair = np.random.default_rng(0).binomial(100_000, 0.5, 200)
    assert sum(srm_p_value([k, 100_000 - k]) < 0.001 for k in fair) <= 2
    assert srm_p_value([50_800, 49_200]) == pytest.approx(stats.chisquare([50_800, 49_200]).pvalue)
    assert srm_p_value([600, 300, 100], [0.6, 0.3, 0.1]) == 1.0


def test_power_matches_the_worked_example_and_a_simulation() -> None:
    assert sample_size(0.5, 0.6) == 388  # Fleiss et al.'s formula, worked by hand
    n = sample_size(0.10, 0.12)
    rng = np.random.default_rng(11)
    a, b = rng.binomial(n, 0.10, 20_000) / n, rng.binomial(n, 0.12, 20_000) / n
    pooled = (a + b) / 2
    z = (b - a) / np.sqrt(pooled * (1 - pooled) * 2 / n)
    achieved = (np.abs(z) > stats.norm.ppf(0.975)).mean()
    assert achieved == pytest.approx(0.80, abs=0.015)


@pytest.fixture(scope="module")
def aa() -> tuple[np.ndarray, np.ndarray]:
    """2,000 A/A experiments of zero-heavy revenue, 300 units per arm."""
    rng = np.random.default_rng(2026)
    return revenue(rng, (EXPERIMENTS, 300)), revenue(rng, (EXPERIMENTS, 300))


@pytest.mark.parametrize("test", ["welch", "mann_whitney", "z_test", "bootstrap"])
def test_each_fixed_horizon_test_holds_its_false_positive_rate_in_aa(aa: tuple[np.ndarray, np.ndarray],
                                                                     test: str) -> None:
    a, b = aa
    if test == "z_test":  # a rate: did the unit buy
        a, b = (a > 0).astype(float), (b > 0).astype(float)
    if test == "bootstrap":
        found = twosample.bootstrap(a, b, resamples=300, seed=3)  # bootstrap-t: its interval and p agree
        rejected = (found["diff_ci"][:, 0] > 0) | (found["diff_ci"][:, 1] < 0)
    else:
        rejected = getattr(twosample, test)(a, b)[1] < 0.05
    assert 0.035 <= rejected.mean() <= 0.065


def test_peeking_breaks_the_t_test_but_not_the_sequential_reading() -> None:
    """Look after every 20 units per arm, up to 2,000 per arm, and stop at the first p < 0.05."""
    rng = np.random.default_rng(99)
    a, b = revenue(rng, (EXPERIMENTS, 2_000)), revenue(rng, (EXPERIMENTS, 2_000))
    looks = np.arange(20, 2_001, 20)
    moments = []
    for x in (a, b):
        s, ss = np.cumsum(x, -1)[:, looks - 1], np.cumsum(x * x, -1)[:, looks - 1]
        mean = s / looks
        moments.append((looks, mean, (ss - s * mean) / (looks - 1)))
    (na, ma, va), (nb, mb, vb) = moments
    naive = (twosample.welch_from_moments(na, ma, va, nb, mb, vb)[1] < 0.05).any(-1).mean()
    sequential = (always_valid_p(na, ma, va, nb, mb, vb) < 0.05).any(-1).mean()
    assert naive > 0.15  # peeking a fixed-horizon test: several times its nominal 5%
    assert sequential < 0.06


def test_the_sequential_path_only_falls_and_its_interval_only_narrows() -> None:
    rng = np.random.default_rng(4)
    treated = rng.random(6_000) < 0.5
    values = rng.normal(1.0, 1.0, 6_000) + 0.15 * treated
    found = path(values, treated)
    assert (np.diff(found["p_value"]) <= 0).all()
    looking = np.isfinite(found["ci_low"])
    assert looking.sum() > 5_000  # looks start once each arm has 50 units
    assert (np.diff(found["ci_low"][looking]) >= 0).all() and (np.diff(found["ci_high"][looking]) <= 0).all()
    assert found["p_value"][-1] < 0.01 and found["ci_low"][-1] > 0

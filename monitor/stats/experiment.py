"""Experiment statistics shared by the live gauges and the offline A/B analysis.

Both work on arrays (numpy broadcasting), so one call reads one experiment or thousands at once.

The peeking-safe reading is the mixture sequential probability ratio test (mSPRT) with a normal
mixture (Robbins 1970; Johari, Koomen, Pekelis & Walsh, "Always valid inference", Operations
Research 2022). For a difference in means Δ̂ with variance V, mixing over Δ ~ N(0, τ²):

    Λ = √(V / (V + τ²)) · exp(Δ̂² τ² / (2 V (V + τ²)))

Λ is a nonnegative martingale under H0 (Δ = 0), so by Ville's inequality P(Λ ever ≥ 1/α) ≤ α:
p = min(1, 1/Λ) may be read at every new decision and stays valid. Inverting it gives the
confidence sequence Δ̂ ± √(V (V + τ²)/τ² · (2 ln(1/α) + ln((V + τ²)/V))).
τ is set in units of the pooled standard deviation (`TAU`): it tunes at which sample size the
test is most sensitive, never its validity.

>>> round(float(msprt_p_value(0.0, 1.0, 1.0)), 3)  # no difference: Λ = √½ < 1
1.0
>>> f"{srm_p_value([50_800, 49_200]):.2g}"  # a 50.8/49.2 split of 100,000 units
'4.2e-07'
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import stats

Floats = npt.NDArray[np.float64]
ArrayLike = float | Sequence[float] | Floats
TAU = 0.1  # mixing standard deviation of the effect, in pooled standard deviations
MIN_UNITS = 50  # per arm, before the sequential reading starts
SRM_ALPHA = 0.001  # sample-ratio mismatch is flagged below this p-value (GrowthBook's and Eppo's level)


def msprt_log_ratio(diff: ArrayLike, var: ArrayLike, tau2: ArrayLike) -> Floats:
    """ln Λ of the normal-mixture SPRT for a difference `diff` with variance `var`; NaN where var ≤ 0."""
    d, v, t = (np.asarray(x, dtype=np.float64) for x in (diff, var, tau2))
    with np.errstate(divide="ignore", invalid="ignore"):
        found = 0.5 * np.log(v / (v + t)) + d * d * t / (2.0 * v * (v + t))
    return np.where(v > 0, found, np.nan)


def msprt_p_value(diff: ArrayLike, var: ArrayLike, tau2: ArrayLike) -> Floats:
    """The always-valid p-value min(1, 1/Λ) at one look."""
    return np.minimum(1.0, np.exp(-msprt_log_ratio(diff, var, tau2)))


def confidence_sequence(diff: ArrayLike, var: ArrayLike, tau2: ArrayLike, alpha: float = 0.05) -> tuple[Floats, Floats]:
    """The always-valid (1 − α) interval around `diff` at one look, from inverting the mSPRT."""
    d, v, t = (np.asarray(x, dtype=np.float64) for x in (diff, var, tau2))
    with np.errstate(divide="ignore", invalid="ignore"):
        half = np.sqrt(v * (v + t) / t * (2.0 * np.log(1.0 / alpha) + np.log((v + t) / v)))
    return d - half, d + half


def mixing_variance(pooled_sd: ArrayLike) -> Floats:
    """τ² for a KPI whose pooled standard deviation is `pooled_sd`."""
    return (TAU * np.asarray(pooled_sd, dtype=np.float64)) ** 2


def always_valid_p(na: ArrayLike, ma: ArrayLike, va: ArrayLike, nb: ArrayLike, mb: ArrayLike,
                   vb: ArrayLike) -> Floats:
    """The mSPRT p-value of treatment − control at one look, from each arm's count, mean and sample variance;
    1 until each arm has `MIN_UNITS` (below that the plugged-in variance is too rough to trust)."""
    na, nb = np.asarray(na, np.float64), np.asarray(nb, np.float64)
    va, vb = np.asarray(va, np.float64), np.asarray(vb, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = np.sqrt(((na - 1) * va + (nb - 1) * vb) / (na + nb - 2))
        var = va / na + vb / nb
        p = msprt_p_value(np.asarray(mb, np.float64) - np.asarray(ma, np.float64), var, mixing_variance(pooled))
    return np.where((na >= MIN_UNITS) & (nb >= MIN_UNITS) & np.isfinite(p), p, 1.0)


def srm_p_value(counts: Sequence[float] | Floats, weights: Sequence[float] | None = None) -> float:
    """χ² goodness-of-fit p-value of arm counts against the planned split (equal when `weights` is None)."""
    observed = np.asarray(counts, dtype=np.float64)
    total = observed.sum()
    if observed.size < 2 or total <= 0:
        return float("nan")
    share = np.full(observed.size, 1.0 / observed.size) if weights is None else np.asarray(weights, np.float64)
    expected = total * share / share.sum()
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    return float(stats.chi2.sf(chi2, observed.size - 1))

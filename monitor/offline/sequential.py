"""The peeking-safe reading of an A/B test: the mSPRT p-value and confidence sequence over time.

The formula lives in `monitor.stats.experiment` (shared with the live gauges); this module runs it
along a test's units in arrival order. Every look uses the arms' running counts, means and
variances (plugged in for the unknown variance). Looks start once each arm has `MIN_UNITS` (50):
below that the plug-in variance is too rough for the martingale argument to hold even approximately.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from monitor.stats.experiment import MIN_UNITS, always_valid_p, confidence_sequence, mixing_variance

Floats = npt.NDArray[np.float64]
__all__ = ["always_valid_p", "path", "running"]


def running(values: Floats, treated: npt.NDArray[np.bool_]) -> tuple[Floats, ...]:
    """Each arm's running count, mean and variance after every unit (units in arrival order)."""
    found: list[Floats] = []
    for arm in (~treated, treated):
        x = np.where(arm, values, 0.0)
        shift = values[arm][0] if arm.any() else 0.0  # shifted sums keep the variance accurate
        x = np.where(arm, x - shift, 0.0)
        n = np.cumsum(arm, dtype=np.float64)
        s, ss = np.cumsum(x), np.cumsum(x * x)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = s / n
            var = (ss - s * mean) / (n - 1)
        found += [n, mean + shift, np.maximum(var, 0.0)]
    return tuple(found)


def path(values: Floats, treated: npt.NDArray[np.bool_], alpha: float = 0.05) -> dict[str, Floats]:
    """The always-valid p-value (a running minimum, so it only falls) and the (1 − α) confidence
    sequence of the difference after each unit."""
    na, ma, va, nb, mb, vb = running(values, treated)
    p = np.minimum.accumulate(always_valid_p(na, ma, va, nb, mb, vb))
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = np.sqrt(((na - 1) * va + (nb - 1) * vb) / (na + nb - 2))
        lo, hi = confidence_sequence(mb - ma, va / na + vb / nb, mixing_variance(pooled), alpha)
    early = (na < MIN_UNITS) | (nb < MIN_UNITS)
    # The running intersection keeps the sequence honest: an interval that ever excluded a value keeps excluding it.
    lo = np.fmax.accumulate(np.where(early, -np.inf, lo))
    hi = np.fmin.accumulate(np.where(early, np.inf, hi))
    return {"n": na + nb, "p_value": p, "diff": mb - ma, "ci_low": lo, "ci_high": hi}

"""The two-sample log-rank test, for delays that may be censored (an outcome not yet seen).

    >>> z, p = logrank([1.0, 2.0, 3.0], [True, True, True], [4.0, 5.0, 6.0], [True, True, False])
    >>> round(z, 3), round(p, 3)
    (2.248, 0.025)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]


def logrank(time1: Sequence[float] | Floats, event1: Sequence[bool] | npt.NDArray[np.bool_],
            time2: Sequence[float] | Floats, event2: Sequence[bool] | npt.NDArray[np.bool_]) -> tuple[float, float]:
    """Log-rank test of equal hazards: returns z and the two-sided p-value.

    z = (O₁ − E₁) / √V over the distinct event times, with the hypergeometric variance for tied
    events; z > 0 when group 1 has more events than expected (its outcomes come sooner), z < 0
    when they come later or fewer. A censored time leaves the risk set after the events at it."""
    t1, t2 = np.asarray(time1, dtype=np.float64), np.asarray(time2, dtype=np.float64)
    e1, e2 = np.asarray(event1, dtype=bool), np.asarray(event2, dtype=bool)
    times = np.unique(np.concatenate((t1[e1], t2[e2])))
    if times.size == 0:
        return math.nan, math.nan
    at_risk1 = t1.size - np.searchsorted(np.sort(t1), times, side="left")
    at_risk2 = t2.size - np.searchsorted(np.sort(t2), times, side="left")
    d1 = _events_at(times, t1[e1])
    d2 = _events_at(times, t2[e2])
    n, d = at_risk1 + at_risk2, d1 + d2
    share = at_risk1 / n
    expected = float((d * share).sum())
    ties = np.where(n > 1, (n - d) / np.maximum(n - 1, 1), 1.0)
    variance = float((d * share * (1 - share) * ties).sum())
    if variance <= 0:
        return math.nan, math.nan
    z = (float(d1.sum()) - expected) / math.sqrt(variance)
    return z, math.erfc(abs(z) / math.sqrt(2))


def _events_at(times: Floats, events: Floats) -> Floats:
    """How many of `events` fall on each of the sorted, distinct `times` (which hold them all)."""
    return np.bincount(np.searchsorted(times, events), minlength=times.size).astype(np.float64)

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


class Group:
    """What the test reads of one group: its times and its event times, each sorted.

    Built once for a group tested again and again (an early window's reference), it spares the
    sorts that are most of a test's cost."""

    __slots__ = ("events", "times")

    def __init__(self, times: Sequence[float] | Floats, events: Sequence[bool] | npt.NDArray[np.bool_]) -> None:
        t = np.asarray(times, dtype=np.float64)
        self.times: Floats = np.sort(t)
        self.events: Floats = np.sort(t[np.asarray(events, dtype=bool)])


def logrank(time1: Sequence[float] | Floats, event1: Sequence[bool] | npt.NDArray[np.bool_],
            time2: Sequence[float] | Floats, event2: Sequence[bool] | npt.NDArray[np.bool_]) -> tuple[float, float]:
    """Log-rank test of equal hazards: returns z and the two-sided p-value.

    z = (O₁ − E₁) / √V over the distinct event times, with the hypergeometric variance for tied
    events; z > 0 when group 1 has more events than expected (its outcomes come sooner), z < 0
    when they come later or fewer. A censored time leaves the risk set after the events at it."""
    return logrank_groups(Group(time1, event1), Group(time2, event2))


def logrank_groups(group1: Group, group2: Group) -> tuple[float, float]:
    """`logrank` of two groups already built."""
    times = np.unique(np.concatenate((group1.events, group2.events)))
    if times.size == 0:
        return math.nan, math.nan
    at_risk1 = group1.times.size - np.searchsorted(group1.times, times, side="left")
    at_risk2 = group2.times.size - np.searchsorted(group2.times, times, side="left")
    d1 = _events_at(times, group1.events)
    d2 = _events_at(times, group2.events)
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

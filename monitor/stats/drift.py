"""Distribution drift between a reference sample and a current one: PSI, KS and χ².

PSI = Σ (p_ref − p_cur) · ln(p_ref / p_cur), over bins frozen on the reference: its deciles, with
open-ended edge bins, and empty bins smoothed to `EPS`. Below 0.1 reads as stable, 0.1-0.25 as
moderate, above 0.25 as significant. KS is scipy's two-sample test on the samples themselves; χ²
is scipy's test of independence on the category counts of the two periods.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> round(psi(rng.normal(0, 1, 20_000), rng.normal(0, 1, 20_000)), 3) < 0.01
True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

EPS = 1e-4  # the share an empty bin counts as
Sample = npt.NDArray[np.float64]


class Drift(NamedTuple):
    statistic: float  # PSI for numbers, χ² for categories
    p_value: float  # KS for numbers, χ² for categories
    distance: float  # the share of traffic that moved: KS's D for numbers, total variation for categories


def psi(reference: Sample, current: Sample, bins: int = 10) -> float:
    """Population stability index of `current` against `reference`, on the reference's quantile bins."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    p = _shares(np.searchsorted(edges, reference, side="right"), edges.size + 1)
    q = _shares(np.searchsorted(edges, current, side="right"), edges.size + 1)
    return float(np.sum((p - q) * np.log(p / q)))


def numbers(reference: Sample, current: Sample) -> Drift:
    """PSI, with KS's p-value and distance."""
    from scipy.stats import ks_2samp  # deferred: scipy costs a second at import

    ks = ks_2samp(reference, current)
    return Drift(psi(reference, current), float(ks.pvalue), float(ks.statistic))


def categories(reference: Mapping[str, int], current: Mapping[str, int]) -> Drift:
    """χ² test of the two periods' category counts, with the total variation distance of their shares."""
    from scipy.stats import chi2_contingency

    keys = sorted({*reference, *current})
    table = np.array([[reference.get(k, 0) for k in keys], [current.get(k, 0) for k in keys]], dtype=float)
    shares = table / table.sum(axis=1, keepdims=True)
    distance = float(np.abs(shares[0] - shares[1]).sum() / 2)
    if len(keys) < 2:
        return Drift(0.0, 1.0, distance)
    result = chi2_contingency(table, correction=False)
    return Drift(float(result.statistic), float(result.pvalue), distance)


def _shares(bin_ids: npt.NDArray[np.intp], size: int) -> Sample:
    counts = np.bincount(bin_ids, minlength=size).astype(float)
    shares: Sample = np.maximum(counts / max(counts.sum(), 1.0), EPS)
    return shares

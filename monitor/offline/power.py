"""Sample size of a two-arm test on a rate, in closed form.

n per arm = (z₁₋α/₂ √(2 p̄ (1 − p̄)) + z₁₋β √(p₁(1 − p₁) + p₂(1 − p₂)))² / (p₂ − p₁)², with
p̄ = (p₁ + p₂)/2: the two-sided two-proportion z-test (Fleiss, Levin & Paik, "Statistical Methods
for Rates and Proportions", 3rd ed., eq. 4.14, without continuity correction). Worked example:
p₁ = 0.5, p₂ = 0.6, α = 0.05, power 0.8 gives 388 per arm.

>>> sample_size(0.5, 0.6)
388
"""

from __future__ import annotations

import math

from scipy import stats

from monitor.contract.errors import MonitorError


def sample_size(p1: float, p2: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Units per arm to detect a change of the rate from p1 to p2."""
    if p1 == p2:
        raise MonitorError("the minimum detectable effect must not be zero")
    a, b = float(stats.norm.ppf(1 - alpha / 2)), float(stats.norm.ppf(power))
    mean = (p1 + p2) / 2
    root = a * math.sqrt(2 * mean * (1 - mean)) + b * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return math.ceil(root * root / (p2 - p1) ** 2)


def plan(rate: float, mde: float | None, mde_abs: float | None, alpha: float, power: float,
         traffic: float | None) -> dict[str, float | int | None]:
    """Units per arm and days to run at `traffic` units a day over both arms; checks every input."""
    if not 0 < rate < 1:
        raise MonitorError(f"--baseline-rate {rate}: expected a rate strictly between 0 and 1")
    if (mde is None) == (mde_abs is None):
        raise MonitorError("give exactly one of --mde (relative, 0.05 is +5%) and --mde-abs (absolute)")
    target = rate * (1 + mde) if mde is not None else rate + (mde_abs or 0.0)
    flag = "--mde" if mde is not None else "--mde-abs"
    if not 0 < target < 1 or target == rate:
        raise MonitorError(f"{flag} {mde if mde is not None else mde_abs}: the treated rate {target:g} must be "
                           "strictly between 0 and 1 and differ from the baseline")
    if not 0 < alpha < 1:
        raise MonitorError(f"--alpha {alpha}: expected a level strictly between 0 and 1")
    if not 0 < power < 1:
        raise MonitorError(f"--power {power}: expected a probability strictly between 0 and 1")
    if traffic is not None and traffic <= 0:
        raise MonitorError(f"--traffic {traffic}: expected a positive number of units per day")
    n = sample_size(rate, target, alpha, power)
    return {"n_per_arm": n, "days": None if traffic is None else 2 * n / traffic,
            "baseline_rate": rate, "treated_rate": target, "alpha": alpha, "power": power}

"""A/B test analysis of the joined table: per-arm KPIs, lift, tests, SRM, CUPED and the peeking-safe reading.

`analyse(...)` returns the whole result as plain JSON-ready values (docs/offline.md
documents the shape); `monitor.offline.abtest_report` draws it. Units are the table's rows; a
KPI counts the rows that carry it (the engine's rule), in both arms.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from monitor.contract.errors import MonitorError
from monitor.offline import sequential, twosample
from monitor.offline.table import kpi_column, kpi_names
from monitor.stats.experiment import SRM_ALPHA, srm_p_value

if TYPE_CHECKING:
    import pandas as pd

LEVEL = 0.95
PATH_POINTS = 400  # points of the sequential path kept for the report


def analyse(frame: pd.DataFrame, field: str, control: str, kpis: list[str] | None = None,
            covariate: str | None = None, treatment: str | None = None, resamples: int = twosample.RESAMPLES,
            seed: int = 0, split: dict[str, float] | None = None) -> dict[str, Any]:
    """The A/B result of `treatment` against `control` on every KPI; SRM against `split` (arm → planned
    share; an equal split of the arms seen when None)."""
    if field not in frame.columns:
        raise MonitorError(f"--variant-field {field}: no such column; the table has {', '.join(frame.columns)}")
    arm = frame[field].astype("string")
    counts = arm.value_counts(dropna=True).sort_index()
    variants = [str(v) for v in counts.index]
    if control not in variants:
        raise MonitorError(f"--control {control}: not a value of {field}; its values are {', '.join(variants)}")
    treatment = _treatment(variants, control, treatment)
    if covariate is not None and covariate not in frame.columns:
        raise MonitorError(f"--covariate {covariate}: no such column in the table")
    chosen = kpis or kpi_names(frame)
    if not chosen:
        raise MonitorError("--kpi: the table has no kpi.<name> columns; name a numeric column with --kpi")
    columns = {name: kpi_column(frame, name) for name in chosen}
    planned = split or dict.fromkeys(variants, 1.0)
    if control not in planned:
        raise MonitorError(f"--split: no share for the control {control!r}; give one for every arm")
    total = sum(planned.values())
    srm = srm_p_value([int(counts.get(v, 0)) for v in planned], list(planned.values()))
    result: dict[str, Any] = {
        "variant_field": field, "control": control, "treatment": treatment,
        "units": {v: int(n) for v, n in counts.items()},
        "srm": {"p_value": srm, "flagged": bool(srm < SRM_ALPHA), "alpha": SRM_ALPHA,
                "expected_share": {v: share / total for v, share in planned.items()}},
        "bootstrap": {"resamples": resamples, "seed": seed, "level": LEVEL},
        "kpis": {},
    }
    result["trustworthy"] = not result["srm"]["flagged"]
    both = frame[arm.isin([control, treatment]).fillna(False)]
    treated_all = (both[field].astype(str) == treatment).to_numpy()
    times = both["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ").to_numpy()
    for name, column in columns.items():
        y = both[column].to_numpy(dtype=np.float64)
        keep = np.isfinite(y)
        x = None if covariate is None else both[covariate].to_numpy(dtype=np.float64)
        result["kpis"][name] = _kpi(y[keep], treated_all[keep], None if x is None else x[keep], times[keep], control,
                                    treatment, covariate, resamples, seed)
    return result


def _treatment(variants: list[str], control: str, chosen: str | None) -> str:
    others = [v for v in variants if v != control]
    if chosen is not None:
        if chosen not in others:
            raise MonitorError(f"--treatment {chosen}: not a variant other than the control; "
                               f"expected one of {', '.join(others) or 'none'}")
        return chosen
    if len(others) != 1:
        raise MonitorError(f"--control {control}: " + (
            "no other variant in the table to compare with" if not others
            else f"{len(others)} other variants ({', '.join(others)}); choose one with --treatment"))
    return others[0]


def _kpi(y: np.ndarray, treated: np.ndarray, x: np.ndarray | None, ts: np.ndarray, control: str, treatment: str,
         covariate: str | None, resamples: int, seed: int) -> dict[str, Any]:
    a, b = y[~treated], y[treated]
    if a.size < 2 or b.size < 2:
        raise MonitorError(f"too few units with this KPI to compare: {a.size} in {control}, {b.size} in {treatment}")
    rate = twosample.is_rate(y)
    boot = twosample.bootstrap(a, b, resamples, seed, LEVEL)
    welch_t, welch_p = twosample.welch(a, b)
    u, mw_p = twosample.mann_whitney(a, b)
    walk = sequential.path(y, treated, 1 - LEVEL)
    tests: dict[str, Any] = {
        "welch": {"t": float(welch_t), "p_value": float(welch_p)},
        "mann_whitney": {"u": float(u), "p_value": float(mw_p)},
        "bootstrap": {"p_value": float(boot["p_value"]), "ci": _pair(boot["diff_ci"])},
        "sequential": {"p_value": float(walk["p_value"][-1]),
                       "ci": [float(walk["ci_low"][-1]), float(walk["ci_high"][-1])]},
    }
    if rate:
        z, z_p = twosample.z_test(a, b)
        tests["z_test"] = {"z": float(z), "p_value": float(z_p)}
    found: dict[str, Any] = {
        "rate": rate,
        "arms": {control: _arm(a), treatment: _arm(b)},
        "difference": {"value": float(b.mean() - a.mean()), "ci": _pair(boot["diff_ci"])},
        "lift": {"relative": _lift(a.mean(), b.mean()), "ci": _pair(boot["lift_ci"])},
        "tests": tests,
        "path": _thin(walk, ts),
    }
    if not rate:
        found["distribution"] = _distribution(a, b, control, treatment)
    if x is not None and covariate is not None:
        found["cuped"] = cuped(y, x, treated, covariate)
    return found


def cuped(y: np.ndarray, x: np.ndarray, treated: np.ndarray, covariate: str) -> dict[str, Any]:
    """CUPED (Deng, Xu, Kohavi & Walker 2013): Y − θ(X − X̄) with θ = Cov(Y, X)/Var(X) pooled over both arms.

    The adjusted difference estimates the same effect with less variance when the pre-period
    covariate predicts the KPI; `variance_reduction` is 1 − Var(Y_adj)/Var(Y) = ρ²."""
    keep = np.isfinite(x)
    y, x, treated = y[keep], x[keep], treated[keep]
    var_x = x.var(ddof=1)
    theta = float(np.cov(y, x, ddof=1)[0, 1] / var_x) if var_x > 0 else 0.0
    adjusted = y - theta * (x - x.mean())
    a, b = adjusted[~treated], adjusted[treated]
    t, p = twosample.welch(a, b)
    diff = float(b.mean() - a.mean())
    se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    half = float(stats.norm.ppf((1 + LEVEL) / 2)) * se
    base = float(y[~treated].mean())
    reduction = 1 - adjusted.var(ddof=1) / y.var(ddof=1) if y.var(ddof=1) > 0 else 0.0
    return {"covariate": covariate, "theta": theta, "variance_reduction": float(reduction), "units": int(y.size),
            "difference": {"value": diff, "ci": [diff - half, diff + half]},
            # the control's unadjusted mean as the base: CUPED leaves it unbiased, and it is what people quote
            "lift": {"relative": diff / base if base else math.nan,
                     "ci": [(diff - half) / base, (diff + half) / base] if base else [math.nan, math.nan]},
            "tests": {"welch": {"t": float(t), "p_value": float(p)}}}


def _distribution(a: np.ndarray, b: np.ndarray, control: str, treatment: str, bins: int = 40) -> dict[str, Any]:
    """Each arm's share of zeros and a histogram of its other values (common bins up to the 99th percentile)."""
    nonzero = np.concatenate([a[a != 0], b[b != 0]])
    top = float(np.quantile(nonzero, 0.99)) if nonzero.size else 1.0
    low = float(min(0.0, nonzero.min())) if nonzero.size else 0.0
    edges = np.linspace(low, top if top > low else low + 1.0, bins + 1)
    return {"edges": edges.tolist(), "arms": {
        arm: {"zeros": float((x == 0).mean()), "counts": np.histogram(np.clip(x[x != 0], low, top), edges)[0].tolist()}
        for arm, x in ((control, a), (treatment, b))}}


def _arm(values: np.ndarray) -> dict[str, Any]:
    return {"n": int(values.size), "mean": float(values.mean()), "ci": list(twosample.mean_ci(values, LEVEL))}


def _lift(control: float, treatment: float) -> float:
    return float(treatment / control - 1.0) if control else math.nan


def _pair(found: np.ndarray) -> list[float]:
    return [float(found[0]), float(found[1])]


def _thin(walk: dict[str, np.ndarray], ts: np.ndarray) -> dict[str, list[Any]]:
    """The sequential path at about PATH_POINTS evenly spaced units (the last one always)."""
    n = walk["n"].size
    at = np.unique(np.linspace(0, n - 1, min(n, PATH_POINTS)).round().astype(np.int64))
    return {"ts": [str(t) for t in np.asarray(ts)[at]], "units": walk["n"][at].astype(int).tolist(),
            **{k: [None if not math.isfinite(v) else float(v) for v in walk[k][at]]
               for k in ("p_value", "diff", "ci_low", "ci_high")}}


def summary_lines(result: dict[str, Any]) -> list[tuple[str, bool]]:
    """The terminal's reading: (line, loud). An SRM is loud: every other number is then untrustworthy."""
    control, treatment = result["control"], result["treatment"]
    units = ", ".join(f"{v} {n:,}" for v, n in result["units"].items())
    lines = [(f"A/B: {treatment} against {control} ({units} units)", False)]
    srm = result["srm"]
    if srm["flagged"]:
        lines.append((f"SAMPLE RATIO MISMATCH: p = {srm['p_value']:.2g} < {srm['alpha']:g}. The arms are not the "
                      "planned split: assignment or logging is broken, and these results are NOT TRUSTWORTHY.", True))
    for name, kpi in result["kpis"].items():
        a, b = kpi["arms"][control], kpi["arms"][treatment]
        lift = kpi["lift"]
        tests = kpi["tests"]
        shown = [f"{t} p={tests[t]['p_value']:.3g}" for t in ("welch", "z_test", "mann_whitney", "bootstrap",
                                                              "sequential") if t in tests]
        lines.append((f"  {name}: {a['mean']:.4g} → {b['mean']:.4g}, lift {lift['relative']:+.2%} "
                      f"[{lift['ci'][0]:+.2%}, {lift['ci'][1]:+.2%}]; " + ", ".join(shown), False))
        cuped_found = kpi.get("cuped")
        if cuped_found is not None:
            c = cuped_found["lift"]
            reduced = cuped_found["variance_reduction"]
            lines.append((f"    CUPED on {cuped_found['covariate']}: variance −{reduced:.0%}, "
                          f"lift {c['relative']:+.2%} [{c['ci'][0]:+.2%}, {c['ci'][1]:+.2%}], "
                          f"welch p={cuped_found['tests']['welch']['p_value']:.3g}", False))
    lines.append(("  (sequential: the mSPRT p-value, valid however often the test was looked at)", False))
    return lines

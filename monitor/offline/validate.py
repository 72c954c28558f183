"""Offline validation of a candidate model against baselines: many metrics, each with a bootstrap interval.

The joined table is split by time: the earliest `train_share` of the labelled decisions train the
baselines, and every model is measured on the rest. Intervals are percentile intervals over
`resamples` bootstrap resamples of the test decisions, the same resamples for every model, so the
differences between models are paired. `validate(...)` returns every number as plain values;
`monitor.offline.validate_report` draws them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from monitor.contract.errors import MonitorError
from monitor.contract.spec import Spec
from monitor.offline import baselines as base
from monitor.offline.scoring import ECE_BINS, Scores, curves, reliability, resamples, value_by_threshold
from monitor.offline.table import split_by_time

if TYPE_CHECKING:
    import pandas as pd

CANDIDATE = "candidate"
LEVEL = 0.95
METRICS = ("business_value", "roc_auc", "pr_auc", "log_loss", "brier", "ece", "precision", "recall")
LOWER_IS_BETTER = {"log_loss", "brier", "ece"}
SEGMENTS_SHOWN = 3  # segment columns drawn as score distributions


def validate(spec: Spec, frame: pd.DataFrame, train_share: float = 0.7, count: int = 200,
             seed: int = 0) -> dict[str, Any]:
    if spec.task != "binary":
        raise MonitorError(f"spec key `model.task`: got {spec.task!r}, expected \"binary\" for offline validate")
    labelled = frame[np.isfinite(frame["label"].to_numpy(np.float64))].reset_index(drop=True)
    train, test = split_by_time(labelled, train_share)
    for part, rows in (("train", train), ("test", test)):
        classes = set((rows["label"] >= 0.5).tolist())
        if len(rows) < 50 or classes != {True, False}:
            raise MonitorError(f"--data: the {part} part has {len(rows)} labelled decisions of "
                               f"{len(classes)} class(es); validation needs both classes in each part")
    worth = spec.value
    label = test["label"].to_numpy(np.float64)
    scored: dict[str, tuple[str, np.ndarray, np.ndarray]] = {
        CANDIDATE: (f"the model's scores; decides score ≥ {spec.threshold:g} (the spec)",
                    test["score"].to_numpy(np.float64), test["prediction"].to_numpy(bool)),
    }
    numeric, categorical = base.features(train)
    chosen: list[base.Baseline] = [base.PriorRate()]
    if numeric or categorical:
        chosen += [base.OneFeatureRule(), base.OnlineLogistic()]
    for baseline in chosen:
        baseline.fit(train, worth)
        scored[baseline.name] = (baseline.description, *baseline.score(test))
    models = {name: Scores(score, label, predicted, worth) for name, (_, score, predicted) in scored.items()}
    ones = np.ones((1, label.size))
    point = {name: {k: float(v[0]) for k, v in s.metrics(ones).items()} for name, s in models.items()}
    drawn: dict[str, dict[str, list[np.ndarray]]] = {name: {} for name in models}
    for weights in resamples(label.size, count, seed):
        for name, s in models.items():
            for metric, values in s.metrics(weights).items():
                drawn[name].setdefault(metric, []).append(values)
    boot = {name: {k: np.concatenate(v) for k, v in found.items()} for name, found in drawn.items()}
    key = "business_value" if worth is not None else "roc_auc"
    result: dict[str, Any] = {
        "decision": spec.name,
        "rows": {"table": len(frame), "unlabelled": len(frame) - len(labelled), "train": len(train), "test": len(test)},
        "split": {"train_share": train_share, "test_from": _iso(test["ts"].iloc[0]),
                  "test_to": _iso(test["ts"].iloc[-1])},
        "bootstrap": {"resamples": count, "seed": seed, "level": LEVEL},
        "ece_bins": ECE_BINS,
        "value_matrix": worth,
        "models": {name: {"description": scored[name][0], "metrics": {
            m: {"value": point[name][m], "ci": _ci(boot[name][m])} for m in METRICS if m in point[name]}}
            for name in models},
        "comparison": {"metric": key, "against": {}},
        "curves": {name: curves(score, label) for name, (_, score, _) in scored.items()},
        "reliability": {name: reliability(score, label) for name, (_, score, _) in scored.items()},
        "scores": _distributions(test, label),
    }
    for name in models:
        if name == CANDIDATE:
            continue
        diff = boot[CANDIDATE][key] - boot[name][key]
        diff = -diff if key in LOWER_IS_BETTER else diff
        result["comparison"]["against"][name] = {
            "difference": point[CANDIDATE][key] - point[name][key], "ci": _ci(diff),
            "share_ahead": float(np.nanmean(diff > 0))}
    against = result["comparison"]["against"].values()
    result["comparison"]["beats_all"] = bool(against) and all(c["ci"][0] > 0 for c in against)
    if worth is not None:
        curve = value_by_threshold(scored[CANDIDATE][1], label, worth)
        best = int(np.argmax(curve["value"]))
        result["thresholds"] = {
            "spec": spec.threshold, "value_at_spec": point[CANDIDATE]["business_value"],
            "value_optimal": curve["threshold"][best], "value_at_optimal": curve["value"][best], "curve": curve}
    return result


def _ci(draws: np.ndarray) -> list[float]:
    finite = draws[np.isfinite(draws)]
    if not finite.size:
        return [math.nan, math.nan]
    lo, hi = np.quantile(finite, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return [float(lo), float(hi)]


def _iso(ts: Any) -> str:
    return str(ts.strftime("%Y-%m-%dT%H:%M:%SZ"))


def _distributions(test: pd.DataFrame, label: np.ndarray, bins: int = 50) -> dict[str, Any]:
    """Histograms of the candidate's scores per label, and their quartiles per segment value."""
    score = test["score"].to_numpy(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    by_label = {str(int(k)): np.histogram(score[(label >= 0.5) == bool(k)], edges)[0].tolist() for k in (0, 1)}
    segments: dict[str, dict[str, Any]] = {}
    columns = [c for c in ("variant", "model_version") if c in test.columns and test[c].nunique() > 1]
    columns = [*(c for c in test.columns if c.startswith("segment.")), *columns][:SEGMENTS_SHOWN]
    for column in columns:
        groups = test.groupby(test[column].astype("string").fillna("unknown"), sort=True)["score"]
        q = groups.quantile([0.05, 0.25, 0.5, 0.75, 0.95]).unstack()
        segments[column] = {"values": [str(v) for v in q.index], "decisions": groups.size().tolist(),
                            **{name: q[p].tolist() for name, p in (("q05", 0.05), ("q25", 0.25), ("median", 0.5),
                                                                   ("q75", 0.75), ("q95", 0.95))}}
    return {"edges": edges.tolist(), "by_label": by_label, "by_segment": segments}


def verdict_lines(result: dict[str, Any]) -> list[str]:
    """The terminal's short verdict."""
    rows, split = result["rows"], result["split"]
    key = result["comparison"]["metric"]
    level = f"{result['bootstrap']['level']:.0%}"
    lines = [f"validate {result['decision']}: {rows['test']:,} decisions from {split['test_from']} to "
             f"{split['test_to']}; baselines trained on the {rows['train']:,} before"
             + (f" ({rows['unlabelled']:,} without a label left out)" if rows["unlabelled"] else ""),
             f"{key.replace('_', ' ')} ({level} interval, {result['bootstrap']['resamples']} bootstrap resamples):"]
    for name, model in result["models"].items():
        found = model["metrics"][key]
        lines.append(f"  {name:<18} {found['value']:>9.4g} [{found['ci'][0]:.4g}, {found['ci'][1]:.4g}]   "
                     f"{model['description']}")
    against = result["comparison"]["against"]
    if not against:
        return lines
    weakest = min(against, key=lambda name: against[name]["ci"][0])
    w = against[weakest]
    margin = f"{w['difference']:+.4g} [{w['ci'][0]:+.4g}, {w['ci'][1]:+.4g}] over {weakest}"
    if result["comparison"]["beats_all"]:
        lines.append(f"verdict: the candidate beats every baseline on {key.replace('_', ' ')} (smallest margin "
                     f"{margin}, ahead in {w['share_ahead']:.1%} of resamples)")
    else:
        lines.append(f"verdict: the candidate does NOT clearly beat every baseline on {key.replace('_', ' ')} "
                     f"({margin}, ahead in {w['share_ahead']:.1%} of resamples)")
    thresholds = result.get("thresholds")
    if thresholds is not None:
        lines.append(f"threshold: the spec's {thresholds['spec']:g} gives {thresholds['value_at_spec']:.4g} per "
                     f"decision; {thresholds['value_optimal']:g} would give {thresholds['value_at_optimal']:.4g} "
                     "on these decisions")
    return lines

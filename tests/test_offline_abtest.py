"""`monitor offline abtest` and `power` end to end: JSON shape, SRM, CUPED, the report in Chromium, CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from monitor.cli import app
from monitor.offline.abtest import analyse, cuped

runner = CliRunner()


def experiment(n: int = 20_000, lift: float = 0.08, treated_share: float = 0.5, seed: int = 1) -> pd.DataFrame:
    """A joined table of an A/B test: conversion and revenue, zero-heavy, with last month's spend as a covariate."""
    rng = np.random.default_rng(seed)
    treated = rng.random(n) < treated_share
    spend_before = rng.gamma(2.0, 20.0, n)
    rate = np.clip(0.08 + 0.002 * spend_before, 0, 1) * np.where(treated, 1 + lift, 1.0)
    bought = rng.random(n) < rate
    revenue = bought * (0.8 * spend_before + rng.lognormal(3.0, 0.6, n))
    return pd.DataFrame({
        "decision_id": [f"d{i:06d}" for i in range(n)],
        "ts": pd.date_range("2026-01-01", periods=n, freq="13s", tz="UTC"),
        "variant": np.where(treated, "treatment", "control"),
        "score": rng.random(n), "label": bought.astype(float), "status": "matched",
        "kpi.conversion": bought.astype(float), "kpi.revenue": revenue, "feature.spend_before": spend_before,
    })


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("abtest") / "joined.parquet"
    experiment().to_parquet(path, index=False)
    return path


def test_the_json_has_the_documented_shape(table: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = runner.invoke(app, ["offline", "abtest", "--data", str(table), "--variant-field", "variant",
                               "--control", "control", "--covariate", "feature.spend_before", "--out", str(out)])
    assert done.exit_code == 0, done.output
    result = json.loads((out / "abtest.json").read_text())
    assert set(result["srm"]) >= {"p_value", "flagged"} and result["srm"]["flagged"] is False
    assert set(result["kpis"]) == {"conversion", "revenue"}
    for name, kpi in result["kpis"].items():
        assert set(kpi["arms"]) == {"control", "treatment"}
        for arm in kpi["arms"].values():
            assert set(arm) >= {"n", "mean", "ci"} and arm["ci"][0] < arm["mean"] < arm["ci"][1]
        assert set(kpi["lift"]) == {"relative", "ci"}
        rates = {"z_test"} if name == "conversion" else set()
        expected = {"welch", "mann_whitney", "sequential", "bootstrap"} | rates
        assert set(kpi["tests"]) == expected
        assert all("p_value" in test for test in kpi["tests"].values())
        assert kpi["lift"]["ci"][0] > 0  # an 8% lift on 20,000 units is found
        assert kpi["cuped"]["variance_reduction"] > (0.05 if name == "revenue" else 0.01)
    assert "lift" in done.output and "revenue" in done.output


def test_the_lift_and_arms_match_a_direct_computation(table: Path) -> None:
    frame = pd.read_parquet(table)
    result = analyse(frame, "variant", "control", ["revenue"], resamples=300)
    a = frame.loc[frame.variant == "control", "kpi.revenue"]
    b = frame.loc[frame.variant == "treatment", "kpi.revenue"]
    kpi = result["kpis"]["revenue"]
    assert kpi["arms"]["control"]["mean"] == pytest.approx(a.mean())
    assert kpi["lift"]["relative"] == pytest.approx(b.mean() / a.mean() - 1)
    se = np.sqrt(a.var() / a.size + b.var() / b.size) / a.mean()  # delta method, roughly
    assert kpi["lift"]["ci"][1] - kpi["lift"]["ci"][0] == pytest.approx(2 * 1.96 * se, rel=0.25)


def test_srm_is_flagged_loudly_on_a_50_8_split(tmp_path: Path) -> None:
    n = 100_000
    frame = experiment(n=n, lift=0.0)
    frame["variant"] = np.where(np.arange(n) < 50_800, "control", "treatment")
    frame = frame.sample(frac=1.0, random_state=0).sort_values("ts")
    path = tmp_path / "srm.csv"
    frame.to_csv(path, index=False)
    done = runner.invoke(app, ["offline", "abtest", "--data", str(path), "--kpi", "conversion"])
    assert done.exit_code == 0, done.output
    assert "SAMPLE RATIO MISMATCH" in done.output and "NOT TRUSTWORTHY" in done.output
    fair = analyse(experiment(n=n, lift=0.0), "variant", "control", ["conversion"], resamples=100)
    assert fair["srm"]["flagged"] is False and fair["trustworthy"] is True


def test_cuped_variance_reduction_is_the_squared_correlation() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, 50_000)
    y = 2 * x + rng.normal(0, 1, 50_000)
    treated = rng.random(50_000) < 0.5
    found = cuped(y, x, treated, "x")
    rho = np.corrcoef(x, y)[0, 1]
    assert found["variance_reduction"] == pytest.approx(rho**2, rel=1e-6)
    assert found["theta"] == pytest.approx(2.0, abs=0.02)


@pytest.mark.parametrize(("args", "words"), [
    (["--variant-field", "arm"], "--variant-field arm: no such column"),
    (["--control", "baseline"], "--control baseline: not a value of variant"),
    (["--kpi", "margin"], "--kpi margin: no column kpi.margin"),
    (["--covariate", "nothing"], "--covariate nothing: no such column"),
])
def test_a_wrong_option_fails_naming_it(table: Path, args: list[str], words: str) -> None:
    done = runner.invoke(app, ["offline", "abtest", "--data", str(table), *args])
    assert done.exit_code == 2 and words in done.output


def test_power_prints_json_and_days() -> None:
    done = runner.invoke(app, ["offline", "power", "--baseline-rate", "0.5", "--mde-abs", "0.1", "--traffic",
                               "776/day", "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output) == {"n_per_arm": 388, "days": 1.0}
    relative = runner.invoke(app, ["offline", "power", "--baseline-rate", "0.5", "--mde", "0.2"])
    assert "388 units per arm" in relative.output
    both = runner.invoke(app, ["offline", "power", "--baseline-rate", "0.5", "--mde", "0.2", "--mde-abs", "0.1"])
    assert both.exit_code == 2 and "exactly one of --mde" in both.output


def test_the_report_opens_in_chromium_with_every_plot_drawn(table: Path, tmp_path: Path, open_page) -> None:
    out = tmp_path / "report"
    done = runner.invoke(app, ["offline", "abtest", "--data", str(table), "--covariate", "feature.spend_before",
                               "--out", str(out)])
    assert done.exit_code == 0, done.output
    seen = open_page(out / "abtest.html", "offline-abtest")
    assert seen.console_errors == []
    assert seen.plots == seen.rendered == 2 + 3 * 2 - 1  # SRM, lift; per KPI arms, sequential (+ revenue's spread)


def test_an_unequal_split_is_tested_against_its_plan(tmp_path: Path) -> None:
    frame = experiment(n=50_000, lift=0.0, treated_share=0.1)
    path = tmp_path / "ninety-ten.parquet"
    frame.to_parquet(path, index=False)
    unplanned = runner.invoke(app, ["offline", "abtest", "--data", str(path), "--kpi", "conversion"])
    assert "SAMPLE RATIO MISMATCH" in unplanned.output  # against an equal split, 90/10 is a mismatch
    out = tmp_path / "out"
    planned = runner.invoke(app, ["offline", "abtest", "--data", str(path), "--kpi", "conversion", "--split",
                                  "control=0.9", "--split", "treatment=0.1", "--out", str(out)])
    assert planned.exit_code == 0, planned.output
    assert "SAMPLE RATIO MISMATCH" not in planned.output
    srm = json.loads((out / "abtest.json").read_text())["srm"]
    assert srm["expected_share"] == {"control": 0.9, "treatment": 0.1} and srm["flagged"] is False
    bad = runner.invoke(app, ["offline", "abtest", "--data", str(path), "--split", "treatment=lots"])
    assert bad.exit_code == 2 and "--split" in bad.output

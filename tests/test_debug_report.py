"""The replay report's HTML page, opened in a real browser; explanations on the simulated scenarios."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from monitor.apps import ranges
from monitor.apps.replay import run
from monitor.apps.simulate import simulate, write_jsonl
from monitor.contract.report import Alert, Explained, Report, ScoreDrift, ShiftShare
from monitor.contract.spec import Spec, load
from monitor.debug.records import FileRecords

ROOT = Path(__file__).resolve().parent.parent
SHIFT_SHARE = {"segment_mix", "outcome_rate", "value_per_outcome"}


@pytest.fixture(scope="module")
def checkout(bundled_spec_path: Path) -> Spec:
    return load(bundled_spec_path)


def explained(tmp: Path, spec: Spec, scenario: str) -> Report:
    path = tmp / f"{scenario}.jsonl"
    write_jsonl(simulate(scenario, 100_000, seed=21), path)
    return ranges.report(*run(spec, FileRecords(path), f"--input {path}", explain=True), None)


def overall(report: Report, kind: str) -> Alert:
    return next(a for a in report.alerts if a.kind == kind and a.segment == {})


def kind_of(explanation: Explained) -> str:
    return str(msgspec.to_builtins(explanation)["kind"])


@pytest.mark.parametrize("scenario, kind, leader", [
    ("business_drop", "kpi_degradation", "value_per_outcome"),
    ("mix_shift", "kpi_degradation", "segment_mix"),
    ("model_rot", "model_degradation", "model_metric"),
])
def test_the_top_explanation_names_what_the_scenario_changed(tmp_path: Path, checkout: Spec, scenario: str,
                                                             kind: str, leader: str) -> None:
    report = explained(tmp_path, checkout, scenario)
    alert = overall(report, kind)
    top = alert.explanations[0]
    assert kind_of(top) == leader, [(kind_of(e), e.size) for e in alert.explanations[:4]]
    if leader != "model_metric":
        assert isinstance(top, ShiftShare) and top.kpi == "revenue" and top.contribution < 0
    sizes = [e.size for e in alert.explanations]
    assert sizes == sorted(sizes, reverse=True)
    # The three parts add up to the alert's own KPI change, for every KPI the alert names.
    for kpi in alert.kpis:
        parts = [e for e in alert.explanations if isinstance(e, ShiftShare) and e.kpi == kpi.name]
        assert {kind_of(e) for e in parts} == SHIFT_SHARE
        assert parts[0].reference == pytest.approx(kpi.reference, rel=1e-5)
        assert parts[0].current == pytest.approx(kpi.current, rel=1e-5)
        assert sum(e.contribution for e in parts) == pytest.approx(parts[0].current - parts[0].reference,
                                                                   rel=1e-9, abs=1e-12)
    if scenario == "model_rot":  # the scores barely move in distribution: the rot is in their ranking
        drift = next(e for e in alert.explanations if isinstance(e, ScoreDrift))
        assert drift.size < top.size and 0 <= drift.psi < 0.1


def test_html_report_opens_offline_with_every_plot_drawn(tmp_path: Path, bundled_spec_path: Path,
                                                         open_page) -> None:
    stream, report, page = tmp_path / "s.jsonl", tmp_path / "r.json", tmp_path / "r.html"
    write_jsonl(simulate("business_drop", 60_000, seed=3), stream)
    done = subprocess.run([sys.executable, "-m", "monitor.cli", "replay", "--spec", str(bundled_spec_path),
                           "--input", str(stream), "--report", str(report), "--html", str(page),
                           "--reference", "2026-01-01T06:00:00Z..2026-01-02T06:00:00Z",
                           "--current", "2026-01-02T12:00:00Z..2026-01-03T12:00:00Z"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(report.read_text())
    assert result["alerts"] and all(a["explanations"] for a in result["alerts"])
    changed = result["what_changed"]
    assert changed["explanations"][0]["kind"] == "value_per_outcome"
    html = page.read_text()
    assert "<script src" not in html and "http://" not in html.split("<body>")[1].split("<script>")[0]
    seen = open_page(page, "replay-report")
    assert seen.console_errors == []
    assert seen.plots >= 4 and seen.rendered == seen.plots
    assert seen.screenshot.stat().st_size > 50_000
    # The early alerts, one row per incident: its kinds, what was known when it was read, how it ended.
    early = seen.text.split("Early alerts", 1)[1].split("Model metrics and KPIs over time", 1)[0]
    provisional = [a for a in result["early_alerts"] if a["status"] == "provisional"]
    assert provisional and "kpi_degradation, misalignment" in early
    assert f"{provisional[0]['known']['matched']:,} outcomes" in early
    assert "confirmed at" in early

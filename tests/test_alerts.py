"""Each alert kind fires on its scenario; a healthy stream of 100k decisions stays silent."""

from __future__ import annotations

import io
import json
from collections import Counter

import msgspec
import pytest
from rich.console import Console

from monitor.apps.simulate import simulate
from monitor.contract.spec import Spec, load
from monitor.engine.monitor import Monitor
from monitor.export.console import print_alert
from monitor.testing import Sink, encode


def run(scenario: str, decisions: int, spec: Spec) -> tuple[Monitor, Sink]:
    sink = Sink()
    monitor = Monitor(spec, on_alert=sink.alert)
    for record in simulate(scenario, decisions, seed=21):
        monitor.process(str(record["topic"]), encode(record["value"]))
    monitor.finish()
    return monitor, sink


@pytest.fixture(scope="module")
def checkout(request: pytest.FixtureRequest) -> Spec:
    return load(request.getfixturevalue("bundled_spec_path"))


def overall(sink: Sink) -> Counter[str]:
    return Counter(a.kind for a in sink.alerts if not a.segment)


def test_healthy_stream_of_100k_decisions_raises_nothing(checkout: Spec) -> None:
    monitor, sink = run("healthy", 100_000, checkout)
    assert monitor.joiner.counts().predictions == 100_000
    assert sum(len(t) for t in monitor.timeline.values()) > 80  # windows were tested
    assert sink.alerts == []


def test_business_drop_is_a_silent_misalignment(checkout: Spec) -> None:
    _, sink = run("business_drop", 100_000, checkout)
    assert overall(sink) == {"kpi_degradation": 1, "misalignment": 1}
    misalignment = next(a for a in sink.alerts if a.kind == "misalignment" and not a.segment)
    assert misalignment.subject == "revenue" and misalignment.severity == "critical"
    assert [c.name for c in misalignment.kpis] == ["revenue"]
    assert {c.name for c in misalignment.metrics} >= {"roc_auc", "log_loss"}  # what held, for contrast
    assert "Model metrics held" in misalignment.message
    assert not any(a.kind == "model_degradation" for a in sink.alerts)
    printed = io.StringIO()
    print_alert(misalignment, Console(file=printed, width=400))
    assert f"[{checkout.name}] all decisions: KPI fell" in printed.getvalue()  # the console reads no markup in it


def test_model_rot_is_a_model_degradation_the_business_does_not_see(checkout: Spec) -> None:
    _, sink = run("model_rot", 100_000, checkout)
    assert overall(sink) == {"model_degradation": 1, "misalignment": 1}
    degradation = next(a for a in sink.alerts if a.kind == "model_degradation" and not a.segment)
    assert "roc_auc" in {c.name for c in degradation.metrics}
    assert not any(a.kind == "kpi_degradation" for a in sink.alerts)


def test_both_drop_is_two_degradations_and_no_misalignment(checkout: Spec) -> None:
    _, sink = run("both_drop", 100_000, checkout)
    assert overall(sink) == {"model_degradation": 1, "kpi_degradation": 1}
    assert not any(a.kind == "misalignment" for a in sink.alerts)


def test_alert_fires_after_the_change_and_carries_a_replay_command(checkout: Spec) -> None:
    records = simulate("business_drop", 100_000, seed=21)
    change = next(r["value"]["ts"] for r in records if r["key"] == "d-0050000")  # type: ignore[index]
    _, sink = run("business_drop", 100_000, checkout)
    first = min(sink.alerts, key=lambda a: a.at)
    assert first.window.end > change  # never before the change
    assert first.at - change < 24 * 3600  # within a day of event time
    payload = json.loads(msgspec.json.encode(first.event()))  # as the alerts topic carries it
    assert set(payload) >= {"kind", "at", "segment", "metrics", "kpis", "severity", "message", "replay"}
    assert payload["replay"].startswith("monitor replay --spec ")
    assert "--from " in payload["replay"] and "--to " in payload["replay"]


def test_one_alert_per_episode_per_segment_and_kind(checkout: Spec) -> None:
    _, sink = run("model_rot", 100_000, checkout)
    keys = Counter((a.kind, tuple(a.segment.items())) for a in sink.alerts)
    assert max(keys.values()) == 1

"""The Prometheus and Alertmanager configs, the alert rules, their unit tests and the runbook.

promtool and amtool come from Debian's `prometheus` and `prometheus-alertmanager` (scripts/test.sh
installs them). Without them these tests skip, or fail under scripts/test.sh (MONITOR_REQUIRE_KAFKA).
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.testing import eventually, free_port, require

ROOT = Path(__file__).resolve().parent.parent
PROM = ROOT / "prometheus"
RULE_FILES = sorted((PROM / "rules").glob("*.yml"))
TEST_FILES = sorted((PROM / "tests").glob("*.yml"))
RUNBOOK = ROOT / "docs" / "runbook.md"
SEVERITIES = {"critical", "warning", "info"}


def run(*args: str) -> str:
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{output}"
    return output


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    return [rule for path in RULE_FILES for group in load(path)["groups"] for rule in group["rules"]
            if "alert" in rule]


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a document's headings: lower case, punctuation dropped, spaces as dashes."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


# --- the tools' own checks -----------------------------------------------------------------------

@pytest.mark.ops
def test_prometheus_config_is_valid_and_loads_every_rule_file() -> None:
    # rule_files is relative to the config's folder: /etc/prometheus/rules/ in the container,
    # prometheus/rules/ here.
    output = run(require("promtool"), "check", "config", "prometheus/prometheus.yml")
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in output, output
    for path in RULE_FILES:
        assert str(path.relative_to(ROOT)) in output


@pytest.mark.ops
def test_rule_files_are_valid() -> None:
    output = run(require("promtool"), "check", "rules", *(str(p.relative_to(ROOT)) for p in RULE_FILES))
    assert f"SUCCESS: {len(alert_rules())} rules found" in output, output


@pytest.mark.ops
def test_alertmanager_config_is_valid() -> None:
    output = run(require("amtool"), "check-config", "prometheus/alertmanager.yml")
    assert "SUCCESS" in output, output


@pytest.mark.ops
def test_alert_rule_unit_tests_pass() -> None:
    output = run(require("promtool"), "test", "rules", *(str(p.relative_to(ROOT)) for p in TEST_FILES))
    assert output.count("SUCCESS") == len(TEST_FILES), output


# --- what the files must hold ------------------------------------------------------------------------

def test_every_alert_rule_has_severity_summary_description_and_runbook_section() -> None:
    rules = alert_rules()
    assert rules
    sections = anchors(RUNBOOK.read_text())
    for rule in rules:
        name = rule["alert"]
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        notes = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            assert notes.get(key, "").strip(), f"{name} has no {key}"
        assert notes["runbook_url"] == f"docs/runbook.md#{name.lower()}", name
        assert name.lower() in sections, f"docs/runbook.md has no section {name}"
        assert "for" in rule, f"{name} says nothing of `for`"


def test_no_rule_names_a_decision_and_segment_alerts_name_theirs() -> None:
    for rule in alert_rules():
        assert "decision=" not in rule["expr"].replace(" ", ""), rule["alert"]
        if "monitor_" in rule["expr"]:  # the monitor's series all carry `decision`
            assert "[{{ $labels.decision }}]" in rule["annotations"]["summary"], rule["alert"]
            assert "all decisions" in rule["annotations"]["summary"], rule["alert"]


def test_every_alert_rule_is_unit_tested_firing_and_quiet() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    tested_files: set[Path] = set()
    for path in TEST_FILES:
        doc = load(path)
        tested_files |= {(path.parent / f).resolve() for f in doc["rule_files"]}
        for case in doc["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert tested_files == {p.resolve() for p in RULE_FILES}
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fires == set(), "rules never tested firing"
    assert names - quiet == set(), "rules never tested quiet"
    assert (fires | quiet) - names == set(), "tests of rules that do not exist"


def test_prometheus_config_uses_the_shared_names() -> None:
    config = load(PROM / "prometheus.yml")
    assert config["global"]["scrape_interval"] == "15s"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"monitor", "prometheus"}
    assert jobs["monitor"]["metrics_path"] == "/metrics"
    [sd] = jobs["monitor"]["dns_sd_configs"]
    assert (sd["names"], sd["type"], sd["port"]) == (["worker"], "A", 6066)
    [target] = config["alerting"]["alertmanagers"][0]["static_configs"]
    assert target["targets"] == ["alertmanager:9093"]
    assert config["rule_files"] == ["rules/*.yml"]  # /etc/prometheus/rules/*.yml beside the mounted config


def test_alertmanager_sends_to_the_webhook() -> None:
    config = load(PROM / "alertmanager.yml")
    [receiver] = config["receivers"]
    assert receiver["name"] == config["route"]["receiver"]
    assert [hook["url"] for hook in receiver["webhook_configs"]] == ["http://webhook:5001/"]


# --- Alertmanager's inhibit rules, on a real Alertmanager ----------------------------------------

class Hook(BaseHTTPRequestHandler):
    """Collects Alertmanager's notifications, as the compose stack's webhook logs them."""

    received: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """The repository's alertmanager.yml on loopback, its webhook pointed at a local receiver."""
    binary = require("alertmanager", "prometheus-alertmanager")  # Debian's name for it
    received: list[dict[str, Any]] = []
    handler = type("LocalHook", (Hook,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = load(PROM / "alertmanager.yml")
    config["receivers"][0]["webhook_configs"][0]["url"] = f"http://127.0.0.1:{server.server_port}/"
    config["route"]["group_wait"] = "1s"  # notify at once; the grouping is what is tested
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'alertmanager.yml'}", f"--storage.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/-/ready", timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "alertmanager did not start"
                time.sleep(0.1)
        yield url, received
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        server.shutdown()
        server.server_close()


def post_alerts(url: str, alerts: list[dict[str, str]]) -> None:
    now = datetime.now(UTC)
    body = [{"labels": labels, "startsAt": now.isoformat(), "endsAt": (now + timedelta(hours=1)).isoformat()}
            for labels in alerts]
    request = urllib.request.Request(f"{url}/api/v2/alerts", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=5).close()


def inhibited(url: str, count: int) -> set[tuple[str, str]]:
    """(alertname, segment_country) of the inhibited alerts, once Alertmanager holds `count` alerts."""
    deadline = time.monotonic() + 15
    while True:
        with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=5) as response:
            alerts = json.load(response)
        if len(alerts) == count or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(alerts) == count, alerts
    return {(a["labels"]["alertname"], a["labels"].get("segment_country", "")) for a in alerts
            if a["status"]["inhibitedBy"]}


@pytest.mark.ops
def test_one_episode_pages_once(alertmanager: tuple[str, list[dict[str, Any]]]) -> None:
    url, received = alertmanager
    de = {"decision": "checkout_offer", "variant": "treatment", "segment_country": "DE"}
    us = {"decision": "checkout_offer", "variant": "treatment", "segment_country": "US"}
    post_alerts(url, [
        {"alertname": "MonitorMisalignment", "severity": "critical", **de},
        {"alertname": "MonitorKpiDegradation", "severity": "warning", **de},
        {"alertname": "MonitorModelDegradation", "severity": "warning", **de},
        {"alertname": "MonitorKpiDegradation", "severity": "warning", **us},  # another segment
        {"alertname": "MonitorKpiDegradation", "severity": "warning", "decision": "checkout_offer"},  # overall
        {"alertname": "MonitorWorkerDown", "severity": "critical", "job": "monitor", "instance": "w1:6066"},
        {"alertname": "MonitorConsumerLagGrowing", "severity": "warning", "job": "monitor",
         "instance": "w2:6066", "topic": "predictions"},
    ])
    assert inhibited(url, 7) == {
        ("MonitorKpiDegradation", "DE"), ("MonitorModelDegradation", "DE"), ("MonitorConsumerLagGrowing", ""),
    }
    eventually(lambda: len(received) >= 4, 15, "four notifications (group_wait is 1 s in this copy)", every=0.1)
    # A group posted now is notified a group_wait later than every group above: once it is here, an
    # inhibited alert that leaked would be here too.
    post_alerts(url, [{"alertname": "MonitorKpiDegradation", "severity": "warning", "decision": "checkout_offer",
                       "variant": "control", "segment_country": "FR"}])
    eventually(lambda: any(n["groupLabels"].get("segment_country") == "FR" for n in received), 15,
               "the later group's notification", every=0.1)
    groups = sorted((n["groupLabels"].get("alertname", ""), n["groupLabels"].get("segment_country", ""))
                    for n in received)
    assert groups == [("MonitorKpiDegradation", ""), ("MonitorKpiDegradation", "FR"), ("MonitorKpiDegradation", "US"),
                      ("MonitorMisalignment", "DE"), ("MonitorWorkerDown", "")], received


@pytest.mark.ops
def test_an_early_alert_pages_once(alertmanager: tuple[str, list[dict[str, Any]]]) -> None:
    """A confirmed early alert inhibits its provisional twin; a misalignment, early or complete, inhibits the
    early KPI and model alerts of its segment; other segments and kinds notify on their own."""
    url, received = alertmanager

    def early(name: str, kind: str, country: str) -> dict[str, str]:
        return {"alertname": name, "kind": kind, "decision": "checkout_offer", "variant": "treatment",
                "segment_country": country, "severity": "critical" if "Confirmed" in name else "warning",
                "status": "confirmed" if "Confirmed" in name else "provisional"}

    post_alerts(url, [
        early("MonitorEarlyConfirmed", "kpi_degradation", "DE"),
        early("MonitorEarlyWarning", "kpi_degradation", "DE"),  # its twin: inhibited
        early("MonitorEarlyWarning", "misalignment", "US"),
        early("MonitorEarlyWarning", "kpi_degradation", "US"),  # named by the misalignment: inhibited
        {"alertname": "MonitorMisalignment", "kind": "misalignment", "severity": "critical",
         "decision": "checkout_offer", "variant": "treatment", "segment_country": "FR"},
        early("MonitorEarlyWarning", "model_degradation", "FR"),  # named by the complete one: inhibited
        early("MonitorEarlyWarning", "kpi_degradation", "GB"),
    ])
    deadline = time.monotonic() + 15
    while True:
        with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=5) as response:
            alerts = json.load(response)
        if len(alerts) == 7 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    quiet = {(a["labels"]["alertname"], a["labels"]["kind"], a["labels"]["segment_country"]) for a in alerts
             if a["status"]["inhibitedBy"]}
    assert quiet == {("MonitorEarlyWarning", "kpi_degradation", "DE"), ("MonitorEarlyWarning", "kpi_degradation", "US"),
                     ("MonitorEarlyWarning", "model_degradation", "FR")}
    eventually(lambda: len(received) >= 4, 15, "four notifications", every=0.1)
    time.sleep(2)  # a leaked inhibited alert would be notified within group_wait (1 s here)
    groups = sorted((n["groupLabels"]["alertname"], n["groupLabels"].get("kind", ""),
                     n["groupLabels"]["segment_country"]) for n in received)
    assert groups == [("MonitorEarlyConfirmed", "kpi_degradation", "DE"),
                      ("MonitorEarlyWarning", "kpi_degradation", "GB"), ("MonitorEarlyWarning", "misalignment", "US"),
                      ("MonitorMisalignment", "", "FR")], received

"""The Grafana dashboards: generated, conventional, and every query proven on a real Prometheus.

Grafana itself does not run in the tests. Instead the dashboards' JSON is checked for Grafana's conventions,
and every PromQL expression in it (panel targets, annotations, variable queries), with its template variables
filled in as Grafana would, runs through the HTTP API of a real Prometheus that scrapes a real worker on the
test broker, together with the alert rules of prometheus/rules/.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor.testing import eventually, free_port, require
from tests.harness import Deployment

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "grafana" / "dashboards"
RULES = sorted((ROOT / "prometheus" / "rules").glob("*.yml"))
# Used until prometheus/rules/ holds the stack's rules: the misalignment alert as they define it.
FALLBACK_RULES = """groups:
  - name: monitor-test
    rules:
      - alert: MonitorMisalignment
        expr: monitor_alert_active{kind="misalignment"} == 1
        for: 0m
"""
# What Grafana puts in place of its global variables, for a 1 s scrape interval and a short range.
GLOBALS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m", "__range_s": "300"}
VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")
RATES = re.compile(r"\b(?:rate|irate|increase)\(")


def boards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # the panels of a collapsed row


def variables(board: dict[str, Any]) -> list[dict[str, Any]]:
    return list(board["templating"]["list"])


def exprs(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, expr) of every PromQL expression: panel targets and annotation queries."""
    for panel in panels(board):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for annotation in board["annotations"]["list"]:
        if "expr" in annotation:
            yield f"annotation {annotation['name']!r}", annotation["expr"]


def fill(expr: str, values: dict[str, list[str]]) -> str:
    """`expr` as Grafana sends it: a multi-value variable becomes a regex alternation, `${x:regex}` too."""
    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        if name in GLOBALS:
            return GLOBALS[name]
        chosen = values[name]
        if len(chosen) == 1 and match.group(2) != "regex":
            return chosen[0]
        return "(" + "|".join(re.escape(v) for v in chosen) + ")"
    return VARIABLE.sub(one, expr)


# Without Prometheus ----------------------------------------------------------------------------------------


def test_committed_dashboards_are_the_generators_output(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "grafana/generate.py", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    fresh = {p.name: p.read_text() for p in tmp_path.glob("*.json")}
    committed = {p.name: p.read_text() for p in DASHBOARDS.glob("*.json")}
    assert sorted(fresh) == sorted(committed)
    for name, text in fresh.items():
        assert committed[name] == text, f"{name} differs: run `python grafana/generate.py` and commit the result"


def test_dashboards_follow_grafanas_conventions() -> None:
    found = boards()
    assert {b["title"] for b in found.values()} == {"Model vs business", "Segment drill-down", "Join health",
                                                    "Pipeline health"}
    for name, board in found.items():
        defined = {v["name"] for v in variables(board)}
        assert {"datasource", "decision"} <= defined, name
        for variable in variables(board):
            if variable["type"] == "query":
                assert re.fullmatch(r"label_values\(.+, \w+\)", variable["query"]), (name, variable["name"])
        assert "checkout_offer" not in json.dumps(board), f"{name} names a decision"
        for panel in panels(board):
            if panel["type"] == "row":
                continue
            where = f"{name}: {panel['title']}"
            assert panel.get("description"), f"{where} has no description"
            assert panel["fieldConfig"]["defaults"].get("unit"), f"{where} has no unit"
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
            if panel["type"] == "timeseries":
                assert panel["options"]["legend"]["showLegend"], where
            assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"]), where
        for where, expr in exprs(board):
            ranges = re.findall(r"\[[^\]]*\]", expr)  # every range is Grafana's, so it follows the scrape interval
            assert len(RATES.findall(expr)) <= len(ranges) and set(ranges) <= {"[$__rate_interval]"}, \
                f"{name} {where}: {expr}"
            if "monitor_" in expr:
                assert re.findall(r'decision="[^"]*"', expr) and all(
                    m == 'decision="$decision"' for m in re.findall(r'decision=~?"[^"]*"', expr)), f"{where}: {expr}"
            used = {a or b for a, _, b in VARIABLE.findall(expr)} - set(GLOBALS)
            assert used <= defined, f"{name} {where} uses undefined {used - defined}"
    home = found["model-vs-business.json"]
    assert any("monitor_alerts_total" in a.get("expr", "") for a in home["annotations"]["list"])


# On a real Prometheus --------------------------------------------------------------------------------------


class Prometheus:
    """A Prometheus of the test's own on loopback, scraping one worker every second."""

    def __init__(self, binary: str, tmp: Path, target: int) -> None:
        rules = RULES
        if not rules:
            (tmp / "rules.yml").write_text(FALLBACK_RULES)
            rules = [tmp / "rules.yml"]
        config = {  # JSON is YAML
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(r) for r in rules],
            "scrape_configs": [{"job_name": "monitor", "metrics_path": "/metrics",
                                "static_configs": [{"targets": [f"127.0.0.1:{target}"]}]}]}
        (tmp / "prometheus.yml").write_text(json.dumps(config))
        self.port = free_port()
        self.log = tmp / "prometheus.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT)
        try:
            eventually(self.ready, 30, "prometheus is ready", alive=lambda: self.proc.poll() is None,
                       context=lambda: self.log.read_text()[-3000:])
        except BaseException:
            self.stop()
            raise

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as error:  # a bad query answers 400 with its reason
            body = json.loads(error.read())
        return body

    def query(self, expr: str) -> list[Any]:
        body = self.api("query", query=expr)
        assert body["status"] == "success", f"{expr}: {body.get('error')}"
        return list(body["data"]["result"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def variable_values(prom: Prometheus, board: dict[str, Any], decision: str,
                    picked: bool = False) -> dict[str, list[str]]:
    """What Grafana puts in each variable when the dashboard opens: the first value its label_values(...)
    query offers, or "All" (the variable's allValue) where that is the default; with `picked`, every value
    offered instead of "All", as a user who ticks them all gets."""
    values: dict[str, list[str]] = {"datasource": ["prometheus"]}
    for variable in variables(board):
        if variable["type"] != "query":
            continue
        series, label = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]).groups()  # type: ignore[union-attr]
        body = prom.api(f"label/{label}/values", **{"match[]": fill(series, values)})
        offered = sorted(body["data"])
        assert offered, f"{board['title']}: variable {variable['name']} offers nothing ({variable['query']})"
        if variable["name"] == "decision":
            assert offered == [decision]
        if variable.get("multi"):
            everything = variable.get("current", {}).get("value") == ["$__all"] and not picked
            values[variable["name"]] = [variable["allValue"]] if everything else offered
        else:
            values[variable["name"]] = offered[:1]
    return values


@pytest.mark.kafka
def test_every_dashboard_query_returns_data_on_a_real_prometheus(setup: Deployment, tmp_path: Path) -> None:
    binary = require("prometheus")
    path = setup.write("business_drop", 40_000)
    port = setup.start()  # before the records, so Prometheus sees the counters move
    prom = Prometheus(binary, tmp_path, port)
    try:
        # A worker takes the stream in seconds: Prometheus must have scraped it before, or no counter is seen moving.
        eventually(lambda: prom.query("up == 1"), 60, "Prometheus scrapes the worker")
        setup.produce(path)
        misalignment = [r for g in prom.api("rules")["data"]["groups"] for r in g["rules"]
                        if r["type"] == "alerting" and 'kind="misalignment"' in r["query"]]
        assert misalignment, "no alert rule reads monitor_alert_active{kind=\"misalignment\"}"
        names = {r["name"] for r in misalignment}
        firing = eventually(lambda: [a for a in prom.api("alerts")["data"]["alerts"]
                                     if a["labels"]["alertname"] in names and a["state"] == "firing"], 120,
                            "the misalignment alert fires", every=0.5,
                            context=lambda: "".join(p.read_text(errors="replace")[-2000:]
                                                    for p in setup.tmp.glob("worker-*.log")))
        assert firing[0]["labels"]["decision"] == setup.spec.name

        # A rate needs two scrapes in its range: the worker may finish the stream before Prometheus has them.
        empty: list[str] = []

        def answered() -> bool:
            empty.clear()
            for name, board in boards().items():
                values = variable_values(prom, board, setup.spec.name)
                picked = variable_values(prom, board, setup.spec.name, picked=True)
                for where, expr in exprs(board):
                    if not prom.query(fill(expr, values)):
                        empty.append(f"{name} {where}: {fill(expr, values)}")
                    prom.query(fill(expr, picked))  # valid with values ticked one by one, too
            return not empty

        eventually(answered, 60, "every dashboard query has data", every=1,
                   context=lambda: "queries without data:\n" + "\n".join(empty))

        rules = [r for g in prom.api("rules")["data"]["groups"] for r in g["rules"]]
        assert rules and all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
        for rule in rules:
            prom.query(rule["query"])  # valid; an alert that is not firing may rightly return nothing
        assert prom.query('ALERTS{alertstate="firing"}')
    finally:
        prom.stop()

"""The `monitor` command line, run as a user runs it."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

MONITOR = [sys.executable, "-m", "monitor.cli"]


def monitor(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MONITOR, *args], capture_output=True, text=True, timeout=timeout)


def test_simulate_then_replay_writes_the_report(tmp_path: Path, bundled_spec_path: Path) -> None:
    stream, report = tmp_path / "s.jsonl", tmp_path / "r.json"
    done = monitor("simulate", "--scenario", "business_drop", "--decisions", "20000", "--seed", "4",
                   "--out", str(stream))
    assert done.returncode == 0, done.stderr
    done = monitor("replay", "--spec", str(bundled_spec_path), "--input", str(stream), "--report", str(report))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""  # quiet when not on a terminal
    result = json.loads(report.read_text())
    assert set(result["join"]) == {"predictions", "outcomes", "matched", "expired", "late", "duplicates",
                                   "orphans", "invalid", "pending"}
    assert result["join"]["predictions"] == 20000
    overall = result["segments"][0]
    assert overall["segment"] == {} and overall["decisions"] == result["join"]["matched"] + result["join"]["expired"]
    assert set(overall["model"]) >= {"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"}
    assert overall["timeline"] and set(overall["timeline"][0]) == {"start", "end", "decisions", "model", "kpi"}


def test_replay_time_range(tmp_path: Path, bundled_spec_path: Path) -> None:
    stream, report = tmp_path / "s.jsonl", tmp_path / "r.json"
    monitor("simulate", "--scenario", "healthy", "--decisions", "5000", "--out", str(stream))
    done = monitor("replay", "--spec", str(bundled_spec_path), "--input", str(stream), "--report", str(report),
                   "--from", "2026-01-01T02:00:00Z", "--to", "2026-01-01T04:00:00Z")
    assert done.returncode == 0, done.stderr
    predictions = json.loads(report.read_text())["join"]["predictions"]
    assert 1200 < predictions < 2100  # 2 of the 6 simulated hours


@pytest.mark.parametrize("args, message", [
    (["--spec", "nope.toml"], "readable spec file"),
    (["--spec", "{spec}", "--from", "yesterday"], "not an RFC 3339 time"),
])
def test_replay_errors_are_plain(tmp_path: Path, bundled_spec_path: Path, args: list[str], message: str) -> None:
    stream = tmp_path / "s.jsonl"
    stream.write_text("")
    args = [a.replace("{spec}", str(bundled_spec_path)) for a in args]
    done = monitor("replay", *args, "--input", str(stream), "--report", str(tmp_path / "r.json"))
    assert done.returncode == 2
    assert message in done.stderr


def test_bad_spec_names_the_key(tmp_path: Path, bundled_spec_path: Path) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text(bundled_spec_path.read_text().replace('horizon = "6h"', 'horizon = "six hours"'))
    (tmp_path / "s.jsonl").write_text("")
    done = monitor("replay", "--spec", str(spec), "--input", str(tmp_path / "s.jsonl"), "--report", "r.json")
    assert done.returncode == 2
    assert "`outcome.horizon`" in done.stderr and "six hours" in done.stderr


def test_unknown_scenario(tmp_path: Path) -> None:
    done = monitor("simulate", "--scenario", "meteor", "--out", str(tmp_path / "x.jsonl"))
    assert done.returncode == 2 and "valid scenarios" in done.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_demo_serves_metrics_prints_alerts_and_a_summary() -> None:
    port = free_port()
    proc = subprocess.Popen([*MONITOR, "demo", "--scenario", "business_drop", "--port", str(port),
                             "--duration", "8", "--decisions", "40000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        scraped = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "monitor_kpi{" not in scraped:
            time.sleep(0.5)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                    scraped = response.read().decode()
            except OSError:
                continue
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "monitor_decisions_total" in scraped and "monitor_kpi{" in scraped
    assert "misalignment" in out and "revenue" in out  # the alert, readable
    assert "totals per segment" in out

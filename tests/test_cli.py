"""The `monitor` command line, run as a user runs it."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from monitor.apps import split
from monitor.testing import edit_spec, eventually, free_port

MONITOR = [sys.executable, "-m", "monitor.cli"]


def monitor(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "MONITOR_DEBUG"} | (env or {})
    return subprocess.run([*MONITOR, *args], capture_output=True, text=True, timeout=timeout, env=environ)


def test_simulate_then_replay_writes_the_report(tmp_path: Path, bundled_spec_path: Path) -> None:
    stream, report = tmp_path / "s.jsonl", tmp_path / "r.json"
    done = monitor("simulate", "--scenario", "business_drop", "--decisions", "20000", "--seed", "4",
                   "--out", str(stream))
    assert done.returncode == 0, done.stderr
    done = monitor("replay", "--spec", str(bundled_spec_path), "--input", str(stream), "--report", str(report))
    assert done.returncode == 0, done.stderr
    result = json.loads(report.read_text())
    join, (reason, count) = result["join"], next(iter(result["invalid_reasons"].items()))
    assert done.stdout == ""  # no table when not on a terminal, but one line of what became of the records:
    assert done.stderr == (f"replay: 20,000 decisions, {join['matched'] + join['expired']:,} final "
                           f"({join['matched']:,} matched, {join['expired']:,} expired), {join['pending']:,} "
                           f"pending; {join['invalid']:,} invalid records (most often, {count}: {reason})\n")
    assert set(result["join"]) == {"predictions", "outcomes", "matched", "expired", "late", "duplicates",
                                   "orphans", "invalid", "pending", "evicted_pending", "evicted_held", "evicted_finals"}
    assert result["join"]["predictions"] == 20000
    overall = result["segments"][0]
    assert overall["segment"] == {} and overall["decisions"] == result["join"]["matched"] + result["join"]["expired"]
    assert set(overall["model"]) >= {"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"}
    assert overall["timeline"] and set(overall["timeline"][0]) == {"start", "end", "decisions", "model", "kpi"}


@pytest.mark.parametrize("lines, problem", [
    (b"", "no decision became final (the input is empty)"),
    (b"not json\n" + b'{"topic": "predictions", "value": {"decision_id": "a", "ts": 1767225600000, "model": "m",'
     b' "score": 0.5}}\n' * 5, "6 of 6 records were invalid"),
    (bytes(range(256)) * 8, "records were invalid"),
    (b'{"topic": "predictions", "value": {"decision_id": "a", "ts": 1767225600, "model": "m", "score": 0.5}}\n',
     "no decision became final"),
])
def test_a_replay_whose_numbers_mean_little_says_so_and_exits_3(tmp_path: Path, bundled_spec_path: Path,
                                                                 lines: bytes, problem: str) -> None:
    stream, report = tmp_path / "s.jsonl", tmp_path / "r.json"
    stream.write_bytes(lines)
    done = monitor("replay", "--spec", str(bundled_spec_path), "--input", str(stream), "--report", str(report))
    assert done.returncode == 3, done.stderr
    assert problem in done.stderr and "--allow-invalid" in done.stderr and done.stderr.startswith("replay: ")
    assert report.exists()  # written all the same
    if b"1767225600000" in lines:  # epoch milliseconds: the line names the unit to set
        assert 'it looks like milliseconds: set ts_unit = … in [predictions]' in done.stderr
    allowed = monitor("replay", "--spec", str(bundled_spec_path), "--input", str(stream), "--report", str(report),
                      "--allow-invalid")
    assert allowed.returncode == 0, allowed.stderr


@pytest.mark.parametrize("flag", ["--report", "--html", "--joined"])
def test_an_output_that_cannot_be_written_fails_before_the_replay(tmp_path: Path, bundled_spec_path: Path,
                                                                  flag: str) -> None:
    stream = tmp_path / "s.jsonl"
    stream.write_bytes(b"")
    missing = tmp_path / "no" / "such" / "folder" / "out.csv"
    args = {"--report": str(missing)} if flag == "--report" else {"--report": str(tmp_path / "r.json"),
                                                                    flag: str(missing)}
    done = monitor("replay", "--spec", str(bundled_spec_path), "--input", str(stream),
                   *(x for kv in args.items() for x in kv))
    assert done.returncode == 2 and f"{flag} {missing}: the folder {missing.parent} does not exist" in done.stderr
    assert "replay: " not in done.stderr  # refused before any record was read


def test_replay_time_range(tmp_path: Path, bundled_spec_path: Path) -> None:
    stream, report = tmp_path / "s.jsonl", tmp_path / "r.json"
    monitor("simulate", "--scenario", "healthy", "--decisions", "5000", "--out", str(stream))
    done = monitor("replay", "--spec", str(bundled_spec_path), "--input", str(stream), "--report", str(report),
                   "--from", "2026-01-01T02:00:00Z", "--to", "2026-01-01T04:00:00Z")
    assert done.returncode == 0, done.stderr
    predictions = json.loads(report.read_text())["join"]["predictions"]
    assert 1200 < predictions < 2100  # 2 of the 6 simulated hours


@pytest.mark.skipif(not split.available(), reason="two processes need Linux and two cores")
def test_replay_on_two_processes_writes_the_same_report(tmp_path: Path, bundled_spec_path: Path) -> None:
    stream = tmp_path / "s.jsonl"
    monitor("simulate", "--scenario", "business_drop", "--decisions", "30000", "--seed", "2", "--out", str(stream))
    written = []
    for processes in ("1", "2"):
        report = tmp_path / f"r{processes}.json"
        done = monitor("replay", "--processes", processes, "--spec", str(bundled_spec_path), "--input", str(stream),
                       "--report", str(report))
        assert done.returncode == 0, done.stderr
        written.append(report.read_bytes())
    assert written[0] == written[1] and b'"kind": "misalignment"' in written[0]
    done = monitor("replay", "--processes", "3", "--spec", str(bundled_spec_path), "--input", str(stream),
                   "--report", str(tmp_path / "r.json"))
    assert done.returncode == 2 and "--processes" in done.stderr


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
    spec.write_text(edit_spec(bundled_spec_path.read_text(), {"outcome.horizon": "six hours"}))
    (tmp_path / "s.jsonl").write_text("")
    done = monitor("replay", "--spec", str(spec), "--input", str(tmp_path / "s.jsonl"), "--report", "r.json")
    assert done.returncode == 2
    assert "`outcome.horizon`" in done.stderr and "six hours" in done.stderr


def test_unknown_scenario(tmp_path: Path) -> None:
    done = monitor("simulate", "--scenario", "meteor", "--out", str(tmp_path / "x.jsonl"))
    assert done.returncode == 2 and "valid scenarios" in done.stderr


def test_unexpected_error_is_one_line(tmp_path: Path, bundled_spec_path: Path) -> None:
    (tmp_path / "s.jsonl").write_text("")
    # A full device as --report passes every check and fails when the report is written, outside any known error
    done = monitor("replay", "--spec", str(bundled_spec_path), "--input", str(tmp_path / "s.jsonl"),
                   "--report", "/dev/full")
    assert done.returncode == 1
    assert done.stderr.splitlines() == ["error: OSError: [Errno 28] No space left on device",
                                        "(run again with --debug for the traceback)"]
    assert done.stdout == ""


@pytest.mark.parametrize("flag, env", [(["--debug"], {}), ([], {"MONITOR_DEBUG": "1"})])
def test_debug_shows_the_traceback(tmp_path: Path, bundled_spec_path: Path, flag: list[str],
                                   env: dict[str, str]) -> None:
    (tmp_path / "s.jsonl").write_text("")
    done = monitor(*flag, "replay", "--spec", str(bundled_spec_path), "--input", str(tmp_path / "s.jsonl"),
                   "--report", "/dev/full", env=env)
    assert done.returncode == 1
    assert done.stderr.startswith("Traceback (most recent call last):")
    assert done.stderr.splitlines()[-1] == "OSError: [Errno 28] No space left on device"
    assert "run again" not in done.stderr and "╭" not in done.stderr  # Python's own traceback, not Rich's box


def scrape(port: int, until: str, timeout: float = 30) -> str:
    """The text of /metrics once it contains `until`, or the last text read when time runs out."""
    last = [""]

    def read() -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                last[0] = response.read().decode()
        except OSError:
            return None
        return last[0] if until in last[0] else None

    try:
        return eventually(read, timeout, f"/metrics shows {until}", every=0.5)
    except AssertionError:
        return last[0]


def test_interrupt_exits_quietly_with_130() -> None:
    port = free_port()
    # A shell without job control starts background commands with SIGINT ignored, and the demo would inherit
    # that from a test run started so: it gets the terminal's default, as under a user's Ctrl-C.
    proc = subprocess.Popen([*MONITOR, "demo", "--port", str(port), "--duration", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert "monitor_decisions_total" in scrape(port, "monitor_decisions_total")  # streaming by now
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert err == ""


def test_demo_serves_metrics_prints_alerts_and_a_summary() -> None:
    port = free_port()
    proc = subprocess.Popen([*MONITOR, "demo", "--scenario", "business_drop", "--port", str(port),
                             "--duration", "8", "--decisions", "40000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        scraped = scrape(port, "monitor_kpi{")
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "monitor_decisions_total" in scraped and "monitor_kpi{" in scraped
    assert "misalignment" in out and "revenue" in out  # the alert, readable
    assert "PROVISIONAL early kpi_degradation" in out  # early alerts as they fire
    assert "also misalignment" in out  # one incident, one entry: its second kind is a line of it
    assert "totals per segment" in out and "early alerts:" in out
    assert out.count("CRITICAL kpi_degradation") == out.count("also misalignment (critical)")


def test_an_alerts_replay_command_runs_as_printed(tmp_path: Path, bundled_spec_path: Path) -> None:
    """The `replay` field of an alert is a command a user can paste: it reproduces the alert."""
    stream, report = tmp_path / "stream.jsonl", tmp_path / "first.json"
    assert monitor("simulate", "--scenario", "business_drop", "--decisions", "100000", "--seed", "1",
                   "--out", str(stream)).returncode == 0
    done = monitor("replay", "--spec", str(bundled_spec_path), "--input", str(stream), "--report", str(report))
    assert done.returncode == 0, done.stderr
    alert = next(a for a in json.loads(report.read_text())["alerts"] if a["kind"] == "misalignment")
    command = shlex.split(alert["replay"])
    assert command[0] == "monitor"
    again = subprocess.run([*MONITOR, *command[1:]], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    replayed = json.loads((tmp_path / "report.json").read_text())["alerts"]
    assert any(a["kind"] == "misalignment" and a["segment"] == alert["segment"] for a in replayed)

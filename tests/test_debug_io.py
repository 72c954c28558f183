"""Record sources, capture, narrowing by segment and the diff of two reports, without a broker."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from scipy import stats

from monitor.apps.replay import replay, run
from monitor.apps.simulate import simulate, write_jsonl
from monitor.contract.errors import MonitorError
from monitor.contract.report import Errors, Join, Report, Segment
from monitor.contract.spec import Spec
from monitor.debug.capture import capture, line
from monitor.debug.diff import diff
from monitor.debug.records import Bad, FileRecords, Narrowed, Raw, TimeRange, parse_segments

ROOT = Path(__file__).resolve().parent.parent


def test_capture_keeps_every_value_byte_for_byte(tmp_path: Path, spec: Spec) -> None:
    values = [b'{"decision_id":"a","ts":1,"model":"m","score":0.5}', b"{not json", b'{\n "pretty": 1\n}',
              b' {"padded": 1} ', b"", "caf\u00e9".encode(), b"\xff\xfe"]
    records = [Raw("predictions", v, f"k{i}", 1000 + i, 0, i) for i, v in enumerate(values)]
    path = tmp_path / "c.jsonl"
    assert capture(records, path) == len(values)
    back = list(FileRecords(path))
    assert [bytes(r.value) for r in back if not isinstance(r, Bad)] == values
    assert [(r.key, r.timestamp, r.partition, r.offset) for r in back if not isinstance(r, Bad)] == \
        [(f"k{i}", 1000 + i, 0, i) for i in range(len(values))]
    assert b'"value_base64"' not in line(records[0]) and b'"value_base64"' in line(records[1])
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(b'{"topic": "predictions", "value": null, "value_base64": "not base64!"}\n')
    reasons = [r.reason for r in FileRecords(broken) if isinstance(r, Bad)]
    assert reasons == ["replay line: `value_base64` is not base64"]


def test_a_capture_replays_to_the_same_report_as_its_source(tmp_path: Path, spec: Spec) -> None:
    stream = tmp_path / "s.jsonl"
    write_jsonl(simulate("business_drop", 8_000, seed=4), stream)
    kept = tmp_path / "kept.jsonl"
    capture(FileRecords(stream), kept)
    original, again = replay(spec, stream).report(), replay(spec, kept).report()
    for report in (original, again):
        for alert in [*report.alerts, *report.early_alerts]:
            alert.replay = ""
    assert original == again


def test_the_range_reads_outcomes_one_horizon_past_its_end(spec: Spec) -> None:
    window = TimeRange.of(spec, 1_000, 2_000)
    horizon = round(spec.horizon * 1000)
    assert [window.holds("predictions", t) for t in (999, 1_000, 1_999, 2_000)] == [False, True, True, False]
    assert [window.holds("outcomes", t) for t in (999, 2_000, 2_000 + horizon - 1, 2_000 + horizon)] == \
        [False, True, True, False]
    assert window.holds("predictions", None)
    with pytest.raises(MonitorError, match="--to must be after --from"):
        TimeRange.of(spec, 2_000, 2_000)


def test_segment_narrows_to_its_decisions_and_their_outcomes(tmp_path: Path, spec: Spec) -> None:
    stream = tmp_path / "s.jsonl"
    write_jsonl(simulate("healthy", 6_000, seed=2), stream)
    whole = replay(spec, stream).report()
    narrowed, _ = run(spec, Narrowed(FileRecords(stream), spec, {"variant": "control", "segment.country": "DE"}),
                      "--input x")
    report = narrowed.report()
    want = next(s for s in whole.segments if s.segment == {"variant": "control", "segment.country": "DE"})
    got = [s for s in report.segments if s.segment]
    assert [s.segment for s in got] == [want.segment]
    assert got[0].decisions == want.decisions == report.segments[0].decisions
    # Outcomes of dropped decisions are dropped too: only those that came before their prediction are orphans.
    assert report.join.orphans - whole.join.orphans < 0.01 * whole.join.outcomes


@pytest.mark.parametrize("option", ["variant", "variant=", "colour=red", "segment.=x"])
def test_a_bad_segment_option_names_itself(option: str) -> None:
    with pytest.raises(MonitorError, match=f"--segment: got '{option}'"):
        parse_segments([option])


def report(value: float, se: float) -> Report:
    overall = Segment(segment={}, decisions=100, model={"roc_auc": 0.8, "f1": 0.5}, kpi={"revenue": value},
                      se=Errors(model={"roc_auc": 0.01, "f1": None}, kpi={"revenue": se}), timeline=[], early=[])
    return Report(decision="d", join=Join(), invalid_reasons={}, segments=[overall], alerts=[], early_alerts=[])


def test_diff_tests_each_move_with_the_reports_standard_errors() -> None:
    moves = {m.name: m for m in diff(report(8.0, 0.3), report(6.8, 0.4), alpha=0.05)}
    z = (6.8 - 8.0) / math.hypot(0.3, 0.4)
    assert moves["revenue"].z == pytest.approx(z)
    assert moves["revenue"].p == pytest.approx(2 * stats.norm.sf(abs(z)))
    assert moves["revenue"].significant  # p = 0.016 < 0.05 / 2 (Bonferroni over the two tested)
    assert moves["roc_auc"].p == pytest.approx(1.0) and not moves["roc_auc"].significant
    assert moves["f1"].p is None and not moves["f1"].significant  # no standard error: not tested
    assert not {m.name: m for m in diff(report(8.0, 0.3), report(7.4, 0.4))}["revenue"].significant


def test_diff_command_prints_a_table_and_json(tmp_path: Path, bundled_spec_path: Path) -> None:
    stream, a, b = tmp_path / "s.jsonl", tmp_path / "a.json", tmp_path / "b.json"
    write_jsonl(simulate("business_drop", 20_000, seed=6), stream)

    def monitor(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "monitor.cli", *args], capture_output=True, text=True,
                              cwd=ROOT, timeout=300)

    for out, span in ((a, ("--to", "2026-01-01T12:00:00Z")), (b, ("--from", "2026-01-01T12:00:00Z"))):
        done = monitor("replay", "--spec", str(bundled_spec_path), "--input", str(stream), "--report", str(out), *span)
        assert done.returncode == 0, done.stderr
    done = monitor("diff", str(a), str(b), "--json")
    assert done.returncode == 0, done.stderr
    moves = {(tuple(m["segment"].items()), m["name"]): m for m in json.loads(done.stdout)["moves"]}
    revenue = moves[((), "revenue")]
    assert revenue["relative"] < -0.3 and revenue["significant"]
    assert not moves[((), "roc_auc")]["significant"]
    table = monitor("diff", str(a), str(b))
    assert table.returncode == 0 and "revenue" in table.stdout and "significant" in table.stdout
    bad = monitor("diff", str(a), str(stream))
    assert bad.returncode == 2 and "not a readable JSON report" in bad.stderr
    older = tmp_path / "older.json"  # a report of a monitor whose totals had no standard errors
    written = json.loads(a.read_text())
    del written["segments"][0]["se"]
    older.write_text(json.dumps(written))
    bad = monitor("diff", str(a), str(older))
    assert bad.returncode == 2, bad.stderr
    assert "not a replay report as this monitor writes it" in bad.stderr and "segments[0]" in bad.stderr
    assert "`se`" in bad.stderr and "replay it again" in bad.stderr


@pytest.mark.parametrize("args, message", [
    (["--input", "{stream}", "--bootstrap", "127.0.0.1:1"], "give one input"),
    (["--bootstrap", "127.0.0.1:1"], "--bootstrap reads a time range: give --from and --to"),
    (["--input", "{stream}", "--reference", "2026-01-01T00:00:00Z",
      "--current", "2026-01-01T00:00:00Z..2026-01-01T01:00:00Z"], "not a period"),
    (["--input", "{stream}", "--current", "2026-01-01T00:00:00Z..2026-01-01T01:00:00Z"], "give both"),
    (["--input", "{stream}", "--segment", "colour=red"], "--segment: got 'colour=red'"),
])
def test_replay_options_fail_naming_the_flag(tmp_path: Path, bundled_spec_path: Path, args: list[str],
                                             message: str) -> None:
    stream = tmp_path / "s.jsonl"
    write_jsonl(simulate("healthy", 100, seed=1), stream)
    done = subprocess.run([sys.executable, "-m", "monitor.cli", "replay", "--spec", str(bundled_spec_path),
                           "--report", str(tmp_path / "r.json"), *(a.format(stream=stream) for a in args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2 and message in " ".join(done.stderr.split()), done.stderr

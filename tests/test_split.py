"""Replay on two cores (`monitor.apps.split`): the same report as one process, byte for byte, and no stray child."""

from __future__ import annotations

import multiprocessing
import os
import signal
import tomllib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from monitor.apps.replay import run, run_split
from monitor.apps.simulate import SCENARIOS, simulate, write_jsonl
from monitor.apps.split import RollupProcess, available
from monitor.contract import spec as specs
from monitor.contract.events import Incoming
from monitor.contract.report import write
from monitor.contract.spec import Spec
from monitor.debug.records import Bad, FileRecords, Narrowed, TimeRange
from monitor.engine.source import EarlyPart, Part
from monitor.export.joined import JoinedTable
from monitor.stats.readings import Ages
from monitor.stats.summary import Summary
from monitor.testing import edit_spec

pytestmark = pytest.mark.skipif(not available(), reason="two processes need Linux and two cores")


def reports(spec: Spec, path: Path, window: TimeRange | None = None,
            narrow: dict[str, str] | None = None) -> tuple[bytes, bytes]:
    """The report of one process and of two, on the same records, as the command writes them."""
    found = []
    for split in (False, True):
        source = FileRecords(path, window)
        records = source if narrow is None else Narrowed(source, spec, narrow)
        feed = run_split(spec, records, f"--input {path}") if split else run(spec, records, f"--input {path}")[0]
        found.append(write(feed.report()))  # as the command writes it
    assert not multiprocessing.active_children()  # the rollup's process has gone
    return found[0], found[1]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_scenario_reports_the_same_on_two_processes(spec: Spec, tmp_path: Path, scenario: str) -> None:
    # Every scenario carries duplicates, orphans, late outcomes and malformed records besides its alerts.
    path = tmp_path / "s.jsonl"
    write_jsonl(simulate(scenario, 12_000, seed=3), path)
    one, two = reports(spec, path)
    assert b'"invalid_reasons": {}' not in one
    assert two == one


def test_alerts_and_early_alerts_cross_the_process_boundary(spec: Spec, tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    write_jsonl(simulate("business_drop", 30_000, seed=2), path)
    one, two = reports(replace(spec, window_size=500), path)
    report = orjson.loads(two)
    assert report["alerts"] and report["early_alerts"]  # not an empty comparison
    assert two == one


def test_sketches_regression_and_folded_segments_report_the_same(spec_text: str, tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    write_jsonl(simulate("mix_shift", 12_000, seed=8), path)
    kpis = [*tomllib.loads(spec_text)["kpi"], {"name": "revenue_p90", "field": "value", "agg": "p90"}]
    # a p90 KPI (quantile sketches), and caps that fold segments into `other`
    capped = specs.parse(edit_spec(spec_text, {"kpi": kpis, "segments.max": 2, "segments.max_values": 2}))
    one, two = reports(capped, path)
    assert b'"other"' in one and b"revenue_p90" in one
    assert two == one
    regression = specs.parse(edit_spec(spec_text, {"model.task": "regression", "model.threshold": None,
                                                   "business": None}))
    one, two = reports(regression, path)
    assert b"rmse" in one
    assert two == one


def test_a_time_range_and_a_narrowed_replay_report_the_same(spec: Spec, tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    write_jsonl(simulate("model_rot", 12_000, seed=4), path)
    window = TimeRange.of(spec, 1_767_232_800_000, 1_767_240_000_000)
    one, two = reports(spec, path, window)
    assert two == one
    one, two = reports(spec, path, narrow={"variant": "control"})
    assert two == one


def test_the_joined_table_is_filled_in_the_first_process(spec: Spec, tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    write_jsonl(simulate("healthy", 6_000, seed=1), path)
    tables = [JoinedTable(spec), JoinedTable(spec)]
    run(spec, FileRecords(path), "x", joined=tables[0])
    run_split(spec, FileRecords(path), "x", joined=tables[1])
    out = [tmp_path / "one.csv", tmp_path / "two.csv"]
    rows = [t.write(o) for t, o in zip(tables, out, strict=True)]
    assert rows[0] == rows[1] > 1_000
    assert out[0].read_bytes() == out[1].read_bytes()


def test_an_error_while_reading_stops_the_child(spec: Spec, tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    write_jsonl(simulate("healthy", 30_000, seed=1), path)

    def breaks() -> Iterator[Incoming | Bad]:
        for i, record in enumerate(FileRecords(path)):
            if i == 25_000:  # after a few drains have gone to the child
                raise OSError("disk gone")
            yield record

    class Broken:
        unit, total, done = "records", 0, 0

        def __iter__(self) -> Iterator[Incoming | Bad]:
            return breaks()

    with pytest.raises(OSError, match="disk gone"):
        run_split(spec, Broken(), "x")
    assert not multiprocessing.active_children()


def test_a_child_that_dies_is_reported_not_waited_for(spec: Spec) -> None:
    rollup = RollupProcess(spec, "x")
    os.kill(rollup._child.pid or 0, signal.SIGKILL)
    rollup._child.join(timeout=10)
    with pytest.raises(RuntimeError, match=r"ended unexpectedly \(exit code -9\)"):
        for _ in range(200):  # the pipe takes a few messages before it says the reader is gone
            rollup.take([], [], 1.0)
        rollup.sections()
    rollup.close()
    assert not multiprocessing.active_children()


def test_a_child_that_fails_sends_its_traceback(spec: Spec) -> None:
    rollup = RollupProcess(spec, "x")
    rollup._pipe.send_bytes(b"not a delta")  # what a bug on this side would send
    with pytest.raises(RuntimeError, match=r"the rollup process failed:(.|\n)*wire.delta(.|\n)*Expected `array`"):
        rollup.take([Part((), 0, False, Summary(spec.shape))], [EarlyPart((), 0, Ages(len(spec.reading_ages)))],
                    1.0)
        rollup.sections()
    rollup.close()
    assert not multiprocessing.active_children()


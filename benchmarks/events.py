"""Outcome events: replay throughput against single outcomes, pending-state size, and refunds caught.

    python benchmarks/events.py [--decisions 200000] [--runs 3] [--seeds 3] [--compiled .compiled]

Prints:
  1. `monitor replay` as a command (process start included) on `repeat_purchases` (three purchase
     events per converting decision, the bundled events spec) and on `healthy` (one outcome per
     converting decision, the bundled spec), the same decisions and event times; decisions/s of each
     and their ratio against the 70% target; for the pure-Python engine and, when a compiled build is
     at `--compiled`, the compiled one;
  2. traced bytes of join state per pending decision: single outcomes, and with the events spec
     before any event, after one and after three;
  3. `refunds` (refunds rise from 10% to 30% of purchases at the change; conversion and scores hold)
     replayed per seed: the first misalignment alert (early or complete) and its delay after the change
     in event time; and the same stream without the change, whose alerts should be none.
Every time is the best of `--runs`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import datetime
from pathlib import Path

from monitor.apps.simulate import REFUND_SHARE, simulate, spec_file, write_jsonl
from monitor.contract import spec as specs
from monitor.contract.events import Event
from monitor.engine.event_join import EventJoiner
from monitor.engine.join import Joiner
from monitor.engine.monitor import Monitor
from monitor.testing import encode

ROOT = Path(__file__).resolve().parent.parent
PER_DAY = 20_000  # decisions a day: the events spec's 3-day horizon closes most of a few days' decisions
TARGET = 0.70  # repeat_purchases replay, decisions/s, against single outcomes
MONITOR = [sys.executable, "-P", "-m", "monitor.cli"]  # -P: the working folder does not shadow the build measured


def replay_seconds(runs: int, spec: Path, path: Path, tree: Path | None) -> float:
    """Best wall time of `monitor replay` as a command, process start included, on a build's tree."""
    env = {**os.environ, **({"PYTHONPATH": str(tree)} if tree is not None else {})}
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([*MONITOR, "replay", "--processes", "1", "--spec", str(spec), "--input", str(path),
                        "--report", str(path.with_suffix(".report.json"))], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - started)
    return best


def pending_bytes(spec: specs.Spec, n: int, events: int | None) -> float:
    """Traced bytes of join state per pending decision: single outcomes (`events` None), or after
    `events` purchase events each."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    joiner = Joiner(spec, lambda d: None) if events is None else EventJoiner(spec, lambda d: None)
    for i in range(n):
        joiner.prediction(f"d-{i:07d}", 1_767_225_600.0 + i * 0.01, 0.123456, i % 7, i % 2 == 0)
    for k in range(events or 0):
        for i in range(n):
            e = Event(f"d-{i:07d}", 0.0, "purchase", 0, None, [1.0, 42.5])
            fingerprint = i.to_bytes(4, "little") + bytes([k]) * 4
            joiner.event(e, 1_767_225_600.0 + i * 0.01 + 60.0 * (k + 1), fingerprint)  # type: ignore[attr-defined]
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert joiner.counts().pending == n
    return (after - before) / n


def first_misalignment(scenario_spec: specs.Spec, decisions: int, seed: int,
                       refund_after: float) -> tuple[int, float | None]:
    """Alerts raised on a `refunds` stream, and hours from the change to its first misalignment alert."""
    records = simulate("refunds", decisions, seed=seed, per_day=PER_DAY, refund_after=refund_after)
    change = next(float(r["value"]["ts"]) for r in records if r["topic"] == "predictions"
                  and isinstance(r["value"], dict) and r["value"].get("decision_id") == f"d-{decisions // 2:07d}")
    monitor = Monitor(scenario_spec)
    for r in records:
        monitor.process(str(r["topic"]), encode(r["value"]), timestamp=int(str(r["timestamp"])), key=str(r["key"]))
    monitor.finish()
    report = monitor.report()
    alerts = len(report.alerts) + sum(a.status == "provisional" for a in report.early_alerts)
    found = [datetime.fromisoformat(a.at).timestamp() for a in report.alerts if a.kind == "misalignment"]
    found += [datetime.fromisoformat(a.at).timestamp() for a in report.early_alerts if a.kind == "misalignment"]
    return alerts, (min(found) - change) / 3600 if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--compiled", type=Path, default=ROOT / ".compiled", metavar="DIR")
    args = parser.parse_args()
    builds: dict[str, Path | None] = {"pure Python": None}
    if (args.compiled / "monitor").is_dir():
        builds["compiled"] = args.compiled.resolve()
    events_spec = specs.load(ROOT / "monitor" / spec_file("refunds"))
    with tempfile.TemporaryDirectory() as tmp:
        rates: dict[tuple[str, str], float] = {}
        for scenario in ("healthy", "repeat_purchases"):
            path = Path(tmp) / f"{scenario}.jsonl"
            records = write_jsonl(simulate(scenario, args.decisions, seed=1, per_day=PER_DAY), path)
            print(f"{scenario}: {records:,} records for {args.decisions:,} decisions", flush=True)
            spec = ROOT / "monitor" / spec_file(scenario)
            for build, tree in builds.items():
                rates[(build, scenario)] = args.decisions / replay_seconds(args.runs, spec, path, tree)
    for build in builds:
        single, events = rates[(build, "healthy")], rates[(build, "repeat_purchases")]
        print(f"monitor replay, {build}, 1 process: single outcomes {single:,.0f} decisions/s, repeat_purchases"
              f" {events:,.0f} decisions/s, {events / single:.0%} of single  target >= {TARGET:.0%}:"
              f" {'met' if events >= TARGET * single else 'NOT met'}")
    single_spec = specs.load(ROOT / "monitor" / "checkout.toml")
    sizes = [("single outcomes", pending_bytes(single_spec, 200_000, None))] + [
        (f"events spec, {k} event{'s' if k != 1 else ''}", pending_bytes(events_spec, 100_000, k))
        for k in (0, 1, 3)]
    print("pending state per decision: " + "; ".join(f"{name} {size:.0f} bytes" for name, size in sizes)
          + f"  target <= 300: {'met' if all(size <= 300 for _, size in sizes[:3]) else 'NOT met'} (before and"
            " after one event)")
    for seed in range(1, args.seeds + 1):
        alerts, delay = first_misalignment(events_spec, args.decisions // 2, seed, 0.30)
        quiet, _ = first_misalignment(events_spec, args.decisions // 2, seed, REFUND_SHARE)
        shown = "none" if delay is None else f"{delay:.1f} h after the change"
        print(f"refunds seed {seed}: first misalignment {shown} ({alerts} alerts raised);"
              f" without the change: {quiet} alerts", flush=True)


if __name__ == "__main__":
    main()

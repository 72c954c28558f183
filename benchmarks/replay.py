"""Replay throughput and pending-state size.

    python benchmarks/replay.py [--decisions 200000] [--seed 1]

Prints decisions/s of `replay` on one core, its ratio to a plain `json.loads` of every line of
the same file (the floor any JSON pipeline pays), and bytes of join state per pending decision.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
import tracemalloc
from pathlib import Path

from monitor.apps.replay import replay
from monitor.apps.simulate import simulate, write_jsonl
from monitor.contract import spec as specs
from monitor.engine.join import Joiner

SPEC = Path(__file__).resolve().parent.parent / "monitor" / "checkout.toml"


def best_of(runs: int, fn) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        gc.collect()
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def pending_bytes(spec: specs.Spec, n: int) -> float:
    """Traced bytes of join state per pending decision, with n decisions pending."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    joiner = Joiner(spec, lambda d: None)
    for i in range(n):
        joiner.prediction(f"d-{i:07d}", 1_767_225_600.0 + i * 0.01, 0.123456, i % 7, i % 2 == 0)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert joiner.counts().pending == n
    return (after - before) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    spec = specs.load(SPEC)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stream.jsonl"
        records = write_jsonl(simulate("healthy", args.decisions, args.seed), path)
        size = path.stat().st_size
        result: dict[str, object] = {}

        def run() -> None:
            result["monitor"] = replay(spec, path)

        def parse_only() -> None:
            with path.open("rb") as stream:
                for line in stream:
                    json.loads(line)

        replay_s = best_of(args.runs, run)
        json_s = best_of(args.runs, parse_only)
    decisions = result["monitor"].joiner.counts().predictions  # type: ignore[attr-defined]
    rate = decisions / replay_s
    print(f"file: {records:,} records, {decisions:,} decisions, {size / 1e6:.1f} MB")
    print(f"replay: {replay_s:.2f} s, {rate:,.0f} decisions/s ({records / replay_s:,.0f} records/s)"
          f"  target >= 100,000 decisions/s: {'met' if rate >= 100_000 else 'NOT met'}")
    print(f"json.loads of every line: {json_s:.2f} s, {decisions / json_s:,.0f} decisions/s;"
          f" replay takes {replay_s / json_s:.2f}x as long")
    per_pending = pending_bytes(spec, 200_000)
    print(f"pending state: {per_pending:.0f} bytes per pending decision"
          f"  target <= 200: {'met' if per_pending <= 200 else 'NOT met'}")


if __name__ == "__main__":
    main()

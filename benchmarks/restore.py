"""Restore cost of a worker's state as the run grows: 1x and 10x the run length.

    python benchmarks/restore.py [--decisions 20000] [--partitions 4] [--scales 1,10]

Runs the shipped streaming worker (`monitor.testing.InMemoryWorker`, in-memory tables) through a
simulated stream of N and then 10·N decisions (or other `--scales`) (20,000 decisions a day of event time), then
restores both stages from what their tables hold, as a restarted worker would. Prints the entries
and bytes stored and the restore time of each stage.
"""

from __future__ import annotations

import argparse
import time
import zlib
from pathlib import Path

from monitor.apps.simulate import encode, simulate
from monitor.contract import spec as specs
from monitor.stream.join_stage import JoinStage
from monitor.stream.metrics_stage import MetricsStage
from monitor.testing import InMemoryWorker, Memory, Record

SPEC = Path(__file__).resolve().parent.parent / "monitor" / "checkout.toml"


def stream(decisions: int, partitions: int) -> list[Record]:
    offsets: dict[tuple[str, int], int] = {}
    found = []
    for r in simulate("healthy", decisions, seed=3):
        topic, partition = str(r["topic"]), zlib.crc32(str(r["key"]).encode()) % partitions
        offset = offsets[(topic, partition)] = offsets.get((topic, partition), -1) + 1
        found.append((topic, partition, offset, encode(r["value"])))
    return found


def measure(spec: specs.Spec, decisions: int, partitions: int) -> dict[str, float]:
    stores = Memory(), Memory()
    worker = InMemoryWorker(spec, stores, sources=partitions)
    started = time.perf_counter()
    worker.finish(worker.feed(stream(decisions, partitions)))
    fed = time.perf_counter() - started

    started = time.perf_counter()
    join = JoinStage(spec, stores[0], partitions)
    for p in range(partitions):
        join.partition(p)
    join_s = time.perf_counter() - started
    started = time.perf_counter()
    metrics = MetricsStage(spec, partitions, stores[1])
    for q in range(partitions):
        metrics.partition(q)
    metrics_s = time.perf_counter() - started
    assert join.counts() == worker.worker.join.counts()
    return {"fed": fed, "join_entries": len(stores[0]), "join_mb": sum(map(len, stores[0].values())) / 1e6,
            "join_s": join_s, "metrics_entries": len(stores[1]),
            "metrics_mb": sum(map(len, stores[1].values())) / 1e6, "metrics_s": metrics_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--scales", default="1,10", help="multiples of --decisions to run, comma-separated")
    args = parser.parse_args()
    spec = specs.load(SPEC)
    print(f"{'run':>12} {'fed in':>8} | {'join: entries':>13} {'MB':>6} {'restore':>9} |"
          f" {'metrics: entries':>16} {'MB':>6} {'restore':>9}")
    for scale in (int(s) for s in args.scales.split(",")):
        n = args.decisions * scale
        m = measure(spec, n, args.partitions)
        print(f"{n:>12,} {m['fed']:>7.1f}s | {m['join_entries']:>13,} {m['join_mb']:>6.2f} {m['join_s']:>8.3f}s |"
              f" {m['metrics_entries']:>16,} {m['metrics_mb']:>6.2f} {m['metrics_s']:>8.3f}s")


if __name__ == "__main__":
    main()

"""A flood of outcomes for decisions the monitor never saw, through the shipped streaming worker.

    python benchmarks/flood.py [--outcomes 1000000] [--decisions 20000] [--partitions 2] [--json]

Runs `monitor.testing.InMemoryWorker` (the shipped `Worker` on in-memory tables and topics) over a
healthy simulated stream with `--outcomes` unknown outcomes mixed in, and over the same stream
without them. Prints the records per second of both, the peak resident memory of the flooded run,
the held outcomes at the end (capped by `limits.max_held` per partition), and whether the good
decisions came out exactly as without the flood.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import resource
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import orjson

from monitor.apps.simulate import encode, simulate
from monitor.contract import spec as specs
from monitor.testing import InMemoryWorker, Memory, Record

SPEC = Path(__file__).resolve().parent.parent / "monitor" / "checkout.toml"
CHUNK = 10_000


def records(decisions: int, outcomes: int, partitions: int) -> Iterator[Record]:
    """The healthy stream, with `outcomes` unknown outcomes spread evenly through it."""
    good = simulate("healthy", decisions, seed=11)
    every = max(1, outcomes // max(1, len(good)))
    offsets: dict[tuple[str, int], int] = {}
    flood = (i for i in range(outcomes))
    for r in good:
        value = r["value"]
        ts = value["ts"] if isinstance(value, dict) else None
        batch = [(r["topic"], r["key"], encode(value))]
        if ts is not None:
            for i in itertools.islice(flood, every):
                ghost = {"decision_id": f"ghost-{i}", "ts": ts, "label": 1, "value": 9.0}
                batch.append(("outcomes", ghost["decision_id"], orjson.dumps(ghost)))
        for topic, key, raw in batch:
            partition = zlib.crc32(str(key).encode()) % partitions
            offset = offsets[(str(topic), partition)] = offsets.get((str(topic), partition), -1) + 1
            yield str(topic), partition, offset, raw


def run(spec: specs.Spec, decisions: int, outcomes: int, partitions: int) -> dict[str, object]:
    worker = InMemoryWorker(spec, (Memory(), Memory()), sources=partitions)
    stream = records(decisions, outcomes, partitions)
    started, clock, count = time.perf_counter(), 0.0, 0
    while chunk := list(itertools.islice(stream, CHUNK)):
        clock = worker.feed(chunk)
        count += len(chunk)
    worker.finish(clock)
    seconds = time.perf_counter() - started
    rollups = list(worker.worker.rollups())
    totals = [(rollup.key(s), t) for rollup in rollups for s, t in rollup.totals().items()]
    return {"records": count, "seconds": round(seconds, 2), "records_per_s": round(count / seconds),
            "held": worker.worker.join.held_outcomes(), "evicted_held": worker.worker.join_counts().evicted_held,
            "totals": sorted(totals, key=lambda item: item[0])}


def same(a: object, b: object) -> bool:
    """Equal, numbers to 1e-9: a flood moves the checkpoints, so sums merge in another order."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outcomes", type=int, default=1_000_000)
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="one JSON line, for tests")
    args = parser.parse_args()
    spec = specs.load(SPEC)
    clean = run(spec, args.decisions, 0, args.partitions)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    flooded = run(spec, args.decisions, args.outcomes, args.partitions)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"outcomes": args.outcomes, "clean_records_per_s": clean["records_per_s"],
              "flood_records_per_s": flooded["records_per_s"], "flood_seconds": flooded["seconds"],
              "peak_rss_mb": round(peak_rss), "rss_before_flood_mb": round(base_rss),
              "held_at_end": flooded["held"], "evicted_held": flooded["evicted_held"],
              "max_held_per_partition": spec.limits.max_held,
              "good_decisions_exact": same(clean["totals"], flooded["totals"])}
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:>26}: {value}")
    sys.exit(0 if result["good_decisions_exact"] else 1)


if __name__ == "__main__":
    main()

"""How long partitions take to move after one of two workers is killed with SIGKILL.

    scripts/kafka-up.sh            # or any broker: --bootstrap HOST:PORT
    python benchmarks/handover.py [--sessions 6s,10s,30s] [--trials 2] [--partitions 4]

For each `[stream] session_timeout` (heartbeat 1 s): two workers share the input partitions and have
taken in a stream; one is killed with SIGKILL. Prints, from the kill:
  1. moved: until the survivor holds every join partition (its /healthz);
  2. caught up: until the survivor has counted the records produced right after the kill, on every
     partition, the dead worker's included (restore from the changelogs, then the records).
A worker stopped with SIGTERM leaves its group at once; these figures are the crash case.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from stream import RECORDS, make_spec, scrape, start_worker, stop, total

from monitor.apps.simulate import simulate, write_jsonl
from monitor.contract.spec import load
from monitor.infra import brokers
from monitor.infra.connection import Connection, connect
from monitor.testing import edit_spec, free_port

POLL = 0.1


def holds(port: int) -> list[int]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return list(json.loads(response.read())["join_partitions"])
    except OSError:
        return []


def until(condition: object, timeout: float) -> float:
    """Seconds until `condition()` holds (polled every 0.1 s), or raises after `timeout`."""
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"not within {timeout:.0f} s")
        time.sleep(POLL)
    return time.monotonic() - started


def stream_file(tmp: Path, tag: str, spec_topics: dict[str, str], decisions: int, seed: int) -> tuple[Path, int]:
    records = simulate("healthy", decisions, seed=seed)
    for record in records:
        record["topic"] = spec_topics.get(str(record["topic"]), record["topic"])
    path = tmp / f"{tag}-{seed}.jsonl"
    return path, write_jsonl(records, path)


def trial(kafka: Connection, session: str, partitions: int, tmp: Path) -> tuple[float, float]:
    tag = uuid.uuid4().hex[:8]
    spec_path = make_spec(tmp, tag)
    spec_path.write_text(edit_spec(spec_path.read_text(), {"stream.session_timeout": session,
                                                            "stream.heartbeat_interval": "1s"}))
    spec = load(spec_path)
    topics = {"predictions": spec.topics.predictions, "outcomes": spec.topics.outcomes}
    brokers.create_topics(spec, kafka, partitions, retention_ms=-1)
    first, before = stream_file(tmp, tag, topics, 4_000, seed=1)
    brokers.produce(first, kafka)
    ports = [free_port(), free_port()]
    workers = [start_worker(spec_path, kafka.bootstrap, p, tmp / f"{tag}-{p}.log") for p in ports]
    try:
        until(lambda: all(holds(p) for p in ports)
              and sum(total(RECORDS, scrape(p)) for p in ports) >= before, 300)
        time.sleep(3)  # settled: both hold partitions and have taken everything in
        survivor = ports[1]
        counted = total(RECORDS, scrape(survivor))
        workers[0].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        second, after = stream_file(tmp, tag, topics, 2_000, seed=2)
        brokers.produce(second, kafka)
        until(lambda: holds(survivor) == list(range(partitions)), 600)
        moved = time.monotonic() - killed
        # the survivor re-reads the dead worker's partitions from their last commit: count at least the new ones
        until(lambda: total(RECORDS, scrape(survivor)) >= counted + after, 600)
        return moved, time.monotonic() - killed
    finally:
        for proc in workers:
            if proc.poll() is None:
                stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--sessions", default="6s,10s,30s", help="session timeouts to measure, comma-separated")
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    kafka = connect(args.bootstrap)
    print(f"{'session_timeout':>15} {'moved (s)':>20} {'caught up (s)':>20}")
    with tempfile.TemporaryDirectory() as tmp:
        for session in args.sessions.split(","):
            runs = [trial(kafka, session, args.partitions, Path(tmp)) for _ in range(args.trials)]
            moved, caught = [r[0] for r in runs], [r[1] for r in runs]
            print(f"{session:>15} {statistics.median(moved):>9.1f} ({min(moved):.1f}-{max(moved):.1f})"
                  f" {statistics.median(caught):>9.1f} ({min(caught):.1f}-{max(caught):.1f})", flush=True)


if __name__ == "__main__":
    sys.exit(main())

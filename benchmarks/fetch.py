"""What a worker's consumer thread spends per input record: aiokafka's `ConsumerRecord`s against the
records as aiokafka parsed them, which is what the worker's batch intake takes (`agents/consumer.py`).

    scripts/kafka-up.sh            # or any broker: --bootstrap HOST:PORT
    python benchmarks/fetch.py [--decisions 300000] [--rounds 3]

Produces the `healthy` scenario once, then reads every record from the start with a bare aiokafka
consumer, both ways in turn, `--rounds` times; prints records/s and CPU µs per record (this process,
every thread) of each read, and the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path

from stream import Topics, raw_consume

from monitor.infra.connection import connect


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--decisions", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    servers = connect(args.bootstrap).bootstrap
    with tempfile.TemporaryDirectory() as tmp:
        topics = Topics(servers, args.decisions, 4, Path(tmp), 20_000 * 86_400)
        runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for _ in range(args.rounds):
            for parsed in (False, True):
                runs[parsed].append(asyncio.run(raw_consume(topics.names, servers, topics.records, parsed)))
    print(f"{topics.records:,} records ({args.decisions:,} decisions), {args.rounds} rounds, medians:")
    for parsed, name in ((False, "ConsumerRecord per record (aiokafka)"), (True, "records as parsed (batch intake)")):
        rates, cpus = zip(*runs[parsed], strict=True)
        print(f"  {name:38} {statistics.median(rates):>10,.0f} records/s {statistics.median(cpus):6.2f} µs CPU/record"
              f"   (CPU: {', '.join(f'{c:.2f}' for c in cpus)})")


if __name__ == "__main__":
    main()

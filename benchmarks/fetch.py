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
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from aiokafka.consumer import fetcher
from stream import Topics

from agents.consumer import IntakeRecords
from monitor.apps.kafka_config import connect


async def consume(topics: list[str], servers: str, expected: int, parsed: bool) -> tuple[float, float]:
    """Records/s and CPU µs per record of one read of every record."""
    made = fetcher.PartitionRecords
    fetcher.PartitionRecords = IntakeRecords if parsed else made
    IntakeRecords.raw_topics = set(topics) if parsed else set()
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=servers, auto_offset_reset="earliest",
                                group_id=f"fetch-{uuid.uuid4().hex[:6]}", enable_auto_commit=False)
    await consumer.start()
    count, started, cpu = 0, 0.0, 0.0
    try:
        while count < expected:
            batch = await consumer.getmany(timeout_ms=1000)
            if batch and not count:
                started, cpu = time.monotonic(), time.process_time()
            for records in batch.values():
                count += len(records)
                records[-1].offset, records[-1].value  # what the intake reads of every record
        elapsed, used = time.monotonic() - started, time.process_time() - cpu
    finally:
        await consumer.stop()
        fetcher.PartitionRecords = made
    return count / elapsed, used / count * 1e6


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
                runs[parsed].append(asyncio.run(consume(topics.names, servers, topics.records, parsed)))
    print(f"{topics.records:,} records ({args.decisions:,} decisions), {args.rounds} rounds, medians:")
    for parsed, name in ((False, "ConsumerRecord per record (aiokafka)"), (True, "records as parsed (batch intake)")):
        rates, cpus = zip(*runs[parsed], strict=True)
        print(f"  {name:38} {statistics.median(rates):>10,.0f} records/s {statistics.median(cpus):6.2f} µs CPU/record"
              f"   (CPU: {', '.join(f'{c:.2f}' for c in cpus)})")


if __name__ == "__main__":
    main()

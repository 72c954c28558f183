"""End-to-end throughput and latency of one streaming worker on a real Kafka broker.

    scripts/kafka-up.sh            # or any broker: --bootstrap HOST:PORT
    python benchmarks/stream.py [--decisions 50000] [--partitions 4]

Prints, side by side:
  1. end-to-end decisions/s of one worker: from its first record counted in /metrics until every
     record is counted and every matched decision has reached the metrics stage;
  2. the raw aiokafka consume rate of the same records (the ceiling), and the rate of a Faust worker
     whose agents only count them (the framework's own floor, benchmarks/faust_floor.py);
  3. p50/p99 latency from producing an outcome to the metrics stage's outcome-delay histogram
     counting it, at half the measured maximum load.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from monitor.apps import brokers
from monitor.apps.kafka_config import Connection, connect
from monitor.apps.simulate import simulate, write_jsonl
from monitor.contract.spec import load
from monitor.testing import edit_spec

ROOT = Path(__file__).resolve().parent.parent
MATCHED = re.compile(r'^monitor_decisions_total\{[^}]*status="matched"[^}]*\} (\S+)$', re.M)
ARRIVED = re.compile(r"^monitor_outcome_delay_seconds_count\{[^}]*\} (\S+)$", re.M)  # matched, in the metrics stage
RECORDS = re.compile(r"^monitor_records_total\{[^}]*\} (\S+)$", re.M)


def scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def total(pattern: re.Pattern[str], text: str) -> float:
    return sum(float(v) for v in pattern.findall(text))


def make_spec(tmp: Path, tag: str) -> Path:
    text = edit_spec((ROOT / "monitor" / "checkout.toml").read_text(), {
        "decision.name": f"bench_{tag}", "topics.predictions": f"bp-{tag}", "topics.outcomes": f"bo-{tag}",
        "topics.alerts": f"ba-{tag}", "topics.dead_letters": f"bd-{tag}"})
    path = tmp / f"{tag}.toml"
    path.write_text(text)
    return path


def start_worker(spec: Path, servers: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "monitor.cli", "worker", "--spec", str(spec), "--bootstrap",
                             servers, "--web-port", str(port)], stdout=log.open("wb"), stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def throughput(servers: str, decisions: int, partitions: int, tmp: Path) -> tuple[float, float, float, int]:
    """(worker, raw consume, Faust floor) in decisions/s over the same produced records, and the records."""
    tag = uuid.uuid4().hex[:8]
    spec_path = make_spec(tmp, tag)
    spec = load(spec_path)
    brokers.create_topics(spec, Connection(servers), partitions, retention_ms=-1)
    stream = tmp / f"{tag}.jsonl"
    records = write_jsonl(simulate("healthy", decisions, seed=1), stream)
    brokers.produce(stream, Connection(servers), rename={"predictions": spec.topics.predictions,
                                             "outcomes": spec.topics.outcomes})
    raw = asyncio.run(raw_consume([spec.topics.predictions, spec.topics.outcomes], servers, records))
    floor = faust_floor([spec.topics.predictions, spec.topics.outcomes], servers, records)
    port = 16100 + int(tag[:3], 16) % 500
    proc = start_worker(spec_path, servers, port, tmp / f"{tag}.log")
    first = last = None
    deadline = time.monotonic() + 900
    try:
        while time.monotonic() < deadline:
            text = scrape(port)
            seen = total(RECORDS, text)
            now = time.monotonic()
            if seen > 0 and first is None:
                first = (now, seen)
            if seen >= records and total(ARRIVED, text) >= total(MATCHED, text):
                last = (now, seen)
                break
            time.sleep(0.2)
    finally:
        stop(proc)
    if first is None or last is None:
        raise SystemExit(f"the worker did not finish; see {tmp / (tag + '.log')}")
    elapsed = last[0] - first[0]
    rate = (last[1] - first[1]) / elapsed * decisions / records
    return rate, raw * decisions / records, floor * decisions / records, records


def faust_floor(topics: list[str], servers: str, expected: int) -> float:
    """Records/s of a Faust worker that only counts them, with the worker's sensors (benchmarks/faust_floor.py)."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "faust_floor.py"), "--bootstrap", servers,
                           "--topics", ",".join(topics), "--records", str(expected), "--sensors"],
                          capture_output=True, text=True, timeout=600)
    found = re.search(r"faust floor: ([\d,]+) records/s", done.stdout + done.stderr)
    if found is None:
        raise SystemExit(f"the Faust floor run failed:\n{done.stdout}{done.stderr}")
    return float(found.group(1).replace(",", ""))


async def raw_consume(topics: list[str], servers: str, expected: int) -> float:
    """Records/s of a bare aiokafka consumer reading the same topics from the start."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=servers, auto_offset_reset="earliest",
                                group_id=f"raw-{uuid.uuid4().hex[:6]}", enable_auto_commit=False)
    await consumer.start()
    count, started = 0, None
    try:
        while count < expected:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for messages in batch.values():
                if started is None:
                    started = time.monotonic()
                count += len(messages)
    finally:
        await consumer.stop()
    return count / (time.monotonic() - (started or time.monotonic()))


def latency(servers: str, rate: float, tmp: Path, probes: int = 60, warmup: int = 4) -> list[float]:
    """Seconds from producing an outcome to the metrics stage counting its decision, under load.

    The first `warmup` probes wait out the worker's start (assignment, first fetch) and are not counted."""
    from kafka.producer.kafka import KafkaProducer

    tag = uuid.uuid4().hex[:8]
    spec_path = make_spec(tmp, tag)
    spec = load(spec_path)
    brokers.create_topics(spec, Connection(servers), 1, retention_ms=-1)
    port = 16700 + int(tag[:3], 16) % 200
    proc = start_worker(spec_path, servers, port, tmp / f"{tag}.log")
    producer = KafkaProducer(bootstrap_servers=servers, linger_ms=0)
    found: list[float] = []
    try:
        deadline = time.monotonic() + 60
        while not scrape(port) and time.monotonic() < deadline:
            time.sleep(0.5)
        base = time.time()
        sent = 0
        started = time.monotonic()
        for probe in range(warmup + probes):
            # Half load: predictions without outcomes, so each probe moves `matched` by exactly one.
            for _ in range(int(rate * 0.25)):
                sent += 1
                value = (f'{{"decision_id":"load-{sent}","ts":{base + sent * 0.001},"model":"m",'
                         f'"score":0.3}}').encode()
                producer.send(spec.topics.predictions, key=f"load-{sent}".encode(), value=value)
            ts = base + sent * 0.001
            pid = f"probe-{probe}".encode()
            producer.send(spec.topics.predictions, key=pid,
                          value=f'{{"decision_id":"probe-{probe}","ts":{ts},"model":"m","score":0.9}}'.encode())
            producer.send(spec.topics.outcomes, key=pid,
                          value=f'{{"decision_id":"probe-{probe}","ts":{ts},"label":1}}'.encode())
            producer.flush()
            sent_at = time.monotonic()
            while total(ARRIVED, scrape(port)) < probe + 1:
                if time.monotonic() - sent_at > 30:
                    break
                time.sleep(0.02)  # each scrape costs the worker an export
            found.append(time.monotonic() - sent_at)
            pause = started + (probe + 1) * 0.25 - time.monotonic()  # four probes a second
            if pause > 0:
                time.sleep(pause)
    finally:
        producer.close()
        stop(proc)
    return found[warmup:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--decisions", type=int, default=50_000)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    servers = connect(args.bootstrap).bootstrap
    with tempfile.TemporaryDirectory() as tmp:
        rate, raw, floor, records = throughput(servers, args.decisions, args.partitions, Path(tmp))
        print(f"records: {records:,} for {args.decisions:,} decisions, {args.partitions} partitions")
        verdict = "met" if rate >= 20_000 else "NOT met"
        print(f"worker end to end: {rate:,.0f} decisions/s   target >= 20,000: {verdict}")
        print(f"raw aiokafka consume: {raw:,.0f} decisions/s; worker reaches {100 * rate / raw:.1f}%"
              f"   target >= 50%: {'met' if rate >= raw / 2 else 'NOT met'}")
        print(f"Faust floor (agents that only count, with sensors): {floor:,.0f} decisions/s;"
              f" the worker reaches {100 * rate / floor:.0f}% of it")
        delays = sorted(latency(servers, rate / 2, Path(tmp)))
        p99 = delays[min(len(delays) - 1, int(0.99 * len(delays)))]
        print(f"outcome -> gauge at {rate / 2:,.0f} decisions/s: p50 {statistics.median(delays):.3f} s,"
              f" p99 {p99:.3f} s   target p99 <= 1 s: {'met' if p99 <= 1 else 'NOT met'}")
        print("slowest probes (s): " + ", ".join(f"{d:.3f}" for d in delays[-5:]))


if __name__ == "__main__":
    main()

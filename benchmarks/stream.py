"""End-to-end throughput and latency of the streaming workers on a real Kafka broker.

    scripts/kafka-up.sh            # or any broker: --bootstrap HOST:PORT
    python benchmarks/stream.py [--decisions 200000] [--partitions 4] [--per-day N] [--pairs 1] [--scenario S]

Prints, in one run over the same produced records, as decisions/s and as ratios to one worker:
  1. one worker end to end: from its first record counted (polling /healthz, which computes no metric)
     until every record is counted and every finalized decision has reached the metrics stage; then two
     workers in one group alike;
  2. Faust's per-event floor (agents that only count the records, benchmarks/faust_floor.py), the raw
     aiokafka consume rate (the ceiling), and replay of the same records in process (the engine alone);
  3. producer sends per input record, and p50/p99 latency from producing an outcome to the metrics
     stage's outcome-delay histogram counting it, at half the measured load of one worker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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
from typing import Any, NamedTuple

from monitor.apps.replay import replay
from monitor.apps.simulate import SCENARIOS, simulate, spec_file, write_jsonl
from monitor.contract.spec import load
from monitor.infra import brokers
from monitor.infra.connection import Connection, connect
from monitor.testing import edit_spec, engine_build

ROOT = Path(__file__).resolve().parent.parent
ARRIVED = re.compile(r"^monitor_outcome_delay_seconds_count\{[^}]*\} (\S+)$", re.M)  # matched, in the metrics stage
RECORDS = re.compile(r"^monitor_records_total\{[^}]*\} (\S+)$", re.M)
SENT = re.compile(r"^faust_topic_messages_sent_total\{[^}]*\} (\S+)$", re.M)  # every topic, changelogs included


def scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def health(port: int) -> dict[str, Any]:
    """A worker's /healthz: its counters without a metric computed (a scrape costs the worker that holds
    the segments about 45 ms; polled five times a second, it would slow that worker by a fifth)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            found: dict[str, Any] = json.loads(response.read())
            return found
    except (OSError, ValueError):
        return {}


def total(pattern: re.Pattern[str], text: str) -> float:
    return sum(float(v) for v in pattern.findall(text))


def make_spec(tmp: Path, tag: str, scenario: str = "healthy") -> Path:
    text = edit_spec((ROOT / "monitor" / spec_file(scenario)).read_text(), {
        "decision.name": f"bench_{tag}", "topics.predictions": f"bp-{tag}", "topics.outcomes": f"bo-{tag}",
        "topics.alerts": f"ba-{tag}", "topics.dead_letters": f"bd-{tag}"})
    path = tmp / f"{tag}.toml"
    path.write_text(text)
    return path


def start_worker(spec: Path, servers: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-P", "-m", "monitor.cli", "worker", "--spec", str(spec), "--bootstrap",
                             servers, "--web-port", str(port)], stdout=log.open("wb"), stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


class Topics:
    """One benchmark's topics, holding the same produced records for every consumer measured."""

    def __init__(self, servers: str, decisions: int, partitions: int, tmp: Path, per_day: int,
                 scenario: str = "healthy") -> None:
        self.servers, self.decisions, self.tmp = servers, decisions, tmp
        self.tag = uuid.uuid4().hex[:8]
        spec_path = make_spec(tmp, self.tag, scenario)
        self.spec = load(spec_path)
        brokers.create_topics(self.spec, Connection(servers), partitions, retention_ms=-1)
        self.stream = tmp / f"{self.tag}.jsonl"
        self.records = write_jsonl(simulate(scenario, decisions, seed=1, per_day=per_day), self.stream)
        brokers.produce(self.stream, Connection(servers), rename={"predictions": self.spec.topics.predictions,
                                                                 "outcomes": self.spec.topics.outcomes})
        self.names = [self.spec.topics.predictions, self.spec.topics.outcomes]

    def per_decision(self, records_per_second: float) -> float:
        return records_per_second * self.decisions / self.records


def workers(topics: Topics, count: int, run: int = 0) -> tuple[float, float, Cores]:
    """End-to-end decisions/s of `count` workers in one fresh group, producer sends per input record, and
    the cores the machine kept busy meanwhile.

    Timed from the first poll of /healthz at which every worker has counted records (the group has formed
    and its first rebalance is behind it) until every record is counted and every finalized decision has
    reached the metrics stage."""
    group = f"{topics.tag}w{count}" + (f"r{run}" if run else "")  # a fresh group: it reads every record again
    text = edit_spec((topics.tmp / f"{topics.tag}.toml").read_text(), {"decision.name": f"bench_{group}"})
    spec_path = topics.tmp / f"{group}.toml"
    spec_path.write_text(text)
    ports = [16100 + (int(topics.tag[:3], 16) + 7 * count + i) % 500 for i in range(count)]
    procs = [start_worker(spec_path, topics.servers, port, topics.tmp / f"{group}-{i}.log")
             for i, port in enumerate(ports)]
    first = last = None
    sends = busy = used = cores = mine = 0.0
    deadline = time.monotonic() + 900
    try:
        while time.monotonic() < deadline:
            healths = [health(port) for port in ports]
            taken = [sum(h.get("records", {}).values()) for h in healths]
            seen = sum(taken)
            now = time.monotonic()
            if first is None and all(taken):  # the group has formed
                first = (now, seen)
                busy, used = cpu_busy(), sum(cpu_used(proc.pid) for proc in procs)
            decided = [h.get("decisions", {}) for h in healths]
            finalized = sum(d.get("matched", 0) + d.get("expired", 0) for d in decided)
            merged = sum(h.get("segments", {}).get("(all)", 0) for h in healths)  # on one metrics partition
            if seen >= topics.records and merged >= finalized:
                if first is None or now <= first[0]:
                    raise SystemExit(f"{count} workers finished before a scrape after every one of them had"
                                     " counted records: nothing to time; run with more --decisions")
                last = (now, seen)
                sends = sum(total(SENT, scrape(port)) for port in ports)
                cores = (cpu_busy() - busy) / (now - first[0])
                mine = (sum(cpu_used(proc.pid) for proc in procs) - used) / (now - first[0])
                break
            # Near the end, poll faster: the run ends somewhere in the last interval, so a long one would bias
            # a short run's rate.
            time.sleep(0.2 if seen >= 0.95 * topics.records else 1.0)
    finally:
        for proc in procs:
            stop(proc)
    if first is None or last is None:
        raise SystemExit(f"the workers did not finish; see {topics.tmp}/{group}-*.log")
    rate = topics.per_decision((last[1] - first[1]) / (last[0] - first[0]))
    return rate, sends / topics.records, Cores(mine, cores)


class Cores(NamedTuple):
    workers: float  # cores the worker processes used
    machine: float  # cores the whole machine kept busy: workers, broker, this benchmark


def cpu_used(pid: int) -> float:
    """Seconds of CPU a process has used (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_busy() -> float:
    """Seconds of CPU the whole machine has spent busy (every process, the broker's included)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def replayed(topics: Topics) -> float:
    """Decisions/s of the in-process replay of the same records (the engine alone, one core)."""
    started = time.perf_counter()
    replay(topics.spec, topics.stream)
    return topics.decisions / (time.perf_counter() - started)


def faust_floor(topics: list[str], servers: str, expected: int) -> float:
    """Records/s of a Faust worker that only counts them, with the worker's sensors (benchmarks/faust_floor.py)."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "faust_floor.py"), "--bootstrap", servers,
                           "--topics", ",".join(topics), "--records", str(expected), "--sensors"],
                          capture_output=True, text=True, timeout=600)
    found = re.search(r"faust floor: ([\d,]+) records/s", done.stdout + done.stderr)
    if found is None:
        raise SystemExit(f"the Faust floor run failed:\n{done.stdout}{done.stderr}")
    return float(found.group(1).replace(",", ""))


async def raw_consume(topics: list[str], servers: str, expected: int, parsed: bool = False) -> tuple[float, float]:
    """Records/s and CPU µs per record (this process, every thread) of a bare aiokafka consumer reading the
    same topics from the start; `parsed`: the records as aiokafka parsed them, as the worker's intake takes
    them, instead of a `ConsumerRecord` each."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.consumer import fetcher

    from agents.consumer import IntakeRecords

    made, raw = fetcher.PartitionRecords, IntakeRecords.raw_topics  # put back afterwards
    if parsed:
        fetcher.PartitionRecords, IntakeRecords.raw_topics = IntakeRecords, set(topics)
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=servers, auto_offset_reset="earliest",
                                group_id=f"raw-{uuid.uuid4().hex[:6]}", enable_auto_commit=False)
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
        fetcher.PartitionRecords, IntakeRecords.raw_topics = made, raw
    return count / elapsed, used / count * 1e6


def latency(servers: str, rate: float, partitions: int, tmp: Path, probes: int = 60,
            warmup: int = 4) -> tuple[list[float], float]:
    """Seconds from producing an outcome to the metrics stage counting its decision, under a steady
    load of `rate` decisions/s; and the load actually produced.

    The first `warmup` probes wait out the worker's start (assignment, first fetch) and are not counted."""
    tag = uuid.uuid4().hex[:8]
    spec_path = make_spec(tmp, tag)
    spec = load(spec_path)
    brokers.create_topics(spec, Connection(servers), partitions, retention_ms=-1)
    port = 16700 + int(tag[:3], 16) % 200
    proc = start_worker(spec_path, servers, port, tmp / f"{tag}.log")
    try:
        deadline = time.monotonic() + 60
        while not scrape(port) and time.monotonic() < deadline:
            time.sleep(0.5)
        found, produced = asyncio.run(probing(servers, spec.topics.predictions, spec.topics.outcomes, port, rate,
                                              warmup + probes))
    finally:
        stop(proc)
    return found[warmup:], produced


async def probing(servers: str, predictions: str, outcomes: str, port: int, rate: float,
                  probes: int) -> tuple[list[float], float]:
    """Four probes a second over a steady load of predictions without outcomes (so each probe moves
    `matched` by exactly one), produced by aiokafka from this process."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=servers, linger_ms=5, max_batch_size=1 << 20)
    await producer.start()
    done = asyncio.Event()
    sent = 0
    base = time.time()

    async def load() -> None:
        nonlocal sent
        step, due = 0.05, time.monotonic()
        while not done.is_set():
            for _ in range(int(rate * step)):
                sent += 1
                value = f'{{"decision_id":"load-{sent}","ts":{time.time()},"model":"m","score":0.3}}'.encode()
                await producer.send(predictions, key=f"load-{sent}".encode(), value=value)
            due += step
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    found: list[float] = []
    started = time.monotonic()
    loading = asyncio.create_task(load())
    try:
        for probe in range(probes):
            pid, ts = f"probe-{probe}".encode(), max(base, time.time())
            acked = [await producer.send(predictions, key=pid, value=f'{{"decision_id":"probe-{probe}","ts":{ts},'
                                         f'"model":"m","score":0.9}}'.encode()),
                     await producer.send(outcomes, key=pid,
                                         value=f'{{"decision_id":"probe-{probe}","ts":{ts},"label":1}}'.encode())]
            await asyncio.gather(*acked)
            sent_at = time.monotonic()
            while total(ARRIVED, await asyncio.to_thread(scrape, port)) < probe + 1:
                if time.monotonic() - sent_at > 30:
                    break
                await asyncio.sleep(0.02)
            found.append(time.monotonic() - sent_at)
            await asyncio.sleep(max(0.0, started + (probe + 1) * 0.25 - time.monotonic()))
    finally:
        done.set()
        await loading
        await producer.stop()
    return found, sent / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--decisions", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=1,
                        help="time one worker, then two, this many times on the same records; the table shows"
                             " the medians (two workers on a 2-core machine that the broker shares are noisy)")
    parser.add_argument("--per-day", type=int, default=20_000 * 86_400,
                        help="decisions per day of event time (default: 20,000 a second, a live stream at the"
                             " target rate; 20000 replays a sparse history where every slice holds few decisions)")
    parser.add_argument("--scenario", default="healthy", choices=SCENARIOS,
                        help="the simulated stream, read with its bundled spec (outcome-event scenarios: the events"
                             " spec, whose 3-day horizon wants a sparse history such as --per-day 20000)")
    args = parser.parse_args()
    servers = connect(args.bootstrap).bootstrap
    with tempfile.TemporaryDirectory() as tmp:
        topics = Topics(servers, args.decisions, args.partitions, Path(tmp), args.per_day, args.scenario)
        raw = topics.per_decision(asyncio.run(raw_consume(topics.names, servers, topics.records))[0])
        floor = topics.per_decision(faust_floor(topics.names, servers, topics.records))
        pairs = []
        for run in range(args.pairs):
            pairs.append((workers(topics, 1, run), workers(topics, 2, run)))
        (_, sends, one_cores), (_, _, two_cores) = pairs[0]
        one = statistics.median(first[0] for first, _ in pairs)
        two = statistics.median(second[0] for _, second in pairs)
        alone = replayed(topics)
        print(f"engine: {engine_build()} (the workers inherit this environment: PYTHONPATH=.compiled compiles both)")
        print(f"records: {topics.records:,} for {args.decisions:,} decisions of {args.scenario} ({args.per_day:,} a day"
              " of event time),"
              f" {args.partitions} partitions")
        print(f"{'':44} {'decisions/s':>12} {'÷ worker':>9}")
        for name, rate in [("one worker, end to end", one), ("two workers, end to end", two),
                           ("Faust per-event floor (agents that count)", floor), ("raw aiokafka consume", raw),
                           ("replay in process (engine alone)", alone)]:
            print(f"{name:44} {rate:12,.0f} {rate / one:9.2f}")
        if len(pairs) > 1:
            print("pairs (one worker, two workers, ratio): " + "; ".join(
                f"{first[0]:,.0f}, {second[0]:,.0f}, {second[0] / first[0]:.2f}x" for first, second in pairs)
                + f"; median ratio {statistics.median(second[0] / first[0] for first, second in pairs):.2f}x")
        print(f"one worker >= 20,000 decisions/s: {'met' if one >= 20_000 else 'NOT met'};"
              f" two workers {two / one:.2f}x one, >= 1.6x: {'met' if two >= 1.6 * one else 'NOT met'}")
        print(f"producer sends per input record (one worker, every topic): {sends:.4f}")
        print(f"cores used by the workers (first pair): one {one_cores.workers:.2f}, two {two_cores.workers:.2f};"
              " busy on this"
              f" machine of {os.cpu_count()} (broker and benchmark included): {one_cores.machine:.2f} and"
              f" {two_cores.machine:.2f}")
        found, produced = latency(servers, one / 2, args.partitions, Path(tmp))
        delays = sorted(found)
        p99 = delays[min(len(delays) - 1, int(0.99 * len(delays)))]
        print(f"outcome -> gauge at {produced:,.0f} decisions/s (half of one worker's: {one / 2:,.0f}):"
              f" p50 {statistics.median(delays):.3f} s,"
              f" p99 {p99:.3f} s   target p99 <= 1 s: {'met' if p99 <= 1 else 'NOT met'}")
        print("slowest probes (s): " + ", ".join(f"{d:.3f}" for d in delays[-5:]))


if __name__ == "__main__":
    main()

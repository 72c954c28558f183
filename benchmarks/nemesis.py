"""A seeded nemesis against a group of workers on a real broker, checked against replay of the same topics.

A stream of decisions (with the usual mess) is produced at a steady rate into the input topics while
a group of workers consumes it. A seeded schedule freezes one worker (SIGSTOP past the session
timeout, then SIGCONT) again and again, and SIGKILLs and restarts the others between the freezes; on
request it also rolls every worker (SIGTERM one at a time), produces bursts of unusable records,
pauses the outcome producer while predictions go on, and restarts the broker (one started by
scripts/kafka-up.sh on the port of --bootstrap). The
frozen one is the worker holding the most segments' decisions at the first freeze. Each freeze is
checked to have outlived the session: the other workers took over every input partition while it slept.
At the end, far-future decisions on every partition push each watermark past every horizon, so every
decision must be final. The model is `monitor replay --bootstrap` of
the same topics: the join counts, every segment's totals, and the ids of the complete alerts and of the early
alert events on the alerts topic must equal it exactly.

    python benchmarks/nemesis.py --bootstrap 127.0.0.1:9092 [--seeds 1,2,3,4,5] [--decisions 40000]
                                 [--rate 500] [--freezes 3] [--kills 2] [--rolls 1] [--bursts 1] [--pauses 1]
                                 [--brokers 1]
                                 [--session 10] [--json out.json] [--no-fencing]

Prints one line per run, and exits 1 if any run differs from replay.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kafka.partitioner.default import murmur2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.lagprobe import LagProbe, healthz  # noqa: E402
from monitor.apps.simulate import simulate, write_jsonl  # noqa: E402
from monitor.contract.spec import Spec, load  # noqa: E402
from monitor.testing import edit_spec, free_port  # noqa: E402

TAIL_PER_PARTITION = 16
FAR_FUTURE = 30 * 86_400  # seconds past the stream's last event: beyond any horizon


@dataclass
class Outcome:
    """One nemesis run: what was injected and how the workers' numbers compare with replay's."""

    seed: int
    decisions: int
    records: int
    faults: list[str] = field(default_factory=list)
    workers: dict[str, float] = field(default_factory=dict)  # join counts summed over the workers
    replay: dict[str, float] = field(default_factory=dict)
    totals_differ: list[str] = field(default_factory=list)  # "segment metric: got vs want"
    alerts_missing: list[str] = field(default_factory=list)
    alerts_extra: list[str] = field(default_factory=list)
    early_missing: list[str] = field(default_factory=list)  # early alert events (provisional, then settled)
    early_extra: list[str] = field(default_factory=list)
    early_alerts: tuple[int, int] = (0, 0)  # events on the alerts topic (repeats included), and in replay
    held: dict[int, dict[str, Any]] = field(default_factory=dict)  # per worker's web port, from /healthz at the end
    partitions: dict[int, dict[str, int]] = field(default_factory=dict)  # replay's join counts, per input partition
    notes: list[str] = field(default_factory=list)  # the workers' logged warnings and errors, group noise aside
    recoveries: list[float | None] = field(default_factory=list)  # per fault, from its start: lag under 1 s again
    lasted: list[float] = field(default_factory=list)  # per fault: seconds from its start to its end
    at: list[float] = field(default_factory=list)  # per fault: its start, seconds after the records began to flow
    flowed: float = 0.0  # seconds from the first record produced to the last (the tail's included)
    unsampled: int = 0  # lag samples missed while the broker did not answer
    max_lag: float = 0.0  # the group's largest lag behind the input topics, seconds
    redelivered: dict[str, int] = field(default_factory=dict)  # records and deltas taken twice, skipped
    seconds: float = 0.0

    @property
    def exact(self) -> bool:
        return self.workers == self.replay and not (self.totals_differ or self.alerts_missing or self.alerts_extra
                                                    or self.early_missing or self.early_extra)


class Group:
    """Workers of one consumer group, each a `monitor worker` process with its own web port and log."""

    def __init__(self, spec_path: Path, bootstrap: str, logs: Path) -> None:
        self.spec_path, self.bootstrap, self.logs = spec_path, bootstrap, logs
        self.procs: dict[int, subprocess.Popen[bytes]] = {}  # web port -> process
        self.slots: list[int] = []  # the web port of each worker slot

    def start(self, slot: int | None = None) -> int:
        port = free_port()
        log = (self.logs / f"worker-{port}.log").open("wb")
        self.procs[port] = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "worker", "--spec", str(self.spec_path), "--bootstrap",
             self.bootstrap, "--web-port", str(port), "--snapshot-bytes", "20000",
             "--loglevel", os.environ.get("NEMESIS_LOGLEVEL", "warning")],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if slot is None:
            self.slots.append(port)
        else:
            self.slots[slot] = port
        return port

    def kill(self, slot: int, how: signal.Signals = signal.SIGKILL) -> None:
        """Stop a worker (SIGKILL, or SIGTERM as a deploy does) and start a new one in its slot."""
        proc = self.procs.pop(self.slots[slot])
        proc.send_signal(how)
        proc.wait(timeout=90)
        self.start(slot)

    def roll(self) -> None:
        """A rolling restart: each worker in turn stopped with SIGTERM, replaced, and up before the next."""
        for slot in range(len(self.slots)):
            self.kill(slot, signal.SIGTERM)
            deadline = time.monotonic() + 60
            while not healthz(self.slots[slot]) and time.monotonic() < deadline:
                time.sleep(0.5)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait(timeout=30)


def scrape(port: int) -> list[tuple[str, dict[str, str], float]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return []
    from prometheus_client.parser import text_string_to_metric_families

    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples]


def join_counts(scraped: list[list[tuple[str, dict[str, str], float]]]) -> dict[str, float]:
    counts: Counter[str] = Counter()
    for samples in scraped:
        for name, labels, value in samples:
            if name == "monitor_decisions_total":
                counts[labels["status"]] += value
    return dict(counts)


def totals(scraped: list[list[tuple[str, dict[str, str], float]]]) -> dict[str, float]:
    """Every segment's whole-run values, keyed "segment metric"; a value shown by two workers (a segment
    held twice) is keyed "TWICE segment metric"."""
    found: dict[str, float] = {}
    for samples in scraped:
        for name, labels, value in samples:
            if name in ("monitor_model_metric", "monitor_kpi") and labels.get("window") == "total":
                segment = ",".join(f"{k}={v}" for k, v in sorted(labels.items())
                                   if k not in ("window", "metric", "kpi", "decision"))
                key = f"{segment} {labels.get('metric') or labels['kpi']}"
                found[f"TWICE {key}" if key in found else key] = value
    return found


def tail(spec: Spec, partitions: int, after: float) -> list[dict[str, Any]]:
    """Far-future decisions, `TAIL_PER_PARTITION` on each input partition: every watermark passes every horizon."""
    records: list[dict[str, Any]] = []
    placed: Counter[int] = Counter()
    i = 0
    while min((placed[p] for p in range(partitions)), default=0) < TAIL_PER_PARTITION:
        key = f"tail-{i:05d}"
        i += 1
        p = (murmur2(key.encode()) & 0x7FFFFFFF) % partitions  # kafka-python's default partitioner
        if placed[p] >= TAIL_PER_PARTITION:
            continue
        placed[p] += 1
        ts = after + FAR_FUTURE + i
        ms = round(ts * 1000)
        records.append({"topic": spec.topics.predictions, "key": key, "timestamp": ms, "value": {
            "decision_id": key, "ts": ts, "model": "checkout-propensity", "score": 0.5, "variant": "control",
            "segment": {"country": "US"}}})
        records.append({"topic": spec.topics.outcomes, "key": key, "timestamp": ms + 1, "value": {
            "decision_id": key, "ts": ts + 1, "label": 0, "value": 0.0}})
    return records


def bad_records(spec: Spec, count: int, seed: int) -> list[dict[str, Any]]:
    """A burst of records no reader can use, on both input topics: not JSON, a field missing, a wrong type."""
    rng = random.Random(seed)
    shapes: list[Any] = ["{not json", {"decision_id": "x", "ts": 1.0}, {"decision_id": "x", "ts": "soon",
                                                                         "model": "m", "score": 0.5}, [1, 2, 3]]
    return [{"topic": rng.choice([spec.topics.predictions, spec.topics.outcomes]), "key": f"bad-burst-{seed}-{i}",
             "timestamp": None, "value": shapes[i % len(shapes)]} for i in range(count)]


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "monitor.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"monitor {args[0]} failed: {done.stderr[-2000:]}")
    return done


def alerts_on_topic(spec: Spec, bootstrap: str) -> list[dict[str, Any]]:
    from kafka.consumer.group import KafkaConsumer

    consumer = KafkaConsumer(spec.topics.alerts, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=5_000)
    try:
        return [json.loads(m.value) for m in consumer]
    finally:
        consumer.close()


def busiest(group: Group) -> int:
    """The slot whose worker holds the most decisions in segments other than the overall one."""
    def held(port: int) -> int:
        return sum(n for name, n in healthz(port).get("segments", {}).items() if name != "(all)")
    return max(range(len(group.slots)), key=lambda slot: (held(group.slots[slot]), -slot))


def wait_rebalanced(group: Group, frozen: int, partitions: int, limit: float) -> bool:
    """Whether the workers other than `frozen` came to hold every input partition within `limit` seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        held: set[int] = set()
        for slot, port in enumerate(group.slots):
            if slot != frozen:
                held.update(healthz(port).get("join_partitions", []))
        if held == set(range(partitions)):
            return True
        time.sleep(0.5)
    return False


def settle(group: Group, want: dict[str, float], limit: float) -> list[list[tuple[str, dict[str, str], float]]]:
    """Scrape every worker until the join counts equal `want` and nothing changed for 3 s, or `limit` passes."""
    deadline = time.monotonic() + limit
    last: Any = None
    stable = time.monotonic()
    scraped: list[list[tuple[str, dict[str, str], float]]] = []
    while time.monotonic() < deadline:
        scraped = [scrape(port) for port in group.slots]
        if all(scraped):
            view = (join_counts(scraped), totals(scraped))
            if view != last:
                last, stable = view, time.monotonic()
            elif view[0] == want and time.monotonic() - stable > 3:
                return scraped
        time.sleep(0.5)
    return scraped


@dataclass
class Faults:
    """How many of each fault a run injects, besides the freezes and kills that the schedule interleaves."""

    freezes: int = 3  # of the same worker, each past the session timeout
    kills: int = 2  # SIGKILLs of the other workers, between the freezes
    rolls: int = 0  # rolling restarts of every worker (SIGTERM one at a time)
    bursts: int = 0  # bursts of unusable records on both topics
    pauses: int = 0  # pauses of the outcome producer, longer than a tenth of the horizon in event time
    brokers: int = 0  # restarts of the broker (scripts/kafka-down.sh, then kafka-up.sh: a broker of these scripts)


def restart_broker(bootstrap: str) -> float:
    """Stop the broker with scripts/kafka-down.sh and start it again with kafka-up.sh (its data kept); returns the
    seconds it was away. The producers retry their sends meanwhile; the workers reconnect."""
    env = {**os.environ, "KAFKA_PORT": bootstrap.rsplit(":", 1)[1], "KAFKA_START_TIMEOUT": "150"}
    stopped = time.monotonic()
    subprocess.run(["bash", "scripts/kafka-down.sh"], cwd=ROOT, env=env, check=True, capture_output=True, timeout=90)
    time.sleep(3)
    for _ in range(3):  # on a loaded machine the JVM may start slower than the script waits: it waits again
        up = subprocess.run(["bash", "scripts/kafka-up.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=240)
        if up.returncode == 0:
            return time.monotonic() - stopped
    raise RuntimeError(f"the broker did not come back: {up.stderr[-2000:]}")


def producers(stream_path: Path, spec: Spec, bootstrap: str, rate: float, split: bool,
              work: Path) -> dict[str, subprocess.Popen[bytes]]:
    """`monitor produce` of the stream at `rate` records/s: one process, or with `split` one per input topic
    (at rates in proportion to their records), so that the outcomes alone can be paused."""
    def produce(path: Path, at: float) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "monitor.cli", "produce", "--input", str(path),
                                 "--bootstrap", bootstrap, "--rate", f"{at:g}"], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if not split:
        return {"all": produce(stream_path, rate)}
    lines = stream_path.read_text().splitlines(keepends=True)
    outcomes = [line for line in lines if json.loads(line)["topic"] == spec.topics.outcomes]
    predictions = [line for line in lines if json.loads(line)["topic"] != spec.topics.outcomes]
    found = {}
    for name, kept in (("predictions", predictions), ("outcomes", outcomes)):
        path = work / f"{name}-{stream_path.name}"
        path.write_text("".join(kept))
        found[name] = produce(path, rate * len(kept) / len(lines))
    return found


def run(bootstrap: str, seed: int, decisions: int, rate: float, partitions: int, workers: int, faults: Faults,
        session: float, work: Path, gap: tuple[float, float] = (4.0, 8.0)) -> Outcome:
    started = time.monotonic()
    rng = random.Random(seed)
    tag = uuid.uuid4().hex[:8]
    spec_path = work / f"nemesis-{tag}.toml"
    spec_path.write_text(edit_spec((ROOT / "monitor" / "checkout.toml").read_text(), {
        "decision.name": f"nemesis_{tag}", "topics.predictions": f"p-{tag}", "topics.outcomes": f"o-{tag}",
        "topics.alerts": f"a-{tag}", "topics.dead_letters": f"dl-{tag}", "stream.idle_timeout": "1h",
        "stream.session_timeout": f"{session:g}s", "stream.heartbeat_interval": f"{min(1.0, session / 4):g}s"}))
    spec = load(spec_path)
    cli("topics", "create", "--spec", str(spec_path), "--bootstrap", bootstrap, "--partitions", str(partitions),
        "--retention-ms", "-1")
    names = {"predictions": spec.topics.predictions, "outcomes": spec.topics.outcomes}
    records = simulate("business_drop", decisions, seed=seed)
    for record in records:
        record["topic"] = names.get(str(record["topic"]), record["topic"])
    stream_path, tail_path = work / f"stream-{tag}.jsonl", work / f"tail-{tag}.jsonl"
    write_jsonl(records, stream_path)
    last = max(float(r["value"]["ts"]) for r in records if isinstance(r.get("value"), dict)
               and isinstance(r["value"].get("ts"), (int, float)))
    write_jsonl(tail(spec, partitions, last), tail_path)
    outcome = Outcome(seed, decisions, len(records) + 2 * TAIL_PER_PARTITION * partitions)

    group = Group(spec_path, bootstrap, work)
    running: dict[str, subprocess.Popen[bytes]] = {}
    probe = LagProbe(bootstrap, list(names.values()), partitions, group.slots)
    started_at: list[float] = []  # when each fault began
    try:
        for _ in range(workers):
            group.start()
        time.sleep(session)  # the group forms before records flow
        running = producers(stream_path, spec, bootstrap, rate, faults.pauses > 0, work)
        probe.start()
        flowing = time.monotonic()
        # The schedule: one victim is frozen `freezes` times; the others are killed between freezes. The victim
        # is the worker holding the most segments' decisions at the first freeze: when it thaws, it may take
        # back a metrics partition that carries segments, the case where a frozen worker could miscount. The
        # other faults go in at seeded places among them.
        freezes, kills = faults.freezes, faults.kills
        plan: list[str] = []
        victim_slot: int | None = None
        for i in range(freezes):
            plan += ["kill", "freeze"] if 0 < i <= kills else ["freeze"]
        plan += ["kill"] * max(0, kills - max(0, freezes - 1))
        for action in (["roll"] * faults.rolls + ["burst"] * faults.bursts + ["pause"] * faults.pauses
                       + ["broker"] * faults.brokers):
            plan.insert(rng.randint(0, len(plan)), action)
        # Event time runs ahead of the wall clock: a pause of the outcomes this long lets the predictions run a
        # tenth of the horizon and more ahead of them (at least 3 s).
        event_per_wall = rate * decisions / outcome.records * 86_400 / 20_000
        pause_for = max(3.0, 1.5 * spec.horizon / 10 / event_per_wall)
        for action in plan:
            time.sleep(rng.uniform(*gap))
            started_at.append(time.monotonic())
            outcome.at.append(round(started_at[-1] - flowing, 1))
            if action == "freeze":
                if victim_slot is None:
                    victim_slot = busiest(group)
                victim = group.procs[group.slots[victim_slot]]
                victim.send_signal(signal.SIGSTOP)
                frozen = time.monotonic()
                took_over = wait_rebalanced(group, victim_slot, partitions, max(session * 3, 90.0))  # loaded: slower
                time.sleep(max(0.0, frozen + session * 1.5 - time.monotonic()))
                victim.send_signal(signal.SIGCONT)  # back while records flow, unaware that its partitions moved
                outcome.faults.append(f"freeze slot {victim_slot} ({'rebalanced' if took_over else 'NOT rebalanced'})")
                if not took_over:
                    raise RuntimeError("a freeze did not outlive the session: the group never rebalanced")
            elif action == "roll":
                group.roll()
                outcome.faults.append("rolling restart")
            elif action == "burst":
                burst = work / f"burst-{tag}-{len(outcome.faults)}.jsonl"
                write_jsonl(bad_records(spec, 200, rng.randint(0, 10**6)), burst)
                cli("produce", "--input", str(burst), "--bootstrap", bootstrap)
                outcome.faults.append("burst of 200 bad records")
            elif action == "broker":
                down = restart_broker(bootstrap)
                outcome.faults.append(f"broker restarted ({down:.0f} s down)")
            elif action == "pause":
                paused = running["outcomes"]
                paused.send_signal(signal.SIGSTOP)
                time.sleep(pause_for)
                paused.send_signal(signal.SIGCONT)
                outcome.faults.append(f"outcomes paused {pause_for:.1f} s")
            else:
                slot = rng.choice([s for s in range(workers) if s != victim_slot])
                group.kill(slot)
                outcome.faults.append(f"kill slot {slot}")
            outcome.lasted.append(round(time.monotonic() - started_at[-1], 1))
        for producer in running.values():
            if producer.wait(timeout=decisions / rate * 4 + 300) != 0:
                raise RuntimeError("a producer failed: " + (producer.stderr.read().decode() if producer.stderr else ""))
        cli("produce", "--input", str(tail_path), "--bootstrap", bootstrap)
        produced = time.monotonic()
        outcome.flowed = round(produced - flowing, 1)

        report = work / f"replay-{tag}.json"
        cli("replay", "--spec", str(spec_path), "--bootstrap", bootstrap, "--from", "2000-01-01T00:00:00Z",
            "--to", "2100-01-01T00:00:00Z", "--report", str(report))
        replayed = json.loads(report.read_text())
        join = replayed["join"]
        want = {"matched": join["matched"], "expired": join["expired"], "late": join["late"],
                "duplicate": join["duplicates"], "orphan": join["orphans"], "invalid": join["invalid"]}
        outcome.replay = {k: float(v) for k, v in want.items()}
        scraped = settle(group, outcome.replay, limit=180 + outcome.records / 5000)  # a long run may end behind
        probe.stop()
        ends = [*started_at[1:], max(produced, time.monotonic())]
        outcome.recoveries = [probe.recovery(start, end) for start, end in zip(started_at, ends, strict=True)]
        outcome.max_lag = round(max((lag for _, lag in probe.samples), default=0.0), 1)
        outcome.redelivered = dict(probe.redeliveries.total)
        outcome.unsampled = probe.unreadable
        got = join_counts(scraped)
        outcome.workers = {k: got.get(k, 0.0) for k in want}
        outcome.workers["orphan"] += sum(healthz(port).get("held_outcomes", 0) for port in group.slots)
        outcome.held = {port: {k: healthz(port).get(k) for k in ("join_partitions", "metric_partitions",
                                                                 "join", "fenced_deltas", "stray_deltas",
                                                                 "held_deltas", "skipped_checkpoints")}
                        for port in group.slots}
        outcome.partitions = per_partition(spec, [stream_path, tail_path], partitions, work)
        want_totals = replay_totals(spec, replayed)
        got_totals = totals(scraped)
        for key, value in sorted(want_totals.items()):
            other = got_totals.get(key, math.nan)
            if not (other == value or (math.isnan(other) and math.isnan(value))
                    or abs(other - value) <= 1e-9 * max(1.0, abs(value))):
                outcome.totals_differ.append(f"{key}: {other!r} vs {value!r}")
        outcome.totals_differ += [f"{key}: shown by two workers" for key in got_totals if key.startswith("TWICE ")]
        sent = alerts_on_topic(spec, bootstrap)
        final_ids = {a["id"] for a in sent if "status" not in a}
        want_ids = {a["id"] for a in replayed["alerts"]}
        outcome.alerts_missing = sorted(want_ids - final_ids)
        outcome.alerts_extra = sorted(final_ids - want_ids)
        early_ids = {a["id"] for a in sent if "status" in a}
        want_early = {a["id"] for a in replayed["early_alerts"]}
        outcome.early_missing = sorted(want_early - early_ids)
        outcome.early_extra = sorted(early_ids - want_early)
        outcome.early_alerts = (sum(1 for a in sent if "status" in a), len(replayed["early_alerts"]))
    finally:
        for producer in running.values():  # a run that failed leaves none producing into the next
            if producer.poll() is None:
                producer.send_signal(signal.SIGCONT)
                producer.kill()
        group.close()
        if probe.is_alive():
            probe.stop()
        outcome.notes = notes(work.glob("worker-*.log"))
    outcome.seconds = round(time.monotonic() - started, 1)
    return outcome


NOISE = ("Heartbeat", "OffsetCommit failed", "Thread keepalive is not responding", "coordinator dead",
         "producer buffer full",  # what a frozen worker's group logs each time, and a burst of sends
         "NotLeaderForPartitionError", "NodeNotReadyError", "Unable connect to node", "Unable to update metadata",
         "Connection at", "Failed fetch messages")  # and what every worker logs through a broker restart


def notes(logs: Iterable[Path], limit: int = 40) -> list[str]:
    """The warnings and errors of the workers' logs, group noise aside, each with its log's name; the same
    message from several places counted once per log."""
    found: Counter[str] = Counter()
    for path in sorted(logs):
        for line in path.read_text(errors="replace").splitlines():
            if ("[WARNING]" in line or "[ERROR]" in line or "Traceback" in line) and not any(n in line for n in NOISE):
                found[f"{path.stem}: {line.split('] ', 3)[-1].strip()}"] += 1
    return [f"{line} (x{n})" if n > 1 else line for line, n in list(found.items())[:limit]]


def per_partition(spec: Spec, paths: list[Path], partitions: int, work: Path) -> dict[int, dict[str, int]]:
    """Replay's join counts of each input partition alone (a worker joins each partition by itself)."""
    from monitor.apps.replay import replay

    lines: dict[int, list[str]] = {p: [] for p in range(partitions)}
    for path in paths:
        for line in path.read_text().splitlines():
            key = json.loads(line).get("key")
            p = (murmur2(key.encode()) & 0x7FFFFFFF) % partitions if key is not None else 0
            lines[p].append(line)
    found = {}
    for p, kept in lines.items():
        path = work / f"partition-{p}.jsonl"
        path.write_text("\n".join(kept) + "\n")
        found[p] = replay(spec, path).joiner.counts().as_dict()
    return found


def replay_totals(spec: Spec, report: dict[str, Any]) -> dict[str, float]:
    """The report's whole-run values, keyed as `totals` keys a scrape."""
    found: dict[str, float] = {}
    for segment in report["segments"]:
        if not segment["decisions"]:
            continue
        labels = {by.replace(".", "_"): segment["segment"].get(by, "") for by in spec.segment_by}
        name = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        for metric, value in {**segment["model"], **segment["kpi"]}.items():
            found[f"{name} {metric}"] = math.nan if value is None else float(value)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--seeds", default="1", help="comma-separated; one run each")
    parser.add_argument("--decisions", type=int, default=40_000)
    parser.add_argument("--rate", type=float, default=500.0, help="records produced per second")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--freezes", type=int, default=3, help="of the same worker, each past the session timeout")
    parser.add_argument("--kills", type=int, default=2, help="SIGKILLs of the other workers, between the freezes")
    parser.add_argument("--rolls", type=int, default=0, help="rolling restarts of every worker (SIGTERM in turn)")
    parser.add_argument("--bursts", type=int, default=0, help="bursts of 200 unusable records on both topics")
    parser.add_argument("--pauses", type=int, default=0,
                        help="pauses of the outcome producer past a tenth of the horizon (the topics then produced"
                             " by one process each)")
    parser.add_argument("--brokers", type=int, default=0,
                        help="restarts of the broker, which must be one of scripts/kafka-up.sh on --bootstrap's port")
    parser.add_argument("--gap", default="4,8", help="seconds between two faults: the low and high ends of a"
                        " uniform draw (recovery times need gaps longer than the recoveries)")
    parser.add_argument("--session", type=float, default=10.0, help="the spec's stream.session_timeout, seconds")
    parser.add_argument("--json", type=Path, help="write every run's outcome here")
    parser.add_argument("--no-fencing", action="store_true",
                        help="workers run with every owner in epoch 0 (MONITOR_FAULT=no-fencing): nothing fences a"
                             " frozen worker's late writes, and a run with freezes should then differ from replay")
    args = parser.parse_args()
    if args.no_fencing:
        os.environ["MONITOR_FAULT"] = "no-fencing"  # the workers inherit it
    outcomes = []
    low, high = (float(x) for x in args.gap.split(","))
    gap = (low, high)
    with tempfile.TemporaryDirectory(prefix="nemesis-") as tmp:
        for seed in (int(s) for s in args.seeds.split(",")):
            faults = Faults(args.freezes, args.kills, args.rolls, args.bursts, args.pauses, args.brokers)
            outcome = run(args.bootstrap, seed, args.decisions, args.rate, args.partitions, args.workers, faults,
                          args.session, Path(tmp), gap)
            outcomes.append(outcome)
            diff = {k: outcome.workers.get(k, 0) - v for k, v in outcome.replay.items()
                    if outcome.workers.get(k, 0) != v}
            print(f"seed {seed}: {'exact' if outcome.exact else 'DIFFERS'} in {outcome.seconds} s; "
                  f"{outcome.records} records; faults: {', '.join(outcome.faults)}; join differences {diff}; "
                  f"totals differing {len(outcome.totals_differ)}; alerts missing {len(outcome.alerts_missing)}, "
                  f"extra {len(outcome.alerts_extra)}; early alert events {outcome.early_alerts[0]} sent, replay "
                  f"{outcome.early_alerts[1]}: missing {len(outcome.early_missing)}, extra {len(outcome.early_extra)}; "
                  f"largest lag {outcome.max_lag} s; redelivered {outcome.redelivered}; records flowed for "
                  f"{outcome.flowed} s; lag samples missed (broker away) {outcome.unsampled}", flush=True)
            for fault, at, lasted, recovery in zip(outcome.faults, outcome.at, outcome.lasted, outcome.recoveries,
                                                   strict=False):
                back = "not before the next fault" if recovery is None else f"{recovery:.1f} s from its start"
                print(f"  at {at:.0f} s, {fault}: lasted {lasted:.1f} s; lag under 1 s again {back}", flush=True)
            if not outcome.exact:  # what the workers said is where a cause shows
                print("\n".join(f"  {note}" for note in outcome.notes), flush=True)
            if os.environ.get("NEMESIS_KEEP"):  # every run's logs; a failed run's are what to read
                keep = Path(os.environ["NEMESIS_KEEP"])
                keep.mkdir(parents=True, exist_ok=True)
                for log in Path(tmp).glob("worker-*.log"):
                    log.rename(keep / f"seed{seed}-{log.name}")
                for kept in [*Path(tmp).glob("*.jsonl"), *Path(tmp).glob("*.json"), *Path(tmp).glob("*.toml")]:
                    kept.rename(keep / f"seed{seed}-{kept.name}")  # the stream, the replay report and the spec
    if args.json:
        args.json.write_text(json.dumps([{**asdict(o), "exact": o.exact} for o in outcomes], indent=2))
    return 0 if all(o.exact for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())

"""How far behind the input topics a group of workers is, sampled from outside while faults go on.

Twice a second the probe reads, per input partition, the broker's end offset and the newest offset any
worker has said (on `/healthz`) it took. A group's lag is the age of the oldest record produced but not yet
taken by any worker, over every input partition: 0 when every worker is caught up, and the time since a
record arrived otherwise (to the probe's resolution, half a second). It also adds up the redeliveries the
workers report (records and deltas taken a second time and skipped), keeping the count of a worker that
is then killed.

Used by benchmarks/nemesis.py for the time each fault takes to recover from.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, TopicPartition

EVERY = 0.5  # seconds between samples
RECOVERED = 1.0  # a fault is recovered from once the lag is back under this many seconds


def healthz(port: int, timeout: float = 5.0) -> dict[str, Any]:
    """A worker's /healthz, or {} if it does not answer in time (stopped, frozen, starting)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=timeout) as response:
            return dict(json.loads(response.read()))
    except (OSError, ValueError):
        return {}


@dataclass
class Redeliveries:
    """Redeliveries the workers reported, summed over their lives: a count that drops (a restart, a revoked
    partition) starts a new run of it."""

    last: dict[tuple[int, str], int] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=lambda: {"records": 0, "deltas": 0})

    def update(self, port: int, health: dict[str, Any]) -> None:
        for kind in self.total:
            now = int(health.get(f"redelivered_{kind}", 0))
            before = self.last.get((port, kind), 0)
            self.total[kind] += now - before if now >= before else now
            self.last[(port, kind)] = now


class LagProbe(threading.Thread):
    """Samples a group's lag (see the module's notes) until `stop`; `ports` is read at each sample, so a
    worker restarted in a slot is followed."""

    def __init__(self, bootstrap: str, topics: list[str], partitions: int, ports: list[int]) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topics, self.ports = bootstrap, topics, ports
        self.tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        self.arrived: dict[TopicPartition, deque[tuple[float, int]]] = {tp: deque() for tp in self.tps}
        self.samples: list[tuple[float, float]] = []  # (monotonic time, lag in seconds)
        self.taken: dict[TopicPartition, int] = {}  # the newest offset any worker has said it took, ever
        self.redeliveries = Redeliveries()
        self.unreadable = 0  # samples the broker did not answer (a broker restart)
        self.error = ""  # the last reason it did not
        self._halt = threading.Event()

    def run(self) -> None:
        consumer: KafkaConsumer | None = None
        while not self._halt.wait(EVERY):
            try:
                consumer = consumer or KafkaConsumer(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
                ends = consumer.end_offsets(self.tps)
            except Exception as exc:  # the broker is away: no sample until it is back
                self.unreadable += 1
                self.error = repr(exc)
                if consumer is not None:
                    consumer.close()
                consumer = None
                continue
            self.sample(time.monotonic(), ends, {port: healthz(port, timeout=1.0) for port in list(self.ports)})
        if consumer is not None:
            consumer.close()

    def sample(self, now: float, ends: dict[TopicPartition, int], healths: dict[int, dict[str, Any]]) -> None:
        taken = self.taken
        for port, health in healths.items():
            self.redeliveries.update(port, health)
            for partition, offsets in health.get("offsets", {}).items():
                for topic, offset in offsets.items():
                    tp = TopicPartition(topic, int(partition))
                    taken[tp] = max(taken.get(tp, -1), offset)
        lag = 0.0
        for tp in self.tps:
            arrived = self.arrived[tp]
            if not arrived or ends[tp] > arrived[-1][1]:
                arrived.append((now, ends[tp]))  # records up to this end offset had arrived by now
            oldest = taken.get(tp, -1) + 1  # the first offset no worker has taken
            while len(arrived) > 1 and arrived[1][1] <= oldest:
                arrived.popleft()  # every record that had arrived by then is taken
            if oldest < ends[tp]:
                first = next(t for t, end in arrived if end > oldest)
                lag = max(lag, now - first)
        self.samples.append((now, lag))

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)

    def recovery(self, start: float, until: float) -> float | None:
        """Seconds from `start` (a fault's) to the last sample before `until` with the lag at or over
        `RECOVERED`, given that the lag is under it after; 0 if it never reached it; None if it was not back
        under it by `until` (the next fault came first, or the run ended)."""
        window = [(t, lag) for t, lag in self.samples if start <= t < until]
        over = [t for t, lag in window if lag >= RECOVERED]
        if not over:
            return 0.0
        if window[-1][1] >= RECOVERED:
            return None
        return over[-1] - start + EVERY  # back under between that sample and the next

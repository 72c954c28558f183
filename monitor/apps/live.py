"""A live simulated stream: the simulator's decisions, outcomes and mess, sent as they happen.

`Plan` draws decisions a chunk at a time with `simulate.draw` (the same world as the batch
simulator), a little ahead of the clock, and keeps every record in a heap by the moment it is due:
a prediction at its decision time, an outcome once its delay has passed, a duplicate when it is
re-sent. `run` sends each record when it falls due, with the current time as its event time, until
its deadline or until it is asked to stop.

Delays are drawn for a 6 h horizon (median 30 min). For a spec with a shorter horizon they shrink by
`horizon / 6h` (at least 1 s), so outcomes keep the same shape relative to the horizon: with
`horizon = "5m"` the median delay is 25 s and about 0.65% of outcomes still come after the horizon.
The producer's own lags (jitter, re-sends, early outcomes' late predictions) are not scaled.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

import numpy as np

from monitor.apps.simulate import Numbering, Record, check_scenario, draw, encode, reference_horizon

CHUNK = 1000  # decisions per draw: enough that each draw carries its share of duplicates, orphans and bad records
LOOKAHEAD = 1.0  # seconds: decisions are drawn this far ahead of the clock
MIN_WAIT = 1e-4  # seconds: a record may go out this much late, so that time always moves on
MAX_WAIT = 1.0  # seconds between wake-ups when nothing is due, so a deadline or a stop is seen soon
REPORT_EVERY = 60.0  # seconds between progress lines


class Sink(Protocol):
    """Where records go: kafka-python's `KafkaProducer` fits."""

    def send(self, topic: str, *, key: bytes | None, value: bytes, timestamp_ms: int) -> object: ...


class Clock(Protocol):
    """Wall-clock time, and a wait that a stop request cuts short."""

    def time(self) -> float: ...

    def wait(self, seconds: float) -> bool:
        """Wait up to `seconds`; True once a stop was asked for."""
        ...


class WallClock:
    """The real clock; `stop()` (from a signal handler, say) ends the current and every later wait."""

    def __init__(self) -> None:
        self._stop = threading.Event()

    def time(self) -> float:
        return time.time()

    def wait(self, seconds: float) -> bool:
        return self._stop.wait(seconds)

    def stop(self) -> None:
        self._stop.set()


def delay_scale(horizon: float, scenario: str = "healthy") -> float:
    """The factor that fits the simulator's delays to a spec's horizon."""
    return horizon / reference_horizon(scenario)


class Plan:
    """The records of a live run, drawn ahead of the clock and handed out when due.

    >>> plan = Plan("healthy", rate=50, seed=1, start=1000.0, change_after=60)
    >>> [r["key"] for r in plan.due(1000.2)]  # in arrival order: the producer's jitter reorders
    ['d-0000001', 'd-0000000', 'd-0000003', 'd-0000004', 'd-0000002']
    >>> plan.planned  # one draw of 1000 decisions covers about 20 s
    1020.168
    """

    def __init__(self, scenario: str, rate: float, seed: int, start: float, change_after: float,
                 delay_scale: float = 1.0, tag: str = "") -> None:
        check_scenario(scenario)
        if rate <= 0 or change_after < 0 or delay_scale <= 0:
            raise ValueError(f"need rate > 0, change_after >= 0 and delay_scale > 0, got {rate}, {change_after}"
                             f" and {delay_scale}")
        self.scenario, self.rate, self.delay_scale = scenario, rate, delay_scale
        self.start, self.change_at = start, start + change_after
        self.planned = start  # decisions are drawn up to this time
        self._rng = np.random.default_rng(seed)
        self._numbering = Numbering(tag=tag)
        self._heap: list[tuple[float, int, Record]] = []
        self._sequence = 0

    def due(self, now: float) -> list[Record]:
        """The records due by `now`, in the order they fall due; draws more decisions when needed."""
        while self.planned - LOOKAHEAD <= now:  # the same sum as in next_due, so the two always agree
            self._draw()
        ready = []
        while self._heap and self._heap[0][0] <= now:
            ready.append(heapq.heappop(self._heap)[2])
        return ready

    def next_due(self) -> float:
        """When the next record falls due, or the next draw is needed, whichever comes first."""
        upcoming = self.planned - LOOKAHEAD
        return min(self._heap[0][0], upcoming) if self._heap else upcoming

    def waiting(self) -> int:
        """Records drawn and not yet due: mostly outcomes waiting for their delay."""
        return len(self._heap)

    def _draw(self) -> None:
        change_at = self.change_at
        records, arrivals = draw(self.scenario, CHUNK, self._rng, self.planned, 1.0 / self.rate,
                                 changed=lambda ts: ts >= change_at, delay_scale=self.delay_scale,
                                 numbering=self._numbering)
        order = np.argsort(arrivals, kind="stable")
        for i in order.tolist():
            heapq.heappush(self._heap, (int(arrivals[i]) / 1000, self._sequence, records[i]))
            self._sequence += 1
        last = records[CHUNK - 1]["value"]  # the predictions come first, in decision order
        assert isinstance(last, dict)
        self.planned = float(last["ts"])


def run(plan: Plan, sink: Sink, clock: Clock, *, topics: dict[str, str] | None = None,
        until: float | None = None, say: Callable[[str], None] = lambda _: None) -> Counter[str]:
    """Send each record of `plan` to `sink` when it falls due; returns the records sent per topic.

    Ends at `until` (clock time) or when the clock's wait reports a stop. `topics` renames the
    simulator's `predictions` and `outcomes` to a spec's topic names."""
    topics = topics or {}
    sent: Counter[str] = Counter()
    changed = plan.scenario == "healthy"
    next_report = plan.start + REPORT_EVERY
    while True:
        now = clock.time()
        if until is not None and now >= until:
            break
        for record in plan.due(now):
            topic, stamp = str(record["topic"]), record["timestamp"]
            assert isinstance(stamp, int)
            sink.send(topics.get(topic, topic), key=str(record["key"]).encode(), value=encode(record["value"]),
                      timestamp_ms=stamp)
            sent[topic] += 1
        if not changed and now >= plan.change_at:
            changed = True
            say(f"{plan.scenario}: decisions from {_clock(plan.change_at)} on are degraded")
        if now >= next_report:
            next_report += REPORT_EVERY
            say(f"sent {sent['predictions']:,} predictions and {sent['outcomes']:,} outcomes;"
                f" {plan.waiting():,} records waiting")
        wake = plan.next_due() if until is None else min(plan.next_due(), until)
        if clock.wait(min(max(wake - clock.time(), MIN_WAIT), MAX_WAIT)):
            break
    return sent


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M:%S UTC")

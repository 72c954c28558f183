"""Helpers for testing code that uses the monitor: a stream builder, in-memory sinks, a spec
editor, and the streaming worker on in-memory tables and topics."""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import socket
import time
import tomllib
import urllib.request
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import orjson
import tomli_w

from monitor.apps.simulate import encode
from monitor.contract.report import Report
from monitor.contract.spec import Spec
from monitor.engine.alerts import Alert
from monitor.engine.intake import DeadLetter
from monitor.engine.monitor import Monitor, report
from monitor.stream.join_stage import CHECKPOINT_SECONDS
from monitor.stream.store import Write
from monitor.stream.worker import Worker

__all__ = ["Fetched", "InMemoryWorker", "Memory", "Record", "Sample", "Sink", "Stream", "Topics", "edit_spec", "encode",
           "engine_build", "eventually", "free_port", "join_counts", "require", "same", "samples", "scrape",
           "worker_totals"]

Record = tuple[str, int, int, bytes] | tuple[str, int, int, bytes, int | None, bytes | None]  # + timestamp, key


class Stream:
    """Builds Kafka-style records in arrival order.

    >>> s = Stream().predict("a", ts=100.0, score=0.9).outcome("a", ts=160.0, label=1)
    >>> [r["topic"] for r in s.records]
    ['predictions', 'outcomes']
    """

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def predict(self, decision_id: str, ts: float | str, score: float, model: str = "m",
                **optional: Any) -> Stream:
        value = {"decision_id": decision_id, "ts": ts, "model": model, "score": score, **optional}
        return self.raw("predictions", value, key=decision_id, ts=ts)

    def outcome(self, decision_id: str, ts: float | str, label: float, **optional: Any) -> Stream:
        value = {"decision_id": decision_id, "ts": ts, "label": label, **optional}
        return self.raw("outcomes", value, key=decision_id, ts=ts)

    def raw(self, topic: str, value: Any, key: str | None = None, ts: float | str | None = None) -> Stream:
        """Any value: a dict or list becomes JSON, a str is taken as raw (possibly broken) bytes."""
        stamp = int(ts * 1000) if isinstance(ts, (int, float)) else None
        self.records.append({"topic": topic, "key": key, "timestamp": stamp, "value": value})
        return self

    def feed(self, monitor: Monitor) -> Monitor:
        for record in self.records:
            monitor.process(record["topic"], encode(record["value"]))
        monitor.finish()
        return monitor

    def write(self, path: Path) -> Path:
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in self.records))
        return path


class Sink:
    """Collects alerts and dead letters in memory."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self.dead_letters: list[DeadLetter] = []

    def alert(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def dead_letter(self, letter: DeadLetter) -> None:
        self.dead_letters.append(letter)


def engine_build() -> str:
    """Which engine this interpreter imports: "compiled" (MONITOR_COMPILE=1, setup.py) or "pure Python"."""
    from monitor.engine import join

    return "pure Python" if (join.__file__ or "").endswith(".py") else "compiled"


def same(a: object, b: object) -> bool:
    """`a == b`, with NaN equal to NaN. Containers compare NaN by identity first, and a compiled engine
    returns a new NaN object each time where the pure-Python one returns `math.nan` itself."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and type(a) is type(b):
        return len(a) == len(b) and all(map(same, a, b))
    return a == b


def edit_spec(text: str, changes: Mapping[str, object]) -> str:
    """Rewrite spec TOML with `changes` keyed by dotted paths: missing tables are made, `None` deletes the key.

    A number in a path picks one table of an array such as `[[kpi]]`. Values are written as given, valid or
    not, so a test can also build a spec that is wrong on purpose. Comments and layout are not kept.

    >>> text = '[decision]\\nname = "checkout_offer"\\n[[kpi]]\\nname = "conversion"\\nfield = "label"\\n'
    >>> print(edit_spec(text, {"decision.name": "x", "kpi.0.field": None, "outcome.horizon": "10s"}))
    kpi = [
        { name = "conversion" },
    ]
    <BLANKLINE>
    [decision]
    name = "x"
    <BLANKLINE>
    [outcome]
    horizon = "10s"
    <BLANKLINE>
    """
    document = tomllib.loads(text)
    for path, value in changes.items():
        *parents, last = path.split(".")
        node: Any = document
        for part in parents:
            key = _key(node, part, path)
            node = node.setdefault(key, {}) if isinstance(node, dict) else node[key]
        key = _key(node, last, path)
        if value is not None:
            node[key] = value
        elif isinstance(node, dict) and key not in node:
            raise ValueError(f"cannot delete {path!r}: the spec has no such key")
        else:
            del node[key]
    return tomli_w.dumps(document)


def _key(node: object, part: str, path: str) -> int | str:
    """`part` as a key of `node`: a name in a table, an index in an array."""
    if isinstance(node, dict):
        return part
    if not isinstance(node, list):
        raise ValueError(f"cannot edit {path!r}: {part!r} would be under {node!r}, which is not a table")
    if not part.isdigit() or int(part) >= len(node):
        raise ValueError(f"cannot edit {path!r}: {part!r} is not an index of an array of {len(node)}")
    return int(part)


T = TypeVar("T")


def eventually(probe: Callable[[], T | None], timeout: float, what: str, every: float = 0.2,
               alive: Callable[[], bool] | None = None, context: Callable[[], str] | None = None) -> T:
    """`probe()`'s first truthy answer, asked every `every` seconds for up to `timeout` seconds.

    Raises AssertionError naming `what` (and, when given, `context()`: a log tail, the last values)
    once the time is up, or at once when `alive()` says the thing waited on has stopped."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        stopped = alive is not None and not alive()
        if stopped or time.monotonic() >= deadline:
            why = "it stopped first" if stopped else f"not within {timeout:g} s"
            raise AssertionError(f"{what}: {why}" + (f"\n{context()}" if context is not None else ""))
        time.sleep(every)


def require(tool: str, *alternatives: str) -> str:
    """The path of a command a test needs (`tool`, or the first of `alternatives` found: another name for it).

    When none is installed, the test is skipped; or failed, where the full run requires every tool
    (`MONITOR_REQUIRE_KAFKA`, set by scripts/test.sh, which installs them)."""
    import pytest

    for name in (tool, *alternatives):
        found = shutil.which(name)
        if found is not None:
            return found
    if os.environ.get("MONITOR_REQUIRE_KAFKA"):
        pytest.fail(f"{tool} is not installed, yet the tests that need it are required (scripts/test.sh installs it)")
    pytest.skip(f"{tool} is not installed (scripts/test.sh installs it)")


Sample = tuple[str, dict[str, str], float]  # a metric sample: name, labels, value


def samples(text: str) -> list[Sample]:
    """The samples of a Prometheus text exposition, read by prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples]


def scrape(port: int, path: str = "/metrics", **headers: str) -> list[Sample]:
    """The samples a web port on 127.0.0.1 serves now; none while it does not answer."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return []
    return samples(text)


def join_counts(scraped: list[list[Sample]]) -> dict[str, float]:
    """The join counts that workers' scrapes add up to (`monitor_decisions_total` by status, and pending)."""
    counts: dict[str, float] = {}
    for found in scraped:
        for name, labels, value in found:
            if name == "monitor_decisions_total":
                counts[labels["status"]] = counts.get(labels["status"], 0) + value
            elif name == "monitor_pending_decisions":
                counts["pending"] = counts.get("pending", 0) + value
    return counts


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _done() -> asyncio.Future[None]:
    """An awaitable that has already resolved: an in-memory write is durable at once."""
    future = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


class Memory(dict[bytes, bytes]):
    """A table whose writes are durable at once."""

    def write(self, partition: int, writes: list[Write]) -> list[Awaitable[Any]]:
        for key, value in writes:
            if value is None:
                self.pop(key, None)
            else:
                self[key] = value
        return [_done()]


class Topics:
    """The internal topic as a queue; dead letters and alerts as lists. `drop` loses deltas and alerts
    (a crash); `refuse_alerts` fails every alert send."""

    def __init__(self) -> None:
        self.queue: deque[tuple[int, bytes]] = deque()
        self.sent: list[tuple[int, bytes]] = []
        self.dead_letters: list[DeadLetter] = []
        self.alerts: list[dict[str, Any]] = []
        self.drop = False
        self.refuse_alerts = False

    def delta(self, partition: int, raw: bytes) -> Awaitable[Any]:
        if self.drop:  # the process dies with the send in flight: never confirmed
            return asyncio.get_running_loop().create_future()
        self.queue.append((partition, raw))
        self.sent.append((partition, raw))
        return _done()

    def dead_letter(self, letter: DeadLetter) -> Awaitable[Any]:
        self.dead_letters.append(letter)
        return _done()

    def alert(self, alert_id: str, raw: bytes) -> Awaitable[Any]:
        if self.drop or self.refuse_alerts:  # the process dies with the send in flight, or the broker says no
            failed = asyncio.get_running_loop().create_future()
            failed.set_exception(ConnectionError("the alerts topic did not confirm"))
            return failed
        self.alerts.append(orjson.loads(raw))
        return _done()


class Fetched(NamedTuple):
    """A record as a Kafka fetch returns it, for the worker's batch intake."""
    offset: int
    value: bytes | None
    timestamp: int | None = None
    key: bytes | None = None


def worker_totals(worker: Worker) -> dict[tuple[str, ...], dict[str, Any]]:
    """A worker's whole-run totals of every segment that has decisions, by segment key."""
    found = {}
    for rollup in worker.rollups():
        for segment, total in rollup.totals().items():
            if total["decisions"]:
                found[rollup.key(segment)] = total
    return found


class InMemoryWorker:
    """The shipped streaming `Worker` on in-memory tables and topics, fed record by record on a
    simulated clock: every delta reaches the metrics stage before the next record is taken."""

    def __init__(self, spec: Spec, stores: tuple[Memory, Memory], sources: int = 1,
                 snapshot_min_bytes: int = 1 << 20, checkpoint_seconds: float = CHECKPOINT_SECONDS,
                 batch: int = 1) -> None:
        self.spec = spec
        self.batch = batch  # records per fetch at most: runs of one topic and partition are taken together
        self.loop = asyncio.new_event_loop()  # one loop for the worker's whole life, as in Faust
        self.clock = 0.0
        self.topics = Topics()
        self.acked: set[tuple[str, int, int]] = set()  # deltas of the metrics stage
        self.commits: dict[tuple[str, int], int] = {}  # input partitions: the offset Kafka may commit through
        self.worker = Worker(spec, stores[0], stores[1], self.topics, sources, snapshot_min_bytes,
                             clock=lambda: self.clock, checkpoint_seconds=checkpoint_seconds)

    def feed(self, records: list[Record], clock: float | None = None) -> float:
        return self.loop.run_until_complete(self._feed(records, clock))

    async def _feed(self, records: list[Record], clock: float | None) -> float:
        if clock is not None:
            self.clock = clock
        for topic, partition, batch in _batches(records, self.batch):
            self.clock += 0.001 * len(batch)
            await self.worker.records(topic, partition, batch, self.committer(topic, partition))
            await self.deliver()
        return self.clock

    async def deliver(self) -> None:
        """Let background saves finish, and hand every delta sent to the metrics stage."""
        while self.worker.tasks or self.topics.queue:
            if self.worker.tasks:  # a failed one is logged by the worker and leaves its records unacked
                await asyncio.gather(*list(self.worker.tasks), return_exceptions=True)
            while self.topics.queue:
                q, raw = self.topics.queue.popleft()
                await self.worker.delta(q, raw, self._ack("decisions", q, -1))

    def redeliver(self, deltas: list[tuple[int, bytes]]) -> None:
        async def again() -> None:
            self.topics.queue.extend(deltas)
            await self.deliver()
            await self.worker.save_all()
        self.loop.run_until_complete(again())

    def finish(self, clock: float) -> None:
        async def settle() -> None:
            self.clock = clock
            await self.worker.settle()
            await self.deliver()
            await self.worker.save_all()  # the merges of the deltas delivered last
        self.loop.run_until_complete(settle())

    def crash_after_checkpoint(self) -> None:
        """Every partition checkpoints durably, then the worker dies before its deltas leave."""
        async def cut() -> None:
            self.topics.drop = True
            for partition in list(self.worker.join.partitions):
                await self.worker.checkpoint(partition, self.clock, force=True)
            for _ in range(10):  # the logs become durable; the deltas hang
                await asyncio.sleep(0)
            for task in self.worker.tasks:
                task.cancel()
            await asyncio.gather(*self.worker.tasks, return_exceptions=True)
        self.loop.run_until_complete(cut())

    def totals(self) -> dict[tuple[str, ...], dict[str, Any]]:
        return worker_totals(self.worker)

    def report(self) -> Report:
        join = self.worker.join
        return report(self.spec, join.counts(), join.reasons(), self.worker.rollups(), join.event_counts())

    def committed(self, topic: str, partition: int, offset: int) -> bool:
        """Whether Kafka may commit this input record."""
        return offset <= self.commits.get((topic, partition), -1)

    def committer(self, topic: str, partition: int) -> Callable[[int], Awaitable[None]]:
        async def commit(offset: int) -> None:
            self.commits[topic, partition] = max(offset, self.commits.get((topic, partition), -1))
        return commit

    def _ack(self, topic: str, partition: int, offset: int) -> Callable[[], Awaitable[None]]:
        async def ack() -> None:
            self.acked.add((topic, partition, offset))
        return ack


def _batches(records: list[Record], most: int) -> list[tuple[str, int, list[Fetched]]]:
    """Runs of consecutive records of one topic and partition, at most `most` records each: batches
    as a fetch brings them, in the order of the records given."""
    found: list[tuple[str, int, list[Fetched]]] = []
    for record in records:
        topic, partition, fetched = record[0], record[1], Fetched(*record[2:])
        if found and found[-1][:2] == (topic, partition) and len(found[-1][2]) < most:
            found[-1][2].append(fetched)
        else:
            found.append((topic, partition, [fetched]))
    return found

"""The streaming stages without a broker: parity with replay, restarts and redeliveries."""

from __future__ import annotations

import math
import zlib
from typing import Any

import pytest

from monitor.apps.simulate import simulate
from monitor.contract import spec as specs
from monitor.contract.spec import Spec
from monitor.engine.monitor import Monitor
from monitor.stream.stages import JoinStage, ReduceStage
from monitor.testing import Stream, encode

REDUCERS = 3


class Worker:
    """Both stages wired as the Faust app wires them, over in-memory stores, on a simulated clock."""

    def __init__(self, spec: Spec, stores: tuple[dict[bytes, bytes], dict[bytes, bytes]], sources: int = 1,
                 snapshot_min_bytes: int = 1 << 20) -> None:
        self.join_store, self.metrics_store = stores
        self.join = JoinStage(spec, self.join_store, REDUCERS, snapshot_min_bytes)
        self.reduce = ReduceStage(spec, sources, self.metrics_store)
        self.sent: list[tuple[int, bytes]] = []  # every delta, in order

    def feed(self, records: list[tuple[str, int, int, bytes]], clock: float = 0.0) -> float:
        for topic, partition, offset, value in records:
            clock += 0.001
            self.join.process(topic, partition, offset, value, now=clock)
            if self.join.due(partition, clock):
                self.checkpoint(partition, clock)
        return clock

    def checkpoint(self, partition: int, clock: float, deliver: bool = True) -> None:
        done = self.join.checkpoint(partition, clock)
        write(self.join_store, done.log)
        if not deliver:  # a crash before the deltas left, so before any compaction
            return
        for q, raw in done.deltas:
            self.sent.append((q, raw))
            write(self.metrics_store, self.reduce.handle(q, raw))
        write(self.join_store, done.compaction)

    def finish(self, clock: float) -> None:
        for partition in list(self.join.partitions):
            self.checkpoint(partition, clock)

    def totals(self) -> dict[tuple[str, ...], dict[str, Any]]:
        found = {}
        for rollup in self.reduce.rollups.values():
            for segment, total in rollup.totals().items():
                if total["decisions"]:
                    found[rollup.segments.key(segment)] = total
        return found


def write(store: dict[bytes, bytes], writes: list[tuple[bytes, bytes | None]]) -> None:
    for key, value in writes:
        if value is None:
            store.pop(key, None)
        else:
            store[key] = value


def records(scenario: str, n: int, partitions: int = 1) -> list[tuple[str, int, int, bytes]]:
    offsets: dict[tuple[str, int], int] = {}
    found = []
    for r in simulate(scenario, n, seed=9):
        topic = str(r["topic"])
        partition = zlib.crc32(str(r["key"]).encode()) % partitions
        offset = offsets[(topic, partition)] = offsets.get((topic, partition), -1) + 1
        found.append((topic, partition, offset, encode(r["value"])))
    return found


def fresh() -> tuple[dict[bytes, bytes], dict[bytes, bytes]]:
    return {}, {}


def assert_same_totals(got: dict[tuple[str, ...], dict[str, Any]], want: dict[tuple[str, ...], dict[str, Any]]) -> None:
    assert got.keys() == want.keys()
    for key, total in want.items():
        assert got[key]["decisions"] == total["decisions"], key
        for side in ("model", "kpi"):
            for name, value in total[side].items():
                other = got[key][side][name]
                assert (math.isnan(value) and math.isnan(other)) or other == pytest.approx(value, rel=1e-9), name


def test_one_partition_equals_replay(spec: Spec) -> None:
    stream = records("business_drop", 20_000)
    monitor = Monitor(spec)
    for topic, _, _, value in stream:
        monitor.process(topic, value)
    worker = Worker(spec, fresh())
    worker.finish(worker.feed(stream))
    want_counts = monitor.joiner.counts()
    got_counts = worker.join.counts()
    assert got_counts == want_counts
    want = {monitor.segments.key(s): t for s, t in monitor.totals().items() if t["decisions"]}
    assert_same_totals(worker.totals(), want)
    windows = sum(len(r.timeline.get(s, [])) for r in worker.reduce.rollups.values() for s in r.timeline)
    assert windows == sum(len(t) for t in monitor.timeline.values())
    assert [a.kind for a in sorted(monitor.alerts, key=lambda a: (a.at, a.kind))] == [
        a.kind for a in sorted((a for r in worker.reduce.rollups.values() for a in r.alerts),
                               key=lambda a: (a.at, a.kind))]


@pytest.mark.parametrize("partitions", [1, 4])
@pytest.mark.parametrize("snapshot_min_bytes", [1 << 20, 20_000])
def test_restart_with_redelivery_counts_nothing_twice(spec: Spec, partitions: int, snapshot_min_bytes: int) -> None:
    stream = records("model_rot", 12_000, partitions)
    whole = Worker(spec, fresh(), sources=partitions)
    whole.finish(whole.feed(stream))

    stores = fresh()
    first = Worker(spec, stores, sources=partitions, snapshot_min_bytes=snapshot_min_bytes)
    cut = len(stream) // 2
    clock = first.feed(stream[:cut])
    for partition in first.join.partitions:  # a crash once the checkpoints were durable, before their deltas left
        first.checkpoint(partition, clock, deliver=False)
    # A restart: state only from the stores.
    second = Worker(spec, stores, sources=partitions, snapshot_min_bytes=snapshot_min_bytes)
    clock = second.feed(stream[cut - 700:], clock)  # records not yet acked are delivered again
    for q, raw in first.sent[-20:]:  # and so are the last deltas of the metrics stage
        write(second.metrics_store, second.reduce.handle(q, raw))
    second.finish(clock)
    assert second.join.counts() == whole.join.counts()
    assert_same_totals(second.totals(), whole.totals())
    assert second.reduce.rollups.keys() == whole.reduce.rollups.keys()
    if snapshot_min_bytes < 1 << 20:
        assert any(key.endswith(b"/head") for key in stores[0])  # compaction ran
        assert sum(b"/log/" in key for key in stores[0]) < 40


def test_quiet_partition_expires_by_wall_clock(spec_text: str) -> None:
    quick = specs.parse(spec_text.replace('horizon = "6h"', 'horizon = "10s"') + '[stream]\nidle_timeout = "2s"\n')
    built = Stream()
    for i in range(5):
        built.predict(f"d{i}", 1000.0 + i, 0.7, variant="a")
    built.outcome("d0", 1003.0, label=1)
    worker = Worker(quick, fresh())
    feed = [(str(r["topic"]), 0, n, encode(r["value"])) for n, r in enumerate(built.records)]
    worker.finish(worker.feed(feed, clock=50.0))
    assert worker.join.counts().pending == 4  # the outcomes topic stopped at 1003: nothing expires by itself
    worker.join.tick(0, now=51.0)  # quiet, but not for long enough
    assert worker.join.counts().pending == 4
    worker.join.tick(0, now=60.5)  # quiet for 10.5 s: the watermark follows, to about 1013.5
    assert worker.join.due(0, now=60.5)
    worker.checkpoint(0, 60.5)
    counts = worker.join.counts()
    assert (counts.matched, counts.expired, counts.pending) == (1, 3, 1)  # d4 is due at 1014
    assert worker.totals()[()]["decisions"] == 4

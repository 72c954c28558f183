"""The streaming stages without a broker: parity with replay, restarts and redeliveries."""

from __future__ import annotations

import math
import zlib
from typing import Any

import pytest

from monitor import wire
from monitor.engine import Monitor
from monitor.simulate import simulate
from monitor.spec import Spec
from monitor.stream import JoinStage, JoinStores, ReduceStage, segment_key
from monitor.testing import encode

REDUCERS = 3


class Worker:
    """Both stages wired as the Faust app wires them, over in-memory stores."""

    def __init__(self, spec: Spec, stores: JoinStores, finals: dict[bytes, bytes], sources: int = 1) -> None:
        self.join = JoinStage(spec, stores)
        self.reduce = ReduceStage(spec, sources, finals)
        self.sources = sources

    def feed(self, records: list[tuple[str, int, int, bytes]]) -> None:
        for topic, partition, offset, value in records:
            out = self.join.process(topic, partition, offset, value, now=0.0)
            for final in out.finals:
                self.reduce.handle(zlib.crc32(segment_key(final)) % REDUCERS, wire.encode(final))

    def heartbeat(self) -> None:
        for source, watermark in self.join.watermarks().items():
            for partition in range(REDUCERS):
                self.reduce.handle(partition, wire.encode(wire.Heartbeat(source, watermark)))

    def totals(self) -> dict[tuple[str, ...], dict[str, Any]]:
        found = {}
        for rollup in self.reduce.rollups.values():
            for segment, total in rollup.totals().items():
                if total["decisions"]:
                    found[rollup.segments.key(segment)] = total
        return found


def records(scenario: str, n: int, partitions: int = 1) -> list[tuple[str, int, int, bytes]]:
    offsets: dict[tuple[str, int], int] = {}
    found = []
    for r in simulate(scenario, n, seed=9):
        topic = str(r["topic"])
        partition = zlib.crc32(str(r["key"]).encode()) % partitions
        offset = offsets[(topic, partition)] = offsets.get((topic, partition), -1) + 1
        found.append((topic, partition, offset, encode(r["value"])))
    return found


def fresh() -> tuple[JoinStores, dict[bytes, bytes]]:
    return JoinStores({}, {}, {}, {}), {}


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
    worker = Worker(spec, *fresh())
    worker.feed(stream)
    worker.heartbeat()
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
def test_restart_with_redelivery_counts_nothing_twice(spec: Spec, partitions: int) -> None:
    stream = records("model_rot", 12_000, partitions)
    whole = Worker(spec, *fresh(), sources=partitions)
    whole.feed(stream)
    whole.heartbeat()

    stores, finals = fresh()
    first = Worker(spec, stores, finals, sources=partitions)
    cut = len(stream) // 2
    first.feed(stream[:cut])
    first.heartbeat()
    second = Worker(spec, stores, finals, sources=partitions)  # a restart: state only from the stores
    second.feed(stream[cut - 700:])  # the last uncommitted records are delivered again
    second.heartbeat()
    assert second.join.counts() == whole.join.counts()
    assert_same_totals(second.totals(), whole.totals())
    assert second.reduce.rollups.keys() == whole.reduce.rollups.keys()

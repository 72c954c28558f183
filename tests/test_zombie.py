"""A zombie owner: a worker frozen past its session timeout wakes up and writes as the owner it no longer is.

The shipped `Worker` on shared in-memory tables and one decisions log, on one event loop. The
zombie's writes and sends are held while it is frozen and land after the new owner has restored;
then it goes on taking the records it had fetched, cutting checkpoints, merging and saving, until it
hears of the rebalance. The new owner, and a third owner restoring after both, must end with exactly
the numbers of a worker that was never interrupted. With the epochs switched off (every owner in
epoch 0, no fences) the same schedule loses or doubles decisions: the test checks that too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from monitor.contract.spec import Spec
from monitor.engine.intake import DeadLetter
from monitor.stream.store import Write
from monitor.stream.worker import Worker
from monitor.testing import Fetched, InMemoryWorker, Memory, Record, worker_totals
from tests.test_stream import assert_same_totals, fresh, records


class Producer:
    """One worker's writes and sends: they land at once, or, while it is frozen, when it thaws."""

    def __init__(self, log: list[tuple[int, bytes]]) -> None:
        self.log = log  # the decisions topic, shared by every worker
        self.frozen = False
        self.held: list[tuple[Callable[[], None], asyncio.Future[None]]] = []

    def send(self, land: Callable[[], None]) -> Awaitable[Any]:
        future = asyncio.get_running_loop().create_future()
        if self.frozen:
            self.held.append((land, future))
        else:
            land()
            future.set_result(None)
        return future

    def thaw(self) -> None:
        self.frozen = False
        for land, future in self.held:
            land()
            future.set_result(None)
        self.held = []

    # the worker's `Sender`
    def delta(self, partition: int, raw: bytes) -> Awaitable[Any]:
        return self.send(lambda: self.log.append((partition, raw)))

    def dead_letter(self, letter: DeadLetter) -> Awaitable[Any]:
        return self.send(lambda: None)

    def alert(self, alert_id: str, raw: bytes) -> Awaitable[Any]:
        return self.send(lambda: None)


class Table:
    """A worker's side of a shared changelog-backed table."""

    def __init__(self, shared: Memory, producer: Producer) -> None:
        self.shared, self.producer = shared, producer

    def items(self) -> Any:
        return self.shared.items()

    def write(self, partition: int, writes: list[Write]) -> list[Awaitable[Any]]:
        return [self.producer.send(lambda: self.shared.write(partition, writes) and None)]


class Owner:
    """A worker of one generation on the shared tables; its commits count only while the generation is current."""

    def __init__(self, spec: Spec, cluster: Cluster, epoch: int, fenced: bool) -> None:
        self.cluster, self.epoch = cluster, epoch
        self.producer = Producer(cluster.log)
        self.worker = Worker(spec, Table(cluster.join, self.producer), Table(cluster.metrics, self.producer),
                             self.producer, 1, clock=lambda: cluster.clock)
        self.fences = self.worker.assign({0}, {0}, epoch) if fenced else []
        self.read = cluster.committed_deltas  # its position on the decisions log

    async def take(self, batch: list[Record]) -> None:
        for topic, partition, offset, value in batch:
            self.cluster.clock += 0.001
            await self.worker.records(topic, partition, [Fetched(offset, value)], self.commit(topic))

    def commit(self, topic: str) -> Callable[[int], Awaitable[None]]:
        async def commit(offset: int) -> None:
            if self.cluster.generation == self.epoch:  # else the broker refuses it: a stale generation
                committed = self.cluster.committed
                committed[topic] = max(offset, committed.get(topic, -1))
        return commit

    async def merge(self) -> None:
        """Merge what the decisions log holds past this owner's position; acks commit the log's prefix."""
        while self.read < len(self.cluster.log):
            offset = self.read
            self.read += 1
            await self.worker.delta(self.cluster.log[offset][0], self.cluster.log[offset][1], self.ack(offset))

    def ack(self, offset: int) -> Callable[[], Awaitable[None]]:
        async def ack() -> None:
            if self.cluster.generation == self.epoch:
                self.cluster.acked.add(offset)
                while self.cluster.committed_deltas in self.cluster.acked:
                    self.cluster.committed_deltas += 1
        return ack

    async def settle(self) -> None:
        for _ in range(5):  # checkpoints send deltas, merges save: until nothing is left in flight
            await self.worker.settle()
            await self.merge()
            await self.worker.save_all()


class Cluster:
    """The shared tables, the decisions log and the group's committed offsets."""

    def __init__(self) -> None:
        self.join, self.metrics = Memory(), Memory()
        self.log: list[tuple[int, bytes]] = []
        self.committed: dict[str, int] = {}
        self.committed_deltas = 0
        self.acked: set[int] = set()
        self.generation = 0
        self.clock = 1_000.0

    def owner(self, spec: Spec, fenced: bool) -> Owner:
        self.generation += 1
        return Owner(spec, self, self.generation, fenced)

    def unread(self, stream: list[Record]) -> list[Record]:
        return [r for r in stream if r[2] > self.committed.get(r[0], -1)]


async def schedule(spec: Spec, stream: list[Record], fenced: bool) -> tuple[Owner, Owner]:
    cluster = Cluster()
    n = len(stream)
    zombie = cluster.owner(spec, fenced)
    await asyncio.gather(*zombie.fences)
    await zombie.take(stream[: n * 4 // 10])
    await zombie.settle()

    zombie.producer.frozen = True  # SIGSTOP in the middle of a fetch: what it does now lands late
    await zombie.take(stream[n * 4 // 10: n * 5 // 10])  # checkpoints cut, their writes and deltas held

    owner = cluster.owner(spec, fenced)  # the session timed out: the group moved on
    await asyncio.gather(*owner.fences)
    await owner.take(cluster.unread(stream[: n * 7 // 10]))
    await owner.settle()

    zombie.producer.thaw()  # SIGCONT: its held writes land, and it goes on with what it had fetched
    await zombie.take(stream[n * 5 // 10: n * 6 // 10])
    await zombie.settle()
    zombie.worker.revoke({0}, {0})  # its heartbeat failed at last: it hears of the rebalance

    await owner.take(stream[n * 7 // 10:])
    await owner.settle()
    await stale_events(zombie, cluster)

    third = cluster.owner(spec, fenced)  # and a third owner restores from what both wrote
    await asyncio.gather(*third.fences)
    third.read = cluster.committed_deltas
    await third.worker.tick(0)  # restores both stages, as the ticks agent does after an assignment
    await asyncio.gather(*third.worker.tasks)
    await third.merge()  # its first checkpoint, cut by the tick before any record: the fence lifts
    if fenced:
        restored = third.worker.join.partitions[0].seq - 1
        fence = third.worker.metrics.partitions[0].fences[0]
        assert (fence.epoch, fence.through, fence.merged) == (third.epoch, restored, restored + 1)
    await third.take(cluster.unread(stream))
    await third.settle()
    return owner, third


async def stale_events(zombie: Owner, cluster: Cluster) -> None:
    """Faust hands a revoked worker the tick and the deltas it fetched before the rebalance: they must
    touch nothing, neither restore a copy of the partitions beside the new owner's nor write."""
    before = dict(cluster.join.items()), dict(cluster.metrics.items())
    unread = len(cluster.log) - zombie.read
    await zombie.worker.tick(0)
    await zombie.merge()
    await asyncio.gather(*zombie.worker.tasks)
    assert (dict(cluster.join.items()), dict(cluster.metrics.items())) == before
    assert not zombie.worker.join.partitions and not zombie.worker.metrics.partitions
    assert list(zombie.worker.rollups()) == []  # its gauges show nothing of partitions it lost
    assert unread > 0 and zombie.worker.metrics.strays == unread


def run(spec: Spec, fenced: bool) -> tuple[InMemoryWorker, Owner, Owner]:
    stream = records("business_drop", 8_000, tail=True)
    whole = InMemoryWorker(spec, fresh(), batch=1)
    whole.finish(whole.feed(stream, clock=1_000.0))
    loop = asyncio.new_event_loop()
    try:
        owner, third = loop.run_until_complete(asyncio.wait_for(schedule(spec, stream, fenced), 120))
    finally:
        loop.close()
    return whole, owner, third


def test_a_zombie_owner_is_fenced(spec: Spec) -> None:
    whole, owner, third = run(spec, fenced=True)
    want = whole.worker.join.counts()
    for survivor in (owner, third):
        assert survivor.worker.join.counts() == want
        assert_same_totals(worker_totals(survivor.worker), whole.totals())
    assert owner.worker.metrics.fenced > 0, "the zombie's fork should have reached the metrics stage, and been dropped"


def test_without_epochs_the_zombie_corrupts_the_numbers(spec: Spec) -> None:
    whole, owner, third = run(spec, fenced=False)
    want = whole.worker.join.counts(), whole.totals()
    with pytest.raises(AssertionError):
        for survivor in (owner, third):
            assert survivor.worker.join.counts() == want[0]
            assert_same_totals(worker_totals(survivor.worker), want[1])


def test_early_alerts_survive_a_restart(spec: Spec) -> None:
    stream = records("business_drop", 20_000, tail=True)
    whole = InMemoryWorker(spec, fresh(), batch=500)
    whole.finish(whole.feed(stream))
    want = sorted(a["id"] for a in whole.topics.alerts if "status" in a)
    assert want, "the scenario should raise early alerts"
    stores = fresh()
    first = InMemoryWorker(spec, stores, batch=500)
    first.finish(first.feed(stream[: len(stream) // 2]))
    second = InMemoryWorker(spec, stores, batch=500)
    second.finish(second.feed(stream[len(stream) // 2:], clock=first.clock))
    got = sorted({a["id"] for a in first.topics.alerts + second.topics.alerts if "status" in a})
    assert got == want

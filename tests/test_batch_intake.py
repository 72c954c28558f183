"""The worker consumer's batch intake without a broker: which fetched records reach the worker, and
which offsets Faust may commit. The same paths on a real broker: tests/test_kafka.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP

from agents.app import consumer, create_app
from agents.consumer import Consumer
from monitor.contract.spec import Spec
from monitor.infra.connection import Connection
from monitor.testing import free_port

PREDICTIONS, OUTCOMES, TICKS = TP("predictions", 0), TP("outcomes", 1), TP("monitor-checkout-ticks", 0)


def fetched(tp: TP, *offsets: int) -> list[ConsumerRecord[bytes, bytes]]:
    return [ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, None, b"{}", None, 0, 2, []) for offset in offsets]


class Wired:
    """A worker's consumer, not started: its intakes record what they are given."""

    def __init__(self, spec: Spec) -> None:
        app = create_app(spec, Connection("127.0.0.1:1"), 4, web_port=free_port())
        self.app, self.consumer = app, consumer(app)
        self.taken: list[tuple[TP, list[int]]] = []
        self.assigned = {PREDICTIONS, OUTCOMES, TICKS}
        self.consumer.assignment = lambda: self.assigned  # type: ignore[method-assign]
        self.consumer.highwater = lambda tp: 100  # type: ignore[method-assign]
        self.consumer.transport.intakes = {"predictions": self.take, "outcomes": self.take}  # type: ignore[attr-defined]
        self.during_intake: Any = None
        self.rewound: list[dict[TP, int]] = []
        self.consumer._rewind = self.rewind  # type: ignore[method-assign]

    async def rewind(self, positions: dict[TP, int]) -> None:
        self.rewound.append(dict(positions))

    async def take(self, tp: TP, batch: list[Any]) -> None:
        self.taken.append((tp, [r.offset for r in batch]))
        if self.during_intake is not None:
            self.during_intake()

    def fetch(self, records: dict[TP, list[Any]], active: set[TP] | None = None) -> dict[TP, list[Any]]:
        return asyncio.run(self.consumer._take_batches(records, active))


@pytest.fixture
def wired(spec: Spec) -> Iterator[Wired]:
    yield Wired(spec)


def test_input_batches_reach_the_worker_and_the_rest_goes_to_faust(wired: Wired) -> None:
    ticks = fetched(TICKS, 7)
    rest = wired.fetch({PREDICTIONS: fetched(PREDICTIONS, 3, 4, 5), TICKS: ticks, OUTCOMES: fetched(OUTCOMES, 9)})
    assert wired.taken == [(PREDICTIONS, [3, 4, 5]), (OUTCOMES, [9])]
    assert rest == {TICKS: ticks}
    monitor = wired.app.monitor
    assert {PREDICTIONS, OUTCOMES} <= monitor.stream_inbound_time.keys()  # Faust's stall detector sees progress
    assert wired.consumer._read_offset[PREDICTIONS] == 5


def test_nothing_is_taken_while_a_rebalance_has_stopped_the_flow(wired: Wired) -> None:
    wired.consumer.stop_flow()
    ticks = fetched(TICKS, 1)
    assert wired.fetch({PREDICTIONS: fetched(PREDICTIONS, 0), TICKS: ticks}) == {TICKS: ticks}
    assert wired.taken == []
    assert wired.rewound == [{PREDICTIONS: 0}]  # fetched again, whenever Faust seeks back to the committed offsets


def test_a_paused_partition_is_not_taken(wired: Wired) -> None:
    wired.fetch({PREDICTIONS: fetched(PREDICTIONS, 2, 3), OUTCOMES: fetched(OUTCOMES, 0)}, active={OUTCOMES})
    assert wired.taken == [(OUTCOMES, [0])]
    assert wired.rewound == [{PREDICTIONS: 2}]  # not skipped once it is resumed


def test_a_rebalance_during_an_intake_drops_the_rest_of_the_fetch(wired: Wired) -> None:
    def rebalance() -> None:
        wired.app.consumer_generation_id += 1

    wired.during_intake = rebalance
    rest = wired.fetch({PREDICTIONS: fetched(PREDICTIONS, 0), OUTCOMES: fetched(OUTCOMES, 0), TICKS: fetched(TICKS, 0)})
    assert wired.taken == [(PREDICTIONS, [0])]  # fetched by the old generation: not for this one
    assert wired.rewound == [{OUTCOMES: 0}]
    assert rest == {}


def test_faust_commits_the_range_a_checkpoint_covers_gaps_included(wired: Wired) -> None:
    c: Consumer = wired.consumer
    c._committed_offset[PREDICTIONS] = 3
    c.commit_through(PREDICTIONS, 9)  # offsets 4..9, with 6 and 7 missing (compacted, or transaction markers)
    c.commit_through(PREDICTIONS, 5)  # an older checkpoint confirmed late never moves it back
    assert c._filter_committable_offsets(c._filter_tps_with_pending_acks()) == {PREDICTIONS: 10}
    c._committed_offset[PREDICTIONS] = 10
    assert c._filter_committable_offsets(c._filter_tps_with_pending_acks()) == {}  # nothing new


def test_a_partition_this_worker_no_longer_holds_is_not_committed(wired: Wired) -> None:
    c: Consumer = wired.consumer
    wired.assigned = {OUTCOMES}
    c.commit_through(PREDICTIONS, 9)
    assert c._filter_committable_offsets(c._filter_tps_with_pending_acks()) == {}


def test_acks_confirmed_during_a_revocation_are_not_committed_later_and_the_fence_goes_first(
        wired: Wired, monkeypatch: pytest.MonkeyPatch) -> None:
    """Acks confirmed while Faust flushes the producer in a revocation (after it dropped the revoked
    partitions' acks) belong to the generation that ended; the fence goes out before Faust's own work."""
    c: Consumer = wired.consumer
    calls: list[str] = []
    decisions = TP("monitor-checkout-decisions", 2)

    async def faust_revokes(self: Any, revoked: set[TP]) -> None:
        calls.append("faust revokes")
        c.commit_through(PREDICTIONS, 9)  # a checkpoint confirmed during the revocation's flush
        c._acked[decisions].append(4)  # and a merge's save
        assert c._filter_committable_offsets(c._filter_tps_with_pending_acks())  # a commit now is of the old one

    async def fence(assigned: set[TP], generation: int) -> None:
        calls.append(f"fence {sorted(tp.partition for tp in assigned)} in {generation}")

    async def faust_assigns(self: Any, assigned: set[TP], generation_id: int = 0) -> None:
        calls.append("faust assigns")

    monkeypatch.setattr(aiokafka_driver.Consumer, "on_partitions_revoked", faust_revokes)
    monkeypatch.setattr(aiokafka_driver.Consumer, "on_partitions_assigned", faust_assigns)
    c.transport.fence = fence  # type: ignore[attr-defined]
    asyncio.run(c.on_partitions_revoked({PREDICTIONS, OUTCOMES, decisions}))
    assert c._filter_committable_offsets(c._filter_tps_with_pending_acks()) == {}  # the new generation commits none
    asyncio.run(c.on_partitions_assigned({PREDICTIONS, decisions}, 7))
    assert calls == ["faust revokes", "fence [0, 2] in 7", "faust assigns"]

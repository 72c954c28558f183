"""A metrics partition's deltas in offset order: what is admitted, skipped and fetched again."""

from __future__ import annotations

import asyncio
import logging

import pytest

from monitor.stream.in_order import GIVE_UP_SECONDS, REWIND_SECONDS, InOrder


class Consumer:
    """The committed offsets and the rewinds an `InOrder` asks for, on a clock of its own."""

    def __init__(self, committed: dict[int, int]) -> None:
        self.committed_at = committed
        self.asked: list[int] = []  # committed offsets looked up, by partition
        self.rewinds: list[tuple[int, int]] = []
        self.now = 0.0
        self.order = InOrder(self.committed, self.rewind, lambda: self.now)

    async def committed(self, partition: int) -> int:
        self.asked.append(partition)
        return self.committed_at.get(partition, 0)

    async def rewind(self, partition: int, offset: int) -> None:
        self.rewinds.append((partition, offset))

    def admit(self, partition: int, *offsets: int) -> list[bool]:
        return [asyncio.run(self.order.admit(partition, offset)) for offset in offsets]


def test_a_partition_is_taken_from_its_committed_offset_on_and_each_offset_once() -> None:
    c = Consumer({0: 10})
    assert c.admit(0, 8, 9, 10, 11, 11, 10, 12) == [False, False, True, True, False, False, True]
    assert c.asked == [0] and c.rewinds == [] and c.order.skipped == 4
    assert c.admit(1, 0, 1) == [True, True]  # never committed: from the start


def test_a_message_ahead_is_fetched_again_in_order_and_the_rewind_is_not_asked_for_each_one() -> None:
    c = Consumer({0: 10})
    assert c.admit(0, 10, 14, 15, 16) == [True, False, False, False]  # 11 to 13 were dropped by the consumer
    assert c.rewinds == [(0, 11)] and c.order.ahead == 3
    c.now = REWIND_SECONDS
    assert c.admit(0, 17) == [False] and c.rewinds == [(0, 11), (0, 11)]  # still not there: asked again
    assert c.admit(0, 11, 12, 13, 14, 15, 16, 17) == [True] * 7  # what the rewind brings


def test_a_reset_reads_the_committed_offset_again() -> None:
    c = Consumer({0: 10})
    c.admit(0, 10, 11, 12)
    c.committed_at[0] = 12  # another owner committed meanwhile
    c.order.reset({0})
    assert c.admit(0, 11, 12) == [False, True] and c.asked == [0, 0]


def test_an_offset_that_never_comes_is_given_up_for_loudly(caplog: pytest.LogCaptureFixture) -> None:
    c = Consumer({0: 10})
    with caplog.at_level(logging.ERROR):
        assert c.admit(0, 15) == [False]
        c.now = GIVE_UP_SECONDS - 0.1
        assert c.admit(0, 15) == [False]
        c.now = GIVE_UP_SECONDS
        assert c.admit(0, 15, 16) == [True, True]
    assert c.order.given_up == 5 and "offsets 10 to 14 never came in 60 s; going on from 15" in caplog.text


def test_a_tick_fetches_again_what_a_stale_run_left_behind() -> None:
    c = Consumer({0: 10})
    assert c.admit(0, 12, 13) == [False, False] and c.rewinds == [(0, 10)]  # the rewind came before 13
    asyncio.run(c.order.poke(0))
    assert c.rewinds == [(0, 10)]  # too soon
    c.now = REWIND_SECONDS
    asyncio.run(c.order.poke(0))
    asyncio.run(c.order.poke(1))  # nothing expected there: nothing asked
    assert c.rewinds == [(0, 10), (0, 10)]
    assert c.admit(0, 10) == [True]
    c.now = 2 * REWIND_SECONDS
    asyncio.run(c.order.poke(0))
    assert len(c.rewinds) == 2  # in order again: no rewind

"""A metrics partition's deltas in offset order, from its committed offset on, whatever the consumer hands over.

The metrics stage's rules (fences before the deltas they judge, a source's checkpoints in sequence) hold only
if a partition's messages reach it in the order Kafka keeps them. Faust's per-event path does not promise
that across a rebalance: messages it fetched before can come after its seek back to the committed offset,
ahead of earlier ones, which it then drops as below its read offset. A zombie's delta merged before the fence
that judges it, or a checkpoint taken in before an earlier one, mixes two owners' histories: totals off in
whole metrics partitions, every join count exact (the nemesis on 8 partitions, two runs in three).

So each partition expects its committed offset first, then each next offset. A message further on is not
handed over: the partition is fetched again from the offset expected (`rewind`, at most once per
`REWIND_SECONDS`). A message below it was handed over already in this assignment, or is covered by the
commit: it is skipped. Offsets on the metrics stage's topic are dense (Faust's producer, no transactions,
no compaction); if the offset expected has gone (retention), the partition goes on from the first one that
comes after `GIVE_UP_SECONDS` of rewinds, and says so.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

REWIND_SECONDS = 2.0  # between two rewinds of a partition to the same offset
GIVE_UP_SECONDS = 60.0  # of rewinds to one offset before the partition goes on from a later one
log = logging.getLogger(__name__)


@dataclass
class _Expecting:
    offset: int
    rewound_at: float | None = None  # when the partition was last fetched again from `offset`
    since: float | None = None  # when a message first came past `offset`


class InOrder:
    """Per partition, whether a message is the next one (`admit`); `reset` at each assignment and revocation."""

    def __init__(self, committed: Callable[[int], Awaitable[int]], rewind: Callable[[int, int], Awaitable[None]],
                 clock: Callable[[], float]) -> None:
        self.committed, self.rewind, self.clock = committed, rewind, clock
        self.expecting: dict[int, _Expecting] = {}
        self.skipped = 0  # messages below the offset expected: handed over before, or committed
        self.ahead = 0  # messages past it, left to come again in order
        self.given_up = 0  # offsets that never came

    def reset(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.expecting.pop(partition, None)

    async def poke(self, partition: int) -> None:
        """Fetch the partition again if a message came past the offset it expects and the last rewind is
        `REWIND_SECONDS` old: the rewind may have come before the last message of a stale run, with none after."""
        expecting = self.expecting.get(partition)
        if expecting is not None and expecting.since is not None:
            await self._rewind(partition, expecting, self.clock())

    async def admit(self, partition: int, offset: int) -> bool:
        expecting = self.expecting.get(partition)
        if expecting is None:
            expecting = self.expecting[partition] = _Expecting(await self.committed(partition))
        if offset < expecting.offset:
            self.skipped += 1
            return False
        if offset > expecting.offset:
            now = self.clock()
            expecting.since = now if expecting.since is None else expecting.since
            if now - expecting.since < GIVE_UP_SECONDS:
                self.ahead += 1
                await self._rewind(partition, expecting, now, offset)
                return False
            self.given_up += offset - expecting.offset
            log.error("metrics partition %d: offsets %d to %d never came in %.0f s; going on from %d", partition,
                      expecting.offset, offset - 1, GIVE_UP_SECONDS, offset)
        self.expecting[partition] = _Expecting(offset + 1)
        return True

    async def _rewind(self, partition: int, expecting: _Expecting, now: float, came: int | None = None) -> None:
        """Fetch the partition again from the offset it expects, unless that was asked for `REWIND_SECONDS` ago."""
        if expecting.rewound_at is not None and now - expecting.rewound_at < REWIND_SECONDS:
            return
        expecting.rewound_at = now
        if came is not None:
            log.info("metrics partition %d: offset %d came before %d; fetching again from %d", partition, came,
                     expecting.offset, expecting.offset)
        await self.rewind(partition, expecting.offset)

"""Faust's Kafka consumer, with one fix: a partition that has no committed offset starts from the beginning.

After a rebalance Faust seeks every stream partition to its committed offset, but aiokafka skips
partitions whose committed offset is missing or 0, and those keep the fetch position of the previous
assignment. Records that were fetched then, and dropped from the agents' buffers at the revocation,
were never seen again: a metrics partition lost the deltas between its last processed record and
its fetch position. This happens when several workers of a new group start together. Seeking such
partitions to the beginning (the group's `earliest` reset) delivers them again; the stages drop
what they had already merged.

Relies on faust-streaming 0.15.3's `perform_seek` calling `seek_to_committed`, which
tests/test_faust_internals.py checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faust.transport.drivers import aiokafka


class Consumer(aiokafka.Consumer):
    async def seek_to_committed(self) -> Mapping[Any, int]:
        committed: Mapping[Any, int] = await super().seek_to_committed()
        changelogs = self.app.tables.changelog_topics  # recovery positions these itself
        fresh = [tp for tp, offset in committed.items() if not offset and tp.topic not in changelogs]
        if fresh:
            await self._thread.seek_to_beginning(*fresh)
        return committed


class Transport(aiokafka.Transport):
    Consumer = Consumer

"""Faust's Kafka consumer, with batch intake for the input topics and two fixes: its seeks, its fetch wait.

**Batch intake.** Faust hands records to agents one event at a time, at a cost of about 200 µs
each before any work (a wait on the fetcher per message, the sensors, the hand-off to the stream).
For the topics given as `intakes`, this consumer takes each partition's fetched records off the
fetch and hands them to the topic's intake as one batch, in the fetcher's task; every other topic
(the ticks, the metrics stage's parts, the changelogs) keeps Faust's per-event path. Faust still
owns the group, its assignor (input and changelog partitions stay together), recovery pauses and
offset commits: an intake calls `commit_through` once a durable checkpoint covers its records,
and Faust's commit loop commits that offset. A range replaces Faust's per-offset acks, so a gap in
the offsets (compaction, transaction markers) never stops commits.

Batches get the checks Faust gives each of its messages: none while flow is stopped (a rebalance
is on), none from an older generation, none from a paused partition. A batch dropped so is fetched
again from its first offset (`_rewind`): Faust seeks back to the committed offsets only at the end
of a recovery, and records taken after a dropped batch before that seek would make the join stage
count the dropped ones as redeliveries, and skip them. Faust's stall detector reads the time of the
last inbound event per partition, and its lag gauges the end offsets: both are set per batch.

**Seeks.** After a rebalance Faust seeks every stream partition to its committed offset, but
aiokafka skips partitions whose committed offset is missing or 0, and those keep the fetch position
of the previous assignment. Records fetched then and dropped at the revocation were never seen
again. Seeking such partitions to the beginning (the group's `earliest` reset) delivers them again;
the stages drop what they had already merged.

**Per-event topics in order.** Faust drops a message below the last offset it handed over on a
partition (its read offset), and counts the offsets it jumped over as acked (a "gap", meant for
compacted topics). After a rebalance, messages it had fetched before can come after its seek back to the
committed offset: they move the read offset forward, and the earlier messages the seek brings are dropped.
On the metrics stage's topic, that mixed owners' histories and lost checkpoints (the nemesis on 8
partitions: two runs in three). The worker now takes each metrics partition in offset order from its
committed offset (`monitor/stream/in_order.py`): a message further on is fetched again in order (`rewind`,
which also resets Faust's read offset). And gaps are never counted as acked: the topics on Faust's
per-event path (the metrics stage's, the ticks) are neither compacted nor transactional, so an offset
skipped there is a message not yet handled.

**Fetch wait.** aiokafka keeps one fetch request in flight per broker, and leaves out of it the
partitions whose last records are not yet taken. So while the join stage takes an input
partition's batch, the next request may hold only quiet partitions (changelogs, ticks), and the
broker parks it for Faust's fixed `fetch_max_wait_ms` of 1.5 s; the input partitions taken
meanwhile wait for it. Their records were there all along. The worker asks for 100 ms instead:
one worker went from 42,000 to 54,000-56,000 decisions/s on the live benchmark, and two workers
from 1.36 to 1.6 cores busy. An idle worker then polls the broker ten times a second.

**Records as parsed.** aiokafka wraps every record it parses in a `ConsumerRecord`, a dataclass of
eleven fields built in Python: a bare consumer reading the live benchmark's records spends 2.0 µs of
CPU per record with them and 1.7 µs without (`benchmarks/fetch.py`), in the consumer thread that
shares the interpreter with the worker. The batch-intake topics get aiokafka's parsed records
as they are (`offset`, `value`, `key`, `timestamp`, `headers`, as on a `ConsumerRecord`); every other
topic keeps its `ConsumerRecord`s.

Relies on faust-streaming 0.15.3's internals (`_wait_next_records`, `_new_offset`, `_acked`,
`_read_offset`, `_committed_offset`, `_add_gap`, `perform_seek` calling `seek_to_committed`,
`_new_consumer_thread`, `_create_worker_consumer`) and aiokafka's (`_fetch_max_wait_ms`, read when the
consumer starts; `fetcher.PartitionRecords` and its `_consumer_record`; a partition's fetch position in
`_subscription`), pinned in pyproject.toml (aiokafka to 0.14.x) and checked by tests/test_faust_internals.py.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from time import monotonic
from typing import Any, ClassVar, cast

from aiokafka.consumer import fetcher
from aiokafka.structs import TopicPartition
from faust.transport.drivers import aiokafka
from faust.types import TP

log = logging.getLogger(__name__)
Intake = Callable[[TP, list[Any]], Awaitable[None]]  # a partition's fetched records (aiokafka ConsumerRecords)
Fence = Callable[[set[TP], int], Awaitable[None]]  # an assignment and its generation, before Faust acts on it
FETCH_MAX_WAIT_MS = 100  # the longest the broker holds a fetch for partitions without records (Faust: 1,500)


class IntakeRecords(fetcher.PartitionRecords):  # type: ignore[misc]  # aiokafka is untyped
    """One fetched partition's records; those of a batch-intake topic come as aiokafka parsed them."""

    raw_topics: ClassVar[set[str]] = set()  # every batch-intake topic of the workers in this process

    def __init__(self, tp: TP, *args: Any, **kwargs: Any) -> None:
        super().__init__(tp, *args, **kwargs)
        self.raw = tp.topic in self.raw_topics

    def _consumer_record(self, tp: TP, record: Any) -> Any:
        return record if self.raw else super()._consumer_record(tp, record)


class ConsumerThread(aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, with a short fetch wait and the intake topics' records as parsed (see the
    module's notes)."""

    def _create_worker_consumer(self, transport: aiokafka.Transport) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # Faust passes 1,500 and offers no setting for it
        IntakeRecords.raw_topics.update(cast(Consumer, self.consumer).intakes)  # filled once the app is made
        fetcher.PartitionRecords = IntakeRecords  # aiokafka's fetcher makes each partition's by this name
        return consumer


class Consumer(aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.durable: dict[TP, int] = {}  # per batch-intake partition, the offset Kafka may commit (next to read)

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    @property
    def intakes(self) -> Mapping[str, Intake]:
        return self.transport.intakes  # type: ignore[attr-defined, no-any-return]

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        """Fence the assignment before Faust starts the recovery of its tables (see `Worker.assign`).

        Every partition was revoked before (aiokafka's rebalances are eager), so any ack still held is of
        the generation that ended: forgotten, as at the end of the revocation."""
        self._forget(set(self._acked) | set(self.durable))
        fence: Fence | None = self.transport.fence  # type: ignore[attr-defined]
        if fence is not None:
            await fence(assigned, generation_id)
        await super().on_partitions_assigned(assigned, generation_id)

    async def _wait_next_records(self, timeout: float) -> tuple[Any, Any]:
        records, active = await super()._wait_next_records(timeout)
        if records and self.intakes:
            records = await self._take_batches(records, active)
        return records, active

    async def _take_batches(self, records: Mapping[TP, list[Any]], active: set[TP] | None) -> dict[TP, list[Any]]:
        """Hand each batch-intake partition's records to its intake; return the others to Faust."""
        rest: dict[TP, list[Any]] = {}
        dropped: dict[TP, int] = {}
        generation = self.app.consumer_generation_id
        monitor = self.app.monitor
        for tp, batch in records.items():
            intake = self.intakes.get(tp.topic)
            if intake is None:
                rest[tp] = batch
                continue
            if not batch:
                continue
            if (not self.flow_active or self.app.consumer_generation_id != generation
                    or (active is not None and tp not in active and tp not in self._buffered_partitions)):
                dropped[tp] = batch[0].offset  # a rebalance began, or the partition was paused (recovery)
                continue
            if monitor is not None:
                monitor.stream_inbound_time[tp] = monotonic()
                monitor.track_tp_end_offset(tp, self.highwater(tp))
            self._read_offset[tp] = batch[-1].offset
            await intake(tp, batch)
        if dropped:
            await self._rewind(dropped)
        if self.app.consumer_generation_id != generation:
            return {}  # Faust reads the generation after this returns: it could not tell these are stale
        return rest

    async def _rewind(self, positions: Mapping[TP, int]) -> None:
        """Fetch dropped batches again, from their first offset.

        The join stage counts a record at or below the last offset it handled as a redelivery, so an
        intake partition must never skip records. A batch dropped while flow is stopped would be
        skipped whenever the records after it are taken before Faust seeks back to the committed
        offsets (its seek comes at the end of the recovery, and flow may resume before it)."""
        await self._thread.call_thread(self._seek_back, positions)

    async def _seek_back(self, positions: Mapping[TP, int]) -> None:  # in the consumer's thread, as its calls are
        consumer = self._thread._ensure_consumer()
        subscription = consumer._subscription.subscription
        assignment = None if subscription is None else subscription.assignment
        for tp, offset in positions.items():
            partition = TopicPartition(tp.topic, tp.partition)
            state = None if assignment is None else assignment.state_value(partition)
            # Only ever back: a partition no longer assigned, or whose position is being reset (to the
            # committed offset), or already at or below the batch (Faust sought back first), stays.
            if state is not None and state.has_valid_position and state.position > offset:
                consumer.seek(partition, offset)

    async def rewind(self, tp: TP, offset: int) -> None:
        """Fetch a per-event partition again from `offset` (see the module's notes); a partition no longer
        assigned is left alone."""
        if tp in self.assignment():
            await self._thread.call_thread(self._seek_to, tp, offset)
            self._read_offset[tp] = offset or None  # else Faust drops what the seek brings

    async def _seek_to(self, tp: TP, offset: int) -> None:  # in the consumer's thread, as its calls are
        consumer = self._thread._ensure_consumer()
        partition = TopicPartition(tp.topic, tp.partition)
        if partition in consumer.assignment():
            consumer.seek(partition, offset)

    async def committed_offset(self, tp: TP) -> int:
        """The group's committed offset of `tp` on the broker (0 if none: the group then reads from the start).
        If the broker does not answer, the last one this worker knows, which is never past it: more is read
        again, and merged once."""
        try:
            return int(await self._thread.call_thread(self._committed_on_broker, tp))
        except Exception as exc:  # a broker restart, say: never stop the metrics agent for it
            known = self._committed_offset.get(tp) or 0
            log.warning("could not read the committed offset of %s[%d] (%r); reading again from %d", tp.topic,
                        tp.partition, exc, known)
            return known

    async def _committed_on_broker(self, tp: TP) -> int:
        offset = await self._thread._ensure_consumer().committed(TopicPartition(tp.topic, tp.partition))
        return offset or 0

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        """Faust would count the offsets it skipped as acked; on these topics they are messages not yet
        handled (see the module's notes)."""

    def commit_through(self, tp: TP, offset: int) -> None:
        """Let Faust commit `tp` up to and including `offset`, while this worker holds it."""
        if tp in self.assignment():
            self.durable[tp] = max(offset + 1, self.durable.get(tp, 0))
            self._acked[tp]  # Faust's commit loop visits the partitions it has ack lists for

    def _new_offset(self, tp: TP) -> int | None:
        if tp.topic in self.intakes:
            return self.durable.get(tp)
        return super()._new_offset(tp)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        """Faust drops the revoked partitions' acks first thing, then flushes the producer: a checkpoint or
        a save confirmed meanwhile still acks, as its stage hears of the revocation only at the end. Such an
        ack must not be committed in the next generation (before this worker's assignment callback, Faust's
        commit loop already commits with the new generation): the revoked partitions' acks go again once
        the revocation is done. A commit during the revocation itself carries the old generation, which the
        broker refuses if this worker was a zombie, and which is safe if not: the checkpoint was durable."""
        self._forget(revoked)
        await super().on_partitions_revoked(revoked)
        self._forget(revoked)

    def _forget(self, tps: set[TP]) -> None:
        for tp in tps:
            self.durable.pop(tp, None)
            self._acked.pop(tp, None)
            self._acked_index.pop(tp, None)

    async def seek_to_committed(self) -> Mapping[Any, int]:
        committed: Mapping[Any, int] = await super().seek_to_committed()
        changelogs = self.app.tables.changelog_topics  # recovery positions these itself
        fresh = [tp for tp, offset in committed.items() if not offset and tp.topic not in changelogs]
        if fresh:
            await self._thread.seek_to_beginning(*fresh)
        return committed


class Transport(aiokafka.Transport):
    """Faust's aiokafka transport with this module's consumer; `intakes` maps topics to their batch intake,
    `fence` is awaited on each assignment before Faust acts on it."""

    Consumer = Consumer

    def __init__(self, *args: Any, intakes: Mapping[str, Intake] | None = None, fence: Fence | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.intakes: Mapping[str, Intake] = {} if intakes is None else intakes
        self.fence = fence

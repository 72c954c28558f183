"""A worker's ordering of checkpoints, sends and acks, behind small protocols; Faust only wires it.

The rules that keep a worker exact across crashes and rebalances live here, once:

- a record is acked (so Kafka may commit it) only after the checkpoint holding its effect is durable;
- a checkpoint's dead letters are durable before its records are acked;
- its deltas are sent only once its log is durable, and never by an owner that lost the partition;
- a compaction (snapshot) is written only once the deltas it makes the only copy of are durable;
- the metrics stage acks a delta only once a save after its merge is durable and while it still owns the
  partition (it saves its merges every `SAVE_SECONDS`, so a busy slice is written once per save);
- an alert is stored with the merge that raises it, and its entry goes only once the alerts topic has
  it: sent at least once, with an id that is the same for every copy;
- a worker given partitions fences them before it restores any (`assign`): a worker that was frozen
  past its session timeout and still writes as their owner can then never be read or merged (the
  epochs of `monitor.stream.store`), and the metrics stage acks nothing while a fence holds deltas.
- a metrics partition takes its deltas in offset order from its committed offset (`order`: the consumer
  can hand them over out of order after a rebalance), and merges each source's checkpoints in sequence.

`Table` and `Sender` are the I/O edges: Faust's changelog-backed tables and topics in a worker,
dicts and lists in the tests. Records come in batches (all a fetch brought of one partition); saving
runs in the background, so intake goes on with the next batch while the broker confirms; past
`BACKLOG_RECORDS` unsaved records a partition waits.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from monitor.contract.spec import Spec
from monitor.engine.comparisons import CAPTURE
from monitor.engine.intake import DeadLetter
from monitor.engine.join import JoinCounts
from monitor.engine.rollup import Rollup
from monitor.stream import wire
from monitor.stream.in_order import InOrder
from monitor.stream.join_stage import (
    CHECKPOINT_RECORDS,
    CHECKPOINT_SECONDS,
    SNAPSHOT_MIN_BYTES,
    Checkpoint,
    JoinStage,
    Record,
)
from monitor.stream.metrics_stage import SAVE_SECONDS, MetricsStage
from monitor.stream.schema_wait import SchemaWait
from monitor.stream.store import Store, Write

BACKLOG_RECORDS = 2 * CHECKPOINT_RECORDS  # records one partition may hold unsaved while a checkpoint is in flight
SLICE_RECORDS = CHECKPOINT_RECORDS // 5  # records taken between turns of the event loop: tens of milliseconds
Ack = Callable[[], Awaitable[Any]]  # lets Kafka commit one record, or what a checkpoint covers
Commit = Callable[[int], Awaitable[Any]]  # lets Kafka commit one input partition up to an offset
log = logging.getLogger(__name__)


class Table(Store, Protocol):
    """A key-value store whose writes become durable: `write` returns one awaitable per write."""

    def write(self, partition: int, writes: list[Write]) -> list[Awaitable[Any]]: ...


class Sender(Protocol):
    """Sends to the worker's topics; each send returns an awaitable that resolves once the broker has it."""

    def delta(self, partition: int, raw: bytes) -> Awaitable[Any]: ...

    def dead_letter(self, letter: DeadLetter) -> Awaitable[Any]: ...

    def alert(self, alert_id: str, raw: bytes) -> Awaitable[Any]: ...


class Worker:
    """Both stages of a worker with the ordering that makes them exact; what a scrape reads."""

    def __init__(self, spec: Spec, join_table: Table, metrics_table: Table, sender: Sender, partitions: int,
                 snapshot_bytes: int = SNAPSHOT_MIN_BYTES, clock: Callable[[], float] = time.time,
                 checkpoint_seconds: float = CHECKPOINT_SECONDS, replay_source: str = CAPTURE,
                 save_seconds: float = SAVE_SECONDS, order: InOrder | None = None) -> None:
        self.spec = spec
        self.order = order  # a Kafka consumer's deltas in offset order; None where they come so already
        self.save_seconds = save_seconds
        self.join_table, self.metrics_table, self.sender, self.clock = join_table, metrics_table, sender, clock
        self.join = JoinStage(spec, join_table, partitions, snapshot_bytes, checkpoint_seconds)
        self.metrics = MetricsStage(spec, partitions, metrics_table, replay_source=replay_source)
        self.sending: set[str] = set()  # alert ids on their way to the alerts topic
        self.unsaved: dict[int, list[Ack]] = {}  # per input partition, the commits its next checkpoint allows
        self.letters: dict[int, list[Awaitable[Any]]] = {}  # per input partition, dead letters since its checkpoint
        self.saving: dict[int, asyncio.Future[None]] = {}  # per input partition, the checkpoint in flight
        self.merged: dict[int, list[Ack]] = {}  # per metrics partition, the deltas its next save lets Kafka commit
        self.merged_since: dict[int, float] = {}  # per metrics partition, when the first of them was merged
        self.tasks: set[asyncio.Future[None]] = set()  # everything running in the background
        avro = spec.reader.avro
        self.schemas = None if avro is None else SchemaWait(avro.schemas)

    # -- partitions --------------------------------------------------------------------------------
    def assign(self, inputs: set[int], metrics: set[int], epoch: int) -> list[Awaitable[Any]]:
        """Take partitions in `epoch` (the group generation that gave them, larger than any earlier
        owner's). Returns the fences sent for the input partitions, one to every metrics partition:
        they must be durable before the join changelog is read for the restore, so that a delta of
        an older owner either reached the metrics stage before the fence or is judged by it."""
        self.revoke({p for p in inputs if p in self.join.partitions and self.join.partitions[p].epoch != epoch},
                    {q for q in metrics if q in self.metrics.partitions and self.metrics.partitions[q].epoch != epoch})
        self.join.assign(inputs, epoch)
        self.metrics.assign(metrics, epoch)
        if self.order is not None:
            self.order.reset(metrics)  # read again from the committed offset, as Faust seeks
        return [self.sender.delta(q, wire.encode(wire.Delta.fence(p, epoch)))
                for p in sorted(inputs) for q in range(self.join.reducers)]

    # -- the join stage ----------------------------------------------------------------------------
    async def records(self, topic: str, partition: int, batch: Sequence[Record], commit: Commit) -> None:
        """Take a partition's fetched records of one input topic, in offset order. `commit(offset)` is
        called once a durable checkpoint holds the effect of every record up to that offset.

        Checkpoints fall every `CHECKPOINT_RECORDS` records, within a batch as between batches, and
        the event loop gets a turn every `SLICE_RECORDS`. If the partition is revoked meanwhile, the
        rest of the batch is left to the next owner, which reads it again from the committed offset."""
        if self.schemas is not None:
            await self.schemas.ready((r.value for r in batch), lambda: self.join.owns(partition))
        start = 0
        while start < len(batch) and self.join.owns(partition):
            now = self.clock()
            part = self.join.partition(partition, now)
            backlog = part.unsaved
            room = (CHECKPOINT_RECORDS if backlog < CHECKPOINT_RECORDS else BACKLOG_RECORDS) - backlog
            chunk = batch[start:start + max(1, min(room, SLICE_RECORDS))]
            start += len(chunk)
            letters = self.join.take(topic, partition, chunk, now)
            if letters:
                self.letters.setdefault(partition, []).extend(self.sender.dead_letter(x) for x in letters)
            self.unsaved.setdefault(partition, []).append(functools.partial(commit, chunk[-1].offset))
            await self.checkpoint(partition, now)
            await asyncio.sleep(0)  # scrapes, ticks and parts get their turn between slices of a batch
            if self.join.partitions.get(partition) is not part:
                return

    async def tick(self, partition: int) -> None:
        """Advance an idle partition by the wall clock, and checkpoint it if due.

        The metrics partition of the same number (co-partitioned, so held by this worker too) is
        restored now rather than by its next part: after a rebalance or restart, its gauges come
        back even if the input has gone quiet."""
        if self.metrics.owns(partition):
            self.metrics.partition(partition)
            if self.order is not None:
                await self.order.poke(partition)
            self.save(partition)
        if self.join.owns(partition):
            now = self.clock()
            self.join.tick(partition, now)
            await self.checkpoint(partition, now)

    async def checkpoint(self, partition: int, now: float, force: bool = False) -> None:
        """Cut a checkpoint if due and save it in the background, so the agent goes on with the next records."""
        flight = self.saving.get(partition)
        if flight is not None and not flight.done():
            if self.join.backlog(partition) < BACKLOG_RECORDS and not force:
                return
            await flight  # backpressure: the broker is slower than the records
        if partition not in self.join.partitions or not (force or self.join.due(partition, now)):
            return
        part, acks = self.join.partition(partition), self.unsaved.pop(partition, [])
        done = self.join.checkpoint(partition, now)
        logged = self.join_table.write(partition, done.log) + self.letters.pop(partition, [])
        self.saving[partition] = flight = self._background(self._save(partition, part, done, logged, acks))

    async def _save(self, partition: int, part: object, done: Checkpoint, logged: list[Awaitable[Any]],
                    acks: list[Ack]) -> None:
        await asyncio.gather(*logged)  # the checkpoint (and its dead letters) is durable before its deltas can be seen
        if self.join.partitions.get(partition) is not part:
            # Revoked meanwhile: the new owner sends these parts again if its restore saw this
            # checkpoint, and handles its records again if not. Sending them here could count them twice.
            return
        sent = [self.sender.delta(q, raw) for q, raw in done.deltas]
        for ack in acks:  # now Kafka may commit them
            await ack()
        if done.compaction:
            await asyncio.gather(*sent)  # the deltas are durable before the logs holding them go
            if self.join.partitions.get(partition) is part:
                await asyncio.gather(*self.join_table.write(partition, done.compaction))

    # -- the metrics stage -------------------------------------------------------------------------
    async def delta(self, partition: int, raw: bytes, ack: Ack, offset: int | None = None) -> None:
        """Merge one delta; it is acked once a save after its merge is durable, without holding up the next one.
        A delta of a revoked partition is neither merged nor acked: its new owner reads it. One out of offset
        order (`order`) is neither: it comes again in order."""
        if offset is not None and self.order is not None and not await self.order.admit(partition, offset):
            return
        self.metrics.handle(partition, raw)
        if not self.metrics.owns(partition):
            return
        acks = self.merged.setdefault(partition, [])
        if not acks:
            self.merged_since[partition] = self.clock()
        acks.append(ack)
        self.save(partition)

    def save(self, partition: int, force: bool = False) -> None:
        """Save the partition's merges if due (a restore's repairs are due at once), in the background."""
        since = self.merged_since.get(partition)
        if not force and since is not None and self.clock() - since < self.save_seconds:
            return
        if self.metrics.waiting(partition):  # acks wait for the fence to lift; merges are saved meanwhile
            acks: list[Ack] = []
            self.merged_since[partition] = self.clock()
        else:
            acks = self.merged.pop(partition, [])
            self.merged_since.pop(partition, None)
        if not acks and not self.metrics.unsaved(partition):
            return
        saved = self.metrics_table.write(partition, self.metrics.save(partition))
        self._background(self._ack_merged(saved, partition, self.metrics.partitions.get(partition), acks))

    async def _ack_merged(self, saved: list[Awaitable[Any]], partition: int, owner: Any, acks: list[Ack]) -> None:
        await asyncio.gather(*saved)
        # Revoked meanwhile: leave them uncommitted. A restore may have read the changelog before
        # these writes reached it, and then only a redelivery brings these deltas back.
        if self.metrics.partitions.get(partition) is owner:
            await self._send_alerts(partition, owner)
            for ack in acks:
                await ack()

    async def _send_alerts(self, partition: int, owner: Any) -> None:
        """Send the partition's outbox; an entry goes once the alerts topic has its alert."""
        for alert_id in list(owner.outbox):
            raw = owner.outbox.get(alert_id)
            if raw is None or alert_id in self.sending:  # confirmed meanwhile, or on its way
                continue
            self.sending.add(alert_id)
            try:
                await self.sender.alert(alert_id, raw)
            finally:
                self.sending.discard(alert_id)
            if self.metrics.partitions.get(partition) is owner:
                await asyncio.gather(*self.metrics_table.write(partition, self.metrics.sent(partition, alert_id)))

    def revoke(self, inputs: set[int], metrics: set[int]) -> list[Rollup]:
        """Forget revoked partitions; their unacked records are committed by whoever checkpoints them next."""
        self.join.revoke(inputs)
        for partition in inputs:
            self.unsaved.pop(partition, None)
            self.letters.pop(partition, None)
            self.saving.pop(partition, None)  # a checkpoint in flight belongs to the old owner: never wait for it
        if self.order is not None:
            self.order.reset(metrics)
        for partition in metrics:  # unsaved merges go with the partition: the new owner gets their deltas again
            self.merged.pop(partition, None)
            self.merged_since.pop(partition, None)
        return self.metrics.revoke(metrics)

    async def settle(self) -> None:
        """Checkpoint every partition and save every merge now, and wait for everything in flight (tests, shutdown)."""
        for partition in list(self.join.partitions):
            await self.checkpoint(partition, self.clock(), force=True)
        await self.save_all()

    async def save_all(self) -> None:
        """Save every metrics partition's merges now, and wait for everything in flight."""
        for partition in list(self.metrics.partitions):
            self.save(partition, force=True)
        while self.tasks:  # one that failed is logged (`_done`) and leaves its deltas unacked
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    # -- what a scrape reads -----------------------------------------------------------------------
    def join_counts(self) -> JoinCounts:
        return self.join.counts()

    def record_counts(self) -> Mapping[str, int]:
        return self.join.record_counts()

    def event_counts(self) -> Mapping[tuple[str, str], int]:
        return self.join.event_counts()

    def rollups(self) -> Iterable[Rollup]:
        return self.metrics.rollups.values()

    def folded(self) -> int:
        return self.join.folded()

    def whole(self) -> bool:
        """Whether this worker holds every metrics partition, so every segment (one worker in the group)."""
        return len(self.metrics.partitions) == self.join.reducers

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "join_partitions": sorted(self.join.partitions),
                "metric_partitions": sorted(self.metrics.partitions),
                "join": {str(p): part.source.joiner.counts().as_dict() for p, part in self.join.partitions.items()},
                "held_outcomes": self.join.held_outcomes(),
                "fenced_deltas": self.metrics.fenced,  # a zombie owner's checkpoints, dropped
                "stray_deltas": self.metrics.strays,  # fetched before a rebalance took their partition
                "held_deltas": sum(len(held) for part in self.metrics.partitions.values()  # until earlier ones come
                                   for held in part.ahead.values()),
                "skipped_checkpoints": self.metrics.skipped,  # never came: `AHEAD_LIMIT` later ones waited
                "redelivered_deltas": self.metrics.redelivered,  # merged before, so skipped
                "deltas_out_of_order": {"skipped": self.order.skipped, "ahead": self.order.ahead,
                                        "given_up": self.order.given_up} if self.order else {},
                "redelivered_records": sum(part.source.redelivered for part in self.join.partitions.values()),
                "offsets": {str(p): dict(part.source.offsets or {}) for p, part in self.join.partitions.items()},
                "schema_registry": self.schemas and self.schemas.waiting,  # why records are held, if they are
                "records": dict(self.join.record_counts()),  # taken by the join stage, per topic
                "decisions": self.join.counts().as_dict(),  # how the join stage ended them
                "segments": {"/".join(r.key(s)) or "(all)": r.windows.decisions(s)  # nothing built: polled often
                             for r in self.rollups() for s in r.held()}}

    def _background(self, work: Awaitable[None]) -> asyncio.Future[None]:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Future[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a state write failed; its records stay uncommitted", exc_info=task.exception())

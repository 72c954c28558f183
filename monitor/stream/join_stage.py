"""The join stage of a streaming worker, free of Faust so it runs and is tested without a broker.

`JoinStage` runs one engine `Source` per input partition (predictions and outcomes are
co-partitioned by decision ID). At each checkpoint a partition writes its state changes as one
message and drains its parts, one `Delta` per metrics partition (`monitor.stream.metrics_stage`
merges them). Shipping a few mergeable parts a second instead of every decision is what makes a
worker fast. The keys it writes, and how their epochs fence a zombie owner: `monitor.stream.store`.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import msgspec

from monitor.contract.decode import decode_outcome
from monitor.contract.spec import Spec
from monitor.engine.event_join import EventJoiner
from monitor.engine.intake import DeadLetter
from monitor.engine.join import PENDING, HeldEvent, HeldOutcome, JoinCounts
from monitor.engine.source import DRAIN_RECORDS, Source
from monitor.stream import wire
from monitor.stream.store import Ownership, Store, Write


class Record(Protocol):
    """A Kafka record as the join stage reads it (aiokafka's `ConsumerRecord` is one)."""

    @property
    def offset(self) -> int: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def timestamp(self) -> int | None: ...  # milliseconds

    @property
    def key(self) -> bytes | None: ...


OVERALL_KEY = b"\x00all"
CHECKPOINT_RECORDS = DRAIN_RECORDS  # records per checkpoint at most: the in-process monitor drains alike
CHECKPOINT_SECONDS = 0.2  # and the age of unsent results, so gauges stay fresh
CHUNK_BYTES = 512 * 1024  # below Kafka's default message limit of 1 MB
SNAPSHOT_MIN_BYTES = 1 << 20
log = logging.getLogger(__name__)


def reducer(segment: Sequence[str], reducers: int) -> int:
    """The metrics partition that owns a segment."""
    return zlib.crc32("\x1f".join(segment).encode() if segment else OVERALL_KEY) % reducers


@dataclass
class Checkpoint:
    """What a join partition must do, in this order, to checkpoint:

    1. write `log` and wait until it is durable; 2. send `deltas`; 3. ack the records it covers;
    4. if `compaction` is not empty: wait until the deltas are durable, then write it."""

    log: list[Write]
    deltas: list[tuple[int, bytes]]  # (metrics partition, encoded Delta)
    compaction: list[Write] = field(default_factory=list)


class _Changes:
    """The join's journal: state changes since the last checkpoint, the newest per decision."""

    def __init__(self) -> None:
        self.pendings: dict[str, bytes | None] = {}
        self.helds: dict[str, wire.HeldEntry | None] = {}
        self.dones: dict[str, bytes | None] = {}
        self.events: dict[str, list[HeldEvent] | None] = {}  # outcome events held, per decision

    def pending(self, decision_id: str, packed: bytes | None) -> None:
        self.pendings[decision_id] = packed

    def held(self, decision_id: str, entry: HeldOutcome | None) -> None:
        self.helds[decision_id] = None if entry is None else (
            entry[0], msgspec.json.encode(entry[1]), entry[2])

    def done(self, decision_id: str, packed: bytes | None) -> None:
        self.dones[decision_id] = packed

    def held_events(self, decision_id: str, events: list[HeldEvent] | None) -> None:
        self.events[decision_id] = None if events is None else list(events)

    def take(self) -> tuple[dict[str, bytes | None], dict[str, wire.HeldEntry | None], dict[str, bytes | None],
                            dict[str, list[HeldEvent] | None]]:
        """The changes so far; the journal starts empty again."""
        taken = self.pendings, self.helds, self.dones, self.events
        self.pendings, self.helds, self.dones, self.events = {}, {}, {}, {}
        return taken


class _Partition:
    """One input partition: its source and its checkpoint bookkeeping."""

    def __init__(self, number: int, spec: Spec, now: float, epoch: int) -> None:
        self.number = number
        self.epoch = epoch  # of this owner: the keys it writes, the deltas it sends
        self.changes = _Changes()
        self.source = Source(spec, self.changes, offsets=True)
        self.last_seen = now  # wall clock of the last record
        self.saved_at = now
        self.unsaved = 0  # records since the last checkpoint
        self.seq = 0  # the last checkpoint
        self.sent_watermark = -math.inf
        self.resend: list[tuple[int, bytes]] = []  # deltas of restored checkpoints, maybe never sent
        self.logs: dict[int, list[bytes]] = {}  # checkpoints since the snapshot: seq -> keys of its chunks
        self.log_bytes = 0
        self.generation, self.snapshot_bytes = 0, 0
        self.snapshot_keys: list[bytes] = []  # of the current snapshot (and of its head, if of an older epoch)
        self.stale: list[bytes] = []  # keys a crash, or another epoch, left behind
        # The first checkpoint of an owner is a snapshot under its epoch: its state no longer depends
        # on what a previous owner wrote, or may still write while it does not know it lost the partition.
        self.fresh = True


class JoinStage:
    """The join stage of a worker: one engine source per assigned input partition."""

    def __init__(self, spec: Spec, store: Store, reducers: int, snapshot_min_bytes: int = SNAPSHOT_MIN_BYTES,
                 checkpoint_seconds: float = CHECKPOINT_SECONDS) -> None:
        self.spec = spec
        self.store = store
        self.reducers = reducers  # partitions of the metrics stage
        self.snapshot_min_bytes = snapshot_min_bytes
        self.checkpoint_seconds = checkpoint_seconds
        self.partitions: dict[int, _Partition] = {}
        self.ownership = Ownership()
        self.assign, self.owns = self.ownership.assign, self.ownership.owns  # `Ownership` says why

    def take(self, topic: str, partition: int, records: Sequence[Record], now: float) -> list[DeadLetter]:
        """Handle a partition's records of `predictions` or `outcomes`, in offset order; returns the
        unusable ones as dead letters."""
        part = self.partition(partition, now)
        part.unsaved += len(records)
        part.last_seen = now
        handle = part.source.handle
        letters = []
        for record in records:
            value = record.value
            letter = handle(topic, b"" if value is None else value, partition, record.offset,  # None: a tombstone
                            record.timestamp, record.key)
            if letter is not None:
                letters.append(letter)
        return letters

    def tick(self, partition: int, now: float) -> None:
        """A quiet partition's watermark follows the wall clock once it has been idle long enough."""
        part = self.partition(partition, now)
        idle = now - part.last_seen
        if idle < self.spec.idle_timeout:
            return
        joiner = part.source.joiner
        newest = (joiner.newest_prediction, joiner.newest_outcome)
        base = min(newest) if min(newest) > -math.inf else max(newest)
        if base > -math.inf:
            part.source.advance(base + idle)

    def due(self, partition: int, now: float) -> bool:
        """Whether the partition should checkpoint now."""
        part = self.partitions.get(partition)
        if part is None:
            return False
        if part.unsaved >= CHECKPOINT_RECORDS or part.resend:
            return True
        if part.fresh and not part.unsaved:  # a quiet partition's new owner: its first delta lifts its fences
            return True
        return now - part.saved_at >= self.checkpoint_seconds and (
            part.unsaved > 0 or part.source.watermark > part.sent_watermark)

    def backlog(self, partition: int) -> int:
        """Records the partition took in since its last checkpoint."""
        part = self.partitions.get(partition)
        return 0 if part is None else part.unsaved

    def checkpoint(self, partition: int, now: float) -> Checkpoint:
        """Cut a checkpoint of the partition: its state changes and its parts since the last one."""
        part = self.partitions[partition]
        part.seq += 1
        deltas = self._deltas(part)
        pending, held, done, held_events = part.changes.take()
        outbox = part.resend + deltas
        part.resend, part.unsaved, part.saved_at = [], 0, now
        if part.fresh:  # the outbox rides in the snapshot: a restore from it sends what this never did
            return Checkpoint(self._snapshot(part, outbox), outbox)
        blob = wire.encode(self._state(part, pending, held, done, deltas, held_events))
        log_writes = _chunks(partition, part.epoch, "log", part.seq, blob)
        part.logs[part.seq] = [key for key, _ in log_writes]
        part.log_bytes += len(blob)
        checkpoint = Checkpoint(log_writes, outbox)
        if part.log_bytes >= max(self.snapshot_min_bytes, part.snapshot_bytes):
            checkpoint.compaction = self._snapshot(part, [])
        return checkpoint

    def partition(self, partition: int, now: float = 0.0) -> _Partition:
        """The partition's source, restored from the store the first time it is needed."""
        part = self.partitions.get(partition)
        if part is None:
            part = _Partition(partition, self.spec, now, self.ownership.epoch(partition))
            self.partitions[partition] = part
            self._restore(part)
        return part

    def revoke(self, partitions: set[int]) -> None:
        self.ownership.revoke(partitions)
        for partition in partitions:
            self.partitions.pop(partition, None)

    def counts(self) -> JoinCounts:
        return sum((part.source.joiner.counts() for part in self.partitions.values()), JoinCounts())

    def record_counts(self) -> Counter[str]:
        return sum((part.source.records for part in self.partitions.values()), Counter())

    def event_counts(self) -> Counter[tuple[str, str]]:
        return sum((part.source.event_counts() for part in self.partitions.values()), Counter())

    def reasons(self) -> Counter[str]:
        return sum((part.source.reasons for part in self.partitions.values()), Counter())

    def folded(self) -> int:
        return sum(part.source.segments.folded for part in self.partitions.values())

    def held_outcomes(self) -> int:
        return sum(len(part.source.joiner.held) + sum(map(len, getattr(part.source.joiner, "held_events", {}).values()))
                   for part in self.partitions.values())

    # -- checkpoints -------------------------------------------------------------------------------
    def _deltas(self, part: _Partition) -> list[tuple[int, bytes]]:
        """The parts since the last checkpoint, one Delta per metrics partition (each needs the watermark)."""
        by_reducer: list[list[wire.SlicePart]] = [[] for _ in range(self.reducers)]
        for p in part.source.drain():
            sliced = wire.SlicePart.of(p)
            by_reducer[reducer(sliced.segment, self.reducers)].append(sliced)
        early: list[list[wire.EarlySlice]] = [[] for _ in range(self.reducers)]
        for e in part.source.drain_early():
            read = wire.EarlySlice.of(e)
            early[reducer(read.segment, self.reducers)].append(read)
        watermark = part.source.watermark
        part.sent_watermark = watermark
        return [(q, wire.encode(wire.Delta(part.number, part.seq, watermark, parts, early[q], part.epoch)))
                for q, parts in enumerate(by_reducer)]

    def _state(self, part: _Partition, pending: dict[str, bytes | None], held: dict[str, wire.HeldEntry | None],
               done: dict[str, bytes | None], outbox: list[tuple[int, bytes]],
               held_events: dict[str, list[HeldEvent] | None]) -> wire.JoinState:
        source = part.source
        joiner = source.joiner
        counts = [(kind, status, n) for (kind, status), n in joiner.event_counts.items()] \
            if isinstance(joiner, EventJoiner) else []
        return wire.JoinState(part.seq, joiner.newest_prediction, joiner.newest_outcome,
                              list(joiner.counts().as_dict().values()), dict(source.records), dict(source.reasons),
                              source.segments.folded, dict(source.offsets or {}),
                              [list(key) for key in source.segments.known()], pending, held, done, outbox,
                              joiner.rotation(), held_events, counts, wire.FORMAT)

    def _snapshot(self, part: _Partition, outbox: list[tuple[int, bytes]]) -> list[Write]:
        """Everything as of the checkpoint just cut, with the deltas not yet durable; then the head,
        then what it makes obsolete."""
        joiner = part.source.joiner
        held: dict[str, wire.HeldEntry | None] = {
            key: (ts, msgspec.json.encode(outcome), offset) for key, (ts, outcome, offset) in joiner.held.items()}
        held_events: dict[str, list[HeldEvent] | None] = dict(getattr(joiner, "held_events", {}))
        blob = wire.encode(self._state(part, dict(joiner.pending), held, dict(joiner.finals()), outbox, held_events))
        p = part.number
        part.generation += 1
        writes = _chunks(p, part.epoch, "snap", part.generation, blob)
        keys = [key for key, _ in writes]
        head = _head_key(p, part.epoch)
        writes.append((head, wire.encode(wire.Head(part.generation, part.seq, len(keys), wire.FORMAT))))
        obsolete = [key for chunks in part.logs.values() for key in chunks] + part.snapshot_keys + part.stale
        writes += [(key, None) for key in obsolete if key != head]
        part.logs, part.log_bytes, part.stale, part.fresh = {}, 0, [], False
        part.snapshot_keys, part.snapshot_bytes = keys, len(blob)
        return writes

    def _restore(self, part: _Partition) -> None:
        """Rebuild a partition from the newest epoch's snapshot and the complete checkpoints after it."""
        p = part.number
        prefix = f"{p}/".encode()
        heads: dict[int, tuple[bytes, bytes]] = {}  # epoch -> (key, head)
        blobs: dict[tuple[int, str, int], dict[int, tuple[bytes, bytes]]] = {}  # (epoch, kind, n) -> chunks
        for stored, value in list(self.store.items()):
            if stored.startswith(prefix):
                epoch, rest = _epoch_of(stored.decode().split("/")[1:])
                if rest == ["head"]:
                    heads[epoch] = (stored, value)
                else:
                    kind, number, i = rest
                    blobs.setdefault((epoch, kind, int(number)), {})[int(i)] = (stored, value)
        newest = max(heads, default=0)  # a zombie's heads and checkpoints are of older epochs: never read
        part.epoch = max(part.epoch, newest)  # never below what is stored (a group made anew starts at 1)
        states = []
        if newest in heads:
            head_key, value = heads.pop(newest)
            head = wire.head(value)
            wire.stored_format(head.format, f"join partition {p}'s snapshot")
            chunks = blobs.pop((newest, "snap", head.generation))
            snapshot = wire.join_state(_joined(chunks))
            states.append(snapshot)
            part.resend += snapshot.outbox  # its owner's first checkpoint: perhaps never sent
            part.generation, part.seq = head.generation, head.seq
            part.snapshot_keys = [k for k, _ in chunks.values()] + ([head_key] if newest != part.epoch else [])
        for seq in sorted(n for epoch, kind, n in blobs if (epoch, kind) == (newest, "log")):
            chunks = blobs[(newest, "log", seq)]
            if seq != part.seq + 1 or len(chunks) != wire.chunk(chunks[0][1])[0]:
                continue  # obsolete, or cut by a crash: stale
            del blobs[(newest, "log", seq)]
            state = wire.join_state(_joined(chunks))
            states.append(state)
            part.seq = seq
            part.logs[seq] = [k for k, _ in chunks.values()]
            part.resend += state.outbox  # durable, but perhaps never sent: the metrics stage tells
        part.stale += [k for k, _ in heads.values()] + [k for chunks in blobs.values() for k, _ in chunks.values()]
        log.info("restoring join partition %d in epoch %d from epoch %d: %d checkpoints after its snapshot, through"
                 " checkpoint %d", p, part.epoch, newest, len(states) - (part.generation > 0), part.seq)
        if not states:
            return
        source = part.source
        pending: dict[str, bytes] = {}
        held: dict[str, HeldOutcome] = {}
        done: dict[str, bytes] = {}
        held_events: dict[str, list[HeldEvent]] = {}
        for state in states:
            wire.stored_format(state.format, f"join partition {p}'s checkpoint {state.seq}")
            for key, events in state.held_events.items():
                if events is None:
                    held_events.pop(key, None)
                else:
                    held_events[key] = events
            local = [source.segments.intern(tuple(key)) for key in state.segments]
            for key, packed in state.pending.items():
                if packed is None:
                    pending.pop(key, None)
                else:
                    ts, score, segment, predicted, offset = PENDING.unpack_from(packed)
                    pending[key] = PENDING.pack(ts, score, local[segment], predicted, offset) + packed[PENDING.size:]
            for key, entry in state.held.items():
                if entry is None:
                    held.pop(key, None)
                else:
                    held[key] = (entry[0], decode_outcome(entry[1]), entry[2])
            for key, status in state.done.items():
                if status is None:
                    done.pop(key, None)
                else:
                    done[key] = status
        last = states[-1]
        source.joiner.restore(pending.items(), held.items(), done.items(),
                              (last.newest_prediction, last.newest_outcome), JoinCounts(*last.counts), last.rotation)
        if isinstance(source.joiner, EventJoiner):
            source.joiner.restore_events(held_events.items(), ((k, st, n) for k, st, n in last.events))
        source.advance(source.joiner.watermark)  # the parts learn which slices have closed
        source.records.update(last.records)
        source.reasons.update(last.reasons)
        source.segments.folded = last.folded
        if source.offsets is not None:
            source.offsets.update(last.offsets)
        part.sent_watermark = source.watermark


def _epoch_of(path: list[str]) -> tuple[int, list[str]]:
    """A join key's epoch and the rest of its path after the partition; epoch-0 keys have none."""
    return (0, path) if len(path) in (1, 3) else (int(path[0]), path[1:])


def _join_prefix(partition: int, epoch: int) -> str:
    return f"{partition}/{epoch}/" if epoch else f"{partition}/"


def _head_key(partition: int, epoch: int) -> bytes:
    return f"{_join_prefix(partition, epoch)}head".encode()


def _chunks(partition: int, epoch: int, kind: str, number: int, blob: bytes) -> list[Write]:
    blob = wire.pack(blob)
    parts = [blob[i:i + CHUNK_BYTES] for i in range(0, len(blob), CHUNK_BYTES)] or [b""]
    prefix = f"{_join_prefix(partition, epoch)}{kind}/{number}/"
    return [(f"{prefix}{i}".encode(), wire.encode((len(parts), part))) for i, part in enumerate(parts)]


def _joined(chunks: dict[int, tuple[bytes, bytes]]) -> bytes:
    return wire.unpack(b"".join(wire.chunk(chunks[i][1])[1] for i in range(len(chunks))))



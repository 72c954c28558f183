"""The two stages of a streaming worker, free of Faust so they run and are tested without a broker.

`JoinStage` runs one engine `Source` per input partition (predictions and outcomes are
co-partitioned by decision ID). At each checkpoint a partition writes its state changes as one
message and drains its parts, one `Delta` per metrics partition. `ReduceStage` merges the parts of
the segments it owns into one engine `Rollup` per partition and closes windows once every source
has passed them. Shipping a few mergeable parts a second instead of every decision is what makes a
worker fast; merging each (source, checkpoint) once is what makes redelivery after a restart harmless.

State is persisted into key-value stores (the Faust tables), each key under the epoch of the
owner that wrote it (`<e>/` and `<e>|`; absent for epoch 0, as older workers wrote them):

    join     "<p>/<e>/log/<seq>/<i>"   the changes of checkpoint <seq> (chunk <i>)
             "<p>/<e>/snap/<gen>/<i>"  a snapshot of the whole partition
             "<p>/<e>/head"            which snapshot is current, and as of which checkpoint
    metrics  "<q>|<e>|s<slice, segment>"  an open slice: merged summary, and what it took in
             "<q>|<e>|b<segment>"         a segment's closed slices, folded into one base
             "<q>|<e>|a<alert id>"        an alert not yet confirmed on the alerts topic
             "<q>|<e>|watermarks"         the newest watermark of each source
             "<q>|<e>|fences"             the newest owner of each source, and where it took over
             "<q>|<e>|complete"           everything of the partition is written under <e>

**Epochs fence a zombie owner.** A worker frozen past its session timeout wakes up still thinking it
owns its partitions; until it hears of the rebalance, its writes land after the new owner's. An
owner's epoch is the group generation that gave it the partition, so a newer owner's is always larger.
A restore reads only the newest epoch's state (a join partition's newest head and the checkpoints of
that epoch after it; a metrics partition's newest complete epoch), and an owner's first write is its
whole state under its own epoch, so nothing a zombie writes later is ever read. A join partition's new
owner sends a fence to every metrics partition before it restores; from then on, a metrics partition
holds back the deltas of older owners until the new owner's first delta says which checkpoint it
restored (its seq - 1): those up to it are the history it continues, those after it a zombie's fork,
dropped. See `Worker.assign`.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections import Counter
from collections.abc import ItemsView, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import msgspec
import orjson

from monitor.contract.decode import decode_outcome
from monitor.contract.spec import Spec
from monitor.engine.alerts import Alert
from monitor.engine.early_alerts import EarlyAlert
from monitor.engine.intake import DeadLetter
from monitor.engine.join import PENDING, HeldOutcome, JoinCounts
from monitor.engine.rollup import Rollup
from monitor.engine.source import DRAIN_RECORDS, Part, Source
from monitor.engine.windows import NEVER, SegmentKey
from monitor.stats.summary import Summary
from monitor.stream import wire


class Record(Protocol):
    """A Kafka record as the join stage reads it (aiokafka's `ConsumerRecord` is one)."""

    @property
    def offset(self) -> int: ...

    @property
    def value(self) -> bytes | None: ...


class Store(Protocol):
    """Where a stage's state is read back from after a restart (a Faust table's data, or a dict)."""

    def items(self) -> ItemsView[bytes, bytes]: ...


Write = tuple[bytes, bytes | None]  # a key and its new value; None deletes it
OVERALL_KEY = b"\x00all"
CHECKPOINT_RECORDS = DRAIN_RECORDS  # records per checkpoint at most: the in-process monitor drains alike
CHECKPOINT_SECONDS = 0.2  # and the age of unsent results, so gauges stay fresh
SAVE_SECONDS = 0.5  # the age of a metrics partition's unsaved merges: acks and alerts wait for a save, gauges do not
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

    def pending(self, decision_id: str, packed: bytes | None) -> None:
        self.pendings[decision_id] = packed

    def held(self, decision_id: str, entry: HeldOutcome | None) -> None:
        self.helds[decision_id] = None if entry is None else (
            entry[0], msgspec.json.encode(entry[1]), entry[2])

    def done(self, decision_id: str, packed: bytes | None) -> None:
        self.dones[decision_id] = packed

    def take(self) -> tuple[dict[str, bytes | None], dict[str, wire.HeldEntry | None], dict[str, bytes | None]]:
        """The changes so far; the journal starts empty again."""
        taken = self.pendings, self.helds, self.dones
        self.pendings, self.helds, self.dones = {}, {}, {}
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
        self.epochs: dict[int, int] = {}  # per partition, the epoch this worker was given it in

    def assign(self, partitions: set[int], epoch: int) -> None:
        """This worker owns `partitions` from `epoch` on (the group generation that gave them)."""
        for partition in partitions:
            self.epochs[partition] = epoch

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
            letter = handle(topic, b"" if value is None else value, partition, record.offset)  # None: a tombstone
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
        pending, held, done = part.changes.take()
        outbox = part.resend + deltas
        part.resend, part.unsaved, part.saved_at = [], 0, now
        if part.fresh:  # the outbox rides in the snapshot: a restore from it sends what this never did
            return Checkpoint(self._snapshot(part, outbox), outbox)
        blob = wire.encode(self._state(part, pending, held, done, deltas))
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
            part = _Partition(partition, self.spec, now, self.epochs.get(partition, 0))
            self.partitions[partition] = part
            self._restore(part)
        return part

    def revoke(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.partitions.pop(partition, None)

    def counts(self) -> JoinCounts:
        return sum((part.source.joiner.counts() for part in self.partitions.values()), JoinCounts())

    def record_counts(self) -> Counter[str]:
        return sum((part.source.records for part in self.partitions.values()), Counter())

    def reasons(self) -> Counter[str]:
        return sum((part.source.reasons for part in self.partitions.values()), Counter())

    def folded(self) -> int:
        return sum(part.source.segments.folded for part in self.partitions.values())

    def held_outcomes(self) -> int:
        return sum(len(part.source.joiner.held) for part in self.partitions.values())

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
               done: dict[str, bytes | None], outbox: list[tuple[int, bytes]]) -> wire.JoinState:
        source = part.source
        joiner = source.joiner
        return wire.JoinState(part.seq, joiner.newest_prediction, joiner.newest_outcome,
                              list(joiner.counts().as_dict().values()), dict(source.records), dict(source.reasons),
                              source.segments.folded, dict(source.offsets or {}),
                              [list(key) for key in source.segments.known()], pending, held, done, outbox)

    def _snapshot(self, part: _Partition, outbox: list[tuple[int, bytes]]) -> list[Write]:
        """Everything as of the checkpoint just cut, with the deltas not yet durable; then the head,
        then what it makes obsolete."""
        joiner = part.source.joiner
        held: dict[str, wire.HeldEntry | None] = {
            key: (ts, msgspec.json.encode(outcome), offset) for key, (ts, outcome, offset) in joiner.held.items()}
        blob = wire.encode(self._state(part, dict(joiner.pending), held, dict(joiner.finals()), outbox))
        p = part.number
        part.generation += 1
        writes = _chunks(p, part.epoch, "snap", part.generation, blob)
        keys = [key for key, _ in writes]
        head = _head_key(p, part.epoch)
        writes.append((head, wire.encode(wire.Head(part.generation, part.seq, len(keys)))))
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
        log.info("restoring join partition %d in epoch %d from epoch %d: %d checkpoints after its snapshot", p,
                 part.epoch, newest, len(states) - (part.generation > 0))
        if not states:
            return
        source = part.source
        pending: dict[str, bytes] = {}
        held: dict[str, HeldOutcome] = {}
        done: dict[str, bytes] = {}
        for state in states:
            local = [source.segments.intern(tuple(key)) for key in state.segments]
            for key, packed in state.pending.items():
                if packed is None:
                    pending.pop(key, None)
                else:
                    ts, score, segment, predicted, offset = PENDING.unpack(packed)
                    pending[key] = PENDING.pack(ts, score, local[segment], predicted, offset)
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
                              (last.newest_prediction, last.newest_outcome), JoinCounts(*last.counts))
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


class _Dirty:
    """What merges changed on a metrics partition since its last save: written once per save, not per delta."""

    def __init__(self) -> None:
        self.alerts: list[Write] = []  # outbox entries of alerts raised
        self.slices: dict[tuple[int, int], None] = {}  # (slice, segment) merged into while open, in order
        self.bases: set[int] = set()  # segments whose base changed
        self.folded: list[tuple[int, SegmentKey]] = []  # slices folded into their base, whose entries go
        self.watermarks = False
        self.fences = False
        self.stale: list[bytes] = []  # keys of other epochs, deleted once this epoch's state is complete
        self.complete = False  # this owner's first save: its whole state under its epoch, then the marker

    def __bool__(self) -> bool:
        return bool(self.alerts or self.slices or self.bases or self.folded or self.watermarks or self.fences
                    or self.stale or self.complete)


class _Held:
    """One metrics partition: its rollup, what each stored entry took in, and what is not saved yet."""

    def __init__(self, rollup: Rollup, epoch: int) -> None:
        self.rollup = rollup
        self.epoch = epoch  # of this owner: the keys it writes
        self.fences: dict[int, wire.Fence] = {}  # per source, its newest owner
        self.waiting: dict[int, list[bytes]] = {}  # per source, older owners' deltas held until its fence lifts
        self.watermarks: dict[int, float] = {}  # the newest of each source
        self.slices: dict[tuple[int, SegmentKey], dict[int, int]] = {}  # open slice -> applied per source
        self.bases: dict[SegmentKey, dict[int, int]] = {}  # segment base -> applied per source
        self.outbox: dict[str, bytes] = {}  # alert id -> the alert, until the alerts topic has it
        self.dirty = _Dirty()
        self.early: dict[int, int] = {}  # per source, the last checkpoint whose early parts were merged


class ReduceStage:
    """The metrics stage of a worker: one engine Rollup per partition of the internal topic.

    `handle` merges a delta in memory and `save` returns the writes that make every merge since the
    last save durable: an open slice that many deltas touched is written once per save, not once per
    delta. The store is read only to restore a partition, so the caller decides when to save, when
    a write is safe and when a delta may be committed (once a save after its merge is durable).
    Open slices are stored one entry each; once a slice closes it is folded into its segment's
    base, so a restore reads one base per segment and the slices still open.

    An alert is part of the merge that raises it: its outbox entry comes first in the save's writes
    (a changelog partition keeps their order, so a restore that sees the merge sees the alert
    too), and it stays until `sent` says the alerts topic has it. A restore sends it again."""

    def __init__(self, spec: Spec, sources: int, store: Store, replay_source: str = "--input CAPTURE.jsonl") -> None:
        self.spec = spec
        self.replay_source = replay_source  # what an alert's replay command reads: this worker's broker
        self.sources = sources  # input partitions: windows close once all of them have passed
        self.store = store
        self.held: dict[int, _Held] = {}
        self.epochs: dict[int, int] = {}  # per partition, the epoch this worker was given it in
        self.fenced = 0  # deltas of a zombie owner's checkpoints, dropped
        self._fired: list[Alert | EarlyAlert] = []
        self._quiet = False

    @property
    def rollups(self) -> dict[int, Rollup]:
        return {q: held.rollup for q, held in self.held.items()}

    def assign(self, partitions: set[int], epoch: int) -> None:
        """This worker owns `partitions` from `epoch` on (the group generation that gave them)."""
        for partition in partitions:
            self.epochs[partition] = epoch

    def handle(self, partition: int, raw: bytes) -> None:
        """Merge one Delta in memory; `save` returns what makes it durable."""
        try:
            delta = wire.delta(raw)
        except msgspec.DecodeError:  # not ours: something else wrote to the internal topic
            log.warning("ignored a message the metrics stage cannot read on partition %d", partition)
            return
        held = self.partition(partition)
        if self._admit(held, delta, raw):
            self._merge(partition, held, delta)
        if self._lifted(held, delta.source):
            for waited in held.waiting.pop(delta.source):
                self.handle(partition, waited)  # the older owners' deltas a fence held, in the order they came

    def waiting(self, partition: int) -> bool:
        """Whether a fence holds deltas back on the partition: none may be acked until it lifts."""
        held = self.held.get(partition)
        return held is not None and any(held.waiting.values())

    def _admit(self, held: _Held, delta: wire.Delta, raw: bytes) -> bool:
        """Whether to merge a delta, given what the partition knows of its source's owners (see the
        module's notes on epochs); a delta of an older owner waits while the newest has not yet said
        which checkpoint it restored."""
        fence = held.fences.get(delta.source)
        if delta.seq == wire.FENCE:
            if fence is None or delta.epoch > fence.epoch:
                held.fences[delta.source] = wire.Fence(delta.epoch, None)
                held.dirty.fences = True
            return False
        if fence is None or delta.epoch > fence.epoch:  # an owner whose fence never came (older workers: 0)
            held.fences[delta.source] = wire.Fence(delta.epoch, delta.seq - 1)
            held.dirty.fences = True
        elif delta.epoch == fence.epoch:
            if fence.through is None:  # the owner's first checkpoint: it restored the one before
                fence.through = delta.seq - 1
                held.dirty.fences = True
                held.waiting.setdefault(delta.source, []).append(raw)
                return False  # merged after the deltas it held back, in the order they came
        elif fence.through is None:
            held.waiting.setdefault(delta.source, []).append(raw)
            return False
        elif delta.seq > fence.through:
            self.fenced += 1
            log.warning("dropped checkpoint %d of join partition %d from an owner of epoch %d: the owner of epoch"
                        " %d restored through checkpoint %d", delta.seq, delta.source, delta.epoch, fence.epoch,
                        fence.through)
            return False
        return True

    def _lifted(self, held: _Held, source: int) -> bool:
        fence = held.fences.get(source)
        return fence is not None and fence.through is not None and source in held.waiting

    def _merge(self, partition: int, held: _Held, delta: wire.Delta) -> None:
        rollup, source, seq, dirty = held.rollup, delta.source, delta.seq, held.dirty
        # Decide what is new before merging anything: two parts of one delta may land in one entry
        # (keys that fold into `other` here), and the first must not hide the second.
        fresh = []
        for p in delta.parts:
            segment = rollup.segments.intern(tuple(p.segment))
            key = rollup.key(segment)
            closed = p.late or p.slice_id < rollup.windows.closed_before
            applied = held.bases.setdefault(key, {}) if closed else held.slices.setdefault((p.slice_id, key), {})
            if seq > applied.get(source, -1):  # else delivered again
                fresh.append((p, key, closed, applied))
        if seq > held.early.get(source, -1):  # early parts are kept in memory only: once per (source, seq)
            held.early[source] = seq
            for e in delta.early:
                rollup.merge_early(e.part())
        for p, key, closed, applied in fresh:
            applied[source] = seq
            segment, _ = rollup.merge(Part(key, p.slice_id, p.late, Summary.from_state(self.spec.shape, p.summary)))
            if closed:
                dirty.bases.add(segment)
            else:
                dirty.slices[(p.slice_id, segment)] = None
        if delta.watermark > held.watermarks.get(source, -math.inf):
            held.watermarks[source] = delta.watermark
            dirty.watermarks = True
            self._advance(held, self.frontier(held))
        self._outbox(partition, held)

    def save(self, partition: int) -> list[Write]:
        """The writes that make every merge since the last save durable, in an order whose every prefix
        restores to a state that redelivering the unsaved deltas completes: alerts before the merges
        that raise them, a base before the slices it folds go, the watermarks last."""
        held = self.held.get(partition)
        if held is None or not held.dirty:
            return []
        dirty, held.dirty = held.dirty, _Dirty()
        rollup, prefix = held.rollup, _metrics_prefix(partition, held.epoch)
        writes = dirty.alerts
        for slice_id, segment in dirty.slices:
            merged = rollup.windows.open_slice(segment, slice_id)
            if merged is not None:  # else folded since: its base holds it
                key = rollup.key(segment)
                opened = wire.SliceEntry(merged.state(), held.slices[(slice_id, key)])
                writes.append((_slice_key(prefix, slice_id, key), wire.encode(opened)))
        through = rollup.windows.closed_before
        for segment in sorted(dirty.bases):
            key = rollup.key(segment)
            base = wire.BaseEntry(rollup.base(segment), held.bases.get(key, {}), through)
            writes.append((_base_key(prefix, key), wire.encode(base)))
        writes += [(_slice_key(prefix, slice_id, key), None) for slice_id, key in dirty.folded]
        if dirty.fences:
            writes.append((prefix + b"fences", wire.encode(held.fences)))
        if dirty.watermarks:
            writes.append((prefix + b"watermarks", wire.encode(held.watermarks)))
        if dirty.complete:
            writes.append((prefix + COMPLETE, b""))
        return writes + [(key, None) for key in dirty.stale]

    def unsaved(self, partition: int) -> bool:
        held = self.held.get(partition)
        return held is not None and bool(held.dirty)

    def sent(self, partition: int, alert_id: str) -> list[Write]:
        """The alerts topic has the alert: its outbox entry may go."""
        held = self.held.get(partition)
        if held is None or held.outbox.pop(alert_id, None) is None:
            return []
        return [(_alert_key(_metrics_prefix(partition, held.epoch), alert_id), None)]

    def _outbox(self, partition: int, held: _Held) -> None:
        for alert in self._fired:
            raw = held.outbox[alert.id] = orjson.dumps(alert.as_dict())
            held.dirty.alerts.append((_alert_key(_metrics_prefix(partition, held.epoch), alert.id), raw))
        self._fired = []

    def partition(self, partition: int) -> _Held:
        """The partition's rollup, restored from the store the first time it is needed."""
        held = self.held.get(partition)
        if held is None:
            rollup = Rollup(self.spec, self.replay_source, on_alert=self._alert, on_early=self._alert)
            held = self.held[partition] = _Held(rollup, self.epochs.get(partition, 0))
            self._restore(partition, held)
        return held

    def revoke(self, partitions: set[int]) -> list[Rollup]:
        return [self.held.pop(p).rollup for p in partitions if p in self.held]

    def frontier(self, held: _Held) -> float:
        """The watermark every source has passed, as seen on one partition."""
        seen = held.watermarks
        return min(seen.values()) if len(seen) >= self.sources else -math.inf

    def _advance(self, held: _Held, watermark: float) -> None:
        """Close what `watermark` has passed, and fold the closed slices into their segments' bases."""
        rollup, dirty = held.rollup, held.dirty
        for segment, slice_id in rollup.advance(watermark):
            key = rollup.key(segment)
            applied = held.slices.pop((slice_id, key), {})
            base = held.bases.setdefault(key, {})
            for source, seq in applied.items():
                base[source] = max(base.get(source, -1), seq)
            dirty.folded.append((slice_id, key))
            dirty.bases.add(segment)

    def _alert(self, alert: Alert | EarlyAlert) -> None:
        if not self._quiet:  # a restore finds again the alerts its outbox already holds
            self._fired.append(alert)

    def _restore(self, partition: int, held: _Held) -> None:
        """Rebuild from the newest complete epoch's bases and open slices; windows closed since are found
        again, quietly. If that epoch is not this owner's, its first save writes everything anew under its own."""
        prefix = f"{partition}|".encode()
        epochs: dict[int, list[tuple[bytes, bytes, bytes]]] = {}  # epoch -> (stored key, entry key, value)
        for physical, value in list(self.store.items()):
            if physical.startswith(prefix):
                rest = physical[len(prefix):]
                epoch, _, key = rest.partition(b"|") if rest[:1].isdigit() else (b"0", b"", rest)
                epochs.setdefault(int(epoch), []).append((physical, key, value))
        complete = [e for e, entries in epochs.items() if e == 0 or any(k == COMPLETE for _, k, _ in entries)]
        newest = max(complete, default=0)
        held.epoch = max(held.epoch, newest)  # never below what is stored (a group made anew starts at 1)
        entries = epochs.pop(newest, [])
        saved = [(key, value) for _, key, value in entries]
        held.dirty.stale = [physical for entries in epochs.values() for physical, _, _ in entries]
        log.info("restoring metrics partition %d in epoch %d from %d stored entries of epoch %d", partition,
                 held.epoch, len(saved), newest)
        rollup = held.rollup
        throughs: dict[SegmentKey, int] = {}  # per segment, the slices its base has folded in
        slices: list[tuple[int, SegmentKey, SegmentKey, wire.SliceEntry]] = []  # slice, stored key, key here
        for key, value in saved:
            if key == b"watermarks":
                held.watermarks = dict(wire.watermarks(value))
            elif key == b"fences":
                held.fences = dict(wire.fences(value))
            elif key == COMPLETE:
                continue
            elif key.startswith(b"a"):
                held.outbox[key[1:].decode()] = value
            elif key.startswith(b"b"):
                base = wire.base_entry(value)
                segment_key = rollup.key(rollup.restore(_segment(key[1:]), base.base))
                held.bases[segment_key] = dict(base.applied)
                throughs[segment_key] = base.through
            else:
                slice_id, stored = _slice(key[1:])
                slices.append((slice_id, stored, rollup.key(rollup.segments.intern(stored)), wire.slice_entry(value)))
        self._quiet = True
        try:
            for slice_id, stored, segment_key, entry in sorted(slices, key=lambda item: item[0]):
                if slice_id < throughs.get(segment_key, NEVER):  # folded before a crash cut the delete
                    held.dirty.folded.append((slice_id, stored))
                    continue
                held.slices[(slice_id, segment_key)] = dict(entry.applied)
                rollup.merge(Part(segment_key, slice_id, False, Summary.from_state(self.spec.shape, entry.summary)))
            # Close at least as far as any base has: a crash may have cut the watermarks' write.
            through = max(throughs.values(), default=NEVER)
            watermark = max(self.frontier(held), through * rollup.windows.width + self.spec.horizon)
            self._advance(held, watermark)
        finally:
            self._quiet = False
        if held.epoch != newest:
            self._rewrite(partition, held, [physical for physical, _, _ in entries])

    def _rewrite(self, partition: int, held: _Held, old: list[bytes]) -> None:
        """Mark everything restored for the first save, under this owner's epoch, with the marker that
        makes it the partition's state; then the old epoch's keys go."""
        dirty, rollup = held.dirty, held.rollup
        dirty.complete = True
        dirty.stale += old
        dirty.folded = []  # the old epoch's keys, stale already
        dirty.alerts = [(_alert_key(_metrics_prefix(partition, held.epoch), alert_id), raw)
                        for alert_id, raw in held.outbox.items()]
        for slice_id, key in held.slices:
            dirty.slices[(slice_id, rollup.segments.intern(key))] = None
        dirty.bases = {rollup.segments.intern(key) for key in held.bases}
        dirty.watermarks = dirty.fences = True


COMPLETE = b"complete"


def _metrics_prefix(partition: int, epoch: int) -> bytes:
    return (f"{partition}|{epoch}|" if epoch else f"{partition}|").encode()


def _slice_key(prefix: bytes, slice_id: int, segment: SegmentKey) -> bytes:
    return prefix + b"s" + wire.encode((slice_id, segment))


def _alert_key(prefix: bytes, alert_id: str) -> bytes:
    return prefix + f"a{alert_id}".encode()


def _base_key(prefix: bytes, segment: SegmentKey) -> bytes:
    return prefix + b"b" + wire.encode(segment)


_slice = msgspec.msgpack.Decoder(tuple[int, tuple[str, ...]]).decode
_segment = msgspec.msgpack.Decoder(tuple[str, ...]).decode

"""The two stages of the streaming workers, free of Faust so they can be tested without a broker.

`JoinStage` runs one event-time join per input partition (predictions and outcomes are
co-partitioned by decision ID). Each partition pre-aggregates its final decisions into partial
summaries per segment and slice of decision time, and at each checkpoint it writes its state
changes as one message and then sends those partials (a `Delta`) to every metrics partition.
`ReduceStage` merges the partials of the segments it owns into one `Rollup` per partition and
closes windows once every source has passed them. Shipping a few mergeable partials a second
instead of every decision is what makes a worker fast; counting each (source, checkpoint) once
per slice is what makes redelivery after a restart harmless.

State is persisted into key-value stores (the Faust tables):

    join     "<p>/log/<seq>/<i>"   the changes of checkpoint <seq> (chunk <i>)
             "<p>/snap/<gen>/<i>"  a snapshot of the whole partition
             "<p>/head"            which snapshot is current, and as of which checkpoint
    metrics  "<q>|<kind, slice, segment>"  merged summary of a slice, and what it took in
             "<q>|watermarks"              the newest watermark of each source
"""

from __future__ import annotations

import logging
import math
import zlib
from collections import Counter
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field

import msgspec

from monitor.contract.errors import RecordError
from monitor.contract.events import decode_outcome, decode_prediction
from monitor.contract.spec import Spec
from monitor.engine.alerts import Alert
from monitor.engine.join import PENDING, Decision, HeldOutcome, JoinCounts, Joiner
from monitor.engine.monitor import DeadLetter, Rollup, check_outcome, check_prediction
from monitor.engine.segments import OVERALL, Segments
from monitor.stats.summary import Summary
from monitor.stream import wire

Store = MutableMapping[bytes, bytes]
Write = tuple[bytes, bytes | None]  # a key and its new value; None deletes it
OVERALL_KEY = b"\x00all"
CHECKPOINT_RECORDS = 2000  # records per checkpoint at most: bounds the message size
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

    def pending(self, decision_id: str, packed: bytes | None) -> None:
        self.pendings[decision_id] = packed

    def held(self, decision_id: str, entry: HeldOutcome | None) -> None:
        self.helds[decision_id] = None if entry is None else (
            entry[0], msgspec.json.encode(entry[1]), entry[2])

    def done(self, decision_id: str, packed: bytes | None) -> None:
        self.dones[decision_id] = packed


class _Partition:
    """One input partition: its join, the partials it has not sent, and its checkpoint bookkeeping."""

    def __init__(self, number: int, spec: Spec, now: float) -> None:
        self.number = number
        self.changes = _Changes()
        self.joiner = Joiner(spec, self._final, self.changes)
        self.width = spec.slice_seconds
        self.parts: dict[tuple[int, int], Summary] = {}  # (segment, slice) -> partial summary
        self.delays: list[float] = []
        self.spec = spec
        self.records: Counter[str] = Counter()
        self.offsets: dict[str, int] = {}
        self.last_seen = now  # wall clock of the last record
        self.saved_at = now
        self.unsaved = 0  # records since the last checkpoint
        self.seq = 0  # the last checkpoint
        self.sent_watermark = -math.inf
        self.resend: list[tuple[int, bytes]] = []  # deltas of restored checkpoints, maybe never sent
        self.logs: dict[int, int] = {}  # checkpoints since the snapshot: seq -> chunks
        self.log_bytes = 0
        self.generation, self.snapshot_chunks, self.snapshot_bytes = 0, 0, 0
        self.stale: list[bytes] = []  # keys a crash left behind
        # Restored: the first checkpoint writes a snapshot, so the state no longer depends on
        # checkpoints a previous owner may still have had in flight.
        self.restored = False

    def _final(self, d: Decision) -> None:
        key = (d.segment, int(d.ts // self.width))
        part = self.parts.get(key)
        if part is None:
            part = self.parts[key] = Summary(self.spec)
        part.update(d)
        if d.delay is not None:
            self.delays.append(d.delay)


class JoinStage:
    """The join stage of a worker: the engine's join, once per assigned input partition."""

    def __init__(self, spec: Spec, store: Store, reducers: int, snapshot_min_bytes: int = SNAPSHOT_MIN_BYTES) -> None:
        self.spec = spec
        self.store = store
        self.reducers = reducers  # partitions of the metrics stage
        self.snapshot_min_bytes = snapshot_min_bytes
        self.segments = Segments(spec)
        self.partitions: dict[int, _Partition] = {}

    def process(self, topic: str, partition: int, offset: int, value: bytes, now: float) -> list[DeadLetter]:
        """Handle one record of `predictions` or `outcomes`; returns what to dead-letter."""
        part = self.partition(partition, now)
        part.unsaved += 1
        if offset <= part.offsets.get(topic, -1):  # delivered again after a restart: already counted
            return []
        part.offsets[topic] = offset
        part.records[topic] += 1
        part.last_seen = now
        joiner = part.joiner
        try:
            if topic == self.spec.topics.predictions:
                p = decode_prediction(value)
                ts, score, predicted = check_prediction(self.spec, p)
                joiner.prediction(p.decision_id, ts, score, self.segments.of(p), predicted, offset)
            else:
                o = decode_outcome(value)
                joiner.outcome(o, check_outcome(self.spec, o), offset)
        except RecordError as exc:
            joiner.tally.invalid += 1
            return [DeadLetter(topic, exc.reason, bytes(value), partition, offset)]
        except Exception as exc:  # a bug must not crash the agent: Faust would skip past the record
            log.exception("record %s[%d]@%d failed", topic, partition, offset)
            joiner.tally.invalid += 1
            return [DeadLetter(topic, f"internal error: {exc!r}", bytes(value), partition, offset)]
        return []

    def tick(self, partition: int, now: float) -> None:
        """A quiet partition's watermark follows the wall clock once it has been idle long enough."""
        part = self.partition(partition, now)
        idle = now - part.last_seen
        if idle < self.spec.idle_timeout:
            return
        joiner = part.joiner
        newest = (joiner.newest_prediction, joiner.newest_outcome)
        base = min(newest) if min(newest) > -math.inf else max(newest)
        if base > -math.inf:
            joiner.advance(base + idle)

    def due(self, partition: int, now: float) -> bool:
        """Whether the partition should checkpoint now."""
        part = self.partitions.get(partition)
        if part is None:
            return False
        if part.unsaved >= CHECKPOINT_RECORDS or part.resend:
            return True
        return now - part.saved_at >= CHECKPOINT_SECONDS and (
            part.unsaved > 0 or part.joiner.watermark > part.sent_watermark)

    def backlog(self, partition: int) -> int:
        """Records the partition took in since its last checkpoint."""
        part = self.partitions.get(partition)
        return 0 if part is None else part.unsaved

    def checkpoint(self, partition: int, now: float) -> Checkpoint:
        """Cut a checkpoint of the partition: its state changes and its partials since the last one."""
        part = self.partitions[partition]
        part.seq += 1
        deltas = self._deltas(part)
        changes, part.changes = part.changes, _Changes()
        part.joiner.journal = part.changes
        blob = wire.encode(self._state(part, changes.pendings, changes.helds, changes.dones, deltas))
        log_writes = _chunks(partition, "log", part.seq, blob)
        part.logs[part.seq] = len(log_writes)
        part.log_bytes += len(blob)
        checkpoint = Checkpoint(log_writes, part.resend + deltas)
        part.resend, part.unsaved, part.saved_at = [], 0, now
        if part.restored or part.log_bytes >= max(self.snapshot_min_bytes, part.snapshot_bytes):
            checkpoint.compaction = self._snapshot(part)
        return checkpoint

    def partition(self, partition: int, now: float = 0.0) -> _Partition:
        """The partition's join, restored from the store the first time it is needed."""
        part = self.partitions.get(partition)
        if part is None:
            part = self.partitions[partition] = _Partition(partition, self.spec, now)
            self._restore(part)
        return part

    def revoke(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.partitions.pop(partition, None)

    def counts(self) -> JoinCounts:
        total = JoinCounts()
        for part in self.partitions.values():
            for name, value in part.joiner.counts().as_dict().items():
                setattr(total, name, getattr(total, name) + value)
        return total

    def record_counts(self) -> Counter[str]:
        return sum((part.records for part in self.partitions.values()), Counter())

    def held_outcomes(self) -> int:
        return sum(len(part.joiner.held) for part in self.partitions.values())

    # -- checkpoints -------------------------------------------------------------------------------
    def _deltas(self, part: _Partition) -> list[tuple[int, bytes]]:
        """The partials since the last checkpoint, one Delta per metrics partition (each needs the watermark)."""
        by_reducer: list[list[wire.SlicePart]] = [[] for _ in range(self.reducers)]
        overall: dict[int, Summary] = {}
        for (segment, slice_id), summary in sorted(part.parts.items(), key=lambda item: item[0][1]):
            key = list(self.segments.key(segment))
            by_reducer[reducer(key, self.reducers)].append(wire.SlicePart(key, slice_id, summary.state()))
            if segment != OVERALL:  # the overall segment is the merge of the combinations
                overall.setdefault(slice_id, Summary(self.spec)).merge(summary)
        home = reducer([], self.reducers)
        by_reducer[home].extend(wire.SlicePart([], s, summary.state()) for s, summary in overall.items())
        watermark = part.joiner.watermark
        deltas = [(q, wire.encode(wire.Delta(part.number, part.seq, watermark, parts,
                                             part.delays if q == home else [])))
                  for q, parts in enumerate(by_reducer)]
        part.parts, part.delays, part.sent_watermark = {}, [], watermark
        return deltas

    def _state(self, part: _Partition, pending: dict[str, bytes | None], held: dict[str, wire.HeldEntry | None],
               done: dict[str, bytes | None], outbox: list[tuple[int, bytes]]) -> wire.JoinState:
        joiner = part.joiner
        return wire.JoinState(part.seq, joiner.newest_prediction, joiner.newest_outcome,
                              list(joiner.counts().as_dict().values()), dict(part.records), dict(part.offsets),
                              [list(key) for key in self.segments.known()], pending, held, done, outbox)

    def _snapshot(self, part: _Partition) -> list[Write]:
        """Everything as of the checkpoint just cut; then the head, then what it makes obsolete."""
        joiner = part.joiner
        held: dict[str, wire.HeldEntry | None] = {
            key: (ts, msgspec.json.encode(outcome), offset) for key, (ts, outcome, offset) in joiner.held.items()}
        done: dict[str, bytes | None] = {**joiner._done_before, **joiner._done}
        blob = wire.encode(self._state(part, dict(joiner.pending), held, done, []))
        p, old = part.number, part.generation
        part.generation += 1
        writes = _chunks(p, "snap", part.generation, blob)
        chunks = len(writes)
        writes.append((f"{p}/head".encode(), wire.encode(wire.Head(part.generation, part.seq, chunks))))
        writes += [(_blob_key(p, "log", seq, i), None) for seq, n in part.logs.items() for i in range(n)]
        writes += [(_blob_key(p, "snap", old, i), None) for i in range(part.snapshot_chunks)]
        writes += [(key, None) for key in part.stale]
        part.logs, part.log_bytes, part.stale, part.restored = {}, 0, [], False
        part.snapshot_chunks, part.snapshot_bytes = chunks, len(blob)
        return writes

    def _restore(self, part: _Partition) -> None:
        """Rebuild a partition from its snapshot and the complete checkpoints after it."""
        p = part.number
        prefix = f"{p}/".encode()
        saved = {key.decode(): value for key, value in list(self.store.items()) if key.startswith(prefix)}
        head = wire.head(saved.pop(f"{p}/head")) if f"{p}/head" in saved else None
        blobs: dict[tuple[str, int], dict[int, bytes]] = {}
        for key in saved:
            _, kind, number, i = key.split("/")
            blobs.setdefault((kind, int(number)), {})[int(i)] = saved[key]
        states = []
        if head is not None:
            states.append(wire.join_state(_joined(blobs.pop(("snap", head.generation)))))
            part.generation, part.snapshot_chunks, part.seq = head.generation, head.chunks, head.seq
        for seq in sorted(n for kind, n in blobs if kind == "log"):
            chunks = blobs.pop(("log", seq))
            if seq != part.seq + 1 or len(chunks) != wire.chunk(chunks[0])[0]:
                part.stale += [_blob_key(p, "log", seq, i) for i in chunks]  # obsolete, or cut by a crash
                continue
            state = wire.join_state(_joined(chunks))
            states.append(state)
            part.seq = seq
            part.logs[seq] = len(chunks)
            part.resend += state.outbox  # durable, but perhaps never sent: the metrics stage tells
        part.stale += [_blob_key(p, kind, n, i) for (kind, n), chunks in blobs.items() for i in chunks]
        log.info("restoring join partition %d: %d checkpoints after snapshot %s", p, len(states) - (head is not None),
                 head.generation if head else "none")
        if not states:
            return
        pending: dict[str, bytes] = {}
        held: dict[str, HeldOutcome] = {}
        done: dict[str, bytes] = {}
        for state in states:
            local = [self.segments.intern(tuple(key)) for key in state.segments]
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
        part.restored = True
        part.joiner.restore(pending.items(), held.items(), done.items(),
                            (last.newest_prediction, last.newest_outcome), JoinCounts(*last.counts))
        part.records.update(last.records)
        part.offsets.update(last.offsets)
        part.sent_watermark = part.joiner.watermark


def _blob_key(partition: int, kind: str, number: int, chunk: int) -> bytes:
    return f"{partition}/{kind}/{number}/{chunk}".encode()


def _chunks(partition: int, kind: str, number: int, blob: bytes) -> list[Write]:
    parts = [blob[i:i + CHUNK_BYTES] for i in range(0, len(blob), CHUNK_BYTES)] or [b""]
    return [(_blob_key(partition, kind, number, i), wire.encode((len(parts), part))) for i, part in enumerate(parts)]


def _joined(chunks: dict[int, bytes]) -> bytes:
    return b"".join(wire.chunk(chunks[i])[1] for i in range(len(chunks)))


class ReduceStage:
    """The metrics stage of a worker: one Rollup per partition of the internal topic.

    `handle` returns the writes that make a merge durable; the store is read only to restore a
    partition, so the caller decides when a write is safe and when a message may be committed."""

    def __init__(self, spec: Spec, sources: int, store: Store,
                 on_alert: Callable[[Alert], None] | None = None) -> None:
        self.spec = spec
        self.sources = sources  # input partitions: windows close once all of them have passed
        self.store = store
        self.on_alert = on_alert
        self.rollups: dict[int, Rollup] = {}
        self.watermarks: dict[int, dict[int, float]] = {}  # per partition, the newest of each source
        # Per partition, per (kind, slice, segment): the last checkpoint of each source merged
        # into it, and for late parts (slices already closed) their summaries.
        self.applied: dict[int, dict[tuple[str, int, tuple[str, ...]], dict[int, int]]] = {}
        self.late: dict[int, dict[tuple[int, tuple[str, ...]], Summary]] = {}
        self._quiet = False

    def handle(self, partition: int, raw: bytes) -> list[Write]:
        """Merge one Delta; returns what to persist before the message may be committed."""
        try:
            delta = wire.delta(raw)
        except msgspec.DecodeError:  # not ours: something else wrote to the internal topic
            log.warning("ignored a message the metrics stage cannot read on partition %d", partition)
            return []
        rollup = self.rollup(partition)
        applied, source, seq = self.applied[partition], delta.source, delta.seq
        writes: list[Write] = []
        for part in delta.parts:
            key = tuple(part.segment)
            on_time, late = ("s", part.slice_id, key), ("l", part.slice_id, key)
            if seq <= max(applied.get(on_time, {}).get(source, -1), applied.get(late, {}).get(source, -1)):
                continue  # delivered again
            summary = Summary.from_state(self.spec, part.summary)
            segment = rollup.segments.intern(key)
            if part.slice_id < rollup.windows.closed_before:  # too late for its window: totals only
                rollup.windows.merge(segment, part.slice_id, summary)
                entry, kind = self.late[partition].setdefault((part.slice_id, key), Summary(self.spec)), late
                entry.merge(summary)
            else:
                entry, kind = rollup.windows.merge(segment, part.slice_id, summary), on_time
            seen = applied.setdefault(kind, {})
            seen[source] = seq
            writes.append((_slice_key(partition, kind), wire.encode(wire.SliceEntry(entry.state(), seen))))
        if writes:
            rollup.delays.extend(delta.delays)
        seen_watermarks = self.watermarks[partition]
        if delta.watermark > seen_watermarks.get(source, -math.inf):
            seen_watermarks[source] = delta.watermark
            writes.append((f"{partition}|watermarks".encode(), wire.encode(seen_watermarks)))  # after the slices
            rollup.advance(self.frontier(partition))
        return writes

    def rollup(self, partition: int) -> Rollup:
        rollup = self.rollups.get(partition)
        if rollup is None:
            rollup = self.rollups[partition] = Rollup(self.spec, on_alert=self._alert, derive_overall=False)
            self.applied[partition], self.late[partition], self.watermarks[partition] = {}, {}, {}
            self._restore(partition, rollup)
        return rollup

    def revoke(self, partitions: set[int]) -> list[Rollup]:
        for p in partitions:
            self.watermarks.pop(p, None)
            self.applied.pop(p, None)
            self.late.pop(p, None)
        return [self.rollups.pop(p) for p in partitions if p in self.rollups]

    def frontier(self, partition: int) -> float:
        """The watermark every source has passed, as seen on one partition."""
        seen = self.watermarks.get(partition, {})
        return min(seen.values()) if len(seen) >= self.sources else -math.inf

    def _alert(self, alert: Alert) -> None:
        if not self._quiet and self.on_alert is not None:
            self.on_alert(alert)

    def _restore(self, partition: int, rollup: Rollup) -> None:
        """Rebuild from the stored slices; windows and alerts are found again, quietly."""
        prefix = f"{partition}|".encode()
        saved = [(key[len(prefix):], value) for key, value in list(self.store.items()) if key.startswith(prefix)]
        log.info("restoring metrics partition %d from %d stored entries", partition, len(saved))
        slices: list[tuple[int, tuple[str, ...], Summary]] = []
        late: list[tuple[int, tuple[str, ...], Summary]] = []
        for key, value in saved:
            if key == b"watermarks":
                self.watermarks[partition] = dict(wire.watermarks(value))
                continue
            kind, slice_id, segment = _kind(key)
            entry = wire.slice_entry(value)
            self.applied[partition][(kind, slice_id, segment)] = dict(entry.applied)
            summary = Summary.from_state(self.spec, entry.summary)
            (slices if kind == "s" else late).append((slice_id, segment, summary))
        self._quiet = True
        try:
            for slice_id, segment, summary in sorted(slices, key=lambda item: item[0]):
                rollup.windows.merge(rollup.segments.intern(segment), slice_id, summary)
            rollup.advance(self.frontier(partition))
            for slice_id, segment, summary in late:
                self.late[partition][(slice_id, segment)] = summary
                rollup.windows.merge(rollup.segments.intern(segment), slice_id, summary)
        finally:
            self._quiet = False


_kind = msgspec.msgpack.Decoder(tuple[str, int, tuple[str, ...]]).decode


def _slice_key(partition: int, kind: tuple[str, int, tuple[str, ...]]) -> bytes:
    return f"{partition}|".encode() + wire.encode(kind)

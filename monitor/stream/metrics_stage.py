"""The metrics stage of a streaming worker, free of Faust so it runs and is tested without a broker.

`MetricsStage` merges the parts of the segments it owns (`monitor.stream.join_stage` sends them)
into one engine `Rollup` per partition of the internal topic, and closes windows once every source
has passed them. Merging each (source, checkpoint) once is what makes redelivery after a restart
harmless. The keys it writes, and how their epochs and fences keep a zombie owner out:
`monitor.stream.store`.
"""

from __future__ import annotations

import logging
import math

import msgspec

from monitor.contract.spec import Spec
from monitor.engine.alerts import Alert
from monitor.engine.comparisons import CAPTURE
from monitor.engine.early_alerts import EarlyAlert
from monitor.engine.rollup import Rollup
from monitor.engine.source import Part
from monitor.engine.windows import NEVER, SegmentKey
from monitor.stats.summary import Summary
from monitor.stream import wire
from monitor.stream.early_store import EARLY, EarlyStore
from monitor.stream.store import Ownership, Store, Write

AHEAD_LIMIT = 1_000  # deltas of one source held for an earlier checkpoint, before it is given up for
SAVE_SECONDS = 0.5  # the age of a metrics partition's unsaved merges: acks and alerts wait for a save, gauges do not
log = logging.getLogger(__name__)


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


class _Partition:
    """One metrics partition: its rollup, what each stored entry took in, and what is not saved yet."""

    def __init__(self, rollup: Rollup, epoch: int) -> None:
        self.rollup = rollup
        self.early = EarlyStore(rollup)
        self.epoch = epoch  # of this owner: the keys it writes
        self.fences: dict[int, wire.Fence] = {}  # per source, its newest owner
        self.waiting: dict[int, list[bytes]] = {}  # per source, older owners' deltas held until its fence lifts
        self.watermarks: dict[int, float] = {}  # the newest of each source
        self.slices: dict[tuple[int, SegmentKey], dict[int, int]] = {}  # open slice -> applied per source
        self.bases: dict[SegmentKey, dict[int, int]] = {}  # segment base -> applied per source
        self.outbox: dict[str, bytes] = {}  # alert id -> the alert, until the alerts topic has it
        self.ahead: dict[int, dict[int, bytes]] = {}  # per source, deltas held until the checkpoints before come
        self.dirty = _Dirty()


class MetricsStage:
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

    def __init__(self, spec: Spec, sources: int, store: Store, replay_source: str = CAPTURE) -> None:
        self.spec = spec
        self.replay_source = replay_source  # what an alert's replay command reads: this worker's broker
        self.sources = sources  # input partitions: windows close once all of them have passed
        self.store = store
        self.partitions: dict[int, _Partition] = {}
        self.fenced = 0  # deltas of a zombie owner's checkpoints, dropped
        self.ownership = Ownership()
        self.assign, self.owns = self.ownership.assign, self.ownership.owns  # `Ownership` says why
        self.strays = 0  # deltas of a revoked partition, left to its new owner
        self.skipped = 0  # checkpoints given up for after `AHEAD_LIMIT` later ones waited for them
        self.redelivered = 0  # deltas of checkpoints already merged, delivered again: merged no second time
        self._fired: list[Alert | EarlyAlert] = []
        self._catching: set[tuple[int, int]] = set()  # (partition, source) whose held deltas are being merged
        self._quiet = False

    @property
    def rollups(self) -> dict[int, Rollup]:
        return {q: part.rollup for q, part in self.partitions.items()}

    def handle(self, partition: int, raw: bytes) -> None:
        """Merge one Delta in memory; `save` returns what makes it durable."""
        if not self.owns(partition):
            self.strays += 1
            log.info("left a delta of revoked metrics partition %d to its new owner", partition)
            return
        try:
            delta = wire.delta(raw)
        except msgspec.DecodeError:  # not ours: something else wrote to the internal topic
            log.warning("ignored a message the metrics stage cannot read on partition %d", partition)
            return
        part = self.partition(partition)
        if self._admit(part, delta, raw) and self._in_sequence(partition, part, delta, raw):
            self._merge(partition, part, delta)
            self._catch_up(partition, part, delta.source)
        if self._lifted(part, delta.source):
            for waited in part.waiting.pop(delta.source):
                self.handle(partition, waited)  # the older owners' deltas a fence held, in the order they came

    def waiting(self, partition: int) -> bool:
        """Whether a fence, or a gap in a source's checkpoints, holds deltas back on the partition: none may be
        acked until they are merged."""
        part = self.partitions.get(partition)
        return part is not None and (any(part.waiting.values()) or any(part.ahead.values()))

    def _in_sequence(self, partition: int, part: _Partition, delta: wire.Delta, raw: bytes) -> bool:
        """Whether the delta is the source's next checkpoint here (or an earlier one, delivered again); one further
        on waits for those before it. Faust can hand the metrics stage a partition's later deltas before the
        earlier ones it dropped in a rebalance (its seek back comes after): merged first, a later checkpoint would
        make its earlier ones look delivered again in the entries it touched, and they would be lost there."""
        merged = part.fences[delta.source].merged
        if merged is None or delta.seq <= merged + 1:
            self.redelivered += merged is not None and delta.seq <= merged
            return True
        held = part.ahead.setdefault(delta.source, {})
        if not held:
            log.info("metrics partition %d holds checkpoint %d of join partition %d until checkpoints %d to %d come",
                     partition, delta.seq, delta.source, merged + 1, delta.seq - 1)
        held[delta.seq] = raw
        if len(held) > AHEAD_LIMIT:  # they are not coming: go on, loudly, rather than stop the source for good
            first = min(held)
            self.skipped += first - merged - 1
            log.error("metrics partition %d: checkpoints %d to %d of join partition %d never came; their decisions"
                      " are missing from this partition's segments", partition, merged + 1, first - 1, delta.source)
            part.fences[delta.source].merged = first - 1
            self._catch_up(partition, part, delta.source)
        return False

    def _catch_up(self, partition: int, part: _Partition, source: int) -> None:
        """Merge the held deltas that are next in the source's sequence now (in a loop, not by recursion)."""
        held = part.ahead.get(source)
        if not held or (partition, source) in self._catching:
            return
        self._catching.add((partition, source))
        try:
            while held:
                merged = part.fences[source].merged
                for seq in [seq for seq in held if merged is not None and seq <= merged]:
                    del held[seq]  # delivered again meanwhile, and merged
                raw = None if merged is None else held.pop(merged + 1, None)
                if raw is None:
                    break
                self.handle(partition, raw)
        finally:
            self._catching.discard((partition, source))

    def _admit(self, part: _Partition, delta: wire.Delta, raw: bytes) -> bool:
        """Whether to merge a delta, given what the partition knows of its source's owners (see the
        module's notes on epochs); a delta of an older owner waits while the newest has not yet said
        which checkpoint it restored."""
        fence = part.fences.get(delta.source)
        if delta.seq == wire.FENCE:
            if fence is None or delta.epoch > fence.epoch:
                part.fences[delta.source] = wire.Fence(delta.epoch, None, None if fence is None else fence.merged)
                part.dirty.fences = True
            return False
        if fence is None or delta.epoch > fence.epoch:  # an owner whose fence never came (older workers: 0)
            part.fences[delta.source] = wire.Fence(delta.epoch, delta.seq - 1, None if fence is None else fence.merged)
            part.dirty.fences = True
        elif delta.epoch == fence.epoch:
            if fence.through is None:  # the owner's first checkpoint: it restored the one before
                fence.through = delta.seq - 1
                part.dirty.fences = True
                log.info("join partition %d's owner of epoch %d restored through checkpoint %d (%d deltas of older"
                         " owners held)", delta.source, delta.epoch, fence.through,
                         len(part.waiting.get(delta.source, [])))
                part.waiting.setdefault(delta.source, []).append(raw)
                return False  # merged after the deltas it held back, in the order they came
        elif fence.through is None:
            part.waiting.setdefault(delta.source, []).append(raw)
            return False
        elif delta.seq > fence.through:
            self.fenced += 1
            log.warning("dropped checkpoint %d of join partition %d from an owner of epoch %d: the owner of epoch"
                        " %d restored through checkpoint %d", delta.seq, delta.source, delta.epoch, fence.epoch,
                        fence.through)
            return False
        return True

    def _lifted(self, part: _Partition, source: int) -> bool:
        fence = part.fences.get(source)
        return fence is not None and fence.through is not None and source in part.waiting

    def _merge(self, partition: int, part: _Partition, delta: wire.Delta) -> None:
        rollup, source, seq, dirty = part.rollup, delta.source, delta.seq, part.dirty
        fence = part.fences[source]
        if fence.merged is None or seq > fence.merged:  # a redelivery changes nothing to write
            fence.merged = seq
            dirty.fences = True
        # Decide what is new before merging anything: two parts of one delta may land in one entry
        # (keys that fold into `other` here), and the first must not hide the second.
        fresh = []
        for p in delta.parts:
            segment = rollup.segments.intern(tuple(p.segment))
            key = rollup.key(segment)
            closed = p.late or p.slice_id < rollup.windows.closed_before
            applied = part.bases.setdefault(key, {}) if closed else part.slices.setdefault((p.slice_id, key), {})
            if seq > applied.get(source, -1):  # else delivered again
                fresh.append((p, key, closed, applied))
        part.early.merge(source, seq, delta.early)
        for p, key, closed, applied in fresh:
            applied[source] = seq
            segment, _ = rollup.merge(Part(key, p.slice_id, p.late, Summary.from_state(self.spec.shape, p.summary)))
            if closed:
                dirty.bases.add(segment)
            else:
                dirty.slices[(p.slice_id, segment)] = None
        if delta.watermark > part.watermarks.get(source, -math.inf):
            part.watermarks[source] = delta.watermark
            dirty.watermarks = True
            self._advance(part, self.frontier(part))
        self._outbox(partition, part)

    def save(self, partition: int) -> list[Write]:
        """The writes that make every merge since the last save durable, in an order whose every prefix
        restores to a state that redelivering the unsaved deltas completes: alerts before the merges
        that raise them, a base before the slices it folds go, the watermarks last."""
        part = self.partitions.get(partition)
        if part is None or not (part.dirty or part.early):
            return []
        dirty, part.dirty = part.dirty, _Dirty()
        rollup, prefix = part.rollup, _metrics_prefix(partition, part.epoch)
        writes = dirty.alerts
        for slice_id, segment in dirty.slices:
            merged = rollup.windows.open_slice(segment, slice_id)
            if merged is not None:  # else folded since: its base holds it
                key = rollup.key(segment)
                opened = wire.SliceEntry(merged.state(), part.slices[(slice_id, key)], wire.FORMAT)
                writes.append((_slice_key(prefix, slice_id, key), wire.encode(opened)))
        early, after = part.early.save(prefix)
        writes += early
        through = rollup.windows.closed_before
        for segment in sorted(dirty.bases):
            key = rollup.key(segment)
            base = wire.BaseEntry(rollup.base(segment), part.bases.get(key, {}), through, wire.FORMAT)
            writes.append((_base_key(prefix, key), wire.encode(base)))
        writes += after  # the early state of the segments read, after the slices they read (`EarlyStore`)
        writes += [(_slice_key(prefix, slice_id, key), None) for slice_id, key in dirty.folded]
        if dirty.fences:
            writes.append((prefix + b"fences", wire.encode(part.fences)))
        if dirty.watermarks:
            writes.append((prefix + b"watermarks", wire.encode(part.watermarks)))
        if dirty.complete:
            writes.append((prefix + COMPLETE, wire.encode(wire.FORMAT)))
        return writes + [(key, None) for key in dirty.stale]

    def unsaved(self, partition: int) -> bool:
        part = self.partitions.get(partition)
        return part is not None and bool(part.dirty or part.early)

    def sent(self, partition: int, alert_id: str) -> list[Write]:
        """The alerts topic has the alert: its outbox entry may go."""
        part = self.partitions.get(partition)
        if part is None or part.outbox.pop(alert_id, None) is None:
            return []
        return [(_alert_key(_metrics_prefix(partition, part.epoch), alert_id), None)]

    def _outbox(self, partition: int, part: _Partition) -> None:
        for alert in self._fired:
            raw = part.outbox[alert.id] = msgspec.json.encode(alert.event())
            part.dirty.alerts.append((_alert_key(_metrics_prefix(partition, part.epoch), alert.id), raw))
        self._fired = []

    def partition(self, partition: int) -> _Partition:
        """The partition's rollup, restored from the store the first time it is needed."""
        part = self.partitions.get(partition)
        if part is None:
            rollup = Rollup(self.spec, self.replay_source, on_alert=self._alert, on_early=self._alert)
            part = self.partitions[partition] = _Partition(rollup, self.ownership.epoch(partition))
            self._restore(partition, part)
        return part

    def revoke(self, partitions: set[int]) -> list[Rollup]:
        self.ownership.revoke(partitions)
        return [self.partitions.pop(p).rollup for p in partitions if p in self.partitions]

    def frontier(self, part: _Partition) -> float:
        """The watermark every source has passed, as seen on one partition."""
        seen = part.watermarks
        return min(seen.values()) if len(seen) >= self.sources else -math.inf

    def _advance(self, part: _Partition, watermark: float) -> None:
        """Close what `watermark` has passed, and fold the closed slices into their segments' bases."""
        rollup, dirty = part.rollup, part.dirty
        for segment, slice_id in rollup.advance(watermark):
            key = rollup.key(segment)
            applied = part.slices.pop((slice_id, key), {})
            base = part.bases.setdefault(key, {})
            for source, seq in applied.items():
                base[source] = max(base.get(source, -1), seq)
            dirty.folded.append((slice_id, key))
            dirty.bases.add(segment)
        part.early.advanced()

    def _alert(self, alert: Alert | EarlyAlert) -> None:
        if not self._quiet:  # a restore finds again the alerts its outbox already holds
            self._fired.append(alert)

    def _restore(self, partition: int, part: _Partition) -> None:
        """Rebuild from the newest complete epoch's bases and open slices; windows closed since are found
        again, quietly. If that epoch is not this owner's, its first save writes everything anew under its own."""
        epochs: dict[int, list[tuple[bytes, bytes, bytes]]] = {}  # epoch -> (stored key, entry key, value)
        for namespace in (b"", EARLY):  # early keys are read as "e" + their key
            prefix = namespace + f"{partition}|".encode()
            for physical, value in list(self.store.items()):
                if physical.startswith(prefix):
                    rest = physical[len(prefix):]
                    epoch, _, key = rest.partition(b"|") if rest[:1].isdigit() else (b"0", b"", rest)
                    epochs.setdefault(int(epoch), []).append((physical, namespace + key, value))
        complete = [e for e, entries in epochs.items() if e == 0 or any(k == COMPLETE for _, k, _ in entries)]
        newest = max(complete, default=0)
        part.epoch = max(part.epoch, newest)  # never below what is stored (a group made anew starts at 1)
        entries = epochs.pop(newest, [])
        saved = [(key, value) for _, key, value in entries]
        part.dirty.stale = [physical for entries in epochs.values() for physical, _, _ in entries]
        log.info("restoring metrics partition %d in epoch %d from %d stored entries of epoch %d", partition,
                 part.epoch, len(saved), newest)
        rollup = part.rollup
        throughs: dict[SegmentKey, int] = {}  # per segment, the slices its base has folded in
        slices: list[tuple[int, SegmentKey, SegmentKey, wire.SliceEntry]] = []  # slice, stored key, key here
        early: list[tuple[bytes, bytes]] = []
        for key, value in saved:
            if key == b"watermarks":
                part.watermarks = dict(wire.watermarks(value))
            elif key == b"fences":
                part.fences = dict(wire.fences(value))
            elif key == COMPLETE:
                wire.stored_format(wire.marker(value), f"metrics partition {partition}")
            elif key.startswith(EARLY):
                early.append((key[1:], value))
            elif key.startswith(b"a"):
                part.outbox[key[1:].decode()] = value
            elif key.startswith(b"b"):
                base = wire.base_entry(value)
                segment_key = rollup.key(rollup.restore(_segment(key[1:]), base.base))
                part.bases[segment_key] = dict(base.applied)
                throughs[segment_key] = base.through
            else:
                slice_id, stored = _slice(key[1:])
                slices.append((slice_id, stored, rollup.key(rollup.segments.intern(stored)), wire.slice_entry(value)))
        part.early.restore(early)
        self._quiet = True
        try:
            for slice_id, stored, segment_key, entry in sorted(slices, key=lambda item: item[0]):
                if slice_id < throughs.get(segment_key, NEVER):  # folded before a crash cut the delete
                    part.dirty.folded.append((slice_id, stored))
                    continue
                part.slices[(slice_id, segment_key)] = dict(entry.applied)
                rollup.merge(Part(segment_key, slice_id, False, Summary.from_state(self.spec.shape, entry.summary)))
            # Close at least as far as any base has: a crash may have cut the watermarks' write.
            through = max(throughs.values(), default=NEVER)
            watermark = max(self.frontier(part), through * rollup.windows.width + self.spec.horizon)
            self._advance(part, watermark)
        finally:
            self._quiet = False
        if part.epoch != newest:
            self._rewrite(partition, part, [physical for physical, _, _ in entries])
        if log.isEnabledFor(logging.INFO):
            log.info("restored metrics partition %d: decisions %s, last checkpoint merged per source %s", partition,
                     {"/".join(rollup.key(s)) or "(all)": rollup.windows.decisions(s) for s in rollup.held()},
                     {source: fence.merged for source, fence in sorted(part.fences.items())})

    def _rewrite(self, partition: int, part: _Partition, old: list[bytes]) -> None:
        """Mark everything restored for the first save, under this owner's epoch, with the marker that
        makes it the partition's state; then the old epoch's keys go."""
        dirty, rollup = part.dirty, part.rollup
        dirty.complete = True
        dirty.stale += old
        dirty.folded = []  # the old epoch's keys, stale already
        dirty.alerts = [(_alert_key(_metrics_prefix(partition, part.epoch), alert_id), raw)
                        for alert_id, raw in part.outbox.items()]
        for slice_id, key in part.slices:
            dirty.slices[(slice_id, rollup.segments.intern(key))] = None
        dirty.bases = {rollup.segments.intern(key) for key in part.bases}
        part.early.rewrite()
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


"""The two stages of the streaming workers, free of Faust so they can be tested without a broker.

`JoinStage` runs one event-time join per input partition (predictions and outcomes are
co-partitioned by decision ID) and persists every change through a journal into key-value stores
(the Faust tables). `ReduceStage` receives final decisions keyed by segment and keeps one `Rollup`
per partition of that internal topic. Both recognise a record delivered again after a restart by
its offset or decision ID, so at-least-once delivery never counts anything twice.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field

import msgspec

from monitor import wire
from monitor.alerts import Alert
from monitor.engine import DeadLetter, Rollup, check_outcome, check_prediction
from monitor.errors import RecordError
from monitor.events import decode_outcome, decode_prediction
from monitor.join import PENDING, Decision, HeldOutcome, JoinCounts, Joiner
from monitor.segments import Segments
from monitor.spec import Spec

Store = MutableMapping[bytes, bytes]
OVERALL_KEY = b"\x00all"  # Kafka key of the overall segment: an empty key would be spread at random
log = logging.getLogger(__name__)


@dataclass
class JoinStores:
    """Where the join's state lives: one key-value store per kind, keyed by decision ID."""

    pending: Store
    held: Store
    done: Store
    progress: Store  # keyed by partition number


@dataclass
class Output:
    """What one input record produced. Send each final keyed by `segment_key(final)`."""

    finals: list[wire.Final] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


class _Journal:
    """Writes a partition's join state changes into the stores, with the portable segment key."""

    def __init__(self, partition: int, stores: JoinStores, segments: Segments) -> None:
        self.partition, self.stores, self.segments = partition, stores, segments

    def pending(self, decision_id: str, packed: bytes | None) -> None:
        key = decision_id.encode()
        if packed is None:
            self.stores.pending.pop(key, None)
        else:
            segment = list(self.segments.key(PENDING.unpack(packed)[2]))
            self.stores.pending[key] = wire.encode((self.partition, segment, packed))

    def held(self, decision_id: str, entry: HeldOutcome | None) -> None:
        key = decision_id.encode()
        if entry is None:
            self.stores.held.pop(key, None)
        else:
            outcome = msgspec.json.encode(entry[1])
            self.stores.held[key] = wire.encode(wire.Held(self.partition, entry[0], outcome, entry[2]))

    def done(self, decision_id: str, packed: bytes | None) -> None:
        key = decision_id.encode()
        if packed is None:
            self.stores.done.pop(key, None)
        else:
            self.stores.done[key] = wire.encode((self.partition, packed))


class JoinStage:
    """The join stage of a worker: the engine's join, once per assigned input partition."""

    def __init__(self, spec: Spec, stores: JoinStores) -> None:
        self.spec = spec
        self.stores = stores
        self.segments = Segments(spec)
        self.joins: dict[int, Joiner] = {}
        self.records: dict[int, Counter[str]] = {}
        self.offsets: dict[int, dict[str, int]] = {}
        self.last_seen: dict[int, float] = {}  # wall clock of each partition's last record
        self._out = Output()
        self._before = -math.inf  # the watermark before the current record

    def process(self, topic: str, partition: int, offset: int, value: bytes, now: float) -> Output:
        """Handle one record of `predictions` or `outcomes`."""
        joiner = self.join(partition)
        self._out = out = Output()
        handled = self.offsets[partition]
        if offset <= handled.get(topic, -1):  # delivered again after a restart: already counted
            return out
        handled[topic] = offset
        self._before = joiner.watermark
        self.records[partition][topic] += 1
        self.last_seen[partition] = now
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
            out.dead_letters.append(DeadLetter(topic, exc.reason, bytes(value), partition, offset))
        except Exception as exc:  # a bug must not crash the agent: Faust would skip past the record
            log.exception("record %s[%d]@%d failed", topic, partition, offset)
            joiner.tally.invalid += 1
            out.dead_letters.append(DeadLetter(topic, f"internal error: {exc!r}", bytes(value), partition, offset))
        self._save(partition)
        return out

    def tick(self, partition: int, now: float) -> Output:
        """A quiet partition's watermark follows the wall clock once it has been idle long enough.

        The first tick of a partition also restores its join from the stores."""
        self._out = out = Output()
        joiner = self.join(partition)
        idle = now - self.last_seen.setdefault(partition, now)
        self._before = joiner.watermark
        if idle < self.spec.idle_timeout:
            return out
        newest = (joiner.newest_prediction, joiner.newest_outcome)
        base = min(newest) if min(newest) > -math.inf else max(newest)
        if base > -math.inf:
            joiner.advance(base + idle)
            self._save(partition)
        return out

    def join(self, partition: int) -> Joiner:
        """The partition's join, restored from the stores the first time it is needed."""
        joiner = self.joins.get(partition)
        if joiner is None:
            joiner = self.joins[partition] = Joiner(self.spec, lambda d: self._final(partition, d),
                                                    _Journal(partition, self.stores, self.segments))
            self.records[partition] = Counter()
            self.offsets[partition] = {}
            self._restore(partition, joiner)
        return joiner

    def revoke(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.joins.pop(partition, None)
            self.records.pop(partition, None)
            self.offsets.pop(partition, None)
            self.last_seen.pop(partition, None)

    def counts(self) -> JoinCounts:
        total = JoinCounts()
        for joiner in self.joins.values():
            for name, value in joiner.counts().as_dict().items():
                setattr(total, name, getattr(total, name) + value)
        return total

    def record_counts(self) -> Counter[str]:
        return sum(self.records.values(), Counter())

    def watermarks(self) -> dict[int, float]:
        return {p: j.watermark for p, j in self.joins.items()}

    def _final(self, partition: int, d: Decision) -> None:
        # The watermark *before* this record: the metrics stage closes what the record's own
        # advance closes only after taking in the decisions it finalized, exactly as in-process.
        watermark = self._before
        key = list(self.segments.key(d.segment))
        for segment in ([key, []] if key else [key]):  # the overall segment gets its own copy
            self._out.finals.append(wire.Final(d.decision_id, segment, d.ts, d.score, d.predicted, d.label,
                                               d.value, list(d.kpis), d.delay, partition, watermark))

    def _save(self, partition: int) -> None:
        joiner = self.joins[partition]
        counts = list(joiner.counts().as_dict().values())
        self.stores.progress[str(partition).encode()] = wire.encode(wire.Progress(
            joiner.newest_prediction, joiner.newest_outcome, counts, dict(self.records[partition]),
            self.offsets[partition]))

    def _restore(self, partition: int, joiner: Joiner) -> None:
        saved = self.stores.progress.get(str(partition).encode())
        log.info("restoring join partition %d (%s)", partition, "saved state" if saved else "fresh")
        if saved is None:
            return
        progress = wire.progress(saved)
        pending = []
        for key, raw in list(self.stores.pending.items()):
            owner, segment, packed = wire.pending(raw)
            if owner == partition:
                ts, score, _, predicted, offset = PENDING.unpack(packed)
                local = self.segments.intern(tuple(segment))
                pending.append((key.decode(), PENDING.pack(ts, score, local, predicted, offset)))
        held: list[tuple[str, HeldOutcome]] = []
        for key, raw in list(self.stores.held.items()):
            entry = wire.held(raw)
            if entry.partition == partition:
                held.append((key.decode(), (entry.ts, decode_outcome(entry.outcome), entry.offset)))
        done = [(key.decode(), packed) for key, raw in list(self.stores.done.items())
                for owner, packed in [wire.done(raw)] if owner == partition]
        joiner.restore(pending, held, done, (progress.newest_prediction, progress.newest_outcome),
                       JoinCounts(*progress.counts))
        self.records[partition].update(progress.records)
        self.offsets[partition].update(progress.offsets)


class ReduceStage:
    """The metrics stage of a worker: one Rollup per partition of the segment-keyed topic."""

    def __init__(self, spec: Spec, sources: int, finals: Store,
                 on_alert: Callable[[Alert], None] | None = None) -> None:
        self.spec = spec
        self.sources = sources  # input partitions: windows close once all of them have passed
        self.finals = finals  # every final decision taken in, keyed by decision ID and segment
        self.on_alert = on_alert
        self.rollups: dict[int, Rollup] = {}
        # Per partition of this stage, the newest watermark of each source seen *on that partition*:
        # a source's messages reach one partition in order, so a window never closes before a
        # decision that belongs in it has arrived.
        self.watermarks: dict[int, dict[int, float]] = {}
        self._quiet = False

    def handle(self, partition: int, raw: bytes) -> None:
        try:
            message = wire.message(raw)
        except msgspec.DecodeError:  # not ours: something else wrote to the internal topic
            log.warning("ignored a message the metrics stage cannot read on partition %d", partition)
            return
        rollup = self.rollup(partition)
        if isinstance(message, wire.Final):
            key = f"{message.decision_id}|{'/'.join(message.segment)}".encode()
            if key not in self.finals:  # else delivered again after a restart
                self.finals[key] = wire.encode((partition, msgspec.Raw(raw)))
                self._add(rollup, message)
        self._watermark(partition, message.source, message.watermark)

    def rollup(self, partition: int) -> Rollup:
        rollup = self.rollups.get(partition)
        if rollup is None:
            rollup = self.rollups[partition] = Rollup(self.spec, on_alert=self._alert, derive_overall=False)
            self._restore(partition, rollup)
        return rollup

    def revoke(self, partitions: set[int]) -> list[Rollup]:
        for p in partitions:
            self.watermarks.pop(p, None)
        return [self.rollups.pop(p) for p in partitions if p in self.rollups]

    def frontier(self, partition: int) -> float:
        """The watermark every source has passed, as seen on one partition."""
        seen = self.watermarks.get(partition, {})
        return min(seen.values()) if len(seen) >= self.sources else -math.inf

    def _watermark(self, partition: int, source: int, watermark: float) -> None:
        seen = self.watermarks.setdefault(partition, {})
        if watermark > seen.get(source, -math.inf):
            seen[source] = watermark
            frontier = self.frontier(partition)
            if frontier > self.rollups[partition].watermark:
                self.finals[_frontier_key(partition)] = wire.encode(seen)
                self.rollups[partition].advance(frontier)

    def _add(self, rollup: Rollup, m: wire.Final) -> None:
        segment = rollup.segments.intern(tuple(m.segment))
        rollup.add(Decision(m.ts, segment, m.score, m.predicted, m.label, m.value, tuple(m.kpis), m.delay,
                            m.decision_id))

    def _alert(self, alert: Alert) -> None:
        if not self._quiet and self.on_alert is not None:
            self.on_alert(alert)

    def _restore(self, partition: int, rollup: Rollup) -> None:
        """Rebuild from every final decision this partition took in; alerts found again stay quiet."""
        entries = []
        log.info("restoring metrics partition %d from %d stored entries", partition, len(self.finals))
        for key, raw in list(self.finals.items()):
            if key.startswith(b"#"):
                continue
            owner, message = _final_entry(raw)
            if owner == partition:
                entries.append(wire.message(bytes(message)))
        self._quiet = True
        try:
            for m in sorted((e for e in entries if isinstance(e, wire.Final)), key=lambda e: (e.ts, e.decision_id)):
                self._add(rollup, m)
            saved = self.finals.get(_frontier_key(partition))
            if saved is not None:
                self.watermarks[partition] = {int(k): v for k, v in _watermarks(saved).items()}
                rollup.advance(self.frontier(partition))
        finally:
            self._quiet = False


_final_entry = msgspec.msgpack.Decoder(tuple[int, msgspec.Raw]).decode
_watermarks = msgspec.msgpack.Decoder(dict[int, float]).decode


def _frontier_key(partition: int) -> bytes:
    return f"#frontier|{partition}".encode()


def segment_key(final: wire.Final) -> bytes:
    """The Kafka key that sends every decision of a segment to the same metrics partition."""
    return "/".join(final.segment).encode() if final.segment else OVERALL_KEY

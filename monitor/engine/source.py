"""A source: one stream of records in arrival order, from raw bytes to parts of final decisions.

Replay reads one source (its file); a worker runs one per Kafka input partition. A source
decodes and checks each record, joins it by event time, and folds every final decision into a
partial summary of its segment and slice of decision time (`Parts`). `drain()` hands those
parts to a `Rollup`, in process or through Kafka; the overall segment's parts are merged here,
once per slice, from the others.

Whether a decision counts in its window is decided here too: a decision that finalizes after
this source's frontier passed its slice is `late` and counts in the totals only. Deciding it at
the source, when the decision finalizes, makes every result independent of when parts are
drained and how far the metrics stage has got.
"""

from __future__ import annotations

import logging
import math
import struct
from collections import Counter
from collections.abc import Callable
from hashlib import blake2b
from typing import NamedTuple, cast

from monitor.contract.errors import RecordError
from monitor.contract.events import Event, Outcome, Payload
from monitor.contract.spec import Spec
from monitor.engine.event_join import EventJoiner
from monitor.engine.intake import DeadLetter, check_event, check_outcome, check_prediction, reason_group
from monitor.engine.join import NO_OFFSET, Joiner, Journal
from monitor.engine.segments import OVERALL, Segments
from monitor.engine.windows import NEVER, SegmentKey
from monitor.stats.decision import Decision
from monitor.stats.readings import Ages, EarlyParts
from monitor.stats.summary import Summary

DRAIN_RECORDS = 10_000  # records between drains in process; a worker checkpoints at least this often
log = logging.getLogger(__name__)


class Part(NamedTuple):
    """The final decisions of one segment and slice that a source drained at once."""

    segment: SegmentKey
    slice_id: int
    late: bool  # finalized after the source saw the slice close: totals only
    summary: Summary


class EarlyPart(NamedTuple):
    """What a source learnt of one segment's slice at each age since its last drain (`monitor.stats.readings`)."""

    segment: SegmentKey
    slice_id: int
    ages: Ages


class Parts:
    """Final decisions, pre-aggregated per (segment, slice, late) until drained."""

    def __init__(self, spec: Spec) -> None:
        self.shape = spec.shape
        self.width = spec.slice_seconds
        self.horizon = spec.horizon
        self.derived = bool(spec.segment_by)  # the overall segment is the merge of the others
        # Final decisions per (segment, slice, late), folded into summaries at the drain: one pass per
        # statistic over many decisions costs far less than one update call per decision.
        self.decided: dict[tuple[int, int, bool], list[Decision]] = {}
        self.closed_before = NEVER  # slices below this have closed, as this source sees them
        self.early = EarlyParts(spec.reading_ages, self.width, len(spec.kpis), OVERALL if self.derived else None)

    def add(self, d: Decision) -> None:
        if d.delay is not None and d.events is None:  # with outcome events, the early readings took each change
            self.early.match(d)
        slice_id = int(d.ts // self.width)
        key = (d.segment, slice_id, slice_id < self.closed_before)
        found = self.decided.get(key)
        if found is None:
            self.decided[key] = [d]
        else:
            found.append(d)

    def advance(self, watermark: float) -> None:
        """The frontier (watermark − horizon) closes the slices that end before it."""
        if watermark == -math.inf:  # no watermark yet: nothing has closed
            return
        if watermark > self.early.watermark:
            self.early.watermark = watermark
        self.closed_before = max(self.closed_before, int((watermark - self.horizon) // self.width))

    def drain(self, segments: Segments) -> list[Part]:
        """Every part since the last drain, the overall segment's included, oldest slice first."""
        found: list[Part] = []
        overall: dict[tuple[int, bool], Summary] = {}
        for (segment, slice_id, late), decided in sorted(self.decided.items(), key=_slice_then_segment):
            summary = Summary(self.shape).extend(decided)
            found.append(Part(segments.key(segment), slice_id, late, summary))
            if self.derived and segment != OVERALL:
                into = overall.get((slice_id, late))
                if into is None:  # not setdefault: that would build a summary per part only to drop it
                    into = overall[(slice_id, late)] = Summary(self.shape)
                into.merge(summary)
        found += [Part((), slice_id, late, summary) for (slice_id, late), summary in overall.items()]
        self.decided = {}
        return found

    def drain_early(self, segments: Segments) -> list[EarlyPart]:
        """Every early part since the last drain, the overall segment's included."""
        return [EarlyPart(segments.key(segment), slice_id, ages)
                for (segment, slice_id), ages in sorted(self.early.drain().items(), key=lambda item: item[0][::-1])]


def fingerprint(e: Event, value: Payload, ts: float) -> bytes:
    """What tells an outcome event from the other events of its decision: its id when the spec names
    one, else its exact bytes and event time (8 bytes of BLAKE2b, the same in every process)."""
    if e.event_id is not None:
        return blake2b(e.event_id.encode(), digest_size=8, person=b"event-id").digest()
    found = blake2b(memoryview(value), digest_size=8, person=b"event-bytes")
    found.update(struct.pack("<d", ts))
    return found.digest()


def _both(first: Callable[[Decision], None], then: Callable[[Decision], None]) -> Callable[[Decision], None]:
    def both(d: Decision) -> None:
        first(d)
        then(d)

    return both


def _slice_then_segment(item: tuple[tuple[int, int, bool], list[Decision]]) -> tuple[int, int, bool]:
    (segment, slice_id, late), _ = item
    return slice_id, segment, late


class Source:
    """Intake, join and parts of one stream of records.

    With `offsets`, a record at or below the last offset handled on its topic is a redelivery
    (after a restart) and is skipped; replay files may mix partitions, so replay leaves it off.
    `on_final` also receives every final decision (replay's joined table); without it nothing is added."""

    def __init__(self, spec: Spec, journal: Journal | None = None, offsets: bool = False,
                 on_final: Callable[[Decision], None] | None = None) -> None:
        self.spec = spec
        self.segments = Segments(spec)
        self.parts = Parts(spec)
        finals = self.parts.add if on_final is None else _both(self.parts.add, on_final)
        self.events = spec.events is not None
        self.joiner: Joiner = EventJoiner(spec, finals, journal, self.parts.early.change) if self.events else \
            Joiner(spec, finals, journal)
        self.records: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()  # dead-letter reasons, grouped
        self.offsets: dict[str, int] | None = {} if offsets else None
        self.redelivered = 0  # records skipped as at or below `offsets`: at-least-once delivery at work
        self._watermark = -math.inf  # the watermark the parts last saw
        # read once per record: kept at hand rather than looked up through the spec each time
        self._predictions, self._outcomes = spec.topics.predictions, spec.topics.outcomes
        self._limit = spec.limits.max_record_bytes
        self._prediction, self._outcome = spec.reader.prediction, spec.reader.outcome
        self._keyed = spec.reader.keyed

    def handle(self, topic: str, value: Payload, partition: int | None = None, offset: int | None = None,
               timestamp: int | None = None, key: bytes | str | None = None) -> DeadLetter | None:
        """Take one raw record of `predictions` or `outcomes` (`timestamp`: its Kafka timestamp in ms, if
        known); returns it as a dead letter if unusable."""
        tracked = NO_OFFSET
        if self.offsets is not None and offset is not None:
            if offset <= self.offsets.get(topic, -1):  # delivered again after a restart: already counted
                self.redelivered += 1
                return None
            self.offsets[topic] = tracked = offset
        self.records[topic] += 1
        spec, joiner = self.spec, self.joiner
        limit = self._limit
        if len(value) > limit:  # decoding it could hold the partition up; the dead letter keeps its head
            return self.reject(topic, f"record of {len(value)} bytes is over limits.max_record_bytes ({limit});"
                               " the dead letter keeps its first bytes", memoryview(value)[:limit], partition, offset)
        letter = None
        try:
            if topic == self._predictions:
                p = self._prediction(value, key, timestamp) if self._keyed else self._prediction(value)
                ts, score, predicted = check_prediction(spec, p, timestamp)
                segment = self.segments.of(p)
                if joiner.prediction(p.decision_id, ts, score, segment, predicted, tracked):
                    self.parts.early.see(ts, segment, score)  # a new decision: early readings count it
            elif topic == self._outcomes:
                o = self._outcome(value, key, timestamp) if self._keyed else self._outcome(value)
                if self.events:
                    e = cast(Event, o)
                    ts = check_event(spec, e, timestamp)
                    cast(EventJoiner, joiner).event(e, ts, fingerprint(e, value, ts), tracked)
                else:
                    joiner.outcome(cast(Outcome, o), check_outcome(spec, cast(Outcome, o), timestamp), tracked)
            else:
                raise RecordError(f"topic {topic!r} is neither predictions nor outcomes")
        except RecordError as exc:
            letter = self.reject(topic, exc.reason, value, partition, offset)
        except Exception as exc:  # a bug must not stop the monitor, nor skip the record silently
            log.exception("record %s[%s]@%s failed", topic, partition, offset)
            letter = self.reject(topic, f"internal error: {exc!r}", value, partition, offset)
        watermark = joiner.watermark
        if watermark > self._watermark:  # slices may have closed: later decisions in them are late
            self._watermark = watermark
            self.parts.advance(watermark)
        return letter

    def reject(self, topic: str, reason: str, value: Payload, partition: int | None = None,
               offset: int | None = None) -> DeadLetter:
        """Count a bad record; returns it as a dead letter with its reason."""
        self.joiner.tally.invalid += 1
        self.reasons[reason_group(reason)] += 1
        return DeadLetter(topic, reason, bytes(value), partition, offset)

    def advance(self, watermark: float) -> None:
        """Move the watermark without a record (an idle partition follows the wall clock)."""
        self.joiner.advance(watermark)
        self._watermark = self.joiner.watermark
        self.parts.advance(self.joiner.watermark)

    def drain(self) -> list[Part]:
        return self.parts.drain(self.segments)

    def drain_early(self) -> list[EarlyPart]:
        return self.parts.drain_early(self.segments)

    @property
    def watermark(self) -> float:
        return self.joiner.watermark

    def event_counts(self) -> Counter[tuple[str, str]]:
        """Outcome events per (type, status); empty without `[outcome.events]`."""
        return self.joiner.event_counts if isinstance(self.joiner, EventJoiner) else Counter()


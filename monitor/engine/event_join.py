"""The join with outcome events: several business events per decision, combined, final at the horizon.

A decision's outcome is the combination of its events with delay below the horizon: the label the
largest given, the value and KPIs summed (`monitor.contract.outcome_events`). Unlike the single-outcome
join, a decision stays pending until its horizon passes, carrying its running combination; then it is
final, matched if any event came, expired otherwise. An event after the horizon is `late`; an event
seen before (the same event id, or without one the same bytes and time) is a `duplicate`. Every event
is counted per type and status. docs/outcome-events.md is the contract.

A pending decision's bytes are `PENDING`, then, once an event came, `TAIL`, the combination (one
float64 per field, NaN where no event gave it), one count per event type, and the fingerprints of
the events seen (8 bytes each), so a restart restores everything from the one value.
"""

from __future__ import annotations

import heapq
import logging
import math
import struct
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Protocol

from monitor.contract.events import Event
from monitor.contract.outcome_events import LABEL, VALUE
from monitor.contract.spec import Spec
from monitor.engine.join import _MATCHED, _STORED, DONE, NO_OFFSET, PENDING, HeldEvent, Joiner, Journal
from monitor.stats.decision import Decision

TAIL = struct.Struct("<IBd")  # events folded in, early-reading age index of the last change, first delay
FINGERPRINT = 8
OTHER = "(other)"  # the type name counted for unknown types past `MAX_UNKNOWN` distinct ones
MAX_UNKNOWN = 20
# what became of each event: folded into its decision, or why not
COUNTED, LATE, DUPLICATE, ORPHAN = "counted", "late", "duplicate", "orphan"
UNKNOWN, OVER_LIMIT = "unknown", "over_limit"
log = logging.getLogger(__name__)


class Progress(Protocol):
    """Takes each change of a pending decision's outcome, for the early readings (`EarlyParts.change`):
    `before` is None at its first event; returns the age index the change counted at, at least `floor`."""

    def __call__(self, before: Decision | None, after: Decision, delay: float, floor: int) -> int: ...


class EventJoiner(Joiner):
    """Joins predictions with streams of outcome events; hands each decision to `on_final` at its horizon."""

    def __init__(self, spec: Spec, on_final: Callable[[Decision], None], journal: Journal | None = None,
                 progress: Progress | None = None) -> None:
        super().__init__(spec, on_final, journal)
        events = spec.events
        assert events is not None
        self.progress = progress
        self.width = events.width
        self.types = tuple(t.name for t in events.types)
        self.combo = struct.Struct(f"<{self.width}d{len(self.types)}I")
        self.empty = [math.nan] * self.width + [0] * len(self.types)  # a combination before any event
        self.fixed = PENDING.size + TAIL.size + self.combo.size  # bytes before the fingerprints
        self.max_events = spec.limits.max_events_per_decision
        self.kpi_names = events.kpi_names
        self.held_events: dict[str, list[HeldEvent]] = {}
        self._held_events_order: list[tuple[float, str]] = []
        self.event_counts: Counter[tuple[str, str]] = Counter()  # (type, status) -> events
        self._warned: set[str] = set()

    # -- records --------------------------------------------------------------------------------
    def event(self, e: Event, ts: float, fingerprint: bytes, offset: int = NO_OFFSET) -> None:
        """Handle one valid outcome event (its event time already parsed); `fingerprint` tells it from
        other events of its decision (`monitor.engine.source.fingerprint`)."""
        self.see(ts, False)
        if e.kind < 0:
            self._unknown(e.type)
            return
        decision_id = e.decision_id
        packed = self.pending.get(decision_id)
        if packed is not None:
            self._into_pending(decision_id, packed, e, ts, fingerprint)
            return
        done = self._status(decision_id)
        if done is not None:
            if _has(done, _STORED.size, fingerprint):
                self._count(e.type, DUPLICATE)
                return
            self.tally.outcomes += 1
            self._count(e.type, LATE)  # its decision is final: too late to change it
            self._finalize_with(decision_id, done, fingerprint)
            return
        held = self.held_events.get(decision_id)
        if held is not None and any(h[3] == fingerprint for h in held):
            self._count(e.type, DUPLICATE)
            return
        self.tally.outcomes += 1
        entry = (ts, e, offset, fingerprint)
        if held is None:
            held = self.held_events[decision_id] = []
        held.append(entry)
        heapq.heappush(self._held_events_order, (ts, decision_id))
        if self.journal is not None:
            self.journal.held_events(decision_id, held)
        if len(self.held_events) > self.max_held:
            self._evict_held_events()

    def _into_pending(self, decision_id: str, packed: bytes, e: Event, ts: float, fingerprint: bytes) -> None:
        if _has(packed, self.fixed, fingerprint) if len(packed) > PENDING.size else False:
            self._count(e.type, DUPLICATE)
            return
        self.tally.outcomes += 1
        packed = self._take(decision_id, packed, e, ts, fingerprint)
        self.pending[decision_id] = packed
        if self.journal is not None:
            self.journal.pending(decision_id, packed)

    def _fold(self, decision_id: str, packed: bytes, e: Event, ts: float, fingerprint: bytes) -> bytes:
        """The pending decision with event `e` added to its combination."""
        head = packed[:PENDING.size]
        decision_ts = PENDING.unpack_from(packed)[0]
        if len(packed) > PENDING.size:
            count, floor, first = TAIL.unpack_from(packed, PENDING.size)
            fields = list(self.combo.unpack_from(packed, PENDING.size + TAIL.size))
            prints = packed[self.fixed:]
        else:
            count, floor, first = 0, 0, ts - decision_ts
            fields = list(self.empty)
            prints = b""
        if count >= self.max_events:  # a runaway decision: the event is counted, not folded in
            self._count(e.type, OVER_LIMIT)
            return packed
        before = self._decision(decision_id, packed) if count else None
        for at, x in enumerate(e.amounts):
            if x is not None:
                old = fields[at]
                fields[at] = x if math.isnan(old) else (max(old, x) if at == LABEL else old + x)
        fields[self.width + e.kind] += 1
        self._count(e.type, COUNTED)
        folded = head + TAIL.pack(count + 1, floor, first) + self.combo.pack(*fields) + prints + fingerprint
        if self.progress is not None:
            at = self.progress(before, self._decision(decision_id, folded), ts - decision_ts, floor)
            folded = head + TAIL.pack(count + 1, min(at, 255), first) + folded[PENDING.size + TAIL.size:]
        return folded

    def _with_held(self, decision_id: str, packed: bytes) -> bytes | None:
        """A new decision with the events held for it folded in, in the order they came."""
        held = self.held_events.pop(decision_id, None)
        if held is None:
            return packed
        if self.journal is not None:
            self.journal.held_events(decision_id, None)
        for ts, e, _, fingerprint in held:
            packed = self._take(decision_id, packed, e, ts, fingerprint)
        return packed

    def _take(self, decision_id: str, packed: bytes, e: Event, ts: float, fingerprint: bytes) -> bytes:
        """A pending decision with event `e` folded in, or only remembered when it came at or after the
        horizon (before the watermark expired the decision: late all the same)."""
        if ts >= PENDING.unpack_from(packed)[0] + self.horizon:
            self._count(e.type, LATE)
            return self._with_fingerprint(packed, fingerprint)
        return self._fold(decision_id, packed, e, ts, fingerprint)

    def _with_fingerprint(self, packed: bytes, fingerprint: bytes) -> bytes:
        """A pending decision that also remembers an event it did not fold in (late), to tell its repeats."""
        if len(packed) == PENDING.size:  # no event folded yet: an empty combination comes first
            packed += TAIL.pack(0, 0, 0.0) + self.combo.pack(*self.empty)
        return packed + fingerprint

    # -- finals ---------------------------------------------------------------------------------
    def _expire(self, decision_id: str, packed: bytes) -> None:
        """The horizon has passed: the decision is final, matched if an event was folded in."""
        if len(packed) == PENDING.size or TAIL.unpack_from(packed, PENDING.size)[0] == 0:
            prints = packed[self.fixed:]
            super()._expire(decision_id, packed[:PENDING.size])
            if prints:
                done = self._status(decision_id)
                if done is not None:
                    self._finalize_with(decision_id, done, prints)
            return
        del self.pending[decision_id]
        if self.journal is not None:
            self.journal.pending(decision_id, None)
        self.tally.matched += 1
        offset = PENDING.unpack_from(packed)[4]
        stored = _STORED.pack(_MATCHED, offset, NO_OFFSET, self.generation & 1) + packed[self.fixed:]
        self._store(decision_id, stored)
        self.on_final(self._decision(decision_id, packed))

    def _finalize_with(self, decision_id: str, done: bytes, fingerprint: bytes) -> None:
        """A final decision that also remembers `fingerprint` (events after its horizon), to tell their repeats."""
        status, prediction, outcome = DONE.unpack_from(done)
        stored = _STORED.pack(status, prediction, outcome, self.generation & 1) + done[_STORED.size:] + fingerprint
        self._store(decision_id, stored)

    def _decision(self, decision_id: str, packed: bytes) -> Decision:
        """A pending decision with events as the statistics take it: its combination so far."""
        ts, score, segment, predicted, _ = PENDING.unpack_from(packed)
        _, _, first = TAIL.unpack_from(packed, PENDING.size)
        fields = self.combo.unpack_from(packed, PENDING.size + TAIL.size)
        label = 0.0 if math.isnan(fields[LABEL]) else fields[LABEL]
        value = None if math.isnan(fields[VALUE]) else fields[VALUE]
        kpis = {name: x for name, x in zip(self.kpi_names, fields[2:self.width], strict=True) if not math.isnan(x)}
        read = tuple(k.read(label, value, kpis) for k in self.kpis)
        return Decision(ts, segment, score, predicted, label, value, read, first, decision_id,
                        tuple(fields[self.width:]))

    # -- held events ----------------------------------------------------------------------------
    def advance(self, ts: float) -> None:
        super().advance(ts)
        order = self._held_events_order
        while order and order[0][0] + self.horizon <= self.watermark:
            _, decision_id = heapq.heappop(order)
            held = self.held_events.get(decision_id)
            if held is not None:
                self._orphan(decision_id, held, self.watermark)

    def _orphan(self, decision_id: str, held: list[HeldEvent], watermark: float) -> None:
        """Drop the held events whose own horizon has passed: no prediction can take them any more."""
        kept = [h for h in held if h[0] + self.horizon > watermark]
        for h in held:
            if h[0] + self.horizon <= watermark:
                self.tally.orphans += 1
                self._count(h[1].type, ORPHAN)
        if kept:
            self.held_events[decision_id] = kept
        else:
            del self.held_events[decision_id]
        if self.journal is not None and len(kept) != len(held):
            self.journal.held_events(decision_id, kept or None)

    def _evict_held_events(self) -> None:
        """Past `max_held` decisions with events held, drop the oldest events as orphans."""
        order = self._held_events_order
        while len(self.held_events) > self.max_held and order:
            ts, decision_id = heapq.heappop(order)
            held = self.held_events.get(decision_id)
            if held is None or all(h[0] != ts for h in held):  # taken by its prediction, or dropped, meanwhile
                continue
            self.tally.evicted_held += 1
            self._orphan(decision_id, held, ts + self.horizon)

    def finish(self) -> None:
        super().finish()
        for held in self.held_events.values():
            for h in held:
                self.tally.orphans += 1
                self._count(h[1].type, ORPHAN)
        self.held_events.clear()
        self._held_events_order.clear()

    def restore_events(self, held: Iterable[tuple[str, list[HeldEvent]]],
                       counts: Iterable[tuple[str, str, int]]) -> None:
        """Rebuild the events held and the counts per type and status that a journal persisted."""
        for decision_id, events in held:
            self.held_events[decision_id] = list(events)
            for h in events:
                heapq.heappush(self._held_events_order, (h[0], decision_id))
        self.event_counts = Counter({(kind, status): n for kind, status, n in counts})
        # Unknown types already counted by name stay so, and warned of: the cap on names holds across restarts.
        self._warned = {kind for kind, status in self.event_counts if status == UNKNOWN and kind != OTHER}

    # -- counts ---------------------------------------------------------------------------------
    def _count(self, kind: str, status: str) -> None:
        self.event_counts[(kind, status)] += 1
        if status == LATE:
            self.tally.late += 1
        elif status == DUPLICATE:
            self.tally.duplicates += 1

    def _unknown(self, kind: str) -> None:
        if kind not in self._warned:
            if len(self._warned) >= MAX_UNKNOWN:
                kind = OTHER
            else:
                self._warned.add(kind)
                log.warning("outcome events of type %r are not in [outcome.events]: counted and ignored", kind)
        self.event_counts[(kind, UNKNOWN)] += 1


def _has(packed: bytes, start: int, fingerprint: bytes) -> bool:
    """Whether the fingerprints from `start` on hold `fingerprint`."""
    return any(packed[at:at + FINGERPRINT] == fingerprint for at in range(start, len(packed), FINGERPRINT))

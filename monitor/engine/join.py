"""The event-time join of predictions and outcomes on `decision_id`.

For each record, in this order: advance the watermark, expire every pending decision whose
`ts + horizon <= watermark`, then handle the record. The watermark is the lesser of the newest
`ts` seen on each topic, so how a consumer happens to interleave the two topics never changes a
result: a decision expires only once the outcomes topic itself has passed its horizon. docs/join.md is the
contract; this module is its only implementation.
"""

from __future__ import annotations

import heapq
import math
import struct
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Protocol

from monitor.contract.events import Event, Outcome
from monitor.contract.spec import Spec
from monitor.stats.decision import Decision

# A pending decision is packed into one small bytes object (ts, score, segment, predicted, offset
# of its record): about 170 bytes per decision with its key and dict slot, where a tuple costs 250+.
PENDING = struct.Struct("<ddI?q")
# A final decision's status, with the offsets of the records that made it, to tell a redelivery
# (same record again, after a restart) from a duplicate (another record with the same id). Stored
# values carry one byte more: the parity of the generation the id is remembered in (`_finalize`);
# values written before that have none. Read them with `unpack_from`.
DONE = struct.Struct("<Bqq")
_STORED = struct.Struct("<BqqB")  # DONE and the generation's parity: one object per final, packed once
_MATCHED, _EXPIRED, _LATE = 1, 2, 3
NO_OFFSET = -1

HeldOutcome = tuple[float, Outcome, int]  # event time, outcome, offset of its record
HeldEvent = tuple[float, Event, int, bytes]  # event time, outcome event, offset of its record, fingerprint


class Journal(Protocol):
    """Receives every change of the join's state, to persist it (the Faust tables)."""

    def pending(self, decision_id: str, packed: bytes | None) -> None: ...

    def held(self, decision_id: str, entry: HeldOutcome | None) -> None: ...

    def done(self, decision_id: str, packed: bytes | None) -> None: ...

    def held_events(self, decision_id: str, events: list[HeldEvent] | None) -> None: ...  # outcome events only


@dataclass
class JoinCounts:
    """How every record ended up. `pending` is filled in by `Joiner.counts()`."""

    predictions: int = 0
    outcomes: int = 0
    matched: int = 0
    expired: int = 0
    late: int = 0
    duplicates: int = 0
    orphans: int = 0
    invalid: int = 0
    pending: int = 0
    # What the memory limits forced (spec [limits]): decisions finalized early as expired and held
    # outcomes dropped as orphans (both also in the counts above), and final ids forgotten early.
    evicted_pending: int = 0
    evicted_held: int = 0
    evicted_finals: int = 0  # final ids forgotten early: not a record's ending, so in no count above

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __add__(self, other: JoinCounts) -> JoinCounts:
        """The counts of two sources together: `sum(counts, JoinCounts())`."""
        return JoinCounts(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})


class Joiner:
    """Joins predictions with outcomes by event time and hands each final decision to `on_final`."""

    def __init__(self, spec: Spec, on_final: Callable[[Decision], None], journal: Journal | None = None) -> None:
        self.horizon = spec.horizon
        limits = spec.limits
        self.max_pending, self.max_held, self.max_finals = limits.max_pending, limits.max_held, limits.max_finals
        self.missing = spec.missing
        self.kpis = spec.kpis
        missing = spec.missing
        self._missing_kpis = () if missing is None else tuple(
            k.read(missing.label, missing.value, missing.kpis) for k in spec.kpis)
        self.on_final = on_final
        self.journal = journal
        self.watermark = -math.inf
        self.newest_prediction = -math.inf
        self.newest_outcome = -math.inf
        self.tally = JoinCounts()
        self.pending: dict[str, bytes] = {}
        self._order: deque[str] = deque()  # pending ids, oldest decision first
        self._newest = float("-inf")
        self._next_expiry = float("inf")  # deadline of the oldest id in `_order` (it may have matched)
        self._stragglers: list[tuple[float, str]] = []  # out-of-order predictions, a heap
        self.held: dict[str, HeldOutcome] = {}  # outcomes waiting for their prediction
        self._held_order: list[tuple[float, str]] = []
        # Final ids, kept for at least two horizons after they finalize (so a late outcome is told
        # from an orphan up to three horizons after its decision), in two generations.
        self._done: dict[str, bytes] = {}
        self._done_before: dict[str, bytes] = {}
        self._rotate_at = float("-inf")
        self.generation = 0  # of `_done`: rotations so far, persisted so a restore splits the ids alike

    def counts(self) -> JoinCounts:
        self.tally.pending = len(self.pending)
        return self.tally

    def see(self, ts: float, prediction: bool) -> None:
        """Note a record's event time; the watermark is the lesser of the two topics' newest times."""
        if prediction:
            if ts <= self.newest_prediction:
                return
            self.newest_prediction = ts
        else:
            if ts <= self.newest_outcome:
                return
            self.newest_outcome = ts
        # Until both topics have shown a record nothing expires: the silent one may just be lagging.
        self.advance(min(self.newest_prediction, self.newest_outcome))

    def advance(self, ts: float) -> None:
        """Move the watermark to `ts` if it is newer, and expire what has passed its horizon."""
        if ts <= self.watermark:
            return
        self.watermark = ts
        horizon = self.horizon
        if ts >= self._next_expiry:
            pending, order = self.pending, self._order
            self._next_expiry = float("inf")
            while order:
                packed = pending.get(order[0])
                if packed is None:  # matched meanwhile
                    order.popleft()
                    continue
                deadline = PENDING.unpack_from(packed)[0] + horizon
                if deadline > ts:
                    self._next_expiry = deadline
                    break
                self._expire(order.popleft(), packed)
        while self._stragglers and self._stragglers[0][0] + horizon <= ts:
            decision_id = heapq.heappop(self._stragglers)[1]
            if decision_id in self.pending:
                self._expire(decision_id, self.pending[decision_id])
        while self._held_order and self._held_order[0][0] + horizon <= ts:
            held_ts, decision_id = heapq.heappop(self._held_order)
            if decision_id in self.held and self.held[decision_id][0] == held_ts:
                del self.held[decision_id]
                self.tally.orphans += 1
                if self.journal is not None:
                    self.journal.held(decision_id, None)
        if ts >= self._rotate_at:
            self._rotate()
            self._rotate_at = ts + 2 * horizon

    def prediction(self, decision_id: str, ts: float, score: float, segment: int, predicted: bool,
                   offset: int = NO_OFFSET) -> bool:
        """Handle one valid prediction (its event time already parsed); False if it is a repeat."""
        if ts > self.newest_prediction:  # `see`, inlined: this runs once per prediction
            self.newest_prediction = ts
            low = ts if ts < self.newest_outcome else self.newest_outcome
            if low > self.watermark:
                self.advance(low)
        known = self.pending.get(decision_id)
        done = self._done.get(decision_id) or self._done_before.get(decision_id)
        if known is not None or done is not None:
            redelivered = offset != NO_OFFSET and offset == (
                PENDING.unpack_from(known)[4] if known is not None else DONE.unpack_from(done)[1])  # type: ignore[arg-type]
            if not redelivered:
                self.tally.duplicates += 1
            return False
        self.tally.predictions += 1
        packed = self._with_held(decision_id, PENDING.pack(ts, score, segment, predicted, offset))
        if packed is None:
            return True
        self.pending[decision_id] = packed
        if ts + self.horizon <= self.watermark:
            self._expire(decision_id, packed)
            return True
        if self.journal is not None:
            self.journal.pending(decision_id, packed)
        self._enqueue(decision_id, ts)
        if len(self.pending) > self.max_pending:
            self._evict_pending()
        return True

    def _with_held(self, decision_id: str, packed: bytes) -> bytes | None:
        """A new decision with what was held for it: None if that made it final, else what it keeps pending."""
        held = self.held.pop(decision_id, None)
        if held is None:
            return packed
        if self.journal is not None:
            self.journal.held(decision_id, None)
        ts, score, segment, predicted, offset = PENDING.unpack(packed)
        if held[0] < ts + self.horizon:
            self._match(decision_id, ts, score, segment, predicted, held[0], held[1])
            self._finalize(decision_id, _MATCHED, offset, held[2])
            return None
        self.tally.late += 1  # the outcome came after this decision's horizon
        self._finalize(decision_id, _LATE, offset, held[2])  # so a repeat of it is a duplicate
        return packed

    def outcome(self, outcome: Outcome, ts: float, offset: int = NO_OFFSET) -> None:
        """Handle one valid outcome (its event time already parsed)."""
        self.see(ts, False)
        decision_id = outcome.decision_id
        done = self._status(decision_id)
        held = self.held.get(decision_id)
        status = DONE.unpack_from(done) if done is not None else None
        if held is not None or (status is not None and status[0] in (_MATCHED, _LATE)):
            redelivered = offset != NO_OFFSET and offset == (held[2] if held is not None else status[2])  # type: ignore[index]
            if not redelivered:
                self.tally.duplicates += 1
            return
        self.tally.outcomes += 1
        if status is not None:  # expired: the outcome is late
            self.tally.late += 1
            self._finalize(decision_id, _LATE, status[1], offset)
            return
        packed = self.pending.get(decision_id)
        if packed is not None and ts >= PENDING.unpack_from(packed)[0] + self.horizon:
            # Past the horizon, though the prediction topic has not yet moved the watermark there.
            # The decision stays pending until it expires; its status says an outcome came late, so a
            # repeat of this outcome is a duplicate, as it is when the decision has expired first.
            self.tally.late += 1
            self._finalize(decision_id, _LATE, PENDING.unpack_from(packed)[4], offset)
            return
        if packed is None:
            self.held[decision_id] = (ts, outcome, offset)
            heapq.heappush(self._held_order, (ts, decision_id))
            if self.journal is not None:
                self.journal.held(decision_id, self.held[decision_id])
            if len(self.held) > self.max_held:
                self._evict_held()
            return
        del self.pending[decision_id]
        if self.journal is not None:
            self.journal.pending(decision_id, None)
        decision_ts, score, segment, predicted, prediction_offset = PENDING.unpack_from(packed)
        self._match(decision_id, decision_ts, score, segment, predicted, ts, outcome)
        self._finalize(decision_id, _MATCHED, prediction_offset, offset)

    def restore(self, pending: Iterable[tuple[str, bytes]], held: Iterable[tuple[str, HeldOutcome]],
                done: Iterable[tuple[str, bytes]], newest: tuple[float, float], tally: JoinCounts,
                rotation: tuple[int, float] | None = None) -> None:
        """Rebuild the state a journal persisted (after a restart or a rebalance). `rotation` is the
        generation of the newer final ids and when the next rotation falls; without it (state of older
        workers) every final id is of the newer generation and the clock starts at the watermark."""
        for decision_id, packed in sorted(pending, key=lambda item: PENDING.unpack_from(item[1])[0]):
            self.pending[decision_id] = packed
            self._enqueue(decision_id, PENDING.unpack_from(packed)[0])
        for decision_id, entry in held:
            self.held[decision_id] = entry
            heapq.heappush(self._held_order, (entry[0], decision_id))
        newer = (rotation[0] if rotation is not None else 0) & 1
        for decision_id, packed in done:
            older = len(packed) >= _STORED.size and packed[DONE.size] != newer  # a tail: event fingerprints
            (self._done_before if older else self._done)[decision_id] = packed
        self.newest_prediction, self.newest_outcome = newest
        self.watermark = min(newest)
        if rotation is None:
            self._rotate_at = self.watermark + 2 * self.horizon
        else:
            self.generation, self._rotate_at = rotation
        self.tally = tally

    def finish(self) -> None:
        """End of input: outcomes still waiting for a prediction are orphans."""
        self.tally.orphans += len(self.held)
        self.held.clear()
        self._held_order.clear()

    def finals(self) -> dict[str, bytes]:
        """Every final id still remembered, with its packed status (for a snapshot)."""
        return {**self._done_before, **self._done}

    def _status(self, decision_id: str) -> bytes | None:
        return self._done.get(decision_id) or self._done_before.get(decision_id)

    def _enqueue(self, decision_id: str, ts: float) -> None:
        if ts >= self._newest:
            self._newest = ts
            if not self._order:
                self._next_expiry = ts + self.horizon
            self._order.append(decision_id)
        else:
            heapq.heappush(self._stragglers, (ts, decision_id))

    def rotation(self) -> tuple[int, float]:
        """The generation of the newer final ids and when the next rotation falls, for `restore`."""
        return self.generation, self._rotate_at

    def _finalize(self, decision_id: str, status: int, prediction_offset: int, outcome_offset: int) -> None:
        self._store(decision_id, _STORED.pack(status, prediction_offset, outcome_offset, self.generation & 1))

    def _store(self, decision_id: str, packed: bytes) -> None:
        """Remember a final id with its packed status (and, with outcome events, a tail of fingerprints)."""
        self._done_before.pop(decision_id, None)  # made final again (late): remembered from now, once
        self._done[decision_id] = packed
        if self.journal is not None:
            self.journal.done(decision_id, packed)
        if len(self._done) + len(self._done_before) > self.max_finals:
            # Forget the older generation early: an outcome for one of them is then an orphan, not late.
            self.tally.evicted_finals += len(self._done_before)
            self._rotate()

    def _rotate(self) -> None:
        """The newer generation of final ids becomes the older one; the older one is forgotten."""
        if self.journal is not None:
            for decision_id in self._done_before:
                self.journal.done(decision_id, None)
        self._done_before, self._done = self._done, {}
        self.generation += 1

    def _match(self, decision_id: str, ts: float, score: float, segment: int, predicted: bool,
               outcome_ts: float, outcome: Outcome) -> None:
        self.tally.matched += 1
        label = float(outcome.label)
        kpis = tuple(k.read(label, outcome.value, outcome.kpis) for k in self.kpis)
        self.on_final(Decision(ts, segment, score, predicted, label, outcome.value, kpis,
                               outcome_ts - ts, decision_id))

    def _evict_pending(self) -> None:
        """Past `max_pending`, finalize the oldest pending decision now, as if its horizon had passed."""
        order, stragglers, pending = self._order, self._stragglers, self.pending
        while len(pending) > self.max_pending:
            while order and order[0] not in pending:  # matched meanwhile
                order.popleft()
            while stragglers and stragglers[0][1] not in pending:
                heapq.heappop(stragglers)
            straggler = bool(stragglers) and (not order or stragglers[0][0] < PENDING.unpack_from(pending[order[0]])[0])
            decision_id = heapq.heappop(stragglers)[1] if straggler else order.popleft()
            self.tally.evicted_pending += 1
            self._expire(decision_id, pending[decision_id])

    def _evict_held(self) -> None:
        """Past `max_held`, drop the oldest held outcome as an orphan."""
        held, order = self.held, self._held_order
        while len(held) > self.max_held:
            held_ts, decision_id = heapq.heappop(order)
            entry = held.get(decision_id)
            if entry is None or entry[0] != held_ts:  # matched meanwhile
                continue
            del held[decision_id]
            self.tally.orphans += 1
            self.tally.evicted_held += 1
            if self.journal is not None:
                self.journal.held(decision_id, None)
        if len(order) > 2 * len(held) + 1024:  # entries of outcomes matched meanwhile: drop them now
            self._held_order = [(entry[0], key) for key, entry in held.items()]
            heapq.heapify(self._held_order)

    def _expire(self, decision_id: str, packed: bytes) -> None:
        del self.pending[decision_id]
        ts, score, segment, predicted, offset = PENDING.unpack_from(packed)
        self.tally.expired += 1
        if self.journal is not None:
            self.journal.pending(decision_id, None)
        if decision_id not in self._done and decision_id not in self._done_before:  # else a late outcome
            self._finalize(decision_id, _EXPIRED, offset, NO_OFFSET)  # already made it final (_LATE)
        missing = self.missing
        if missing is None:
            return
        self.on_final(Decision(ts, segment, score, predicted, missing.label, missing.value,
                               self._missing_kpis, None, decision_id))

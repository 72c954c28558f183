"""The event-time join of predictions and outcomes on `decision_id`.

For each record, in this order: advance the watermark (the largest `ts` seen), expire every
pending decision whose `ts + horizon <= watermark`, then handle the record. README's "Join
semantics" section is the contract; this module is its only implementation.
"""

from __future__ import annotations

import heapq
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import NamedTuple

from monitor.events import Outcome
from monitor.spec import Spec

# A pending decision is packed into one small bytes object (ts, score, segment, predicted):
# about 160 bytes per decision with its key and dict slot, where a tuple of floats costs 250+.
_PENDING = struct.Struct("<ddI?")
_MATCHED, _EXPIRED, _LATE = 1, 2, 3


class Decision(NamedTuple):
    """A finalized decision: matched with its outcome, or expired and filled with `missing`."""

    ts: float
    segment: int
    score: float
    predicted: bool
    label: float
    value: float | None
    kpis: tuple[float | None, ...]
    delay: float | None  # seconds from decision to outcome; None when expired


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

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Joiner:
    """Joins predictions with outcomes by event time and hands each final decision to `on_final`."""

    def __init__(self, spec: Spec, on_final: Callable[[Decision], None]) -> None:
        self.horizon = spec.horizon
        self.missing = spec.missing
        self.kpis = spec.kpis
        missing = spec.missing
        self._missing_kpis = () if missing is None else tuple(
            k.read(missing.label, missing.value, missing.kpis) for k in spec.kpis)
        self.on_final = on_final
        self.watermark = float("-inf")
        self.tally = JoinCounts()
        self.pending: dict[str, bytes] = {}
        self._order: deque[str] = deque()  # pending ids, oldest decision first
        self._newest = float("-inf")
        self._next_expiry = float("inf")  # deadline of the oldest id in `_order` (it may have matched)
        self._stragglers: list[tuple[float, str]] = []  # out-of-order predictions, a heap
        self.held: dict[str, tuple[float, Outcome]] = {}  # outcomes waiting for their prediction
        self._held_order: list[tuple[float, str]] = []
        # Final ids, kept for at least two horizons after they finalize (so a late outcome is told
        # from an orphan up to three horizons after its decision), in two generations.
        self._done: dict[str, int] = {}
        self._done_before: dict[str, int] = {}
        self._rotate_at = float("-inf")

    def counts(self) -> JoinCounts:
        self.tally.pending = len(self.pending)
        return self.tally

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
                deadline = _PENDING.unpack(packed)[0] + horizon
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
        if ts >= self._rotate_at:
            self._done_before, self._done = self._done, {}
            self._rotate_at = ts + 2 * horizon

    def prediction(self, decision_id: str, ts: float, score: float, segment: int, predicted: bool) -> None:
        """Handle one valid prediction (its event time already parsed)."""
        self.advance(ts)
        if decision_id in self.pending or self._status(decision_id):
            self.tally.duplicates += 1
            return
        self.tally.predictions += 1
        held = self.held.pop(decision_id, None)
        if held is not None:
            if held[0] < ts + self.horizon:
                self._match(ts, score, segment, predicted, held[0], held[1])
                self._done[decision_id] = _MATCHED
                return
            self.tally.late += 1  # the outcome came after this decision's horizon
        packed = _PENDING.pack(ts, score, segment, predicted)
        if ts + self.horizon <= self.watermark:
            self.pending[decision_id] = packed
            self._expire(decision_id, packed)
            return
        self.pending[decision_id] = packed
        if ts >= self._newest:
            self._newest = ts
            if not self._order:
                self._next_expiry = ts + self.horizon
            self._order.append(decision_id)
        else:
            heapq.heappush(self._stragglers, (ts, decision_id))

    def outcome(self, outcome: Outcome, ts: float) -> None:
        """Handle one valid outcome (its event time already parsed)."""
        self.advance(ts)
        decision_id = outcome.decision_id
        status = self._status(decision_id)
        if status in (_MATCHED, _LATE) or decision_id in self.held:
            self.tally.duplicates += 1
            return
        self.tally.outcomes += 1
        if status == _EXPIRED:
            self.tally.late += 1
            self._done[decision_id] = _LATE
            return
        packed = self.pending.pop(decision_id, None)
        if packed is None:
            self.held[decision_id] = (ts, outcome)
            heapq.heappush(self._held_order, (ts, decision_id))
            return
        decision_ts, score, segment, predicted = _PENDING.unpack(packed)
        self._match(decision_ts, score, segment, predicted, ts, outcome)
        self._done[decision_id] = _MATCHED

    def finish(self) -> None:
        """End of input: outcomes still waiting for a prediction are orphans."""
        self.tally.orphans += len(self.held)
        self.held.clear()
        self._held_order.clear()

    def _status(self, decision_id: str) -> int:
        return self._done.get(decision_id) or self._done_before.get(decision_id, 0)

    def _match(self, ts: float, score: float, segment: int, predicted: bool,
               outcome_ts: float, outcome: Outcome) -> None:
        self.tally.matched += 1
        label = float(outcome.label)
        kpis = tuple(k.read(label, outcome.value, outcome.kpis) for k in self.kpis)
        self.on_final(Decision(ts, segment, score, predicted, label, outcome.value, kpis,
                               outcome_ts - ts))

    def _expire(self, decision_id: str, packed: bytes) -> None:
        del self.pending[decision_id]
        ts, score, segment, predicted = _PENDING.unpack(packed)
        self.tally.expired += 1
        self._done[decision_id] = _EXPIRED
        missing = self.missing
        if missing is None:
            return
        self.on_final(Decision(ts, segment, score, predicted, missing.label, missing.value,
                               self._missing_kpis, None))

"""A finalized decision: what the join hands to the statistics."""

from __future__ import annotations

from typing import Any

FIELDS = ("ts", "segment", "score", "predicted", "label", "value", "kpis", "delay", "decision_id")


class Decision:
    """A decision matched with its outcome, or expired and filled with the spec's `missing`.

    A plain class rather than a NamedTuple: compiled, it is a native object that the join builds
    without a call into the interpreter, and whose fields the statistics read at C speed."""

    __slots__ = ("decision_id", "delay", "events", "kpis", "label", "predicted", "score", "segment", "ts", "value")

    def __init__(self, ts: float, segment: int, score: float, predicted: bool, label: float, value: float | None,
                 kpis: tuple[float | None, ...], delay: float | None, decision_id: str = "",
                 events: tuple[int, ...] | None = None) -> None:
        self.ts = ts
        self.segment = segment
        self.score = score
        self.predicted = predicted
        self.label = label
        self.value = value
        self.kpis = kpis
        self.delay = delay  # seconds from decision to outcome; None when expired
        self.decision_id = decision_id
        self.events = events  # with outcome events: how many of each type were combined; else None

    def row(self) -> tuple[Any, ...]:
        """The fields in `FIELDS` order, for a table."""
        return tuple(getattr(self, name) for name in FIELDS)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Decision) and self.row() == other.row() and self.events == other.events

    def __hash__(self) -> int:
        return hash(self.row())

    def __repr__(self) -> str:
        return f"Decision({', '.join(f'{name}={value!r}' for name, value in zip(FIELDS, self.row(), strict=True))})"

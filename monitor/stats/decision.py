"""A finalized decision: what the join hands to the statistics."""

from __future__ import annotations

from typing import NamedTuple


class Decision(NamedTuple):
    """A decision matched with its outcome, or expired and filled with the spec's `missing`."""

    ts: float
    segment: int
    score: float
    predicted: bool
    label: float
    value: float | None
    kpis: tuple[float | None, ...]
    delay: float | None  # seconds from decision to outcome; None when expired
    decision_id: str = ""

"""The engine's saved state in plain values: what a segment's windows, detector and rollup keep.

msgspec structs, to persist and send between workers. They live in a module of their own because the
compiled build (setup.py) leaves it interpreted: msgspec cannot read the annotations of a class that
mypyc compiled.
"""

from __future__ import annotations

import msgspec

from monitor.contract import report
from monitor.stats.summary import SummaryState


class SegmentState(msgspec.Struct, array_like=True):
    """What one segment keeps of its closed slices: their total and the window they are building."""

    closed: SummaryState
    building: tuple[float, float, SummaryState] | None


class DetectorState(msgspec.Struct, array_like=True):
    """One segment's detector in plain values, to persist: its reference, episodes and latest scores."""

    reference: SummaryState | None
    windows: int
    start: float
    episodes: dict[str, tuple[bool, int]]  # kind -> (active, streak)
    misalignment: list[tuple[str, str, float]]


class SegmentBase(msgspec.Struct, array_like=True):
    """One segment of a rollup, as of its last closed slice."""

    windows: SegmentState
    detector: DetectorState | None
    latest: report.Window | None  # the latest complete window
    # the last `windows.keep` complete windows (the latest among them), so a restored timeline goes on where it
    # was; bases written before this field restart theirs at `latest`
    timeline: list[report.Window] = []

"""The engine's saved state in plain values: what a segment's windows, detector and rollup keep.

msgspec structs, to persist and send between workers. They live in a module of their own because the
compiled build (setup.py) leaves it interpreted: msgspec cannot read the annotations of a class that
mypyc compiled.
"""

from __future__ import annotations

import msgspec

from monitor.contract import report
from monitor.stats.readings import ReadingState
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


SavedReading = tuple[ReadingState, ReadingState | None]  # a reading and the entries it takes back (`Reading.out`)


class EarlyWindowState(msgspec.Struct, array_like=True):
    """A window of early readings still rolling slices in, at one age."""

    index: int  # the age's position in `spec.reading_ages`
    start: float
    end: float
    slices: list[int]
    reading: SavedReading


class EarlyReferenceState(msgspec.Struct, array_like=True):
    """A segment's reference at one age: its first windows read at that age, merged."""

    index: int
    windows: int
    start: float
    reading: SavedReading | None


class PendingState(msgspec.Struct, array_like=True):
    """A provisional early alert waiting for the final readings of its window's slices."""

    kind: str
    alert: str  # its id
    subject: str
    start: float
    end: float
    slices: list[int]  # the window's
    left: list[int]  # those not yet final
    reading: SavedReading  # the final readings so far, merged


class EarlySegmentState(msgspec.Struct, array_like=True):
    """One segment's early readings and their detector, between slices: what a restore needs to go on exactly."""

    read_before: list[int]  # per age, the segment's slices below this id have been read
    building: list[EarlyWindowState]
    references: list[EarlyReferenceState]
    episodes: dict[str, tuple[float, int, str]]  # kind -> (start, clean windows in a row, its alert's status)
    pending: list[PendingState]
    timeline: list[tuple[int, list[report.Reading]]]  # per age shown, its last windows

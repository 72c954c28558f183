"""What the streaming workers write: messages between their stages, and their persisted state (msgpack).

Every persisted entry carries the `FORMAT` it was written in (`format`; 1 for entries of releases before
formats were written, which have none), and the metrics stage's completeness marker carries it for the
partition's fences and watermarks. A format only appends fields, with defaults: a worker reads every earlier
format as it is, and a worker of the release before reads this one, ignoring what it does not know (the rollback
rule in docs/workers.md says what that loses).

Formats: 1, before formats were written; 2, outcome events (held events and event counts in `JoinState`,
taken-back entries in `EarlySlice`) and the windows a base keeps (`SegmentBase.timeline`); 3, early state (the
metrics stage's `EarlyEntry`, `ReaderEntry` and progress, under keys that releases before ignore).
"""

from __future__ import annotations

import logging
import math

import cramjam
import msgspec

from monitor.engine.join import HeldEvent
from monitor.engine.source import EarlyPart, Part
from monitor.engine.state import EarlySegmentState, SegmentBase
from monitor.stats.readings import Ages, ReadingState
from monitor.stats.summary import Shape, Summary, SummaryState

log = logging.getLogger(__name__)
FORMAT = 3  # of what this release writes
BEFORE = 1  # the format of entries that carry none


class SlicePart(msgspec.Struct, array_like=True):
    """The decisions of one segment and one slice of decision time that a join partition finalized."""

    segment: list[str]  # the `by` values; [] for the overall segment
    slice_id: int
    late: bool  # finalized after the source saw its slice close: totals only
    summary: SummaryState

    @classmethod
    def of(cls, part: Part) -> SlicePart:
        return cls(list(part.segment), part.slice_id, part.late, part.summary.state())

    def part(self, shape: Shape) -> Part:
        return Part(tuple(self.segment), self.slice_id, self.late, Summary.from_state(shape, self.summary))


class EarlySlice(msgspec.Struct, array_like=True):
    """What a join partition learnt of one segment's slice at each age (`monitor.stats.readings.Ages`)."""

    segment: list[str]
    slice_id: int
    ages: list[ReadingState | None]
    taken_back: list[ReadingState | None] = []  # entries taken back per age (outcome events); older: none

    @classmethod
    def of(cls, part: EarlyPart) -> EarlySlice:
        return cls(list(part.segment), part.slice_id, part.ages.state(), part.ages.taken_back())

    def part(self) -> EarlyPart:
        return EarlyPart(tuple(self.segment), self.slice_id, Ages.from_state(self.ages, self.taken_back))


class Delta(msgspec.Struct, array_like=True):
    """One checkpoint of one join partition, for one metrics partition: merge these parts, then
    know that every decision of this source with `ts + horizon <= watermark` has been sent."""

    source: int  # the join partition
    seq: int  # its checkpoint number: a metrics partition merges each (source, seq) once; FENCE: a fence
    watermark: float
    parts: list[SlicePart]
    early: list[EarlySlice] = []  # early readings' parts (absent from deltas of older workers)
    epoch: int = 0  # the owner's epoch when the checkpoint was cut (0 from older workers)

    @classmethod
    def fence(cls, source: int, epoch: int) -> Delta:
        """An owner of `epoch` is restoring `source`: its checkpoints after what it restores replace any
        older owner's (see `monitor.stream.epochs`)."""
        return cls(source, FENCE, -math.inf, [], [], epoch)


FENCE = -1  # the seq of a fence


HeldEntry = tuple[float, bytes, int]  # event time, outcome as JSON, offset of its record


class JoinState(msgspec.Struct, array_like=True):
    """A join partition's state: the changes since the last checkpoint, or everything (a snapshot).

    A checkpoint is one message of its own (chunked only when large), so a crash leaves it whole
    or absent; its `outbox` is sent to the metrics stage only once it is durable."""

    seq: int
    newest_prediction: float
    newest_outcome: float
    counts: list[int]
    records: dict[str, int]
    reasons: dict[str, int]
    folded: int
    offsets: dict[str, int]  # the last offset handled, per topic
    segments: list[list[str]]  # segment keys of the local ids packed into `pending`
    pending: dict[str, bytes | None]  # None: removed
    held: dict[str, HeldEntry | None]
    done: dict[str, bytes | None]
    outbox: list[tuple[int, bytes]]  # (metrics partition, encoded Delta)
    rotation: tuple[int, float] | None = None  # the join's final-id generation and next rotation (older: none)
    held_events: dict[str, list[HeldEvent] | None] = {}  # outcome events held for their prediction; None: removed
    events: list[tuple[str, str, int]] = []  # outcome events per (type, status) so far
    format: int = BEFORE


class Head(msgspec.Struct, array_like=True):
    """Where a join partition's state starts: its newest complete snapshot."""

    generation: int
    seq: int  # the checkpoint the snapshot is as of; later checkpoints follow it
    chunks: int
    format: int = BEFORE


class Fence(msgspec.Struct, array_like=True):
    """What a metrics partition knows of one source: its newest owner's epoch, the last checkpoint that owner
    restored (None until its first checkpoint says), and the last checkpoint merged here (every checkpoint sends
    every metrics partition a delta, so they are merged in sequence; None in state of earlier releases, whose
    readers ignore the field)."""

    epoch: int
    through: int | None
    merged: int | None = None


class SliceEntry(msgspec.Struct, array_like=True):
    """A metrics partition's merged summary of one open slice of one segment, and what it took in."""

    summary: SummaryState
    applied: dict[int, int]  # per source, the last checkpoint merged
    format: int = BEFORE


class BaseEntry(msgspec.Struct, array_like=True):
    """A metrics partition's segment as of its closed slices: one per segment, whatever the run's length."""

    base: SegmentBase
    applied: dict[int, int]  # per source, the last checkpoint merged into it (late parts, folded slices)
    through: int  # every slice below this id is folded in
    format: int = BEFORE


class EarlyEntry(msgspec.Struct, array_like=True):
    """A metrics partition's open slice of one segment's early readings: what it took in, and the head of its log
    of what each save added (`monitor.stream.early_store`)."""

    applied: dict[int, int]  # per source, the last checkpoint merged
    generation: int
    length: int  # of the log, in bytes
    tail: bytes  # its bytes after the last full page
    format: int = FORMAT


class ReaderEntry(msgspec.Struct, array_like=True):
    """The head of the log of a metrics partition's segment's early state: one `EarlySegmentState` per generation."""

    generation: int
    length: int
    tail: bytes
    format: int = FORMAT


encode = msgspec.msgpack.Encoder().encode
delta = msgspec.msgpack.Decoder(Delta).decode
join_state = msgspec.msgpack.Decoder(JoinState).decode
head = msgspec.msgpack.Decoder(Head).decode
slice_entry = msgspec.msgpack.Decoder(SliceEntry).decode
base_entry = msgspec.msgpack.Decoder(BaseEntry).decode
early_entry = msgspec.msgpack.Decoder(EarlyEntry).decode
reader_entry = msgspec.msgpack.Decoder(ReaderEntry).decode
progress = msgspec.msgpack.Decoder(list[int]).decode
added = msgspec.msgpack.Decoder(list[tuple[int, bytes]]).decode  # per array of a slice, what a save appended
early_segment = msgspec.msgpack.Decoder(EarlySegmentState).decode
chunk = msgspec.msgpack.Decoder(tuple[int, bytes]).decode  # (chunks in all, bytes)
watermarks = msgspec.msgpack.Decoder(dict[int, float]).decode
fences = msgspec.msgpack.Decoder(dict[int, Fence]).decode


LZ4 = b"Z"  # marks a compressed blob: a msgpack array (every JoinState) never starts with it


def pack(blob: bytes) -> bytes:
    """A join checkpoint or snapshot as written: LZ4 halves the changelog's bytes for about 1 ms a megabyte."""
    return LZ4 + bytes(cramjam.lz4.compress_block(blob))


def unpack(data: bytes) -> bytes:
    """What `pack` took; a blob that older workers wrote uncompressed is returned as it is."""
    return bytes(cramjam.lz4.decompress_block(data[1:])) if data[:1] == LZ4 else data


def stored_format(found: int, what: str) -> None:
    """Note an entry written by a later release: read as far as this one knows it."""
    if found > FORMAT:
        log.warning("%s was written in state format %d by a later release; this worker knows format %d and reads"
                    " what it knows of it (docs/workers.md: rolling back)", what, found, FORMAT)


def marker(raw: bytes) -> int:
    """The format in a metrics partition's completeness marker (empty from releases before formats)."""
    return int(msgspec.msgpack.decode(raw)) if raw else BEFORE

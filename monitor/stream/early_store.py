"""What a metrics partition stores of its early readings (`monitor.engine.early_windows`), and reads back.

Under the partition's key prefix with "e" in front (`monitor.stream.store`; releases before state format 3
read no key that starts so, and a rollback restarts the early readings):

    s<slice, segment>            an open slice: what each source's checkpoints added, and the head of its log
    r<segment>                   a segment's windows rolling at each age, references, open early episodes,
                                 provisional alerts waiting for their horizon and early timeline: a log head
    p<head, generation, page>    a full page of a head's log (`monitor.stream.pages`)
    progress                     the ages the partition's slices have been read at

A slice's log holds, per save that grew it, what each of its arrays gained (`Ages.arrays`), so a save writes
what it added; a segment's state is written whole, as a new generation, when its slices are read. Its
readings are merges of the stored parts, never of what an earlier reading left behind, so every prefix of a
save restores to a state that the deltas delivered again carry forward: the slices a save grew come first,
then the segments it read (a segment stored ahead of the partition goes on from where it was), then the
progress, then the slices read at their last age go.
"""

from __future__ import annotations

from array import array

import msgspec

from monitor.engine.rollup import Rollup
from monitor.engine.windows import SegmentKey
from monitor.stats.readings import Ages
from monitor.stream import wire
from monitor.stream.pages import Log, records
from monitor.stream.store import Write

EARLY = b"e"  # in front of the partition's prefix
PROGRESS = b"progress"


class _Slice:
    """An open slice as stored: what it took in, its log, and its arrays' lengths as of the last save."""

    __slots__ = ("applied", "counts", "log")

    def __init__(self, applied: dict[int, int] | None = None, log: Log | None = None,
                 counts: list[int] | None = None) -> None:
        self.applied = applied if applied is not None else {}  # per source, the last checkpoint merged
        self.log = log if log is not None else Log()
        self.counts = counts if counts is not None else []


class EarlyStore:
    """One metrics partition's early state: merged once per (source, checkpoint) and slice, saved in order."""

    def __init__(self, rollup: Rollup) -> None:
        self.rollup = rollup
        self.kpis = len(rollup.spec.kpis)
        self.ages = len(rollup.spec.reading_ages)
        rollup.early.tracked = True
        self.slices: dict[tuple[int, SegmentKey], _Slice] = {}
        self.readers: dict[SegmentKey, Log] = {}  # per segment, its state's log as stored
        self.progress: list[int] = []  # as last saved
        self._grown: dict[tuple[int, int], None] = {}  # (slice, segment) merged into since the last save
        self._read: set[int] = set()  # segments read since the last save
        self._done: list[tuple[bytes, Log]] = []  # heads of slices read at their last age, and their logs
        self._stale: list[bytes] = []  # pages no head names (a save a crash cut), to delete

    def __bool__(self) -> bool:
        """Whether anything waits to be saved."""
        return bool(self._grown or self._read or self._done or self._stale
                    or self.rollup.early.read_before != self.progress)

    def merge(self, source: int, seq: int, parts: list[wire.EarlySlice]) -> None:
        """A delta's early parts: each (segment, slice) takes a source's checkpoint once."""
        rollup = self.rollup
        for e in parts:
            segment = rollup.segments.intern(tuple(e.segment))
            if not rollup.early.takes(segment, e.slice_id):  # read at every age: a redelivery
                continue
            stored = self.slices.get((e.slice_id, rollup.key(segment)))
            if stored is None:
                stored = self.slices[(e.slice_id, rollup.key(segment))] = _Slice()
            if seq > stored.applied.get(source, -1):
                stored.applied[source] = seq
                rollup.early.merge(segment, e.slice_id, e.part().ages)
                self._grown[(e.slice_id, segment)] = None

    def advanced(self) -> None:
        """The rollup's watermark moved: note the segments it read and the slices it is done with."""
        rollup = self.rollup
        read, finished = rollup.early.changes()
        self._read |= read
        for segment, slice_id in finished:
            key = rollup.key(segment)
            stored = self.slices.pop((slice_id, key), None)
            if stored is not None and stored.log.length:  # else never saved: nothing stored to delete
                self._done.append((_slice_head(slice_id, key), stored.log))

    def save(self, prefix: bytes) -> tuple[list[Write], list[Write]]:
        """The writes of a save: those that go before the bases (slices grown), and those after them."""
        rollup, early = self.rollup, EARLY + prefix
        grown: list[Write] = []
        for slice_id, segment in self._grown:
            ages = rollup.early.open.get((segment, slice_id))
            if ages is None:  # read at its last age since
                continue
            key = rollup.key(segment)
            stored, head = self.slices[(slice_id, key)], _slice_head(slice_id, key)
            arrays = ages.arrays(self.kpis)
            stored.counts += [0] * (len(arrays) - len(stored.counts))
            added = [(i, a[n:].tobytes()) for i, (a, n) in enumerate(zip(arrays, stored.counts, strict=True))
                     if len(a) > n]
            stored.counts = [len(a) for a in arrays]
            log = stored.log
            grown += _pages(early, head, log, log.append(wire.encode(added)))
            grown.append((early + head, wire.encode(wire.EarlyEntry(dict(stored.applied), *_head(log)))))
        then: list[Write] = []
        for segment in sorted(self._read):
            key = rollup.key(segment)
            head = _reader_head(key)
            old = self.readers.get(key)
            log = self.readers[key] = Log(0 if old is None else old.generation + 1)
            then += _pages(early, head, log, log.append(wire.encode(rollup.early_state(segment))))
            then.append((early + head, wire.encode(wire.ReaderEntry(*_head(log)))))
            if old is not None:
                then += [(early + _page_head(head, old.generation, i), None) for i in range(old.pages)]
        if rollup.early.read_before != self.progress:
            self.progress = list(rollup.early.read_before)
            then.append((early + PROGRESS, wire.encode(self.progress)))
        for head, log in self._done:
            then.append((early + head, None))
            then += [(early + _page_head(head, log.generation, i), None) for i in range(log.pages)]
        then += [(early + key, None) for key in self._stale]
        self._grown, self._read, self._done, self._stale = {}, set(), [], []
        return grown, then

    def rewrite(self) -> None:
        """A new owner's first save writes everything anew, under its epoch."""
        rollup = self.rollup
        for stored in self.slices.values():
            stored.log, stored.counts = Log(), []
        self._grown = {(slice_id, rollup.segments.intern(key)): None for slice_id, key in self.slices}
        self._read = rollup.early_segments()
        self.readers = {}
        self.progress = []
        self._done, self._stale = [], []

    def restore(self, entries: list[tuple[bytes, bytes]]) -> None:
        """Take back what `save` wrote: `entries` are (key after the prefix, value) of one epoch."""
        rollup = self.rollup
        pages: dict[tuple[bytes, int], dict[int, bytes]] = {}
        heads: list[tuple[bytes, bytes]] = []
        for key, value in entries:
            if key == PROGRESS:
                self.progress = list(wire.progress(value))
            elif key[:1] == b"p":
                head, generation, index = _page(key[1:])
                pages.setdefault((head, generation), {})[index] = value
            else:
                heads.append((key, value))
        progress: dict[int, list[int]] = {}
        slices: list[tuple[int, SegmentKey, wire.EarlyEntry]] = []
        for key, value in heads:
            if key[:1] == b"r":
                reader = wire.reader_entry(value)
                log = _restored(reader.generation, reader.length, reader.tail)
                state = wire.early_segment(_read(pages, key, log, reader.tail)[-1])  # the one record of its generation
                self.readers[_segment(key[1:])] = log
                progress[rollup.restore_early(_segment(key[1:]), state)] = state.read_before
            else:
                slice_id, stored = _slice(key[1:])
                slices.append((slice_id, stored, wire.early_entry(value)))
        # A segment stored ahead of the partition's progress was read by a save that a crash cut before the
        # progress: the other segments go on from the progress, it from where it was.
        rollup.early.restore_progress(self.progress or rollup.early.read_before, progress)
        for slice_id, stored, entry in slices:
            segment = rollup.segments.intern(stored)
            log = _restored(entry.generation, entry.length, entry.tail)
            found = _read(pages, _slice_head(slice_id, stored), log, entry.tail)
            if not rollup.early.takes(segment, slice_id):  # read at its last age before a crash cut the delete
                self._done.append((_slice_head(slice_id, stored), log))
                continue
            arrays = [array("d") for _ in range(self.ages * 2 * (4 + self.kpis))]
            for record in found:
                for i, raw in wire.added(record):
                    arrays[i].frombytes(raw)
            self.slices[(slice_id, rollup.key(segment))] = _Slice(dict(entry.applied), log, [len(a) for a in arrays])
            rollup.early.restore_slice(segment, slice_id, Ages.from_arrays(self.ages, self.kpis, arrays))
        self._stale = [_page_head(head, generation, i) for (head, generation), found in pages.items()
                       for i in found]  # what `_read` left: pages of no head


def _head(log: Log) -> tuple[int, int, bytes, int]:
    return log.generation, log.length, bytes(log.tail), wire.FORMAT


def _restored(generation: int, length: int, tail: bytes) -> Log:
    log = Log(generation)
    log.length, log.tail = length, bytearray(tail)
    return log


def _read(pages: dict[tuple[bytes, int], dict[int, bytes]], head: bytes, log: Log, tail: bytes) -> list[bytes]:
    """The records of a head's log; its pages are taken out of `pages` (what is left is stale)."""
    mine = pages.get((head, log.generation), {})
    found = [mine.pop(i) for i in range(log.pages)]
    return list(records(found, tail, log.length))


def _pages(early: bytes, head: bytes, log: Log, full: list[tuple[int, bytes]]) -> list[Write]:
    return [(early + _page_head(head, log.generation, i), page) for i, page in full]


def _slice_head(slice_id: int, key: SegmentKey) -> bytes:
    return b"s" + wire.encode((slice_id, key))


def _reader_head(key: SegmentKey) -> bytes:
    return b"r" + wire.encode(key)


def _page_head(head: bytes, generation: int, index: int) -> bytes:
    return b"p" + wire.encode((head, generation, index))


_slice = msgspec.msgpack.Decoder(tuple[int, tuple[str, ...]]).decode
_segment = msgspec.msgpack.Decoder(tuple[str, ...]).decode
_page = msgspec.msgpack.Decoder(tuple[bytes, int, int]).decode

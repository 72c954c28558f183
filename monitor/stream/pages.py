"""Stored values that outgrow one changelog message: logs of records, kept as fixed pages and a head.

An early reading keeps every score and value it has seen (`monitor.stats.readings`), so what a metrics
partition stores of it grows with the traffic: at 100 decisions a second, an hour-long slice holds
360,000 scores, several times Kafka's default 1 MB message limit. A `Log` stores such a value as records
appended to a byte log. Each full page is written once, under its own key; the head (one small entry
that the caller writes after the pages) holds the bytes since the last full page and the log's length.
A save that grows a slice therefore writes what it added, not the whole slice, and a save that a crash
cuts leaves a head that names only pages written before it: a restore reads exactly the log as of that
head. A value rewritten whole (a segment's early state) starts a new generation of pages instead, and
the old generation's pages go once the new head is written.

    >>> log = Log()
    >>> full = log.append(b"x" * (PAGE + 10))
    >>> [(i, len(page)) for i, page in full], log.length, len(log.tail)
    ([(0, 65536)], 65550, 14)
    >>> list(records([page for _, page in full], bytes(log.tail), log.length)) == [b"x" * (PAGE + 10)]
    True
"""

from __future__ import annotations

from collections.abc import Iterator

PAGE = 64 * 1024  # bytes per stored page: far below Kafka's default 1 MB message limit
FRAME = 4  # bytes of each record's length


class Log:
    """An append-only log of records, as pages: its generation, length and the bytes after its last full page."""

    __slots__ = ("generation", "length", "tail")

    def __init__(self, generation: int = 0) -> None:
        self.generation = generation
        self.length = 0
        self.tail = bytearray()

    def append(self, record: bytes) -> list[tuple[int, bytes]]:
        """Add a record; returns the pages it filled, (index, bytes), to be written before the head."""
        self.tail += len(record).to_bytes(FRAME, "big") + record
        self.length += FRAME + len(record)
        full = []
        index = self.pages
        while len(self.tail) >= PAGE:
            full.append((index, bytes(self.tail[:PAGE])))
            del self.tail[:PAGE]
            index += 1
        return full

    @property
    def pages(self) -> int:
        """Full pages written."""
        return (self.length - len(self.tail)) // PAGE


def records(pages: list[bytes], tail: bytes, length: int) -> Iterator[bytes]:
    """The records of a stored log: its full pages in order, then its head's tail, `length` bytes in all."""
    data = b"".join(pages) + tail
    if len(data) != length or any(len(page) != PAGE for page in pages):
        raise ValueError(f"a stored log of {length} bytes has {len(data)} in {len(pages)} pages and its head")
    at = 0
    while at < length:
        size = int.from_bytes(data[at:at + FRAME], "big")
        yield data[at + FRAME:at + FRAME + size]
        at += FRAME + size

"""Record sources for replay: a replay file, or a time range of the Kafka topics (`kafka_range`).

A source yields the records in the order the engine takes them, and both kinds apply one
definition of a time range (`TimeRange`), so a capture of a range replays exactly as the range.
`Narrowed` keeps the part of the traffic that `--segment` asks for.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO, NamedTuple, Protocol

from monitor.contract.avro import container_values, is_container
from monitor.contract.decode import decode_record, event_time
from monitor.contract.errors import MonitorError, RecordError
from monitor.contract.events import Incoming, Payload
from monitor.contract.spec import Spec
from monitor.engine.segments import UNKNOWN

TABLES = ("predictions", "outcomes")  # the spec's tables of the two topics, in RawFiles' rank order


class Raw(NamedTuple):
    """One Kafka record: its value stays bytes until the engine routes it."""

    topic: str
    value: Payload
    key: str | bytes | None = None  # bytes: not UTF-8 text
    timestamp: int | None = None  # ms
    partition: int | None = None
    offset: int | None = None


class Bad(NamedTuple):
    """A line of a replay file that is not a record at all."""

    reason: str
    line: bytes


class RecordSource(Protocol):
    """Records in the engine's order; `done` of `total` (any unit) drives a progress bar."""

    @property
    def unit(self) -> str: ...

    @property
    def total(self) -> int: ...

    @property
    def done(self) -> int: ...

    def __iter__(self) -> Iterator[Incoming | Bad]: ...


@dataclass(frozen=True)
class TimeRange:
    """Which records a replay reads, by their Kafka record timestamp (ms).

    Predictions (and any other topic) with start <= timestamp < end; outcomes with
    start <= timestamp < end + horizon, so decisions near the end still get their outcomes.
    Records without a timestamp are always in. An open end reads to the newest record."""

    start: int | None = None
    end: int | None = None
    lookahead: int = 0  # ms past `end` for outcomes: one horizon
    outcomes: str = "outcomes"

    @classmethod
    def of(cls, spec: Spec, start: int | None, end: int | None) -> TimeRange:
        if start is not None and end is not None and end <= start:
            raise MonitorError(f"--to must be after --from: got {start} ms and {end} ms")
        return cls(start, end, round(spec.horizon * 1000), spec.topics.outcomes)

    def limit(self, topic: str) -> int | None:
        """The first timestamp past the range on `topic`."""
        if self.end is None:
            return None
        return self.end + self.lookahead if topic == self.outcomes else self.end

    def holds(self, topic: str, timestamp: int | None) -> bool:
        if timestamp is None:
            return True
        if self.start is not None and timestamp < self.start:
            return False
        limit = self.limit(topic)
        return limit is None or timestamp < limit


class FileRecords:
    """The records of a replay file (one JSON record per line) that fall in a time range."""

    unit = "bytes"

    def __init__(self, path: Path, window: TimeRange | None = None) -> None:
        self.path = path
        self.window = window or TimeRange()
        self.total = path.stat().st_size
        self.done = 0

    def __iter__(self) -> Iterator[Incoming | Bad]:
        window = self.window
        whole = window.start is None and window.end is None
        with self.path.open("rb") as stream:
            for i, line in enumerate(stream):
                if i % 4096 == 0:
                    self.done = stream.tell()
                if line.isspace():  # blank (a line from a file is never empty); no copy, unlike strip()
                    continue
                try:
                    record = decode_record(line)
                    if not (whole or window.holds(record.topic, record.timestamp)):
                        continue
                    if record.value_base64 is None and record.key_base64 is None:
                        yield record  # the decoded line serves as it is: no copy on the hot path
                    else:
                        yield Raw(record.topic, record.payload(), record.record_key(), record.timestamp,
                                  record.partition, record.offset)
                except RecordError as exc:
                    yield Bad(exc.reason, line)
        self.done = self.total


class RawFiles:
    """Two files of bare values, as a warehouse export or a `kcat` dump gives them: the predictions'
    and the outcomes', each one JSON value per line or an Avro object container file. Each is read in
    its own order; the two are merged by event time (the head with the earlier `ts` goes first, a
    prediction before an outcome of the same time), so the join meets them as they happened. A value
    whose time cannot be read goes at once, for the engine to dead-letter. The records have no Kafka
    timestamp, key, partition or offset.

    A container file holds decoded records, not the registry's wire format: `spec` reads them as JSON,
    whatever the topic's `format` says, and is the spec to replay them with."""

    unit = "bytes"

    def __init__(self, spec: Spec, predictions: Path, outcomes: Path) -> None:
        for table in TABLES:
            for name, path in getattr(spec, table).paths:
                if path[0].startswith("@"):
                    raise MonitorError(f"{table}.{name} = {path[0]!r}: bare values have no record key or Kafka"
                                       " timestamp; replay an envelope file (--input) or the topics instead")
        self.paths = ((predictions, spec.topics.predictions, 0), (outcomes, spec.topics.outcomes, 1))
        self.containers = tuple(map(_container, (predictions, outcomes)))
        self.spec = replace(spec, **{table: replace(getattr(spec, table), format="json")
                                     for table, container in zip(TABLES, self.containers, strict=True) if container})
        self.total = predictions.stat().st_size + outcomes.stat().st_size
        self.done = 0

    def __iter__(self) -> Iterator[Incoming | Bad]:
        files = [self._timed(*where) for where in self.paths]
        for _, _, record in heapq.merge(*files, key=lambda item: (item[0], item[1])):
            yield record
        self.done = self.total

    def _timed(self, path: Path, topic: str, rank: int) -> Iterator[tuple[float, int, Raw | Bad]]:
        read = self.spec.reader.prediction if rank == 0 else self.spec.reader.outcome
        table = TABLES[rank]
        divisor = getattr(self.spec, table).divisor
        with path.open("rb") as stream:
            try:
                for value in self._values(stream, rank):
                    try:
                        ts = event_time(read(value).ts, divisor, table)
                    except RecordError:
                        ts = -math.inf  # the engine says why
                    yield ts, rank, Raw(topic, value)
            except _Damaged as exc:
                yield -math.inf, rank, Bad(exc.reason, b"")

    def _values(self, stream: BinaryIO, rank: int) -> Iterator[bytes]:
        if self.containers[rank]:
            try:
                for value in container_values(stream):
                    self.done = min(self.total, self.done + len(value))  # decoded bytes: the bar moves, roughly
                    yield value
            except Exception as exc:  # fastavro's own, for a file cut short or damaged: the rest is unreadable
                raise _Damaged(f"{TABLES[rank]} file: Avro container unreadable from here on "
                               f"({str(exc) or type(exc).__name__})") from None
            return
        for line in stream:
            self.done += len(line)
            value = line.rstrip(b"\r\n")
            if value and not value.isspace():
                yield value


class _Damaged(RecordError):
    """A container file that cannot be read on."""


def _container(path: Path) -> bool:
    with path.open("rb") as stream:
        return is_container(stream.read(4))


# --segment: the prediction fields a replay can be narrowed by, as `segments.by` names them
FIELDS = ("model", "model_version", "variant", "action")


def parse_segments(options: Iterable[str]) -> dict[str, str]:
    """`--segment FIELD=VALUE` options as {field: value}; fails naming the bad option."""
    wanted: dict[str, str] = {}
    for option in options:
        field, sep, value = option.partition("=")
        if not sep or not value or not (field in FIELDS or (field.startswith("segment.") and len(field) > 8)):
            raise MonitorError(f"--segment: got {option!r}, expected FIELD=VALUE such as variant=control, with "
                               f"FIELD one of {', '.join(FIELDS)} or segment.<key>")
        if field in wanted and wanted[field] != value:
            raise MonitorError(f"--segment: {field} is given twice ({wanted[field]!r} and {value!r})")
        wanted[field] = value
    return wanted


class Narrowed:
    """The records of a source that belong to decisions matching every `--segment` field.

    A prediction that does not match is dropped and its id remembered, so its outcomes are
    dropped too. Records that cannot be read as a prediction or outcome are kept, for the
    engine to count as invalid. An outcome that arrives before its dropped prediction cannot be
    told apart yet: it is kept, and ends as an orphan."""

    def __init__(self, source: RecordSource, spec: Spec, wanted: dict[str, str]) -> None:
        self.source = source
        self.unit = source.unit
        self.spec = spec
        self.wanted = wanted
        self.dropped: set[str] = set()

    @property
    def total(self) -> int:
        return self.source.total

    @property
    def done(self) -> int:
        return self.source.done

    def __iter__(self) -> Iterator[Incoming | Bad]:
        predictions, outcomes = self.spec.topics.predictions, self.spec.topics.outcomes
        for record in self.source:
            if not isinstance(record, Bad):
                if record.topic == predictions and not self._matches(record):
                    continue
                if record.topic == outcomes and self.dropped and self._dropped(record):
                    continue
            yield record

    def _matches(self, record: Incoming) -> bool:
        tags = self.spec.reader.tags(record.value, record.key, record.timestamp)
        if tags is None:
            return True
        for field, want in self.wanted.items():
            got = (tags.segment or {}).get(field[8:]) if field.startswith("segment.") else getattr(tags, field)
            if (got or UNKNOWN) != want:
                self.dropped.add(tags.decision_id)
                return False
        return True

    def _dropped(self, record: Incoming) -> bool:
        decision_id = self.spec.reader.decision_id(record.value, record.key, record.timestamp)
        return decision_id is not None and decision_id in self.dropped

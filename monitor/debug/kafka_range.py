"""A time range of the input topics, read from Kafka without a consumer group (kafka-python).

Per partition of both topics, the range starts at the first offset whose timestamp is at or
after `--from` and ends before the first offset at or after its limit (`--to`, plus one horizon
on the outcomes topic), as the broker's time index finds them when the read starts. Inside those
offsets a record counts only when its own timestamp is in the range, so a record produced out of
order is left out the same way a file replay leaves it out.

Nothing is committed and no group is joined: a replay never moves a running worker's offsets.
Each partition is read in offset order, as a worker reads it, and partitions are merged by the
smallest timestamp among the next `LOOKAHEAD` records of each (then topic, partition, offset). In a
partition whose timestamps rise, that is its next record's own; a record stamped far ahead of the
ones after it (a producer that left the timestamp to the broker amid records that carry their own, a
skewed clock) then does not hold its partition back behind every other. The order depends on the
records alone, never on fetch sizes, so two reads of one range give the same report.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

from monitor.contract.errors import MonitorError
from monitor.contract.spec import Spec
from monitor.debug.records import Raw, TimeRange

BUFFERED = 20_000  # records held per partition before it is paused
LOOKAHEAD = 1_000  # records of a partition whose smallest timestamp orders its next record in the merge
STALL_SECONDS = 30.0  # no record for this long while a partition still owes some: give up


class KafkaRange:
    """The records of the spec's predictions and outcomes topics within `window`."""

    unit = "records"

    def __init__(self, spec: Spec, client: Mapping[str, Any], window: TimeRange) -> None:
        """`client`: kafka-python's keywords for the broker, its security included (`Connection.kafka_python()`)."""
        self.client = dict(client)
        self.servers = str(client["bootstrap_servers"])
        self.topics = (spec.topics.predictions, spec.topics.outcomes)
        self.window = window
        self.total = 0
        self.done = 0

    def __iter__(self) -> Iterator[Raw]:
        from kafka.consumer.group import KafkaConsumer

        consumer = KafkaConsumer(**self.client, group_id=None, enable_auto_commit=False,
                                 auto_offset_reset="earliest", request_timeout_ms=30_000, max_poll_records=5_000)
        try:
            yield from self._read(consumer)
        finally:
            consumer.close(autocommit=False)

    def bounds(self, consumer: Any) -> dict[Any, tuple[int, int]]:
        """Per partition, the offsets [first, end) that hold the range."""
        from kafka.structs import TopicPartition

        partitions = []
        for topic in self.topics:
            ids = consumer.partitions_for_topic(topic)
            if not ids:
                raise MonitorError(f"topic {topic!r} does not exist on {self.servers}")
            partitions += [TopicPartition(topic, p) for p in sorted(ids)]
        first = consumer.beginning_offsets(partitions)
        last = consumer.end_offsets(partitions)
        if self.window.start is not None:
            found = consumer.offsets_for_times({tp: self.window.start for tp in partitions})
            first = {tp: last[tp] if found[tp] is None else found[tp].offset for tp in partitions}
        ends = dict(last)
        limits = {tp: self.window.limit(tp.topic) for tp in partitions}
        asked = {tp: limit for tp, limit in limits.items() if limit is not None}
        if asked:
            for tp, hit in consumer.offsets_for_times(asked).items():
                if hit is not None:
                    ends[tp] = hit.offset
        return {tp: (first[tp], ends[tp]) for tp in partitions if ends[tp] > first[tp]}

    def _read(self, consumer: Any) -> Iterator[Raw]:
        spans = self.bounds(consumer)
        self.total = sum(end - start for start, end in spans.values())
        if not spans:
            return
        consumer.assign(list(spans))
        for tp, (start, _) in spans.items():
            consumer.seek(tp, start)
        rank = {topic: i for i, topic in enumerate(self.topics)}
        buffers: dict[Any, deque[Any]] = {tp: deque() for tp in spans}
        clocks = {tp: _Lookahead() for tp in spans}
        open_ = set(spans)  # partitions with records still to fetch
        heads: list[tuple[int, int, int, int, Any]] = []  # (merge key, topic rank, partition, offset, tp)
        waiting = set(spans)  # partitions whose head is not on the heap yet

        def push(tp: Any) -> None:
            buffer = buffers[tp]
            if buffer and (len(buffer) >= LOOKAHEAD or tp not in open_):  # its key needs what follows it
                r = buffer[0]
                heapq.heappush(heads, (clocks[tp].key(buffer), rank[r.topic], r.partition, r.offset, tp))
                waiting.discard(tp)
            elif not buffer and tp not in open_:
                waiting.discard(tp)

        while waiting or heads:
            if waiting:  # every partition must show its next record before the smallest is known
                self._fetch(consumer, spans, buffers, open_)
                for tp in list(waiting):
                    push(tp)
                continue
            *_, tp = heapq.heappop(heads)
            record = buffers[tp].popleft()
            clocks[tp].pop()
            self.done += 1
            if self.window.holds(record.topic, record.timestamp):
                key = None if record.key is None else _text(record.key)
                yield Raw(record.topic, record.value if record.value is not None else b"", key, record.timestamp,
                          record.partition, record.offset)
            waiting.add(tp)
            push(tp)
            if tp in waiting and len(buffers[tp]) < LOOKAHEAD and tp in open_ and tp in consumer.paused():
                consumer.resume(tp)

    def _fetch(self, consumer: Any, spans: dict[Any, tuple[int, int]], buffers: dict[Any, deque[Any]],
               open_: set[Any]) -> None:
        """Poll until some record arrives or every partition has reached its end."""
        deadline = time.monotonic() + STALL_SECONDS
        while open_:
            got = False
            for tp, records in consumer.poll(timeout_ms=500).items():
                end = spans[tp][1]
                for r in records:
                    if r.offset < end:
                        buffers[tp].append(r)
                        got = True
            for tp in list(open_):
                if consumer.position(tp) >= spans[tp][1]:  # read to its end (gaps of compaction included)
                    open_.discard(tp)
                    consumer.pause(tp)
                elif len(buffers[tp]) >= BUFFERED:
                    consumer.pause(tp)
            if got:
                return
            if time.monotonic() > deadline:
                raise MonitorError(f"no records from {self.servers} for {STALL_SECONDS:.0f} s while reading the "
                                   "range; is the broker up?")


class _Lookahead:
    """The smallest timestamp among the first `LOOKAHEAD` records of a partition's buffer, as the buffer's
    head moves on: a monotonic queue of (timestamp, position), positions counted from the partition's start."""

    def __init__(self) -> None:
        self.queue: deque[tuple[int, int]] = deque()
        self.head = 0  # position of the buffer's first record
        self.seen = 0  # positions below this are in the queue's reckoning

    def key(self, buffer: deque[Any]) -> int:
        while self.seen < self.head + min(len(buffer), LOOKAHEAD):
            ts = buffer[self.seen - self.head].timestamp
            while self.queue and self.queue[-1][0] >= ts:
                self.queue.pop()
            self.queue.append((ts, self.seen))
            self.seen += 1
        return self.queue[0][0]

    def pop(self) -> None:
        """The buffer's head was taken."""
        if self.queue and self.queue[0][1] == self.head:
            self.queue.popleft()
        self.head += 1


def _text(key: bytes) -> str | bytes:
    """A key as text, or its exact bytes if it is not UTF-8 (`@key` then refuses it, as a worker does)."""
    try:
        return key.decode()
    except UnicodeDecodeError:
        return key

"""What the worker logs: each thing an operator should know once, in plain words, never a flood.

Faust warns `producer buffer full size N` on every incoming record while more than 100 messages
wait in its producer (faust/transport/producer.py, `ProducerBuffer.wait_until_ebb`, called by the
conductor per message). A checkpoint sends its table writes and parts at once, a few hundred on a
busy worker, so a healthy worker under load said it many times a second. The worker raises that
threshold to `PRODUCER_BUFFER` (backpressure still holds when Kafka really falls behind), and the
line, when it does come, says what happens in plain words at most once a minute. Likewise mode's
`Timer commit is overlapping`, which a busy machine repeats at each late offset commit.

While the broker is away, aiokafka retries its connection in a tight loop and logs each failure: about a
thousand lines a second from each worker, measured through a broker restart. Those lines pass once every
`UNREACHABLE_EVERY` seconds, with a count of the ones held back.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

# Messages waiting in Faust's producer before reading input pauses. A busy worker's checkpoints burst to
# several hundred (table writes and parts, mostly a few hundred bytes, the largest tens of KB), so this holds
# a few MB at most.
PRODUCER_BUFFER = 2_000
_BUFFER_FULL = re.compile(r"^producer buffer full size (\d+)")
_FLUSH_TOOK = re.compile(r"^producer flush took")
_OVERLAPPING = re.compile(r"^Timer (\S+) is overlapping \(interval=(\S+) runtime=(\S+)\)")
UNREACHABLE_EVERY = 10.0  # seconds between two lines of one kind while the broker cannot be reached
_UNREACHABLE = {  # aiokafka's logger: its messages repeated on each retry while a broker is away
    "aiokafka": ("^Unable connect to node with id", "^Unable to update metadata from"),
    "aiokafka.consumer.fetcher": ("^Failed fetch messages from",),
    "aiokafka.consumer.group_coordinator": ("^Group Coordinator Request failed", "^Marking the coordinator dead",
                                            "^Heartbeat session expired"),
}


class Sparse(logging.Filter):
    """Lets a repeated message through once per `seconds`, saying how often it came in between.

    >>> now = [0.0]
    >>> sparse = Sparse(re.compile("^busy"), seconds=60, clock=lambda: now[0])
    >>> def say(text: str) -> str | None:
    ...     record = logging.LogRecord("x", logging.WARNING, "", 0, text, (), None)
    ...     return record.getMessage() if sparse.filter(record) else None
    >>> say("busy"), say("busy"), say("other")
    ('busy', None, 'other')
    >>> now[0] = 61.0
    >>> say("busy")
    'busy (1 more time in the last 60 s)'
    """

    def __init__(self, pattern: re.Pattern[str], seconds: float = 60.0,
                 clock: Callable[[], float] = time.monotonic,
                 reword: Callable[[re.Match[str]], str] | None = None) -> None:
        super().__init__()
        self.pattern, self.seconds, self.clock, self.reword = pattern, seconds, clock, reword
        self.shown_at: float | None = None
        self.repeats = 0

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        match = self.pattern.search(message)
        if match is None:
            return True
        now = self.clock()
        if self.shown_at is not None and now - self.shown_at < self.seconds:
            self.repeats += 1
            return False
        text = self.reword(match) if self.reword else message
        if self.repeats:
            times = "time" if self.repeats == 1 else "times"
            text += f" ({self.repeats} more {times} in the last {self.seconds:.0f} s)"
        record.msg, record.args = text, ()
        self.shown_at, self.repeats = now, 0
        return True


def _buffer_full(match: re.Match[str]) -> str:
    return (f"{int(match.group(1)):,} messages wait in the Kafka producer: reading input pauses until they are"
            " sent (is the broker slow or unreachable?)")


def _overlapping(match: re.Match[str]) -> str:
    return (f"the {match.group(1)} timer took {float(match.group(3)):.1f} s, longer than its {match.group(2)} s"
            " interval: the worker is busier than this machine allows")


def quiet_faust() -> None:
    """Install the filters on Faust's and mode's loggers (idempotent)."""
    producer, timers = logging.getLogger("faust.transport.producer"), logging.getLogger("mode.timers")
    if any(isinstance(f, Sparse) for f in producer.filters):
        return
    producer.addFilter(Sparse(_BUFFER_FULL, reword=_buffer_full))
    producer.addFilter(Sparse(_FLUSH_TOOK))
    timers.addFilter(Sparse(_OVERLAPPING, reword=_overlapping))
    for name, patterns in _UNREACHABLE.items():
        for pattern in patterns:
            logging.getLogger(name).addFilter(Sparse(re.compile(pattern), seconds=UNREACHABLE_EVERY))

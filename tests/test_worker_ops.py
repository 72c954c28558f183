"""What an operator meets around a worker: its log under load, how fast partitions move after a crash,
and the web port's authentication and TLS."""

from __future__ import annotations

import logging
import re
from collections import Counter
from typing import Any

import pytest

from agents.logs import Sparse, quiet_faust

ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x08")  # the terminal codes Faust's console writes


def shapes(log: str) -> Counter[str]:
    """Log lines with their time, pid and numbers blanked, so repeats of one message count together."""
    found: Counter[str] = Counter()
    for line in ESCAPES.sub("", log).splitlines():
        text = re.sub(r"^\[[^]]*\] \[\d+\] ", "", line.strip())
        if text:
            found[re.sub(r"\d+", "N", text)] += 1
    return found


def test_sparse_lets_a_repeated_message_through_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    logger = logging.getLogger("test.sparse")
    logger.addFilter(Sparse(re.compile("^busy"), seconds=60, clock=lambda: now[0]))
    with caplog.at_level(logging.WARNING, logger="test.sparse"):
        for second in range(150):
            now[0] = float(second)
            logger.warning("busy %d", second)
            logger.warning("other")
    busy = [r.getMessage() for r in caplog.records if r.getMessage().startswith("busy")]
    assert busy == ["busy 0", "busy 60 (59 more times in the last 60 s)", "busy 120 (59 more times in the last 60 s)"]
    assert sum(r.getMessage() == "other" for r in caplog.records) == 150


def test_faust_producer_warning_in_plain_words(caplog: pytest.LogCaptureFixture) -> None:
    quiet_faust()
    quiet_faust()  # idempotent
    with caplog.at_level(logging.INFO, logger="faust.transport.producer"):
        for size in range(2001, 2101):
            logging.getLogger("faust.transport.producer").warning(f"producer buffer full size {size}")
            logging.getLogger("faust.transport.producer").info("producer flush took 0.01")
    assert [r.getMessage() for r in caplog.records] == [
        "2,001 messages wait in the Kafka producer: reading input pauses until they are sent (is the broker slow or"
        " unreachable?)", "producer flush took 0.01"]


@pytest.mark.kafka
def test_a_busy_worker_says_each_thing_once(bootstrap: str, deploy: Any) -> None:
    site = deploy({"KAFKA_BOOTSTRAP": bootstrap}, partitions=4)
    _, lines = site.stream("business_drop", 30_000)
    port = site.start()
    site.wait_for(port, lines, timeout=300)
    site.stop(port)
    log = site.log(port)
    said = shapes(log)
    assert not {text: n for text, n in said.items() if n > 1}, log[-3000:]
    assert f"worker {site.spec.name}: Kafka at {bootstrap} (PLAINTEXT), 4 input partitions" in log
    assert "producer buffer full" not in log

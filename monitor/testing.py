"""Helpers for testing code that uses the monitor: a stream builder and in-memory sinks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from monitor.apps.simulate import encode
from monitor.engine.alerts import Alert
from monitor.engine.intake import DeadLetter
from monitor.engine.monitor import Monitor


class Stream:
    """Builds Kafka-style records in arrival order.

    >>> s = Stream().predict("a", ts=100.0, score=0.9).outcome("a", ts=160.0, label=1)
    >>> [r["topic"] for r in s.records]
    ['predictions', 'outcomes']
    """

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def predict(self, decision_id: str, ts: float | str, score: float, model: str = "m",
                **optional: Any) -> Stream:
        value = {"decision_id": decision_id, "ts": ts, "model": model, "score": score, **optional}
        return self.raw("predictions", value, key=decision_id, ts=ts)

    def outcome(self, decision_id: str, ts: float | str, label: float, **optional: Any) -> Stream:
        value = {"decision_id": decision_id, "ts": ts, "label": label, **optional}
        return self.raw("outcomes", value, key=decision_id, ts=ts)

    def raw(self, topic: str, value: Any, key: str | None = None, ts: float | str | None = None) -> Stream:
        """Any value: a dict or list becomes JSON, a str is taken as raw (possibly broken) bytes."""
        stamp = int(ts * 1000) if isinstance(ts, (int, float)) else None
        self.records.append({"topic": topic, "key": key, "timestamp": stamp, "value": value})
        return self

    def feed(self, monitor: Monitor) -> Monitor:
        for record in self.records:
            monitor.process(record["topic"], encode(record["value"]))
        monitor.finish()
        return monitor

    def write(self, path: Path) -> Path:
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in self.records))
        return path


class Sink:
    """Collects alerts and dead letters in memory."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self.dead_letters: list[DeadLetter] = []

    def alert(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def dead_letter(self, letter: DeadLetter) -> None:
        self.dead_letters.append(letter)

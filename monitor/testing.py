"""Helpers for testing code that uses the monitor: a stream builder, in-memory sinks and a spec editor."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import tomli_w

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


def edit_spec(text: str, changes: Mapping[str, object]) -> str:
    """Rewrite spec TOML with `changes` keyed by dotted paths: missing tables are made, `None` deletes the key.

    A number in a path picks one table of an array such as `[[kpi]]`. Values are written as given, valid or
    not, so a test can also build a spec that is wrong on purpose. Comments and layout are not kept.

    >>> text = '[decision]\\nname = "checkout_offer"\\n[[kpi]]\\nname = "conversion"\\nfield = "label"\\n'
    >>> print(edit_spec(text, {"decision.name": "x", "kpi.0.field": None, "outcome.horizon": "10s"}))
    kpi = [
        { name = "conversion" },
    ]
    <BLANKLINE>
    [decision]
    name = "x"
    <BLANKLINE>
    [outcome]
    horizon = "10s"
    <BLANKLINE>
    """
    document = tomllib.loads(text)
    for path, value in changes.items():
        *parents, last = path.split(".")
        node: Any = document
        for part in parents:
            key = _key(node, part, path)
            node = node.setdefault(key, {}) if isinstance(node, dict) else node[key]
        key = _key(node, last, path)
        if value is not None:
            node[key] = value
        elif isinstance(node, dict) and key not in node:
            raise ValueError(f"cannot delete {path!r}: the spec has no such key")
        else:
            del node[key]
    return tomli_w.dumps(document)


def _key(node: object, part: str, path: str) -> int | str:
    """`part` as a key of `node`: a name in a table, an index in an array."""
    if isinstance(node, dict):
        return part
    if not isinstance(node, list):
        raise ValueError(f"cannot edit {path!r}: {part!r} would be under {node!r}, which is not a table")
    if not part.isdigit() or int(part) >= len(node):
        raise ValueError(f"cannot edit {path!r}: {part!r} is not an index of an array of {len(node)}")
    return int(part)

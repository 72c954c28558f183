"""Bad input never stops the monitor: each kind is counted, dead-lettered and explained."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.apps.replay import replay
from monitor.contract.spec import Spec
from monitor.engine.monitor import Monitor
from monitor.testing import Sink, Stream

GOOD = {"decision_id": "x", "ts": 10.0, "model": "m", "score": 0.5}

CASES = [
    ("predictions", "{not json", "not valid JSON"),
    ("predictions", '"just a string"', "Expected `object`, got `str`"),
    ("predictions", "[1, 2]", "Expected `object`, got `array`"),
    ("predictions", {**GOOD, "score": None}, "Expected `float`, got `null` - at field `score`"),
    ("predictions", {k: v for k, v in GOOD.items() if k != "score"}, "missing required field `score`"),
    ("predictions", {**GOOD, "score": "0.7"}, "Expected `float`, got `str` - at field `score`"),
    ("predictions", {**GOOD, "score": 1.7}, "score 1.7 is outside [0, 1]"),
    ("predictions", {**GOOD, "ts": "not-a-time"}, "neither an epoch number nor an RFC3339 time"),
    ("predictions", {**GOOD, "ts": "2026-01-01T00:00:00"}, "has no UTC offset"),
    ("predictions", {**GOOD, "ts": -5}, "not a valid epoch time"),
    ("predictions", {**GOOD, "decision_id": 7}, "Expected `str`, got `int` - at field `decision_id`"),
    ("predictions", {**GOOD, "segment": {"country": 3}}, "at field `segment[...]`"),
    ("predictions", {**GOOD, "prediction": 2}, "prediction 2 is not 0, 1 or a bool"),
    ("predictions", '{"decision_id": "x", "ts": 1, "model": "m", "score": 1e999}',
     "Number out of range - at field `score`"),
    ("outcomes", {"decision_id": "x", "ts": 11.0, "label": "yes"}, "at field `label`"),
    ("outcomes", {"decision_id": "x", "ts": 11.0, "label": 3}, "label 3 is not 0, 1 or a bool"),
    ("outcomes", {"decision_id": "x", "ts": 11.0, "label": 1, "kpis": {"items": "two"}},
     "Expected `float`, got `str` - at field `kpis[...]`"),
    ("outcomes", '{"decision_id": "x", "ts": 11.0, "label": 1, "value": 1e999}', "Number out of range"),
    ("clicks", {"anything": 1}, "topic 'clicks' is neither predictions nor outcomes"),
]


@pytest.mark.parametrize("topic, value, reason", CASES)
def test_each_bad_record_is_counted_dead_lettered_and_explained(spec: Spec, topic: str, value: object,
                                                                reason: str) -> None:
    sink = Sink()
    monitor = Monitor(spec, on_dead_letter=sink.dead_letter)
    stream = Stream().raw(topic, value).predict("ok", 20.0, 0.9).outcome("ok", 21.0, 1)
    stream.feed(monitor)
    counts = monitor.joiner.counts()
    assert counts.invalid == 1
    assert counts.matched == 1  # processing went on
    [letter] = sink.dead_letters
    assert reason in letter.reason
    assert letter.topic == topic
    assert letter.value == (value.encode() if isinstance(value, str) else letter.value)


def test_replay_counts_broken_lines_and_keeps_going(spec: Spec, tmp_path: Path) -> None:
    path = Stream().predict("a", 0.0, 0.9).outcome("a", 5.0, 1).write(tmp_path / "in.jsonl")
    with path.open("ab") as f:
        f.write(b"this is not json\n{\"value\": {}}\n\n[1,2]\n")
        f.write(b'{"topic": "predictions", "key": "b", "value": {"decision_id": "b", "ts": 6, "model": "m",'
                b' "score": 0.1}}\n')
    monitor = replay(spec, path)
    counts = monitor.joiner.counts()
    assert counts.invalid == 3 and counts.predictions == 2 and counts.matched == 1
    report = monitor.report()
    assert sum(report.invalid_reasons.values()) == 3
    assert any("replay line" in reason for reason in report.invalid_reasons)

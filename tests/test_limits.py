"""The memory limits of spec [limits]: caps on pending decisions and held outcomes, and the record size."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.apps.replay import run
from monitor.contract.spec import Limits, Spec
from monitor.debug.records import FileRecords
from monitor.engine.intake import DeadLetter
from monitor.engine.monitor import Monitor
from monitor.testing import Stream, encode, same

H = 6 * 3600.0


def limited(spec: Spec, **caps: int) -> Spec:
    return dataclasses.replace(spec, limits=dataclasses.replace(Limits(), **caps))


def take(monitor: Monitor, stream: Stream) -> Monitor:
    """Every record of the stream, without the end of input (held outcomes stay held)."""
    for record in stream.records:
        monitor.process(record["topic"], encode(record["value"]))
    return monitor


def test_past_max_pending_the_oldest_decision_expires_early(spec: Spec) -> None:
    s = Stream()
    for i in range(5):
        s.predict(f"d{i}", 10.0 * i, 0.9)
    s.outcome("d0", 100.0, 1, value=5.0)  # d0 was finalized early: its outcome is late
    s.outcome("d4", 100.0, 1, value=7.0)
    m = s.feed(Monitor(limited(spec, max_pending=3)))
    c = m.joiner.counts()
    assert (c.evicted_pending, c.expired, c.late, c.matched, c.pending) == (2, 2, 1, 1, 2)
    assert set(m.joiner.pending) == {"d2", "d3"}
    assert m.totals()[0]["decisions"] == 3  # two expired with `missing`, one matched


def test_the_oldest_is_evicted_even_when_it_arrived_out_of_order(spec: Spec) -> None:
    s = Stream().predict("new", 500.0, 0.5).predict("newer", 600.0, 0.5).predict("old", 100.0, 0.5)
    m = s.feed(Monitor(limited(spec, max_pending=2)))
    assert set(m.joiner.pending) == {"new", "newer"}
    assert m.joiner.counts().evicted_pending == 1


def test_past_max_held_the_oldest_outcome_is_an_orphan(spec: Spec) -> None:
    s = Stream()
    for i in range(6):
        s.outcome(f"ghost{i}", 10.0 * i, 1, value=1.0)
    s.predict("ghost5", 20.0, 0.9)  # its held outcome survived the cap: matched
    s.predict("ghost0", 20.0, 0.9)  # its outcome was dropped: pending
    m = take(Monitor(limited(spec, max_held=2)), s)
    c = m.joiner.counts()
    assert (c.evicted_held, c.orphans, c.matched, c.pending) == (4, 4, 1, 1)
    assert set(m.joiner.held) == {"ghost4"}


def test_a_flood_of_unknown_outcomes_keeps_memory_bounded_and_good_decisions_exact(spec: Spec) -> None:
    caps = limited(spec, max_held=50)
    flood, clean = Stream(), Stream()
    for i in range(200):
        for s in (flood, clean):
            s.predict(f"d{i}", float(i), 0.8 if i % 3 else 0.2, variant="control")
            s.outcome(f"d{i}", i + 30.0, i % 3 != 0, value=float(i % 7))
        for j in range(20):
            flood.outcome(f"unknown-{i}-{j}", i + 1.0, 1, value=99.0)
    flooded = take(Monitor(caps), flood)
    held = flooded.joiner.held
    assert len(held) == 50 and len(flooded.joiner._held_order) <= 2 * 50 + 1024
    assert flooded.joiner.counts().evicted_held == 4000 - 50
    flooded.finish()
    assert same(flooded.totals(), clean.feed(Monitor(caps)).totals())


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("po"), st.integers(0, 30), st.floats(0, H / 4)), max_size=80),
       st.integers(1, 6), st.integers(1, 6))
def test_caps_hold_and_every_record_is_accounted_for(spec: Spec, events: list[tuple[str, int, float]],
                                                     max_pending: int, max_held: int) -> None:
    s = Stream()
    for kind, i, ts in events:
        (s.predict(f"d{i}", ts, 0.5) if kind == "p" else s.outcome(f"d{i}", ts, 1, value=1.0))
    m = Monitor(limited(spec, max_pending=max_pending, max_held=max_held))
    for record in s.records:
        m.process(record["topic"], encode(record["value"]))
        assert len(m.joiner.pending) <= max_pending and len(m.joiner.held) <= max_held
    c = m.joiner.counts()
    assert c.predictions == c.matched + c.expired + c.pending
    assert c.outcomes == c.matched + c.late + c.orphans + len(m.joiner.held)
    assert c.evicted_pending <= c.expired and c.evicted_held <= c.orphans


def test_a_record_over_max_record_bytes_is_dead_lettered_with_its_head(spec: Spec) -> None:
    big = {"decision_id": "big", "ts": 1.0, "model": "m", "score": 0.5, "features": {"blob": "x" * 5000}}
    s = Stream().raw("predictions", big, key="big", ts=1.0).predict("ok", 2.0, 0.9)
    letters: list[DeadLetter] = []
    m = s.feed(Monitor(limited(spec, max_record_bytes=1000), on_dead_letter=letters.append))
    c = m.joiner.counts()
    assert (c.invalid, c.predictions) == (1, 1)
    assert list(m.source.reasons) == [
        "record of … bytes is over limits.max_record_bytes (…); the dead letter keeps its first bytes"]
    assert letters[0].value == encode(big)[:1000] and "5" in letters[0].reason


def test_a_replay_line_over_max_record_bytes_is_dead_lettered_too(spec: Spec, tmp_path: Path) -> None:
    # A replay file's value reaches the engine undecoded (a msgspec.Raw, which cannot be sliced).
    big = {"decision_id": "big", "ts": 1.0, "model": "m", "score": 0.5, "features": {"blob": "x" * 5000}}
    path = Stream().raw("predictions", big, key="big", ts=1.0).predict("ok", 2.0, 0.9).write(tmp_path / "big.jsonl")
    m, _ = run(limited(spec, max_record_bytes=1000), FileRecords(path), "--input big.jsonl")
    assert (m.joiner.counts().invalid, m.joiner.counts().predictions) == (1, 1)
    assert list(m.source.reasons) == [
        "record of … bytes is over limits.max_record_bytes (…); the dead letter keeps its first bytes"]


def test_a_wrong_limit_fails_at_start_naming_the_key(spec_text: str) -> None:
    import pytest

    from monitor.contract.errors import SpecError
    from monitor.contract.spec import parse
    from monitor.testing import edit_spec

    with pytest.raises(SpecError, match=r"limits\.max_held"):
        parse(edit_spec(spec_text, {"limits.max_held": 0}))
    with pytest.raises(SpecError, match=r"limits\.max_pendin"):
        parse(edit_spec(spec_text, {"limits.max_pendin": 5}))
    assert parse(edit_spec(spec_text, {"limits.max_record_bytes": 4096})).limits.max_record_bytes == 4096


def test_past_max_finals_the_older_final_ids_are_forgotten_early(spec: Spec) -> None:
    s = Stream()
    for i in range(6):
        s.predict(f"d{i}", float(i), 0.9).outcome(f"d{i}", i + 0.5, 1, value=1.0)
    s.outcome("d0", 7.0, 1, value=1.0)  # d0's id was forgotten: an orphan now, not a duplicate
    s.outcome("d5", 7.0, 1, value=1.0)  # d5's is remembered: a duplicate
    m = take(Monitor(limited(spec, max_finals=4)), s)
    c = m.joiner.counts()
    assert len(m.joiner.finals()) <= 4 + 1  # a generation may reach the cap before the older one goes
    assert (c.matched, c.duplicates, c.evicted_finals) == (6, 1, 5)
    assert set(m.joiner.held) == {"d0"}

"""Persisted state across releases: a worker restores what the releases before wrote and ends exact.

`tests/fixtures/state-format-<n>.msgpack` holds a worker's stores as the release of format n wrote them (1: the
release before formats; 2: the release before the early state was stored), cut by a crash mid-stream
(`tests/fixtures/make_state.py` says how, and remakes them from any checkout). The current worker restores them,
takes back the deltas the metrics stage had not acked, ends the stream, and must give the numbers of a worker that
never stopped; what it writes from then on is in the current format.
"""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec
import pytest

from monitor.contract.spec import load
from monitor.stream import wire
from monitor.testing import InMemoryWorker, Memory
from tests.fixtures.make_state import CUT, PARTITIONS, stream
from tests.test_stream import assert_same_totals

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("written", [1, 2])
def test_state_written_by_an_earlier_release_restores_and_ends_exact(bundled_spec_path: Path, written: int) -> None:
    spec = load(bundled_spec_path)  # the spec the fixtures were written with
    saved = msgspec.msgpack.decode((FIXTURES / f"state-format-{written}.msgpack").read_bytes())
    records = stream()
    whole = InMemoryWorker(spec, (Memory(), Memory()), sources=PARTITIONS)
    whole.finish(whole.feed(records))

    stores = (Memory(saved["join"]), Memory(saved["metrics"]))
    assert all(b"/head" not in key or wire.head(value).format == written for key, value in stores[0].items())
    assert not any(key.startswith(b"e") for key in stores[1])  # early state: not stored before format 3
    worker = InMemoryWorker(spec, stores, sources=PARTITIONS, snapshot_min_bytes=20_000)
    worker.redeliver([(q, raw) for q, raw in saved["deltas"]])
    worker.finish(worker.feed(records[CUT - 500:], saved["clock"]))
    assert worker.worker.join.counts() == whole.worker.join.counts()
    assert_same_totals(worker.totals(), whole.totals())
    heads = [wire.head(value) for key, value in stores[0].items() if key.endswith(b"/head")]
    assert heads and all(h.format == wire.FORMAT for h in heads)  # the new owner's snapshots: this format
    bases = [wire.base_entry(value) for key, value in stores[1].items() if b"|b" in key and key[:1].isdigit()]
    assert bases and all(b.format == wire.FORMAT for b in bases)
    readers = [wire.reader_entry(value) for key, value in stores[1].items() if key.startswith(b"e") and b"|r" in key]
    assert readers and all(r.format == wire.FORMAT for r in readers)


def test_an_entry_of_a_later_format_is_read_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """A worker rolled back one release reads what the later one wrote, appended fields left aside."""

    class Later(msgspec.Struct, array_like=True):  # a Head as a later release might write it
        generation: int
        seq: int
        chunks: int
        format: int
        something_new: list[int]

    raw = msgspec.msgpack.encode(Later(3, 17, 1, wire.FORMAT + 1, [1, 2]))
    head = wire.head(raw)
    assert (head.generation, head.seq, head.chunks, head.format) == (3, 17, 1, wire.FORMAT + 1)
    with caplog.at_level(logging.WARNING):
        wire.stored_format(head.format, "a head")
    assert "later release" in caplog.text

"""Replay a captured file of Kafka records through the engine, exactly as a worker would."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from monitor.contract.errors import RecordError
from monitor.contract.events import decode_record
from monitor.contract.spec import Spec
from monitor.engine.monitor import Monitor
from monitor.export.joined import JoinedTable


def replay(spec: Spec, path: Path, since_ms: int | None = None, until_ms: int | None = None,
           progress: bool = False, joined: JoinedTable | None = None) -> Monitor:
    """Run every record of a JSONL replay file (optionally a time range) through a fresh Monitor.

    With `joined`, the table also collects one row per finalized decision."""
    monitor = Monitor(spec, replay_input=str(path), journal=joined, on_final=None if joined is None else joined.final)
    with path.open("rb") as stream:
        for line in _lines(stream, path, progress):
            if not line.strip():
                continue
            try:
                record = decode_record(line)
            except RecordError as exc:
                monitor.reject("<replay>", exc.reason, line)
                continue
            if record.timestamp is not None and (
                (since_ms is not None and record.timestamp < since_ms)
                or (until_ms is not None and record.timestamp >= until_ms)
            ):
                continue
            if joined is not None:
                joined.see(record.topic, record.value)
            monitor.process(record.topic, record.value, record.partition, record.offset)
    monitor.finish()
    return monitor


def _lines(stream: BinaryIO, path: Path, progress: bool) -> Iterator[bytes]:
    if not progress:
        yield from stream
        return
    from rich.progress import BarColumn, Progress, TextColumn, TransferSpeedColumn

    columns = (TextColumn("replay"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TransferSpeedColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("replay", total=path.stat().st_size)
        for i, line in enumerate(stream):
            if i % 4096 == 0:
                bar.update(task, completed=stream.tell())
            yield line


"""Replay records through the engine, exactly as a worker would: from a file or a range of Kafka topics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from monitor.contract.spec import Spec
from monitor.debug.explain import Collector
from monitor.debug.records import Bad, FileRecords, Incoming, RecordSource, TimeRange
from monitor.engine.monitor import Monitor


def replay(spec: Spec, path: Path, since_ms: int | None = None, until_ms: int | None = None,
           progress: bool = False) -> Monitor:
    """Run every record of a JSONL replay file (optionally a time range) through a fresh Monitor."""
    source = FileRecords(path, TimeRange.of(spec, since_ms, until_ms))
    return run(spec, source, f"--input {path}", progress)[0]


def run(spec: Spec, source: RecordSource, replay_source: str, progress: bool = False,
        explain: bool = False) -> tuple[Monitor, Collector | None]:
    """Run a source's records through a fresh Monitor; with `explain`, keep what explanations need.

    `replay_source` is how an alert's replay command names the input (`--input FILE`, `--bootstrap HOST:PORT`)."""
    monitor = Monitor(spec, replay_source=replay_source)
    collector = Collector(monitor) if explain else None
    observe = None if collector is None else collector.observe
    process = monitor.process
    for record in tracked(source, progress):
        if isinstance(record, Bad):
            monitor.reject("<replay>", record.reason, record.line)
            continue
        if observe is not None:
            observe(record.topic, record.value)
        process(record.topic, record.value, record.partition, record.offset)
    monitor.finish()
    return monitor, collector


def tracked(source: RecordSource, progress: bool, label: str = "replay") -> Iterator[Incoming | Bad]:
    """The source's records, with a progress bar (records or bytes read of the total) if asked."""
    if not progress:
        yield from source
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TransferSpeedColumn

    rate = TransferSpeedColumn() if source.unit == "bytes" else MofNCompleteColumn()
    columns = (TextColumn(label), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), rate)
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(label, total=None)
        for i, record in enumerate(source):
            if i % 4096 == 0:
                bar.update(task, total=source.total or None, completed=source.done)
            yield record

"""Replay records through the engine, exactly as a worker would: from a file or a range of Kafka topics."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from monitor.apps.gcpause import paused_gc
from monitor.contract.events import Incoming
from monitor.contract.spec import Spec
from monitor.debug.explain import Collector
from monitor.debug.records import Bad, FileRecords, RecordSource, TimeRange
from monitor.engine.monitor import Feed, Monitor
from monitor.engine.source import Source
from monitor.export.joined import JoinedTable


def replay(spec: Spec, path: Path, since_ms: int | None = None, until_ms: int | None = None,
           progress: bool = False, joined: JoinedTable | None = None) -> Monitor:
    """Run every record of a JSONL replay file (optionally a time range) through a fresh Monitor.

    With `joined`, the table also collects one row per finalized decision."""
    source = FileRecords(path, TimeRange.of(spec, since_ms, until_ms))
    return run(spec, source, f"--input {path}", progress, joined=joined)[0]


def run(spec: Spec, source: RecordSource, replay_source: str, progress: bool = False,
        explain: bool = False, joined: JoinedTable | None = None) -> tuple[Monitor, Collector | None]:
    """Run a source's records through a fresh Monitor; with `explain`, keep what explanations need,
    and with `joined`, one row per finalized decision.

    `replay_source` is how an alert's replay command names the input (`--input FILE`, `--bootstrap HOST:PORT`)."""
    monitor = Monitor(spec, replay_source=replay_source, journal=joined,
                      on_final=None if joined is None else joined.final)
    collector = Collector(monitor) if explain else None
    observers = [o for o in (None if collector is None else collector.observe,
                             None if joined is None else joined.see) if o is not None]
    _feed(monitor, source, progress, observers)
    return monitor, collector


def run_split(spec: Spec, source: RecordSource, replay_source: str, progress: bool = False,
              joined: JoinedTable | None = None) -> Feed:
    """`run` on two cores, with the rollup in a second process (`monitor.apps.split`): the same report.

    Without explanations: they need the whole monitor in one process."""
    from monitor.apps.split import RollupProcess

    rollup = RollupProcess(spec, replay_source)
    try:
        feed = Feed(spec, Source(spec, joined, on_final=None if joined is None else joined.final), rollup)
        _feed(feed, source, progress, [] if joined is None else [joined.see])
        rollup.sections()  # the child's results, before it goes
    finally:
        rollup.close()
    return feed


def _feed(feed: Feed, source: RecordSource, progress: bool,
          observers: Sequence[Callable[[Incoming], None]]) -> None:
    process = feed.process
    with paused_gc():
        for record in tracked(source, progress):
            if isinstance(record, Bad):
                feed.reject("<replay>", record.reason, record.line)
                continue
            for observe in observers:
                observe(record)
            process(record.topic, record.value, record.partition, record.offset, record.timestamp, record.key)
        feed.finish()


def tracked(source: RecordSource, progress: bool, label: str = "replay") -> Iterable[Incoming | Bad]:
    """The source's records, with a progress bar (records or bytes read of the total) if asked."""
    return _with_bar(source, label) if progress else source  # no generator in between without a bar


def _with_bar(source: RecordSource, label: str) -> Iterator[Incoming | Bad]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TransferSpeedColumn

    rate = TransferSpeedColumn() if source.unit == "bytes" else MofNCompleteColumn()
    columns = (TextColumn(label), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), rate)
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(label, total=None)
        for i, record in enumerate(source):
            if i % 4096 == 0:
                bar.update(task, total=source.total or None, completed=source.done)
            yield record

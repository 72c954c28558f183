"""Replay and capture from a file or a Kafka range: opening the source, and the report with explanations."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from monitor.contract.errors import MonitorError
from monitor.contract.report import Report
from monitor.contract.spec import Spec
from monitor.debug.explain import Collector
from monitor.debug.kafka_range import KafkaRange
from monitor.debug.records import FileRecords, Narrowed, RawFiles, RecordSource, TimeRange, parse_segments
from monitor.engine.monitor import Feed
from monitor.infra.connection import Connection, connect_checked

Period = tuple[float, float]


class Opened(NamedTuple):
    source: RecordSource
    named: str  # the input as a replay command gives it
    spec: Spec  # the spec, reading Avro container files as the decoded records they hold


def open_source(spec: Spec, input: Path | None, bootstrap: str | None, since_ms: int | None,
                until_ms: int | None, segments: list[str],
                connect: Callable[[str], Connection] = connect_checked,
                raw: tuple[Path | None, Path | None] = (None, None)) -> Opened:
    """The records to replay, how an alert's replay command names them, and the spec to read them with;
    `connect` makes the Kafka
    connection (with its security) once the options are known to be right. `raw` holds the files of
    bare predictions and outcomes (`--predictions`, `--outcomes`)."""
    given = (input is not None) + (bootstrap is not None) + (raw != (None, None))
    if given != 1:
        raise MonitorError("give one input: --input FILE, --predictions P --outcomes O, or --bootstrap HOST:PORT "
                           "with --from and --to")
    window = TimeRange.of(spec, since_ms, until_ms)
    source: RecordSource
    if raw != (None, None):
        predictions, outcomes = raw
        if predictions is None or outcomes is None:
            raise MonitorError("--predictions and --outcomes go together: give both files")
        for path, flag in ((predictions, "--predictions"), (outcomes, "--outcomes")):
            if not path.is_file():
                raise MonitorError(f"{flag} {path} is not a readable file")
        if since_ms is not None or until_ms is not None:
            raise MonitorError("--from/--to select by Kafka record timestamp, which bare values do not have")
        source = RawFiles(spec, predictions, outcomes)
        spec = source.spec
        named = f"--predictions {predictions} --outcomes {outcomes}"
    elif bootstrap is not None:
        if since_ms is None or until_ms is None:
            raise MonitorError("--bootstrap reads a time range: give --from and --to")
        kafka = connect(bootstrap)
        source, named = KafkaRange(spec, kafka.kafka_python(), window), f"--bootstrap {kafka.bootstrap}"
    else:
        assert input is not None
        if not input.is_file():
            raise MonitorError(f"--input {input} is not a readable file")
        source, named = FileRecords(input, window), f"--input {input}"
    wanted = parse_segments(segments)
    if wanted:
        source = Narrowed(source, spec, wanted)
        named += "".join(f" --segment {field}={value}" for field, value in wanted.items())
    return Opened(source, named, spec)


def report(monitor: Feed, collector: Collector | None, periods: tuple[Period, Period] | None) -> Report:
    """The replay report; with a collector, each alert's explanations and the asked-for comparison."""
    found = monitor.report()
    if collector is None:
        return found
    for alert, explanations in zip(found.alerts, collector.for_alerts(), strict=True):
        alert.explanations = explanations
    if periods is not None:
        try:
            found.what_changed = collector.between(*periods)
        except ValueError as exc:
            raise MonitorError(f"--reference/--current: {exc}") from None
    return found

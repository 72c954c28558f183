"""`monitor inspect`: print a first `[predictions]`/`[outcomes]` mapping guessed from a sample of your topics.

The guessing and the fragment are `monitor.apps.inspect`'s; this module reads the sample, wherever it is: two
files (JSON lines of bare values, Avro container files, or replay files as `--input` takes them, each detected
by its first bytes), one replay file, or the newest records of two Kafka topics, read for a bounded time.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO, Optional

import msgspec
import typer

from monitor.cli.common import app, connect, fail
from monitor.contract.errors import MonitorError, RecordError

if TYPE_CHECKING:
    from monitor.apps.inspect import Sample
    from monitor.contract.avro import WireFormat

TABLES = ("predictions", "outcomes")


@app.command()
def inspect(
    predictions: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--predictions", help="The predictions' file: JSON lines of bare values, an Avro container file, or a "
        "replay file (one Kafka record per JSON line).")] = None,
    outcomes: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--outcomes", help="The outcomes' file, with --predictions.")] = None,
    input: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--input", help="One replay file holding both topics.")] = None,
    bootstrap: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="Read the newest records of the topics from this Kafka broker (HOST:PORT) instead of files.")] = None,
    predictions_topic: Annotated[str, typer.Option(help="The predictions' topic (in Kafka or a replay file).")]
    = "predictions",
    outcomes_topic: Annotated[str, typer.Option(help="The outcomes' topic (in Kafka or a replay file).")] = "outcomes",
    sample: Annotated[int, typer.Option(min=1, help="Values read per topic: the first N of a file, the last N of "
                                        "a Kafka topic.")] = 500,
    registry: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="Schema registry URL (http:// or https://), to read Avro values in its wire format.")] = None,
    timeout: Annotated[float, typer.Option(min=0.5, help="Kafka: seconds to read each topic, at most.")] = 10.0,
) -> None:
    """Guess the mapping of your topics (a spec's predictions and outcomes tables) from a sample, and print it.

    The fragment goes to stdout, ready to add to a spec; what was read, and what could not be, to stderr."""
    from monitor.apps.inspect import guess, to_toml

    if (predictions is None) != (outcomes is None):
        raise typer.BadParameter("--predictions and --outcomes go together", param_hint="--predictions")
    if sum(x is not None for x in (predictions, input, bootstrap)) != 1:
        raise typer.BadParameter("give one input: --predictions and --outcomes, --input, or --bootstrap",
                                 param_hint="--predictions/--input/--bootstrap")
    if registry is not None and not registry.startswith(("http://", "https://")):
        raise typer.BadParameter(f"{registry!r} is not an http:// or https:// address", param_hint="--registry")
    topics = (predictions_topic, outcomes_topic)
    try:
        wire = _wire(registry)
        if bootstrap is not None:
            client = connect(bootstrap).kafka_python()
            samples = [read_values(table, f"Kafka topic {topic!r}", kafka_values(client, topic, sample, timeout), wire)
                       for table, topic in zip(TABLES, topics, strict=True)]
        else:
            files = (predictions, outcomes) if predictions is not None else (input, input)
            samples = [read_file(path, table, topic, sample, wire)
                       for path, table, topic in zip(files, TABLES, topics, strict=True) if path is not None]
    except MonitorError as exc:
        fail(exc)
    found = guess(*samples)
    typer.echo(to_toml(*found, registry), nl=False)
    for each in samples:
        undecodable = each.read - len(each.records)
        typer.echo(f"inspect: {each.topic}: {each.read:,} values read ({each.source}"
                   + (f", {each.avro:,} in the registry's wire format" if each.avro else "") + f"), {undecodable:,} "
                   f"undecodable" + "".join(f" (most often: {why})" for why, _ in each.bad.most_common(1)), err=True)


def _wire(registry: str | None) -> WireFormat | None:
    if registry is None:
        return None
    from monitor.contract.avro import WireFormat, parse_schema
    from monitor.contract.registry import RegistrySettings, Schemas

    return WireFormat(Schemas(RegistrySettings(registry.rstrip("/")), parse=parse_schema))


def read_values(table: str, source: str, items: Iterable[bytes | str], wire: WireFormat | None = None) -> Sample:
    """One topic's values, each decoded to a JSON object or counted with the reason it is not one (a `str`
    item is the reason of a value that could not even be read)."""
    from monitor.apps.inspect import Sample
    from monitor.contract.avro import schema_id

    found = Sample(table, source)
    for raw in items:
        found.read += 1
        try:
            if isinstance(raw, str):
                raise RecordError(raw)
            if (schema := schema_id(raw)) is not None:
                found.schema_ids.add(schema)
                found.avro += 1
                if wire is None:
                    raise RecordError("Avro in the schema registry's wire format: run again with --registry URL")
                raw = wire.json(raw)
            record = msgspec.json.decode(raw)
            if not isinstance(record, dict):
                raise RecordError(f"a JSON {type(record).__name__}, not an object")
            found.records.append(record)
        except RecordError as exc:
            found.bad[exc.reason] += 1
        except msgspec.DecodeError:
            found.bad["neither JSON nor Avro"] += 1
    return found


def read_file(path: Path, table: str, topic: str, count: int, wire: WireFormat | None = None) -> Sample:
    """The first `count` values of a file: an Avro container file, a replay file's records of `topic`, or bare
    values, one per line (told apart by the first bytes and the first line)."""
    from monitor.contract.avro import is_container
    from monitor.contract.decode import decode_record

    try:
        with path.open("rb") as stream:
            if is_container(stream.read(4)):
                stream.seek(0)
                return read_values(table, "Avro container file", itertools.islice(_container(stream), count))
            stream.seek(0)
            lines = (line.rstrip(b"\r\n") for line in stream if line.strip())
            first = next(lines, b"")
            try:
                decode_record(first)
            except RecordError:
                values = itertools.chain([first] if first else [], lines)
                return read_values(table, "JSON lines", itertools.islice(values, count), wire)
            records = _records(itertools.chain([first], lines), topic)
            return read_values(table, f"replay file, topic {topic!r}", itertools.islice(records, count), wire)
    except OSError as exc:
        raise MonitorError(f"{path}: not a readable file ({exc.strerror})") from None


def _container(stream: BinaryIO) -> Iterator[bytes | str]:
    from monitor.contract.avro import container_values

    try:
        yield from container_values(stream)
    except Exception as exc:  # fastavro's own, for a damaged file: the rest cannot be read
        yield f"Avro container unreadable from here on ({str(exc) or type(exc).__name__})"


def _records(lines: Iterable[bytes], topic: str) -> Iterator[bytes | str]:
    from monitor.contract.decode import decode_record

    for line in lines:
        try:
            record = decode_record(line)
            if record.topic == topic:
                yield bytes(memoryview(record.payload()))
        except RecordError as exc:
            yield exc.reason


def kafka_values(client: Mapping[str, Any], topic: str, count: int, timeout: float) -> list[bytes]:
    """The last `count` values of a topic by record timestamp, read without a consumer group for about
    `timeout` seconds at most. `client`: kafka-python's keywords (`Connection.kafka_python()`)."""
    from kafka.consumer.group import KafkaConsumer
    from kafka.structs import TopicPartition

    consumer = KafkaConsumer(**client, group_id=None, enable_auto_commit=False, request_timeout_ms=15_000)
    try:
        ids = consumer.partitions_for_topic(topic)
        if not ids:
            raise MonitorError(f"topic {topic!r} does not exist on {client['bootstrap_servers']}")
        parts = [TopicPartition(topic, p) for p in sorted(ids)]
        first, last = consumer.beginning_offsets(parts), consumer.end_offsets(parts)
        ends = {tp: last[tp] for tp in parts if last[tp] > first[tp]}
        consumer.assign(list(ends))
        for tp, end in ends.items():
            consumer.seek(tp, max(first[tp], end - count))
        got: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + timeout
        while ends and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                got += [(r.timestamp, r.value or b"") for r in records if r.offset < ends.get(tp, 0)]
            ends = {tp: end for tp, end in ends.items() if consumer.position(tp) < end}
    finally:
        consumer.close(autocommit=False)
    return [value for _, value in sorted(got, key=lambda pair: pair[0])[-count:]]

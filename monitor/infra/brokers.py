"""Kafka chores with kafka-python: topics, co-partitioning checks and publishing replay files."""

from __future__ import annotations

import time
from pathlib import Path

from monitor.contract.decode import decode_record
from monitor.contract.errors import MonitorError, RecordError
from monitor.contract.spec import Spec
from monitor.infra.connection import Connection


def partitions(kafka: Connection, topics: list[str]) -> dict[str, int]:
    """Partition counts of existing topics (absent topics are left out)."""
    from kafka.consumer.group import KafkaConsumer

    consumer = KafkaConsumer(**kafka.kafka_python(request_timeout_ms=15_000))
    try:
        found = {}
        for topic in topics:
            ids = consumer.partitions_for_topic(topic)
            if ids:
                found[topic] = len(ids)
        return found
    finally:
        consumer.close()


def check_copartitioned(spec: Spec, kafka: Connection) -> int:
    """The input topics' partition count; fails unless both exist with the same count."""
    names = [spec.topics.predictions, spec.topics.outcomes]
    found = partitions(kafka, names)
    missing = [t for t in names if t not in found]
    if missing:
        raise MonitorError(f"topic {missing[0]!r} does not exist on {kafka.bootstrap}; create the topics with"
                           f" `monitor topics create --spec {spec.source}`")
    if found[names[0]] != found[names[1]]:
        raise MonitorError(
            f"topics {names[0]!r} ({found[names[0]]} partitions) and {names[1]!r} ({found[names[1]]}"
            " partitions) are not co-partitioned: the join needs the same partition count on both,"
            " with records keyed by decision_id")
    return found[names[0]]


def create_topics(spec: Spec, kafka: Connection, count: int, replication: int = 1,
                  retention_ms: int | None = None) -> list[str]:
    """Create the input topics with `count` partitions each, and the output topics; returns those created.

    `retention_ms=-1` keeps records forever: needed to replay captures whose timestamps are older
    than the broker's retention, which would otherwise delete them right after they arrive."""
    configs = {} if retention_ms is None else {"retention.ms": str(retention_ms)}
    wanted = {spec.topics.predictions: count, spec.topics.outcomes: count,
              spec.topics.alerts: 1, spec.topics.dead_letters: 1}
    existing = partitions(kafka, list(wanted))
    for name in (spec.topics.predictions, spec.topics.outcomes):
        if name in existing and existing[name] != count:
            raise MonitorError(f"topic {name!r} exists with {existing[name]} partitions, not {count}")
    return _create_missing(kafka, {name: (n, configs) for name, n in wanted.items()}, existing, replication)


def group_id(spec: Spec) -> str:
    """The worker's consumer group and Faust app id; its internal topics are named after it."""
    return f"monitor-{spec.name}"


def internal_topics(spec: Spec) -> dict[str, dict[str, str]]:
    """The worker's own topics, each with its config: the metrics stage's input, the ticks that
    reach idle partitions, and the two tables' changelogs (compacted, as Faust makes them)."""
    app = group_id(spec)
    compacted = {"cleanup.policy": "compact"}
    return {f"{app}-decisions": {}, f"{app}-ticks": {},
            f"{app}-join-changelog": compacted, f"{app}-metrics-changelog": compacted}


def create_internal_topics(spec: Spec, kafka: Connection, count: int, replication: int = 1) -> list[str]:
    """Create the worker's internal topics with `count` partitions, and wait until the broker lists them.

    Faust creates them too, but while it joins the group: a topic created then can miss the first
    assignment, and no rebalance follows when it appears. A worker whose ticks topic was missed never
    checkpoints the last records of a quiet partition, so they stay out of its metrics."""
    wanted = internal_topics(spec)
    existing = partitions(kafka, list(wanted))
    wrong = {name: n for name, n in existing.items() if n != count}
    if wrong:
        name, n = next(iter(wrong.items()))
        raise MonitorError(f"internal topic {name!r} has {n} partitions, but the input topics have {count}:"
                           " delete it (and the group's other internal topics) or recreate the input topics")
    return _create_missing(kafka, {name: (count, configs) for name, configs in wanted.items()}, existing,
                           replication)


def _create_missing(kafka: Connection, wanted: dict[str, tuple[int, dict[str, str]]], existing: dict[str, int],
                    replication: int) -> list[str]:
    """Create the wanted topics (partitions, config) not in `existing`, wait until the broker lists them all;
    returns those created here (another client may create one at the same moment)."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(**kafka.kafka_python(request_timeout_ms=15_000))
    created = []
    try:
        for name, (count, configs) in wanted.items():
            if name in existing:
                continue
            try:
                admin.create_topics([NewTopic(name, count, replication, topic_configs=configs)])
                created.append(name)
            except TopicAlreadyExistsError:  # another worker or command was quicker
                pass
        _await_metadata(kafka, list(wanted))
    finally:
        admin.close()
    return created


def _await_metadata(kafka: Connection, topics: list[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while len(partitions(kafka, topics)) < len(topics):
        if time.monotonic() > deadline:
            raise MonitorError(f"topics {topics} did not appear on {kafka.bootstrap} within {timeout:.0f} s")
        time.sleep(0.2)


def produce(path: Path, kafka: Connection, rate: float | None = None,
            rename: dict[str, str] | None = None) -> tuple[int, int]:
    """Publish every record of a replay file to its topic, keeping key and timestamp.

    `rename` maps a file's topic names to others (`predictions` to a spec's own name, say).
    Returns (records sent, lines skipped because they are not a replay record)."""
    rename = rename or {}
    from kafka.producer.kafka import KafkaProducer

    producer = KafkaProducer(**kafka.kafka_python(linger_ms=20, batch_size=256 * 1024, acks="all"))
    sent = skipped = 0
    started = time.monotonic()
    try:
        with path.open("rb") as stream:
            for line in stream:
                if not line.strip():
                    continue
                try:
                    record = decode_record(line)
                    value = bytes(record.payload())  # a capture's raw bytes (Avro, say) exactly as Kafka held them
                    key = record.record_key()
                except RecordError:
                    skipped += 1
                    continue
                key = key.encode() if isinstance(key, str) else key
                producer.send(rename.get(record.topic, record.topic), key=key, value=value,
                              timestamp_ms=record.timestamp)
                sent += 1
                if rate:
                    ahead = sent / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
        producer.flush()
    finally:
        producer.close()
    return sent, skipped

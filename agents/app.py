"""The Faust worker: thin wiring of the engine's streaming stages (monitor.stream) to Kafka.

    predictions ─┐                                              ┌─> monitor-alerts
                 ├─> join (per partition) ─> <app>-decisions ─> metrics (per segment) ─┤
    outcomes ────┘        │      (partial summaries per segment and slice)             └─> /metrics
                          └─> monitor-dead-letters

Agents deserialize nothing themselves and compute nothing: they hand raw records to the stages and
send what comes back. State lives in changelog-backed tables. Processing is at-least-once: a record
is acked only once a checkpoint holds its effect, and the stages recognise what is delivered again.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import AsyncIterator
from typing import Any

import faust
import orjson
from aiohttp.web import Response
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from monitor.alerts import Alert
from monitor.engine import DeadLetter
from monitor.exporter import Exporter
from monitor.spec import Spec
from monitor.stream import JoinStage, ReduceStage, Write

TICK_SECONDS = 0.25
log = logging.getLogger(__name__)
RAW: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}


def create_app(spec: Spec, bootstrap: str, partitions: int, web_port: int = 6066) -> faust.App:
    """A worker for one decision spec; `partitions` is the input topics' partition count."""
    app = faust.App(
        f"monitor-{spec.name}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        topic_partitions=partitions,
        topic_replication_factor=1,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,  # records not yet checkpointed are left uncommitted, not waited for
        broker_commit_interval=1.0,
        web_port=web_port,
        datadir=tempfile.mkdtemp(prefix=f"monitor-{spec.name}-"),  # memory store: nothing to keep
        web_bind="127.0.0.1",
        web_host="127.0.0.1",
        web_tables_enabled=False,  # /table would expose table contents
        web_router_enabled=False,
        autodiscover=False,
        key_serializer="raw",  # the engine decodes, counts and dead-letters; Faust never has to
        value_serializer="raw",
    )
    registry = CollectorRegistry()
    app.monitor = PrometheusMonitor(metrics=FaustMetrics.create(registry, "faust"))
    exporter = Exporter(spec, registry)

    predictions = app.topic(spec.topics.predictions, **RAW)
    outcomes = app.topic(spec.topics.outcomes, **RAW)
    decisions = app.topic(f"{app.conf.id}-decisions", partitions=partitions, internal=True, **RAW)
    ticks = app.topic(f"{app.conf.id}-ticks", partitions=partitions, internal=True, **RAW)
    alerts = app.topic(spec.topics.alerts, **RAW)
    dead_letters = app.topic(spec.topics.dead_letters, **RAW)

    def table(name: str) -> Any:
        return app.Table(name, partitions=partitions, key_type=bytes, value_type=bytes)  # raw bytes both ways

    join_table, metrics_table = table("join"), table("metrics")
    join = JoinStage(spec, join_table, partitions)
    fired: list[Alert] = []
    reduce = ReduceStage(spec, partitions, metrics_table, on_alert=fired.append)
    unsaved: dict[int, list[faust.EventT[bytes]]] = {}  # per input partition, records its next checkpoint covers
    saving: set[int] = set()

    async def persist(table: Any, partition: int, writes: list[Write]) -> None:
        """Write to a table and wait until the changelog has it. Faust's own flush gives up after
        0.1 s with messages still buffered, and commits offsets all the same."""
        sent = []
        for key, value in writes:
            if value is None:
                table.data.pop(key, None)
            else:
                table.data[key] = value
            sent.append(table.send_changelog(partition, key, value, value_serializer="raw"))
        await asyncio.gather(*sent)

    async def checkpoint(partition: int, now: float) -> None:
        """Persist a join partition, then send its deltas, then let Faust commit its records."""
        if partition in saving or not join.due(partition, now):
            return
        saving.add(partition)
        try:
            part, events = join.partition(partition), unsaved.pop(partition, [])
            done = join.checkpoint(partition, now)
            await persist(join_table, partition, done.log)  # durable before its deltas can be seen
            sent = [decisions.send_soon(key=None, value=raw, partition=q) for q, raw in done.deltas]
            for event in events:
                event.ack()
            if done.compaction and join.partitions.get(partition) is part:  # still ours
                await asyncio.gather(*sent)  # the deltas are durable before the logs holding them go
                await persist(join_table, partition, done.compaction)
        finally:
            saving.discard(partition)

    async def consume(stream: faust.StreamT[bytes], topic: str) -> AsyncIterator[None]:
        # Manual acks: a record is committed only once a checkpoint holds what it changed.
        async for event in stream.noack().events():  # type: ignore[attr-defined]  # missing from StreamT
            message, now = event.message, time.time()
            for letter in join.process(topic, message.partition, message.offset, event.value, now):
                dead_letters.send_soon(key=None, value=letter.value, headers=_headers(letter))
            unsaved.setdefault(message.partition, []).append(event)
            await checkpoint(message.partition, now)
            yield None

    @app.agent(predictions, concurrency=1)
    async def join_predictions(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for done in consume(stream, spec.topics.predictions):
            yield done

    @app.agent(outcomes, concurrency=1)
    async def join_outcomes(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for done in consume(stream, spec.topics.outcomes):
            yield done

    @app.agent(ticks, concurrency=1)
    async def idle_partitions(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        """Restores assigned partitions, advances idle ones and checkpoints quiet ones."""
        async for event in stream.events():
            now = time.time()
            join.tick(event.message.partition, now)
            await checkpoint(event.message.partition, now)
            yield None

    @app.agent(decisions, concurrency=1)
    async def metrics(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for event in stream.noack().events():  # type: ignore[attr-defined]
            partition = event.message.partition
            await persist(metrics_table, partition, reduce.handle(partition, event.value))
            event.ack()
            while fired:
                await alerts.send(key=None, value=orjson.dumps(fired.pop(0).as_dict()))
            yield None

    @app.timer(TICK_SECONDS)
    async def tick() -> None:
        """Ticks reach each assigned join partition through its own topic: timers cannot write tables."""
        for tp in app.assignor.assigned_actives():
            if tp.topic == ticks.get_topic_name():
                ticks.send_soon(key=None, value=b"tick", partition=tp.partition)

    @app.page("/metrics")
    async def scrape(web: Any, request: Any) -> Any:
        exporter.update(join.counts(), join.record_counts(), list(reduce.rollups.values()))
        return Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok", "join_partitions": sorted(join.partitions),
                         "metric_partitions": sorted(reduce.rollups),
                         "held_outcomes": join.held_outcomes(),
                         "segments": {"/".join(r.segments.key(s)) or "(all)": t["decisions"]
                                      for r in reduce.rollups.values() for s, t in r.totals().items()}})

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # Faust's signal types are too narrow
    async def revoked(app: faust.App, revoked: set[Any], **kwargs: Any) -> None:
        inputs = {tp.partition for tp in revoked if tp.topic in (spec.topics.predictions, spec.topics.outcomes)}
        log.info("revoked join partitions %s, metric partitions %s", sorted(inputs),
                 sorted(tp.partition for tp in revoked if tp.topic == decisions.get_topic_name()))
        join.revoke(inputs)
        for partition in inputs:  # never acked: committed by whoever checkpoints them next
            unsaved.pop(partition, None)
        if inputs:
            exporter.reset_counts()
        for rollup in reduce.revoke({tp.partition for tp in revoked if tp.topic == decisions.get_topic_name()}):
            exporter.forget(rollup)

    return app


def _headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    return [("reason", letter.reason.encode()), ("topic", letter.topic.encode()),
            ("partition", str(letter.partition).encode()), ("offset", str(letter.offset).encode())]


def run(app: faust.App, loglevel: str = "warning") -> None:
    """Run the worker until SIGTERM or Ctrl-C; shutdown commits offsets and flushes the producer."""
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()

"""The Faust worker: thin wiring of the engine's streaming stages (monitor.stream.stages) to Kafka.

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
import atexit
import logging
import shutil
import tempfile
import time
from typing import Any

import faust
import orjson
from aiohttp.web import Response
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from monitor.contract.spec import Spec
from monitor.engine.alerts import Alert
from monitor.engine.monitor import DeadLetter
from monitor.export.prometheus import Exporter
from monitor.stream.stages import CHECKPOINT_RECORDS, SNAPSHOT_MIN_BYTES, Checkpoint, JoinStage, ReduceStage, Write

TICK_SECONDS = 0.1
BACKLOG_RECORDS = 2 * CHECKPOINT_RECORDS  # records one partition may hold unsaved while a checkpoint is in flight
log = logging.getLogger(__name__)
RAW: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}


def create_app(spec: Spec, bootstrap: str, partitions: int, web_port: int = 6066,
               snapshot_bytes: int = SNAPSHOT_MIN_BYTES) -> faust.App:
    """A worker for one decision spec; `partitions` is the input topics' partition count."""
    datadir = tempfile.mkdtemp(prefix=f"monitor-{spec.name}-")  # the memory store keeps nothing on disk
    atexit.register(shutil.rmtree, datadir, ignore_errors=True)
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
        datadir=datadir,
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
    join = JoinStage(spec, join_table, partitions, snapshot_bytes)
    fired: list[Alert] = []
    reduce = ReduceStage(spec, partitions, metrics_table, on_alert=fired.append)
    # Per input partition, the records (with their stream) its next checkpoint covers.
    unsaved: dict[int, list[tuple[Any, faust.EventT[bytes]]]] = {}
    letters: dict[int, list[asyncio.Future[Any]]] = {}  # per input partition, dead letters since its checkpoint
    saving: dict[int, asyncio.Future[None]] = {}  # per input partition, the checkpoint in flight

    def write(table: Any, partition: int, writes: list[Write]) -> list[asyncio.Future[Any]]:
        """Write to a table; the futures resolve once the changelog has each write. (Faust's own
        flush gives up after 0.1 s with messages still buffered, and commits offsets all the same.)"""
        sent = []
        for key, value in writes:
            if value is None:
                table.data.pop(key, None)
            else:
                table.data[key] = value
            sent.append(table.send_changelog(partition, key, value, value_serializer="raw"))
        return sent

    async def checkpoint(partition: int, now: float) -> None:
        """Cut a checkpoint and save it in the background, so the agent goes on with the next records."""
        flight = saving.get(partition)
        if flight is not None and not flight.done():
            if join.backlog(partition) < BACKLOG_RECORDS:
                return
            await flight  # backpressure: the broker is slower than the records
        if not join.due(partition, now):
            return
        part, events = join.partition(partition), unsaved.pop(partition, [])
        done = join.checkpoint(partition, now)
        logged = write(join_table, partition, done.log) + letters.pop(partition, [])
        saving[partition] = flight = asyncio.ensure_future(save(partition, part, done, logged, events))
        flight.add_done_callback(_report_failure)

    async def save(partition: int, part: object, done: Checkpoint, logged: list[asyncio.Future[Any]],
                   events: list[tuple[Any, faust.EventT[bytes]]]) -> None:
        await asyncio.gather(*logged)  # the checkpoint (and its dead letters) is durable before its deltas can be seen
        if join.partitions.get(partition) is not part:
            # Revoked meanwhile: the new owner sends these partials again if its restore saw this
            # checkpoint, and handles its records again if not. Sending them here could count them twice.
            return
        sent = [decisions.send_soon(key=None, value=raw, partition=q) for q, raw in done.deltas]
        for stream, event in events:  # now Faust may commit them
            await stream.ack(event)
        if done.compaction:
            await asyncio.gather(*sent)  # the deltas are durable before the logs holding them go
            if join.partitions.get(partition) is part:
                await asyncio.gather(*write(join_table, partition, done.compaction))

    async def ack_after(writes: list[asyncio.Future[Any]], stream: Any, event: faust.EventT[bytes],
                        rollup: object) -> None:
        await asyncio.gather(*writes)
        # Revoked meanwhile: leave it uncommitted. A restore may have read the changelog before
        # these writes reached it, and then only a redelivery brings this delta back.
        if reduce.rollups.get(event.message.partition) is rollup:
            await stream.ack(event)

    async def consume(stream: faust.StreamT[bytes], topic: str) -> None:
        # Manual acks: a record is committed only once a checkpoint holds what it changed.
        manual = stream.noack()  # type: ignore[attr-defined]  # missing from StreamT
        async for event in manual.events():
            message, now = event.message, time.time()
            for letter in join.process(topic, message.partition, message.offset, event.value, now):
                letters.setdefault(message.partition, []).append(
                    dead_letters.send_soon(key=None, value=letter.value, headers=_headers(letter)))
            unsaved.setdefault(message.partition, []).append((manual, event))
            await checkpoint(message.partition, now)

    @app.agent(predictions, concurrency=1)
    async def join_predictions(stream: faust.StreamT[bytes]) -> None:
        await consume(stream, spec.topics.predictions)

    @app.agent(outcomes, concurrency=1)
    async def join_outcomes(stream: faust.StreamT[bytes]) -> None:
        await consume(stream, spec.topics.outcomes)

    @app.agent(ticks, concurrency=1)
    async def idle_partitions(stream: faust.StreamT[bytes]) -> None:
        """Restores assigned partitions, advances idle ones and checkpoints quiet ones."""
        async for event in stream.events():
            now = time.time()
            join.tick(event.message.partition, now)
            await checkpoint(event.message.partition, now)

    @app.agent(decisions, concurrency=1)
    async def metrics(stream: faust.StreamT[bytes]) -> None:
        manual = stream.noack()  # type: ignore[attr-defined]
        async for event in manual.events():
            partition = event.message.partition
            merged = write(metrics_table, partition, reduce.handle(partition, event.value))
            # Acked once its merge is durable, without holding up the next delta meanwhile.
            acked = ack_after(merged, manual, event, reduce.rollups.get(partition))
            asyncio.ensure_future(acked).add_done_callback(_report_failure)
            while fired:
                await alerts.send(key=None, value=orjson.dumps(fired.pop(0).as_dict()))

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
            letters.pop(partition, None)
            saving.pop(partition, None)  # a checkpoint in flight belongs to the old owner: never wait for it
        if inputs:
            exporter.reset_counts()
        for rollup in reduce.revoke({tp.partition for tp in revoked if tp.topic == decisions.get_topic_name()}):
            exporter.forget(rollup)

    return app


def _report_failure(flight: asyncio.Future[None]) -> None:
    if not flight.cancelled() and flight.exception() is not None:
        log.error("a state write failed; its records stay uncommitted", exc_info=flight.exception())


def _headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    return [("reason", letter.reason.encode()), ("topic", letter.topic.encode()),
            ("partition", str(letter.partition).encode()), ("offset", str(letter.offset).encode())]


def run(app: faust.App, loglevel: str = "warning") -> None:
    """Run the worker until SIGTERM or Ctrl-C; shutdown commits offsets and flushes the producer."""
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()

"""The Faust worker: thin wiring of the engine's streaming stages (monitor.stream) to Kafka.

    predictions ─┐                                   ┌─> monitor-alerts
                 ├─> join (per partition) ─> <app>-decisions (keyed by segment) ─> reduce ─┤
    outcomes ────┘        │                                                                └─> /metrics
                          └─> monitor-dead-letters

Agents deserialize nothing themselves and compute nothing: they hand raw records to the stages and
send what comes back. State lives in changelog-backed tables; processing is at-least-once, and the
stages recognise records delivered again after a restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import faust
import orjson
from aiohttp.web import Response
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from monitor import wire
from monitor.alerts import Alert
from monitor.engine import DeadLetter
from monitor.exporter import Exporter
from monitor.spec import Spec
from monitor.stream import JoinStage, JoinStores, Output, ReduceStage, segment_key

HEARTBEAT_SECONDS = 1.0
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
        broker_commit_interval=1.0,
        web_port=web_port,
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

    join = JoinStage(spec, JoinStores(table("pending"), table("held"), table("done"), table("progress")))
    fired: list[Alert] = []
    reduce = ReduceStage(spec, partitions, table("finals"), on_alert=fired.append)

    async def send(out: Output) -> None:
        # Buffered sends: Faust flushes the producer before it commits the offsets behind them.
        for final in out.finals:
            decisions.send_soon(key=segment_key(final), value=wire.encode(final))
        for letter in out.dead_letters:
            dead_letters.send_soon(key=None, value=letter.value, headers=_headers(letter))

    async def consume(stream: faust.StreamT[bytes], topic: str) -> AsyncIterator[None]:
        async for event in stream.events():
            message = event.message
            await send(join.process(topic, message.partition, message.offset, event.value, time.time()))
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
        async for event in stream.events():
            await send(join.tick(event.message.partition, time.time()))
            yield None

    @app.agent(decisions, concurrency=1)
    async def metrics(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for event in stream.events():
            reduce.handle(event.message.partition, event.value)
            while fired:
                await alerts.send(key=None, value=orjson.dumps(fired.pop(0).as_dict()))
            yield None

    @app.timer(HEARTBEAT_SECONDS)
    async def heartbeat() -> None:
        """Tell every metrics partition how far each join partition got; nudge idle partitions."""
        now = time.time()
        for tp in app.assignor.assigned_actives():
            if tp.topic == spec.topics.predictions and tp.partition not in join.joins:
                # Restore it now rather than at its next record; tables are only safe to read
                # from an agent, which Faust runs once their recovery is complete.
                await ticks.send(key=None, value=b"restore", partition=tp.partition)
        for source, watermark in join.watermarks().items():
            beat = wire.encode(wire.Heartbeat(source, watermark))
            for partition in range(partitions):
                await decisions.send(key=None, value=beat, partition=partition)
            if now - join.last_seen.get(source, now) >= spec.idle_timeout:
                await ticks.send(key=None, value=b"tick", partition=source)

    @app.page("/metrics")
    async def scrape(web: Any, request: Any) -> Any:
        exporter.update(join.counts(), join.record_counts(), list(reduce.rollups.values()))
        return Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok", "join_partitions": sorted(join.joins),
                         "metric_partitions": sorted(reduce.rollups),
                         "held_outcomes": sum(len(j.held) for j in join.joins.values()),
                         "segments": {"/".join(r.segments.key(s)) or "(all)": t["decisions"]
                                      for r in reduce.rollups.values() for s, t in r.totals().items()}})

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # Faust's signal types are too narrow
    async def revoked(app: faust.App, revoked: set[Any], **kwargs: Any) -> None:
        inputs = {tp.partition for tp in revoked if tp.topic in (spec.topics.predictions, spec.topics.outcomes)}
        log.info("revoked join partitions %s, metric partitions %s", sorted(inputs),
                 sorted(tp.partition for tp in revoked if tp.topic == decisions.get_topic_name()))
        join.revoke(inputs)
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

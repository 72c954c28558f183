"""The Faust worker: topics, tables, agents and web views around the engine's `monitor.stream.Worker`.

    predictions ─┐                                              ┌─> monitor-alerts
                 ├─> join (per partition) ─> <app>-decisions ─> metrics (per segment) ─┤
    outcomes ────┘        │      (parts: summaries per segment and slice)              └─> /metrics
                          └─> monitor-dead-letters

The input topics come in batches, a partition's fetched records at a time (`agents.consumer`);
the parts, ticks and changelogs through Faust's agents. Neither computes anything or decides any
ordering: they hand raw records to the worker with a way to commit them, and the worker says when.
Processing is at-least-once with idempotent state.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Awaitable, ItemsView
from typing import Any, cast

import faust
from aiohttp.web import Request, Response, middleware
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.types import TP
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from agents.consumer import Consumer, Intake, Transport
from agents.logs import PRODUCER_BUFFER, quiet_faust
from monitor.contract.spec import Spec
from monitor.engine.intake import DeadLetter
from monitor.export.prometheus import MonitorCollector
from monitor.infra.brokers import group_id
from monitor.infra.connection import Connection
from monitor.infra.web_access import WebAccess
from monitor.stream.early_store import EARLY
from monitor.stream.in_order import InOrder
from monitor.stream.join_stage import SNAPSHOT_MIN_BYTES
from monitor.stream.store import Write
from monitor.stream.worker import Worker

TICK_SECONDS = 0.1
log = logging.getLogger(__name__)
RAW: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}


class ChangelogTable:
    """A Faust table as the worker's `Table`: a write is durable once its changelog message is acked.
    (Faust's own flush gives up after 0.1 s with messages still buffered, and commits offsets all the same.)"""

    def __init__(self, table: Any) -> None:
        self.table = table

    def items(self) -> ItemsView[bytes, bytes]:
        return self.table.data.items()  # type: ignore[no-any-return]

    def write(self, partition: int, writes: list[Write]) -> list[Awaitable[Any]]:
        sent = []
        for key, value in writes:
            if value is None:
                self.table.data.pop(key, None)
            else:
                self.table.data[key] = value
            sent.append(self.table.send_changelog(partition, key, value, value_serializer="raw"))
        return sent

    def forget(self, app: faust.App, partitions: set[int], separator: str, namespaces: tuple[str, ...] = ("",)) -> None:
        """Drop this worker's copy of revoked partitions, and have Faust read their changelog from the start
        when they come back. Faust resumes a partition it held before where its last recovery stopped, on top
        of the copy in memory; a worker frozen past its session has written into that copy as a zombie since.
        Restored from that copy, the thawed worker's metrics partition lost decisions (the nemesis, seed 9:
        two runs in three); read afresh, every run was exact."""
        # keys start "<partition>/" or "<partition>|", and a metrics partition's early state "e<partition>|"
        prefixes = tuple(f"{space}{p}{separator}".encode() for space in namespaces for p in partitions)
        for key in [k for k in self.table.data if k.startswith(prefixes)]:
            self.table.data.pop(key, None)
        recovery, topic = app.tables.recovery, self.table.changelog_topic.get_topic_name()  # type: ignore[attr-defined]
        for partition in partitions:
            recovery.active_offsets.pop(TP(topic, partition), None)
            recovery.standby_offsets.pop(TP(topic, partition), None)


class Topics:
    """The worker's `Sender`: the internal decisions topic, dead letters and alerts."""

    def __init__(self, decisions: Any, dead_letters: Any, alerts: Any) -> None:
        self.decisions, self.dead_letters, self.alerts = decisions, dead_letters, alerts

    def delta(self, partition: int, raw: bytes) -> Awaitable[Any]:
        return self.decisions.send_soon(key=None, value=raw, partition=partition)  # type: ignore[no-any-return]

    def dead_letter(self, letter: DeadLetter) -> Awaitable[Any]:
        headers = [("reason", letter.reason.encode()), ("topic", letter.topic.encode()),
                   ("partition", str(letter.partition).encode()), ("offset", str(letter.offset).encode())]
        return self.dead_letters.send_soon(key=None, value=letter.value, headers=headers)  # type: ignore[no-any-return]

    def alert(self, alert_id: str, raw: bytes) -> Awaitable[Any]:
        if os.environ.get("MONITOR_FAULT") == "kill-on-alert":  # fault injection for the tests: die sending
            os.kill(os.getpid(), signal.SIGKILL)
        return self.alerts.send(key=alert_id.encode(), value=raw)  # type: ignore[no-any-return]


def credentials(kafka: Connection) -> faust.types.auth.CredentialsT | None:
    """Faust's form of the connection's security: the same TLS context and login as every other client."""
    s = kafka.settings
    if s.uses_sasl:
        password = s.sasl_password.reveal() if s.sasl_password else None
        return faust.SASLCredentials(username=s.sasl_username, password=password, ssl_context=kafka.ssl_context,
                                     mechanism=s.sasl_mechanism)
    if s.uses_ssl:
        return faust.SSLCredentials(kafka.ssl_context)
    return None


def guard(access: WebAccess) -> Any:
    """An aiohttp middleware: every page, Faust's own included, asks for the basic-auth credentials."""

    @middleware
    async def basic_auth(request: Request, handler: Any) -> Any:
        if access.allows(request.headers.get("Authorization")):
            return await handler(request)
        return Response(status=401, text="authentication required\n",
                        headers={"WWW-Authenticate": 'Basic realm="monitor", charset="UTF-8"'})

    return basic_auth


def create_app(spec: Spec, kafka: Connection, partitions: int, web_port: int = 6066,
               snapshot_bytes: int = SNAPSHOT_MIN_BYTES, web_host: str = "127.0.0.1",
               access: WebAccess | None = None) -> faust.App:
    """A worker for one decision spec; `partitions` is the input topics' partition count."""
    datadir = tempfile.mkdtemp(prefix=f"monitor-{spec.name}-")  # the memory store keeps nothing on disk
    atexit.register(shutil.rmtree, datadir, ignore_errors=True)
    app = faust.App(
        group_id(spec),
        broker=f"kafka://{kafka.bootstrap}",
        broker_credentials=credentials(kafka),
        # A worker killed without a goodbye holds its partitions until its session times out.
        broker_session_timeout=spec.session_timeout,
        broker_heartbeat_interval=spec.heartbeat_interval,
        store="memory://",
        topic_partitions=partitions,
        topic_replication_factor=1,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,  # records not yet checkpointed are left uncommitted, not waited for
        broker_commit_interval=1.0,
        web_port=web_port,
        datadir=datadir,
        web_bind=web_host,
        web_host=web_host,
        web_tables_enabled=False,  # /table would expose table contents
        web_router_enabled=False,
        web_ssl_context=access.ssl_context if access else None,
        autodiscover=False,
        key_serializer="raw",  # the engine decodes, counts and dead-letters; Faust never has to
        value_serializer="raw",
    )
    intakes: dict[str, Intake] = {}  # the input topics, filled below once the worker exists

    async def fence(assigned: set[TP], generation: int) -> None:
        inputs = {tp.partition for tp in assigned if tp.topic == spec.topics.predictions}
        merged = {tp.partition for tp in assigned if tp.topic == decisions.get_topic_name()}
        # Fault injection for the nemesis: every owner in epoch 0, so nothing fences a zombie (a run must then fail).
        epoch = 0 if os.environ.get("MONITOR_FAULT") == "no-fencing" else generation
        await asyncio.gather(*worker.assign(inputs, merged, epoch))

    app.transport = Transport(app.conf.broker_consumer, app, intakes=intakes, fence=fence)
    app.producer.buffer.max_messages = PRODUCER_BUFFER  # a checkpoint's burst is no reason to pause input
    quiet_faust()
    if access is not None and access.user:
        app.web.web_app.middlewares.append(guard(access))  # type: ignore[attr-defined]  # aiohttp driver
    registry = CollectorRegistry()
    app.monitor = PrometheusMonitor(metrics=FaustMetrics.create(registry, "faust"))

    predictions = app.topic(spec.topics.predictions, **RAW)
    outcomes = app.topic(spec.topics.outcomes, **RAW)
    decisions = app.topic(f"{app.conf.id}-decisions", partitions=partitions, internal=True, **RAW)
    ticks = app.topic(f"{app.conf.id}-ticks", partitions=partitions, internal=True, **RAW)
    sender = Topics(decisions, app.topic(spec.topics.dead_letters, **RAW), app.topic(spec.topics.alerts, **RAW))

    def table(name: str) -> ChangelogTable:
        return ChangelogTable(app.Table(name, partitions=partitions, key_type=bytes, value_type=bytes))

    join_table, metrics_table = table("join"), table("metrics")

    async def committed(partition: int) -> int:
        return await consumer(app).committed_offset(TP(decisions.get_topic_name(), partition))

    async def rewind(partition: int, offset: int) -> None:
        await consumer(app).rewind(TP(decisions.get_topic_name(), partition), offset)

    worker = Worker(spec, join_table, metrics_table, sender, partitions, snapshot_bytes,
                    replay_source=f"--bootstrap {kafka.bootstrap}", order=InOrder(committed, rewind, time.monotonic))
    registry.register(MonitorCollector(spec, worker))

    async def take(tp: TP, batch: list[Any]) -> None:
        await worker.records(tp.topic, tp.partition, batch, functools.partial(_commit_through, consumer(app), tp))

    for topic in (predictions, outcomes):  # batch intake: subscribed here, delivered by `Consumer`, not agents
        app.topics.add(topic)
        intakes[topic.get_topic_name()] = take

    @app.agent(ticks, concurrency=1)
    async def idle_partitions(stream: faust.StreamT[bytes]) -> None:
        """Restores assigned partitions, advances idle ones and checkpoints quiet ones."""
        async for event in stream.events():
            await worker.tick(event.message.partition)

    @app.agent(decisions, concurrency=1)
    async def metrics(stream: faust.StreamT[bytes]) -> None:
        manual = stream.noack()  # type: ignore[attr-defined]
        async for event in manual.events():
            await worker.delta(event.message.partition, event.value, _acker(manual, event), event.message.offset)

    @app.timer(TICK_SECONDS)
    async def tick() -> None:
        """Ticks reach each assigned join partition through its own topic: timers cannot write tables."""
        for tp in app.assignor.assigned_actives():
            if tp.topic == ticks.get_topic_name():
                ticks.send_soon(key=None, value=b"tick", partition=tp.partition)

    @app.page("/metrics")
    async def scrape(web: Any, request: Any) -> Any:
        return Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json(worker.health())

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def assigned(app: faust.App, assigned: set[Any], **kwargs: Any) -> None:
        inputs = {tp.partition for tp in assigned if tp.topic == spec.topics.predictions}
        unticked = inputs - {tp.partition for tp in assigned if tp.topic == ticks.get_topic_name()}
        if unticked:  # the internal topics are made before the group is joined, so this should not happen
            log.error("input partitions %s came without their ticks partitions: their last records wait for"
                      " new ones before they reach the metrics; restart the worker", sorted(unticked))

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # Faust's signal types are too narrow
    async def revoked(app: faust.App, revoked: set[Any], **kwargs: Any) -> None:
        inputs = {tp.partition for tp in revoked if tp.topic in (spec.topics.predictions, spec.topics.outcomes)}
        merged = {tp.partition for tp in revoked if tp.topic == decisions.get_topic_name()}
        log.info("revoked join partitions %s, metric partitions %s", sorted(inputs), sorted(merged))
        worker.revoke(inputs, merged)
        join_table.forget(app, inputs, "/")
        metrics_table.forget(app, merged, "|", ("", EARLY.decode()))

    return app


def consumer(app: faust.App) -> Consumer:
    return cast(Consumer, app.consumer)  # made by the `Transport` given to the app


async def _commit_through(consumer: Consumer, tp: TP, offset: int) -> None:
    consumer.commit_through(tp, offset)


def _acker(stream: Any, event: faust.EventT[bytes]) -> Any:
    async def ack() -> None:
        await stream.ack(event)
    return ack


def run(app: faust.App, loglevel: str = "warning") -> None:
    """Run the worker until SIGTERM or Ctrl-C; shutdown commits offsets and flushes the producer."""
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    if not worker.stdout.isatty():  # its start-up spinner would write cursor codes into a log file
        worker.spinner = None
    worker.execute_from_commandline()



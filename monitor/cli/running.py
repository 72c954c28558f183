"""The commands that run things: simulations, the demo, workers, the producer, the webhook, topics."""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from monitor.cli.common import (
    BootstrapOption,
    SpecOption,
    app,
    connect,
    fail,
    one_blas_thread,
    say_error,
    seconds,
)
from monitor.contract.errors import MonitorError
from monitor.offline.cli import offline


@app.command()
def simulate(
    scenario: Annotated[str, typer.Option(
        help="healthy, business_drop, model_rot, both_drop, label_delay, mix_shift or slower_outcomes.")],
    out: Annotated[Optional[Path], typer.Option("--out", help="Replay file to write.")] = None,  # noqa: UP045
    decisions: Annotated[Optional[int], typer.Option(min=1, show_default="100000", help="Number of decisions.")] = None,  # noqa: UP045
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    live: Annotated[bool, typer.Option("--live", help="Send to Kafka as it happens, with current times, "
                                       "instead of writing a file.")] = False,
    rate: Annotated[float, typer.Option(min=0.001, help="--live: decisions per second.")] = 20.0,
    bootstrap: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="--live: Kafka bootstrap HOST:PORT; defaults to $KAFKA_BOOTSTRAP, then 127.0.0.1:9092.")] = None,
    spec: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="--live: send to this spec's topics and fit the delays to its horizon.")] = None,
    change_after: Annotated[str, typer.Option(help="--live: the scenario's change starts this long after "
                                              "the start, e.g. 90s, 10m.")] = "10m",
    delay_scale: Annotated[Optional[float], typer.Option(  # noqa: UP045
        min=1e-6, show_default="the spec's horizon / 6h, else 1",
        help="--live: multiply outcome delays (median 30 min) by this.")] = None,
    duration: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="--live: stop after this long, e.g. 90s; runs until Ctrl-C or SIGTERM if unset.")] = None,
) -> None:
    """Write a simulated stream, with delays, duplicates, orphans and malformed records; or send it live."""
    if live:
        if out is not None or decisions is not None:
            raise typer.BadParameter("--live sends to Kafka without end: drop --out and --decisions",
                                     param_hint="--live")
        _simulate_live(scenario, seed, rate, bootstrap, spec, change_after, delay_scale, duration)
        return
    if out is None:
        raise typer.BadParameter("give a file to write, or --live", param_hint="--out")
    if decisions is None:
        decisions = 100_000
    from monitor.apps.simulate import simulate as simulating
    from monitor.apps.simulate import write_jsonl

    try:
        records = simulating(scenario, decisions, seed)
    except ValueError as exc:
        fail(exc)
    count = write_jsonl(records, out)
    typer.echo(f"wrote {count:,} records for {decisions:,} decisions to {out}", err=True)



def _simulate_live(scenario: str, seed: int, rate: float, bootstrap: str | None, spec: Path | None,
                   change_after: str, delay_scale: float | None, duration: str | None) -> None:
    import signal
    import time

    from monitor.apps import live
    from monitor.apps.simulate import EVENT_SCENARIOS, MEDIAN_DELAY, spec_file
    from monitor.contract import spec as specs

    change = seconds(change_after, "--change-after")
    length = None if duration is None else seconds(duration, "--duration")
    topics: dict[str, str] = {}
    loaded = None
    try:
        if spec is not None:
            loaded = specs.load(spec)
            topics = {"predictions": loaded.topics.predictions, "outcomes": loaded.topics.outcomes}
            events = scenario in EVENT_SCENARIOS
            if events != (loaded.events is not None):
                what = "outcome events" if events else "one outcome per decision"
                has = "has no" if loaded.events is None else "has an"
                raise MonitorError(f"--scenario {scenario} publishes {what} but --spec {spec} {has} [outcome.events]"
                                   f" table: use a spec such as monitor/{spec_file(scenario)}")
            if delay_scale is None:
                delay_scale = live.delay_scale(loaded.horizon, scenario)
        start = time.time()
        plan = live.Plan(scenario, rate, seed, start, change, delay_scale or 1.0, tag=f"{int(start):x}-")
        kafka = connect(bootstrap, loaded)
    except (MonitorError, ValueError) as exc:
        fail(exc)
    from kafka.producer.kafka import KafkaProducer

    servers = kafka.describe()
    clock = live.WallClock()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: clock.stop())
    producer = KafkaProducer(**kafka.kafka_python(linger_ms=50, acks="all"))

    def say(text: str) -> None:
        typer.echo(f"simulate: {text}", err=True)

    say(f"{scenario} at {rate:g} decisions/s to {servers}, outcome delays x{plan.delay_scale:.4g} (median "
        f"{MEDIAN_DELAY * plan.delay_scale:.0f} s), change after {change:.0f} s"
        + (f", for {length:.0f} s" if length else ""))
    try:
        sent = live.run(plan, producer, clock, topics=topics, until=None if length is None else start + length,
                        say=say)
        producer.flush()
    finally:
        producer.close()
    say(f"stopped: sent {sent['predictions']:,} predictions and {sent['outcomes']:,} outcomes")


@app.command()
def demo(
    scenario: Annotated[str, typer.Option(help="Simulated scenario to stream.")] = "business_drop",
    port: Annotated[int, typer.Option(help="Serve /metrics on 127.0.0.1:PORT.")] = 9108,
    duration: Annotated[float, typer.Option(help="Wall-clock seconds for the whole stream.")] = 60.0,
    decisions: Annotated[int, typer.Option(min=1000, help="Decisions to stream.")] = 60_000,
    spec: Annotated[Optional[Path], typer.Option(help="Spec; defaults to the bundled checkout example.")] = None,  # noqa: UP045
) -> None:
    """Stream a simulated scenario through the engine in-process; no broker needed."""
    one_blas_thread()
    from monitor.apps.demo import run

    try:
        run(scenario, port, duration, decisions, spec)
    except (MonitorError, ValueError) as exc:
        fail(exc)




@app.command()
def worker(
    spec: SpecOption,
    bootstrap: BootstrapOption = None,
    web_port: Annotated[int, typer.Option(help="Port of /metrics and /healthz.")] = 6066,
    web_host: Annotated[str, typer.Option(help="Address /metrics and /healthz listen on; 0.0.0.0 for all "
                                          "interfaces (in a container).")] = "127.0.0.1",
    loglevel: Annotated[str, typer.Option(help="Faust log level.")] = "warning",
    snapshot_bytes: Annotated[int, typer.Option(
        min=1, help="Snapshot a join partition once its checkpoints since the last snapshot reach this many "
        "bytes (and the snapshot's own size): less restore work, more writes.")] = 1 << 20,
    web_user: Annotated[Optional[str], typer.Option(  # noqa: UP045
        envvar="MONITOR_WEB_USER", help="Require basic auth on the web port as this user; the password comes "
        "from $MONITOR_WEB_PASSWORD or the file named by $MONITOR_WEB_PASSWORD_FILE.")] = None,
    web_certfile: Annotated[Optional[str], typer.Option(  # noqa: UP045
        envvar="MONITOR_WEB_CERTFILE", help="Serve the web port over HTTPS with this PEM certificate (chain).")] = None,
    web_keyfile: Annotated[Optional[str], typer.Option(  # noqa: UP045
        envvar="MONITOR_WEB_KEYFILE", help="The PEM key of --web-certfile.")] = None,
) -> None:
    """Run a streaming worker: join, metrics and alerts on Kafka (Faust)."""
    one_blas_thread()
    from monitor.contract import spec as specs
    from monitor.infra import brokers
    from monitor.infra.web_access import web_access

    try:
        access = web_access(web_user, web_certfile, web_keyfile, os.environ)
        loaded = specs.load(spec)
        kafka = connect(bootstrap, loaded)
        partitions = brokers.check_copartitioned(loaded, kafka)
        brokers.create_internal_topics(loaded, kafka, partitions)
    except MonitorError as exc:
        fail(exc)
    from agents.app import create_app, run

    typer.echo(f"worker {loaded.name}: Kafka at {kafka.describe()}, {partitions} input partitions;"
               f" /metrics and /healthz on {access.scheme}://{web_host}:{web_port} ({access.describe()})", err=True)
    run(create_app(loaded, kafka, partitions, web_port, snapshot_bytes, web_host=web_host, access=access), loglevel)


@app.command()
def health(
    web_port: Annotated[int, typer.Option(envvar="MONITOR_WEB_PORT", help="The worker's web port.")] = 6066,
    web_user: Annotated[Optional[str], typer.Option(  # noqa: UP045
        envvar="MONITOR_WEB_USER", help="Basic-auth user, as the worker's --web-user; the password from "
        "$MONITOR_WEB_PASSWORD or $MONITOR_WEB_PASSWORD_FILE.")] = None,
    web_certfile: Annotated[Optional[str], typer.Option(  # noqa: UP045
        envvar="MONITOR_WEB_CERTFILE", help="Set when the worker serves HTTPS: ask over HTTPS.")] = None,
    web_keyfile: Annotated[Optional[str], typer.Option(  # noqa: UP045
        envvar="MONITOR_WEB_KEYFILE", help="The worker's --web-keyfile (checked with the certificate).")] = None,
) -> None:
    """Ask the worker on this machine whether it is healthy (a container's HEALTHCHECK): exit 0 if so."""
    import ssl
    import urllib.request

    from monitor.infra.web_access import web_access

    try:
        access = web_access(web_user, web_certfile, web_keyfile, os.environ)
    except MonitorError as exc:
        fail(exc)
    request = urllib.request.Request(f"{access.scheme}://127.0.0.1:{web_port}/healthz")
    if access.user and access.password is not None:
        token = base64.b64encode(f"{access.user}:{access.password.reveal()}".encode()).decode()
        request.add_header("Authorization", "Basic " + token)
    # The worker's own certificate names its public host, not 127.0.0.1: this loopback probe does not check it.
    context = ssl._create_unverified_context() if access.certfile else None
    try:
        with urllib.request.urlopen(request, timeout=4, context=context) as response:
            status = json.loads(response.read()).get("status")
    except (OSError, ValueError) as exc:
        say_error(f"no healthy worker on port {web_port}: {getattr(exc, 'reason', exc)}")
        raise typer.Exit(1) from None
    if status != "ok":
        say_error(f"the worker on port {web_port} says {status!r}")
        raise typer.Exit(1)


@app.command()
def produce(
    input: Annotated[Path, typer.Option("--input", help="Replay file to publish.")],
    bootstrap: BootstrapOption = None,
    rate: Annotated[Optional[float], typer.Option(help="Records per second; as fast as possible if unset.")] = None,  # noqa: UP045
    spec: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="Send `predictions` and `outcomes` records to this spec's topic names.")] = None,
) -> None:
    """Publish a replay file's records to their topics, keeping key and timestamp."""
    from monitor.contract import spec as specs
    from monitor.infra import brokers

    rename = {}
    try:
        if not input.is_file():
            raise MonitorError(f"--input {input} is not a readable file")
        loaded = None if spec is None else specs.load(spec)
        if loaded is not None:
            rename = {"predictions": loaded.topics.predictions, "outcomes": loaded.topics.outcomes}
        kafka = connect(bootstrap, loaded)
    except MonitorError as exc:
        fail(exc)
    sent, skipped = brokers.produce(input, kafka, rate, rename)
    typer.echo(f"sent {sent:,} records" + (f"; skipped {skipped:,} lines that are not records" if skipped else ""),
               err=True)


@app.command()
def webhook(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 5001,
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 for all interfaces.")] = "127.0.0.1",
) -> None:
    """Receive Alertmanager's notifications and print one line per alert, until Ctrl-C or SIGTERM."""
    import signal

    from monitor.apps.webhook import serve

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(host, port)


app.add_typer(offline, name="offline")

topics = typer.Typer(help="Manage the monitor's Kafka topics.", no_args_is_help=True)
app.add_typer(topics, name="topics")


@topics.command("create")
def topics_create(
    spec: SpecOption,
    bootstrap: BootstrapOption = None,
    partitions: Annotated[int, typer.Option(min=1, help="Partitions of the input topics.")] = 4,
    retention_ms: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="retention.ms of the topics; -1 keeps replayed records whatever their age.")] = None,
) -> None:
    """Create the input topics (co-partitioned) and the alert and dead-letter topics."""
    from monitor.contract import spec as specs
    from monitor.infra import brokers

    try:
        loaded = specs.load(spec)
        created = brokers.create_topics(loaded, connect(bootstrap, loaded), partitions, retention_ms=retention_ms)
    except MonitorError as exc:
        fail(exc)
    typer.echo("created: " + (", ".join(created) or "nothing (all topics exist)"), err=True)

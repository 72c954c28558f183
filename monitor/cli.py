"""The `monitor` command line. Heavy modules are imported inside each command, to keep start-up fast."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from monitor.contract.errors import MonitorError
from monitor.offline.cli import offline

# No pretty exceptions: main() turns an unexpected error into one line, and --debug shows Python's own traceback.
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Watch a model's metrics and the business KPIs it drives, side by side.")

SpecOption = Annotated[Path, typer.Option("--spec", help="Decision spec (TOML).")]


_debug = False  # set by --debug; main() reads it after the command has failed


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", envvar="MONITOR_DEBUG",
                                        help="Show the full traceback of an unexpected error.")] = False,
) -> None:
    global _debug
    _debug = debug


def _one_blas_thread() -> None:
    """Before numpy is imported: the engine makes no BLAS call worth a thread of its own, while OpenBLAS's
    threads spin on the cores that a two-process replay, or a second worker, needs."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def _say_error(text: str) -> None:
    typer.secho(f"error: {text}", fg="red", err=True)


def _fail(exc: Exception) -> None:
    _say_error(str(exc))
    raise typer.Exit(2)


def _connect(bootstrap: str | None, spec: Any = None) -> Any:
    """The Kafka connection of a command, checked once: a wrong password or an untrusted certificate
    fails here, in one line, instead of in clients that retry quietly."""
    from monitor.infra.connection import connect_checked

    return connect_checked(bootstrap, spec)


def _epoch_ms(text: str | None, option: str) -> int | None:
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an RFC 3339 time", param_hint=option) from None
    if parsed.tzinfo is None:
        raise typer.BadParameter(f"{text!r} needs a UTC offset, e.g. 'Z'", param_hint=option)
    return int(parsed.timestamp() * 1000)


@app.command()
def replay(
    spec: SpecOption,
    report: Annotated[Path, typer.Option("--report", help="Where to write the JSON report.")],
    input: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--input", help="Replay file: one Kafka record per JSON line.")] = None,
    bootstrap: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="Read the range --from/--to from this Kafka broker (HOST:PORT) instead of a file.")] = None,
    since: Annotated[Optional[str], typer.Option("--from", help="Only records from this time (RFC 3339).")] = None,  # noqa: UP045
    until: Annotated[Optional[str], typer.Option("--to", help="Only records before this time.")] = None,  # noqa: UP045
    segment: Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
        help="Only decisions with FIELD=VALUE, e.g. variant=control or segment.country=DE; repeatable.")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Add what changed to each alert.")] = False,
    reference: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="With --current: explain the change between two periods, T1..T2 (RFC 3339).")] = None,
    current: Annotated[Optional[str], typer.Option(help="The period compared with --reference, T3..T4.")] = None,  # noqa: UP045
    html: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="Also write a self-contained HTML report (implies --explain).")] = None,
    joined: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--joined", help="Also write one row per finalized decision to this .parquet or .csv file.")] = None,
    processes: Annotated[Optional[int], typer.Option(  # noqa: UP045
        min=1, max=2, help="2: join in this process and roll up in a second one, for the same report in less "
        "time. Default: 2 on Linux with two cores or more, else 1; always 1 with explanations.")] = None,
) -> None:
    """Replay records from a file or a Kafka time range through the engine and write a report."""
    _one_blas_thread()
    import orjson

    from monitor.apps import ranges, split
    from monitor.apps import replay as replaying
    from monitor.contract import spec as specs
    from monitor.engine.monitor import Feed
    from monitor.export.joined import JoinedTable, check_path

    periods = _periods(reference, current)
    explaining = explain or html is not None or periods is not None
    if processes == 2 and not split.available():
        raise typer.BadParameter("two processes need Linux and two cores", param_hint="--processes")
    two = (processes or (2 if split.available() else 1)) == 2 and not explaining
    try:
        loaded = specs.load(spec)
        if joined is not None:
            check_path(joined)
        table = None if joined is None else JoinedTable(loaded)
        source, named = ranges.open_source(loaded, input, bootstrap, _epoch_ms(since, "--from"),
                                           _epoch_ms(until, "--to"), segment or [],
                                           connect=lambda servers: _connect(servers, loaded))
        progress = sys.stderr.isatty()
        monitor: Feed
        if two:
            monitor, collector = replaying.run_split(loaded, source, named, progress, joined=table), None
        else:
            monitor, collector = replaying.run(loaded, source, named, progress, explain=explaining, joined=table)
        result = ranges.report(monitor, collector, periods)
    except MonitorError as exc:
        _fail(exc)
    report.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    if html is not None:
        from monitor.debug.page import render

        html.write_text(render(result, spec.read_text(), f"monitor replay {named}"))
    if joined is not None and table is not None:
        rows = table.write(joined)
        typer.echo(f"wrote {rows:,} finalized decisions to {joined}", err=True)
    if sys.stdout.isatty():
        from monitor.export.console import summary_table

        summary_table(result, loaded)


def _periods(reference: str | None, current: str | None) -> tuple[tuple[float, float], tuple[float, float]] | None:
    if reference is None and current is None:
        return None
    if reference is None or current is None:
        raise typer.BadParameter("give both --reference and --current", param_hint="--reference/--current")
    return _period(reference, "--reference"), _period(current, "--current")


def _period(text: str, option: str) -> tuple[float, float]:
    start, sep, end = text.partition("..")
    if not sep:
        raise typer.BadParameter(f"{text!r} is not a period: expected T1..T2, e.g. "
                                 "2026-01-01T00:00:00Z..2026-01-02T00:00:00Z", param_hint=option)
    first, last = _epoch_ms(start, option), _epoch_ms(end, option)
    assert first is not None and last is not None
    if last <= first:
        raise typer.BadParameter(f"{text!r} ends before it starts", param_hint=option)
    return first / 1000, last / 1000


@app.command()
def capture(
    spec: SpecOption,
    out: Annotated[Path, typer.Option("--out", help="Replay file to write.")],
    since: Annotated[str, typer.Option("--from", help="From this time (RFC 3339).")],
    until: Annotated[str, typer.Option("--to", help="Before this time; outcomes one horizon later.")],
    bootstrap: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="Kafka bootstrap HOST:PORT; defaults to $KAFKA_BOOTSTRAP, then 127.0.0.1:9092.")] = None,
    segment: Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
        help="Only decisions with FIELD=VALUE; repeatable.")] = None,
) -> None:
    """Keep a time range of the input topics as a replay file, with partitions and offsets."""
    from monitor.apps import ranges
    from monitor.apps.replay import tracked
    from monitor.contract import spec as specs
    from monitor.debug.capture import capture as capturing

    try:
        loaded = specs.load(spec)
        kafka = _connect(bootstrap, loaded)
        source, _ = ranges.open_source(loaded, None, kafka.bootstrap, _epoch_ms(since, "--from"),
                                       _epoch_ms(until, "--to"), segment or [], connect=lambda _: kafka)
        count = capturing(tracked(source, sys.stderr.isatty(), "capture"), out)
    except MonitorError as exc:
        _fail(exc)
    typer.echo(f"wrote {count:,} records from {kafka.bootstrap} to {out}", err=True)


@app.command()
def diff(
    a: Annotated[Path, typer.Argument(help="The first report (before).")],
    b: Annotated[Path, typer.Argument(help="The second report (after).")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    alpha: Annotated[float, typer.Option(min=1e-12, max=0.5, help="Family-wise significance level.")] = 0.05,
    all_segments: Annotated[bool, typer.Option("--all-segments", help="Every segment, not only all "
                                               "decisions (the JSON always holds every segment).")] = False,
) -> None:
    """Two reports side by side: which metrics and KPIs moved, by how much, and whether significantly."""
    import orjson

    from monitor.debug.diff import diff as differ

    try:
        loaded = []
        for path in (a, b):
            try:
                loaded.append(orjson.loads(path.read_bytes()))
            except (OSError, orjson.JSONDecodeError) as exc:
                raise MonitorError(f"{path}: not a readable JSON report ({exc})") from None
        moves = differ(loaded[0], loaded[1], alpha)
    except MonitorError as exc:
        _fail(exc)
    if json_out:
        typer.echo(orjson.dumps({"a": str(a), "b": str(b), "alpha": alpha, "moves": [m.as_dict() for m in moves]},
                                option=orjson.OPT_INDENT_2).decode())
        return
    from monitor.debug.diff import table

    table(moves if all_segments else [m for m in moves if not m.segment], str(a), str(b), alpha)


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
        _fail(exc)
    count = write_jsonl(records, out)
    typer.echo(f"wrote {count:,} records for {decisions:,} decisions to {out}", err=True)


def _seconds(text: str, option: str) -> float:
    from monitor.contract.toml_values import parse_duration

    try:
        return parse_duration(text, option)
    except MonitorError:
        raise typer.BadParameter(f"{text!r} is not a duration such as 90s, 10m or 2h", param_hint=option) from None


def _simulate_live(scenario: str, seed: int, rate: float, bootstrap: str | None, spec: Path | None,
                   change_after: str, delay_scale: float | None, duration: str | None) -> None:
    import signal
    import time

    from monitor.apps import live
    from monitor.apps.simulate import MEDIAN_DELAY
    from monitor.contract import spec as specs

    change = _seconds(change_after, "--change-after")
    length = None if duration is None else _seconds(duration, "--duration")
    topics: dict[str, str] = {}
    loaded = None
    try:
        if spec is not None:
            loaded = specs.load(spec)
            topics = {"predictions": loaded.topics.predictions, "outcomes": loaded.topics.outcomes}
            if delay_scale is None:
                delay_scale = live.delay_scale(loaded.horizon)
        start = time.time()
        plan = live.Plan(scenario, rate, seed, start, change, delay_scale or 1.0, tag=f"{int(start):x}-")
        kafka = _connect(bootstrap, loaded)
    except (MonitorError, ValueError) as exc:
        _fail(exc)
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
    _one_blas_thread()
    from monitor.apps.demo import run

    try:
        run(scenario, port, duration, decisions, spec)
    except (MonitorError, ValueError) as exc:
        _fail(exc)


BootstrapOption = Annotated[Optional[str], typer.Option(  # noqa: UP045
    help="Kafka bootstrap HOST:PORT; defaults to $KAFKA_BOOTSTRAP, then 127.0.0.1:9092.")]


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
    _one_blas_thread()
    from monitor.contract import spec as specs
    from monitor.infra import brokers
    from monitor.infra.web_access import web_access

    try:
        access = web_access(web_user, web_certfile, web_keyfile, os.environ)
        loaded = specs.load(spec)
        kafka = _connect(bootstrap, loaded)
        partitions = brokers.check_copartitioned(loaded, kafka)
        brokers.create_internal_topics(loaded, kafka, partitions)
    except MonitorError as exc:
        _fail(exc)
    from agents.app import create_app, run

    typer.echo(f"worker {loaded.name}: Kafka at {kafka.describe()}, {partitions} input partitions;"
               f" /metrics and /healthz on {access.scheme}://{web_host}:{web_port} ({access.describe()})", err=True)
    run(create_app(loaded, kafka, partitions, web_port, snapshot_bytes, web_host=web_host, access=access), loglevel)


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
        kafka = _connect(bootstrap, loaded)
    except MonitorError as exc:
        _fail(exc)
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
        created = brokers.create_topics(loaded, _connect(bootstrap, loaded), partitions, retention_ms=retention_ms)
    except MonitorError as exc:
        _fail(exc)
    typer.echo("created: " + (", ".join(created) or "nothing (all topics exist)"), err=True)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # typer already exits 130 inside a command; this covers the moments around it
        raise SystemExit(130) from None
    except MonitorError as exc:  # a known error that a command did not catch: same words and code as _fail
        _say_error(str(exc))
        raise SystemExit(2) from None
    except Exception as exc:
        if _debug:
            raise
        message = " ".join(str(exc).split())  # one line, even if the message has several
        _say_error(type(exc).__name__ + (f": {message}" if message else ""))
        typer.echo("(run again with --debug for the traceback)", err=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()

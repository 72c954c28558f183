"""The commands that replay and compare: replay (a file or a Kafka range), capture, diff."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import msgspec
import typer

from monitor.cli.common import (
    SpecOption,
    app,
    connect,
    epoch_ms,
    fail,
    one_blas_thread,
    say_error,
    writable,
)
from monitor.contract import report as reports
from monitor.contract.errors import MonitorError


@app.command()
def replay(
    spec: SpecOption,
    report: Annotated[Path, typer.Option("--report", help="Where to write the JSON report.")],
    input: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--input", help="Replay file: one Kafka record per JSON line.")] = None,
    bootstrap: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="Read the range --from/--to from this Kafka broker (HOST:PORT) instead of a file.")] = None,
    predictions: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--predictions", help="With --outcomes: files of bare values, one per line, merged by event time.")] = None,
    outcomes: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--outcomes", help="The outcomes' file of bare values, with --predictions.")] = None,
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
    allow_invalid: Annotated[bool, typer.Option(
        "--allow-invalid", help="Exit 0 even when no decision became final or most records were invalid.")] = False,
) -> None:
    """Replay records from a file or a Kafka time range through the engine and write a report.

    Ends with one line saying what became of the records. Exit status 3 when no decision became final
    or more than half of the records were invalid (the report is written all the same)."""
    one_blas_thread()

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
        for path, flag in ((report, "--report"), (html, "--html"), (joined, "--joined")):
            if path is not None:
                writable(path, flag)
        if joined is not None:
            check_path(joined)
        table = None if joined is None else JoinedTable(loaded)
        source, named, loaded = ranges.open_source(loaded, input, bootstrap, epoch_ms(since, "--from"),
                                           epoch_ms(until, "--to"), segment or [],
                                           connect=lambda servers: connect(servers, loaded),
                                           raw=(predictions, outcomes))
        progress = sys.stderr.isatty()
        monitor: Feed
        if two:
            monitor, collector = replaying.run_split(loaded, source, named, progress, joined=table), None
        else:
            monitor, collector = replaying.run(loaded, source, named, progress, explain=explaining, joined=table)
        result = ranges.report(monitor, collector, periods)
    except MonitorError as exc:
        fail(exc)
    report.write_bytes(reports.write(result))
    if html is not None:
        from monitor.debug.page import render

        html.write_text(render(result, spec.read_text(), f"monitor replay {named}"))
    if joined is not None and table is not None:
        rows = table.write(joined)
        typer.echo(f"wrote {rows:,} finalized decisions to {joined}", err=True)
    from monitor.export.console import outcome_line, summary_table, trouble

    if sys.stdout.isatty():
        summary_table(result, loaded)
    typer.echo(outcome_line(result), err=True)
    problem = trouble(result)
    if problem is not None and not allow_invalid:
        say_error(f"{problem} (the report is written; --allow-invalid accepts it)")
        raise typer.Exit(3)


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
    first, last = epoch_ms(start, option), epoch_ms(end, option)
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
        kafka = connect(bootstrap, loaded)
        source, _, _ = ranges.open_source(loaded, None, kafka.bootstrap, epoch_ms(since, "--from"),
                                       epoch_ms(until, "--to"), segment or [], connect=lambda _: kafka)
        count = capturing(tracked(source, sys.stderr.isatty(), "capture"), out)
    except MonitorError as exc:
        fail(exc)
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
        moves = differ(_report(a), _report(b), alpha)
    except MonitorError as exc:
        fail(exc)
    if json_out:
        typer.echo(orjson.dumps({"a": str(a), "b": str(b), "alpha": alpha, "moves": [m.as_dict() for m in moves]},
                                option=orjson.OPT_INDENT_2).decode())
        return
    from monitor.debug.diff import table

    table(moves if all_segments else [m for m in moves if not m.segment], str(a), str(b), alpha)


def _report(path: Path) -> reports.Report:
    try:
        data = path.read_bytes()
        try:
            return reports.read(data)
        except msgspec.ValidationError as exc:
            msgspec.json.decode(data)  # JSON at all? (the typed read stops at the first field it cannot take)
            raise MonitorError(f"{path}: not a replay report as this monitor writes it ({exc}); if an older "
                               "monitor wrote it, replay it again") from None
    except (OSError, msgspec.DecodeError) as exc:
        raise MonitorError(f"{path}: not a readable JSON report ({exc})") from None


@app.command("report-schema")
def report_schema() -> None:
    """Print the JSON Schema of the replay report (`monitor replay --report`), as the docs publish it."""
    typer.echo(msgspec.json.format(msgspec.json.encode(reports.schema()), indent=2).decode())

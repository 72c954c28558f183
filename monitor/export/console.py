"""Human-readable output for terminals: alerts as they fire, and a closing summary table."""

from __future__ import annotations

import math

import msgspec
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from monitor.contract.report import Report
from monitor.contract.spec import Spec
from monitor.engine.alerts import Alert
from monitor.engine.comparisons import iso

_STYLE = {"critical": "bold red", "warning": "yellow"}


def print_alert(alert: Alert, console: Console | None = None) -> None:
    console = console or Console()
    style = _STYLE.get(alert.severity, "")
    console.print(f"[{style}]{alert.severity.upper()} {alert.kind}[/] at {iso(alert.at)}")
    console.print(f"  {escape(alert.message)}", highlight=False)  # "[decision] ..." is not markup
    console.print(f"  reproduce: [dim]{escape(alert.replay)}[/]", highlight=False)


def summary_table(report: Report, spec: Spec, console: Console | None = None) -> None:
    """A replay report's join counts, totals per segment (headline metrics) and alerts."""
    console = console or Console()
    console.print("join: " + ", ".join(f"{k} {v:,}" for k, v in msgspec.structs.asdict(report.join).items()))
    table = Table(title=f"{spec.name}: totals per segment", show_lines=False)
    table.add_column("segment")
    table.add_column("decisions", justify="right")
    shown = [m for m in spec.metrics if m.headline]
    for metric in shown:
        table.add_column(metric.name, justify="right")
    for segment in report.segments:
        values = [(segment.model if m.side == "model" else segment.kpi)[m.name] for m in shown]
        table.add_row("/".join(segment.segment.values()) or "all", f"{segment.decisions:,}",
                      *(m.format(math.nan if v is None else v) for m, v in zip(shown, values, strict=True)))
    console.print(table)
    alerts = report.alerts
    console.print(f"alerts: {len(alerts)}" + "".join(
        f"\n  {a.kind} {a.subject} ({', '.join(a.segment.values()) or 'all'}) at {a.at}" for a in alerts))


def outcome_line(report: Report) -> str:
    """One line of what became of a replay's records, printed at its end whether on a terminal or not."""
    join = report.join
    line = (f"replay: {join.predictions:,} decisions, {join.matched + join.expired:,} final ({join.matched:,} "
            f"matched, {join.expired:,} expired), {join.pending:,} pending; {join.invalid:,} invalid records")
    if report.invalid_reasons:
        reason, count = next(iter(report.invalid_reasons.items()))  # most frequent first
        line += f" (most often, {count:,}: {reason})"
    return line


def trouble(report: Report) -> str | None:
    """Why a replay's numbers mean little, if they do: nothing final, or most records invalid."""
    join = report.join
    records = join.predictions + join.outcomes + join.duplicates + join.invalid
    if join.invalid * 2 > records:
        return f"{join.invalid:,} of {records:,} records were invalid"
    if join.matched + join.expired == 0:
        return "no decision became final" + (" (the input is empty)" if records == 0 else "")
    return None

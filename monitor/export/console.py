"""Human-readable output for terminals: alerts as they fire, and a closing summary table.

Alerts of one incident (one segment, window and subject: a KPI degradation and the misalignment it makes,
raised by the same window) are one entry that lists its kinds, as they fire and in the summary."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

import msgspec
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from monitor.contract import report
from monitor.contract.report import Report
from monitor.contract.spec import Spec
from monitor.engine.alerts import Alert
from monitor.engine.comparisons import iso
from monitor.engine.early_alerts import EarlyAlert
from monitor.engine.early_windows import age_text

AnyAlert = TypeVar("AnyAlert", bound=report.Alert | report.EarlyAlert)

_STYLE = {"critical": "bold red", "warning": "yellow"}


def print_alert(alert: Alert, console: Console | None = None) -> None:
    console = console or Console()
    style = _STYLE.get(alert.severity, "")
    console.print(f"[{style}]{alert.severity.upper()} {alert.kind}[/] at {iso(alert.at)}")
    console.print(f"  {escape(alert.message)}", highlight=False)  # "[decision] ..." is not markup
    console.print(f"  reproduce: [dim]{escape(alert.replay)}[/]", highlight=False)


class AlertPrinter:
    """Prints alerts as they fire, complete and early; an alert of the incident printed just before is one
    more kind of that entry, not a second entry."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self._last: tuple[object, ...] | None = None

    def complete(self, alert: Alert) -> None:
        key = ("complete", tuple(alert.segment.items()), alert.window.start, alert.window.end, alert.subject)
        if key == self._last:
            self.console.print(f"  also [{_STYLE.get(alert.severity, '')}]{alert.kind}[/] ({alert.severity})")
            return
        self._last = key
        print_alert(alert, self.console)

    def early(self, alert: EarlyAlert) -> None:
        window = alert.window
        key = ("early", alert.status, tuple(alert.segment.items()), window.start, window.end, window.age,
               alert.subject)
        settled = alert.status != "provisional"
        if key == self._last:
            self.console.print(f"  also early {alert.kind}" + (f" {alert.status}" if settled else ""))
            return
        self._last = key
        style = "bold red" if alert.status == "confirmed" else "yellow" if alert.status == "provisional" else "dim"
        title = "PROVISIONAL" if not settled else alert.status.upper()
        self.console.print(f"[{style}]{title} early {alert.kind}[/] at {iso(alert.at)}"
                           f" (read {age_text(alert.age)} after the window ended)")
        self.console.print(f"  {escape(alert.message)}", highlight=False)
        if not settled:
            self.console.print(f"  reproduce: [dim]{escape(alert.replay)}[/]", highlight=False)


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
    complete = _incidents(report.alerts, lambda a: (a.window.start, a.window.end))
    console.print(f"alerts: {len(report.alerts)} in {len(complete)} incidents" + "".join(
        f"\n  {', '.join(a.kind for a in found)} on {found[0].subject} ({_where(found[0].segment)}) at {found[0].at}"
        for found in complete))
    provisional = [a for a in report.early_alerts if a.status == "provisional"]
    settled = {a.alert: a.status for a in report.early_alerts if a.status != "provisional"}
    early = _incidents(provisional, lambda a: (a.window.start, a.window.end, a.age))
    console.print(f"early alerts: {len(provisional)} provisional in {len(early)} incidents" + "".join(
        f"\n  {', '.join(a.kind for a in found)} on {found[0].subject} ({_where(found[0].segment)}), read"
        f" {found[0].age} after {found[0].window.end}: {_settlement(found, settled)}" for found in early))


def _incidents(alerts: Sequence[AnyAlert], window: Callable[[AnyAlert], tuple[str, ...]]) -> list[list[AnyAlert]]:
    """Alerts of one segment, window and subject, in the order of their first."""
    found: dict[tuple[object, ...], list[AnyAlert]] = {}
    for alert in alerts:
        found.setdefault((tuple(alert.segment.items()), *window(alert), alert.subject), []).append(alert)
    return list(found.values())


def _settlement(alerts: Sequence[report.EarlyAlert], settled: dict[str, str]) -> str:
    statuses = [settled.get(a.id, "waiting for the horizon") for a in alerts]
    return statuses[0] if len(set(statuses)) == 1 else ", ".join(f"{a.kind} {s}" for a, s in zip(alerts, statuses,
                                                                                                     strict=True))


def _where(segment: dict[str, str]) -> str:
    return ", ".join(segment.values()) or "all"


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

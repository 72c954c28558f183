"""Human-readable output for terminals: alerts as they fire, and a closing summary table."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from monitor.engine.alerts import Alert, iso
from monitor.engine.monitor import Monitor

_STYLE = {"critical": "bold red", "warning": "yellow"}


def print_alert(alert: Alert, console: Console | None = None) -> None:
    console = console or Console()
    style = _STYLE.get(alert.severity, "")
    console.print(f"[{style}]{alert.severity.upper()} {alert.kind}[/] at {iso(alert.at)}")
    console.print(f"  {alert.message}", highlight=False)
    console.print(f"  reproduce: [dim]{alert.replay}[/]", highlight=False)


def summary_table(monitor: Monitor, console: Console | None = None) -> None:
    console = console or Console()
    counts = monitor.joiner.counts().as_dict()
    console.print("join: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    spec = monitor.spec
    table = Table(title=f"{spec.name}: totals per segment", show_lines=False)
    table.add_column("segment")
    table.add_column("decisions", justify="right")
    shown = [m for m in spec.metrics if m.headline]
    for metric in shown:
        table.add_column(metric.name, justify="right")
    for segment, total in monitor.totals().items():
        labels = monitor.segments.labels(segment)
        table.add_row("/".join(labels.values()) or "all", f"{total['decisions']:,}",
                      *(m.format(total[m.side][m.name]) for m in shown))
    console.print(table)
    console.print(f"alerts: {len(monitor.alerts)}" + "".join(
        f"\n  {a.kind} {a.subject} ({', '.join(a.segment.values()) or 'all'}) at {iso(a.at)}"
        for a in monitor.alerts))

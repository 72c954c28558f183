"""The replay report as one self-contained HTML page: it reads a finished report and draws it.

Sections: what changed (a waterfall of the KPI's change and every explanation's size, per alert
episode and for an asked-for comparison), model metrics and KPIs over time per segment on one
time axis with the alerts marked, join health, totals per segment and the spec used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from monitor.contract.report import (
    SHIFT_SHARE,
    Alert,
    EarlyAlert,
    Explained,
    FeatureDrift,
    Join,
    ModelMetric,
    Report,
    ShiftShare,
)
from monitor.export.html import Page

SHOWN_MODEL = ("roc_auc", "precision", "recall", "log_loss", "business_value", "mae", "rmse")
REFERENCE_WINDOWS = 4  # windows of each age averaged into the reference curve (alerts.reference's default)
MAX_EPISODES = 3  # alert groups drawn in "What changed"; the rest are listed in a table
OVERALL_COLOR = "#1f2328"
ALERT_COLOR = "#cf222e"
PALETTE = ("#0969da", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0a7e8c", "#bc4c00", "#6e7781")
KIND_LABELS = {"segment_mix": "segment mix", "outcome_rate": "outcome rate",
               "value_per_outcome": "value per outcome", "score_drift": "score drift",
               "feature_drift": "feature drift", "model_metric": "model metric"}


def render(report: Report, spec_text: str, source: str = "") -> str:
    """The page of one replay report; `spec_text` is the spec file as written, `source` names the input."""
    decisions = report.segments[0].decisions if report.segments else 0
    page = Page(f"{report.decision}: replay report",
                f"{source} · {decisions:,} final decisions · {len(report.alerts)} alerts")
    _what_changed(page, report)
    _early_alerts(page, report)
    _over_time(page, report)
    if report.outcome_events is not None:
        _by_age(page, report)
    page.section("Join health", "How every record ended up. Matched and expired decisions are final and "
                 "counted in the metrics; pending ones had not reached their horizon when the input ended.")
    page.figure(_join_figure(report.join), height=300)
    if report.invalid_reasons:
        page.table(["invalid records: reason", "records"], list(report.invalid_reasons.items()))
    if report.outcome_events:
        statuses = sorted({s for counts in report.outcome_events.values() for s in counts})
        page.table(["outcome events: type", *statuses],
                   [[kind, *(f"{counts.get(s, 0):,}" for s in statuses)]
                    for kind, counts in report.outcome_events.items()])
    _totals(page, report)
    page.section("Spec").code(spec_text)
    return page.render()


def _what_changed(page: Page, report: Report) -> None:
    asked = report.what_changed
    groups = _episodes(report.alerts)
    if not asked and not groups:
        return
    page.section("What changed", "Left: the KPI's change from the reference to the current period, split into "
                 "traffic mix, outcome rate and value per outcome (the three add up to the change). Right: every "
                 "explanation by size (share of the KPI, relative change of a model metric, or share of traffic "
                 "whose distribution moved).")
    if asked:
        ref, cur = asked.reference, asked.current
        title = f"{ref.start} to {ref.end} against {cur.start} to {cur.end}"
        page.text(f"Asked for: {cur.decisions:,} decisions from {cur.start} to {cur.end}, against "
                  f"{ref.decisions:,} from {ref.start} to {ref.end}.")
        page.figure(_explained(asked.explanations, title), height=380)
    for alerts in groups[:MAX_EPISODES]:
        first = alerts[0]
        kinds = ", ".join(a.kind for a in alerts)
        title = f"{_where(first.segment)}: {kinds} on {first.subject} at {first.at}"
        page.figure(_explained(first.explanations, title), height=380)
    if len(groups) > MAX_EPISODES:
        page.table(["more alerts", "subject", "at", "top explanation"],
                   [[f"{_where(g[0].segment)}: {', '.join(a.kind for a in g)}", g[0].subject, g[0].at,
                     g[0].explanations[0].summary if g[0].explanations else "-"] for g in groups[MAX_EPISODES:]])


def _early_alerts(page: Page, report: Report) -> None:
    """One row per early incident: the provisional alerts one reading raised on one subject, and how each ended."""
    provisional = [a for a in report.early_alerts if a.status == "provisional"]
    if not provisional:
        return
    settled = {a.alert: a for a in report.early_alerts if a.status != "provisional"}
    incidents: dict[tuple[Any, ...], list[EarlyAlert]] = {}
    for alert in provisional:
        key = (tuple(alert.segment.items()), alert.window.start, alert.window.end, alert.age, alert.subject)
        incidents.setdefault(key, []).append(alert)
    page.section("Early alerts", "Windows read before their outcomes were all in (at the age shown), against the "
                 "segment's reference read at the same age: provisional when raised, then confirmed or withdrawn by "
                 "the final numbers at the horizon. Alerts one reading raised on one subject are one row.")
    rows = []
    for alerts in incidents.values():
        first = alerts[0]
        change = next((c for c in [*first.kpis, *first.metrics] if c.name == first.subject), None)
        ends = [_ended(settled.get(a.id)) for a in alerts]
        ended = ends[0] if len(set(ends)) == 1 else "; ".join(f"{a.kind}: {e}" for a, e in zip(alerts, ends,
                                                                                               strict=True))
        rows.append([_where(first.segment), ", ".join(a.kind for a in alerts), first.subject,
                     "-" if change is None else f"{_num(change.reference)} → {_num(change.current)}"
                     f" ({change.change:+.0%}, p={change.p_value:.2g})",
                     f"{first.age} after {first.window.end}", f"{first.known['decisions']:,} decisions,"
                     f" {first.known['matched']:,} outcomes", first.at, ended])
    page.table(["segment", "kinds", "subject", "change", "read", "known then", "raised at", "final numbers"], rows)


def _ended(settlement: EarlyAlert | None) -> str:
    return "waiting for the horizon" if settlement is None else f"{settlement.status} at {settlement.at}"


def _episodes(alerts: Sequence[Alert]) -> list[list[Alert]]:
    """Alerts of one segment and window share their explanations: one group each, in report order."""
    groups: dict[tuple[Any, ...], list[Alert]] = {}
    for alert in alerts:
        key = (tuple(alert.segment.items()), alert.window.start, alert.window.end)
        groups.setdefault(key, []).append(alert)
    return list(groups.values())


def _explained(explanations: Sequence[Explained], title: str) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, column_widths=[0.45, 0.55], horizontal_spacing=0.28,
                        subplot_titles=("KPI change, by part", "Explanations, by size"))
    parts = [e for e in explanations if isinstance(e, ShiftShare)]
    if parts:
        lead = parts[0].kpi  # the KPI whose part is the largest
        steps = [next(e for e in parts if e.kpi == lead and isinstance(e, kind)) for kind in SHIFT_SHARE]
        ref, cur = steps[0].reference, steps[0].current
        fig.add_trace(go.Waterfall(
            x=[f"{lead}<br>reference", *(_kind_label(e) for e in steps), f"{lead}<br>current"],
            y=[ref, *(e.contribution for e in steps), cur],
            measure=["absolute", "relative", "relative", "relative", "total"],
            text=[f"{ref:.4g}", *(f"{e.contribution:+.3g}" for e in steps), f"{cur:.4g}"],
            textposition="outside", connector={"line": {"color": "#8c959f"}},
            decreasing={"marker": {"color": ALERT_COLOR}}, increasing={"marker": {"color": "#1a7f37"}},
            totals={"marker": {"color": "#59636e"}}, showlegend=False, hoverinfo="x+y"), row=1, col=1)
        fig.update_yaxes(title_text=f"{lead} per decision", row=1, col=1, rangemode="tozero")
    shown = list(reversed(explanations[:10]))
    fig.add_trace(go.Bar(
        x=[100 * e.size for e in shown], y=[_label(e) for e in shown], orientation="h",
        marker={"color": [_color(e) for e in shown]}, text=[f"{100 * e.size:.1f}%" for e in shown],
        textposition="outside", cliponaxis=False,
        hovertext=[e.summary for e in shown], hoverinfo="text", showlegend=False), row=1, col=2)
    fig.update_xaxes(title_text="size, %", row=1, col=2)
    fig.update_layout(title={"text": title, "font": {"size": 14}}, margin={"t": 70, "b": 50, "l": 60, "r": 24})
    return fig


def _color(e: Explained) -> str:
    """Shift-share parts by sign (red took the KPI down); model metrics blue; drifts purple."""
    if isinstance(e, ShiftShare):
        return ALERT_COLOR if e.contribution < 0 else "#1a7f37"
    return "#0969da" if isinstance(e, ModelMetric) else "#8250df"


def _kind_label(e: Explained) -> str:
    return KIND_LABELS[msgspec.inspect.type_info(type(e)).tag]  # type: ignore[attr-defined]


def _label(e: Explained) -> str:
    what = (e.kpi if isinstance(e, ShiftShare) else e.metric if isinstance(e, ModelMetric)
            else e.feature if isinstance(e, FeatureDrift) else "")
    return f"{_kind_label(e)}{': ' + what if what else ''}"


def _over_time(page: Page, report: Report) -> None:
    segments = [s for s in report.segments if s.timeline]
    if not segments:
        return
    first = segments[0].timeline[0]
    rows = [("model", m) for m in SHOWN_MODEL if m in first.model] + [("kpi", k) for k in first.kpi]
    fig = make_subplots(rows=len(rows), cols=1, shared_xaxes=True, vertical_spacing=0.025,
                        subplot_titles=[f"{name} ({'model' if side == 'model' else 'KPI'})" for side, name in rows])
    for i, segment in enumerate(segments):
        where = _where(segment.segment)
        overall = not segment.segment
        line = {"color": OVERALL_COLOR if overall else PALETTE[(i - 1) % len(PALETTE)],
                "width": 2.5 if overall else 1.2}
        ends = [w.end for w in segment.timeline]
        for row, (side, name) in enumerate(rows, start=1):
            fig.add_trace(go.Scatter(
                x=ends, y=[(w.model if side == "model" else w.kpi).get(name) for w in segment.timeline],
                mode="lines", name=where, line=line,
                legendgroup=where, showlegend=row == 1, opacity=1.0 if overall else 0.75,
                hovertemplate=f"{where}<br>{name} %{{y:.4g}}<br>window to %{{x}}<extra></extra>"), row=row, col=1)
    for alert in report.alerts:
        at_row = next((r for r, (_, name) in enumerate(rows, start=1) if name == alert.subject), None)
        if at_row is None:
            continue
        current = next((c.current for c in alert.metrics + alert.kpis if c.name == alert.subject), None)
        fig.add_trace(go.Scatter(
            x=[alert.window.end], y=[current], mode="markers", name="alert", legendgroup="alert",
            showlegend=False, marker={"symbol": "x", "size": 11, "color": ALERT_COLOR, "line": {"width": 1}},
            hovertext=alert.message[:300], hoverinfo="text"), row=at_row, col=1)
    for at in sorted({a.window.end for a in report.alerts if not a.segment}):
        fig.add_vline(x=at, line={"color": ALERT_COLOR, "dash": "dot", "width": 1})
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name="alert (its window's end)",
                             marker={"symbol": "x", "size": 11, "color": ALERT_COLOR}), row=1, col=1)
    fig.update_xaxes(title_text="end of window (decision time, UTC)", row=len(rows), col=1)
    height = 150 * len(rows) + 160
    fig.update_layout(legend={"orientation": "h", "y": 1 + 30 / height, "yanchor": "bottom", "x": 0},
                      margin={"t": 120, "b": 50, "l": 60, "r": 24})
    page.section("Model metrics and KPIs over time", "One point per complete window, at its end, per segment "
                 "(all decisions in black). A red × marks an alert on its subject; dotted lines mark alerts on all "
                 "decisions. Click a legend entry to hide a segment.")
    page.figure(fig, height=height)


def _by_age(page: Page, report: Report) -> None:
    """Each KPI as it accumulates with the age of the decisions (outcome events): the reference windows
    against the latest, per segment, like cohort curves."""
    segments = [s for s in report.segments if s.early][:1 + len(PALETTE)]
    if not segments:
        return
    kpis = list(segments[0].early[0].kpi)
    fig = make_subplots(rows=1, cols=len(kpis), subplot_titles=kpis, horizontal_spacing=0.08)
    for i, segment in enumerate(segments):
        where = _where(segment.segment)
        color = OVERALL_COLOR if not segment.segment else PALETTE[(i - 1) % len(PALETTE)]
        by_age: dict[str, list[Any]] = {}
        for reading in segment.early:
            by_age.setdefault(reading.age, []).append(reading)
        ages = list(by_age)
        for col, name in enumerate(kpis, start=1):
            for label, first, last, dash in (("reference", 0, REFERENCE_WINDOWS, "dot"), ("latest", -1, None, "solid")):
                values = [[r.kpi[name] for r in by_age[a][first:last] if r.kpi.get(name) is not None] for a in ages]
                fig.add_trace(go.Scatter(
                    x=ages, y=[sum(v) / len(v) if v else None for v in values], mode="lines+markers",
                    name=f"{where}, {label}", legendgroup=f"{where}, {label}", showlegend=col == 1,
                    line={"color": color, "dash": dash, "width": 2.2 if not segment.segment else 1.2},
                    hovertemplate=f"{where} ({label})<br>{name} at %{{x}}: %{{y:.4g}}<extra></extra>"),
                    row=1, col=col)
    fig.update_xaxes(title_text="age of the decisions")
    fig.update_layout(legend={"orientation": "h", "y": -0.25}, margin={"t": 50, "b": 110, "l": 60, "r": 24})
    page.section("KPIs by age", "With outcome events a decision's outcome grows as its events come (purchases,"
                 " refunds). Each KPI read at each age: dotted, the first windows (the reference); solid, the"
                 " latest window. A latest curve below its reference at the same ages is a business that does worse"
                 " for decisions of the same age.")
    page.figure(fig, height=420)


def _join_figure(join: Join) -> go.Figure:
    names = ["matched", "expired", "late", "duplicates", "orphans", "invalid", "pending"]
    colors = ["#1a7f37", "#59636e", "#9a6700", "#8c959f", "#bc4c00", ALERT_COLOR, "#0969da"]
    counts = [getattr(join, n) for n in names]
    fig = go.Figure(go.Bar(x=names, y=counts, marker={"color": colors},
                           text=[f"{n:,}" for n in counts], textposition="outside", cliponaxis=False))
    # Log scale: the few late, orphan and invalid records matter, and would vanish beside the matched ones.
    fig.update_layout(yaxis={"title": "decisions or records (log scale)", "type": "log"},
                      margin={"t": 60, "b": 40, "l": 60, "r": 24},
                      title={"text": f"{join.predictions:,} predictions, {join.outcomes:,} outcomes",
                             "font": {"size": 14}})
    return fig


def _totals(page: Page, report: Report) -> None:
    segments = report.segments
    if not segments:
        return
    model = [m for m in SHOWN_MODEL if m in segments[0].model]
    kpis = list(segments[0].kpi)
    page.section("Totals per segment", "Over the whole replay.")
    page.table(["segment", "decisions", *model, *kpis],
               [[_where(s.segment), f"{s.decisions:,}", *(_num(s.model.get(m)) for m in model),
                 *(_num(s.kpi.get(k)) for k in kpis)] for s in segments])


def _where(segment: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in segment.items()) or "all decisions"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"

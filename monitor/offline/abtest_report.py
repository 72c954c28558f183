"""The A/B report page (`abtest.html`): it reads the result of `abtest.analyse` and draws it."""

from __future__ import annotations

import itertools
from typing import Any

import plotly.graph_objects as go

from monitor.export.html import Page, dumps

CONTROL, TREATMENT = "#6e7781", "#0969da"
TESTS = ("welch", "z_test", "mann_whitney", "bootstrap", "sequential")


def render(result: dict[str, Any]) -> str:
    control, treatment = result["control"], result["treatment"]
    units = ", ".join(f"{v}: {n:,}" for v, n in result["units"].items())
    page = Page(f"A/B test: {treatment} against {control}",
                f"Units per arm ({result['variant_field']}): {units}. Intervals at 95%; bootstrap with "
                f"{result['bootstrap']['resamples']:,} resamples (seed {result['bootstrap']['seed']}).")
    srm = result["srm"]
    page.section("Sample ratio", "χ² test of the arm sizes against the planned split; flagged below "
                 f"p = {srm['alpha']:g}.")
    if srm["flagged"]:
        page.text(f"SAMPLE RATIO MISMATCH (p = {srm['p_value']:.2g}): the arms are not the planned split. "
                  "Assignment or logging is broken; no number on this page can be trusted until it is fixed.", "bad")
    else:
        page.text(f"No sample ratio mismatch (p = {srm['p_value']:.3g}).", "good")
    page.figure(_srm(result), height=260)
    page.section("Lift", "Relative change of each KPI, treatment against control, with its 95% interval "
                 "(bootstrap-t; CUPED where a covariate was given).")
    rows = len(result["kpis"]) * (2 if any("cuped" in k for k in result["kpis"].values()) else 1)
    page.figure(_lift(result), height=120 + 50 * rows)
    page.table(["KPI", control, treatment, "lift", "95% interval", "Welch p", "z-test p", "Mann–Whitney p",
                "bootstrap p", "sequential p"], _rows(result))
    for name, kpi in result["kpis"].items():
        page.section(f"{name}", "Per-arm mean with its 95% interval; the peeking-safe (mSPRT) reading as the test "
                     "ran: its p-value only falls, and its confidence sequence holds at every look.")
        page.figure(_arms(name, kpi, control, treatment), height=300)
        page.figure(_sequential(name, kpi), height=420)
        if "distribution" in kpi:
            page.figure(_distribution(name, kpi["distribution"], control, treatment), height=320)
        if "cuped" in kpi:
            c = kpi["cuped"]
            page.text(f"CUPED on {c['covariate']}: θ = {c['theta']:.4g}, variance reduced by "
                      f"{c['variance_reduction']:.1%}; lift {c['lift']['relative']:+.2%} "
                      f"[{c['lift']['ci'][0]:+.2%}, {c['lift']['ci'][1]:+.2%}], "
                      f"Welch p = {c['tests']['welch']['p_value']:.3g}.")
    page.section("Every number").code(dumps({k: v for k, v in result.items() if k != "kpis"}))
    return page.render()


def _srm(result: dict[str, Any]) -> go.Figure:
    units, share = result["units"], result["srm"]["expected_share"]
    arms = sorted(set(units) | set(share))
    total = sum(units.get(a, 0) for a in share)  # the planned arms' units, spread as planned
    fig = go.Figure([
        go.Bar(name="observed", x=arms, y=[units.get(a, 0) for a in arms], marker_color=TREATMENT),
        go.Bar(name="planned", x=arms, y=[total * share.get(a, 0.0) for a in arms], marker_color="#d0d7de"),
    ])
    return fig.update_layout(barmode="group", yaxis_title="units", xaxis_title=result["variant_field"])


def _lift(result: dict[str, Any]) -> go.Figure:
    names, mid, lo, hi, cuped = [], [], [], [], []
    for name, kpi in result["kpis"].items():
        names.append(name)
        lift = kpi["lift"]
        mid.append(100 * lift["relative"])
        lo.append(100 * (lift["relative"] - lift["ci"][0]))
        hi.append(100 * (lift["ci"][1] - lift["relative"]))
        cuped.append(kpi.get("cuped"))
    fig = go.Figure(go.Scatter(x=mid, y=names, mode="markers", name="lift", marker={"size": 10, "color": TREATMENT},
                               error_x={"type": "data", "array": hi, "arrayminus": lo}))
    with_cuped = [(n, c) for n, c in zip(names, cuped, strict=True) if c is not None]
    if with_cuped:
        rel = [100 * c["lift"]["relative"] for _, c in with_cuped]
        fig.add_trace(go.Scatter(
            x=rel, y=[f"{n} (CUPED)" for n, _ in with_cuped], mode="markers", name="lift with CUPED",
            marker={"size": 10, "symbol": "diamond", "color": "#8250df"},
            error_x={"type": "data", "array": [100 * c["lift"]["ci"][1] - r for (_, c), r in zip(with_cuped, rel,
                                                                                              strict=True)],
                     "arrayminus": [r - 100 * c["lift"]["ci"][0] for (_, c), r in zip(with_cuped, rel, strict=True)]}))
    fig.add_vline(x=0, line_dash="dot", line_color="#59636e")
    return fig.update_layout(xaxis_title="relative lift (%)", yaxis={"autorange": "reversed"})


def _rows(result: dict[str, Any]) -> list[list[Any]]:
    control, treatment = result["control"], result["treatment"]
    rows = []
    for name, kpi in result["kpis"].items():
        lift, tests = kpi["lift"], kpi["tests"]
        rows.append([name, kpi["arms"][control]["mean"], kpi["arms"][treatment]["mean"], f"{lift['relative']:+.2%}",
                     f"[{lift['ci'][0]:+.2%}, {lift['ci'][1]:+.2%}]",
                     *(_p(tests[t]["p_value"], result) if t in tests else "—" for t in TESTS)])
    return rows


def _p(p: float, result: dict[str, Any]) -> str:
    floor = 1 / result["bootstrap"]["resamples"]
    return f"< {floor:g}" if p < floor else f"{p:.3g}"


def _arms(name: str, kpi: dict[str, Any], control: str, treatment: str) -> go.Figure:
    fig = go.Figure()
    for arm, color in ((control, CONTROL), (treatment, TREATMENT)):
        found = kpi["arms"][arm]
        fig.add_trace(go.Bar(x=[arm], y=[found["mean"]], name=f"{arm} (n = {found['n']:,})", marker_color=color,
                             error_y={"type": "data", "array": [found["ci"][1] - found["mean"]],
                                      "arrayminus": [found["mean"] - found["ci"][0]]}))
    return fig.update_layout(yaxis_title=f"{name} per unit", title=f"{name}: mean per arm", showlegend=True)


def _sequential(name: str, kpi: dict[str, Any]) -> go.Figure:
    from plotly.subplots import make_subplots

    path = kpi["path"]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("always-valid p-value", "difference, treatment − control, with its "
                                        "confidence sequence"))
    fig.add_trace(go.Scatter(x=path["ts"], y=path["p_value"], name="mSPRT p-value", line={"color": TREATMENT}), 1, 1)
    fig.add_hline(y=0.05, line_dash="dot", line_color="#cf222e", row=1, col=1)
    fig.add_trace(go.Scatter(x=path["ts"], y=path["ci_high"], line={"width": 0}, showlegend=False,
                             hoverinfo="skip"), 2, 1)
    fig.add_trace(go.Scatter(x=path["ts"], y=path["ci_low"], fill="tonexty", fillcolor="rgba(9,105,218,0.15)",
                             line={"width": 0}, name="95% confidence sequence"), 2, 1)
    fig.add_trace(go.Scatter(x=path["ts"], y=path["diff"], name="difference", line={"color": "#1f2328"}), 2, 1)
    fig.add_hline(y=0, line_dash="dot", line_color="#59636e", row=2, col=1)
    fig.update_yaxes(title_text="p", type="log", dtick=1, row=1, col=1)
    # The first looks' intervals are very wide: frame the plot on the later part of the test.
    later = [(lo, hi) for lo, hi in zip(path["ci_low"], path["ci_high"], strict=True)
             if lo is not None and hi is not None][len(path["ts"]) // 10:]
    if later:
        low, high = min(lo for lo, _ in later), max(hi for _, hi in later)
        pad = 0.15 * (high - low)
        fig.update_yaxes(range=[low - pad, high + pad], row=2, col=1)
    fig.update_yaxes(title_text=f"Δ {name}", row=2, col=1)
    fig.update_xaxes(title_text="decision time (UTC)", row=2, col=1)
    return fig.update_layout(margin={"t": 40, "b": 40, "l": 70, "r": 24})


def _distribution(name: str, found: dict[str, Any], control: str, treatment: str) -> go.Figure:
    edges = found["edges"]
    centers = [(a + b) / 2 for a, b in itertools.pairwise(edges)]
    fig = go.Figure()
    for arm, color in ((control, CONTROL), (treatment, TREATMENT)):
        counts = found["arms"][arm]["counts"]
        total = sum(counts) or 1
        fig.add_trace(go.Bar(x=centers, y=[c / total for c in counts], marker_color=color, opacity=0.6,
                             name=f"{arm} ({found['arms'][arm]['zeros']:.0%} zeros)"))
    return fig.update_layout(barmode="overlay", bargap=0, title=f"{name}: the units that are not zero",
                             xaxis_title=name, yaxis_title="share of non-zero units")

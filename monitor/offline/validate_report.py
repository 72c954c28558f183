"""The validation page (`validate.html`): it reads the result of `validate.validate` and draws it."""

from __future__ import annotations

import itertools
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from monitor.export.html import Page, dumps
from monitor.offline.validate import CANDIDATE, METRICS

COLORS = {CANDIDATE: "#0969da", "prior rate": "#8c959f", "one-feature rule": "#bf8700", "logistic (River)": "#8250df"}
NAMES = {"business_value": "business value / decision", "roc_auc": "ROC AUC", "pr_auc": "PR AUC",
         "log_loss": "log loss", "brier": "Brier score", "ece": "expected calibration error",
         "precision": "precision", "recall": "recall"}


def render(result: dict[str, Any]) -> str:
    rows, split, boot = result["rows"], result["split"], result["bootstrap"]
    page = Page(f"Validation: {result['decision']}",
                f"{rows['test']:,} test decisions from {split['test_from']} to {split['test_to']}; baselines "
                f"trained on the {rows['train']:,} earlier ones. Intervals: {boot['level']:.0%} percentile, "
                f"{boot['resamples']} bootstrap resamples (seed {boot['seed']}), the same for every model.")
    page.section("Verdict")
    comparison = result["comparison"]
    key = NAMES[comparison["metric"]]
    page.text(("The candidate beats every baseline on " if comparison["beats_all"]
               else "The candidate does NOT clearly beat every baseline on ") + key + ".",
              "good" if comparison["beats_all"] else "bad")
    page.table(["baseline", f"candidate − baseline ({key})", "95% interval", "candidate ahead in"],
               [[name, c["difference"], f"[{c['ci'][0]:.4g}, {c['ci'][1]:.4g}]", f"{c['share_ahead']:.1%}"]
                for name, c in comparison["against"].items()])
    page.section("Metrics", f"Every metric on the test decisions. Expected calibration error over "
                 f"{result['ece_bins']} equal-width score bins; log loss clips probabilities to [1e-15, 1 − 1e-15].")
    models = result["models"]
    metrics = [m for m in METRICS if m in models[CANDIDATE]["metrics"]]
    page.table(["model", *(NAMES[m] for m in metrics)],
               [[name, *(_with_ci(model["metrics"][m]) for m in metrics)] for name, model in models.items()])
    page.table(["model", "how it decides"], [[name, model["description"]] for name, model in models.items()])
    page.figure(_metric_grid(models, metrics), height=460)
    page.section("Ranking", "How well each model orders decisions, whatever its threshold.")
    page.figure(_roc(result), height=420)
    page.figure(_pr(result), height=420)
    page.figure(_gain(result), height=380)
    page.section("Calibration", "Observed positive rate against mean score, per score bin: on the diagonal, a "
                 "score of 0.3 means a 30% chance.")
    page.figure(_reliability(result), height=420)
    thresholds = result.get("thresholds")
    if thresholds is not None:
        page.section("Business value by threshold", "Value per decision on the test decisions if the model decided "
                     "score ≥ t, from the spec's value matrix.")
        page.text(f"The spec's threshold {thresholds['spec']:g} gives {thresholds['value_at_spec']:.4g} per decision; "
                  f"{thresholds['value_optimal']:g} would give {thresholds['value_at_optimal']:.4g}. Chosen on these "
                  "decisions, the optimum is optimistic: confirm it on later data before changing the spec.")
        page.figure(_value(thresholds, result["value_matrix"]), height=380)
    page.section("Scores", "The candidate's score distribution per label and per segment (test decisions).")
    page.figure(_by_label(result["scores"]), height=340)
    for column, found in result["scores"]["by_segment"].items():
        page.figure(_by_segment(column, found), height=320)
    shown = {k: v for k, v in result.items() if k not in ("curves", "scores", "reliability", "thresholds")}
    if thresholds is not None:
        shown["thresholds"] = {k: v for k, v in thresholds.items() if k != "curve"}
    page.section("Every number", "The curves are in validate.json.").code(dumps(shown))
    return page.render()


def _with_ci(found: dict[str, Any]) -> str:
    if found["value"] != found["value"]:  # NaN: precision of a model that never decides positive
        return "n/a"
    return f"{found['value']:.4g} [{found['ci'][0]:.4g}, {found['ci'][1]:.4g}]"


def _color(name: str) -> str:
    return COLORS.get(name, "#57606a")


def _metric_grid(models: dict[str, Any], metrics: list[str]) -> go.Figure:
    cols = 4
    fig = make_subplots(rows=(len(metrics) + cols - 1) // cols, cols=cols, vertical_spacing=0.2,
                        horizontal_spacing=0.07, subplot_titles=[NAMES[m] for m in metrics])
    for i, metric in enumerate(metrics):
        row, col = i // cols + 1, i % cols + 1
        for name, model in models.items():
            found = model["metrics"][metric]
            fig.add_trace(go.Scatter(
                x=[found["value"]], y=[name], mode="markers", marker={"color": _color(name), "size": 9},
                error_x={"type": "data", "array": [found["ci"][1] - found["value"]],
                         "arrayminus": [found["value"] - found["ci"][0]]}, showlegend=False,
                name=name), row, col)
        fig.update_yaxes(autorange="reversed", showticklabels=col == 1, row=row, col=col)
    return fig.update_layout(margin={"t": 40, "b": 30, "l": 120, "r": 20}, title_text="")


def _roc(result: dict[str, Any]) -> go.Figure:
    fig = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "#afb8c1"},
                               name="chance"))
    for name, curve in result["curves"].items():
        auc = result["models"][name]["metrics"]["roc_auc"]["value"]
        fig.add_trace(go.Scatter(x=curve["fpr"], y=curve["tpr"], mode="lines", name=f"{name} (AUC {auc:.3f})",
                                 line={"color": _color(name)}))
    return fig.update_layout(title="ROC curve", xaxis_title="false positive rate", yaxis_title="true positive rate")


def _pr(result: dict[str, Any]) -> go.Figure:
    fig = go.Figure()
    for name, curve in result["curves"].items():
        ap = result["models"][name]["metrics"]["pr_auc"]["value"]
        fig.add_trace(go.Scatter(x=curve["recall"], y=curve["precision"], mode="lines",
                                 name=f"{name} (AP {ap:.3f})", line={"color": _color(name)}))
    return fig.update_layout(title="Precision–recall curve", xaxis_title="recall", yaxis_title="precision",
                             yaxis_range=[0, 1.02])


def _gain(result: dict[str, Any]) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("cumulative gain", "lift"), horizontal_spacing=0.1)
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "#afb8c1"},
                             name="random"), 1, 1)
    for name, curve in result["curves"].items():
        fig.add_trace(go.Scatter(x=curve["targeted"], y=curve["gain"], mode="lines", name=name,
                                 line={"color": _color(name)}), 1, 1)
        fig.add_trace(go.Scatter(x=curve["targeted"], y=curve["lift"], mode="lines", name=name, showlegend=False,
                                 line={"color": _color(name)}), 1, 2)
    fig.add_hline(y=1, line_dash="dot", line_color="#afb8c1", row=1, col=2)
    fig.update_xaxes(title_text="share of decisions targeted, highest scores first")
    fig.update_yaxes(title_text="share of positives found", row=1, col=1)
    fig.update_yaxes(title_text="positive rate ÷ overall rate", row=1, col=2)
    return fig


def _reliability(result: dict[str, Any]) -> go.Figure:
    fig = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "#afb8c1"},
                               name="perfectly calibrated"))
    for name, found in result["reliability"].items():
        if len(found["score"]) < 2:  # one bin (the prior rate): a point, not a curve
            continue
        ece = result["models"][name]["metrics"]["ece"]["value"]
        most = max(found["decisions"])
        sizes = [4 + 14 * (n / most) ** 0.5 for n in found["decisions"]]  # a bin of few decisions says little
        fig.add_trace(go.Scatter(x=found["score"], y=found["rate"], mode="lines+markers",
                                 name=f"{name} (ECE {ece:.3f})", line={"color": _color(name)},
                                 marker={"size": sizes},
                                 customdata=found["decisions"],
                                 hovertemplate="mean score %{x:.3f}<br>positive rate %{y:.3f}<br>"
                                               "%{customdata} decisions"))
    return fig.update_layout(title="Reliability diagram (marker area: decisions in the bin)",
                             xaxis_title="mean score in bin",
                             yaxis_title="observed positive rate", xaxis_range=[0, 1], yaxis_range=[0, 1])


def _value(thresholds: dict[str, Any], worth: dict[str, float]) -> go.Figure:
    curve = thresholds["curve"]
    fig = go.Figure(go.Scatter(x=curve["threshold"], y=curve["value"], mode="lines", name="value per decision",
                               line={"color": _color(CANDIDATE)}))
    fig.add_trace(go.Scatter(x=[thresholds["spec"]], y=[thresholds["value_at_spec"]], mode="markers+text",
                             marker={"size": 11, "color": "#cf222e"}, text=[f"spec {thresholds['spec']:g}"],
                             textposition="top right", name="the spec's threshold"))
    fig.add_trace(go.Scatter(x=[thresholds["value_optimal"]], y=[thresholds["value_at_optimal"]],
                             mode="markers+text", marker={"size": 11, "color": "#1a7f37", "symbol": "star"},
                             text=[f"best {thresholds['value_optimal']:g}"], textposition="top right",
                             name="value-optimal threshold"))
    cells = ", ".join(f"{k} {v:g}" for k, v in worth.items())
    return fig.update_layout(title=f"Value per decision by threshold ({cells})", xaxis_title="threshold t",
                             yaxis_title="value per decision")


def _by_label(found: dict[str, Any]) -> go.Figure:
    edges = found["edges"]
    centers = [(a + b) / 2 for a, b in itertools.pairwise(edges)]
    fig = go.Figure()
    for label, color in (("0", "#8c959f"), ("1", "#0969da")):
        counts = found["by_label"][label]
        total = sum(counts) or 1
        fig.add_trace(go.Bar(x=centers, y=[c / total for c in counts], name=f"label {label} ({total:,})",
                             marker_color=color, opacity=0.6))
    return fig.update_layout(barmode="overlay", bargap=0, title="Score distribution per label",
                             xaxis_title="score", yaxis_title="share of decisions with this label")


def _by_segment(column: str, found: dict[str, Any]) -> go.Figure:
    labels = [f"{v} ({n:,})" for v, n in zip(found["values"], found["decisions"], strict=True)]
    fig = go.Figure(go.Box(x=labels, q1=found["q25"], median=found["median"], q3=found["q75"],
                           lowerfence=found["q05"], upperfence=found["q95"], marker_color=_color(CANDIDATE),
                           name=column, showlegend=False))
    return fig.update_layout(title=f"Scores per {column} (box: quartiles; whiskers: 5th and 95th percentiles)",
                             xaxis_title=column, yaxis_title="score")

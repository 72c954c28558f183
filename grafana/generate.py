"""Write the monitor's Grafana dashboards as JSON.

    python grafana/generate.py [--out grafana/dashboards] [--spec monitor/checkout.toml]

The dashboards are built with Grafana Labs' `grafana-foundation-sdk` and read only the metrics contract
(docs/metrics-contract.md). No query names a decision: each reads `$decision`, a variable filled from
`label_values(...)`. The segment labels come from the spec's `segments.by` (the bundled example's:
`variant`, `segment_country`); run this again with `--spec` for a spec sliced by other fields.
`tests/test_dashboards.py` checks that the committed JSON is this script's output, and runs every query
through a real Prometheus scraping a real worker.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import prometheus as prom_model

from monitor.contract.spec import load
from monitor.export.prometheus import label_name

ROOT = Path(__file__).resolve().parent.parent
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
JOB = 'job="monitor"'  # the Prometheus job that scrapes the workers (prometheus/prometheus.yml)
D = 'decision="$decision"'
OVERALL_NAME = "all decisions"
AXIS_WIDTH = 64  # the same on every graph, so panels stacked one above the other share their time axis


class Layout:
    """The segment labels of one spec, and the PromQL pieces built from them."""

    def __init__(self, by: list[str]) -> None:
        self.by = by

    def overall(self) -> str:
        """Matchers of the overall segment: every by label empty."""
        return ", ".join(f'{label}=""' for label in self.by)

    def chosen(self) -> str:
        """Matchers of the segments picked in the drill-down's variables."""
        return ", ".join(f'{label}=~"${label}"' for label in self.by)

    def legend(self) -> str:
        return " / ".join(f"{{{{{label}}}}}" for label in self.by) or OVERALL_NAME

    def named(self, expr: str) -> str:
        """`expr` with the overall segment's first by label reading "all decisions", so its legend says so."""
        if not self.by:
            return expr
        first = self.by[0]
        return f'label_replace({expr}, "{first}", "{OVERALL_NAME}", "{first}", "")'


# Building blocks -------------------------------------------------------------------------------------------


def query(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False,
          rows: bool = False) -> prometheus.Dataquery:
    """A PromQL target: a range query for graphs, an instant one for stats, `rows` for tables."""
    q = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    if legend:
        q = q.legend_format(legend)
    if rows:
        return q.instant().format(prom_model.PromQueryFormat.TABLE)
    return q.instant() if instant else q.range()


def legend(calcs: tuple[str, ...] = ("lastNotNull",)) -> common_b.VizLegendOptions:
    return (common_b.VizLegendOptions().show_legend(True).display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM).calcs(list(calcs)))


def tooltip() -> common_b.VizTooltipOptions:
    return common_b.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING)


def steps(*pairs: tuple[float | None, str]) -> dash.ThresholdsConfig:
    return (dash.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE)
            .steps([model.Threshold(value=value, color=color) for value, color in pairs]))


def graph(title: str, description: str, unit: str, *queries: prometheus.Dataquery,
          width: int = 12, decimals: int | None = None) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).datasource(DATASOURCE).unit(unit)
             .span(width).height(10).legend(legend()).tooltip(tooltip()).line_width(1).fill_opacity(0)
             .span_nulls(False).axis_width(AXIS_WIDTH))
    if decimals is not None:
        panel = panel.decimals(decimals)
    for q in queries:
        panel = panel.with_target(q)
    return panel


def counts(title: str, description: str, expr: str, legend_format: str, width: int = 6) -> stat.Panel:
    return (stat.Panel().title(title).description(description).datasource(DATASOURCE).unit("short").decimals(0)
            .span(width).height(5).with_target(query(expr, legend_format, instant=True))
            .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
            .color_mode(common.BigValueColorMode.BACKGROUND).graph_mode(common.BigValueGraphMode.NONE)
            .thresholds(steps((None, "green"), (1, "red"))))


def label_variable(name: str, label: str, series: str, *, multi: bool = False,
                   description: str = "") -> dash.QueryVariable:
    """A variable offering the values of `name` that `series` carries, from label_values(...)."""
    variable = (dash.QueryVariable(name).label(label).description(description).datasource(DATASOURCE)
                .query(f"label_values({series}, {name})").refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
                .sort(model.VariableSort.ALPHABETICAL_ASC))
    if multi:  # "All", the default, takes every segment, the overall one (all labels "") included
        variable = (variable.multi(True).include_all(True).all_value(".*")
                    .current(model.VariableOption(selected=True, text=["All"], value=["$__all"])))
    return variable


def board(uid: str, title: str, description: str, *variables: dash.QueryVariable) -> dash.Dashboard:
    built = (dash.Dashboard(title).uid(uid).description(description).tags(["monitor"]).editable()
             .tooltip(model.DashboardCursorSync.CROSSHAIR).time("now-6h", "now").refresh("30s").timezone("browser")
             .link(dash.DashboardLink("Monitor dashboards").type(model.DashboardLinkType.DASHBOARDS)
                   .tags(["monitor"]).as_dropdown(True).include_vars(True).keep_time(True))
             .with_variable(dash.DatasourceVariable("datasource").label("Data source").type("prometheus"))
             .with_variable(label_variable("decision", "Decision", "monitor_records_total",
                                           description="The spec's decision.name: one decision per worker group.")))
    for variable in variables:
        built = built.with_variable(variable)
    return built


# The four dashboards ---------------------------------------------------------------------------------------


def model_vs_business(layout: Layout) -> dash.Dashboard:
    overall = f"{D}, {layout.overall()}"
    alerts = (dash.AnnotationQuery().name("Alerts sent").datasource(DATASOURCE).enable(True).icon_color("red")
              .expr(f"changes(monitor_alerts_total{{{D}}}[$__rate_interval]) > 0"))
    return (board("monitor-model-vs-business", "Model vs business",
                  "Model metrics and business KPIs side by side, per segment, on one time axis; alerts as marks.",
                  label_variable("metric", "Model metric", f"monitor_model_metric{{{D}}}"),
                  label_variable("kpi", "KPI", f"monitor_kpi{{{D}}}"))
            .annotation(alerts)
            .with_row(dash.Row("Alerts"))
            .with_panel(counts(
                "Open alert episodes", "Segments with an open episode, per kind (monitor_alert_active). The monitor"
                " opens an episode after `alerts.patience` significant windows in a row and closes it after as"
                " many clean ones.",
                f"sum by (kind) (monitor_alert_active{{{D}}})", "{{kind}}", width=8))
            .with_panel(counts(
                "Alerts sent", "Alerts sent since the workers' state began, per kind (monitor_alerts_total):"
                " one per episode, segment and kind. The red marks on the graphs come from this counter:"
                " changes(monitor_alerts_total) > 0 marks the moment an alert went out, which is what to line up"
                " against the model and KPI curves. Prometheus's ALERTS series would instead shade the whole time"
                " a rule fires (the table beside this shows what is open now) and would show only the rules"
                " Prometheus loaded. A rebalance that moves partitions between workers moves their counts too,"
                " and can add a mark of its own.", f"sum by (kind) (monitor_alerts_total{{{D}}})", "{{kind}}",
                width=8))
            .with_panel(
                table.Panel().title("Open episodes").description(
                    "Every segment and kind with an open episode now: what to page on.").datasource(DATASOURCE)
                .span(8).height(5).unit("short").no_value("none open")
                .with_target(query(layout.named(f"monitor_alert_active{{{D}}} == 1"), rows=True))
                .with_transformation(model.DataTransformerConfig(id_val="organize", options={
                    "excludeByName": {"Time": True, "Value": True, "__name__": True, "decision": True}})))
            .with_row(dash.Row("All decisions"))
            .with_panel(graph(
                "$metric against $kpi, all decisions", "The model metric (left axis) and the KPI (right axis)"
                " of the overall segment on one time axis: solid lines the latest complete window"
                " (window=\"rolling\"), dashed lines the whole run (window=\"total\"). A KPI falling while the"
                " model metric holds is the silent case the monitor alerts on; the red marks are alerts sent.",
                "short",
                query(f'monitor_model_metric{{{overall}, window="rolling", metric="$metric"}}', "$metric (model)"),
                query(f'monitor_kpi{{{overall}, window="rolling", kpi="$kpi"}}', "$kpi (business)", "B"),
                query(f'monitor_model_metric{{{overall}, window="total", metric="$metric"}}',
                      "$metric (model, total)", "C"),
                query(f'monitor_kpi{{{overall}, window="total", kpi="$kpi"}}', "$kpi (business, total)", "D"),
                width=24, decimals=3)
                .override_by_query("B", [right_axis()]).override_by_query("D", [right_axis()])
                .override_by_regexp(".*total\\)", [dashed()]))
            .with_panel(graph(
                "Misalignment: model metrics against $kpi, all decisions",
                "monitor_misalignment = (z_model − z_kpi)/√2 for the latest tested window against the"
                " reference: about N(0, 1) while both sides are stable; above +3 the business did worse than the"
                " model suggests, below −3 the model did worse than the business.", "none",
                query(f'monitor_misalignment{{{overall}, kpi="$kpi"}}', "{{model_metric}}"), width=24, decimals=2)
                .thresholds(steps((None, "red"), (-3, "transparent"), (3, "red")))
                .thresholds_style(common_b.GraphThresholdsStyleConfig().mode(
                    common.GraphThresholdsStyleMode.DASHED_AND_AREA)))
            .with_panel(graph(
                "$kpi by age, all decisions", "The KPI of the overall segment's latest window read at each early"
                " age (window=\"early\", one line per age) and at the horizon (the latest complete window). With"
                " outcome events each reading holds the events seen by its age (purchases, then refunds): the"
                " lines are the curve of the KPI as decisions age. Lines that part from their usual spacing show"
                " where it changed: the late ages falling while the early ones hold is refunds rising.", "short",
                query(f'monitor_kpi{{{overall}, window="early", kpi="$kpi"}}', "{{age}}"),
                query(f'monitor_kpi{{{overall}, window="rolling", kpi="$kpi"}}', "horizon", "B"),
                width=24, decimals=3))
            .with_panel(graph(
                "$kpi early against its reference, all decisions", "The overall segment's latest window read at"
                " each early age (window=\"early\") and its reference read at the same age"
                " (window=\"early_reference\": the mean of its first windows). Early alerts compare exactly these"
                " two: a line falling away from its reference's is what a provisional alert reports.", "short",
                query(f'monitor_kpi{{{overall}, window="early", kpi="$kpi"}}', "{{age}}"),
                query(f'monitor_kpi{{{overall}, window="early_reference", kpi="$kpi"}}', "{{age}} reference", "B"),
                width=12, decimals=3))
            .with_panel(graph(
                "Early alerts open", "monitor_early_alert_active: 1 while an early episode is open in a segment,"
                " provisional until its window's outcomes are final, then confirmed; a withdrawal drops it to 0."
                " MonitorEarlyWarning warns on provisional ones, MonitorEarlyConfirmed pages on confirmed ones.",
                "short", query(layout.named(f"max without (instance) (monitor_early_alert_active{{{D}}})"),
                               f"{layout.legend()} {{{{kind}}}} {{{{status}}}}"), width=12, decimals=0))
            .with_row(dash.Row("Per segment, latest complete window"))
            .with_panel(graph(
                "Model: $metric per segment", "The model metric of each segment over its latest complete window"
                " (window=\"rolling\"); a window completes once enough decisions of its slices have their outcome"
                " or reached the horizon.", "short",
                query(layout.named(f'monitor_model_metric{{{D}, window="rolling", metric="$metric"}}'),
                      layout.legend()), width=24, decimals=3))
            .with_panel(graph(
                "Business: $kpi per segment", "The KPI of each segment over its latest complete window, on the"
                " same time axis as the model metric above it.", "short",
                query(layout.named(f'monitor_kpi{{{D}, window="rolling", kpi="$kpi"}}'), layout.legend()),
                width=24, decimals=3))
            .with_row(dash.Row("Experiment (the spec's [experiment]: each variant against the control)"))
            .with_panel(graph(
                "Lift per KPI and variant", "monitor_experiment_lift: the relative change of each KPI's mean per"
                " decision, variant against the control, over the whole run. Read it together with the p-value"
                " beside it: a lift is only news once that p-value is small.", "percentunit",
                query(f"monitor_experiment_lift{{{D}}}", "{{kpi}}: {{variant}}"), width=10, decimals=1))
            .with_panel(graph(
                "Always-valid p-value", "monitor_experiment_p_value: the mSPRT p-value of each KPI's difference,"
                " variant against control. Unlike a t-test's, it stays valid however often it is looked at, so"
                " stopping the test when it first drops below 0.05 keeps the false-positive rate at 5%.", "none",
                query(f"monitor_experiment_p_value{{{D}}}", "{{kpi}}: {{variant}}"), width=10, decimals=3)
                .thresholds(steps((None, "green"), (0.05, "transparent")))
                .thresholds_style(common_b.GraphThresholdsStyleConfig().mode(
                    common.GraphThresholdsStyleMode.DASHED_AND_AREA)))
            .with_panel(
                stat.Panel().title("Sample ratio").description(
                    "monitor_experiment_srm_p_value: χ² p-value of the arms' finalized decisions against the"
                    " planned split (experiment.split in the spec, else equal). Red below 0.001: assignment or"
                    " logging is broken, and no lift or p-value above can be trusted until it is fixed.")
                .datasource(DATASOURCE).unit("none").decimals(4)
                .span(4).height(10).with_target(query(f"monitor_experiment_srm_p_value{{{D}}}", "SRM p-value",
                                                      instant=True))
                .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
                .color_mode(common.BigValueColorMode.BACKGROUND).graph_mode(common.BigValueGraphMode.NONE)
                .thresholds(steps((None, "red"), (0.001, "green"))))
            .with_row(dash.Row("Every metric, all decisions"))
            .with_panel(graph(
                "Model metrics, all decisions", "Every model metric of the overall segment: solid lines the latest"
                " complete window, dashed lines the whole run (window=\"total\").", "short",
                query(f'monitor_model_metric{{{overall}, window="rolling"}}', "{{metric}}"),
                query(f'monitor_model_metric{{{overall}, window="total"}}', "{{metric}} (total)", "B"), decimals=3)
                .override_by_regexp(".*\\(total\\)", [dashed()]))
            .with_panel(graph(
                "KPIs, all decisions", "Every KPI of the overall segment: solid lines the latest complete window,"
                " dashed lines the whole run.", "short",
                query(f'monitor_kpi{{{overall}, window="rolling"}}', "{{kpi}}"),
                query(f'monitor_kpi{{{overall}, window="total"}}', "{{kpi}} (total)", "B"), decimals=3)
                .override_by_regexp(".*\\(total\\)", [dashed()])))


def right_axis() -> model.DynamicConfigValue:
    return model.DynamicConfigValue(id_val="custom.axisPlacement", value="right")


def dashed() -> model.DynamicConfigValue:
    return model.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]})


def segment_drill_down(layout: Layout) -> dash.Dashboard:
    variables = []
    series = f"monitor_model_metric{{{D}}}"
    for label in layout.by:  # each by label narrows the next one's choices
        variables.append(label_variable(label, label.replace("_", " ").capitalize(), series, multi=True,
                                        description=f"Segments by `{label}`; All also takes the overall segment."))
        series = series[:-1] + f', {label}=~"${label}"}}'
    chosen = f"{D}, {layout.chosen()}"
    return (board("monitor-segments", "Segment drill-down",
                  "One model metric and one KPI across the chosen segments: which segments moved, and which way.",
                  *variables,
                  label_variable("metric", "Model metric", f"monitor_model_metric{{{D}}}"),
                  label_variable("kpi", "KPI", f"monitor_kpi{{{D}}}"))
            .with_panel(graph(
                "Model: $metric per segment", "The model metric over each chosen segment's latest complete window.",
                "short", query(layout.named(f'monitor_model_metric{{{chosen}, window="rolling", metric="$metric"}}'),
                               layout.legend()), decimals=3))
            .with_panel(graph(
                "Business: $kpi per segment", "The KPI over each chosen segment's latest complete window.", "short",
                query(layout.named(f'monitor_kpi{{{chosen}, window="rolling", kpi="$kpi"}}'), layout.legend()),
                decimals=3))
            .with_panel(graph(
                "Misalignment: $metric against $kpi per segment",
                "(z_model − z_kpi)/√2 per segment: above +3 the business did worse than the model suggests, below"
                " −3 the reverse. A segment with few decisions per window has wide swings.", "none",
                query(layout.named(f'monitor_misalignment{{{chosen}, model_metric="$metric", kpi="$kpi"}}'),
                      layout.legend()),
                decimals=2)
                .thresholds(steps((None, "red"), (-3, "transparent"), (3, "red")))
                .thresholds_style(common_b.GraphThresholdsStyleConfig().mode(
                    common.GraphThresholdsStyleMode.DASHED_AND_AREA)))
            .with_panel(
                statetimeline.Panel().title("Open alert kinds per segment").description(
                    "How many alert kinds (model_degradation, kpi_degradation, misalignment) have an open episode"
                    " in each chosen segment: 0 none.").datasource(DATASOURCE).unit("short").span(12).height(9)
                .with_target(query(layout.named(f"sum by ({', '.join(layout.by)}) (monitor_alert_active{{{chosen}}})"),
                                   layout.legend()))
                .thresholds(steps((None, "green"), (1, "orange"), (2, "red"))).show_value(common.VisibilityMode.AUTO))
            .with_panel(
                table.Panel().title("Whole run per segment").description(
                    "$metric and $kpi over each chosen segment's whole run (window=\"total\").").datasource(DATASOURCE)
                .span(24).height(8).unit("short").decimals(3)
                .with_target(query(layout.named(f'monitor_model_metric{{{chosen}, window="total", metric="$metric"}}'),
                                   rows=True))
                .with_target(query(layout.named(f'monitor_kpi{{{chosen}, window="total", kpi="$kpi"}}'), ref="B",
                                   rows=True))
                .with_transformation(model.DataTransformerConfig(id_val="merge", options={}))
                .with_transformation(model.DataTransformerConfig(id_val="organize", options={
                    "excludeByName": {"Time": True, "__name__": True, "decision": True, "window": True},
                    "renameByName": {"Value #A": "$metric", "Value #B": "$kpi"}}))))


def join_health(layout: Layout) -> dash.Dashboard:
    bucket = f"monitor_outcome_delay_seconds_bucket{{{D}}}"
    return (board("monitor-join", "Join health",
                  "How predictions and outcomes meet: what the join does with each record, what waits, how late"
                  " outcomes come.")
            .with_panel(graph(
                "Decisions by how the join ended them", "Per second, by status: matched (outcome within the"
                " horizon), expired (no outcome by the horizon), late (outcome after it), duplicate, orphan"
                " (outcome whose prediction never came) and invalid (dead-lettered records).",
                "suffix: decisions/s",
                query(f"sum by (status) (rate(monitor_decisions_total{{{D}}}[$__rate_interval]))", "{{status}}")))
            .with_panel(graph(
                "Share matched", "Matched decisions among those the join finished (matched + expired). It falls"
                " when outcomes stop arriving or arrive after the horizon.", "percentunit",
                query(f'sum(rate(monitor_decisions_total{{{D}, status="matched"}}[$__rate_interval]))'
                      f' / sum(rate(monitor_decisions_total{{{D}, status=~"matched|expired"}}[$__rate_interval]))',
                      "matched share"), decimals=1).min(0).max(1))
            .with_panel(graph(
                "Pending decisions", "Decisions waiting for an outcome (monitor_pending_decisions), summed over"
                " workers. Grows with traffic times the horizon; growth without more traffic means outcomes"
                " stopped.", "short", query(f"sum(monitor_pending_decisions{{{D}}})", "pending"), decimals=0))
            .with_panel(graph(
                "Outcome delay", "Quantiles of the time from a decision to its outcome, among outcomes that"
                " matched in the interval (monitor_outcome_delay_seconds, overall segment).", "s",
                *(query(f"histogram_quantile({q}, sum by (le) (rate({bucket}[$__rate_interval])))", f"p{p}", ref)
                  for q, p, ref in ((0.5, 50, "A"), (0.9, 90, "B"), (0.99, 99, "C")))))
            .with_panel(graph(
                "Folded segments", "Decisions per second counted under an `other` segment value because"
                " `segments.max` or `segments.max_values` was reached (monitor_segments_folded_total). Above"
                " zero, some segments are no longer told apart: raise the caps or slice by fewer fields.",
                "suffix: decisions/s",
                query(f"sum(rate(monitor_segments_folded_total{{{D}}}[$__rate_interval]))", "folded"), width=24)))


def pipeline_health(layout: Layout) -> dash.Dashboard:
    runtime = f"faust_events_runtime_ms_bucket{{{JOB}}}"
    return (board("monitor-pipeline", "Pipeline health",
                  "The Faust workers: throughput, consumer lag, processing latency and which workers are up.")
            .with_panel(counts("Workers up", "Workers whose /metrics Prometheus scraped last time"
                               " (up{job=\"monitor\"}); red when none.",
                               f"sum(up{{{JOB}}})", "workers up", width=6)
                        .thresholds(steps((None, "red"), (1, "green"))))
            .with_panel(graph(
                "Scrapes per worker", "1 while Prometheus scrapes a worker, 0 when the scrape fails.", "short",
                query(f"up{{{JOB}}}", "{{instance}}"), width=18, decimals=0).min(0).max(1))
            .with_panel(graph(
                "Records consumed per topic", "Input records per second the monitor counted, per topic"
                " (monitor_records_total).", "suffix: records/s",
                query(f"sum by (topic) (rate(monitor_records_total{{{D}}}[$__rate_interval]))", "{{topic}}")))
            .with_panel(graph(
                "Consumer lag per topic", "Records not yet committed: Faust's end offset minus its committed"
                " offset (faust_topic_partition_end_offset − faust_topic_partition_offset_commited, Faust's"
                " spelling), per partition on the worker that reports it, the largest report kept, then summed"
                " per topic. Faust's series carry no decision label: the topics name it.", "short",
                query(f"sum by (topic) (max by (topic, partition) (faust_topic_partition_end_offset{{{JOB}}}"
                      f" - faust_topic_partition_offset_commited{{{JOB}}}))", "{{topic}}"), decimals=0))
            .with_panel(graph(
                "Processing latency", "Quantiles of the time Faust's agents spend on one event of the internal"
                " topics: a part merged by the metrics stage, a tick of the join stage (faust_events_runtime_ms),"
                " over all workers. Input records are taken in batches, outside Faust's events: their progress"
                " shows as consumer lag.", "ms",
                *(query(f"histogram_quantile({q}, sum by (le) (rate({runtime}[$__rate_interval])))", f"p{p}", ref)
                  for q, p, ref in ((0.5, 50, "A"), (0.99, 99, "B")))))
            .with_panel(graph(
                "Messages sent per topic", "Records the workers produce per second, per topic: parts to the"
                " metrics stage, checkpoints to the changelogs, alerts and dead letters"
                " (faust_topic_messages_sent_total).", "suffix: messages/s",
                query(f"sum by (topic) (rate(faust_topic_messages_sent_total{{{JOB}}}[$__rate_interval]))",
                      "{{topic}}"))))


DASHBOARDS = {
    "model-vs-business.json": model_vs_business,
    "segment-drill-down.json": segment_drill_down,
    "join-health.json": join_health,
    "pipeline-health.json": pipeline_health,
}


def render(built: model.Dashboard) -> str:
    """The dashboard as Grafana's JSON, with its panels numbered and its annotation queries completed."""
    data = json.loads(json.dumps(built, cls=JSONEncoder))
    for number, panel in enumerate(data["panels"], start=1):
        panel["id"] = number
    annotations = data.setdefault("annotations", {}).setdefault("list", [])
    for annotation in annotations:
        # Fields of Prometheus annotation queries that the SDK's generic model lacks.
        annotation.update({"step": "1m", "titleFormat": "{{kind}} alert sent", "tagKeys": "kind"})
    annotations.insert(0, {  # Grafana's own annotations, as every dashboard has them
        "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"})
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(out: Path, spec_path: Path) -> list[Path]:
    layout = Layout([label_name(field) for field in load(spec_path).segment_by])
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in DASHBOARDS.items():
        path = out / name
        path.write_text(render(make(layout).build()))
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "grafana" / "dashboards")
    parser.add_argument("--spec", type=Path, default=ROOT / "monitor" / "checkout.toml")
    args = parser.parse_args()
    for path in write(args.out, args.spec):
        print(path)


if __name__ == "__main__":
    main()

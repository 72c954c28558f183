"""The decision spec: one short TOML file that says what to monitor and how.

`load(path)` or `parse(text)` returns a validated, frozen `Spec`. Every mistake raises `SpecError`
naming the key, the bad value and what was expected, so a wrong spec fails at start.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from monitor.contract.errors import SpecError
from monitor.contract.event_reader import check_paths
from monitor.contract.kafka import KafkaSettings, parse_table
from monitor.contract.mapping import FieldMap, Reader, parse_map
from monitor.contract.outcome_events import OutcomeEvents, parse_events
from monitor.contract.registry import RegistrySettings
from monitor.contract.registry import parse_table as parse_registry
from monitor.contract.settings import Alerts, Experiment, Kpi, Limits, Missing, Topics
from monitor.contract.toml_values import NAME, choice, default, identifier, known, number, parse_duration, table
from monitor.stats.metrics import CELLS, MODEL_METRIC_NAMES, QUANTILES, KpiMetric, Metric, model_metrics
from monitor.stats.summary import Shape

__all__ = [
    "SEGMENT_FIELDS",
    "Alerts",
    "Experiment",
    "FieldMap",
    "Kpi",
    "Limits",
    "Missing",
    "Spec",
    "Task",
    "Topics",
    "load",
    "parse",
]

Task = Literal["binary", "regression"]

SEGMENT_FIELDS = ("model", "model_version", "variant", "action")
EARLY_SHARES = (1 / 48, 1 / 12, 1 / 4)  # default ages of the early readings, as shares of the horizon


@dataclass(frozen=True)
class Spec:
    """A validated decision spec."""

    name: str
    task: Task
    horizon: float
    threshold: float = 0.5
    missing: Missing | None = None
    early: tuple[float, ...] | None = None  # ages of the early readings; None: derived from the horizon
    value: dict[str, float] | None = None
    kpis: tuple[Kpi, ...] = ()
    window_size: int = 1000
    window_period: float | None = None
    windows_kept: int = 48  # complete windows per segment a worker's state keeps, for its timeline after a restore
    segment_by: tuple[str, ...] = ()
    max_segments: int = 500
    max_values: int = 50
    alerts: Alerts = field(default_factory=Alerts)
    experiment: Experiment | None = None
    topics: Topics = field(default_factory=Topics)
    idle_timeout: float = 60.0
    session_timeout: float = 10.0
    heartbeat_interval: float = 1.0
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    limits: Limits = field(default_factory=Limits)
    predictions: FieldMap = field(default_factory=FieldMap)  # where the contract's fields are read from
    outcomes: FieldMap = field(default_factory=FieldMap)
    schema_registry: RegistrySettings | None = None  # where Avro values' schemas are fetched
    events: OutcomeEvents | None = None  # several business events per decision (`[outcome.events]`)
    source: str = "<string>"

    @property
    def slice_seconds(self) -> float:
        """Width of the decision-time slices that windows are built from."""
        if self.window_period is not None:
            return self.window_period
        return max(60.0, self.horizon / 24)

    @property
    def early_ages(self) -> tuple[float, ...]:
        """Ages (seconds after a slice ends) at which its early readings are taken, ascending."""
        if self.early is not None:
            return self.early
        return tuple(self.horizon * share for share in EARLY_SHARES)

    @property
    def reading_ages(self) -> tuple[float, ...]:
        """The early ages and the horizon: the last reading of a slice is its final one."""
        return tuple(sorted({*self.early_ages, self.horizon}))

    @cached_property
    def reader(self) -> Reader:
        """The decoders of this spec's topics, compiled once from its field mapping."""
        return Reader(self.predictions, self.outcomes, self.schema_registry, events=self.events)

    @cached_property
    def model_metrics(self) -> tuple[Metric, ...]:
        """The task's model metrics, in report order."""
        return model_metrics(self.task, self.value)

    @cached_property
    def kpi_metrics(self) -> tuple[Metric, ...]:
        return tuple(KpiMetric(k.name, better=k.better, index=i, agg=k.agg) for i, k in enumerate(self.kpis))

    @cached_property
    def metrics(self) -> tuple[Metric, ...]:
        """Every model metric, then every KPI."""
        return self.model_metrics + self.kpi_metrics

    @cached_property
    def shape(self) -> Shape:
        """What each summary of this spec's decisions keeps."""
        return Shape(self.task == "binary", tuple(k.agg in QUANTILES for k in self.kpis))


def load(path: str | Path) -> Spec:
    """Read and validate a spec file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError("<file>", str(path), f"a readable spec file ({exc.strerror})") from None
    return parse(text, source=str(path))


def parse(text: str, source: str = "<string>") -> Spec:
    """Validate spec text."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError("<toml>", source, f"valid TOML ({exc})") from None
    known(doc, "", {"decision", "model", "outcome", "business", "kpi", "windows", "segments",
                     "alerts", "experiment", "topics", "stream", "kafka", "limits", "predictions", "outcomes",
                     "schema_registry"})
    decision = table(doc, "decision", required=True)
    known(decision, "decision", {"name"})
    model = table(doc, "model", required=True)
    known(model, "model", {"task", "threshold"})
    outcome = table(doc, "outcome", required=True)
    known(outcome, "outcome", {"horizon", "missing", "early", "events"})
    task = choice(model, "model.task", ("binary", "regression"), None)
    kpis = _kpis(doc.get("kpi", []))
    horizon = parse_duration(outcome.get("horizon"), "outcome.horizon")
    spec = Spec(
        name=identifier(decision.get("name"), "decision.name"),
        task=task,  # type: ignore[arg-type]
        threshold=number(model, "model.threshold", default(Spec, "threshold"), low=0.0, high=1.0),
        horizon=horizon,
        missing=_missing(outcome.get("missing"), kpis),
        early=_early(outcome.get("early"), horizon),
        value=_business(table(doc, "business"), task),
        kpis=kpis,
        **_windows(table(doc, "windows")),
        **_segments(table(doc, "segments")),
        alerts=_alerts(table(doc, "alerts")),
        topics=_topics(table(doc, "topics")),
        **_stream(table(doc, "stream")),
        kafka=parse_table(table(doc, "kafka")),
        limits=_limits(table(doc, "limits")),
        predictions=parse_map(table(doc, "predictions"), "predictions"),
        outcomes=parse_map(table(doc, "outcomes"), "outcomes"),
        schema_registry=parse_registry(table(doc, "schema_registry")) if "schema_registry" in doc else None,
        source=source,
    )
    if "events" in outcome:
        spec = replace(spec, events=_events(table({"outcome.events": outcome["events"]}, "outcome.events"), spec))
    for i, kpi in enumerate(spec.kpis):
        if kpi.name in MODEL_METRIC_NAMES:
            raise SpecError(f"kpi[{i}].name", kpi.name, "a name that is not a model metric")
    if "experiment" in doc:
        spec = replace(spec, experiment=_experiment(table(doc, "experiment"), spec.segment_by))
    for which in ("predictions", "outcomes"):
        if getattr(spec, which).format == "avro" and spec.schema_registry is None:
            raise SpecError("schema_registry.url", None, f'the schema registry\'s address, for {which}.format = "avro"')
    if task == "regression" and "threshold" in model:
        raise SpecError("model.threshold", model["threshold"], "no threshold for a regression task")
    return spec


def _events(found: dict[str, Any], spec: Spec) -> OutcomeEvents:
    events = parse_events(found, tuple(k.field for k in spec.kpis))
    for name, path in spec.outcomes.paths:
        if name.split(".")[0] in ("label", "value", "kpis"):
            raise SpecError(f"outcomes.{name}", ".".join(path), "no label, value or kpis in [outcomes] with "
                            "[outcome.events]: each event type says what it gives")
    check_paths(spec.outcomes, events)
    for t in events.types:
        if spec.task == "binary" and t.label is not None and not t.label.path and t.label.constant not in (0, 1):
            raise SpecError(f"outcome.events.{t.name}.label", t.label.constant, "0 or 1 for a binary task")
    return events


def _missing(value: object, kpis: tuple[Kpi, ...]) -> Missing | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SpecError("outcome.missing", value, "a table such as { label = 0, value = 0.0 }")
    known(value, "outcome.missing", {"label", "value", "kpis"})
    extra = value.get("kpis", {})
    if not isinstance(extra, dict) or any(
        isinstance(v, bool) or not isinstance(v, (int, float)) for v in extra.values()
    ):
        raise SpecError("outcome.missing.kpis", extra, "a table of KPI name = number")
    names = {k.field[5:] for k in kpis if k.field.startswith("kpis.")}
    filled = {name: float(extra.get(name, 0.0)) for name in names}
    return Missing(
        label=number(value, "outcome.missing.label", default(Missing, "label")),
        value=number(value, "outcome.missing.value", default(Missing, "value")),
        kpis=filled,
    )


def _early(value: object, horizon: float) -> tuple[float, ...] | None:
    if value is None:
        return None
    expected = "a list of durations at most the horizon, such as [\"30m\", \"2h\", \"6h\"]"
    if not isinstance(value, list):
        raise SpecError("outcome.early", value, expected)
    ages = tuple(sorted({parse_duration(v, "outcome.early") for v in value}))
    if ages and ages[-1] > horizon:
        raise SpecError("outcome.early", value, expected)
    return ages


def _business(table: dict[str, Any], task: str) -> dict[str, float] | None:
    known(table, "business", {"value"})
    if "value" not in table:
        return None
    cells = table["value"]
    if task != "binary":
        raise SpecError("business.value", cells, "no confusion-cell values for a regression task")
    if not isinstance(cells, dict):
        raise SpecError("business.value", cells, "a table { tp = …, fp = …, fn = …, tn = … }")
    known(cells, "business.value", set(CELLS))
    return {cell: number(cells, f"business.value.{cell}", 0.0) for cell in CELLS}


def _kpis(entries: object) -> tuple[Kpi, ...]:
    if not isinstance(entries, list):
        raise SpecError("kpi", entries, "an array of [[kpi]] tables")
    kpis: list[Kpi] = []
    for i, entry in enumerate(entries):
        key = f"kpi[{i}]"
        if not isinstance(entry, dict):
            raise SpecError(key, entry, "a table with name, field, agg and better")
        known(entry, key, {"name", "field", "agg", "better"})
        name = identifier(entry.get("name"), f"{key}.name")
        where = entry.get("field")
        if not isinstance(where, str) or not (
            where in ("label", "value") or (where.startswith("kpis.") and len(where) > 5)
        ):
            raise SpecError(f"{key}.field", where, '"label", "value" or "kpis.<name>"')
        if any(k.name == name for k in kpis):
            raise SpecError(f"{key}.name", name, "a name not used by another [[kpi]]")
        agg = choice(entry, f"{key}.agg", ("mean", "sum", *QUANTILES), default(Kpi, "agg"))
        better = choice(entry, f"{key}.better", ("higher", "lower"), default(Kpi, "better"))
        kpis.append(Kpi(name, where, agg, better))  # type: ignore[arg-type]
    return tuple(kpis)


def _windows(table: dict[str, Any]) -> dict[str, Any]:
    known(table, "windows", {"size", "period", "keep"})
    period = table.get("period")
    return {
        "window_size": number(table, "windows.size", default(Spec, "window_size"), low=10, integer=True),
        "windows_kept": number(table, "windows.keep", default(Spec, "windows_kept"), low=1, integer=True),
        "window_period": None if period is None else parse_duration(period, "windows.period"),
    }


def _segments(table: dict[str, Any]) -> dict[str, Any]:
    known(table, "segments", {"by", "max", "max_values"})
    by = table.get("by", [])
    expected = f'a list of distinct fields among {", ".join(SEGMENT_FIELDS)} or "segment.<key>"'
    if not isinstance(by, list):
        raise SpecError("segments.by", by, expected)
    for item in by:
        ok = isinstance(item, str) and (
            item in SEGMENT_FIELDS or (item.startswith("segment.") and NAME.match(item[8:]))
        )
        if not ok or by.count(item) > 1:
            raise SpecError("segments.by", item, expected)
    return {
        "segment_by": tuple(by),
        "max_segments": number(table, "segments.max", default(Spec, "max_segments"), low=1, integer=True),
        "max_values": number(table, "segments.max_values", default(Spec, "max_values"), low=1, integer=True),
    }


def _alerts(table: dict[str, Any]) -> Alerts:
    known(table, "alerts", {"alpha", "patience", "reference", "min_change", "min_decisions", "early_alpha"})
    return Alerts(
        alpha=number(table, "alerts.alpha", default(Alerts, "alpha"), low=1e-12, high=0.5),
        patience=number(table, "alerts.patience", default(Alerts, "patience"), low=1, integer=True),
        reference=number(table, "alerts.reference", default(Alerts, "reference"), low=1, integer=True),
        min_change=number(table, "alerts.min_change", default(Alerts, "min_change"), low=0.0),
        min_decisions=number(table, "alerts.min_decisions", default(Alerts, "min_decisions"), low=2, integer=True),
        early_alpha=number(table, "alerts.early_alpha", None, low=1e-12, high=0.5) if "early_alpha" in table
        else default(Alerts, "early_alpha"),
    )


def _experiment(table: dict[str, Any], by: tuple[str, ...]) -> Experiment:
    known(table, "experiment", {"field", "control", "split"})
    where = table.get("field")
    if where not in by:
        raise SpecError("experiment.field", where, "one of the segments.by fields (" + (", ".join(by) or "none: add "
                        "the arm's field to segments.by") + "), so each arm is a segment")
    control = table.get("control")
    if not isinstance(control, str) or not control:
        raise SpecError("experiment.control", control, "the control arm's value, e.g. \"control\"")
    split = table.get("split")
    if split is not None:
        expected = f"a table of arm = planned share with at least two arms, {control!r} among them, e.g. " \
                   "{ control = 0.9, treatment = 0.1 }"
        if not isinstance(split, dict) or len(split) < 2 or control not in split or any(
                isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0 for v in split.values()):
            raise SpecError("experiment.split", split, expected)
        split = {str(k): float(v) for k, v in split.items()}
    return Experiment(str(where), control, split)


def _topics(table: dict[str, Any]) -> Topics:
    names = ("predictions", "outcomes", "alerts", "dead_letters")
    known(table, "topics", set(names))
    chosen = {}
    for name in names:
        value = table.get(name, default(Topics, name))
        if not isinstance(value, str) or not re.match(r"^[A-Za-z0-9._\-]{1,249}$", value):
            raise SpecError(f"topics.{name}", value, "a Kafka topic name of letters, digits, '.', '_' or '-'")
        chosen[name] = value
    if len(set(chosen.values())) != len(names):
        raise SpecError("topics", chosen, "four different topic names")
    return Topics(**chosen)


def _limits(table: dict[str, Any]) -> Limits:
    keys = ("max_pending", "max_held", "max_finals", "max_record_bytes", "max_events_per_decision")
    known(table, "limits", {*keys, "max_future"})
    future = table.get("max_future")
    return Limits(**{key: int(number(table, f"limits.{key}", default(Limits, key), low=1, integer=True))
                     for key in keys},
                  max_future=default(Limits, "max_future") if future is None
                  else parse_duration(future, "limits.max_future"))


def duration(table: dict[str, Any], key: str) -> float:
    """A `stream` duration, or the spec's default for it."""
    name = key.rsplit(".", 1)[-1]
    return parse_duration(table[name], key) if name in table else float(default(Spec, name))


def _stream(table: dict[str, Any]) -> dict[str, Any]:
    known(table, "stream", {"idle_timeout", "session_timeout", "heartbeat_interval"})
    session = duration(table, "stream.session_timeout")
    # Brokers accept sessions between group.min.session.timeout.ms (6 s) and ...max... (30 min) by default.
    if not 6 <= session <= 1800:
        raise SpecError("stream.session_timeout", table["session_timeout"], 'a duration from "6s" to "30m"')
    heartbeat = duration(table, "stream.heartbeat_interval")
    if heartbeat > session / 3:  # Kafka's rule of thumb: three heartbeats may be missed before the session ends
        raise SpecError("stream.heartbeat_interval", table.get("heartbeat_interval", f"{heartbeat:g}s"),
                        f"at most a third of stream.session_timeout ({session / 3:g} s)")
    return {"idle_timeout": duration(table, "stream.idle_timeout"),
            "session_timeout": session, "heartbeat_interval": heartbeat}

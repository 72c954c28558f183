"""The tables of a decision spec below its top level, each a frozen dataclass whose defaults are the spec's."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Missing:
    """What a decision with no outcome counts as once its horizon has passed."""

    label: float = 0.0
    value: float = 0.0
    kpis: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Kpi:
    """A business number observed on outcomes, aggregated per decision."""

    name: str
    field: str
    agg: Literal["mean", "sum", "p90"] = "mean"
    better: Literal["higher", "lower"] = "higher"

    def read(self, label: float, value: float | None, kpis: dict[str, float] | None) -> float | None:
        """This KPI's raw value on one outcome, or None where the outcome lacks the field."""
        if self.field == "label":
            return label
        if self.field == "value":
            return value
        return None if kpis is None else kpis.get(self.field[5:])


@dataclass(frozen=True)
class Alerts:
    """Detector settings. The defaults keep a healthy stream of 100k decisions silent."""

    alpha: float = 0.001
    patience: int = 2
    reference: int = 4
    min_change: float = 0.05
    min_decisions: int = 200
    early_alpha: float | None = None  # None: alpha / 10

    @property
    def early_level(self) -> float:
        """Family-wise level of one window's early readings: an early alert needs one reading, where a
        complete window's alert needs `patience` in a row, so its budget is the smaller."""
        return self.alpha / 10 if self.early_alpha is None else self.early_alpha


@dataclass(frozen=True)
class Experiment:
    """A live A/B test: `field` (a `segments.by` field) names each decision's arm; `control` is the baseline arm."""

    field: str
    control: str
    split: dict[str, float] | None = None  # planned share of each arm; None: an equal split of the arms seen


@dataclass(frozen=True)
class Topics:
    predictions: str = "predictions"
    outcomes: str = "outcomes"
    alerts: str = "monitor-alerts"
    dead_letters: str = "monitor-dead-letters"


@dataclass(frozen=True)
class Limits:
    """Per input partition, what the join may hold in memory, and the largest record it reads.

    Past `max_pending` the oldest pending decision is finalized early as expired; past `max_held`
    the oldest held outcome is dropped as an orphan; past `max_finals` the older half of the final
    ids remembered (to tell redeliveries, duplicates and late outcomes) is forgotten early. All are
    counted (`monitor_join_evicted_total`)."""

    max_pending: int = 1_000_000  # about 190 bytes each
    max_held: int = 100_000  # about 400 bytes each
    max_finals: int = 3_000_000  # about 270 bytes each
    max_record_bytes: int = 1 << 20
    max_future: float = 86_400.0  # seconds an event time may be ahead of its record's Kafka timestamp
    max_events_per_decision: int = 1_000  # outcome events folded into one decision; later ones are counted only

"""Alerts: each complete window against its segment's reference, tested for significance.

Per window, every model metric and KPI gets a one-sided z-test for worsening against the
reference (the segment's first `reference` windows). A metric has worsened when the test is
significant at `alpha / m` (Bonferroni over the m tests of the window) and the relative change
is at least `min_change`. An episode starts after `patience` windows in a row and ends at the
first window without the condition: one alert per episode, per segment and kind, naming every
metric involved (the most significant one is its `subject`).

    model_degradation   a model metric worsened
    kpi_degradation     a KPI worsened
    misalignment        a KPI worsened while every model metric held, or the other way round
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from monitor.contract import report
from monitor.contract.spec import Spec
from monitor.engine.comparisons import (
    CAPTURE,
    KINDS,
    Comparison,
    alert_id,
    compare,
    iso,
    kinds,
    moved,
    replay_command,
    shown,
    where,
    worsening,
)
from monitor.engine.state import DetectorState
from monitor.engine.windows import Window
from monitor.stats.metrics import Estimate
from monitor.stats.summary import Summary


@dataclass(frozen=True)
class Alert:
    kind: str
    at: float
    segment: dict[str, str]
    subject: str
    metrics: tuple[Comparison, ...]
    kpis: tuple[Comparison, ...]
    severity: str
    message: str
    window: Window
    replay: str
    decision: str = ""

    @property
    def id(self) -> str:
        """The same for every copy of this alert: delivery is at least once, so consumers drop repeats by it."""
        return alert_id(self.decision, self.kind, *(f"{k}={v}" for k, v in sorted(self.segment.items())),
                        repr(self.window.start), repr(self.window.end))

    def event(self) -> report.Alert:
        """As the report and the alerts topic carry it."""
        return report.Alert(
            id=self.id, decision=self.decision, kind=self.kind, at=iso(self.at), segment=self.segment,
            subject=self.subject, severity=self.severity, message=self.message,
            metrics=[c.compared() for c in self.metrics], kpis=[c.compared() for c in self.kpis],
            window=report.Span(start=iso(self.window.start), end=iso(self.window.end),
                               decisions=self.window.summary.n),
            replay=self.replay)


@dataclass
class _SegmentState:
    reference: Summary | None = None
    estimates: dict[str, Estimate] = field(default_factory=dict)  # of the complete reference
    windows: int = 0
    start: float = math.nan
    episodes: dict[str, _Episode] = field(default_factory=dict)


@dataclass
class _Episode:
    """Hysteresis: opens after `patience` significant windows in a row, and closes only after
    `patience` windows in a row without even a nominal worsening (p < 0.05), so a real shift that
    hovers near the threshold stays one episode instead of an alert storm."""

    active: bool = False
    streak: int = 0

    def update(self, significant: bool, nominal: bool, patience: int) -> bool:
        """Record one window; True when this window opens the episode."""
        if not self.active:
            self.streak = self.streak + 1 if significant else 0
            self.active = self.streak >= patience
            if self.active:
                self.streak = 0
            return self.active
        self.streak = 0 if nominal else self.streak + 1
        if self.streak >= patience:
            self.active, self.streak = False, 0
        return False


class Detector:
    """Turns complete windows into alerts, at most one per episode, segment and kind."""

    def __init__(self, spec: Spec, replay_source: str = CAPTURE) -> None:
        self.spec = spec
        self.replay_source = replay_source  # the replay options that name the input: a file or a broker
        self._state: dict[int, _SegmentState] = {}
        self.misalignment: dict[int, dict[tuple[str, str], float]] = {}
        self.active: dict[int, set[str]] = {}  # open episodes' kinds, per segment

    def update(self, window: Window, segment: dict[str, str]) -> list[Alert]:
        """Test one complete window; returns the alerts that start an episode now."""
        settings = self.spec.alerts
        if window.summary.n < settings.min_decisions:
            return []
        state = self._state.setdefault(window.segment, _SegmentState())
        if state.windows < settings.reference:
            state.reference = (state.reference or Summary(self.spec.shape)).merge(window.summary)
            state.windows += 1
            state.start = min(state.start, window.start) if state.windows > 1 else window.start
            if state.windows == settings.reference:
                state.estimates = self._estimates(state.reference)
            return []
        comparisons = self.compare(state.estimates, window.estimates)
        strict = kinds(self.worsened(comparisons))
        relaxed = kinds(self.worsened(comparisons, relaxed=True), strict_model=strict["model_degradation"],
                        strict_kpis=strict["kpi_degradation"])
        self._score(window.segment, comparisons)
        fired = []
        for kind in KINDS:
            episode = state.episodes.setdefault(kind, _Episode())
            if episode.update(bool(strict[kind]), bool(relaxed[kind]), settings.patience):
                fired.append(self._alert(kind, strict[kind], comparisons, window, segment, state.start))
        self.active[window.segment] = {k for k, e in state.episodes.items() if e.active}
        return fired

    def compare(self, reference: dict[str, Estimate], current: dict[str, Estimate]) -> list[Comparison]:
        """Every testable metric and KPI of `current` against `reference`."""
        return compare(self.spec.metrics, reference, current)

    def worsened(self, comparisons: list[Comparison], relaxed: bool = False) -> list[Comparison]:
        """The comparisons that got significantly and materially worse, most significant first.

        `relaxed` asks for any nominal worsening (p < 0.05): what keeps an open episode open."""
        settings = self.spec.alerts
        level = 0.05 if relaxed else settings.alpha / max(len(comparisons), 1)
        least = 0.0 if relaxed else settings.min_change
        worse = [c for c in comparisons if c.p < level and c.change > least - 1e-12]
        return sorted(worse, key=lambda c: c.p)

    def state(self, segment: int) -> DetectorState | None:
        """The segment's detector state; None before its first tested window."""
        s = self._state.get(segment)
        if s is None:
            return None
        return DetectorState(None if s.reference is None else s.reference.state(), s.windows, s.start,
                             {kind: (e.active, e.streak) for kind, e in s.episodes.items()},
                             [(m, k, z) for (m, k), z in self.misalignment.get(segment, {}).items()])

    def restore(self, segment: int, saved: DetectorState) -> None:
        reference = None if saved.reference is None else Summary.from_state(self.spec.shape, saved.reference)
        state = self._state[segment] = _SegmentState(reference, {}, saved.windows, saved.start,
                                                     {k: _Episode(*e) for k, e in saved.episodes.items()})
        if reference is not None and saved.windows >= self.spec.alerts.reference:
            state.estimates = self._estimates(reference)
        if saved.misalignment:
            self.misalignment[segment] = {(m, k): z for m, k, z in saved.misalignment}
        self.active[segment] = {k for k, e in state.episodes.items() if e.active}

    def _estimates(self, summary: Summary) -> dict[str, Estimate]:
        return {m.name: m.estimate(summary) for m in self.spec.metrics}

    def _score(self, segment: int, comparisons: list[Comparison]) -> None:
        """Misalignment score per (model metric, KPI): (z_model − z_kpi) / √2."""
        model = [c for c in comparisons if c.side == "model"]
        kpis = [c for c in comparisons if c.side == "kpi"]
        self.misalignment[segment] = {
            (m.name, k.name): (m.z - k.z) / math.sqrt(2) for m in model for k in kpis
        }

    def _alert(self, kind: str, involved: list[Comparison], comparisons: list[Comparison], window: Window,
               segment: dict[str, str], reference_start: float) -> Alert:
        subject = involved[0]
        held, model, kpis = shown(kind, subject.side, involved, comparisons)
        critical = (kind == "misalignment" and subject.side == "kpi") or \
            subject.change >= 4 * self.spec.alerts.min_change
        # The event time at which the window became complete: its last decision's horizon has
        # passed. It depends on the data alone, never on how records were batched or partitioned.
        at = window.end + self.spec.horizon
        replay = replay_command(self.spec, self.replay_source, reference_start, at)
        message = _message(kind, involved, held, segment, window, self.spec.name)
        return Alert(kind, at, segment, subject.name, model, kpis, "critical" if critical else "warning",
                     message, window, replay, self.spec.name)


def _message(kind: str, involved: list[Comparison], held: list[Comparison], segment: dict[str, str],
             window: Window, decision: str) -> str:
    side = "KPI" if involved[0].side == "kpi" else "model metric"
    changes = "; ".join(worsening(c) for c in involved)
    text = (f"[{decision}] {where(segment)}: {side}{'s' if len(involved) > 1 else ''} fell: {changes}; "
            f"over {window.summary.n:,} decisions from {iso(window.start)} to {iso(window.end)},"
            " against this segment's reference.")
    if kind == "misalignment":
        others = ", ".join(moved(c) for c in held)
        if involved[0].side == "kpi":
            text += (f" Model metrics held ({others}): the model looks healthy but the business number"
                     " it should move is falling. Check what changed downstream of the model"
                     " (pricing, supply, the action taken on its decisions) before retraining.")
        else:
            text += (f" Business KPIs held ({others}): the model is getting worse without hurting the"
                     " business yet. Check for feature drift, a bad release or delayed labels.")
    return text

"""Early alerts: windows read at early ages, tested against the reference read at the same age.

Each early age of each window is tested like a complete window (one-sided z-tests of worsening,
`min_change`), with the window's family-wise budget `early_alpha` (alpha / 10 by default: an early
alert needs one reading, a complete window's `patience` in a row) spread over the ages and the
tests by Bonferroni: level `early_alpha / ((m + 1) · ages)` for the m metrics of one reading and
its test of the outcomes' pace. One significant reading raises a
*provisional* alert: it names its age and what was known then (decisions, outcomes matched). When
the window's last slice reaches the horizon, the same window is read again with its final numbers
and tested against the final reference at the complete window's level `alpha / m`: the alert is
then *confirmed* or *withdrawn*, as a second event with the first one's id in `alert`. An early
episode of a kind stays open, raising nothing new, until `patience` windows in a row show no
nominal worsening (p < 0.05) at the last early age.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from monitor.contract import report
from monitor.contract.spec import Spec
from monitor.engine.comparisons import (
    CAPTURE,
    KINDS,
    Comparison,
    alert_id,
    below,
    compare,
    iso,
    kinds,
    moved,
    replay_command,
    shown,
    where,
    worsening,
)
from monitor.engine.early_windows import (
    EarlyWindow,
    age_text,
    estimates,
    filling,
    restored,
    saved,
    spec_metrics,
    window_estimates,
)
from monitor.engine.state import EarlyReferenceState, PendingState
from monitor.stats.metrics import Estimate
from monitor.stats.readings import EarlyMetric, Reading
from monitor.stats.survival import Group, logrank, logrank_groups

STATUSES = ("provisional", "confirmed", "withdrawn")
ACTIVE = STATUSES[:2]  # the statuses an open early episode is shown in
EARLY_KINDS = (*KINDS, "outcome_delay")
# What an outcome_delay alert shows: the share of decisions with an outcome by the age, and at the
# horizon the mean delay of the outcomes that came.
OUTCOMES_BY_AGE = EarlyMetric("outcomes_by_age", side="kpi", kind="delay")
MEAN_DELAY = EarlyMetric("mean_delay_seconds", side="kpi", better="lower", fmt=".0f", kind="delay")


@dataclass(frozen=True)
class EarlyAlert:
    """One event of an early alert: provisional, then confirmed or withdrawn."""

    kind: str
    status: str
    age: float  # the age the window was read at (the horizon for a confirmation)
    at: float  # event time of the reading: the window's end plus the age
    segment: dict[str, str]
    subject: str
    metrics: tuple[Comparison, ...]
    kpis: tuple[Comparison, ...]
    message: str
    window: EarlyWindow
    known: dict[str, int]  # decisions seen and outcomes matched at the age
    replay: str = ""  # the command that reproduces this event
    decision: str = ""
    alert: str = ""  # the provisional alert's id, on a confirmation or withdrawal

    @property
    def id(self) -> str:
        return alert_id(self.decision, "early", self.kind, self.status,
                        *(f"{k}={v}" for k, v in sorted(self.segment.items())),
                        repr(self.window.start), repr(self.window.end), repr(self.window.age))

    def event(self) -> report.EarlyAlert:
        """As the report and the alerts topic carry it."""
        return report.EarlyAlert(
            id=self.id, decision=self.decision, kind=self.kind, status=self.status,
            provisional=self.status == "provisional", alert=self.alert or self.id, age=age_text(self.age),
            at=iso(self.at), segment=self.segment, subject=self.subject, message=self.message,
            metrics=[c.compared() for c in self.metrics], kpis=[c.compared() for c in self.kpis],
            known=self.known, window=report.Span(start=iso(self.window.start), end=iso(self.window.end)),
            replay=self.replay)


@dataclass
class _Reference:
    reading: Reading | None = None
    windows: int = 0
    start: float = math.inf  # where its first window starts
    estimates: dict[str, Estimate] = field(default_factory=dict)
    paced: tuple[float, Group] | None = None  # (age, the reading censored at it): built once, tested often

    def censored(self, age: float) -> Group:
        """The reference's delays, with its decisions still without an outcome censored at `age`."""
        if self.paced is None or self.paced[0] != age:
            assert self.reading is not None
            self.paced = (age, _censored(self.reading, age))
        return self.paced[1]


@dataclass
class _Pending:
    """A provisional alert waiting for its window's final reading."""

    kind: str
    alert: str  # its id
    subject: str
    segment: int
    start: float
    end: float
    slices: list[int]  # the window's
    left: set[int]  # its slices not yet final
    reading: Reading  # their final readings so far

    def state(self) -> PendingState:
        return PendingState(self.kind, self.alert, self.subject, self.start, self.end, self.slices,
                            sorted(self.left), saved(self.reading))


class EarlyDetector:
    """Tests early windows, raises provisional alerts and settles them at the horizon."""

    def __init__(self, spec: Spec, labels: Callable[[int], dict[str, str]],
                 replay_source: str = CAPTURE) -> None:
        self.spec = spec
        self.replay_source = replay_source  # the replay options that name the input: a file or a broker
        self.labels = labels
        self.metrics = spec_metrics(spec)
        self.fill = filling(spec)
        self.last = len(spec.reading_ages) - 1
        self.early = sum(1 for a in spec.reading_ages if a < spec.horizon)  # the ages that may alert
        self._references: dict[tuple[int, int], _Reference] = {}
        # (segment, kind) -> (start, clean windows, the status of the alert that opened the episode)
        self._open: dict[tuple[int, str], tuple[float, int, str]] = {}
        self._pending: dict[tuple[int, int], list[_Pending]] = {}  # (segment, slice) -> alerts waiting

    def update(self, window: EarlyWindow) -> list[EarlyAlert]:
        """Test one early window; returns the provisional alerts it raises."""
        settings = self.spec.alerts
        reading = window.reading
        if (reading.n if self.fill is not None else reading.matched) < settings.min_decisions:
            return []
        ref = self._references.setdefault((window.segment, window.index), _Reference())
        if ref.windows < settings.reference:
            ref.reading = (ref.reading or Reading(len(self.spec.kpis))).merge(reading)
            ref.windows += 1
            ref.start = min(ref.start, window.start)
            if ref.windows == settings.reference:
                ref.estimates = estimates(self.metrics, ref.reading, self.fill)
            return []
        if window.index >= self.early:
            return []
        comparisons = compare(self.metrics, ref.estimates, window_estimates(window, self.metrics, self.fill))
        pace = _pace(reading, ref, window.age) if ref.reading is not None else None
        # Outcomes coming slower than the reference's pace even nominally: the numbers that depend on
        # when outcomes arrive are held back, and only the values per outcome are tested.
        slower = pace is not None and pace.p < 0.05
        tested = [c for c in comparisons if not (slower and isinstance(c.metric, EarlyMetric) and c.metric.timed)]
        level = settings.early_level / (len(comparisons) + 1) / self.early
        least = settings.min_change - 1e-12
        strict = kinds([c for c in tested if c.p < level and c.change > least])
        nominal = kinds([c for c in tested if c.p < 0.05])
        strict["outcome_delay"] = [pace] if pace is not None and pace.p < level and pace.change > least else []
        nominal["outcome_delay"] = [pace] if slower and pace is not None else []
        fired = []
        for kind in EARLY_KINDS:
            key = (window.segment, kind)
            episode = self._open.get(key)
            if episode is not None:
                # The last early age of the windows since the episode began decides when it ends.
                if window.index == self.early - 1 and window.start >= episode[0]:
                    clean = 0 if nominal[kind] else episode[1] + 1
                    self._open[key] = (episode[0], clean, episode[2])
                    if clean >= settings.patience:
                        del self._open[key]
                continue
            if strict[kind]:
                self._open[key] = (window.start, 0, "provisional")
                alert = self._alert(kind, "provisional", strict[kind], comparisons, window)
                fired.append(alert)
                self._wait(_Pending(kind, alert.id, alert.subject, window.segment, window.start, window.end,
                                    list(window.slices), set(window.slices), Reading(len(self.spec.kpis))))
        return fired

    def wanted(self, segment: int, index: int) -> bool:
        """Whether windows at this age are still of use: every early age, and the horizon for its reference."""
        if index < self.early:
            return True
        ref = self._references.get((segment, index))
        return ref is None or ref.windows < self.spec.alerts.reference

    def waiting(self, segment: int, slice_id: int) -> bool:
        """Whether a provisional alert waits for this slice's final reading."""
        return (segment, slice_id) in self._pending

    def final(self, segment: int, slice_id: int, reading: Reading) -> list[EarlyAlert]:
        """A slice's final reading: settles the provisional alerts whose windows it completes."""
        settled = []
        for pending in self._pending.pop((segment, slice_id), []):
            pending.reading.merge(reading)
            pending.left.discard(slice_id)
            if not pending.left:
                settled.append(self._settle(pending))
        return settled

    def _wait(self, pending: _Pending) -> None:
        for slice_id in sorted(pending.left):
            self._pending.setdefault((pending.segment, slice_id), []).append(pending)

    def _settle(self, pending: _Pending) -> EarlyAlert:
        window = EarlyWindow(pending.segment, self.last, self.spec.horizon, pending.start, pending.end,
                             pending.reading, pending.slices)
        ref = self._references.get((window.segment, self.last))
        settings = self.spec.alerts
        if ref is None or ref.reading is None or not ref.estimates:
            return self._alert(pending.kind, "withdrawn", [], [], window, pending.alert)
        comparisons = compare(self.metrics, ref.estimates, estimates(self.metrics, pending.reading, self.fill))
        level = settings.alpha / (len(comparisons) + 1)
        involved = kinds([c for c in comparisons if c.p < level and c.change > settings.min_change - 1e-12])
        later = _later(pending.reading, ref.reading)  # the delays of the outcomes that came, at the horizon
        involved["outcome_delay"] = [later] if later is not None and later.p < level else []
        kind = pending.kind
        status = "confirmed" if involved[kind] else "withdrawn"
        episode = self._open.get((pending.segment, kind))
        if episode is not None and episode[0] == pending.start:  # the episode this alert opened is still open
            self._open[(pending.segment, kind)] = (episode[0], episode[1], status)
        shown = involved[kind] or [c for c in [*comparisons, *([later] if later else [])] if c.name == pending.subject]
        return self._alert(kind, status, shown, comparisons, window, pending.alert)

    def reference(self, segment: int, index: int) -> dict[str, float | None] | None:
        """The segment's reference at an age, once complete, as its windows show on average (a `sum` KPI: the
        total of one reference window); None before."""
        ref = self._references.get((segment, index))
        if ref is None or ref.reading is None or not ref.estimates:
            return None
        found: dict[str, float | None] = {}
        for m in self.metrics:
            value = m.reported(ref.reading, self.fill, ref.estimates[m.name]) / (ref.windows if m.total else 1)
            found[m.name] = None if math.isnan(value) else value
        return found

    def active(self, segment: int) -> dict[tuple[str, str], bool]:
        """Per (kind, status): whether an early episode of the kind is open in the segment with its alert in that
        status: provisional until its final numbers, then confirmed (withdrawn: neither). What on-call is paged by."""
        found = {(kind, status): False for kind in EARLY_KINDS for status in ACTIVE}
        for kind in EARLY_KINDS:
            episode = self._open.get((segment, kind))
            if episode is not None and episode[2] in ACTIVE:
                found[(kind, episode[2])] = True
        return found

    def segments(self) -> set[int]:
        """The segments with references, open episodes or alerts waiting."""
        return {s for s, _ in self._references} | {s for s, _ in self._open} | {s for s, _ in self._pending}

    def state(self, segment: int) -> tuple[list[EarlyReferenceState], dict[str, tuple[float, int, str]],
                                           list[PendingState]]:
        """One segment's references, open episodes and provisional alerts waiting, to persist."""
        found = ((index, self._references.get((segment, index))) for index in range(self.last + 1))
        references = [EarlyReferenceState(index, ref.windows, ref.start,
                                          None if ref.reading is None else saved(ref.reading))
                      for index, ref in found if ref is not None]
        episodes = {kind: self._open[(segment, kind)] for kind in EARLY_KINDS if (segment, kind) in self._open}
        waiting = {id(p): p for (s, _), found in self._pending.items() if s == segment for p in found}
        return references, episodes, [p.state() for p in waiting.values()]

    def restore(self, segment: int, references: list[EarlyReferenceState],
                episodes: dict[str, tuple[float, int, str]],
                pending: list[PendingState]) -> None:
        """Take back what `state` gave, after a restart."""
        for ref in references:
            mine = self._references[(segment, ref.index)] = _Reference(
                None if ref.reading is None else restored(ref.reading), ref.windows, ref.start)
            if mine.reading is not None and ref.windows >= self.spec.alerts.reference:
                mine.estimates = estimates(self.metrics, mine.reading, self.fill)
        for kind, episode in episodes.items():
            self._open[(segment, kind)] = (episode[0], episode[1], episode[2])
        for p in sorted(pending, key=lambda p: (p.start, p.end, EARLY_KINDS.index(p.kind), p.alert)):
            self._wait(_Pending(p.kind, p.alert, p.subject, segment, p.start, p.end, list(p.slices), set(p.left),
                                restored(p.reading)))

    def _alert(self, kind: str, status: str, involved: list[Comparison], comparisons: list[Comparison],
               window: EarlyWindow, first: str = "") -> EarlyAlert:
        segment = self.labels(window.segment)
        subject = involved[0].name if involved else ""
        side = involved[0].side if involved else "kpi"
        held, model, kpis = shown(kind, side, involved, comparisons)
        r = window.reading
        known = {"decisions": r.n, "matched": r.matched}
        message = _message(self.spec, kind, status, involved, held, segment, window)
        at = window.end + window.age
        ref = self._references.get((window.segment, window.index))
        start = ref.start if ref is not None and math.isfinite(ref.start) else window.start
        replay = replay_command(self.spec, self.replay_source, start, at)
        return EarlyAlert(kind, status, window.age, at, segment, subject, model, kpis, message, window, known,
                          replay, self.spec.name, first)


def _pace(current: Reading, reference: _Reference, age: float) -> Comparison | None:
    """Outcomes by `age` against the reference's pace: a log-rank test of the delays, with the
    decisions still without an outcome censored at `age`. Worse (z < 0) when outcomes come slower or fewer."""
    ref = reference.reading
    if ref is None or not (current.n and ref.n and current.matched + ref.matched):
        return None
    z, _ = logrank_groups(_censored(current, age), reference.censored(age))
    if math.isnan(z):
        return None
    share, ref_share = current.matched / current.n, ref.matched / ref.n
    change = (ref_share - share) / ref_share if ref_share else 0.0
    return Comparison(OUTCOMES_BY_AGE, ref_share, share, z, below(z), change)


def _later(current: Reading, reference: Reading) -> Comparison | None:
    """The delays of the outcomes that came, against the reference's: a log-rank test without censoring."""
    if not (current.matched and reference.matched):
        return None
    cur, ref = np.frombuffer(current.delays), np.frombuffer(reference.delays)
    z, _ = logrank(cur, np.ones(cur.size, dtype=bool), ref, np.ones(ref.size, dtype=bool))
    if math.isnan(z):
        return None
    mean, ref_mean = float(cur.mean()), float(ref.mean())
    return Comparison(MEAN_DELAY, ref_mean, mean, z, below(z), (mean - ref_mean) / ref_mean if ref_mean else 0.0)


def _censored(r: Reading, age: float) -> Group:
    waiting = r.n - r.matched
    times = np.concatenate((np.frombuffer(r.delays), np.full(max(waiting, 0), age)))
    return Group(times, np.arange(times.size) < r.matched)


def _message(spec: Spec, kind: str, status: str, involved: list[Comparison], held: list[Comparison],
             segment: dict[str, str], window: EarlyWindow) -> str:
    changes = "; ".join(worsening(c) for c in involved) or "no metric worsened"
    r = window.reading
    span = f"decisions from {iso(window.start)} to {iso(window.end)}"
    what = kind.replace("_", " ")
    if status == "provisional":
        text = (f"[{spec.name}] {where(segment)}: early {what}, provisional, read {age_text(window.age)} after"
                f" the window ended: {changes}; {r.n:,} {span}, {r.matched:,} outcomes matched so far, against this"
                f" segment's reference read at the same age. Final numbers come at the horizon"
                f" ({age_text(spec.horizon)}), when this alert is confirmed or withdrawn.")
    else:
        text = (f"[{spec.name}] {where(segment)}: early {what} {status} by the final numbers: {changes};"
                f" {r.n:,} {span}, {r.matched:,} outcomes matched within the horizon.")
    if kind == "outcome_delay" and status == "provisional":
        text += (" Outcomes come slower (or fewer) than at the reference's pace, so the numbers read at this"
                 " age that depend on when outcomes arrive (KPIs at the age, AUC) are held back; values per"
                 " outcome are still tested. Whether they are slower or fewer is known at the horizon.")
    elif kind == "outcome_delay":
        text += (" At the horizon the outcomes that came had later delays than the reference's: slower, not fewer."
                 if status == "confirmed" else " At the horizon their delays match the reference's: not slower."
                 " A drop in the final numbers, if any, is alerted as such.")
    if kind == "misalignment" and held:
        others = ", ".join(moved(c) for c in held)
        text += f" The other side held ({others})."
    return text


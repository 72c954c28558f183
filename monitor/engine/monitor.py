"""The monitor engine: decode, join, roll up and alert. No Faust, no I/O of its own.

The same `Monitor` runs inside the Faust agents, in `monitor replay` and in the embedded demo, so
a stream and its replay give the same numbers by construction.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from monitor.contract.errors import RecordError
from monitor.contract.events import Outcome, Prediction, decode_outcome, decode_prediction, event_time
from monitor.contract.spec import Spec
from monitor.engine.alerts import Alert, Detector, iso
from monitor.engine.join import NO_OFFSET, Decision, Joiner
from monitor.engine.segments import Segments
from monitor.engine.windows import Window, Windows

_VALUES = re.compile(r"'[^']*'|\"[^\"]*\"|\(byte \d+\)|(?<!\w)-?\d+(?:\.\d+)?(?:e-?\d+)?")  # group reasons, not values


@dataclass(frozen=True)
class DeadLetter:
    """A record the monitor could not use, with the reason in plain words."""

    topic: str
    reason: str
    value: bytes
    partition: int | None = None
    offset: int | None = None


class Rollup:
    """Final decisions in, per-segment totals, windows and alerts out. The metrics stage.

    In-process it sits behind the join; in the Faust workers it is the segment-keyed reducer."""

    def __init__(self, spec: Spec, replay_input: str = "CAPTURE.jsonl",
                 on_alert: Callable[[Alert], None] | None = None, derive_overall: bool = True) -> None:
        self.spec = spec
        self.segments = Segments(spec)
        self.windows = Windows(spec, self._window, derive_overall)
        self.detector = Detector(spec, replay_input)
        self.on_alert = on_alert
        self.alerts: list[Alert] = []
        self.timeline: dict[int, list[dict[str, Any]]] = {}
        self.delays: list[float] = []  # outcome delays since the exporter last drained them
        self.watermark = -math.inf
        self._horizon = spec.horizon
        self._next_close = -math.inf

    def add(self, d: Decision) -> None:
        if d.delay is not None:
            self.delays.append(d.delay)
        self.windows.add(d.segment, d)

    def advance(self, watermark: float) -> None:
        """Close the slices whose decisions are all final by `watermark`; cheap when none are."""
        if watermark <= self.watermark:
            return
        self.watermark = watermark
        frontier = watermark - self._horizon
        if frontier >= self._next_close:
            self.windows.close(frontier)
            self._next_close = self.windows.closed_before * self.windows.width + self.windows.width

    def totals(self) -> dict[int, dict[str, Any]]:
        """Per segment: finalized decisions, model metrics and KPIs over the whole run."""
        found = {}
        for segment in sorted(self.windows.segments()):
            summary = self.windows.total(segment)
            found[segment] = {"decisions": summary.n, "model": summary.model(), "kpi": summary.kpi()}
        return found

    def segment_reports(self) -> list[dict[str, Any]]:
        return [
            {"segment": self.segments.labels(s), "decisions": t["decisions"],
             "model": _clean(t["model"]), "kpi": _clean(t["kpi"]), "timeline": self.timeline.get(s, [])}
            for s, t in self.totals().items()
        ]

    def _window(self, window: Window) -> None:
        model, kpi = window.values
        self.timeline.setdefault(window.segment, []).append({
            "start": iso(window.start), "end": iso(window.end), "decisions": window.summary.n,
            "model": _clean(model), "kpi": _clean(kpi),
        })
        for alert in self.detector.update(window, self.watermark, self.segments.labels(window.segment)):
            self.alerts.append(alert)
            if self.on_alert is not None:
                self.on_alert(alert)


class Monitor:
    """The whole engine in one process: decode, join, roll up. Replay and the demo run this."""

    def __init__(self, spec: Spec, replay_input: str = "CAPTURE.jsonl",
                 on_alert: Callable[[Alert], None] | None = None,
                 on_dead_letter: Callable[[DeadLetter], None] | None = None) -> None:
        self.spec = spec
        self.rollup = Rollup(spec, replay_input, on_alert)
        self.segments, self.windows, self.detector = self.rollup.segments, self.rollup.windows, self.rollup.detector
        self.alerts, self.timeline = self.rollup.alerts, self.rollup.timeline
        self.joiner = Joiner(spec, self.rollup.add)
        self.on_dead_letter = on_dead_letter
        self.records: Counter[str] = Counter()
        self.invalid: Counter[str] = Counter()  # reasons, for the report

    # -- input -----------------------------------------------------------------------------------
    def process(self, topic: str, value: bytes, partition: int | None = None,
                offset: int | None = None) -> None:
        """Handle one raw record from `predictions` or `outcomes`; a bad one is dead-lettered."""
        self.records[topic] += 1
        try:
            if topic == self.spec.topics.predictions:
                self.prediction(decode_prediction(value))
            elif topic == self.spec.topics.outcomes:
                self.outcome(decode_outcome(value))
            else:
                raise RecordError(f"topic {topic!r} is neither predictions nor outcomes")
        except RecordError as exc:
            self.reject(topic, exc.reason, value, partition, offset)

    def reject(self, topic: str, reason: str, value: bytes, partition: int | None = None,
               offset: int | None = None) -> None:
        """Count a bad record and hand it to the dead-letter sink."""
        self.joiner.tally.invalid += 1
        self.invalid[_VALUES.sub("…", reason)] += 1
        if self.on_dead_letter is not None:
            self.on_dead_letter(DeadLetter(topic, reason, bytes(value), partition, offset))

    def prediction(self, p: Prediction, offset: int = NO_OFFSET) -> None:
        ts, score, predicted = check_prediction(self.spec, p)
        self.joiner.prediction(p.decision_id, ts, score, self.segments.of(p), predicted, offset)
        self._advance()

    def outcome(self, o: Outcome, offset: int = NO_OFFSET) -> None:
        self.joiner.outcome(o, check_outcome(self.spec, o), offset)
        self._advance()

    def finish(self) -> None:
        """End of input: held outcomes become orphans. Pending decisions stay pending."""
        self.joiner.finish()

    # -- results ---------------------------------------------------------------------------------
    def totals(self) -> dict[int, dict[str, Any]]:
        return self.rollup.totals()

    def report(self) -> dict[str, Any]:
        """The replay report: join counts, per-segment totals and timelines, alerts."""
        return {
            "decision": self.spec.name,
            "join": self.joiner.counts().as_dict(),
            "invalid_reasons": dict(self.invalid.most_common()),
            "segments": self.rollup.segment_reports(),
            "alerts": [a.as_dict() for a in self.alerts],
        }

    def _advance(self) -> None:
        self.rollup.advance(self.joiner.watermark)


def check_prediction(spec: Spec, p: Prediction) -> tuple[float, float, bool]:
    """Event time, score and predicted class of a prediction the decoder accepted, or RecordError."""
    ts = event_time(p.ts)
    score = p.score
    binary = spec.task == "binary"
    if not math.isfinite(score) or (binary and not 0.0 <= score <= 1.0):
        raise RecordError(f"prediction: score {score:g} is outside [0, 1]" if binary
                          else f"prediction: score {score:g} is not a finite number")
    if p.prediction is None:
        return ts, score, score >= spec.threshold
    if binary and p.prediction in (0, 1):
        return ts, score, bool(p.prediction)
    raise RecordError(f"prediction: prediction {p.prediction:g} is not 0, 1 or a bool")


def check_outcome(spec: Spec, o: Outcome) -> float:
    """Event time of an outcome the decoder accepted, or RecordError."""
    ts = event_time(o.ts)
    if spec.task == "binary" and o.label not in (0, 1):
        raise RecordError(f"outcome: label {o.label:g} is not 0, 1 or a bool")
    numbers = [float(o.label), *([] if o.value is None else [o.value]), *(o.kpis or {}).values()]
    if not all(math.isfinite(x) for x in numbers):
        raise RecordError("outcome: label, value and kpis must be finite numbers")
    return ts


def _clean(values: dict[str, float]) -> dict[str, float | None]:
    """JSON-safe metric values: NaN (undefined) becomes null."""
    return {k: (None if math.isnan(v) else v) for k, v in values.items()}

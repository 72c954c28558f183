"""Intake: the checks a decoded record must pass, and what a rejected one becomes.

The decoder (`monitor.contract.events`) checks types; these checks add what types cannot say
(a score inside [0, 1], a finite label). A record that fails either becomes a `DeadLetter` with
its reason in plain words.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from monitor.contract.decode import event_time
from monitor.contract.errors import RecordError
from monitor.contract.events import Event, Outcome, Prediction
from monitor.contract.spec import Spec

_VALUES = re.compile(r"'[^']*'|\"[^\"]*\"|\(byte \d+\)|(?<!\w)-?\d+(?:\.\d+)?(?:e-?\d+)?")


@dataclass(frozen=True)
class DeadLetter:
    """A record the monitor could not use, with the reason in plain words."""

    topic: str
    reason: str
    value: bytes
    partition: int | None = None
    offset: int | None = None


def reason_group(reason: str) -> str:
    """A reason with its values blanked, so the report counts kinds of breakage, not values."""
    return _VALUES.sub("…", reason)


def check_prediction(spec: Spec, p: Prediction, timestamp: int | None = None) -> tuple[float, float, bool]:
    """Event time, score and predicted class of a prediction the decoder accepted, or RecordError;
    `timestamp` is its record's Kafka timestamp (ms), if known."""
    ts = _event_time(spec, p.ts, spec.predictions.divisor, "predictions", timestamp)
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


def check_outcome(spec: Spec, o: Outcome, timestamp: int | None = None) -> float:
    """Event time of an outcome the decoder accepted, or RecordError."""
    ts = _event_time(spec, o.ts, spec.outcomes.divisor, "outcomes", timestamp)
    if spec.task == "binary" and o.label not in (0, 1):
        raise RecordError(f"outcome: label {o.label:g} is not 0, 1 or a bool")
    numbers = [float(o.label), *([] if o.value is None else [o.value]), *(o.kpis or {}).values()]
    if not all(math.isfinite(x) for x in numbers):
        raise RecordError("outcome: label, value and kpis must be finite numbers")
    return ts


def check_event(spec: Spec, e: Event, timestamp: int | None = None) -> float:
    """Event time of an outcome event the decoder accepted, or RecordError."""
    ts = _event_time(spec, e.ts, spec.outcomes.divisor, "outcomes", timestamp)
    label = e.amounts[0] if e.amounts else None
    if label is not None and spec.task == "binary" and label not in (0, 1):
        raise RecordError(f"outcome event {e.type!r}: label {label:g} is not 0 or 1")
    return ts


def _event_time(spec: Spec, ts: float | str, divisor: int, table: str, timestamp: int | None) -> float:
    """Epoch seconds of an event time, refused when it cannot be right (`event_time`) or when it is more
    than `limits.max_future` ahead of its record's Kafka timestamp: the watermark reads the newest event
    time, and one record dated years ahead would close every window."""
    seconds = event_time(ts, divisor, table)
    if timestamp is not None and seconds > timestamp * 0.001 + spec.limits.max_future:
        limit = spec.limits.max_future
        raise RecordError(f"ts {seconds!r} is {(seconds - timestamp / 1000) / 3600:.1f} h ahead of the record's Kafka"
                          f" timestamp ({timestamp} ms), more than limits.max_future ({limit / 3600:g} h): a clock"
                          " or unit error; the watermark must not read it")
    return seconds

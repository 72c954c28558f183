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
from monitor.contract.events import Outcome, Prediction
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


def check_prediction(spec: Spec, p: Prediction) -> tuple[float, float, bool]:
    """Event time, score and predicted class of a prediction the decoder accepted, or RecordError."""
    ts = event_time(p.ts, spec.predictions.divisor, "predictions")
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
    ts = event_time(o.ts, spec.outcomes.divisor, "outcomes")
    if spec.task == "binary" and o.label not in (0, 1):
        raise RecordError(f"outcome: label {o.label:g} is not 0, 1 or a bool")
    numbers = [float(o.label), *([] if o.value is None else [o.value]), *(o.kpis or {}).values()]
    if not all(math.isfinite(x) for x in numbers):
        raise RecordError("outcome: label, value and kpis must be finite numbers")
    return ts

"""Reading the event contract (`monitor.contract.events`) from raw bytes, strictly.

A wrong type or a missing field raises `RecordError` with a reason in plain words, so a bad
record is counted and dead-lettered instead of stopping the monitor. Apart from the types, so
that this per-record code can be compiled: msgspec cannot read the fields of a compiled class.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import TypeVar

import msgspec

from monitor.contract.errors import RecordError
from monitor.contract.events import DecisionId, Outcome, Payload, Prediction, Record, Tags

_predictions = msgspec.json.Decoder(Prediction)
_outcomes = msgspec.json.Decoder(Outcome)
_records = msgspec.json.Decoder(Record)
_tags = msgspec.json.Decoder(Tags)
_ids = msgspec.json.Decoder(DecisionId)
T = TypeVar("T")
LAST_TIME = 7_258_118_400  # 2200-01-01T00:00:00Z: no event of a monitored model happens later
UNIT_NAMES = {1: "seconds", 1_000: "milliseconds", 1_000_000: "microseconds", 1_000_000_000: "nanoseconds"}
UNIT_KEYS = {"seconds": "s", "milliseconds": "ms", "microseconds": "us", "nanoseconds": "ns"}


def event_time(ts: float | str, divisor: int = 1, table: str = "predictions") -> float:
    """Epoch seconds of a `ts` field: a number in the unit `divisor` says (1 for seconds, 1000 for
    milliseconds...), or an RFC 3339 string with an offset. A time before 1970 or after `LAST_TIME`
    cannot be an event's: it is refused, with the unit it would make sense in."""
    if isinstance(ts, str):
        try:
            parsed = datetime.fromisoformat(ts)
        except ValueError:
            raise RecordError(f"ts {ts!r} is neither an epoch number nor an RFC3339 time") from None
        if parsed.tzinfo is None:
            raise RecordError(f"ts {ts!r} has no UTC offset (RFC3339 needs one, e.g. 'Z')")
        seconds = parsed.timestamp()
        if not 0 <= seconds <= LAST_TIME:
            raise RecordError(f"ts {ts!r} is outside the years 1970 to 2200")
        return seconds
    if not math.isfinite(ts) or ts < 0:
        raise RecordError(f"ts {ts!r} is not a valid epoch time")
    seconds = ts / divisor  # true division of an int rounds once: milliseconds land on the nearest float
    if seconds > LAST_TIME:
        raise RecordError(_unit_hint(ts, divisor, table))
    return float(seconds)


def _unit_hint(ts: float, divisor: int, table: str) -> str:
    unit = UNIT_NAMES[divisor]
    year = 1970 + ts / divisor / 31_556_952
    likely = next((name for d, name in UNIT_NAMES.items() if d > divisor and ts / d <= LAST_TIME), None)
    hint = f'it looks like {likely}: set ts_unit = "{UNIT_KEYS[likely]}" in [{table}]' if likely else \
        "no unit makes it a time before 2200"
    return f"ts {ts!r} read as {unit} is in the year {year:.0f}; {hint}"


def decode_prediction(raw: Payload) -> Prediction:
    return strict(_predictions, raw, "prediction")


def decode_outcome(raw: Payload) -> Outcome:
    return strict(_outcomes, raw, "outcome")


def decode_record(line: bytes) -> Record:
    return strict(_records, line, "replay line")


def strict(decoder: msgspec.json.Decoder[T], raw: Payload, what: str) -> T:
    """`raw` decoded, or `RecordError` saying in plain words what is wrong with it as a `what`."""
    try:
        return decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise RecordError(f"{what}: {_plain(exc)}") from None
    except RecursionError:
        raise RecordError(f"{what}: JSON nested too deeply") from None


def decode_tags(raw: Payload) -> Tags | None:
    """A prediction's tags, or None if it cannot be read as one (the engine then counts it as invalid)."""
    try:
        return _tags.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None


def decode_id(raw: Payload) -> str | None:
    """A record's decision id, or None if it has none."""
    try:
        return _ids.decode(raw).decision_id
    except (msgspec.DecodeError, RecursionError):
        return None


def _plain(exc: msgspec.DecodeError) -> str:
    text = str(exc)
    if isinstance(exc, msgspec.ValidationError):
        return text.replace("`$.", "field `").replace("`$`", "the value")
    return f"not valid JSON ({text})"

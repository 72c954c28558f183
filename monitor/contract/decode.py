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


def event_time(ts: float | str) -> float:
    """Epoch seconds of a `ts` field: a number, or an RFC 3339 string with an offset."""
    if isinstance(ts, str):
        try:
            parsed = datetime.fromisoformat(ts)
        except ValueError:
            raise RecordError(f"ts {ts!r} is neither epoch seconds nor an RFC3339 time") from None
        if parsed.tzinfo is None:
            raise RecordError(f"ts {ts!r} has no UTC offset (RFC3339 needs one, e.g. 'Z')")
        return parsed.timestamp()
    if not math.isfinite(ts) or ts < 0:
        raise RecordError(f"ts {ts!r} is not a valid epoch time")
    return float(ts)


def decode_prediction(raw: Payload) -> Prediction:
    return _strict(_predictions, raw, "prediction")


def decode_outcome(raw: Payload) -> Outcome:
    return _strict(_outcomes, raw, "outcome")


def decode_record(line: bytes) -> Record:
    return _strict(_records, line, "replay line")


def _strict(decoder: msgspec.json.Decoder[T], raw: Payload, what: str) -> T:
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

"""The event contract: typed, fast decoding of predictions, outcomes and replay records.

Decoding is strict (msgspec): a wrong type or a missing field raises `RecordError` with a reason
in plain words, so a bad record is counted and dead-lettered instead of stopping the monitor.
"""

from __future__ import annotations

import base64
import math
from datetime import datetime
from typing import Protocol

import msgspec

from monitor.contract.errors import RecordError


class Payload(Protocol):
    """A record's value as the engine takes it: bytes, or the `msgspec.Raw` of a replay file's line.

    Not `bytes`: msgspec's stub makes `Raw` a subclass of bytes, but at run time it is not one (it
    cannot be sliced, for one), and the compiled engine checks the types it is given."""

    def __buffer__(self, flags: int, /) -> memoryview: ...

    def __len__(self) -> int: ...


class Prediction(msgspec.Struct, frozen=True):
    """One decision taken by a model."""

    decision_id: str
    ts: float | str
    model: str
    score: float
    model_version: str | None = None
    variant: str | None = None
    segment: dict[str, str] | None = None
    prediction: bool | float | None = None
    action: str | None = None
    features: msgspec.Raw = msgspec.Raw(b"null")  # kept undecoded: the engine never reads it


class Outcome(msgspec.Struct, frozen=True):
    """What happened after a decision."""

    decision_id: str
    ts: float | str
    label: bool | float
    value: float | None = None
    kpis: dict[str, float] | None = None


class Record(msgspec.Struct, frozen=True):
    """One Kafka record as captured in a replay file; `value` stays undecoded until routed.

    A value that is not one line of JSON (raw bytes, a pretty-printed document) is kept exactly in
    `value_base64`, with `value` null, so a capture gives the engine the bytes Kafka held."""

    topic: str
    value: msgspec.Raw
    key: str | None = None
    timestamp: int | None = None
    partition: int | None = None
    offset: int | None = None
    value_base64: str | None = None

    def payload(self) -> Payload:
        """The value as the engine takes it."""
        if self.value_base64 is None:
            return self.value
        try:
            return base64.b64decode(self.value_base64, validate=True)
        except ValueError:  # binascii.Error is a ValueError
            raise RecordError("replay line: `value_base64` is not base64") from None


_predictions = msgspec.json.Decoder(Prediction)
_outcomes = msgspec.json.Decoder(Outcome)
_records = msgspec.json.Decoder(Record)


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
    try:
        return _predictions.decode(raw)
    except msgspec.DecodeError as exc:
        raise RecordError(f"prediction: {_plain(exc)}") from None
    except RecursionError:
        raise RecordError("prediction: JSON nested too deeply") from None


def decode_outcome(raw: Payload) -> Outcome:
    try:
        return _outcomes.decode(raw)
    except msgspec.DecodeError as exc:
        raise RecordError(f"outcome: {_plain(exc)}") from None
    except RecursionError:
        raise RecordError("outcome: JSON nested too deeply") from None


def decode_record(line: bytes) -> Record:
    try:
        return _records.decode(line)
    except msgspec.DecodeError as exc:
        raise RecordError(f"replay line: {_plain(exc)}") from None
    except RecursionError:
        raise RecordError("replay line: JSON nested too deeply") from None


class Tags(msgspec.Struct):
    """What `--segment` reads of a prediction."""

    decision_id: str
    model: str | None = None
    model_version: str | None = None
    variant: str | None = None
    action: str | None = None
    segment: dict[str, str] | None = None


class _Id(msgspec.Struct):
    decision_id: str


_tags = msgspec.json.Decoder(Tags)
_ids = msgspec.json.Decoder(_Id)


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

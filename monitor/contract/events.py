"""The event contract: the types of predictions, outcomes and replay records.

`monitor.contract.decode` reads them, strictly: a wrong type or a missing field raises
`RecordError` with a reason in plain words, so a bad record is counted and dead-lettered
instead of stopping the monitor.
"""

from __future__ import annotations

import base64
from typing import Protocol

import msgspec

from monitor.contract.errors import RecordError


class Payload(Protocol):
    """A record's value as the engine takes it: bytes, or the `msgspec.Raw` of a replay file's line.

    Not `bytes`: msgspec's stub makes `Raw` a subclass of bytes, but at run time it is not one (it
    cannot be sliced, for one), and the compiled engine checks the types it is given."""

    def __buffer__(self, flags: int, /) -> memoryview: ...

    def __len__(self) -> int: ...


class Incoming(Protocol):
    """What the engine reads of a record: a replay source's `Raw`, or a replay file's decoded line as it is."""

    @property
    def topic(self) -> str: ...

    @property
    def value(self) -> Payload: ...

    @property
    def key(self) -> str | bytes | None: ...  # bytes: a key that is not UTF-8 text, kept exactly

    @property
    def timestamp(self) -> int | None: ...

    @property
    def partition(self) -> int | None: ...

    @property
    def offset(self) -> int | None: ...


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


class Event(msgspec.Struct, frozen=True, array_like=True):
    """One business event of a decision, with what its type contributes (`[outcome.events]`).

    `amounts` has one entry per field of a combination (label, value, then the events' KPIs): the
    number this event adds, or None where its type leaves the field alone; `kind` is the type's
    position in the spec's table, or -1 for a type the table does not name (`amounts` is then empty)."""

    decision_id: str
    ts: float | str
    type: str
    kind: int
    event_id: str | None
    amounts: list[float | None]


class Record(msgspec.Struct, frozen=True):
    """One Kafka record as captured in a replay file; `value` stays undecoded until routed.

    A value that is not one line of JSON (raw bytes, a pretty-printed document) is kept exactly in
    `value_base64`, with `value` null, so a capture gives the engine the bytes Kafka held; a key that
    is not UTF-8 text likewise in `key_base64`."""

    topic: str
    value: msgspec.Raw
    key: str | None = None
    timestamp: int | None = None
    partition: int | None = None
    offset: int | None = None
    value_base64: str | None = None
    key_base64: str | None = None  # a key that is not UTF-8 text, kept exactly (`key` null)

    def record_key(self) -> str | bytes | None:
        """The key as the engine takes it: text, or the exact bytes of one that is not UTF-8."""
        if self.key_base64 is None:
            return self.key
        try:
            return base64.b64decode(self.key_base64, validate=True)
        except ValueError:
            raise RecordError("replay line: `key_base64` is not base64") from None

    def payload(self) -> Payload:
        """The value as the engine takes it."""
        if self.value_base64 is None:
            return self.value
        try:
            return base64.b64decode(self.value_base64, validate=True)
        except ValueError:  # binascii.Error is a ValueError
            raise RecordError("replay line: `value_base64` is not base64") from None


class Tags(msgspec.Struct):
    """What `--segment` reads of a prediction."""

    decision_id: str
    model: str | None = None
    model_version: str | None = None
    variant: str | None = None
    action: str | None = None
    segment: dict[str, str] | None = None


class DecisionId(msgspec.Struct):
    """Just the decision id of a record."""

    decision_id: str

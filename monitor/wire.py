"""Messages between the join stage and the metrics stage of the streaming workers (msgpack)."""

from __future__ import annotations

import msgspec


class Final(msgspec.Struct, array_like=True, tag=True):
    """A final decision, sent keyed by its segment to the metrics stage."""

    decision_id: str
    segment: list[str]  # the `by` values; [] for the overall segment
    ts: float
    score: float
    predicted: bool
    label: float
    value: float | None
    kpis: list[float | None]
    delay: float | None
    source: int  # partition of the join that finalized it
    watermark: float  # that partition's watermark before the record that finalized it


class Heartbeat(msgspec.Struct, array_like=True, tag=True):
    """A join partition's watermark, sent to every metrics partition so windows can close."""

    source: int
    watermark: float


class Held(msgspec.Struct, array_like=True):
    """A persisted held outcome."""

    partition: int
    ts: float
    outcome: bytes  # the outcome, as JSON
    offset: int


class Progress(msgspec.Struct, array_like=True):
    """A join partition's watermark inputs and counts, persisted after every record."""

    newest_prediction: float
    newest_outcome: float
    counts: list[int]
    records: dict[str, int]
    offsets: dict[str, int]  # the last offset handled, per topic


Message = Final | Heartbeat
encode = msgspec.msgpack.Encoder().encode
_message = msgspec.msgpack.Decoder(Final | Heartbeat)
_held = msgspec.msgpack.Decoder(Held)
_progress = msgspec.msgpack.Decoder(Progress)
_pending = msgspec.msgpack.Decoder(tuple[int, list[str], bytes])
_done = msgspec.msgpack.Decoder(tuple[int, bytes])


def message(raw: bytes) -> Final | Heartbeat:
    found: Final | Heartbeat = _message.decode(raw)
    return found


def held(raw: bytes) -> Held:
    return _held.decode(raw)


def progress(raw: bytes) -> Progress:
    return _progress.decode(raw)


def pending(raw: bytes) -> tuple[int, list[str], bytes]:
    """(partition, segment key, packed pending decision)."""
    return _pending.decode(raw)


def done(raw: bytes) -> tuple[int, bytes]:
    """(partition, packed status)."""
    return _done.decode(raw)

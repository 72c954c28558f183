"""Capture: keep a range of records as a replay file, to share it and replay it offline.

Each record becomes one line, `{"topic", "key", "timestamp", "value", "partition", "offset"}`, in the
order the engine takes them, so replaying the file gives the report the range itself gives. A value
that is not one line of JSON goes into `value_base64` instead, so the engine sees the exact bytes; a key
that is not UTF-8 text into `key_base64`.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from pathlib import Path

import msgspec

from monitor.contract.events import Incoming
from monitor.debug.records import Bad


class _Line(msgspec.Struct, omit_defaults=True):
    topic: str
    key: str | None
    timestamp: int | None
    value: msgspec.Raw
    partition: int | None
    offset: int | None
    value_base64: str | None = None
    key_base64: str | None = None


_NULL = msgspec.Raw(b"null")
_json = msgspec.json.Decoder()


def line(record: Incoming) -> bytes:
    """One record as a replay-file line (with its newline)."""
    value = bytes(record.value)
    kept = _as_json(value)
    key = record.key
    found = _Line(record.topic, None if isinstance(key, bytes) else key, record.timestamp,
                  _NULL if kept is None else kept, record.partition, record.offset,
                  base64.b64encode(value).decode() if kept is None else None,
                  base64.b64encode(key).decode() if isinstance(key, bytes) else None)
    return msgspec.json.encode(found) + b"\n"


def capture(records: Iterable[Incoming | Bad], path: Path) -> int:
    """Write every record to `path`; returns how many. Lines that were not records are left out."""
    count = 0
    with path.open("wb") as out:
        for record in records:
            if not isinstance(record, Bad):
                out.write(line(record))
                count += 1
    return count


def _as_json(value: bytes) -> msgspec.Raw | None:
    """The value as raw JSON if writing it inline keeps its bytes exactly, else None."""
    if not value or value != value.strip() or b"\n" in value or b"\r" in value:
        return None
    try:
        _json.decode(value)
    except msgspec.DecodeError:
        return None
    return msgspec.Raw(value)

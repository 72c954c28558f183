"""Avro values: the Confluent wire format read through the schema registry, and Avro container files.

Either becomes the record's JSON, which the topic's JSON reader (its mapping, or the contract) then
reads, so an Avro stream gives exactly the numbers of the same stream in JSON. Logical types come
out as JSON writes them: a timestamp as an RFC 3339 string (exact to the microsecond, whatever
`ts_unit` says, since a string is never read in a unit), a decimal as a number, a uuid as a string.

The wire format: one zero byte, the writer schema's id (4 bytes, big-endian), the Avro body.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

import fastavro
import msgspec

from monitor.contract.errors import RecordError
from monitor.contract.events import Payload
from monitor.contract.registry import Schemas

CONTAINER = b"Obj\x01"  # the first bytes of an Avro object container file
_json = msgspec.json.Encoder(decimal_format="number")


def parse_schema(schema: Any) -> Any:
    return fastavro.parse_schema(schema)


def schema_id(raw: Payload) -> int | None:
    """The writer schema id of a wire-format value, or None if it is not one."""
    view = memoryview(raw)
    if len(view) < 5 or view[0] != 0:
        return None
    return int.from_bytes(view[1:5], "big")


def schema_ids(values: Iterable[Payload]) -> set[int]:
    """The schema ids a batch of values names (what a worker makes sure it holds before reading them)."""
    return {found for found in map(schema_id, values) if found is not None}


class WireFormat:
    """Values in the Confluent wire format, as JSON."""

    def __init__(self, schemas: Schemas) -> None:
        self.schemas = schemas

    def json(self, raw: Payload) -> bytes:
        """The value's record as JSON, or RecordError saying why it cannot be read."""
        view = memoryview(raw)
        found = schema_id(view)
        if found is None:
            head = f"first byte 0x{view[0]:02x}" if len(view) else "an empty value"
            raise RecordError(f"value is not in the schema registry's wire format ({head}, expected a zero byte"
                              ' and a schema id): if the topic holds JSON, set format = "json"')
        schema = self.schemas.get(found)
        body = io.BytesIO(view[5:])
        try:
            record = fastavro.schemaless_reader(body, schema, None)
        except Exception as exc:  # fastavro raises what its reading meets: EOF, bad unions, bad UTF-8...
            raise RecordError(f"Avro value does not decode with schema id {found} "
                              f"({str(exc) or type(exc).__name__})") from None
        left = len(view) - 5 - body.tell()
        if left:
            raise RecordError(f"Avro value has {left} bytes left after its record: not written with schema id {found}")
        return _json.encode(record)


def is_container(head: bytes) -> bool:
    return head.startswith(CONTAINER)


def container_values(stream: BinaryIO) -> Iterator[bytes]:
    """Each record of an Avro object container file, as JSON (the file carries its own schema)."""
    for record in fastavro.reader(stream):
        yield _json.encode(record)
